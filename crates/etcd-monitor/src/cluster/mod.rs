//! The cluster model: what the monitor observed of one cluster at one moment
//! (members, each member's Status, reachability and latency, alarms), and
//! the collector that observes it.

pub mod certs;
mod collect;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::metrics::window::{Histogram, Increase, Window, histogram_increase, increase};

pub(crate) use collect::pick_endpoint;
pub use collect::{Collector, CollectorOptions, MemberClients, metrics_url_for, scrape_metrics};

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
    /// The cluster it belongs to (from the response header).
    #[serde(serialize_with = "hex_id")]
    #[schema(value_type = String)]
    pub cluster_id: u64,
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

/// Figures taken from a member's Prometheus page: what one scrape shows
/// (gauges and counters as the member reports them), and what the metrics
/// task computes over the scrapes of `monitoring.metrics_window` (the
/// quantiles and rates; `None` from a single scrape, such as `status`).
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
    /// Seconds the windowed figures below cover: between the oldest and the
    /// newest scrape of this member within `monitoring.metrics_window`.
    pub window_seconds: Option<f64>,
    /// p99 of `etcd_disk_wal_fsync_duration_seconds` over the window, seconds.
    pub wal_fsync_p99: Option<f64>,
    /// p99 of `etcd_disk_backend_commit_duration_seconds` over the window, seconds.
    pub backend_commit_p99: Option<f64>,
    /// p99 of unary gRPC handling time except Defragment over the window,
    /// seconds; only members started with `--metrics extensive` expose the
    /// histogram.
    pub grpc_unary_p99: Option<f64>,
    /// p99 of `etcd_network_peer_round_trip_time_seconds` over all peers
    /// over the window, seconds.
    pub peer_round_trip_p99: Option<f64>,
    /// gRPC requests handled per second over the window.
    pub grpc_requests_rate: Option<f64>,
    /// Percentage of the gRPC requests of the window that failed (codes
    /// [`FAILED_GRPC_CODES`]; not `Canceled`).
    pub grpc_failed_percent: Option<f64>,
    /// Failed proposals per second over the window.
    pub proposals_failed_rate: Option<f64>,
    /// Failed sends to peers per second over the window.
    pub peer_sent_failures_rate: Option<f64>,
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
    /// Watch streams open: gRPC `Watch` streams started minus finished (as
    /// the mixin's dashboard counts them).
    pub watch_streams: Option<f64>,
    /// Lease keep-alive streams open (`LeaseKeepAlive` started minus finished).
    pub lease_streams: Option<f64>,
    /// `etcd_debugging_mvcc_slow_watcher_total`: watchers behind the store
    /// (unsynced), whose events wait.
    pub slow_watchers: Option<f64>,
    /// `etcd_debugging_mvcc_pending_events_total`: events waiting to be
    /// sent to watchers.
    pub pending_events: Option<f64>,
    /// `etcd_debugging_mvcc_compact_revision`: the last compaction's revision.
    pub compact_revision: Option<f64>,
    /// `etcd_debugging_mvcc_current_revision`.
    pub current_revision: Option<f64>,
    /// Revisions kept since the last compaction (current minus compact
    /// revision): history the database holds and defragmentation cannot free.
    pub compaction_lag: Option<f64>,
    /// `process_resident_memory_bytes` of the member's process.
    pub resident_memory_bytes: Option<f64>,
    /// CPU the member's process used over the window, in cores
    /// (`process_cpu_seconds_total` per second).
    pub cpu_cores: Option<f64>,
    /// Bytes per second received from clients over the window.
    pub client_received_bytes_rate: Option<f64>,
    /// Bytes per second sent to clients over the window.
    pub client_sent_bytes_rate: Option<f64>,
    /// Bytes per second received from peers over the window.
    pub peer_received_bytes_rate: Option<f64>,
    /// Bytes per second sent to peers over the window.
    pub peer_sent_bytes_rate: Option<f64>,
    /// Proposals committed per second over the window.
    pub proposals_committed_rate: Option<f64>,
    /// Proposals applied per second over the window.
    pub proposals_applied_rate: Option<f64>,
    /// Leases granted per second over the window.
    pub leases_granted_rate: Option<f64>,
    /// Leases revoked (or expired) per second over the window.
    pub leases_revoked_rate: Option<f64>,
    /// Leader changes this member saw over the last 24 hours (the mixin's
    /// "leader elections per day"), or over `leader_changes_day_seconds`
    /// while the monitor has watched the member for less.
    pub leader_changes_per_day: Option<f64>,
    /// Seconds `leader_changes_per_day` covers (86400 once a day is watched).
    pub leader_changes_day_seconds: Option<f64>,
    /// gRPC requests per second and failed requests per second over the
    /// window, by method (`Range`, `Put`, `Txn`, `Watch`, ...), for the
    /// methods that handled requests in it.
    pub grpc_methods: std::collections::BTreeMap<String, GrpcMethodRates>,
    /// `grpc_server_handled_total` summed by gRPC code.
    pub grpc_handled_by_code: std::collections::BTreeMap<String, f64>,
    /// The latency histograms as scraped (cumulative since the member
    /// started); the metrics task keeps them for the window and does not
    /// publish them.
    #[serde(skip)]
    pub histograms: MemberHistograms,
    /// The counters behind the windowed rates, as scraped; kept for the
    /// window, not published.
    #[serde(skip)]
    pub counters: MemberCounters,
}

/// One gRPC method's traffic over the window.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, utoipa::ToSchema)]
pub struct GrpcMethodRates {
    /// Requests handled per second.
    pub requests_per_second: f64,
    /// Requests per second that failed ([`FAILED_GRPC_CODES`]).
    pub failed_per_second: f64,
}

/// A member's counters, as scraped (since the member started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberCounters {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: Option<f64>,
    /// `etcd_network_client_grpc_received_bytes_total`.
    pub client_received_bytes: Option<f64>,
    /// `etcd_network_client_grpc_sent_bytes_total`.
    pub client_sent_bytes: Option<f64>,
    /// `etcd_network_peer_received_bytes_total`, all peers (zero without peers).
    pub peer_received_bytes: f64,
    /// `etcd_network_peer_sent_bytes_total`, all peers.
    pub peer_sent_bytes: f64,
    /// `etcd_debugging_lease_granted_total`.
    pub leases_granted: Option<f64>,
    /// `etcd_debugging_lease_revoked_total`.
    pub leases_revoked: Option<f64>,
    /// `grpc_server_handled_total` by method: (handled, failed).
    pub grpc_by_method: std::collections::BTreeMap<String, (f64, f64)>,
}

/// A member's latency histograms, summed over their label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberHistograms {
    /// `etcd_disk_wal_fsync_duration_seconds`.
    pub wal_fsync: Option<Histogram>,
    /// `etcd_disk_backend_commit_duration_seconds`.
    pub backend_commit: Option<Histogram>,
    /// `grpc_server_handling_seconds`, unary, without Defragment.
    pub grpc_unary: Option<Histogram>,
    /// `etcd_network_peer_round_trip_time_seconds`, all peers.
    pub peer_round_trip: Option<Histogram>,
}

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

/// A member's `grpc_server_handled_total`, summed over its codes: all
/// requests handled, and those that failed ([`FAILED_GRPC_CODES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GrpcTotals {
    /// Requests handled, every code.
    pub handled: f64,
    /// Requests that failed.
    pub failed: f64,
}

/// Over a member's scrapes `(at_ms, totals)` in time order: how many gRPC
/// requests failed and how many were handled. The sums are taken per
/// scrape, so a code that first shows on a page (etcd shows a code once it
/// has answered with it) counts in full: a first burst of failures counts.
/// A restart shows as the totals going down.
pub fn grpc_increases(
    series: impl Iterator<Item = (i64, GrpcTotals)> + Clone,
) -> Option<(Increase, Increase)> {
    let all = increase(series.clone().map(|(at, t)| (at, t.handled)))?;
    let failed = increase(series.map(|(at, t)| (at, t.failed)))?;
    (all.seconds > 0.0).then_some((failed, all))
}

/// What a member's window keeps of one scrape: the cumulative histograms
/// and counters behind its windowed figures, and nothing it publishes.
/// Kept for every scrape of `monitoring.metrics_window`, so it is small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSample {
    /// The latency histograms.
    pub histograms: MemberHistograms,
    /// The counters behind the byte, CPU, lease and per-method rates.
    pub counters: MemberCounters,
    /// `grpc_server_handled_total` summed, when the page has it.
    pub grpc: Option<GrpcTotals>,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: Option<f64>,
    /// `etcd_server_proposals_committed_total`.
    pub proposals_committed: Option<f64>,
    /// `etcd_server_proposals_applied_total`.
    pub proposals_applied: Option<f64>,
    /// `etcd_network_peer_sent_failures_total`, all peers.
    pub peer_sent_failures: Option<f64>,
}

impl MemberMetrics {
    /// The families [`MemberMetrics::from_scrape`] reads, sorted (binary search).
    const FAMILIES: [&str; 30] = [
        "etcd_debugging_lease_granted_total",
        "etcd_debugging_lease_revoked_total",
        "etcd_debugging_mvcc_compact_revision",
        "etcd_debugging_mvcc_current_revision",
        "etcd_debugging_mvcc_pending_events_total",
        "etcd_debugging_mvcc_slow_watcher_total",
        "etcd_debugging_mvcc_watcher_total",
        "etcd_disk_backend_commit_duration_seconds_bucket",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "etcd_network_client_grpc_received_bytes_total",
        "etcd_network_client_grpc_sent_bytes_total",
        "etcd_network_peer_received_bytes_total",
        "etcd_network_peer_round_trip_time_seconds_bucket",
        "etcd_network_peer_sent_bytes_total",
        "etcd_network_peer_sent_failures_total",
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_failed_total",
        "etcd_server_proposals_pending",
        "etcd_server_quota_backend_bytes",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_started_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ];

    /// Whether a sample name feeds [`MemberMetrics::from_scrape`].
    pub fn wants(sample: &str) -> bool {
        Self::FAMILIES.binary_search(&sample).is_ok()
    }

    /// What [`MemberMetrics::from_scrape`] needs of a family: its zero
    /// `grpc_server_handled_total` samples (most of a page: every method
    /// with every status code) count as absent, so they are not parsed.
    pub fn select(sample: &str) -> crate::metrics::prom::Select {
        use crate::metrics::prom::Select;
        match sample {
            "grpc_server_handled_total" => Select::NonZero,
            s if Self::wants(s) => Select::All,
            _ => Select::None,
        }
    }

    /// Picks the figures out of a parsed page.
    pub fn from_scrape(s: &crate::metrics::prom::Scrape) -> Self {
        let mut by_code = std::collections::BTreeMap::new();
        let mut by_method: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        // etcd lists every method with every code from the start, mostly
        // zero: only the non-zero ones are kept (a series missing from a
        // scrape counts as zero there), so each member's window holds a few
        // entries per scrape rather than hundreds.
        for sample in s
            .samples
            .iter()
            .filter(|x| x.name == "grpc_server_handled_total" && x.value != 0.0)
        {
            if let Some(code) = sample.labels.get("grpc_code") {
                *by_code.entry(code.clone()).or_insert(0.0) += sample.value;
                if let Some(method) = sample.labels.get("grpc_method") {
                    let entry = by_method.entry(method.clone()).or_default();
                    entry.0 += sample.value;
                    if FAILED_GRPC_CODES.contains(&code.as_str()) {
                        entry.1 += sample.value;
                    }
                }
            }
        }
        // Streams open: started minus finished, of one service's bidi streams.
        let open_streams = |service: &str| {
            let of = |name: &str| {
                s.sum(
                    name,
                    &[("grpc_service", service), ("grpc_type", "bidi_stream")],
                )
            };
            of("grpc_server_started_total")
                .map(|started| (started - of("grpc_server_handled_total").unwrap_or(0.0)).max(0.0))
        };
        let compact_revision = s.value("etcd_debugging_mvcc_compact_revision");
        let current_revision = s.value("etcd_debugging_mvcc_current_revision");
        MemberMetrics {
            watch_streams: open_streams("etcdserverpb.Watch"),
            lease_streams: open_streams("etcdserverpb.Lease"),
            slow_watchers: s.value("etcd_debugging_mvcc_slow_watcher_total"),
            pending_events: s.value("etcd_debugging_mvcc_pending_events_total"),
            compact_revision,
            current_revision,
            compaction_lag: current_revision
                .zip(compact_revision)
                .map(|(cur, comp)| (cur - comp).max(0.0)),
            resident_memory_bytes: s.value("process_resident_memory_bytes"),
            counters: MemberCounters {
                cpu_seconds: s.value("process_cpu_seconds_total"),
                client_received_bytes: s.value("etcd_network_client_grpc_received_bytes_total"),
                client_sent_bytes: s.value("etcd_network_client_grpc_sent_bytes_total"),
                peer_received_bytes: s
                    .sum("etcd_network_peer_received_bytes_total", &[])
                    .unwrap_or(0.0),
                peer_sent_bytes: s
                    .sum("etcd_network_peer_sent_bytes_total", &[])
                    .unwrap_or(0.0),
                leases_granted: s.value("etcd_debugging_lease_granted_total"),
                leases_revoked: s.value("etcd_debugging_lease_revoked_total"),
                grpc_by_method: by_method,
            },
            quota_backend_bytes: s.value("etcd_server_quota_backend_bytes"),
            db_total_size_bytes: s.value("etcd_mvcc_db_total_size_in_bytes"),
            db_in_use_bytes: s.value("etcd_mvcc_db_total_size_in_use_in_bytes"),
            has_leader: s.value("etcd_server_has_leader"),
            is_leader: s.value("etcd_server_is_leader"),
            leader_changes_seen: s.value("etcd_server_leader_changes_seen_total"),
            proposals_committed: s.value("etcd_server_proposals_committed_total"),
            proposals_applied: s.value("etcd_server_proposals_applied_total"),
            proposals_pending: s.value("etcd_server_proposals_pending"),
            proposals_failed: s.value("etcd_server_proposals_failed_total"),
            peer_sent_failures: s.sum("etcd_network_peer_sent_failures_total", &[]),
            watchers: s.value("etcd_debugging_mvcc_watcher_total"),
            grpc_handled_by_code: by_code,
            histograms: MemberHistograms {
                wal_fsync: s.histogram("etcd_disk_wal_fsync_duration_seconds", |_| true),
                backend_commit: s.histogram("etcd_disk_backend_commit_duration_seconds", |_| true),
                grpc_unary: s.histogram("grpc_server_handling_seconds", |l| {
                    l.get("grpc_type").is_some_and(|t| t == "unary")
                        && l.get("grpc_method").is_none_or(|m| m != "Defragment")
                }),
                peer_round_trip: s.histogram("etcd_network_peer_round_trip_time_seconds", |_| true),
            },
            ..MemberMetrics::default()
        }
    }

    /// Fills the windowed figures from this member's scrapes within
    /// `monitoring.metrics_window` (`window`, oldest first, ending with the
    /// scrape `self` came from): the p99s of what the histograms observed
    /// in the window, and the rates of the counters, restarts accounted for.
    pub fn fill_window(&mut self, window: &Window<WindowSample>) {
        let p99 = |pick: fn(&MemberHistograms) -> Option<&Histogram>| {
            let series = window
                .points()
                .filter_map(|(at, m)| pick(&m.histograms).map(|h| (at, h)));
            histogram_increase(series).and_then(|(h, _)| h.quantile(0.99))
        };
        self.wal_fsync_p99 = p99(|h| h.wal_fsync.as_ref());
        self.backend_commit_p99 = p99(|h| h.backend_commit.as_ref());
        self.grpc_unary_p99 = p99(|h| h.grpc_unary.as_ref());
        self.peer_round_trip_p99 = p99(|h| h.peer_round_trip.as_ref());
        let rate = |get: fn(&WindowSample) -> Option<f64>| {
            increase(
                window
                    .points()
                    .filter_map(|(at, m)| get(m).map(|v| (at, v))),
            )
            .and_then(|i| i.rate())
        };
        self.proposals_failed_rate = rate(|m| m.proposals_failed);
        self.proposals_committed_rate = rate(|m| m.proposals_committed);
        self.proposals_applied_rate = rate(|m| m.proposals_applied);
        self.cpu_cores = rate(|m| m.counters.cpu_seconds);
        self.client_received_bytes_rate = rate(|m| m.counters.client_received_bytes);
        self.client_sent_bytes_rate = rate(|m| m.counters.client_sent_bytes);
        self.peer_received_bytes_rate = rate(|m| Some(m.counters.peer_received_bytes));
        self.peer_sent_bytes_rate = rate(|m| Some(m.counters.peer_sent_bytes));
        self.leases_granted_rate = rate(|m| m.counters.leases_granted);
        self.leases_revoked_rate = rate(|m| m.counters.leases_revoked);
        self.grpc_methods = grpc_method_rates(window);
        // Absent until the first failure: zero before it.
        self.peer_sent_failures_rate = rate(|m| Some(m.peer_sent_failures.unwrap_or(0.0)));
        let grpc = grpc_increases(
            window
                .points()
                .filter_map(|(at, m)| m.grpc.map(|g| (at, g))),
        );
        self.grpc_requests_rate = grpc.and_then(|(_, all)| all.rate());
        self.grpc_failed_percent = grpc
            .filter(|(_, all)| all.value > 0.0)
            .map(|(failed, all)| 100.0 * failed.value / all.value);
        self.window_seconds = window
            .points()
            .next()
            .zip(window.last_at())
            .map(|((first, _), last)| (last - first) as f64 / 1e3)
            .filter(|s| *s > 0.0);
    }

    /// The summed gRPC counters of this scrape, when the page has them.
    pub fn grpc_totals(&self) -> Option<GrpcTotals> {
        (!self.grpc_handled_by_code.is_empty()).then(|| GrpcTotals {
            handled: self.grpc_handled_by_code.values().sum(),
            failed: self
                .grpc_handled_by_code
                .iter()
                .filter(|(code, _)| FAILED_GRPC_CODES.contains(&code.as_str()))
                .map(|(_, v)| v)
                .sum(),
        })
    }

    /// What the window keeps of this scrape. The histograms and counters
    /// move into it (the published figures do not carry them).
    pub fn take_window_sample(&mut self) -> WindowSample {
        WindowSample {
            histograms: std::mem::take(&mut self.histograms),
            counters: std::mem::take(&mut self.counters),
            grpc: self.grpc_totals(),
            proposals_failed: self.proposals_failed,
            proposals_committed: self.proposals_committed,
            proposals_applied: self.proposals_applied,
            peer_sent_failures: self.peer_sent_failures,
        }
    }
}

/// Each gRPC method's requests and failures per second over a member's
/// window, for the methods that handled requests in it. A method missing
/// from a page counts as zero there (etcd lists a method once called).
fn grpc_method_rates(
    window: &Window<WindowSample>,
) -> std::collections::BTreeMap<String, GrpcMethodRates> {
    let methods: std::collections::BTreeSet<&String> = window
        .points()
        .flat_map(|(_, m)| m.counters.grpc_by_method.keys())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for method in methods {
        let of = |pick: fn(&(f64, f64)) -> f64| {
            increase(window.points().map(|(at, m)| {
                let counts = m.counters.grpc_by_method.get(method);
                (at, counts.map_or(0.0, pick))
            }))
            .and_then(|i| i.rate())
        };
        let (Some(requests), Some(failed)) = (of(|c| c.0), of(|c| c.1)) else {
            continue;
        };
        if requests > 0.0 {
            out.insert(
                method.clone(),
                GrpcMethodRates {
                    requests_per_second: requests,
                    failed_per_second: failed,
                },
            );
        }
    }
    out
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
    /// The cluster the member list came from (its response header).
    #[serde(serialize_with = "hex_id_opt")]
    #[schema(value_type = Option<String>)]
    pub cluster_id: Option<u64>,
    /// The configured endpoints (`clusters[].endpoints`, as URLs).
    pub configured_endpoints: Vec<String>,
    /// Configured endpoints that are no listed member's client URL, and
    /// who answers there.
    pub unlisted_endpoints: Vec<EndpointIdentity>,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Per-member KV hash at one revision, when a consistency check ran.
    pub hashkv: Option<HashKvCheck>,
    /// The members' serving certificates and the configured client
    /// certificate and CA, with their expiry.
    pub certificates: Vec<certs::CertificateObservation>,
    /// How long the round took, in milliseconds.
    pub duration_ms: f64,
}

/// Who answers at a configured endpoint that the member list does not name.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EndpointIdentity {
    /// The endpoint.
    pub endpoint: String,
    /// The cluster of the member that answered Status there.
    #[serde(serialize_with = "hex_id_opt")]
    #[schema(value_type = Option<String>)]
    pub cluster_id: Option<u64>,
    /// That member's id.
    #[serde(serialize_with = "hex_id_opt")]
    #[schema(value_type = Option<String>)]
    pub member_id: Option<u64>,
    /// Why nothing answered.
    pub error: Option<String>,
}

impl ClusterObservation {
    /// Which cluster each configured endpoint and listed member answered
    /// for: cluster id -> who. More than one id means the configuration
    /// mixes clusters (a member left over from an old cluster, a wrong
    /// address).
    pub fn cluster_ids(&self) -> BTreeMap<u64, Vec<String>> {
        let mut ids: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        if let Some(id) = self.cluster_id {
            ids.entry(id).or_default().push("member list".into());
        }
        for m in &self.members {
            if let Some(s) = m.status.as_ref().filter(|s| s.cluster_id != 0) {
                ids.entry(s.cluster_id)
                    .or_default()
                    .push(m.endpoint.clone());
            }
        }
        for e in &self.unlisted_endpoints {
            if let Some(id) = e.cluster_id.filter(|id| *id != 0) {
                ids.entry(id).or_default().push(e.endpoint.clone());
            }
        }
        ids
    }

    /// Configured endpoints behind which no listed member of this cluster
    /// answers: a member of another cluster, a removed member, nothing. An
    /// endpoint that reaches a listed member under an address the member
    /// does not advertise (an IP for a DNS name, a load balancer) is fine.
    pub fn stray_endpoints(&self) -> Vec<&EndpointIdentity> {
        self.unlisted_endpoints
            .iter()
            .filter(|e| self.listed_member_behind(e).is_none())
            .collect()
    }

    /// The listed member that answered at `e`, if one did.
    fn listed_member_behind(&self, e: &EndpointIdentity) -> Option<&MemberObservation> {
        let id = e.member_id?;
        if e.cluster_id != self.cluster_id {
            return None;
        }
        self.members.iter().find(|m| m.id == id)
    }

    /// Listed members that no configured endpoint reaches: none of their
    /// client URLs is configured, and no configured endpoint answered as
    /// them (only when the member list was read).
    pub fn unconfigured_members(&self) -> Vec<&MemberObservation> {
        if self.member_list_error.is_some() {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|m| {
                let by_url = m
                    .client_urls
                    .iter()
                    .any(|u| self.configured_endpoints.iter().any(|c| same_url(c, u)));
                let by_answer = self
                    .unlisted_endpoints
                    .iter()
                    .any(|e| self.listed_member_behind(e).is_some_and(|x| x.id == m.id));
                !by_url && !by_answer
            })
            .collect()
    }
}

/// Whether two endpoint URLs name the same place (a trailing `/` aside).
pub(crate) fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A data consistency check: each member's KV hash at one revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HashKvCheck {
    /// The revision hashed.
    pub revision: i64,
    /// Each member's hash, or why it has none.
    pub hashes: Vec<MemberHash>,
}

/// One member's KV hash.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MemberHash {
    /// Member name (or id).
    pub member: String,
    /// The hash of its keys and values up to the revision.
    pub hash: Option<u32>,
    /// Why HashKV failed.
    pub error: Option<String>,
}

impl MemberHash {
    /// `member`'s answer to HashKV.
    pub fn new(member: String, answer: Result<u32, String>) -> Self {
        let (hash, error) = match answer {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e)),
        };
        MemberHash {
            member,
            hash,
            error,
        }
    }
}

pub(crate) fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}

fn hex_id_opt<S: serde::Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => hex_id(id, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_families_read_are_sorted_for_binary_search() {
        let mut sorted = MemberMetrics::FAMILIES;
        sorted.sort_unstable();
        assert_eq!(sorted, MemberMetrics::FAMILIES);
        assert!(MemberMetrics::wants("etcd_server_has_leader"));
        assert!(!MemberMetrics::wants("etcd_server_has_leaderx"));
    }

    use std::time::Duration;

    use super::*;
    use crate::metrics::prom::Scrape;

    /// A page with `fast` fsyncs under 1 ms and `slow` ones under 1 s, and
    /// `failed` proposals.
    fn page(fast: u64, slow: u64, failed: u64) -> MemberMetrics {
        let all = fast + slow;
        let text = format!(
            "etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"0.001\"}} {fast}\n\
             etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"1.024\"}} {all}\n\
             etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {all}\n\
             etcd_server_proposals_failed_total {failed}\n"
        );
        MemberMetrics::from_scrape(&Scrape::parse(&text).0)
    }

    #[test]
    fn the_window_sees_a_new_slow_disk_and_forgets_it() {
        let mut w = Window::new(Duration::from_secs(60));
        // A long fast life: no slow fsync in the window yet.
        w.push(0, page(100_000, 0, 0).take_window_sample());
        w.push(30_000, page(100_100, 0, 0).take_window_sample());
        let mut m = page(100_100, 0, 0);
        m.fill_window(&w);
        assert!(m.wal_fsync_p99.unwrap() <= 0.001);
        assert_eq!(m.window_seconds, Some(30.0));
        // 20 slow fsyncs in the next 30 s: the window's p99 is slow, the
        // since-start p99 is not.
        let slow = page(100_100, 20, 30);
        w.push(60_000, slow.clone().take_window_sample());
        let mut m = slow.clone();
        m.fill_window(&w);
        assert!(m.wal_fsync_p99.unwrap() > 0.5, "{:?}", m.wal_fsync_p99);
        let since_start = slow.histograms.wal_fsync.as_ref().unwrap().quantile(0.99);
        assert!(since_start.unwrap() <= 0.001, "{since_start:?}");
        assert_eq!(m.proposals_failed_rate, Some(0.5));
        // Restarted (counters start over), then a fast minute: the slow
        // fsyncs leave the window.
        w.push(90_000, page(50, 0, 0).take_window_sample());
        w.push(150_000, page(5_000, 0, 0).take_window_sample());
        let mut m = page(5_000, 0, 0);
        m.fill_window(&w);
        assert!(m.wal_fsync_p99.unwrap() <= 0.001, "{:?}", m.wal_fsync_p99);
        assert_eq!(m.proposals_failed_rate, Some(0.0));
    }
}
