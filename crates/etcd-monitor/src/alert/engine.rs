//! The alert engine of one cluster: evaluates the rules after every health
//! check and metrics round, moves alerts through pending -> firing ->
//! resolved, applies inhibition and silences, and decides per group
//! (cluster, rule) when to notify: first firing, an update when the group's
//! alerts changed (after `group_interval`), a repeat after `repeat_interval`
//! unless acknowledged, and resolved. Decisions are written to the outbox in
//! the same transaction as the group's state, so a restart neither loses nor
//! repeats them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::AlertsConfig;
use super::rules::{self, Input, Outcome, Rule};
use super::{Alert, AlertState, Labels, Notification, NotificationStatus, Silences, fingerprint};
use crate::monitor::{ClusterHandle, MetricsRound};
use crate::store::{MetricPoint, Store, unix_ms};

/// Rules whose alerts an `etcdInsufficientMembers` alert of the same cluster
/// suppresses: with quorum lost they only repeat the same outage.
const INHIBITED_BY_QUORUM_LOSS: &[&str] =
    &["etcdMembersDown", "etcdAvailableMembersLow", "etcdNoLeader"];

/// How often a group is looked at when nothing new was observed (repeats, silence expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// The notification state of one group, persisted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// `cluster/rule`.
    pub group_key: String,
    /// Cluster name.
    pub cluster: String,
    /// Rule key.
    pub rule: String,
    /// A firing notification went out and no resolved one since.
    pub notified_firing: bool,
    /// When the group was last notified (ms since epoch).
    pub last_notified_ms: i64,
    /// Fingerprints of the alerts in the last firing notification.
    pub notified: Vec<String>,
}

/// One cluster's engine.
pub(crate) struct ClusterEngine {
    config: AlertsConfig,
    rules: Vec<Rule>,
    handle: ClusterHandle,
    store: Store,
    silences: Silences,
    wake: Arc<tokio::sync::Notify>,
    token: CancellationToken,
    direct: Arc<super::deliver::DirectDelivery>,
    /// Groups whose state could not be written (the store was failing):
    /// written again each round until the store takes them.
    unsynced: BTreeMap<String, (GroupState, Notification)>,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, GroupState>,
    rounds: VecDeque<Arc<MetricsRound>>,
    growth: Option<(i64, Vec<MetricPoint>)>,
    fired_now: Vec<String>,
}

impl ClusterEngine {
    pub(crate) fn new(
        config: &AlertsConfig,
        handle: ClusterHandle,
        store: Store,
        silences: Silences,
        wake: Arc<tokio::sync::Notify>,
        token: CancellationToken,
        direct: Arc<super::deliver::DirectDelivery>,
    ) -> Self {
        ClusterEngine {
            config: config.clone(),
            rules: rules::configured(config),
            handle,
            store,
            silences,
            wake,
            token,
            direct,
            unsynced: BTreeMap::new(),
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
            rounds: VecDeque::new(),
            growth: None,
            fired_now: Vec::new(),
        }
    }

    /// How far back the rules that compute rates from metrics rounds look.
    fn rate_window(&self) -> Duration {
        self.rules
            .iter()
            .filter(|r| r.enabled && rules::RATE_RULES.contains(&r.id.as_str()))
            .map(|r| r.window)
            .max()
            .unwrap_or_default()
    }

    fn push_round(&mut self) {
        let Some(round) = self.handle.metrics.borrow_and_update().clone() else {
            return;
        };
        if self.rounds.back().is_some_and(|r| r.at_ms == round.at_ms) {
            return;
        }
        let keep_from = round.at_ms - self.rate_window().as_millis() as i64 - 1000;
        self.rounds.push_back(round);
        while self.rounds.len() > 2
            && (self.rounds.len() > 4000
                || self.rounds.front().is_some_and(|r| r.at_ms < keep_from))
        {
            self.rounds.pop_front();
        }
    }

    async fn load(&mut self) {
        match self.store.load_alert_state(&self.handle.name).await {
            Ok((alerts, groups)) => {
                for a in alerts {
                    self.alerts.insert(a.fingerprint.clone(), a);
                }
                for g in groups {
                    self.groups.insert(g.group_key.clone(), g);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot load alert state; starting afresh"),
        }
    }

    /// One evaluation: rules, lifecycle, suppression, notifications.
    pub(crate) async fn evaluate(&mut self) {
        let now = unix_ms(SystemTime::now());
        let Some(health) = self.handle.health.borrow().clone() else {
            return;
        };
        let cluster = self.handle.name.clone();
        let leader_changes = self.store.leader_changes(&cluster, now - 3_600_000).await;
        if let Err(e) = &leader_changes {
            tracing::warn!(error = %e, "cannot read leader changes for alert rules");
        }
        self.refresh_growth(now).await;
        let mut outcomes: Vec<(Rule, Outcome)> = Vec::new();
        {
            let input = Input {
                cluster: &cluster,
                now_ms: now,
                health: Some(&health),
                rounds: &self.rounds,
                leader_changes: leader_changes.as_deref().unwrap_or(&[]),
                db_size_history: self.growth.as_ref().map(|(_, p)| p.as_slice()),
            };
            for rule in &self.rules {
                let outcome = if !rule.enabled {
                    Outcome::Holds(Vec::new())
                } else if leader_changes.is_err() && rule.id.contains("LeaderChanges") {
                    Outcome::NotEvaluable("leader changes unreadable")
                } else {
                    rules::evaluate(rule, &input)
                };
                outcomes.push((rule.clone(), outcome));
            }
        }
        // Alerts restored from the store whose rule no longer exists resolve.
        let known: BTreeSet<&str> = self.rules.iter().map(|r| r.id.as_str()).collect();
        let orphans: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !known.contains(a.rule.as_str()))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in orphans {
            self.resolve(&fp, now).await;
        }
        for (rule, outcome) in outcomes {
            if let Outcome::Holds(samples) = outcome {
                self.apply(&rule, samples, now).await;
            }
        }
        self.suppress(now).await;
        self.dispatch(now).await;
    }

    async fn refresh_growth(&mut self, now: i64) {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.id == "etcdExcessiveDatabaseGrowth" && r.enabled)
        else {
            return;
        };
        if self
            .growth
            .as_ref()
            .is_some_and(|(at, _)| now - at < 60_000)
        {
            return;
        }
        let from = now - rule.window.as_millis() as i64;
        match self
            .store
            .metric_series(&self.handle.name, "db_total_size_bytes", from, now, 0)
            .await
        {
            Ok(points) => self.growth = Some((now, points)),
            Err(e) => tracing::warn!(error = %e, "cannot read database size history"),
        }
    }

    /// Moves the alerts of `rule` through their lifecycle given what holds now.
    async fn apply(&mut self, rule: &Rule, samples: Vec<super::Sample>, now: i64) {
        let group_key = format!("{}/{}", self.handle.name, rule.id);
        let mut seen = BTreeSet::new();
        for s in samples {
            let fp = fingerprint(&s.labels);
            seen.insert(fp.clone());
            let a = self.alerts.entry(fp.clone()).or_insert_with(|| Alert {
                fingerprint: fp.clone(),
                group_key: group_key.clone(),
                rule: rule.id.clone(),
                labels: s.labels.clone(),
                summary: s.summary.clone(),
                value: s.value,
                state: AlertState::Pending,
                active_since_ms: now,
                starts_at_ms: None,
                ends_at_ms: None,
                suppressed: None,
            });
            a.summary = s.summary;
            a.value = s.value;
            if a.state == AlertState::Pending
                && now - a.active_since_ms >= rule.for_.as_millis() as i64
            {
                a.state = AlertState::Firing;
                a.starts_at_ms = Some(now);
                tracing::info!(alert = %a.fingerprint, summary = %a.summary, "alert firing");
                // Recorded once its suppression is known (in `suppress`).
                self.fired_now.push(fp.clone());
            }
        }
        let gone: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.rule == rule.id && !seen.contains(&a.fingerprint))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in gone {
            self.resolve(&fp, now).await;
        }
    }

    async fn resolve(&mut self, fp: &str, now: i64) {
        let Some(a) = self.alerts.get_mut(fp) else {
            return;
        };
        match a.state {
            AlertState::Pending => {
                self.alerts.remove(fp);
            }
            AlertState::Firing => {
                a.state = AlertState::Resolved;
                a.ends_at_ms = Some(now);
                tracing::info!(alert = %a.fingerprint, "alert resolved");
                if let Err(e) = self.store.alert_resolved(a).await {
                    tracing::warn!(error = %e, "cannot record a resolved alert");
                }
            }
            AlertState::Resolved => {}
        }
    }

    /// Inhibition, then silences.
    async fn suppress(&mut self, now: i64) {
        let silences = match self.silences.active(now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read silences");
                Vec::new()
            }
        };
        let firing: Vec<Labels> = self
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.labels.clone())
            .collect();
        let label = |l: &Labels, k: &str| l.get(k).cloned().unwrap_or_default();
        let quorum_lost = firing
            .iter()
            .any(|l| label(l, "alertname") == "etcdInsufficientMembers");
        for a in self
            .alerts
            .values_mut()
            .filter(|a| a.state == AlertState::Firing)
        {
            let name = label(&a.labels, "alertname");
            let inhibited = if quorum_lost && INHIBITED_BY_QUORUM_LOSS.contains(&name.as_str()) {
                Some("inhibited by etcdInsufficientMembers".to_string())
            } else if label(&a.labels, "severity") == "warning"
                && firing.iter().any(|l| {
                    label(l, "alertname") == name
                        && label(l, "severity") == "critical"
                        && label(l, "member") == label(&a.labels, "member")
                })
            {
                Some(format!("inhibited by {name} (critical)"))
            } else {
                None
            };
            let silenced = silences
                .iter()
                .find(|s| s.matches(&a.labels))
                .map(|s| format!("silenced by {}", s.id));
            let now_suppressed = silenced.or(inhibited);
            if self.fired_now.contains(&a.fingerprint) {
                a.suppressed = now_suppressed;
                if let Err(e) = self.store.alert_fired(a).await {
                    tracing::warn!(error = %e, "cannot record a firing alert");
                }
            } else if now_suppressed != a.suppressed {
                a.suppressed = now_suppressed;
                if let Err(e) = self.store.alert_suppressed(a).await {
                    tracing::warn!(error = %e, "cannot record an alert's suppression");
                }
            }
        }
        self.fired_now.clear();
    }

    /// Writes the state of groups notified while the store was failing, so
    /// a restart does not page for them again.
    async fn reconcile(&mut self) {
        let keys: Vec<String> = self.unsynced.keys().cloned().collect();
        for key in keys {
            let Some((g, n)) = self.unsynced.get(&key).cloned() else {
                continue;
            };
            match self.store.dispatch(&g, &n, &[]).await {
                Ok(()) => {
                    tracing::info!(group = %key, "group state written after the store recovered");
                    self.unsynced.remove(&key);
                }
                Err(_) => return, // still failing: try again next round
            }
        }
    }

    /// Per group: notify when due, then forget resolved alerts.
    async fn dispatch(&mut self, now: i64) {
        self.reconcile().await;
        let keys: BTreeSet<String> = self
            .alerts
            .values()
            .map(|a| a.group_key.clone())
            .chain(self.groups.keys().cloned())
            .collect();
        let group_interval = self.config.group_interval.as_millis() as i64;
        let repeat_interval = self.config.repeat_interval.as_millis() as i64;
        for key in keys {
            let members: Vec<Alert> = self
                .alerts
                .values()
                .filter(|a| a.group_key == key)
                .cloned()
                .collect();
            let any_firing = members.iter().any(|a| a.state == AlertState::Firing);
            let active: Vec<Alert> = members
                .iter()
                .filter(|a| a.state == AlertState::Firing && a.suppressed.is_none())
                .cloned()
                .collect();
            let g = self
                .groups
                .get(&key)
                .cloned()
                .unwrap_or_else(|| GroupState {
                    group_key: key.clone(),
                    cluster: self.handle.name.clone(),
                    rule: key
                        .rsplit_once('/')
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default(),
                    ..GroupState::default()
                });
            let mut next = g.clone();
            let decision = if !active.is_empty() {
                let fps: Vec<String> = active.iter().map(|a| a.fingerprint.clone()).collect();
                let since = now - g.last_notified_ms;
                let reason = if !g.notified_firing {
                    Some("firing")
                } else if fps != g.notified && since >= group_interval {
                    Some("update")
                } else if since >= repeat_interval {
                    match self.store.group_acked(&key).await {
                        Ok(true) => None,
                        Ok(false) => Some("repeat"),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read acknowledgement");
                            None
                        }
                    }
                } else {
                    None
                };
                reason.map(|r| {
                    next.notified_firing = true;
                    next.last_notified_ms = now;
                    next.notified = fps;
                    (NotificationStatus::Firing, r, active)
                })
            } else if !any_firing && g.notified_firing {
                let resolved: Vec<Alert> = members
                    .iter()
                    .filter(|a| {
                        a.state == AlertState::Resolved || g.notified.contains(&a.fingerprint)
                    })
                    .cloned()
                    .collect();
                next.notified_firing = false;
                next.last_notified_ms = now;
                next.notified.clear();
                Some((NotificationStatus::Resolved, "resolved", resolved))
            } else {
                None
            };
            if let Some((status, reason, alerts)) = decision {
                let first = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
                let get = |k: &str| first.get(k).cloned().unwrap_or_default();
                let n = Notification {
                    id: format!("{:016x}", rand::random::<u64>()),
                    group_key: key.clone(),
                    status,
                    reason: reason.into(),
                    cluster: self.handle.name.clone(),
                    alertname: get("alertname"),
                    severity: get("severity"),
                    alerts,
                    at_ms: now,
                    external_url: self.config.external_url.clone(),
                };
                let mut route_labels = Labels::new();
                for k in ["alertname", "severity", "cluster"] {
                    route_labels.insert(k.into(), get(k));
                }
                let channels = super::route::channels_for(&self.config, &route_labels);
                match self.store.dispatch(&next, &n, &channels).await {
                    Ok(()) => {
                        tracing::info!(group = %key, reason, channels = %channels.join(","), "notification queued");
                        self.groups.insert(key.clone(), next);
                        self.unsynced.remove(&key);
                        self.wake.notify_waiters();
                    }
                    Err(e) => {
                        // The outbox cannot take it: page anyway, and write
                        // the group's state once the store recovers.
                        tracing::error!(error = %e, group = %key, reason, channels = %channels.join(","), "cannot queue a notification; delivering it directly");
                        self.direct.send(n.clone(), channels);
                        self.groups.insert(key.clone(), next.clone());
                        self.unsynced.insert(key.clone(), (next, n));
                    }
                }
            } else if !self.groups.contains_key(&key) && g.notified_firing {
                self.groups.insert(key.clone(), g);
            }
        }
        // Resolved alerts are notified (or never were): forget them, and idle groups.
        self.alerts.retain(|_, a| a.state != AlertState::Resolved);
        let alerts = &self.alerts;
        self.groups
            .retain(|k, g| g.notified_firing || alerts.values().any(|a| &a.group_key == k));
    }
}

pub(crate) async fn run(e: ClusterEngine) {
    use tracing::Instrument;
    let span = tracing::info_span!("alerts", cluster = %e.handle.name);
    run_engine(e).instrument(span).await
}

async fn run_engine(mut e: ClusterEngine) {
    e.load().await;
    let mut health = e.handle.health.clone();
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let metrics_changed = {
            let metrics = &mut e.handle.metrics;
            tokio::select! {
                _ = e.token.cancelled() => break,
                r = health.changed() => {
                    if r.is_err() { break; }
                    health.borrow_and_update();
                    false
                }
                r = metrics.changed() => {
                    if r.is_err() { break; }
                    true
                }
                _ = tick.tick() => false,
            }
        };
        if metrics_changed {
            e.push_round();
        }
        e.evaluate().await;
    }
}
