//! Keyspace analytics: what fills the database. A scan reads every key under
//! a prefix in pages and aggregates as it goes: key count, key and value
//! bytes and revisions per prefix at each level (by `/`), the largest keys,
//! and for Kubernetes (`/registry/...`) the same per resource and namespace.
//!
//! Gentle on production: paginated range reads (the next page starts after
//! the last key), serializable by default, at one pinned revision, paced to a
//! request rate and bounded in time; memory stays bounded whatever the
//! keyspace holds (one page at a time, a capped number of prefix and resource
//! buckets, a top-N heap).

mod aggregate;
mod growth;
mod hot;
mod scan;

pub use aggregate::{Aggregator, PrefixStats, ResourceStats, TopKey, kubernetes_resource};
pub use growth::{Growth, GrowthCheck, PrefixGrowth, growth};
pub use hot::{HISTORY_SECS, HotBucket, HotTracker};
pub use scan::{Consistency, Progress, ScanOptions, choose_member, scan};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The result of a scan. The first fields are a fixed contract (tools
/// depend on them): `scanned_keys`, `revision`, `prefixes`, `top_keys`,
/// `resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct KeyspaceReport {
    /// Keys read.
    pub scanned_keys: u64,
    /// The revision the scan read at (every page at this one, unless
    /// `consistent` is false).
    pub revision: i64,
    /// Per prefix at each level below the scanned prefix, largest values first within a level.
    pub prefixes: Vec<PrefixStats>,
    /// The largest keys by value size, largest first.
    pub top_keys: Vec<TopKey>,
    /// Kubernetes objects (keys under `/registry/`) per resource and
    /// namespace, largest first; empty when no key is under `/registry/`.
    pub resources: Vec<ResourceStats>,
    /// The prefix scanned (`""`: the whole keyspace).
    pub prefix: String,
    /// When the scan started (ms since epoch).
    #[serde(default)]
    pub at_ms: i64,
    /// Levels below `prefix` reported in `prefixes`.
    pub depth: usize,
    /// Bytes of all keys read.
    pub key_bytes: u64,
    /// Bytes of all values read.
    pub value_bytes: u64,
    /// Whether every key under the prefix was read (false: stopped by
    /// `max_duration`; see `stopped`).
    pub complete: bool,
    /// Why the scan stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Whether every page was read at `revision` (false when that revision
    /// was compacted during the scan and later pages were read at the newest).
    pub consistent: bool,
    /// Range requests sent.
    pub requests: u64,
    /// Wall time of the scan, milliseconds.
    pub duration_ms: u64,
    /// The member read from.
    pub endpoint: String,
    /// Whether that member was the leader when chosen.
    pub from_leader: bool,
    /// Serializable (member-local) reads, or linearizable.
    pub serializable: bool,
    /// Keys counted in folded buckets (`*` prefixes and namespaces) because
    /// more distinct buckets than `max_buckets` were seen.
    pub folded_keys: u64,
    /// The snapshot file analysed (restored into a throwaway member), when
    /// the scan read a snapshot instead of a live cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}
