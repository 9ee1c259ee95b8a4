//! Rule evaluation: pure functions from one cluster's latest health
//! snapshot, metrics rounds and leader changes to the conditions that hold
//! now ([`Sample`]s). No state, no timing: `for`, grouping and delivery live
//! in the engine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::config::{AlertSeverity, AlertsConfig, Comparison};
use super::{Labels, Sample};
use crate::health::HealthSnapshot;
use crate::monitor::MetricsRound;
use crate::store::{LeaderChange, MetricPoint};

/// Built-in rule names: the etcd mixin's, then the monitor's own.
pub const BUILTIN_NAMES: &[&str] = &[
    "etcdMembersDown",
    "etcdInsufficientMembers",
    "etcdNoLeader",
    "etcdHighNumberOfLeaderChanges",
    "etcdHighNumberOfFailedGRPCRequests",
    "etcdHighNumberOfFailedGRPCRequests_critical",
    "etcdGRPCRequestsSlow",
    "etcdMemberCommunicationSlow",
    "etcdHighNumberOfFailedProposals",
    "etcdHighFsyncDurations",
    "etcdHighFsyncDurations_critical",
    "etcdHighCommitDurations",
    "etcdDatabaseQuotaLowSpace",
    "etcdExcessiveDatabaseGrowth",
    "etcdDatabaseHighFragmentationRatio",
    "etcdHighProbeLatency",
    "etcdDatabaseSizeLarge",
    "etcdAvailableMembersLow",
    "etcdLeaderChangesPerHour",
    "etcdHighProbeErrorRate",
    "etcdProposalQueueLong",
    "etcdAlarmActive",
];

/// Metric names a custom rule may use: those the metrics task stores.
pub use crate::monitor::STORED_METRICS;

/// Rules that compute rates or increases over recent metrics rounds (the
/// engine keeps the rounds of the longest `window` among them).
pub const RATE_RULES: &[&str] = &[
    "etcdMembersDown",
    "etcdHighNumberOfFailedGRPCRequests",
    "etcdHighNumberOfFailedGRPCRequests_critical",
    "etcdHighNumberOfFailedProposals",
];

/// gRPC codes the mixin counts as failures (not `Canceled`: canceled
/// watches are normal and were the mixin users' top noise complaint).
pub const FAILED_GRPC_CODES: &[&str] = &[
    "Unknown",
    "FailedPrecondition",
    "ResourceExhausted",
    "Internal",
    "Unavailable",
    "DataLoss",
    "DeadlineExceeded",
];

const MIB: f64 = 1024.0 * 1024.0;

/// One rule, defaults and overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Configuration key (`etcdHighFsyncDurations_critical`).
    pub id: String,
    /// The `alertname` label (`etcdHighFsyncDurations`).
    pub alertname: String,
    /// The `severity` label.
    pub severity: AlertSeverity,
    /// The threshold, in the rule's unit.
    pub threshold: f64,
    /// How long the condition must hold.
    pub for_: Duration,
    /// Window of rate and growth rules.
    pub window: Duration,
    /// Whether evaluated.
    pub enabled: bool,
    /// What is evaluated.
    pub kind: RuleKind,
}

/// What a rule evaluates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleKind {
    /// A built-in rule, by its index in [`BUILTIN_NAMES`].
    Builtin(usize),
    /// A custom threshold over a stored metric.
    Custom {
        /// Index into [`STORED_METRICS`].
        metric: usize,
        /// The comparison.
        comparison: Comparison,
    },
}

fn m(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// The defaults of built-in rule `name`: (severity, threshold, for, window).
fn defaults(name: &str) -> (AlertSeverity, f64, Duration, Duration) {
    use AlertSeverity::*;
    match name {
        "etcdMembersDown" => (Warning, 0.01, m(20), m(2)),
        "etcdInsufficientMembers" => (Critical, 0.0, m(3), m(0)),
        "etcdNoLeader" => (Critical, 0.0, m(1), m(0)),
        "etcdHighNumberOfLeaderChanges" => (Warning, 4.0, m(5), m(15)),
        "etcdHighNumberOfFailedGRPCRequests" => (Warning, 1.0, m(10), m(5)),
        "etcdHighNumberOfFailedGRPCRequests_critical" => (Critical, 5.0, m(5), m(5)),
        "etcdGRPCRequestsSlow" => (Critical, 0.15, m(10), m(0)),
        "etcdMemberCommunicationSlow" => (Warning, 0.15, m(10), m(0)),
        "etcdHighNumberOfFailedProposals" => (Warning, 5.0, m(15), m(15)),
        "etcdHighFsyncDurations" => (Warning, 0.5, m(10), m(0)),
        "etcdHighFsyncDurations_critical" => (Critical, 1.0, m(10), m(0)),
        "etcdHighCommitDurations" => (Warning, 0.25, m(10), m(0)),
        "etcdDatabaseQuotaLowSpace" => (Critical, 95.0, m(10), m(0)),
        "etcdExcessiveDatabaseGrowth" => (Warning, 100.0, m(10), m(240)),
        "etcdDatabaseHighFragmentationRatio" => (Warning, 0.5, m(10), m(0)),
        "etcdHighProbeLatency" => (Warning, 500.0, m(5), m(0)),
        "etcdDatabaseSizeLarge" => (Warning, 8.0 * 1024.0 * MIB, m(10), m(0)),
        "etcdAvailableMembersLow" => (Warning, 0.0, m(1), m(0)),
        "etcdLeaderChangesPerHour" => (Warning, 3.0, m(0), m(60)),
        "etcdHighProbeErrorRate" => (Warning, 5.0, m(5), m(0)),
        "etcdProposalQueueLong" => (Warning, 10.0, m(5), m(0)),
        "etcdAlarmActive" => (Critical, 0.0, m(0), m(0)),
        _ => (Warning, 0.0, m(0), m(0)),
    }
}

/// Every rule of `config`: the built-in ones with their overrides, then the custom ones.
pub fn configured(config: &AlertsConfig) -> Vec<Rule> {
    let mut out: Vec<Rule> = BUILTIN_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (severity, threshold, for_, window) = defaults(name);
            let o = config.rules.get(*name).cloned().unwrap_or_default();
            Rule {
                id: name.to_string(),
                alertname: name.split('_').next().unwrap_or(name).to_string(),
                severity: o.severity.unwrap_or(severity),
                threshold: o.threshold.unwrap_or(threshold),
                for_: o.for_.unwrap_or(for_),
                window: o.window.unwrap_or(window),
                enabled: o.enabled.unwrap_or(true),
                kind: RuleKind::Builtin(i),
            }
        })
        .collect();
    for c in &config.custom_rules {
        if let Some(metric) = STORED_METRICS.iter().position(|x| *x == c.metric) {
            out.push(Rule {
                id: c.name.clone(),
                alertname: c.name.clone(),
                severity: c.severity,
                threshold: c.threshold,
                for_: c.for_,
                window: Duration::ZERO,
                enabled: c.enabled,
                kind: RuleKind::Custom {
                    metric,
                    comparison: c.comparison,
                },
            });
        }
    }
    out
}

/// What the rules read about one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The latest health snapshot.
    pub health: Option<&'a HealthSnapshot>,
    /// Recent metrics rounds, oldest first (the latest last).
    pub rounds: &'a VecDeque<Arc<MetricsRound>>,
    /// Leader changes of the last hour, oldest first.
    pub leader_changes: &'a [LeaderChange],
    /// Stored `db_total_size_bytes` samples of the growth window, oldest first.
    pub db_size_history: Option<&'a [MetricPoint]>,
}

/// A rule's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The conditions that hold now (empty: none, the rule's alerts resolve).
    Holds(Vec<Sample>),
    /// The data the rule needs is missing: its alerts keep their state.
    NotEvaluable(&'static str),
}

/// Evaluates one rule.
pub fn evaluate(rule: &Rule, input: &Input) -> Outcome {
    let ctx = Ctx { rule, input };
    match rule.kind {
        RuleKind::Builtin(i) => ctx.builtin(BUILTIN_NAMES[i]),
        RuleKind::Custom { metric, comparison } => ctx.custom(STORED_METRICS[metric], comparison),
    }
}

struct Ctx<'a> {
    rule: &'a Rule,
    input: &'a Input<'a>,
}

type Getter = fn(&crate::cluster::MemberMetrics) -> Option<f64>;

impl Ctx<'_> {
    fn sample(&self, member: Option<&str>, value: f64, summary: String) -> Sample {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), self.rule.alertname.clone());
        labels.insert("severity".into(), self.rule.severity.as_str().into());
        labels.insert("cluster".into(), self.input.cluster.into());
        if let Some(member) = member {
            labels.insert("member".into(), member.into());
        }
        Sample {
            rule: self.rule.id.clone(),
            labels,
            summary,
            value,
        }
    }

    fn latest(&self) -> Option<&MetricsRound> {
        self.input.rounds.back().map(|r| r.as_ref())
    }

    /// Per member, the latest value of `get` compared with `>` threshold.
    fn per_member_above(&self, get: Getter, what: &str, unit: Unit) -> Outcome {
        let Some(round) = self.latest() else {
            return Outcome::NotEvaluable("no metrics round yet");
        };
        let t = self.rule.threshold;
        let mut out = Vec::new();
        let mut any = false;
        for e in &round.members {
            let Some(v) = e.metrics.as_ref().and_then(get) else {
                continue;
            };
            any = true;
            if v > t {
                let who = member_name(&e.member, &e.endpoint);
                out.push(self.sample(
                    Some(who),
                    v,
                    format!(
                        "member {who}: {what} is {} (threshold {})",
                        unit.show(v),
                        unit.show(t)
                    ),
                ));
            }
        }
        if !any {
            return Outcome::NotEvaluable("no member exposes the metric");
        }
        Outcome::Holds(out)
    }

    /// Per member, the increase of counter `get` over the rule's window, and the time it spans.
    fn increases(&self, get: Getter) -> Vec<(String, f64, f64)> {
        let Some(latest) = self.latest() else {
            return Vec::new();
        };
        let from_ms = latest.at_ms - self.rule.window.as_millis() as i64;
        let mut out = Vec::new();
        for e in &latest.members {
            let Some(now_v) = e.metrics.as_ref().and_then(get) else {
                continue;
            };
            let first = self
                .input
                .rounds
                .iter()
                .filter(|r| r.at_ms >= from_ms)
                .find_map(|r| {
                    r.members
                        .iter()
                        .find(|x| x.endpoint == e.endpoint)
                        .and_then(|x| x.metrics.as_ref().and_then(get))
                        .map(|v| (r.at_ms, v))
                });
            if let Some((at, then_v)) = first.filter(|(at, _)| *at < latest.at_ms) {
                // A counter that went down was reset by a restart.
                let inc = if now_v >= then_v {
                    now_v - then_v
                } else {
                    now_v
                };
                let secs = (latest.at_ms - at) as f64 / 1e3;
                out.push((member_name(&e.member, &e.endpoint).to_string(), inc, secs));
            }
        }
        out
    }

    fn builtin(&self, name: &str) -> Outcome {
        let t = self.rule.threshold;
        let health = self.input.health;
        match name {
            "etcdMembersDown" => {
                let Some(h) = health else {
                    return Outcome::NotEvaluable("no health snapshot yet");
                };
                let mut down: Vec<String> = h
                    .observation
                    .members
                    .iter()
                    .filter(|m| !m.reachable())
                    .map(|m| m.label())
                    .collect();
                // The mixin also counts peers a member fails to send to.
                for (who, inc, secs) in self.increases(|m| m.peer_sent_failures) {
                    if secs > 0.0 && inc / secs > t {
                        down.push(format!("{who} (peer send failures {:.2}/s)", inc / secs));
                    }
                }
                if down.is_empty() {
                    return Outcome::Holds(Vec::new());
                }
                Outcome::Holds(vec![self.sample(
                    None,
                    down.len() as f64,
                    format!("members down or unreachable: {}", down.join(", ")),
                )])
            }
            "etcdInsufficientMembers" => {
                let Some(h) = health else {
                    return Outcome::NotEvaluable("no health snapshot yet");
                };
                let holds = h.reachable_voting_members < h.quorum;
                Outcome::Holds(
                    holds
                        .then(|| {
                            self.sample(
                                None,
                                h.reachable_voting_members as f64,
                                format!(
                                    "only {} of {} voting members answer; quorum needs {}",
                                    h.reachable_voting_members, h.voting_members, h.quorum
                                ),
                            )
                        })
                        .into_iter()
                        .collect(),
                )
            }
            "etcdNoLeader" => {
                let Some(h) = health else {
                    return Outcome::NotEvaluable("no health snapshot yet");
                };
                let out = h
                    .observation
                    .members
                    .iter()
                    .filter(|m| m.status.as_ref().is_some_and(|s| s.leader == 0))
                    .map(|m| {
                        let who = m.label();
                        self.sample(Some(&who), 0.0, format!("member {who} has no leader"))
                    })
                    .collect();
                Outcome::Holds(out)
            }
            "etcdHighNumberOfLeaderChanges" | "etcdLeaderChangesPerHour" => {
                if health.is_none() {
                    return Outcome::NotEvaluable("no health snapshot yet");
                }
                let since = self.input.now_ms - self.rule.window.as_millis() as i64;
                let n = self
                    .input
                    .leader_changes
                    .iter()
                    .filter(|c| c.at_ms >= since && c.old_leader.is_some())
                    .count() as f64;
                // The mixin fires at >= 4 in 15m; the per-hour rule at more than its threshold.
                let holds = if name == "etcdHighNumberOfLeaderChanges" {
                    n >= t
                } else {
                    n > t
                };
                Outcome::Holds(
                    holds
                        .then(|| {
                            self.sample(
                                None,
                                n,
                                format!(
                                    "{n} leader changes in the last {} (threshold {t})",
                                    crate::config::duration::format(&self.rule.window)
                                ),
                            )
                        })
                        .into_iter()
                        .collect(),
                )
            }
            "etcdHighNumberOfFailedGRPCRequests"
            | "etcdHighNumberOfFailedGRPCRequests_critical" => {
                let Some(latest) = self.latest() else {
                    return Outcome::NotEvaluable("no metrics round yet");
                };
                let from_ms = latest.at_ms - self.rule.window.as_millis() as i64;
                let Some(first) = self
                    .input
                    .rounds
                    .iter()
                    .find(|r| r.at_ms >= from_ms && r.at_ms < latest.at_ms)
                else {
                    return Outcome::NotEvaluable("one metrics round only");
                };
                let mut out = Vec::new();
                for e in &latest.members {
                    let (Some(now), Some(then)) = (
                        e.metrics.as_ref(),
                        first
                            .members
                            .iter()
                            .find(|x| x.endpoint == e.endpoint)
                            .and_then(|x| x.metrics.as_ref()),
                    ) else {
                        continue;
                    };
                    let inc = |code: &str| {
                        let a = now.grpc_handled_by_code.get(code).copied().unwrap_or(0.0);
                        let b = then.grpc_handled_by_code.get(code).copied().unwrap_or(0.0);
                        (a - b).max(0.0)
                    };
                    let total: f64 = now.grpc_handled_by_code.keys().map(|c| inc(c)).sum();
                    let failed: f64 = FAILED_GRPC_CODES.iter().map(|c| inc(c)).sum();
                    if total > 0.0 && 100.0 * failed / total > t {
                        let who = member_name(&e.member, &e.endpoint);
                        out.push(self.sample(
                            Some(who),
                            100.0 * failed / total,
                            format!(
                                "member {who}: {:.1}% of gRPC requests failed (threshold {t}%)",
                                100.0 * failed / total
                            ),
                        ));
                    }
                }
                Outcome::Holds(out)
            }
            // Members expose gRPC handling-time histograms only with
            // `--metrics extensive`; without them the rule is not evaluable.
            "etcdGRPCRequestsSlow" => self.per_member_above(
                |m| m.grpc_unary_p99,
                "gRPC unary request p99 (without Defragment)",
                Unit::Seconds,
            ),
            "etcdMemberCommunicationSlow" => self.per_member_above(
                |m| m.peer_round_trip_p99,
                "peer round-trip p99",
                Unit::Seconds,
            ),
            "etcdHighNumberOfFailedProposals" => {
                if self.latest().is_none() {
                    return Outcome::NotEvaluable("no metrics round yet");
                }
                let out = self
                    .increases(|m| m.proposals_failed)
                    .into_iter()
                    .filter(|(_, inc, _)| *inc > t)
                    .map(|(who, inc, _)| {
                        self.sample(Some(&who), inc, format!(
                            "member {who}: {inc} proposals failed in the last {} (threshold {t})",
                            crate::config::duration::format(&self.rule.window)
                        ))
                    })
                    .collect();
                Outcome::Holds(out)
            }
            "etcdHighFsyncDurations" | "etcdHighFsyncDurations_critical" => {
                self.per_member_above(|m| m.wal_fsync_p99, "WAL fsync p99", Unit::Seconds)
            }
            "etcdHighCommitDurations" => self.per_member_above(
                |m| m.backend_commit_p99,
                "backend commit p99",
                Unit::Seconds,
            ),
            "etcdDatabaseQuotaLowSpace" => self.per_member_above(
                |m| {
                    let q = m.quota_backend_bytes.filter(|q| *q > 0.0)?;
                    Some(100.0 * m.db_total_size_bytes? / q)
                },
                "database size against its quota",
                Unit::Percent,
            ),
            "etcdDatabaseSizeLarge" => {
                self.per_member_above(|m| m.db_total_size_bytes, "database size", Unit::Bytes)
            }
            "etcdProposalQueueLong" => {
                self.per_member_above(|m| m.proposals_pending, "pending proposals", Unit::Plain)
            }
            "etcdDatabaseHighFragmentationRatio" => {
                let Some(round) = self.latest() else {
                    return Outcome::NotEvaluable("no metrics round yet");
                };
                let mut out = Vec::new();
                for e in &round.members {
                    let Some(x) = &e.metrics else { continue };
                    let (Some(used), Some(total)) = (x.db_in_use_bytes, x.db_total_size_bytes)
                    else {
                        continue;
                    };
                    if total > 0.0 && used / total < t && used > 100.0 * MIB {
                        let who = member_name(&e.member, &e.endpoint);
                        out.push(self.sample(
                            Some(who),
                            used / total,
                            format!(
                                "member {who} uses {} of {} allocated ({:.0}%): defragment it",
                                Unit::Bytes.show(used),
                                Unit::Bytes.show(total),
                                100.0 * used / total
                            ),
                        ));
                    }
                }
                Outcome::Holds(out)
            }
            "etcdExcessiveDatabaseGrowth" => self.growth(),
            "etcdHighProbeLatency" => {
                let Some(round) = self.latest() else {
                    return Outcome::NotEvaluable("no metrics round yet");
                };
                let p = &round.probes;
                let worst = [
                    p.put.p99_ms,
                    p.linearizable_get.p99_ms,
                    p.serializable_get.p99_ms,
                ]
                .into_iter()
                .flatten()
                .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
                let Some(worst) = worst else {
                    return Outcome::NotEvaluable("no successful probe yet");
                };
                Outcome::Holds(
                    (worst > t)
                        .then(|| {
                            self.sample(
                                None,
                                worst,
                                format!("probe p99 latency is {worst:.0} ms (threshold {t} ms)"),
                            )
                        })
                        .into_iter()
                        .collect(),
                )
            }
            "etcdHighProbeErrorRate" => {
                let Some(round) = self.latest() else {
                    return Outcome::NotEvaluable("no metrics round yet");
                };
                let p = &round.probes;
                let (ok, err) = [&p.put, &p.linearizable_get, &p.serializable_get]
                    .iter()
                    .fold((0, 0), |(o, e), s| (o + s.count, e + s.errors));
                if ok + err == 0 {
                    return Outcome::NotEvaluable("no probe yet");
                }
                let pct = 100.0 * err as f64 / (ok + err) as f64;
                Outcome::Holds(
                    (pct > t)
                        .then(|| {
                            self.sample(
                                None,
                                pct,
                                format!("{pct:.1}% of probe requests failed (threshold {t}%)"),
                            )
                        })
                        .into_iter()
                        .collect(),
                )
            }
            "etcdAvailableMembersLow" => {
                let Some(h) = health else {
                    return Outcome::NotEvaluable("no health snapshot yet");
                };
                // 0 means: one failure away from losing quorum.
                let need = if t > 0.0 {
                    t
                } else {
                    (h.quorum + 1).min(h.voting_members) as f64
                };
                let have = h.reachable_voting_members as f64;
                Outcome::Holds(
                    (have < need)
                        .then(|| {
                            self.sample(
                                None,
                                have,
                                format!(
                                    "{have} of {} voting members answer (minimum {need})",
                                    h.voting_members
                                ),
                            )
                        })
                        .into_iter()
                        .collect(),
                )
            }
            "etcdAlarmActive" => {
                let Some(h) = health else {
                    return Outcome::NotEvaluable("no health snapshot yet");
                };
                let out = h
                    .observation
                    .alarms
                    .iter()
                    .map(|a| {
                        let who = h
                            .observation
                            .members
                            .iter()
                            .find(|m| m.id == a.member_id)
                            .map(|m| m.label())
                            .unwrap_or_else(|| format!("{:x}", a.member_id));
                        let mut s = self.sample(
                            Some(&who),
                            1.0,
                            format!("alarm {} raised by member {who}", a.kind),
                        );
                        s.labels.insert("alarm".into(), a.kind.clone());
                        s
                    })
                    .collect();
                Outcome::Holds(out)
            }
            _ => Outcome::NotEvaluable("unknown rule"),
        }
    }

    /// The mixin's `predict_linear(db size [4h], 4h) > quota`: a least-squares
    /// line through the stored samples of the window, extended one window ahead.
    fn growth(&self) -> Outcome {
        let (Some(points), Some(round)) = (self.input.db_size_history, self.latest()) else {
            return Outcome::NotEvaluable("no database size history yet");
        };
        let mut by_member: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for p in points {
            by_member
                .entry(p.member.as_str())
                .or_default()
                .push((p.at_ms as f64 / 1e3, p.value));
        }
        let horizon = self.rule.window.as_secs_f64();
        let mut out = Vec::new();
        for e in &round.members {
            let who = member_name(&e.member, &e.endpoint);
            let Some(quota) = e
                .metrics
                .as_ref()
                .and_then(|x| x.quota_backend_bytes)
                .filter(|q| *q > 0.0)
            else {
                continue;
            };
            let Some(series) = by_member.get(who).filter(|s| s.len() >= 3) else {
                continue;
            };
            let n = series.len() as f64;
            let (mx, my) = series
                .iter()
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
            let (sxy, sxx) = series.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
                (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
            });
            if sxx <= 0.0 {
                continue;
            }
            let (last_x, _) = series[series.len() - 1];
            let predicted = my + sxy / sxx * (last_x + horizon - mx);
            let pct = 100.0 * predicted / quota;
            if pct > self.rule.threshold {
                out.push(self.sample(Some(who), predicted, format!(
                    "member {who}: at the current growth its database reaches {} ({pct:.0}% of its quota) within {}",
                    Unit::Bytes.show(predicted), crate::config::duration::format(&self.rule.window)
                )));
            }
        }
        Outcome::Holds(out)
    }

    fn custom(&self, metric: &str, cmp: Comparison) -> Outcome {
        let Some(round) = self.latest() else {
            return Outcome::NotEvaluable("no metrics round yet");
        };
        let points = crate::monitor::points_of(round);
        let mut any = false;
        let mut out = Vec::new();
        for p in points.iter().filter(|p| p.name == metric) {
            any = true;
            if cmp.holds(p.value, self.rule.threshold) {
                let member = (!p.member.is_empty()).then_some(p.member.as_str());
                out.push(self.sample(
                    member,
                    p.value,
                    format!(
                    "{metric}{} is {} ({} {})",
                    member.map(|m| format!(" of member {m}")).unwrap_or_default(),
                    p.value, cmp.symbol(), self.rule.threshold
                ),
                ));
            }
        }
        if !any {
            return Outcome::NotEvaluable("the metric is not in the latest round");
        }
        Outcome::Holds(out)
    }
}

fn member_name<'a>(member: &'a str, endpoint: &'a str) -> &'a str {
    if member.is_empty() { endpoint } else { member }
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Bytes,
    Percent,
    Plain,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{:.0} ms", v * 1e3),
            Unit::Bytes => format!("{:.1} MiB", v / MIB),
            Unit::Percent => format!("{v:.1}%"),
            Unit::Plain => format!("{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_mixin_and_overrides_apply() {
        let mut cfg = AlertsConfig::default();
        cfg.rules.insert(
            "etcdMembersDown".into(),
            super::super::config::RuleOverride {
                for_: Some(Duration::ZERO),
                ..Default::default()
            },
        );
        let rules = configured(&cfg);
        let get = |id: &str| rules.iter().find(|r| r.id == id).unwrap().clone();
        assert_eq!(get("etcdMembersDown").for_, Duration::ZERO);
        assert_eq!(get("etcdInsufficientMembers").for_, m(3));
        let crit = get("etcdHighFsyncDurations_critical");
        assert_eq!(crit.alertname, "etcdHighFsyncDurations");
        assert_eq!(crit.severity, AlertSeverity::Critical);
        assert_eq!(crit.threshold, 1.0);
        assert_eq!(rules.len(), BUILTIN_NAMES.len());
    }

    use crate::cluster::MemberMetrics;
    use crate::monitor::{MemberMetricsEntry, ProbeReport};

    /// A metrics round at `at_ms` with one member `m1` whose figures `f` sets.
    fn round(at_ms: i64, f: impl FnOnce(&mut MemberMetrics)) -> Arc<MetricsRound> {
        let mut metrics = MemberMetrics::default();
        f(&mut metrics);
        Arc::new(MetricsRound {
            cluster: "main".into(),
            at_ms,
            members: vec![MemberMetricsEntry {
                member: "m1".into(),
                endpoint: "http://127.0.0.1:2379".into(),
                metrics_url: String::new(),
                metrics: Some(metrics),
                error: None,
            }],
            probes: ProbeReport::default(),
            revision: None,
            revision_rate: None,
            proposals_committed_rate: None,
            duration_ms: 0.0,
        })
    }

    fn run(id: &str, rounds: &[Arc<MetricsRound>], history: Option<&[MetricPoint]>) -> Outcome {
        let rules = configured(&AlertsConfig::default());
        let rule = rules.iter().find(|r| r.id == id).unwrap();
        let rounds: VecDeque<_> = rounds.iter().cloned().collect();
        let input = Input {
            cluster: "main",
            now_ms: rounds.back().map(|r| r.at_ms).unwrap_or(0),
            health: None,
            rounds: &rounds,
            leader_changes: &[],
            db_size_history: history,
        };
        evaluate(rule, &input)
    }

    fn fired(o: &Outcome) -> Vec<String> {
        match o {
            Outcome::Holds(s) => s
                .iter()
                .map(|s| s.labels["alertname"].clone() + "/" + &s.labels["severity"])
                .collect(),
            Outcome::NotEvaluable(why) => vec![format!("not evaluable: {why}")],
        }
    }

    #[test]
    fn fsync_warning_and_critical_thresholds() {
        let slow = [round(0, |m| m.wal_fsync_p99 = Some(0.7))];
        assert_eq!(
            fired(&run("etcdHighFsyncDurations", &slow, None)),
            ["etcdHighFsyncDurations/warning"]
        );
        assert!(fired(&run("etcdHighFsyncDurations_critical", &slow, None)).is_empty());
        let slower = [round(0, |m| m.wal_fsync_p99 = Some(1.5))];
        assert_eq!(
            fired(&run("etcdHighFsyncDurations_critical", &slower, None)),
            ["etcdHighFsyncDurations/critical"]
        );
        assert!(matches!(
            run("etcdHighFsyncDurations", &[], None),
            Outcome::NotEvaluable(_)
        ));
    }

    #[test]
    fn failed_grpc_ratio_ignores_canceled() {
        let codes = |ok: f64, canceled: f64, unavailable: f64| {
            move |m: &mut MemberMetrics| {
                m.grpc_handled_by_code.insert("OK".into(), ok);
                m.grpc_handled_by_code.insert("Canceled".into(), canceled);
                m.grpc_handled_by_code
                    .insert("Unavailable".into(), unavailable);
            }
        };
        // 1000 new requests, 500 canceled watches, 3 Unavailable: 0.3 %, quiet.
        let quiet = [
            round(0, codes(0.0, 0.0, 0.0)),
            round(60_000, codes(497.0, 500.0, 3.0)),
        ];
        assert!(fired(&run("etcdHighNumberOfFailedGRPCRequests", &quiet, None)).is_empty());
        // 30 Unavailable of 1000: 3 %, warning only.
        let bad = [
            round(0, codes(0.0, 0.0, 0.0)),
            round(60_000, codes(470.0, 500.0, 30.0)),
        ];
        assert_eq!(
            fired(&run("etcdHighNumberOfFailedGRPCRequests", &bad, None)),
            ["etcdHighNumberOfFailedGRPCRequests/warning"]
        );
        assert!(
            fired(&run(
                "etcdHighNumberOfFailedGRPCRequests_critical",
                &bad,
                None
            ))
            .is_empty()
        );
    }

    #[test]
    fn failed_proposals_count_increases_across_a_counter_reset() {
        let r = |at, v| round(at, move |m| m.proposals_failed = Some(v));
        assert!(
            fired(&run(
                "etcdHighNumberOfFailedProposals",
                &[r(0, 10.0), r(60_000, 14.0)],
                None
            ))
            .is_empty()
        );
        assert_eq!(
            fired(&run(
                "etcdHighNumberOfFailedProposals",
                &[r(0, 10.0), r(60_000, 20.0)],
                None
            ))
            .len(),
            1
        );
        // The member restarted: the counter went down; its new value is the increase.
        assert_eq!(
            fired(&run(
                "etcdHighNumberOfFailedProposals",
                &[r(0, 10.0), r(60_000, 6.0)],
                None
            ))
            .len(),
            1
        );
    }

    #[test]
    fn database_growth_is_predicted_one_window_ahead() {
        let quota = 2.0 * 1024.0 * MIB;
        let latest = [round(3 * 3_600_000, |m| {
            m.quota_backend_bytes = Some(quota)
        })];
        let series = |per_hour: f64| -> Vec<MetricPoint> {
            (0..4)
                .map(|h| MetricPoint {
                    member: "m1".into(),
                    name: "db_total_size_bytes".into(),
                    at_ms: h * 3_600_000,
                    value: 1024.0 * MIB + per_hour * h as f64,
                })
                .collect()
        };
        // +50 MiB/h: 1.15 GiB now, 1.35 GiB in 4h: quiet.
        assert!(
            fired(&run(
                "etcdExcessiveDatabaseGrowth",
                &latest,
                Some(&series(50.0 * MIB))
            ))
            .is_empty()
        );
        // +200 MiB/h: 1.6 GiB now, 2.4 GiB in 4h > 2 GiB quota.
        assert_eq!(
            fired(&run(
                "etcdExcessiveDatabaseGrowth",
                &latest,
                Some(&series(200.0 * MIB))
            ))
            .len(),
            1
        );
    }

    #[test]
    fn quota_and_fragmentation() {
        let r = round(0, |m| {
            m.quota_backend_bytes = Some(1000.0 * MIB);
            m.db_total_size_bytes = Some(960.0 * MIB);
            m.db_in_use_bytes = Some(300.0 * MIB);
        });
        assert_eq!(
            fired(&run(
                "etcdDatabaseQuotaLowSpace",
                std::slice::from_ref(&r),
                None
            ))
            .len(),
            1
        );
        assert_eq!(
            fired(&run(
                "etcdDatabaseHighFragmentationRatio",
                std::slice::from_ref(&r),
                None
            ))
            .len(),
            1
        );
        let small = round(0, |m| {
            m.db_total_size_bytes = Some(90.0 * MIB);
            m.db_in_use_bytes = Some(20.0 * MIB);
        });
        // Under 100 MiB in use: not worth a defragmentation.
        assert!(fired(&run("etcdDatabaseHighFragmentationRatio", &[small], None)).is_empty());
    }

    #[test]
    fn members_down_counts_peer_send_failures_over_the_window() {
        let obs = crate::cluster::ClusterObservation {
            cluster: "main".into(),
            taken_at: std::time::SystemTime::now(),
            members: Vec::new(),
            member_list_error: None,
            alarms: Vec::new(),
            hashkv: None,
            duration_ms: 0.0,
        };
        let health = crate::health::evaluate(obs, &crate::health::Thresholds::default());
        let rules = configured(&AlertsConfig::default());
        let rule = rules.iter().find(|r| r.id == "etcdMembersDown").unwrap();
        let r = |at, v| round(at, move |m| m.peer_sent_failures = Some(v));
        let eval = |rounds: &[Arc<MetricsRound>]| {
            let rounds: VecDeque<_> = rounds.iter().cloned().collect();
            let input = Input {
                cluster: "main",
                now_ms: 60_000,
                health: Some(&health),
                rounds: &rounds,
                leader_changes: &[],
                db_size_history: None,
            };
            fired(&evaluate(rule, &input))
        };
        // 10 failures in 60 s: 0.17/s > 0.01/s.
        assert_eq!(
            eval(&[r(0, 0.0), r(60_000, 10.0)]),
            ["etcdMembersDown/warning"]
        );
        // 0.5 in 60 s: under the mixin's 0.01/s.
        assert!(eval(&[r(0, 0.0), r(60_000, 0.5)]).is_empty());
        // Failures older than the window (2m) no longer count.
        assert!(eval(&[r(0, 0.0), r(200_000, 10.0), r(330_000, 10.0)]).is_empty());
    }
}
