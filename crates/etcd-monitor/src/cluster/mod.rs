//! The cluster model: what the monitor observed of one cluster at one moment
//! (members, each member's Status, reachability and latency, alarms), and
//! the collector that observes it.

mod collect;

use std::time::SystemTime;

use serde::Serialize;

pub use collect::{Collector, CollectorOptions};

/// One member as the cluster lists it and as the monitor saw it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberObservation {
    /// Member id.
    #[serde(serialize_with = "hex_id")]
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
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The answering member's id (from the response header).
    #[serde(serialize_with = "hex_id")]
    pub member_id: u64,
    /// etcd version.
    pub version: String,
    /// Backend database size in bytes (allocated).
    pub db_size: i64,
    /// Bytes of the backend actually in use.
    pub db_size_in_use: i64,
    /// The leader this member follows (0: none).
    #[serde(serialize_with = "hex_id")]
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
#[derive(Debug, Clone, Serialize, Default)]
pub struct MemberMetrics {
    /// `etcd_server_quota_backend_bytes`.
    pub quota_backend_bytes: Option<f64>,
    /// `etcd_server_has_leader`.
    pub has_leader: Option<f64>,
    /// p99 of `etcd_disk_wal_fsync_duration_seconds`, seconds.
    pub wal_fsync_p99: Option<f64>,
    /// p99 of `etcd_disk_backend_commit_duration_seconds`, seconds.
    pub backend_commit_p99: Option<f64>,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes_seen: Option<f64>,
    /// `etcd_server_proposals_pending`.
    pub proposals_pending: Option<f64>,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: Option<f64>,
}

/// An active alarm.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alarm {
    /// The member that raised it.
    #[serde(serialize_with = "hex_id")]
    pub member_id: u64,
    /// `NOSPACE`, `CORRUPT`.
    pub kind: String,
}

/// Everything observed of one cluster in one round.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterObservation {
    /// Cluster name from the configuration.
    pub cluster: String,
    /// When the round started.
    #[serde(serialize_with = "unix_ms")]
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
#[derive(Debug, Clone, Serialize)]
pub struct HashKvCheck {
    /// The revision hashed.
    pub revision: i64,
    /// Member name and hash, or the error.
    pub hashes: Vec<(String, Result<u32, String>)>,
}

pub(crate) fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}

pub(crate) fn unix_ms<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}
