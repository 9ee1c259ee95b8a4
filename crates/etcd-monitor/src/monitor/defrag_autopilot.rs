//! `maintenance.defrag`: the defrag autopilot. Every `every`, inside the
//! window, each cluster's members are checked against the rule (with each
//! member's quota from the latest metrics round) and the matching ones
//! defragmented through the same safe path as `ctl defrag` and the API:
//! health first, followers first, the leader last, one at a time with a
//! pause, the cluster's maintenance slot held (never beside another
//! maintenance operation). Optionally compacts first and disarms NOSPACE
//! afterwards. Every run that touched or skipped members is stored (sizes
//! before and after) and counted for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::maintenance::DefragAutopilot;
use crate::config::{ClusterConfig, Config};
use crate::connection::Dialer;
use crate::lifecycle::Lifecycle;
use crate::ops::gate::MaintenanceGate;
use crate::ops::maintenance::{self, DefragOptions, DefragOutcome, DefragReport, DefragRule};
use crate::store::{DefragRun, unix_ms};

use super::{ClusterHandle, Monitor};

/// Checks the rule's syntax (the configuration layer keeps it as text).
pub fn config_problems(config: &Config) -> Vec<(String, String)> {
    match &config.maintenance.defrag {
        Some(d) if !d.rule.trim().is_empty() => match d.rule.parse::<DefragRule>() {
            Ok(_) => Vec::new(),
            Err(e) => vec![("maintenance.defrag.rule".into(), e)],
        },
        _ => Vec::new(),
    }
}

/// Counters of one cluster's autopilot, for `/metrics`.
#[derive(Debug, Default)]
pub struct DefragStats {
    /// Runs by outcome: defragmented, skipped, refused, failed.
    pub runs: [AtomicU64; 4],
    /// Members defragmented.
    pub members_defragmented: AtomicU64,
    /// Bytes given back (sum of size before - size after).
    pub reclaimed_bytes: AtomicU64,
    /// When the last run ended (ms since epoch), 0 before the first.
    pub last_run_ms: AtomicI64,
}

/// The outcomes, in the order of [`DefragStats::runs`].
pub const OUTCOMES: [&str; 4] = ["defragmented", "skipped", "refused", "failed"];

impl DefragStats {
    fn count(&self, run: &DefragRun) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == run.outcome) {
            self.runs[i].fetch_add(1, Ordering::Relaxed);
        }
        for m in &run.members {
            if let DefragOutcome::Defragmented {
                db_size_before,
                db_size_after,
                ..
            } = m.outcome
            {
                self.members_defragmented.fetch_add(1, Ordering::Relaxed);
                self.reclaimed_bytes.fetch_add(
                    (db_size_before - db_size_after).max(0) as u64,
                    Ordering::Relaxed,
                );
            }
        }
        self.last_run_ms
            .store(run.at_ms + run.duration_ms as i64, Ordering::Relaxed);
    }
}

/// Starts one task per cluster when `maintenance.defrag` is set.
pub fn start(
    config: &Config,
    monitor: &Monitor,
    gate: &Arc<MaintenanceGate>,
    lifecycle: &Lifecycle,
) {
    let Some(auto) = config.maintenance.defrag.clone() else {
        return;
    };
    let Ok(rule) = auto.rule.parse::<DefragRule>() else {
        // Refused by config_problems before the daemon starts.
        return;
    };
    for cluster in config.clusters.clone() {
        let Some(handle) = monitor.cluster(&cluster.name).cloned() else {
            continue;
        };
        let (auto, rule, gate, store, token) = (
            auto.clone(),
            rule.clone(),
            gate.clone(),
            monitor.store().clone(),
            lifecycle.token(),
        );
        lifecycle.spawn(async move {
            // A run that skipped every member is stored once, not at each
            // check that skips again (it is counted each time).
            let mut skipping = false;
            let every = auto.every.unwrap_or(crate::config::maintenance::DEFAULT_EVERY);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = async {
                    match &auto.schedule {
                        Some(cron) => {
                            let now = unix_ms(std::time::SystemTime::now());
                            match cron.next_after(now / 1000) {
                                Some(at) => {
                                    let wait = (at * 1000 - now).max(0) as u64;
                                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                                    true
                                }
                                // No match within a year (a leap day far off;
                                // dates no year has are refused at start-up):
                                // look again tomorrow.
                                None => {
                                    tokio::time::sleep(std::time::Duration::from_secs(86_400)).await;
                                    false
                                }
                            }
                        }
                        None => {
                            tick.tick().await;
                            true
                        }
                    }
                };
                let due = tokio::select! {
                    _ = token.cancelled() => break,
                    due = due => due,
                };
                // Replicas: only the cluster's owner defragments it.
                if !due || !handle.ownership.owned() {
                    continue;
                }
                if !auto.window.contains(unix_ms(std::time::SystemTime::now()) / 1000) {
                    continue;
                }
                let guard = match gate.enter(&cluster.name, "defrag autopilot", "autopilot") {
                    Ok(g) => g,
                    Err(busy) => {
                        tracing::info!(cluster = %cluster.name, %busy, "defrag autopilot waits for the next check");
                        continue;
                    }
                };
                let run = tokio::select! {
                    _ = token.cancelled() => break,
                    run = once(&cluster, &handle, &auto, &rule) => run,
                };
                drop(guard);
                tracing::info!(cluster = %cluster.name, outcome = %run.outcome, "defrag autopilot ran");
                handle.defrag.count(&run);
                let skipped = run.outcome == "skipped";
                if skipped && skipping {
                    continue;
                }
                skipping = skipped;
                if let Err(e) = store.record_defrag_run(&run).await {
                    tracing::warn!(cluster = %cluster.name, error = %e, "defrag run not stored");
                }
            }
        });
    }
}

/// Each member's quota by client URL, from the latest metrics round (for
/// rules that read `dbQuota`; the API's defrag uses it too).
pub fn quotas(handle: &ClusterHandle) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    if let Some(round) = handle.metrics.borrow().clone() {
        for m in &round.members {
            if let Some(q) = m.metrics.as_ref().and_then(|x| x.quota_backend_bytes) {
                out.insert(m.endpoint.clone(), q as i64);
            }
        }
    }
    out
}

/// One check and, for the members the rule matches, one defragmentation.
async fn once(
    cluster: &ClusterConfig,
    handle: &ClusterHandle,
    auto: &DefragAutopilot,
    rule: &DefragRule,
) -> DefragRun {
    let started = Instant::now();
    let mut run = DefragRun {
        cluster: cluster.name.clone(),
        at_ms: unix_ms(std::time::SystemTime::now()),
        source: "autopilot".into(),
        outcome: "failed".into(),
        rule: auto.rule.clone(),
        compacted_to: None,
        disarmed_nospace: Vec::new(),
        error: None,
        members: Vec::new(),
        duration_ms: 0,
    };
    let opts = DefragOptions {
        rule: Some(rule.clone()),
        quotas: quotas(handle),
        read_quotas: auto.disarm_nospace,
        pause: auto.pause,
        move_leader: auto.move_leader,
        ..DefragOptions::default()
    };
    let result = async {
        let dialer = Dialer::new(cluster).map_err(|e| failed(e.to_string()))?;
        let urls = crate::connection::endpoints(cluster).map_err(|e| failed(e.to_string()))?;
        let mut client = crate::connection::first_voting_member(&dialer, &urls)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Plan first: compact only when some member needs defragmenting.
        let plan = maintenance::defrag_cluster(
            &mut client,
            &dialer,
            &DefragOptions {
                dry_run: true,
                ..opts.clone()
            },
            |_| {},
        )
        .await
        .map_err(|e| ("refused", e.to_string()))?;
        if !plan.iter().any(|r| matches!(r.outcome, DefragOutcome::Planned)) {
            return Ok((plan, None, Vec::new()));
        }
        let compacted = if auto.compact_first {
            let revision = client
                .get(
                    "health",
                    Some(etcd_client::GetOptions::new().with_count_only()),
                )
                .await
                .map_err(|e| failed(format!("reading the revision to compact to: {}", crate::connection::cause_chain(&e))))?
                .header()
                .map(|h| h.revision())
                .unwrap_or(0);
            match maintenance::compact(&mut client, revision, true).await {
                Ok(_) => Some(revision),
                // Nothing written since the last compaction (etcd's own
                // auto-compaction, say): already compact, go on.
                Err(e) if e.to_string().contains("required revision has been compacted") => {
                    tracing::info!(cluster = %cluster.name, revision, "already compacted to the current revision");
                    None
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        } else {
            None
        };
        let reports = maintenance::defrag_cluster(&mut client, &dialer, &opts, |r| {
            tracing::info!(cluster = %cluster.name, member = %r.name, outcome = ?r.outcome, "defrag autopilot");
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
        let disarmed = if auto.disarm_nospace {
            disarm_nospace(&mut client, &reports).await.map_err(failed)?
        } else {
            Vec::new()
        };
        Ok((reports, compacted, disarmed))
    }
    .await;
    match result {
        Ok((members, compacted, disarmed)) => {
            let any = members
                .iter()
                .any(|r| matches!(r.outcome, DefragOutcome::Defragmented { .. }));
            let failed = members.iter().find_map(|r| match &r.outcome {
                DefragOutcome::Failed { error } => Some(error.clone()),
                _ => None,
            });
            run.outcome = match (&failed, any) {
                (Some(_), _) => "failed",
                (None, true) => "defragmented",
                (None, false) => "skipped",
            }
            .into();
            run.error = failed;
            run.members = members;
            run.compacted_to = compacted;
            run.disarmed_nospace = disarmed;
        }
        Err((outcome, e)) => {
            run.outcome = outcome.into();
            run.error = Some(e);
        }
    }
    run.duration_ms = started.elapsed().as_millis() as u64;
    run
}

/// Disarms NOSPACE when every member that raised it is now under its quota
/// (and no CORRUPT alarm is active); returns the members disarmed.
async fn disarm_nospace(
    client: &mut etcd_client::Client,
    reports: &[DefragReport],
) -> Result<Vec<u64>, String> {
    let alarms = maintenance::alarm_list(client)
        .await
        .map_err(|e| e.to_string())?;
    let nospace: Vec<u64> = alarms
        .iter()
        .filter(|a| a.alarm == "NOSPACE")
        .map(|a| a.member_id)
        .collect();
    if nospace.is_empty() || alarms.iter().any(|a| a.alarm == "CORRUPT") {
        return Ok(Vec::new());
    }
    let under_quota = |id: u64| {
        reports.iter().any(|r| {
            r.id == id
                && match (&r.outcome, r.db_quota) {
                    (DefragOutcome::Defragmented { db_size_after, .. }, Some(q)) => {
                        *db_size_after < q
                    }
                    _ => false,
                }
        })
    };
    if !nospace.iter().all(|id| under_quota(*id)) {
        tracing::warn!(
            ?nospace,
            "NOSPACE stays armed: not every member that raised it is defragmented under its quota"
        );
        return Ok(Vec::new());
    }
    maintenance::alarm_disarm(client, false)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(?nospace, "NOSPACE disarmed after defragmentation");
    Ok(nospace)
}

/// A run that stopped with `error`.
fn failed(error: String) -> (&'static str, String) {
    ("failed", error)
}
