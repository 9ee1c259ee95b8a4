//! The alert book of one cluster: the pure part of the engine. Given the
//! time, the rules' outcomes, the silences and the acknowledged groups, a
//! [`step`](AlertBook::step) moves alerts through pending -> firing ->
//! resolved, applies inhibition and silences, and decides per group
//! (cluster, rule) when to notify: first firing, an update when the group's
//! alerts changed (after `group_interval`), a repeat after `repeat_interval`
//! unless acknowledged, and resolved. No I/O and no clock: the
//! [`engine`](super::engine) gathers the inputs and records the [`Effect`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Sample;
use super::rules::{ActiveRule, Outcome};
use crate::config::alerts::{AlertsConfig, InhibitRuleConfig};
use crate::model::{
    Alert, AlertState, Effect, GroupState, Labels, Matcher, Notification, NotificationStatus,
    Silence, fingerprint,
};

/// One inhibition rule, parsed (Alertmanager's semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

impl InhibitRule {
    /// Parses `alerts.inhibit_rules[]` (checked by the configuration check).
    pub fn from_config(c: &InhibitRuleConfig) -> Result<InhibitRule, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|m| Matcher::parse(m))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(InhibitRule {
            source: parse(&c.source_matchers)?,
            target: parse(&c.target_matchers)?,
            equal: c.equal.clone(),
        })
    }

    fn all(ms: &[Matcher], labels: &Labels) -> bool {
        ms.iter().all(|m| m.matches(labels))
    }

    /// The firing alert among `sources` that inhibits `target`, if any. An
    /// alert that matches both sides is not inhibited by another that does
    /// too (Alertmanager's rule: two such alerts would silence each other).
    fn inhibitor<'a>(&self, target: &Alert, sources: &[&'a Alert]) -> Option<&'a Alert> {
        if !Self::all(&self.target, &target.labels) {
            return None;
        }
        let two_sided = Self::all(&self.source, &target.labels);
        sources.iter().copied().find(|s| {
            s.fingerprint != target.fingerprint
                && Self::all(&self.source, &s.labels)
                && self.equal.iter().all(|l| s.label(l) == target.label(l))
                && !(two_sided && Self::all(&self.target, &s.labels))
        })
    }
}

/// One cluster's alerts and notification groups.
#[derive(Debug, Clone)]
pub struct AlertBook {
    cluster: String,
    config: AlertsConfig,
    inhibit: Vec<InhibitRule>,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, GroupState>,
}

impl AlertBook {
    /// An empty book for `cluster` under `config` (invalid inhibition rules,
    /// rejected by the configuration check, are skipped).
    pub fn new(cluster: &str, config: &AlertsConfig) -> AlertBook {
        AlertBook {
            cluster: cluster.to_string(),
            config: config.clone(),
            inhibit: config
                .inhibit_rules
                .iter()
                .filter_map(|r| InhibitRule::from_config(r).ok())
                .collect(),
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Resumes from the recorded firing alerts and groups (after a restart).
    pub fn restore(&mut self, alerts: Vec<Alert>, groups: Vec<GroupState>) {
        for a in alerts {
            self.alerts.insert(a.fingerprint.clone(), a);
        }
        for g in groups {
            self.groups.insert(g.group_key.clone(), g);
        }
    }

    /// The alerts held now (pending and firing).
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// One evaluation at `now_ms`: the rules' outcomes (every configured
    /// rule), the silences (in force or not: expiry is judged at `now_ms`)
    /// and the acknowledged group keys in, what to record and send out.
    pub fn step(
        &mut self,
        now_ms: i64,
        outcomes: &[(&ActiveRule, Outcome)],
        silences: &[Silence],
        acked: &BTreeSet<String>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut fired_now = BTreeSet::new();
        // Alerts restored from the store whose rule no longer exists resolve.
        let known: BTreeSet<&str> = outcomes.iter().map(|(r, _)| r.key.as_str()).collect();
        let orphans: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !known.contains(a.rule.as_str()))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in orphans {
            self.resolve(&fp, now_ms, &mut effects);
        }
        for (rule, outcome) in outcomes {
            if let Outcome::Holds(samples) = outcome {
                self.apply(rule, samples, now_ms, &mut fired_now, &mut effects);
            }
        }
        self.suppress(now_ms, silences, &fired_now, &mut effects);
        self.dispatch(now_ms, acked, &mut effects);
        effects
    }

    /// Moves the alerts of `rule` through their lifecycle given what holds now.
    fn apply(
        &mut self,
        rule: &ActiveRule,
        samples: &[Sample],
        now: i64,
        fired_now: &mut BTreeSet<String>,
        effects: &mut Vec<Effect>,
    ) {
        let group_key = format!("{}/{}", self.cluster, rule.key);
        let mut seen = BTreeSet::new();
        for s in samples {
            let fp = fingerprint(&s.labels);
            seen.insert(fp.clone());
            let a = self.alerts.entry(fp.clone()).or_insert_with(|| Alert {
                fingerprint: fp.clone(),
                group_key: group_key.clone(),
                rule: rule.key.clone(),
                labels: s.labels.clone(),
                summary: s.summary.clone(),
                value: s.value,
                state: AlertState::Pending,
                active_since_ms: now,
                starts_at_ms: None,
                ends_at_ms: None,
                suppressed: None,
                runbook_url: None,
            });
            a.summary.clone_from(&s.summary);
            a.runbook_url.clone_from(&s.runbook_url);
            a.value = s.value;
            if a.state == AlertState::Pending && now - a.active_since_ms >= millis(rule.for_) {
                a.state = AlertState::Firing;
                a.starts_at_ms = Some(now);
                // Recorded once its suppression is known (in `suppress`).
                fired_now.insert(fp);
            }
        }
        let gone: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.rule == rule.key && !seen.contains(&a.fingerprint))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in gone {
            self.resolve(&fp, now, effects);
        }
    }

    fn resolve(&mut self, fp: &str, now: i64, effects: &mut Vec<Effect>) {
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
                effects.push(Effect::Resolved(a.clone()));
            }
            AlertState::Resolved => {}
        }
    }

    /// Silences, then inhibition, of every firing alert.
    fn suppress(
        &mut self,
        now: i64,
        silences: &[Silence],
        fired_now: &BTreeSet<String>,
        effects: &mut Vec<Effect>,
    ) {
        let firing: Vec<&Alert> = self
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .collect();
        let mut decided: Vec<(String, Option<String>)> = Vec::new();
        for a in &firing {
            let silenced = silences
                .iter()
                .find(|s| s.active_at(now) && s.matches(&a.labels))
                .map(|s| format!("silenced by {}", s.id));
            let inhibited = || {
                self.inhibit.iter().find_map(|r| {
                    r.inhibitor(a, &firing).map(|s| {
                        format!(
                            "inhibited by {} ({})",
                            s.label("alertname"),
                            s.label("severity")
                        )
                    })
                })
            };
            decided.push((a.fingerprint.clone(), silenced.or_else(inhibited)));
        }
        for (fp, suppressed) in decided {
            let Some(a) = self.alerts.get_mut(&fp) else {
                continue;
            };
            if fired_now.contains(&fp) {
                a.suppressed = suppressed;
                effects.push(Effect::Fired(a.clone()));
            } else if a.suppressed != suppressed {
                a.suppressed = suppressed;
                effects.push(Effect::Suppressed(a.clone()));
            }
        }
    }

    /// Per group: notify when due, then forget resolved alerts and idle groups.
    fn dispatch(&mut self, now: i64, acked: &BTreeSet<String>, effects: &mut Vec<Effect>) {
        let keys: BTreeSet<String> = self
            .alerts
            .values()
            .map(|a| a.group_key.clone())
            .chain(self.groups.keys().cloned())
            .collect();
        let group_interval = millis(self.config.group_interval);
        let repeat_interval = millis(self.config.repeat_interval);
        for key in keys {
            let members: Vec<&Alert> = self
                .alerts
                .values()
                .filter(|a| a.group_key == key)
                .collect();
            let any_firing = members.iter().any(|a| a.state == AlertState::Firing);
            let active: Vec<Alert> = members
                .iter()
                .filter(|a| a.state == AlertState::Firing && a.suppressed.is_none())
                .map(|a| (*a).clone())
                .collect();
            let g = self
                .groups
                .get(&key)
                .cloned()
                .unwrap_or_else(|| GroupState {
                    group_key: key.clone(),
                    cluster: self.cluster.clone(),
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
                } else if since >= repeat_interval && !acked.contains(&key) {
                    Some("repeat")
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
                    .map(|a| (*a).clone())
                    .collect();
                next.notified_firing = false;
                next.last_notified_ms = now;
                next.notified.clear();
                Some((NotificationStatus::Resolved, "resolved", resolved))
            } else {
                None
            };
            match decision {
                Some((status, reason, alerts)) => {
                    let notification = self.notification(&key, status, reason, alerts, now);
                    let mut route = Labels::new();
                    route.insert("alertname".into(), notification.alertname.clone());
                    route.insert("severity".into(), notification.severity.clone());
                    route.insert("cluster".into(), self.cluster.clone());
                    let channels = super::route::channels_for(&self.config, &route);
                    self.groups.insert(key.clone(), next.clone());
                    effects.push(Effect::Notify {
                        group: next,
                        notification,
                        channels,
                    });
                }
                None if g.notified_firing => {
                    self.groups.insert(key.clone(), g);
                }
                None => {}
            }
        }
        // Resolved alerts are notified (or never were): forget them, and idle groups.
        self.alerts.retain(|_, a| a.state != AlertState::Resolved);
        let alerts = &self.alerts;
        self.groups
            .retain(|k, g| g.notified_firing || alerts.values().any(|a| &a.group_key == k));
    }

    fn notification(
        &self,
        key: &str,
        status: NotificationStatus,
        reason: &str,
        alerts: Vec<Alert>,
        now: i64,
    ) -> Notification {
        let first = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
        let get = |k: &str| first.get(k).cloned().unwrap_or_default();
        Notification {
            id: format!("{:016x}", rand::random::<u64>()),
            group_key: key.to_string(),
            status,
            reason: reason.into(),
            cluster: self.cluster.clone(),
            alertname: get("alertname"),
            severity: get("severity"),
            alerts,
            at_ms: now,
            external_url: self.config.external_url.clone(),
        }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests;
