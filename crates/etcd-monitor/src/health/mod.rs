//! Health evaluation: an immutable verdict with findings and their evidence,
//! computed from one [`ClusterObservation`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{ClusterObservation, MemberObservation};

/// Overall state of a cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything checked is fine.
    Healthy,
    /// Serving, with at least one problem.
    Degraded,
    /// Not serving writes or linearizable reads (no quorum, no leader, nothing reachable).
    Unavailable,
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not a problem.
    Info,
    /// A problem that does not stop the cluster serving.
    Warning,
    /// The cluster, or data, is at risk or down.
    Critical,
}

/// One thing found wrong, with evidence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// Stable identifier: `quorum_lost`, `member_unreachable`, `no_leader`, ...
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The member concerned, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// One sentence for people.
    pub message: String,
    /// Who said what: the raw figures behind the finding.
    #[schema(value_type = Object)]
    pub evidence: Value,
}

/// Thresholds of the evaluation. Those of conditions an alert rule also
/// judges are the rule's (`alert::rules::RuleSet::health_thresholds`
/// builds them from the configuration), so the verdict and the pager agree;
/// the rest are `monitoring.thresholds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Raft entries a member may lag behind the most advanced member.
    pub max_raft_index_lag: u64,
    /// Committed entries a member may have not yet applied.
    pub max_apply_lag: u64,
    /// A member slower than this to answer Status or a read is reported.
    pub slow_member: std::time::Duration,
    /// DB size as a percentage of the quota reported as a warning.
    pub db_quota_warning_percent: f64,
    /// Above this percentage the quota finding is critical
    /// (`etcdDatabaseQuotaLowSpace`'s threshold).
    pub db_quota_critical_percent: f64,
    /// In-use / allocated below this is fragmentation
    /// (`etcdDatabaseHighFragmentationRatio`'s threshold)...
    pub fragmentation_ratio: f64,
    /// ...once the allocated size is at least this.
    pub fragmentation_min_db_size: u64,
    /// Leader-change limits, one per enabled rule that counts them.
    pub leader_changes: Vec<LeaderChangeLimit>,
    /// A certificate with fewer days of validity left is a warning
    /// (`etcdCertificateExpiring`'s threshold)...
    pub certificate_warning_days: f64,
    /// ...and with fewer than this, critical
    /// (`etcdCertificateExpiringCritical`'s).
    pub certificate_critical_days: f64,
}

/// "More than `max` (or at least `max`, when `inclusive`) leader changes
/// within `window`", as one alert rule states it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderChangeLimit {
    /// The rule's `alertname`.
    pub rule: &'static str,
    /// The count compared.
    pub max: f64,
    /// `>=` (the mixin's) rather than `>`.
    pub inclusive: bool,
    /// How far back changes count.
    pub window: std::time::Duration,
}

impl LeaderChangeLimit {
    /// Changes within the window ending at `now_ms`, and whether they break the limit.
    pub fn judge(&self, changes_ms: &[i64], now_ms: i64) -> (usize, bool) {
        let since = now_ms - self.window.as_millis() as i64;
        let n = changes_ms.iter().filter(|at| **at >= since).count();
        let over = if self.inclusive {
            n as f64 >= self.max
        } else {
            n as f64 > self.max
        };
        (n, over)
    }
}

impl Thresholds {
    /// `monitoring.thresholds` with the shared conditions at `shared`'s values.
    pub fn new(
        own: &crate::config::HealthThresholds,
        db_quota_critical_percent: f64,
        fragmentation_ratio: f64,
        leader_changes: Vec<LeaderChangeLimit>,
    ) -> Thresholds {
        Thresholds {
            max_raft_index_lag: own.max_raft_index_lag,
            max_apply_lag: own.max_apply_lag,
            slow_member: own.slow_member,
            db_quota_warning_percent: own.db_quota_warning_percent,
            db_quota_critical_percent,
            fragmentation_ratio,
            fragmentation_min_db_size: own.fragmentation_min_db_size,
            leader_changes,
            certificate_warning_days: 30.0,
            certificate_critical_days: 7.0,
        }
    }

    /// How far back leader changes must be kept to judge every limit.
    pub fn leader_change_horizon(&self) -> std::time::Duration {
        self.leader_changes
            .iter()
            .map(|l| l.window)
            .max()
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(3600))
    }

    /// A member's database against its quota: (percent used, size, quota),
    /// when the quota is known (from the member's metrics).
    pub fn quota_use(m: &MemberObservation) -> Option<(f64, f64, f64)> {
        let s = m.status.as_ref()?;
        let quota = m
            .metrics
            .as_ref()
            .and_then(|x| x.quota_backend_bytes)
            .filter(|q| *q > 0.0)?;
        let size = s.db_size as f64;
        Some((100.0 * size / quota, size, quota))
    }

    /// How bad `days` of validity left are: `None` while above the warning
    /// threshold.
    pub fn certificate_severity(&self, days: f64) -> Option<Severity> {
        if days < self.certificate_critical_days {
            Some(Severity::Critical)
        } else if days < self.certificate_warning_days {
            Some(Severity::Warning)
        } else {
            None
        }
    }

    /// Whether the quota use is past the critical threshold (the alert's condition).
    pub fn quota_critical(&self, percent: f64) -> bool {
        percent > self.db_quota_critical_percent
    }

    /// A member's in-use / allocated ratio, when it is fragmentation worth
    /// a defragmentation: (ratio, in use, allocated).
    pub fn fragmentation(&self, m: &MemberObservation) -> Option<(f64, f64, f64)> {
        let s = m.status.as_ref()?;
        if s.db_size <= 0 || (s.db_size as u64) < self.fragmentation_min_db_size {
            return None;
        }
        let ratio = s.db_size_in_use as f64 / s.db_size as f64;
        (ratio < self.fragmentation_ratio).then_some((
            ratio,
            s.db_size_in_use as f64,
            s.db_size as f64,
        ))
    }
}

/// The verdict on one cluster at one moment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthSnapshot {
    /// Cluster name.
    pub cluster: String,
    /// Healthy, degraded or unavailable.
    pub verdict: Verdict,
    /// Voting members.
    pub voting_members: usize,
    /// Voting members that answered.
    pub reachable_voting_members: usize,
    /// Members needed for quorum.
    pub quorum: usize,
    /// The leader most members follow, hex.
    pub leader: Option<String>,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// The observation the verdict rests on.
    pub observation: ClusterObservation,
    /// When the recent leader changes were seen (ms since epoch, oldest
    /// first); empty without history (the `status` command).
    #[serde(skip)]
    pub leader_changes_ms: Vec<i64>,
}

/// The leader every answering member follows, if they agree on exactly one.
pub fn agreed_leader(obs: &ClusterObservation) -> Option<u64> {
    let mut leaders: Vec<u64> = obs
        .members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.leader))
        .filter(|l| *l != 0)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    match leaders.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Evaluates one observation on its own (no history: the `status` command).
pub fn evaluate(obs: ClusterObservation, t: &Thresholds) -> HealthSnapshot {
    evaluate_with_history(obs, t, None)
}

/// Evaluates one observation; `leader_changes_ms` (when each recent leader
/// change was seen), when the caller keeps history, adds the leader
/// stability finding and is kept in the snapshot for the alert rules.
pub fn evaluate_with_history(
    obs: ClusterObservation,
    t: &Thresholds,
    leader_changes_ms: Option<Vec<i64>>,
) -> HealthSnapshot {
    let mut f: Vec<Finding> = Vec::new();
    let voting: Vec<&MemberObservation> = obs.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voting.len() / 2 + 1;
    let reachable_voting = voting.iter().filter(|m| m.reachable()).count();
    let consensus_voting = voting
        .iter()
        .filter(|m| m.linearizable_read_ms.is_some())
        .count();
    let name_of = |id: u64| {
        obs.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.label())
            .unwrap_or_else(|| format!("{id:x}"))
    };

    if let Some(err) = &obs.member_list_error {
        f.push(finding(
            "member_list_failed",
            Severity::Critical,
            None,
            format!("the member list could not be read: {err}"),
            json!({ "error": err }),
        ));
    }

    // Identity: one cluster behind every configured endpoint and member.
    let ids = obs.cluster_ids();
    if ids.len() > 1 {
        let list: Vec<String> = ids
            .iter()
            .map(|(id, who)| format!("{id:x} ({})", who.join(", ")))
            .collect();
        let evidence: serde_json::Map<String, Value> = ids
            .iter()
            .map(|(id, who)| (format!("{id:x}"), json!(who)))
            .collect();
        f.push(finding(
            "cluster_id_mismatch",
            Severity::Critical,
            None,
            format!(
                "the configured endpoints answer for {} clusters: {}; a member left over from another cluster, or an endpoint of the wrong cluster",
                ids.len(),
                list.join("; ")
            ),
            json!({ "cluster_ids": evidence }),
        ));
    }
    for e in obs.stray_endpoints() {
        let message = match (e.member_id, e.cluster_id, &e.error) {
            (Some(member), Some(cluster), _) => format!(
                "configured endpoint {} answers as member {member:x} of cluster {cluster:x}, which this cluster's member list does not name",
                e.endpoint
            ),
            (_, _, Some(err)) => format!(
                "configured endpoint {} is no listed member's client URL and does not answer: {err}",
                e.endpoint
            ),
            _ => format!(
                "configured endpoint {} is no listed member's client URL",
                e.endpoint
            ),
        };
        f.push(finding(
            "endpoint_not_member",
            Severity::Warning,
            None,
            message,
            json!({ "endpoint": e }),
        ));
    }
    for m in obs.unconfigured_members() {
        f.push(finding(
            "member_not_configured",
            Severity::Info,
            Some(m.label()),
            format!(
                "member {} is in the member list but none of its client URLs ({}) is configured",
                m.label(),
                m.client_urls.join(", ")
            ),
            json!({ "client_urls": m.client_urls, "configured": obs.configured_endpoints }),
        ));
    }

    // Certificates running out: the members' serving certificates, the
    // monitor's client certificate and the CA it trusts.
    let now_ms = crate::time::unix_ms(obs.taken_at);
    for c in &obs.certificates {
        let Some(days) = c.days_left(now_ms) else {
            continue;
        };
        let Some(severity) = t.certificate_severity(days) else {
            continue;
        };
        let when = crate::cluster::certs::CertificateObservation::expiry_words(days);
        f.push(finding(
            "certificate_expiring",
            severity,
            c.member.clone(),
            format!("{} {when}", c.describe()),
            json!({ "certificate": c, "days_left": days }),
        ));
    }

    // Quorum: voting members that answer, against what raft needs.
    let quorum_lost = reachable_voting < quorum || (reachable_voting > 0 && consensus_voting == 0);
    if reachable_voting < quorum {
        f.push(finding(
            "quorum_lost",
            Severity::Critical,
            None,
            format!(
                "only {reachable_voting} of {} voting members answer; quorum needs {quorum}",
                voting.len()
            ),
            json!({ "voting": voting.len(), "reachable": reachable_voting, "quorum": quorum }),
        ));
    }

    // Members the monitor cannot reach (while others answer: a partition or a dead member).
    for m in obs.members.iter().filter(|m| !m.reachable()) {
        f.push(finding(
            "member_unreachable",
            if reachable_voting >= quorum {
                Severity::Warning
            } else {
                Severity::Critical
            },
            Some(m.label()),
            format!(
                "member {} ({}) does not answer: {}",
                m.label(),
                m.endpoint,
                m.error.as_deref().unwrap_or("no answer")
            ),
            json!({ "endpoint": m.endpoint, "error": m.error, "id": format!("{:x}", m.id) }),
        ));
    }

    // Leader views: who follows whom, in which term.
    let views: Vec<(&MemberObservation, u64, u64)> = obs
        .members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| (m, s.leader, s.raft_term)))
        .collect();
    let evidence: Value = views
        .iter()
        .map(|(m, l, term)| {
            (
                m.label(),
                json!({ "leader": format!("{l:x}"), "term": term }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    for (m, leader, term) in &views {
        if *leader == 0 {
            f.push(finding(
                "no_leader",
                Severity::Critical,
                Some(m.label()),
                format!("member {} reports no leader (term {term})", m.label()),
                json!({ "term": term }),
            ));
        }
    }
    let mut leaders: Vec<u64> = views
        .iter()
        .map(|(_, l, _)| *l)
        .filter(|l| *l != 0)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let max_term = views.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
    if leaders.len() > 1 {
        f.push(finding(
            "leader_disagreement",
            Severity::Critical,
            None,
            format!(
                "members disagree about the leader: {}",
                leaders
                    .iter()
                    .map(|l| name_of(*l))
                    .collect::<Vec<_>>()
                    .join(" vs ")
            ),
            evidence.clone(),
        ));
    }
    for (m, leader, term) in &views {
        if *leader == m.id && *term < max_term {
            f.push(finding(
                "stale_leader",
                Severity::Critical,
                Some(m.label()),
                format!("member {} still believes it leads in term {term}, but term {max_term} has begun elsewhere", m.label()),
                evidence.clone(),
            ));
        }
    }
    let terms: std::collections::BTreeSet<u64> = views.iter().map(|(_, _, t)| *t).collect();
    if terms.len() > 1 && leaders.len() <= 1 {
        f.push(finding(
            "term_disagreement",
            Severity::Warning,
            None,
            format!(
                "members report different raft terms ({})",
                terms
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence.clone(),
        ));
    }
    // Members that answer Status but cannot serve a linearizable read while
    // others can: cut off from the leader.
    if consensus_voting > 0 {
        for m in obs
            .members
            .iter()
            .filter(|m| m.reachable() && !m.is_learner && m.linearizable_read_ms.is_none())
        {
            f.push(finding(
                "member_partitioned",
                Severity::Warning,
                Some(m.label()),
                format!(
                    "member {} answers but cannot serve a linearizable read: {}",
                    m.label(),
                    m.linearizable_read_error
                        .as_deref()
                        .unwrap_or("unknown error")
                ),
                json!({ "error": m.linearizable_read_error }),
            ));
        }
    }

    // Raft progress.
    let max_index = obs
        .members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .map(|s| s.raft_index)
        .max()
        .unwrap_or(0);
    for m in &obs.members {
        let Some(s) = &m.status else { continue };
        let lag = max_index.saturating_sub(s.raft_index);
        if lag > t.max_raft_index_lag {
            f.push(finding(
                "raft_index_lag",
                Severity::Warning,
                Some(m.label()),
                format!(
                    "member {} is {lag} raft entries behind (index {} vs {max_index})",
                    m.label(),
                    s.raft_index
                ),
                json!({ "raft_index": s.raft_index, "max_raft_index": max_index, "lag": lag }),
            ));
        }
        let apply_lag = s.raft_index.saturating_sub(s.raft_applied_index);
        if apply_lag > t.max_apply_lag {
            f.push(finding(
                "apply_lag",
                Severity::Warning,
                Some(m.label()),
                format!(
                    "member {} has {apply_lag} committed entries not yet applied",
                    m.label()
                ),
                json!({ "raft_index": s.raft_index, "raft_applied_index": s.raft_applied_index }),
            ));
        }
        if !s.errors.is_empty() {
            f.push(finding(
                "member_errors",
                Severity::Warning,
                Some(m.label()),
                format!(
                    "member {} reports errors: {}",
                    m.label(),
                    s.errors.join("; ")
                ),
                json!({ "errors": s.errors }),
            ));
        }
    }

    // Alarms.
    for a in &obs.alarms {
        f.push(finding(
            "alarm",
            Severity::Critical,
            Some(name_of(a.member_id)),
            format!(
                "alarm {} raised by member {}{}",
                a.kind,
                name_of(a.member_id),
                if a.kind == "NOSPACE" { ": the cluster accepts only reads and deletes until it is compacted, defragmented and disarmed" } else { "" }
            ),
            json!({ "alarm": a.kind, "member": format!("{:x}", a.member_id) }),
        ));
    }

    // Database size against quota, and fragmentation.
    for m in &obs.members {
        if let Some((percent, size, quota)) = Thresholds::quota_use(m) {
            if percent >= t.db_quota_warning_percent || t.quota_critical(percent) {
                f.push(finding(
                    "db_quota",
                    if t.quota_critical(percent) {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    Some(m.label()),
                    format!(
                        "member {} database is {percent:.0}% of its quota ({} of {})",
                        m.label(),
                        bytes(size),
                        bytes(quota)
                    ),
                    json!({ "db_size": size, "quota": quota, "ratio": percent / 100.0,
                            "critical_percent": t.db_quota_critical_percent }),
                ));
            }
        }
        if let Some((ratio, in_use, size)) = t.fragmentation(m) {
            f.push(finding(
                "fragmentation",
                Severity::Warning,
                Some(m.label()),
                format!(
                    "member {} uses {} of {} allocated ({:.0}%): defragment to reclaim {}",
                    m.label(),
                    bytes(in_use),
                    bytes(size),
                    ratio * 100.0,
                    bytes(size - in_use)
                ),
                json!({ "db_size": size, "db_size_in_use": in_use, "ratio": ratio,
                        "threshold": t.fragmentation_ratio }),
            ));
        }
        for (what, ms) in [
            ("Status", m.status_latency_ms),
            ("linearizable read", m.linearizable_read_ms),
        ] {
            let slow_ms = t.slow_member.as_secs_f64() * 1e3;
            if let Some(ms) = ms.filter(|ms| *ms > slow_ms) {
                f.push(finding(
                    "slow_member",
                    Severity::Warning,
                    Some(m.label()),
                    format!(
                        "member {} took {ms:.0} ms to answer {what} (threshold {:.0} ms)",
                        m.label(),
                        slow_ms
                    ),
                    json!({ "call": what, "latency_ms": ms }),
                ));
            }
        }
    }

    // Learners waiting for promotion.
    for m in obs.members.iter().filter(|m| m.is_learner) {
        let progress = m.status.as_ref().map(|s| s.raft_index);
        f.push(finding(
            "learner_not_promoted",
            Severity::Warning,
            Some(m.label()),
            match progress {
                Some(i) if max_index.saturating_sub(i) <= t.max_raft_index_lag => {
                    format!(
                        "learner {} has caught up (index {i} of {max_index}) and can be promoted",
                        m.label()
                    )
                }
                _ => format!("learner {} is not promoted yet", m.label()),
            },
            json!({ "raft_index": progress, "max_raft_index": max_index }),
        ));
    }

    // Version skew.
    let versions: std::collections::BTreeSet<&str> = obs
        .members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.version.as_str()))
        .collect();
    if versions.len() > 1 {
        f.push(finding(
            "version_skew",
            Severity::Warning,
            None,
            format!(
                "members run different etcd versions: {}",
                versions.iter().copied().collect::<Vec<_>>().join(", ")
            ),
            obs.members
                .iter()
                .filter_map(|m| {
                    m.status
                        .as_ref()
                        .map(|s| (m.label(), Value::from(s.version.clone())))
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        ));
    }

    // Data consistency.
    if let Some(check) = &obs.hashkv {
        let hashes: std::collections::BTreeSet<u32> =
            check.hashes.iter().filter_map(|h| h.hash).collect();
        if hashes.len() > 1 {
            f.push(finding(
                "data_inconsistency",
                Severity::Critical,
                None,
                format!("members' KV hashes differ at revision {}", check.revision),
                check
                    .hashes
                    .iter()
                    .map(|h| {
                        (
                            h.member.clone(),
                            match (&h.hash, &h.error) {
                                (Some(hash), _) => json!(hash),
                                (None, e) => json!({ "error": e }),
                            },
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            ));
        }
    }

    if let Some(changes) = &leader_changes_ms {
        let now_ms = crate::time::unix_ms(obs.taken_at);
        let broken: Vec<(usize, &LeaderChangeLimit)> = t
            .leader_changes
            .iter()
            .filter_map(|l| match l.judge(changes, now_ms) {
                (n, true) => Some((n, l)),
                _ => None,
            })
            .collect();
        if let Some((n, worst)) = broken.first() {
            f.push(finding(
                "frequent_leader_changes",
                Severity::Warning,
                None,
                format!(
                    "{n} leader changes in the last {} (threshold: {}): look for slow disks, overloaded members or network trouble",
                    crate::config::duration::format(&worst.window),
                    if worst.inclusive {
                        format!("{} or more", worst.max)
                    } else {
                        format!("more than {}", worst.max)
                    }
                ),
                broken
                    .iter()
                    .map(|(n, l)| {
                        (
                            l.rule.to_string(),
                            json!({ "changes": n, "window": crate::config::duration::format(&l.window), "threshold": l.max }),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            ));
        }
    }

    f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    let all_without_leader = !views.is_empty() && views.iter().all(|(_, l, _)| *l == 0);
    let verdict = if reachable_voting == 0 || quorum_lost || all_without_leader {
        Verdict::Unavailable
    } else if f.iter().any(|x| x.severity >= Severity::Warning) {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    let leader = leaders
        .first()
        .filter(|_| leaders.len() == 1)
        .map(|l| format!("{l:x}"));
    HealthSnapshot {
        cluster: obs.cluster.clone(),
        verdict,
        voting_members: voting.len(),
        reachable_voting_members: reachable_voting,
        quorum,
        leader,
        findings: f,
        observation: obs,
        leader_changes_ms: leader_changes_ms.unwrap_or_default(),
    }
}

fn finding(
    kind: &'static str,
    severity: Severity,
    member: Option<String>,
    message: String,
    evidence: Value,
) -> Finding {
    Finding {
        kind,
        severity,
        member,
        message,
        evidence,
    }
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    //! Situations a healthy test cluster cannot be pushed into on demand
    //! (a stale leader needs a network partition), evaluated from observations.
    use std::time::SystemTime;

    use super::*;
    use crate::cluster::{MemberObservation, MemberStatus};

    fn member(id: u64, leader: u64, term: u64, index: u64) -> MemberObservation {
        MemberObservation {
            id,
            name: format!("m{id}"),
            peer_urls: vec![],
            client_urls: vec![format!("http://127.0.0.1:{id}")],
            is_learner: false,
            endpoint: format!("http://127.0.0.1:{id}"),
            status: Some(MemberStatus {
                member_id: id,
                cluster_id: 0xc1,
                version: "3.4.23".into(),
                db_size: 20_000,
                db_size_in_use: 16_000,
                leader,
                raft_term: term,
                raft_index: index,
                raft_applied_index: index,
                errors: vec![],
                is_learner: false,
                revision: 10,
            }),
            error: None,
            status_latency_ms: Some(1.0),
            linearizable_read_ms: Some(1.0),
            linearizable_read_error: None,
            metrics: None,
        }
    }

    fn observe(members: Vec<MemberObservation>) -> ClusterObservation {
        ClusterObservation {
            cluster: "t".into(),
            taken_at: SystemTime::now(),
            configured_endpoints: members.iter().map(|m| m.endpoint.clone()).collect(),
            members,
            member_list_error: None,
            cluster_id: Some(0xc1),
            unlisted_endpoints: vec![],
            alarms: vec![],
            hashkv: None,
            certificates: Vec::new(),
            duration_ms: 1.0,
        }
    }

    fn kinds(s: &HealthSnapshot) -> Vec<&'static str> {
        s.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn agreement_is_healthy() {
        let s = evaluate(
            observe(vec![
                member(1, 1, 5, 100),
                member(2, 1, 5, 100),
                member(3, 1, 5, 99),
            ]),
            &Thresholds::default(),
        );
        assert_eq!(s.verdict, Verdict::Healthy);
        assert!(s.findings.is_empty());
        assert_eq!(s.leader.as_deref(), Some("1"));
    }

    #[test]
    fn a_partitioned_old_leader_is_a_stale_leader() {
        let mut old = member(1, 1, 5, 100);
        old.linearizable_read_ms = None;
        old.linearizable_read_error = Some("timed out".into());
        let s = evaluate(
            observe(vec![old, member(2, 2, 6, 180), member(3, 2, 6, 180)]),
            &Thresholds::default(),
        );
        let k = kinds(&s);
        assert!(
            k.contains(&"stale_leader")
                && k.contains(&"leader_disagreement")
                && k.contains(&"member_partitioned"),
            "{k:?}"
        );
        let stale = s
            .findings
            .iter()
            .find(|f| f.kind == "stale_leader")
            .unwrap();
        assert_eq!(stale.member.as_deref(), Some("m1"));
        assert_eq!(stale.evidence["m1"]["term"], 5);
        assert_eq!(stale.evidence["m2"]["leader"], "2");
        assert_eq!(s.verdict, Verdict::Degraded);
    }

    #[test]
    fn lag_and_differing_hashes_are_reported() {
        let mut obs = observe(vec![
            member(1, 1, 5, 5000),
            member(2, 1, 5, 5000),
            member(3, 1, 5, 3000),
        ]);
        obs.hashkv = Some(crate::cluster::HashKvCheck {
            revision: 10,
            hashes: vec![
                crate::cluster::MemberHash::new("m1".into(), Ok(7)),
                crate::cluster::MemberHash::new("m2".into(), Ok(7)),
                crate::cluster::MemberHash::new("m3".into(), Ok(8)),
            ],
        });
        let s = evaluate(obs, &Thresholds::default());
        let k = kinds(&s);
        assert!(
            k.contains(&"raft_index_lag") && k.contains(&"data_inconsistency"),
            "{k:?}"
        );
        assert_eq!(s.findings[0].severity, Severity::Critical, "worst first");
    }
}
