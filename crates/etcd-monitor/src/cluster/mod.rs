//! The cluster model: what the monitor observed of one cluster at one moment
//! (members, each member's Status, reachability and latency, alarms), and
//! the collector that observes it.

mod collect;

use std::time::SystemTime;

use serde::Serialize;

pub(crate) use collect::pick_endpoint;
pub use collect::{Collector, CollectorOptions, metrics_url_for, scrape_metrics};

/// One member as the cluster lists it and as the monitor saw it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberObservation {
    /// Member id.
    #[serde(serialize_with = "hex_id")]
    #[schema(value_type = String)]
    pub id: u64,
    /// Member name (empty for a member added but not started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// Whether the member is a raft learner (non-voting).
    pub is_learner: bool,
    /// The endpoint the monitor asked.
    pub endpoint: String,
    /// The member's Status answer, when it answered.
    pub status: Option<MemberStatus>,
    /// Why the member could not be asked, when it could not.
    pub error: Option<String>,
    /// How long Status took, in milliseconds.
    pub status_latency_ms: Option<f64>,
    /// Whether a linearizable read through this member succeeded (it reached
    /// a leader and a quorum), and its latency.
    pub linearizable_read_ms: Option<f64>,
    /// Why the linearizable read failed.
    pub linearizable_read_error: Option<String>,
    /// Scraped figures from the member's `/metrics`, when reachable.
    pub metrics: Option<MemberMetrics>,
}

impl MemberObservation {
    /// Whether the member answered Status.
    pub fn reachable(&self) -> bool {
        self.status.is_some()
    }

    /// Name if known, else the hex id.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{:x}", self.id)
        } else {
            self.name.clone()
        }
    }
}

/// A member's Status answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberStatus {
    /// The answering member's id (from the response header).
    #[serde(serialize_with = "hex_id")]
    #[schema(value_type = String)]
    pub member_id: u64,
    /// etcd version.
    pub version: String,
    /// Backend database size in bytes (allocated).
    pub db_size: i64,
    /// Bytes of the backend actually in use.
    pub db_size_in_use: i64,
    /// The leader this member follows (0: none).
    #[serde(serialize_with = "hex_id")]
    #[schema(value_type = String)]
    pub leader: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index.
    pub raft_index: u64,
    /// Raft applied index.
    pub raft_applied_index: u64,
    /// Errors the member reports.
    pub errors: Vec<String>,
    /// Whether the member says it is a learner.
    pub is_learner: bool,
    /// The revision in the response header.
    pub revision: i64,
}

/// Figures taken from a member's Prometheus page.
#[derive(Debug, Clone, Serialize, Default, PartialEq, utoipa::ToSchema)]
pub struct MemberMetrics {
    /// `etcd_server_quota_backend_bytes`.
    pub quota_backend_bytes: Option<f64>,
    /// `etcd_mvcc_db_total_size_in_bytes`.
    pub db_total_size_bytes: Option<f64>,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`.
    pub db_in_use_bytes: Option<f64>,
    /// `etcd_server_has_leader`.
    pub has_leader: Option<f64>,
    /// `etcd_server_is_leader`.
    pub is_leader: Option<f64>,
    /// p99 of `etcd_disk_wal_fsync_duration_seconds`, seconds (since the member started).
    pub wal_fsync_p99: Option<f64>,
    /// p99 of `etcd_disk_backend_commit_duration_seconds`, seconds.
    pub backend_commit_p99: Option<f64>,
    /// p99 of unary gRPC handling time except Defragment, seconds; only
    /// members started with `--metrics extensive` expose the histogram.
    pub grpc_unary_p99: Option<f64>,
    /// p99 of `etcd_network_peer_round_trip_time_seconds` over all peers, seconds.
    pub peer_round_trip_p99: Option<f64>,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes_seen: Option<f64>,
    /// `etcd_server_proposals_committed_total` (a gauge in etcd).
    pub proposals_committed: Option<f64>,
    /// `etcd_server_proposals_applied_total` (a gauge in etcd).
    pub proposals_applied: Option<f64>,
    /// `etcd_server_proposals_pending`.
    pub proposals_pending: Option<f64>,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: Option<f64>,
    /// `etcd_network_peer_sent_failures_total` summed over peers (absent until a first failure).
    pub peer_sent_failures: Option<f64>,
    /// `etcd_debugging_mvcc_watcher_total`: watchers.
    pub watchers: Option<f64>,
    /// `grpc_server_handled_total` summed by gRPC code.
    pub grpc_handled_by_code: std::collections::BTreeMap<String, f64>,
}

impl MemberMetrics {
    /// Whether a sample name feeds [`MemberMetrics::from_scrape`].
    pub fn wants(sample: &str) -> bool {
        const PREFIXES: [&str; 5] = [
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "etcd_disk_backend_commit_duration_seconds_bucket",
            "etcd_network_peer_round_trip_time_seconds_bucket",
            "grpc_server_handling_seconds_bucket",
            "etcd_network_peer_sent_failures_total",
        ];
        const NAMES: [&str; 12] = [
            "etcd_server_quota_backend_bytes",
            "etcd_mvcc_db_total_size_in_bytes",
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "etcd_server_has_leader",
            "etcd_server_is_leader",
            "etcd_server_leader_changes_seen_total",
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
            "etcd_server_proposals_pending",
            "etcd_server_proposals_failed_total",
            "etcd_debugging_mvcc_watcher_total",
            "grpc_server_handled_total",
        ];
        NAMES.contains(&sample) || PREFIXES.contains(&sample)
    }

    /// Picks the figures out of a parsed page.
    pub fn from_scrape(s: &crate::metrics::prom::Scrape) -> Self {
        let mut by_code = std::collections::BTreeMap::new();
        for sample in s
            .samples
            .iter()
            .filter(|x| x.name == "grpc_server_handled_total")
        {
            if let Some(code) = sample.labels.get("grpc_code") {
                *by_code.entry(code.clone()).or_insert(0.0) += sample.value;
            }
        }
        MemberMetrics {
            quota_backend_bytes: s.value("etcd_server_quota_backend_bytes"),
            db_total_size_bytes: s.value("etcd_mvcc_db_total_size_in_bytes"),
            db_in_use_bytes: s.value("etcd_mvcc_db_total_size_in_use_in_bytes"),
            has_leader: s.value("etcd_server_has_leader"),
            is_leader: s.value("etcd_server_is_leader"),
            wal_fsync_p99: s.histogram_quantile("etcd_disk_wal_fsync_duration_seconds", 0.99),
            backend_commit_p99: s
                .histogram_quantile("etcd_disk_backend_commit_duration_seconds", 0.99),
            grpc_unary_p99: s.histogram_quantile_where("grpc_server_handling_seconds", 0.99, |l| {
                l.get("grpc_type").is_some_and(|t| t == "unary")
                    && l.get("grpc_method").is_none_or(|m| m != "Defragment")
            }),
            peer_round_trip_p99: s
                .histogram_quantile("etcd_network_peer_round_trip_time_seconds", 0.99),
            leader_changes_seen: s.value("etcd_server_leader_changes_seen_total"),
            proposals_committed: s.value("etcd_server_proposals_committed_total"),
            proposals_applied: s.value("etcd_server_proposals_applied_total"),
            proposals_pending: s.value("etcd_server_proposals_pending"),
            proposals_failed: s.value("etcd_server_proposals_failed_total"),
            peer_sent_failures: s.sum("etcd_network_peer_sent_failures_total", &[]),
            watchers: s.value("etcd_debugging_mvcc_watcher_total"),
            grpc_handled_by_code: by_code,
        }
    }
}

/// An active alarm.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Alarm {
    /// The member that raised it.
    #[serde(serialize_with = "hex_id")]
    #[schema(value_type = String)]
    pub member_id: u64,
    /// `NOSPACE`, `CORRUPT`.
    pub kind: String,
}

/// Everything observed of one cluster in one round.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterObservation {
    /// Cluster name from the configuration.
    pub cluster: String,
    /// When the round started.
    #[serde(serialize_with = "crate::time::serialize_unix_ms")]
    #[schema(value_type = i64)]
    pub taken_at: SystemTime,
    /// Members, in member-list order (or, when the member list could not be
    /// read, one entry per configured endpoint).
    pub members: Vec<MemberObservation>,
    /// Why the member list could not be read.
    pub member_list_error: Option<String>,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Per-member KV hash at one revision, when a consistency check ran.
    pub hashkv: Option<HashKvCheck>,
    /// How long the round took, in milliseconds.
    pub duration_ms: f64,
}

/// A data consistency check: each member's KV hash at one revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HashKvCheck {
    /// The revision hashed.
    pub revision: i64,
    /// Member name and hash, or the error.
    #[schema(value_type = Vec<Object>)]
    pub hashes: Vec<(String, Result<u32, String>)>,
}

pub(crate) fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}
