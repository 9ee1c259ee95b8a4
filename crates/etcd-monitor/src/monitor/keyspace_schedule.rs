//! `keyspace.schedule`: every cluster scanned on a schedule, each scan
//! stored (source `schedule`) for growth and the growth rules.

use std::sync::Arc;

use crate::config::keyspace::KeyspaceSchedule;
use crate::config::{ClusterConfig, Config};
use crate::connection::Dialer;
use crate::keyspace::{GrowthCheck, KeyspaceReport, ScanOptions, choose_member, growth, scan};
use crate::lifecycle::Lifecycle;
use crate::store::Store;

use super::Monitor;

/// The scan options of a schedule.
pub fn options(s: &KeyspaceSchedule) -> ScanOptions {
    ScanOptions {
        prefix: s.prefix.clone(),
        depth: s.depth,
        top: s.top,
        rate: Some(s.rate),
        max_duration: Some(s.max_duration),
        max_buckets: s.max_buckets,
        ..ScanOptions::default()
    }
}

/// One scheduled scan of `cluster`, stored; returns it. Errors are logged:
/// a cluster that cannot be scanned now is tried again at the next tick.
pub async fn scan_and_store(
    cluster: &ClusterConfig,
    s: &KeyspaceSchedule,
    store: &Store,
) -> Option<KeyspaceReport> {
    let result = async {
        let dialer = Dialer::new(cluster).map_err(|e| e.to_string())?;
        let urls = crate::connection::endpoints(cluster).map_err(|e| e.to_string())?;
        let (client, endpoint, leader) = choose_member(&dialer, &urls, false)
            .await
            .map_err(|e| e.to_string())?;
        scan(&client, &endpoint, leader, &options(s), |_| {})
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(report) => {
            tracing::info!(
                cluster = %cluster.name,
                keys = report.scanned_keys,
                value_bytes = report.value_bytes,
                complete = report.complete,
                "keyspace scanned"
            );
            if let Err(e) = store
                .record_keyspace_scan(&cluster.name, "schedule", &report)
                .await
            {
                tracing::warn!(cluster = %cluster.name, error = %e, "keyspace scan not stored");
            }
            Some(report)
        }
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, error = %e, "scheduled keyspace scan failed");
            None
        }
    }
}

/// The newest complete scheduled scan of `prefix` in the store (so growth
/// survives a restart).
async fn last_stored(store: &Store, cluster: &str, prefix: &str) -> Option<KeyspaceReport> {
    match store.keyspace_scans(cluster, Some(prefix), 20).await {
        Ok(scans) => scans
            .into_iter()
            .find(|s| s.source == "schedule" && s.report.complete)
            .map(|s| s.report),
        Err(e) => {
            tracing::warn!(cluster = %cluster, error = %e, "cannot read stored keyspace scans");
            None
        }
    }
}

/// Starts a task per cluster when `keyspace.schedule` is set: the first
/// scan one period after start, then every period. After each complete
/// scan the growth since the previous complete one is published on the
/// cluster's handle (incomplete scans are stored but not compared: their
/// totals would read as shrinking).
pub fn start(config: &Config, monitor: &Monitor, lifecycle: &Lifecycle) {
    let Some(s) = config.keyspace.schedule.clone() else {
        return;
    };
    for cluster in config.clusters.clone() {
        let Some(handle) = monitor.cluster(&cluster.name).cloned() else {
            continue;
        };
        let (s, store, token) = (s.clone(), monitor.store().clone(), lifecycle.token());
        let rules = config.keyspace.growth_rules.clone();
        lifecycle.spawn(async move {
            let mut previous = last_stored(&store, &cluster.name, &s.prefix).await;
            let mut owned = true;
            let mut tick = tokio::time::interval(s.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // Replicas: only the cluster's owner scans it; a new owner
                // compares with the last scan any replica stored.
                if !handle.ownership.owned() {
                    owned = false;
                    continue;
                }
                if !owned {
                    previous = last_stored(&store, &cluster.name, &s.prefix).await;
                    owned = true;
                }
                let report = tokio::select! {
                    _ = token.cancelled() => break,
                    r = scan_and_store(&cluster, &s, &store) => r,
                };
                let Some(report) = report.filter(|r| r.complete) else {
                    continue;
                };
                if let Some(before) = &previous {
                    match growth(before, &report) {
                        Ok(growth) => handle.keyspace_growth.store(Some(Arc::new(GrowthCheck {
                            growth,
                            rules: rules.clone(),
                        }))),
                        Err(e) => tracing::warn!(cluster = %cluster.name, error = %e, "keyspace growth not computed"),
                    }
                }
                previous = Some(report);
            }
        });
    }
}
