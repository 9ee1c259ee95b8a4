//! The health task of one cluster: observe, evaluate, track the leader,
//! publish, record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{MetricsRound, MonitorEvent};
use crate::cluster::{ClusterObservation, Collector, CollectorOptions};
use crate::config::{ClusterConfig, MonitoringConfig};
use crate::health::{self, HealthSnapshot, Verdict};
use crate::store::{LeaderChange, Store, unix_ms};

/// Full snapshots (members, findings with evidence) are stored when the
/// verdict or the findings change, and at least this often.
const BODY_EVERY: Duration = Duration::from_secs(300);

pub(super) struct HealthTask {
    pub ownership: super::ha::Ownership,
    pub cluster: ClusterConfig,
    pub monitoring: MonitoringConfig,
    pub thresholds: health::Thresholds,
    pub store: Store,
    pub events: broadcast::Sender<MonitorEvent>,
    pub publish: watch::Sender<Option<Arc<HealthSnapshot>>>,
    pub metrics: watch::Receiver<Option<Arc<MetricsRound>>>,
    pub leader_changes: Arc<std::sync::atomic::AtomicU64>,
    /// The member connections, shared with the metrics task.
    pub clients: crate::cluster::MemberClients,
    pub token: CancellationToken,
}

#[tracing::instrument(name = "health", skip_all, fields(cluster = %t.cluster.name))]
pub(super) async fn run(t: HealthTask) {
    let name = t.cluster.name.clone();
    let mut collector = Collector::new(
        t.cluster.clone(),
        CollectorOptions {
            scrape_metrics: false,
            hashkv: false,
            certificates: true,
            wait_for_certificates: false,
        },
    )
    .sharing(t.clients.clone());
    let mut interval = tokio::time::interval(t.monitoring.health_check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Leader changes are kept as long as the longest leader-change rule looks back.
    let horizon_ms = t.thresholds.leader_change_horizon().as_millis() as i64;
    let since = unix_ms(SystemTime::now()) - horizon_ms;
    let mut recent_changes: VecDeque<i64> = match t.store.leader_changes(&name, since).await {
        Ok(changes) => changes
            .iter()
            .filter(|c| c.old_leader.is_some())
            .map(|c| c.at_ms)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read leader history");
            VecDeque::new()
        }
    };
    let mut known_leader: Option<(u64, String)> = None;
    let mut last_hashkv: Option<Instant> = None;
    let mut last_signature: Option<String> = None;
    let mut last_body = Instant::now() - BODY_EVERY;
    let mut last_verdict: Option<Verdict> = None;

    loop {
        tokio::select! {
            _ = t.token.cancelled() => break,
            _ = interval.tick() => {}
        }
        if !t.ownership.owned() {
            // Another replica checks this cluster: its published status
            // answers the API here. Start afresh when this one owns it again.
            if t.publish.borrow().is_some() {
                t.publish.send_replace(None);
                known_leader = None;
                last_verdict = None;
                last_signature = None;
            }
            continue;
        }
        let hashkv_due =
            last_hashkv.is_none_or(|at| at.elapsed() >= t.monitoring.consistency_check_interval);
        let mut obs = tokio::select! {
            _ = t.token.cancelled() => break,
            obs = collector.collect_round(false, hashkv_due) => obs,
        };
        if obs.hashkv.is_some() {
            last_hashkv = Some(Instant::now());
        }
        attach_metrics(&mut obs, t.metrics.borrow().as_deref());
        let now_ms = unix_ms(obs.taken_at);

        // Leader stability: a change is a new agreed leader different from
        // the last one known (a spell without leader is not a change by itself).
        let mut change = None;
        if let Some(leader) = health::agreed_leader(&obs) {
            let leader_name = member_name(&obs, leader);
            if let Some((old, old_name)) = &known_leader {
                if *old != leader {
                    change = Some(LeaderChange {
                        cluster: name.clone(),
                        at_ms: now_ms,
                        old_leader: Some(format!("{old:x}")),
                        new_leader: Some(format!("{leader:x}")),
                        old_name: Some(old_name.clone()),
                        new_name: Some(leader_name.clone()),
                        term: obs
                            .members
                            .iter()
                            .find(|m| m.id == leader)
                            .and_then(|m| m.status.as_ref())
                            .or_else(|| obs.members.iter().find_map(|m| m.status.as_ref()))
                            .map(|s| s.raft_term),
                    });
                    recent_changes.push_back(now_ms);
                    t.leader_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            known_leader = Some((leader, leader_name));
        }
        while recent_changes
            .front()
            .is_some_and(|at| *at < now_ms - horizon_ms)
        {
            recent_changes.pop_front();
        }

        let snapshot = Arc::new(health::evaluate_with_history(
            obs,
            &t.thresholds,
            Some(recent_changes.iter().copied().collect()),
        ));
        if let Some(c) = change {
            tracing::warn!(
                old = c.old_name.as_deref().unwrap_or("?"),
                new = c.new_name.as_deref().unwrap_or("?"),
                term = c.term,
                "leader changed"
            );
            if let Err(e) = t.store.record_leader_change(&c).await {
                tracing::warn!(error = %e, "cannot record the leader change");
            }
            let _ = t.events.send(MonitorEvent::LeaderChanged(c));
        }

        let signature = signature(&snapshot);
        let with_body = last_signature.as_deref() != Some(signature.as_str())
            || last_body.elapsed() >= BODY_EVERY;
        if with_body {
            last_body = Instant::now();
        }
        // Recorded beside the round, not in it: a slow or failing store
        // must not delay the next check (nor the alerts that read it).
        let (store, recorded) = (t.store.clone(), snapshot.clone());
        // Replicas: the other replicas' API answers from this.
        let published = t.ownership.fence().map(|fence| {
            let metrics = t
                .metrics
                .borrow()
                .as_deref()
                .and_then(|m| serde_json::to_value(m).ok());
            (fence, serde_json::to_value(&*snapshot).ok(), metrics)
        });
        tokio::spawn(async move {
            if let Err(e) = store.record_snapshot(&recorded, with_body).await {
                tracing::warn!(error = %e, "cannot record the health snapshot");
            }
            if let Some((fence, Some(status), metrics)) = published {
                let at = unix_ms(recorded.observation.taken_at);
                if let Err(e) = store
                    .publish_status(&fence, at, &status, metrics.as_ref())
                    .await
                {
                    tracing::warn!(error = %e, "cannot publish the cluster status to the other replicas");
                }
            }
        });
        if last_verdict != Some(snapshot.verdict) {
            let findings: Vec<&str> = snapshot
                .findings
                .iter()
                .map(|f| f.message.as_str())
                .collect();
            match snapshot.verdict {
                Verdict::Healthy => tracing::info!(verdict = ?snapshot.verdict, "cluster verdict"),
                _ => {
                    tracing::warn!(verdict = ?snapshot.verdict, findings = ?findings, "cluster verdict")
                }
            }
            let _ = t.events.send(MonitorEvent::VerdictChanged {
                cluster: name.clone(),
                from: last_verdict,
                to: snapshot.verdict,
                at_ms: now_ms,
            });
            last_verdict = Some(snapshot.verdict);
        }
        last_signature = Some(signature);
        let _ = t.events.send(MonitorEvent::Health {
            cluster: name.clone(),
            verdict: snapshot.verdict,
            findings: snapshot.findings.len(),
            at_ms: now_ms,
        });
        t.publish.send_replace(Some(snapshot));
    }
}

/// Adds the latest scraped metrics to each member of the observation (the
/// metrics task scrapes on its own schedule).
fn attach_metrics(obs: &mut ClusterObservation, round: Option<&MetricsRound>) {
    let Some(round) = round else { return };
    for m in &mut obs.members {
        if let Some(entry) = round
            .members
            .iter()
            .find(|e| e.endpoint == m.endpoint || (!m.name.is_empty() && e.member == m.name))
        {
            m.metrics = entry.metrics.clone();
        }
    }
}

fn member_name(obs: &ClusterObservation, id: u64) -> String {
    obs.members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.label())
        .unwrap_or_else(|| format!("{id:x}"))
}

/// What makes two snapshots "the same" for storage: verdict and findings.
fn signature(s: &HealthSnapshot) -> String {
    let mut parts: Vec<String> = s
        .findings
        .iter()
        .map(|f| format!("{}:{}", f.kind, f.member.as_deref().unwrap_or("")))
        .collect();
    parts.sort();
    format!(
        "{:?}|{}|{}",
        s.verdict,
        s.leader.as_deref().unwrap_or(""),
        parts.join(",")
    )
}
