//! The rule table: every built-in rule is a [`Rule`] with one [`RuleDef`]
//! (its configuration key, `alertname`, defaults, the inputs it reads, the
//! condition in words, its runbook anchor and its evaluation). Nothing
//! compares rule names as strings: a renamed or removed rule is a compile
//! error, not a rule that silently never fires.
//!
//! Evaluation is pure: one cluster's latest health snapshot (which carries
//! the recent leader changes), metrics rounds and database size history in,
//! the conditions that hold now ([`Sample`]s) out. `for`, grouping and
//! delivery live in the [`book`](super::book).
//!
//! The conditions a health finding also judges (quota, fragmentation, leader
//! changes, members down, no leader) read the same figures through the same
//! functions of [`crate::health::Thresholds`], whose thresholds
//! [`RuleSet::health_thresholds`] takes from this table: the verdict and the
//! pager cannot disagree.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Sample;
use crate::cluster::{GrpcTotals, grpc_increases};
use crate::config::HealthThresholds;
use crate::config::alerts::{AlertSeverity, AlertsConfig, Comparison};
use crate::health::{HealthSnapshot, LeaderChangeLimit, Thresholds};
use crate::metrics::window::{Increase, increase};
use crate::model::Labels;
use crate::monitor::MetricsRound;
use crate::store::MetricPoint;

/// Metric names a custom rule may use: those the metrics task stores.
pub use crate::monitor::STORED_METRICS;

pub use crate::cluster::FAILED_GRPC_CODES;

const MIB: f64 = 1024.0 * 1024.0;

/// The built-in rules: the etcd mixin's, then the monitor's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `etcdMembersDown`.
    MembersDown,
    /// `etcdInsufficientMembers`.
    InsufficientMembers,
    /// `etcdNoLeader`.
    NoLeader,
    /// `etcdHighNumberOfLeaderChanges`.
    HighNumberOfLeaderChanges,
    /// `etcdHighNumberOfFailedGRPCRequests` (warning).
    FailedGrpcRequests,
    /// `etcdHighNumberOfFailedGRPCRequests_critical`.
    FailedGrpcRequestsCritical,
    /// `etcdGRPCRequestsSlow`.
    GrpcRequestsSlow,
    /// `etcdMemberCommunicationSlow`.
    MemberCommunicationSlow,
    /// `etcdHighNumberOfFailedProposals`.
    FailedProposals,
    /// `etcdHighFsyncDurations` (warning).
    HighFsyncDurations,
    /// `etcdHighFsyncDurations_critical`.
    HighFsyncDurationsCritical,
    /// `etcdHighCommitDurations`.
    HighCommitDurations,
    /// `etcdDatabaseQuotaLowSpace`.
    DatabaseQuotaLowSpace,
    /// `etcdExcessiveDatabaseGrowth`.
    ExcessiveDatabaseGrowth,
    /// `etcdDatabaseHighFragmentationRatio`.
    DatabaseHighFragmentationRatio,
    /// `etcdHighProbeLatency`.
    HighProbeLatency,
    /// `etcdDatabaseSizeLarge`.
    DatabaseSizeLarge,
    /// `etcdAvailableMembersLow`.
    AvailableMembersLow,
    /// `etcdLeaderChangesPerHour`.
    LeaderChangesPerHour,
    /// `etcdHighProbeErrorRate`.
    HighProbeErrorRate,
    /// `etcdProposalQueueLong`.
    ProposalQueueLong,
    /// `etcdAlarmActive`.
    AlarmActive,
    /// `etcdClusterIdMismatch`.
    ClusterIdMismatch,
    /// `etcdEndpointNotMember`.
    EndpointNotMember,
    /// `etcdMemberNotConfigured`.
    MemberNotConfigured,
    /// `etcdCertificateExpiring`.
    CertificateExpiring,
    /// `etcdCertificateExpiring_critical`.
    CertificateExpiringCritical,
    /// `etcdKeyspacePrefixGrowing`.
    KeyspacePrefixGrowing,
    /// `etcdBackupTooOld`.
    BackupTooOld,
    /// `etcdBackupUnverified`.
    BackupUnverified,
}

/// What a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// The latest health snapshot.
    Health,
    /// The leader changes of its window (kept in the health snapshot).
    LeaderChanges,
    /// The latest metrics round.
    LatestRound,
    /// The metrics rounds of its window (rates and increases).
    RoundsOverWindow,
    /// The stored `db_total_size_bytes` samples of its window.
    DbSizeHistory,
    /// The growth between the two newest scheduled keyspace scans.
    KeyspaceGrowth,
    /// The backup schedules' state.
    Backups,
}

/// The unit of a rule's threshold and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Seconds (shown in ms).
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Bytes (shown in MiB).
    Bytes,
    /// A percentage.
    Percent,
    /// Days.
    Days,
    /// A ratio between 0 and 1.
    Ratio,
    /// A count of members.
    Members,
    /// A count (changes, proposals).
    Count,
    /// Events per second.
    PerSecond,
    /// No threshold: the condition is a state.
    None,
}

impl Unit {
    /// `v` in this unit, for people.
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{:.0} ms", v * 1e3),
            Unit::Milliseconds => format!("{v:.0} ms"),
            Unit::Bytes => format!("{:.1} MiB", v / MIB),
            Unit::Percent => format!("{v:.1}%"),
            Unit::Days => format!("{v:.1} days"),
            Unit::Ratio => format!("{v:.2}"),
            Unit::PerSecond => format!("{v:.2}/s"),
            Unit::Members | Unit::Count | Unit::None => format!("{v}"),
        }
    }
}

/// One built-in rule's definition.
pub struct RuleDef {
    /// The rule.
    pub rule: Rule,
    /// Configuration key (`etcdHighFsyncDurations_critical`); also the group's rule.
    pub key: &'static str,
    /// The `alertname` label (`etcdHighFsyncDurations`).
    pub alertname: &'static str,
    /// Default `severity` label.
    pub severity: AlertSeverity,
    /// Default threshold, in `unit`.
    pub threshold: f64,
    /// The threshold's unit.
    pub unit: Unit,
    /// Default `for`.
    pub for_: Duration,
    /// Default window of rate, increase, count and growth rules (zero: none).
    pub window: Duration,
    /// What it reads.
    pub needs: &'static [Need],
    /// The condition, in words.
    pub expr: &'static str,
    /// The anchor of its runbook in docs/runbooks.md (and of its row in
    /// docs/alerting.md).
    pub runbook: &'static str,
    eval: fn(&Ctx) -> Evaluated,
}

impl std::fmt::Debug for RuleDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleDef").field("key", &self.key).finish()
    }
}

const fn m(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

use AlertSeverity::{Critical, Info, Warning};
use Need::*;

const DEFS: [RuleDef; 30] = [
    RuleDef {
        rule: Rule::MembersDown,
        key: "etcdMembersDown",
        alertname: "etcdMembersDown",
        severity: Warning,
        threshold: 0.01,
        unit: Unit::PerSecond,
        for_: m(20),
        window: m(2),
        needs: &[Health, RoundsOverWindow],
        expr: "a member does not answer Status, or its peer send failures grow faster than the threshold over the window",
        runbook: "etcdmembersdown",
        eval: members_down,
    },
    RuleDef {
        rule: Rule::InsufficientMembers,
        key: "etcdInsufficientMembers",
        alertname: "etcdInsufficientMembers",
        severity: Critical,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(3),
        window: m(0),
        needs: &[Health],
        expr: "fewer voting members answer than quorum (n/2+1) needs",
        runbook: "etcdinsufficientmembers",
        eval: insufficient_members,
    },
    RuleDef {
        rule: Rule::NoLeader,
        key: "etcdNoLeader",
        alertname: "etcdNoLeader",
        severity: Critical,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(1),
        window: m(0),
        needs: &[Health],
        expr: "a member's Status says it has no leader",
        runbook: "etcdnoleader",
        eval: no_leader,
    },
    RuleDef {
        rule: Rule::HighNumberOfLeaderChanges,
        key: "etcdHighNumberOfLeaderChanges",
        alertname: "etcdHighNumberOfLeaderChanges",
        severity: Warning,
        threshold: 4.0,
        unit: Unit::Count,
        for_: m(5),
        window: m(15),
        needs: &[Health, LeaderChanges],
        expr: "at least threshold leader changes within the window",
        runbook: "etcdhighnumberofleaderchanges",
        eval: leader_changes,
    },
    RuleDef {
        rule: Rule::FailedGrpcRequests,
        key: "etcdHighNumberOfFailedGRPCRequests",
        alertname: "etcdHighNumberOfFailedGRPCRequests",
        severity: Warning,
        threshold: 1.0,
        unit: Unit::Percent,
        for_: m(10),
        window: m(5),
        needs: &[RoundsOverWindow],
        expr: "per member, failed gRPC requests (not Canceled) over the window exceed threshold % of all",
        runbook: "etcdhighnumberoffailedgrpcrequests",
        eval: failed_grpc,
    },
    RuleDef {
        rule: Rule::FailedGrpcRequestsCritical,
        key: "etcdHighNumberOfFailedGRPCRequests_critical",
        alertname: "etcdHighNumberOfFailedGRPCRequests",
        severity: Critical,
        threshold: 5.0,
        unit: Unit::Percent,
        for_: m(5),
        window: m(5),
        needs: &[RoundsOverWindow],
        expr: "per member, failed gRPC requests (not Canceled) over the window exceed threshold % of all",
        runbook: "etcdhighnumberoffailedgrpcrequests",
        eval: failed_grpc,
    },
    RuleDef {
        rule: Rule::GrpcRequestsSlow,
        key: "etcdGRPCRequestsSlow",
        alertname: "etcdGRPCRequestsSlow",
        severity: Critical,
        threshold: 0.15,
        unit: Unit::Seconds,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's unary gRPC handling p99 (Defragment excluded) over monitoring.metrics_window exceeds threshold seconds",
        runbook: "etcdgrpcrequestsslow",
        eval: grpc_slow,
    },
    RuleDef {
        rule: Rule::MemberCommunicationSlow,
        key: "etcdMemberCommunicationSlow",
        alertname: "etcdMemberCommunicationSlow",
        severity: Warning,
        threshold: 0.15,
        unit: Unit::Seconds,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's peer round-trip p99 over monitoring.metrics_window exceeds threshold seconds",
        runbook: "etcdmembercommunicationslow",
        eval: peer_slow,
    },
    RuleDef {
        rule: Rule::FailedProposals,
        key: "etcdHighNumberOfFailedProposals",
        alertname: "etcdHighNumberOfFailedProposals",
        severity: Warning,
        threshold: 5.0,
        unit: Unit::PerSecond,
        for_: m(15),
        window: m(15),
        needs: &[RoundsOverWindow],
        expr: "a member's failed proposals per second over the window exceed threshold",
        runbook: "etcdhighnumberoffailedproposals",
        eval: failed_proposals,
    },
    RuleDef {
        rule: Rule::HighFsyncDurations,
        key: "etcdHighFsyncDurations",
        alertname: "etcdHighFsyncDurations",
        severity: Warning,
        threshold: 0.5,
        unit: Unit::Seconds,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's WAL fsync p99 over monitoring.metrics_window exceeds threshold seconds",
        runbook: "etcdhighfsyncdurations",
        eval: fsync_slow,
    },
    RuleDef {
        rule: Rule::HighFsyncDurationsCritical,
        key: "etcdHighFsyncDurations_critical",
        alertname: "etcdHighFsyncDurations",
        severity: Critical,
        threshold: 1.0,
        unit: Unit::Seconds,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's WAL fsync p99 over monitoring.metrics_window exceeds threshold seconds",
        runbook: "etcdhighfsyncdurations",
        eval: fsync_slow,
    },
    RuleDef {
        rule: Rule::HighCommitDurations,
        key: "etcdHighCommitDurations",
        alertname: "etcdHighCommitDurations",
        severity: Warning,
        threshold: 0.25,
        unit: Unit::Seconds,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's backend commit p99 over monitoring.metrics_window exceeds threshold seconds",
        runbook: "etcdhighcommitdurations",
        eval: commit_slow,
    },
    RuleDef {
        rule: Rule::DatabaseQuotaLowSpace,
        key: "etcdDatabaseQuotaLowSpace",
        alertname: "etcdDatabaseQuotaLowSpace",
        severity: Critical,
        threshold: 95.0,
        unit: Unit::Percent,
        for_: m(10),
        window: m(0),
        needs: &[Health],
        expr: "a member's database size exceeds threshold % of its quota",
        runbook: "etcddatabasequotalowspace",
        eval: quota_low,
    },
    RuleDef {
        rule: Rule::ExcessiveDatabaseGrowth,
        key: "etcdExcessiveDatabaseGrowth",
        alertname: "etcdExcessiveDatabaseGrowth",
        severity: Warning,
        threshold: 100.0,
        unit: Unit::Percent,
        for_: m(10),
        window: m(240),
        needs: &[LatestRound, DbSizeHistory],
        expr: "the database size's trend over the window, extended one window ahead, exceeds threshold % of the quota",
        runbook: "etcdexcessivedatabasegrowth",
        eval: growth,
    },
    RuleDef {
        rule: Rule::DatabaseHighFragmentationRatio,
        key: "etcdDatabaseHighFragmentationRatio",
        alertname: "etcdDatabaseHighFragmentationRatio",
        severity: Warning,
        threshold: 0.5,
        unit: Unit::Ratio,
        for_: m(10),
        window: m(0),
        needs: &[Health],
        expr: "in use / allocated below threshold while allocated is at least monitoring.thresholds.fragmentation_min_db_size",
        runbook: "etcddatabasehighfragmentationratio",
        eval: fragmentation,
    },
    RuleDef {
        rule: Rule::HighProbeLatency,
        key: "etcdHighProbeLatency",
        alertname: "etcdHighProbeLatency",
        severity: Warning,
        threshold: 500.0,
        unit: Unit::Milliseconds,
        for_: m(5),
        window: m(0),
        needs: &[LatestRound],
        expr: "the worst p99 of the monitor's probes exceeds threshold ms",
        runbook: "etcdhighprobelatency",
        eval: probe_latency,
    },
    RuleDef {
        rule: Rule::DatabaseSizeLarge,
        key: "etcdDatabaseSizeLarge",
        alertname: "etcdDatabaseSizeLarge",
        severity: Warning,
        threshold: 8.0 * 1024.0 * MIB,
        unit: Unit::Bytes,
        for_: m(10),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member's database exceeds threshold bytes",
        runbook: "etcddatabasesizelarge",
        eval: db_large,
    },
    RuleDef {
        rule: Rule::AvailableMembersLow,
        key: "etcdAvailableMembersLow",
        alertname: "etcdAvailableMembersLow",
        severity: Warning,
        threshold: 0.0,
        unit: Unit::Members,
        for_: m(1),
        window: m(0),
        needs: &[Health],
        expr: "fewer voting members answer than threshold (0: quorum + 1, one failure from losing quorum)",
        runbook: "etcdavailablememberslow",
        eval: available_low,
    },
    RuleDef {
        rule: Rule::LeaderChangesPerHour,
        key: "etcdLeaderChangesPerHour",
        alertname: "etcdLeaderChangesPerHour",
        severity: Warning,
        threshold: 3.0,
        unit: Unit::Count,
        for_: m(0),
        window: m(60),
        needs: &[Health, LeaderChanges],
        expr: "more than threshold leader changes within the window",
        runbook: "etcdleaderchangesperhour",
        eval: leader_changes,
    },
    RuleDef {
        rule: Rule::HighProbeErrorRate,
        key: "etcdHighProbeErrorRate",
        alertname: "etcdHighProbeErrorRate",
        severity: Warning,
        threshold: 5.0,
        unit: Unit::Percent,
        for_: m(5),
        window: m(0),
        needs: &[LatestRound],
        expr: "more than threshold % of the probe requests in the rolling window failed",
        runbook: "etcdhighprobeerrorrate",
        eval: probe_errors,
    },
    RuleDef {
        rule: Rule::ProposalQueueLong,
        key: "etcdProposalQueueLong",
        alertname: "etcdProposalQueueLong",
        severity: Warning,
        threshold: 10.0,
        unit: Unit::Count,
        for_: m(5),
        window: m(0),
        needs: &[LatestRound],
        expr: "a member has more than threshold pending proposals",
        runbook: "etcdproposalqueuelong",
        eval: proposals_pending,
    },
    RuleDef {
        rule: Rule::AlarmActive,
        key: "etcdAlarmActive",
        alertname: "etcdAlarmActive",
        severity: Critical,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(0),
        window: m(0),
        needs: &[Health],
        expr: "an alarm (NOSPACE, CORRUPT) is active",
        runbook: "etcdalarmactive",
        eval: alarm_active,
    },
    RuleDef {
        rule: Rule::ClusterIdMismatch,
        key: "etcdClusterIdMismatch",
        alertname: "etcdClusterIdMismatch",
        severity: Critical,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(1),
        window: m(0),
        needs: &[Health],
        expr: "the configured endpoints and the listed members answer with more than one cluster ID",
        runbook: "etcdclusteridmismatch",
        eval: cluster_id_mismatch,
    },
    RuleDef {
        rule: Rule::EndpointNotMember,
        key: "etcdEndpointNotMember",
        alertname: "etcdEndpointNotMember",
        severity: Warning,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(5),
        window: m(0),
        needs: &[Health],
        expr: "a configured endpoint is no listed member's client URL",
        runbook: "etcdendpointnotmember",
        eval: endpoint_not_member,
    },
    RuleDef {
        rule: Rule::MemberNotConfigured,
        key: "etcdMemberNotConfigured",
        alertname: "etcdMemberNotConfigured",
        severity: Info,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(10),
        window: m(0),
        needs: &[Health],
        expr: "a listed member has none of its client URLs configured",
        runbook: "etcdmembernotconfigured",
        eval: member_not_configured,
    },
    RuleDef {
        rule: Rule::CertificateExpiring,
        key: "etcdCertificateExpiring",
        alertname: "etcdCertificateExpiring",
        severity: Warning,
        threshold: 30.0,
        unit: Unit::Days,
        for_: m(1),
        window: m(0),
        needs: &[Health],
        expr: "a member's serving certificate, the client certificate or the CA expires within threshold days",
        runbook: "etcdcertificateexpiring",
        eval: certificate_expiring,
    },
    RuleDef {
        rule: Rule::CertificateExpiringCritical,
        key: "etcdCertificateExpiring_critical",
        alertname: "etcdCertificateExpiring",
        severity: Critical,
        threshold: 7.0,
        unit: Unit::Days,
        for_: m(1),
        window: m(0),
        needs: &[Health],
        expr: "a member's serving certificate, the client certificate or the CA expires within threshold days (or has expired)",
        runbook: "etcdcertificateexpiring",
        eval: certificate_expiring,
    },
    RuleDef {
        rule: Rule::KeyspacePrefixGrowing,
        key: "etcdKeyspacePrefixGrowing",
        alertname: "etcdKeyspacePrefixGrowing",
        severity: Warning,
        threshold: 1.0,
        unit: Unit::None,
        for_: m(0),
        window: m(0),
        needs: &[Need::KeyspaceGrowth],
        expr: "a prefix of keyspace.growth_rules gained bytes faster than threshold x its max_bytes_per_hour between the two newest scheduled keyspace scans",
        runbook: "etcdkeyspaceprefixgrowing",
        eval: keyspace_prefix_growing,
    },
    RuleDef {
        rule: Rule::BackupTooOld,
        key: "etcdBackupTooOld",
        alertname: "etcdBackupTooOld",
        severity: Warning,
        threshold: 2.0,
        unit: Unit::Ratio,
        for_: m(0),
        window: m(0),
        needs: &[Need::Backups],
        expr: "a backup schedule's last successful backup (or its start, before the first) is older than threshold x its interval, unless every member of the cluster is in clusters[].paused_members",
        runbook: "etcdbackuptooold",
        eval: backup_too_old,
    },
    RuleDef {
        rule: Rule::BackupUnverified,
        key: "etcdBackupUnverified",
        alertname: "etcdBackupUnverified",
        severity: Warning,
        threshold: 0.0,
        unit: Unit::None,
        for_: m(0),
        window: m(0),
        needs: &[Need::Backups],
        expr: "the latest restore drill of a backup schedule failed: the backup did not restore or did not match its manifest",
        runbook: "etcdbackupunverified",
        eval: backup_unverified,
    },
];

// The table is indexed by the enum: checked when the crate compiles.
const _: () = {
    let mut i = 0;
    while i < DEFS.len() {
        assert!(DEFS[i].rule as usize == i, "DEFS is not in Rule order");
        i += 1;
    }
};

static TABLE: [RuleDef; 30] = DEFS;

impl Rule {
    /// Every built-in rule, in table order.
    pub const ALL: [Rule; 30] = [
        Rule::MembersDown,
        Rule::InsufficientMembers,
        Rule::NoLeader,
        Rule::HighNumberOfLeaderChanges,
        Rule::FailedGrpcRequests,
        Rule::FailedGrpcRequestsCritical,
        Rule::GrpcRequestsSlow,
        Rule::MemberCommunicationSlow,
        Rule::FailedProposals,
        Rule::HighFsyncDurations,
        Rule::HighFsyncDurationsCritical,
        Rule::HighCommitDurations,
        Rule::DatabaseQuotaLowSpace,
        Rule::ExcessiveDatabaseGrowth,
        Rule::DatabaseHighFragmentationRatio,
        Rule::HighProbeLatency,
        Rule::DatabaseSizeLarge,
        Rule::AvailableMembersLow,
        Rule::LeaderChangesPerHour,
        Rule::HighProbeErrorRate,
        Rule::ProposalQueueLong,
        Rule::AlarmActive,
        Rule::ClusterIdMismatch,
        Rule::EndpointNotMember,
        Rule::MemberNotConfigured,
        Rule::CertificateExpiring,
        Rule::CertificateExpiringCritical,
        Rule::KeyspacePrefixGrowing,
        Rule::BackupTooOld,
        Rule::BackupUnverified,
    ];

    /// The rule's definition.
    pub fn def(self) -> &'static RuleDef {
        &TABLE[self as usize]
    }

    /// The configuration key.
    pub fn key(self) -> &'static str {
        self.def().key
    }

    /// The rule whose configuration key is `key`.
    pub fn from_key(key: &str) -> Option<Rule> {
        TABLE.iter().find(|d| d.key == key).map(|d| d.rule)
    }

    /// Every configuration key, in table order.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        TABLE.iter().map(|d| d.key)
    }
}

/// What a configured rule evaluates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleKind {
    /// A built-in rule.
    Builtin(Rule),
    /// A custom threshold over a stored metric.
    Custom {
        /// Index into [`STORED_METRICS`].
        metric: usize,
        /// The comparison.
        comparison: Comparison,
    },
}

/// One rule, defaults and overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRule {
    /// Configuration key (`etcdHighFsyncDurations_critical`).
    pub key: String,
    /// The `alertname` label (`etcdHighFsyncDurations`).
    pub alertname: String,
    /// The `severity` label.
    pub severity: AlertSeverity,
    /// The threshold, in the rule's unit.
    pub threshold: f64,
    /// How long the condition must hold.
    pub for_: Duration,
    /// Window of rate, count and growth rules.
    pub window: Duration,
    /// Whether evaluated.
    pub enabled: bool,
    /// What is evaluated.
    pub kind: RuleKind,
    /// Its runbook (`alerts.runbook_base_url` + `#` + its section);
    /// custom rules have none.
    pub runbook_url: Option<String>,
}

impl ActiveRule {
    /// The built-in rule, unless custom.
    pub fn builtin(&self) -> Option<Rule> {
        match self.kind {
            RuleKind::Builtin(r) => Some(r),
            RuleKind::Custom { .. } => None,
        }
    }

    fn needs(&self, need: Need) -> bool {
        self.enabled
            && self
                .builtin()
                .is_some_and(|r| r.def().needs.contains(&need))
    }

    /// The limit a leader-change rule states (the mixin's counts `>=`).
    fn leader_limit(&self, rule: Rule) -> LeaderChangeLimit {
        LeaderChangeLimit {
            rule: rule.def().alertname,
            max: self.threshold,
            inclusive: rule == Rule::HighNumberOfLeaderChanges,
            window: self.window,
        }
    }
}

/// The configured rules: every built-in one (at its table index), then the custom ones.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<ActiveRule>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::from_config(&AlertsConfig::default())
    }
}

impl RuleSet {
    /// The rules of `config`: defaults, overrides, custom rules.
    pub fn from_config(config: &AlertsConfig) -> RuleSet {
        let base = config.runbook_base();
        let mut rules: Vec<ActiveRule> = TABLE
            .iter()
            .map(|d| {
                let o = config.rules.get(d.key).cloned().unwrap_or_default();
                ActiveRule {
                    key: d.key.to_string(),
                    alertname: d.alertname.to_string(),
                    severity: o.severity.unwrap_or(d.severity),
                    threshold: o.threshold.unwrap_or(d.threshold),
                    for_: o.for_.unwrap_or(d.for_),
                    window: o.window.unwrap_or(d.window),
                    enabled: o.enabled.unwrap_or(true),
                    kind: RuleKind::Builtin(d.rule),
                    runbook_url: Some(format!("{base}#{}", d.runbook)),
                }
            })
            .collect();
        for c in &config.custom_rules {
            if let Some(metric) = STORED_METRICS.iter().position(|x| *x == c.metric) {
                rules.push(ActiveRule {
                    key: c.name.clone(),
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
                    runbook_url: None,
                });
            }
        }
        RuleSet { rules }
    }

    /// Every rule, built-in first.
    pub fn all(&self) -> &[ActiveRule] {
        &self.rules
    }

    /// A built-in rule as configured.
    pub fn get(&self, rule: Rule) -> &ActiveRule {
        &self.rules[rule as usize]
    }

    /// Whether an enabled rule reads `need`.
    pub fn needs(&self, need: Need) -> bool {
        self.rules.iter().any(|r| r.needs(need))
    }

    /// The longest window among the enabled rules that read `need`.
    pub fn window_of(&self, need: Need) -> Duration {
        self.rules
            .iter()
            .filter(|r| r.needs(need))
            .map(|r| r.window)
            .max()
            .unwrap_or_default()
    }

    /// The health evaluation's thresholds: `own` (`monitoring.thresholds`)
    /// for what only the health check judges, this table's for what a rule
    /// also judges (enabled or not: disabling an alert keeps the finding).
    pub fn health_thresholds(&self, own: &HealthThresholds) -> Thresholds {
        let mut t = Thresholds::new(
            own,
            self.get(Rule::DatabaseQuotaLowSpace).threshold,
            self.get(Rule::DatabaseHighFragmentationRatio).threshold,
            [Rule::LeaderChangesPerHour, Rule::HighNumberOfLeaderChanges]
                .into_iter()
                .map(|r| self.get(r).leader_limit(r))
                .collect(),
        );
        t.certificate_warning_days = self.get(Rule::CertificateExpiring).threshold;
        t.certificate_critical_days = self.get(Rule::CertificateExpiringCritical).threshold;
        t
    }

    /// Evaluates every rule (disabled ones hold nothing, so their alerts resolve).
    pub fn evaluate(&self, input: &Input) -> Vec<(&ActiveRule, Outcome)> {
        self.rules
            .iter()
            .map(|r| {
                let outcome = if r.enabled {
                    evaluate(r, input)
                } else {
                    Outcome::Holds(Vec::new())
                };
                (r, outcome)
            })
            .collect()
    }
}

/// The defaults: `monitoring.thresholds` and the rule table at their defaults.
impl Default for Thresholds {
    fn default() -> Self {
        RuleSet::default().health_thresholds(&HealthThresholds::default())
    }
}

/// What the rules read about one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The latest health snapshot (with the recent leader changes).
    pub health: Option<&'a HealthSnapshot>,
    /// The thresholds the health snapshot was judged with.
    pub thresholds: &'a Thresholds,
    /// The latest metrics round.
    pub latest: Option<&'a MetricsRound>,
    /// What the rules over a window read of the recent metrics rounds,
    /// oldest first (the latest round's last).
    pub history: &'a VecDeque<RoundCounts>,
    /// Stored `db_total_size_bytes` samples of the growth window, oldest first.
    pub db_size_history: Option<&'a [MetricPoint]>,
    /// The growth between the two newest scheduled keyspace scans, with
    /// the growth rules (none before two scans, or without a schedule).
    pub keyspace_growth: Option<&'a crate::keyspace::GrowthCheck>,
    /// The cluster's backup schedules.
    pub backups: &'a [crate::monitor::backups::BackupStatus],
    /// Every member is configured as paused (`clusters[].paused_members`).
    pub stopped_on_purpose: bool,
}

/// What the rules over a window read of one member's scrape: the counters
/// they take increases of. The engine keeps these per round over the
/// longest such window (15 minutes by default) instead of whole rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemberCounts {
    /// `etcd_network_peer_sent_failures_total`, all peers.
    pub peer_sent_failures: Option<f64>,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: Option<f64>,
    /// `grpc_server_handled_total`, summed.
    pub grpc: Option<GrpcTotals>,
}

/// One metrics round's [`MemberCounts`], by member endpoint (members
/// whose scrape failed are missing).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundCounts {
    /// When the round was taken (ms since the epoch).
    pub at_ms: i64,
    /// By endpoint.
    pub members: Vec<(Arc<str>, MemberCounts)>,
}

impl RoundCounts {
    /// The counts of `round`; endpoint names are shared with `previous`
    /// where they are the same.
    pub fn of(round: &MetricsRound, previous: Option<&RoundCounts>) -> Self {
        let members = round
            .members
            .iter()
            .filter_map(|e| {
                let m = e.metrics.as_ref()?;
                let endpoint = previous
                    .and_then(|p| p.members.iter().find(|(ep, _)| **ep == *e.endpoint))
                    .map_or_else(|| Arc::from(e.endpoint.as_str()), |(ep, _)| ep.clone());
                let counts = MemberCounts {
                    peer_sent_failures: m.peer_sent_failures,
                    proposals_failed: m.proposals_failed,
                    grpc: m.grpc_totals(),
                };
                Some((endpoint, counts))
            })
            .collect();
        RoundCounts {
            at_ms: round.at_ms,
            members,
        }
    }
}

/// A rule's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The conditions that hold now (empty: none, the rule's alerts resolve).
    Holds(Vec<Sample>),
    /// The data the rule needs is missing: its alerts keep their state.
    NotEvaluable(&'static str),
}

/// What an evaluation found: the samples that hold, or why the rule could
/// not be evaluated.
type Evaluated = Result<Vec<Sample>, &'static str>;

/// Evaluates one rule.
pub fn evaluate(rule: &ActiveRule, input: &Input) -> Outcome {
    let ctx = Ctx { rule, input };
    let evaluated = match rule.kind {
        RuleKind::Builtin(r) => (r.def().eval)(&ctx),
        RuleKind::Custom { metric, comparison } => ctx.custom(STORED_METRICS[metric], comparison),
    };
    match evaluated {
        Ok(samples) => Outcome::Holds(samples),
        Err(why) => Outcome::NotEvaluable(why),
    }
}

/// One rule's view of the input.
pub struct Ctx<'a> {
    rule: &'a ActiveRule,
    input: &'a Input<'a>,
}

type Getter = fn(&crate::cluster::MemberMetrics) -> Option<f64>;

fn window_text(w: &Duration) -> String {
    crate::config::duration::format(w)
}

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
            rule: self.rule.key.clone(),
            labels,
            summary,
            value,
            runbook_url: self.rule.runbook_url.clone(),
        }
    }

    /// One sample, or none: a cluster-wide condition.
    fn one(&self, holds: bool, value: f64, summary: impl FnOnce() -> String) -> Evaluated {
        Ok(if holds {
            vec![self.sample(None, value, summary())]
        } else {
            Vec::new()
        })
    }

    fn health(&self) -> Result<&HealthSnapshot, &'static str> {
        self.input.health.ok_or("no health snapshot yet")
    }

    fn latest(&self) -> Option<&MetricsRound> {
        self.input.latest
    }

    /// Per member, the latest value of `get` compared with `>` threshold.
    fn per_member_above(&self, get: Getter, what: &str, unit: Unit) -> Evaluated {
        let Some(round) = self.latest() else {
            return Err("no metrics round yet");
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
            return Err("no member exposes the metric");
        }
        Ok(out)
    }

    /// Per member of the latest round, its counts in each round of the
    /// rule's window (oldest first; rounds where it was not scraped are
    /// missing).
    fn member_series(&self) -> Vec<(String, Vec<(i64, &MemberCounts)>)> {
        let Some(latest) = self.latest() else {
            return Vec::new();
        };
        let from_ms = latest.at_ms - self.rule.window.as_millis() as i64;
        latest
            .members
            .iter()
            .filter(|e| e.metrics.is_some())
            .map(|e| {
                let series = self
                    .input
                    .history
                    .iter()
                    .filter(|r| r.at_ms >= from_ms)
                    .filter_map(|r| {
                        r.members
                            .iter()
                            .find(|(endpoint, _)| **endpoint == *e.endpoint)
                            .map(|(_, m)| (r.at_ms, m))
                    })
                    .collect();
                (member_name(&e.member, &e.endpoint).to_string(), series)
            })
            .collect()
    }

    /// Per member, the increase of counter `get` over the rule's window
    /// (restarts and missed scrapes accounted for, see
    /// [`crate::metrics::window::increase`]).
    fn increases(&self, get: fn(&MemberCounts) -> Option<f64>) -> Vec<(String, Increase)> {
        self.member_series()
            .into_iter()
            .filter_map(|(who, series)| {
                increase(series.iter().filter_map(|(at, m)| get(m).map(|v| (*at, v))))
                    .map(|inc| (who, inc))
            })
            .collect()
    }

    fn custom(&self, metric: &str, cmp: Comparison) -> Evaluated {
        let Some(round) = self.latest() else {
            return Err("no metrics round yet");
        };
        let points = crate::monitor::points_of(round);
        let mut any = false;
        let mut out = Vec::new();
        for p in points.iter().filter(|p| p.name == metric) {
            any = true;
            if cmp.holds(p.value, self.rule.threshold) {
                // The series of the by-method rates are methods, not members.
                let by_method = crate::monitor::BY_METHOD_METRICS.contains(&metric);
                let series = (!p.member.is_empty()).then_some(p.member.as_str());
                let member = series.filter(|_| !by_method);
                let of = match series {
                    Some(m) if by_method => format!(" of method {m}"),
                    Some(m) => format!(" of member {m}"),
                    None => String::new(),
                };
                let mut sample = self.sample(
                    member,
                    p.value,
                    format!(
                        "{metric}{of} is {} ({} {})",
                        p.value,
                        cmp.symbol(),
                        self.rule.threshold
                    ),
                );
                if let Some(method) = series.filter(|_| by_method) {
                    sample.labels.insert("method".into(), method.into());
                }
                out.push(sample);
            }
        }
        if !any {
            return Err("the metric is not in the latest round");
        }
        Ok(out)
    }
}

fn members_down(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    // The same predicate as the `member_unreachable` finding.
    let mut down: Vec<String> = h
        .observation
        .members
        .iter()
        .filter(|m| !m.reachable())
        .map(|m| m.label())
        .collect();
    // The mixin also counts peers a member fails to send to.
    // Absent until the first failure: zero before it.
    for (who, inc) in c.increases(|m| Some(m.peer_sent_failures.unwrap_or(0.0))) {
        if let Some(rate) = inc.rate().filter(|r| *r > c.rule.threshold) {
            down.push(format!("{who} (peer send failures {rate:.2}/s)"));
        }
    }
    c.one(!down.is_empty(), down.len() as f64, || {
        format!("members down or unreachable: {}", down.join(", "))
    })
}

fn insufficient_members(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    c.one(
        h.reachable_voting_members < h.quorum,
        h.reachable_voting_members as f64,
        || {
            format!(
                "only {} of {} voting members answer; quorum needs {}",
                h.reachable_voting_members, h.voting_members, h.quorum
            )
        },
    )
}

fn no_leader(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    // The same predicate as the `no_leader` finding.
    Ok(h.observation
        .members
        .iter()
        .filter(|m| m.status.as_ref().is_some_and(|s| s.leader == 0))
        .map(|m| {
            let who = m.label();
            c.sample(Some(&who), 0.0, format!("member {who} has no leader"))
        })
        .collect())
}

fn leader_changes(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    let Some(rule) = c.rule.builtin() else {
        return Err("not a built-in rule");
    };
    // The limit the `frequent_leader_changes` finding judges too.
    let limit = c.rule.leader_limit(rule);
    let (n, over) = limit.judge(&h.leader_changes_ms, c.input.now_ms);
    c.one(over, n as f64, || {
        format!(
            "{n} leader changes in the last {} (threshold {})",
            window_text(&c.rule.window),
            c.rule.threshold
        )
    })
}

fn failed_grpc(c: &Ctx) -> Evaluated {
    if c.latest().is_none() {
        return Err("no metrics round yet");
    }
    let t = c.rule.threshold;
    let mut out = Vec::new();
    for (who, series) in c.member_series() {
        let Some((failed, all)) =
            grpc_increases(series.iter().filter_map(|(at, m)| m.grpc.map(|g| (*at, g))))
        else {
            continue;
        };
        let percent = 100.0 * failed.value / all.value.max(1.0);
        if all.value > 0.0 && percent > t {
            out.push(c.sample(
                Some(&who),
                percent,
                format!(
                    "member {who}: {percent:.1}% of gRPC requests failed in the last {} (threshold {t}%)",
                    window_text(&c.rule.window)
                ),
            ));
        }
    }
    Ok(out)
}

// Members expose gRPC handling-time histograms only with `--metrics
// extensive`; without them the rule is not evaluable.
fn grpc_slow(c: &Ctx) -> Evaluated {
    c.per_member_above(
        |m| m.grpc_unary_p99,
        "gRPC unary request p99 (without Defragment)",
        Unit::Seconds,
    )
}

fn peer_slow(c: &Ctx) -> Evaluated {
    c.per_member_above(
        |m| m.peer_round_trip_p99,
        "peer round-trip p99",
        Unit::Seconds,
    )
}

fn failed_proposals(c: &Ctx) -> Evaluated {
    if c.latest().is_none() {
        return Err("no metrics round yet");
    }
    let t = c.rule.threshold;
    Ok(c.increases(|m| m.proposals_failed)
        .into_iter()
        .filter_map(|(who, inc)| inc.rate().filter(|r| *r > t).map(|r| (who, r)))
        .map(|(who, rate)| {
            c.sample(
                Some(&who),
                rate,
                format!(
                    "member {who}: {rate:.2} failed proposals per second over the last {} (threshold {t}/s)",
                    window_text(&c.rule.window)
                ),
            )
        })
        .collect())
}

fn fsync_slow(c: &Ctx) -> Evaluated {
    c.per_member_above(|m| m.wal_fsync_p99, "WAL fsync p99", Unit::Seconds)
}

fn commit_slow(c: &Ctx) -> Evaluated {
    c.per_member_above(
        |m| m.backend_commit_p99,
        "backend commit p99",
        Unit::Seconds,
    )
}

fn db_large(c: &Ctx) -> Evaluated {
    c.per_member_above(|m| m.db_total_size_bytes, "database size", Unit::Bytes)
}

fn proposals_pending(c: &Ctx) -> Evaluated {
    c.per_member_above(|m| m.proposals_pending, "pending proposals", Unit::Count)
}

fn quota_low(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    let t = c.input.thresholds;
    let mut any = false;
    let mut out = Vec::new();
    // The same figures and threshold as the critical `db_quota` finding.
    for m in &h.observation.members {
        let Some((percent, size, quota)) = Thresholds::quota_use(m) else {
            continue;
        };
        any = true;
        if t.quota_critical(percent) {
            let who = m.label();
            out.push(c.sample(
                Some(&who),
                percent,
                format!(
                    "member {who}: database is {} of its quota ({} of {}; threshold {})",
                    Unit::Percent.show(percent),
                    Unit::Bytes.show(size),
                    Unit::Bytes.show(quota),
                    Unit::Percent.show(t.db_quota_critical_percent)
                ),
            ));
        }
    }
    if !any {
        return Err("no member's quota is known yet");
    }
    Ok(out)
}

fn fragmentation(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    // The same figures and thresholds as the `fragmentation` finding.
    Ok(h.observation
        .members
        .iter()
        .filter_map(|m| {
            let (ratio, used, total) = c.input.thresholds.fragmentation(m)?;
            let who = m.label();
            Some(c.sample(
                Some(&who),
                ratio,
                format!(
                    "member {who} uses {} of {} allocated ({:.0}%): defragment it",
                    Unit::Bytes.show(used),
                    Unit::Bytes.show(total),
                    100.0 * ratio
                ),
            ))
        })
        .collect())
}

/// The mixin's `predict_linear(db size [4h], 4h) > quota`: a least-squares
/// line through the stored samples of the window, extended one window ahead.
fn growth(c: &Ctx) -> Evaluated {
    let (Some(points), Some(round)) = (c.input.db_size_history, c.latest()) else {
        return Err("no database size history yet");
    };
    let mut by_member: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for p in points {
        by_member
            .entry(p.member.as_str())
            .or_default()
            .push((p.at_ms as f64 / 1e3, p.value));
    }
    let horizon = c.rule.window.as_secs_f64();
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
        if pct > c.rule.threshold {
            out.push(c.sample(
                Some(who),
                predicted,
                format!(
                    "member {who}: at the current growth its database reaches {} ({pct:.0}% of its quota) within {}",
                    Unit::Bytes.show(predicted),
                    window_text(&c.rule.window)
                ),
            ));
        }
    }
    Ok(out)
}

fn probe_latency(c: &Ctx) -> Evaluated {
    let Some(round) = c.latest() else {
        return Err("no metrics round yet");
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
        return Err("no successful probe yet");
    };
    let t = c.rule.threshold;
    c.one(worst > t, worst, || {
        format!("probe p99 latency is {worst:.0} ms (threshold {t} ms)")
    })
}

fn probe_errors(c: &Ctx) -> Evaluated {
    let Some(round) = c.latest() else {
        return Err("no metrics round yet");
    };
    let p = &round.probes;
    let (ok, err) = [&p.put, &p.linearizable_get, &p.serializable_get]
        .iter()
        .fold((0, 0), |(o, e), s| (o + s.count, e + s.errors));
    if ok + err == 0 {
        return Err("no probe yet");
    }
    let pct = 100.0 * err as f64 / (ok + err) as f64;
    let t = c.rule.threshold;
    c.one(pct > t, pct, || {
        format!("{pct:.1}% of probe requests failed (threshold {t}%)")
    })
}

fn available_low(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    // 0 means: one failure away from losing quorum.
    let t = c.rule.threshold;
    let need = if t > 0.0 {
        t
    } else {
        (h.quorum + 1).min(h.voting_members) as f64
    };
    let have = h.reachable_voting_members as f64;
    c.one(have < need, have, || {
        format!(
            "{have} of {} voting members answer (minimum {need})",
            h.voting_members
        )
    })
}

fn alarm_active(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    Ok(h.observation
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
            let mut s = c.sample(
                Some(&who),
                1.0,
                format!("alarm {} raised by member {who}", a.kind),
            );
            s.labels.insert("alarm".into(), a.kind.clone());
            s
        })
        .collect())
}

// The same predicates as the `cluster_id_mismatch`, `endpoint_not_member`
// and `member_not_configured` findings (`ClusterObservation::cluster_ids`,
// `stray_endpoints`, `unconfigured_members`).
fn cluster_id_mismatch(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    let ids = h.observation.cluster_ids();
    c.one(ids.len() > 1, ids.len() as f64, || {
        let list: Vec<String> = ids
            .iter()
            .map(|(id, who)| format!("{id:x} ({})", who.join(", ")))
            .collect();
        format!(
            "the configured endpoints answer for {} clusters: {}",
            ids.len(),
            list.join("; ")
        )
    })
}

fn endpoint_not_member(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    Ok(h.observation
        .stray_endpoints()
        .into_iter()
        .map(|e| {
            let mut s = c.sample(
                None,
                1.0,
                format!(
                    "configured endpoint {} is no member of this cluster",
                    e.endpoint
                ),
            );
            s.labels.insert("endpoint".into(), e.endpoint.clone());
            s
        })
        .collect())
}

fn member_not_configured(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    Ok(h.observation
        .unconfigured_members()
        .iter()
        .map(|m| {
            let who = m.label();
            c.sample(
                Some(&who),
                1.0,
                format!("member {who} is listed but none of its client URLs is configured"),
            )
        })
        .collect())
}

// The same predicate as the `certificate_expiring` finding.
fn certificate_expiring(c: &Ctx) -> Evaluated {
    let h = c.health()?;
    let now_ms = crate::time::unix_ms(h.observation.taken_at);
    Ok(h.observation
        .certificates
        .iter()
        .filter_map(|cert| {
            let days = cert.days_left(now_ms)?;
            (days < c.rule.threshold).then(|| {
                let when = crate::cluster::certs::CertificateObservation::expiry_words(days);
                let mut s = c.sample(
                    cert.member.as_deref(),
                    days,
                    format!("{} {when}", cert.describe()),
                );
                s.labels
                    .insert("certificate".into(), cert.source.describe().into());
                s.labels.insert("location".into(), cert.location.clone());
                s
            })
        })
        .collect())
}

/// Each growth rule whose prefix gained bytes faster than threshold x its
/// limit; the value is the bytes per hour.
fn keyspace_prefix_growing(c: &Ctx) -> Evaluated {
    let Some(check) = c.input.keyspace_growth else {
        return Ok(Vec::new());
    };
    let hours = check.growth.hours;
    Ok(check
        .judged(c.rule.threshold)
        .into_iter()
        .filter(|(_, _, over)| *over)
        .map(|(rule, rate, _)| {
            let mut s = c.sample(
                None,
                rate,
                format!(
                    "prefix {} gained {}/h over the last {hours:.2} h of scans (limit {}/h)",
                    rule.prefix,
                    Unit::Bytes.show(rate),
                    Unit::Bytes.show(rule.max_bytes_per_hour as f64)
                ),
            );
            s.labels.insert("prefix".into(), rule.prefix.clone());
            s
        })
        .collect())
}

/// Each schedule whose newest good backup is older than threshold x its
/// interval; the value is the age in intervals.
fn backup_too_old(c: &Ctx) -> Evaluated {
    if c.input.stopped_on_purpose {
        return Ok(Vec::new());
    }
    Ok(c.input
        .backups
        .iter()
        .filter(|b| b.interval_ms > 0)
        .filter_map(|b| {
            let from = if b.last_success_ms > 0 {
                b.last_success_ms
            } else {
                b.since_ms
            };
            let age = (c.input.now_ms - from).max(0);
            let ratio = age as f64 / b.interval_ms as f64;
            (ratio > c.rule.threshold).then(|| {
                let what = if b.last_success_ms > 0 {
                    "the last successful backup was taken"
                } else {
                    "no backup has succeeded since the schedule started"
                };
                let why = b
                    .last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                let mut s = c.sample(
                    None,
                    ratio,
                    format!(
                        "backup schedule {}: {what} {} ago, {ratio:.1} x its interval of {} (threshold {}x){why}",
                        b.schedule,
                        crate::config::duration::format(&std::time::Duration::from_millis(age as u64)),
                        crate::config::duration::format(&std::time::Duration::from_millis(b.interval_ms as u64)),
                        c.rule.threshold
                    ),
                );
                s.labels.insert("schedule".into(), b.schedule.clone());
                s
            })
        })
        .collect())
}

/// Each schedule whose latest restore drill failed.
fn backup_unverified(c: &Ctx) -> Evaluated {
    Ok(c.input
        .backups
        .iter()
        .filter_map(|b| {
            let u = b.unverified.as_ref()?;
            let mut s = c.sample(
                None,
                1.0,
                format!(
                    "backup {} of schedule {} failed its restore drill: {}",
                    u.name, b.schedule, u.error
                ),
            );
            s.labels.insert("schedule".into(), b.schedule.clone());
            s.labels.insert("backup".into(), u.name.clone());
            Some(s)
        })
        .collect())
}

fn member_name<'a>(member: &'a str, endpoint: &'a str) -> &'a str {
    if member.is_empty() { endpoint } else { member }
}

/// One row of `etcd-monitor rules list`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    /// Configuration key.
    pub name: String,
    /// `alertname` label.
    pub alertname: String,
    /// `builtin` or `custom`.
    pub source: &'static str,
    /// Whether evaluated.
    pub enabled: bool,
    /// The condition in words.
    pub expression: String,
    /// The threshold in its unit.
    pub threshold: f64,
    /// The threshold's unit.
    pub unit: Option<Unit>,
    /// `for`, as written in the configuration.
    #[serde(rename = "for")]
    pub for_: String,
    /// Window, when the rule has one.
    pub window: Option<String>,
    /// Severity.
    pub severity: &'static str,
    /// What it reads.
    pub needs: Vec<Need>,
    /// Runbook: docs/runbooks.md#anchor.
    pub runbook: Option<String>,
}

impl RuleSet {
    /// The table as configured, for people and tools.
    pub fn rows(&self) -> Vec<RuleRow> {
        self.rules
            .iter()
            .map(|r| {
                let def = r.builtin().map(Rule::def);
                let expression = match r.kind {
                    RuleKind::Builtin(b) => b.def().expr.to_string(),
                    RuleKind::Custom { metric, comparison } => format!(
                        "{} {} threshold",
                        STORED_METRICS[metric],
                        comparison.symbol()
                    ),
                };
                RuleRow {
                    name: r.key.clone(),
                    alertname: r.alertname.clone(),
                    source: if def.is_some() { "builtin" } else { "custom" },
                    enabled: r.enabled,
                    expression,
                    threshold: r.threshold,
                    unit: def.map(|d| d.unit),
                    for_: window_text(&r.for_),
                    window: (!r.window.is_zero()).then(|| window_text(&r.window)),
                    severity: r.severity.as_str(),
                    needs: def.map(|d| d.needs.to_vec()).unwrap_or_default(),
                    runbook: def.map(|d| format!("docs/runbooks.md#{}", d.runbook)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
