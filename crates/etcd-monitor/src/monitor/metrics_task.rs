//! The metrics task of one cluster: scrape every member's `/metrics`, run
//! the active probes, derive rates, publish and record samples.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use etcd_client::Client;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::MonitorEvent;
use super::probes::{ProbeReport, Prober};
use crate::cluster::{MemberClients, MemberMetrics, WindowSample, metrics_url_for, scrape_metrics};
use crate::config::{ClusterConfig, MonitoringConfig};
use crate::connection;
use crate::health::HealthSnapshot;
use crate::metrics::window::{Window, increase};
use crate::store::{MetricPoint, Store, unix_ms};

/// One member's scraped figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberMetricsEntry {
    /// Member name (empty before the first health check named it).
    pub member: String,
    /// Client endpoint.
    pub endpoint: String,
    /// The page scraped.
    pub metrics_url: String,
    /// Figures, when the scrape worked.
    pub metrics: Option<MemberMetrics>,
    /// Why the scrape failed.
    pub error: Option<String>,
}

/// One metrics round of one cluster.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricsRound {
    /// Cluster name.
    pub cluster: String,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Every member's figures.
    pub members: Vec<MemberMetricsEntry>,
    /// Probe latencies over the rolling window.
    pub probes: ProbeReport,
    /// The cluster's revision after the probes.
    pub revision: Option<i64>,
    /// Revisions per second since the previous round (writes the cluster applied).
    pub revision_rate: Option<f64>,
    /// Proposals committed per second on the leader since the previous round.
    pub proposals_committed_rate: Option<f64>,
    /// Leases the cluster holds (LeaseLeases), when the call worked.
    pub leases: Option<i64>,
    /// `monitoring.metrics_window`, seconds: the members' quantiles and
    /// rates are over this window (each member's `window_seconds` says how
    /// much of it its scrapes cover so far).
    pub metrics_window_seconds: f64,
    /// How long the round took, ms.
    pub duration_ms: f64,
}

pub(super) struct MetricsTask {
    pub ownership: super::ha::Ownership,
    pub cluster: ClusterConfig,
    pub monitoring: MonitoringConfig,
    pub store: Store,
    pub events: broadcast::Sender<MonitorEvent>,
    pub publish: watch::Sender<Option<Arc<MetricsRound>>>,
    pub health: watch::Receiver<Option<Arc<HealthSnapshot>>>,
    /// The health checks' member connections.
    pub clients: MemberClients,
    pub token: CancellationToken,
}

#[tracing::instrument(name = "metrics", skip_all, fields(cluster = %t.cluster.name))]
pub(super) async fn run(t: MetricsTask) {
    let http = crate::metrics::scrape_client(t.cluster.dial_timeout);
    let mut interval = tokio::time::interval(t.monitoring.metrics_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prober = Prober::default();
    let mut connection = Probing::default();
    let mut previous: Option<(Instant, Option<i64>, Option<f64>)> = None;
    let mut windows = MemberWindows::new(t.monitoring.metrics_window);
    loop {
        tokio::select! {
            _ = t.token.cancelled() => break,
            _ = interval.tick() => {}
        }
        if !t.ownership.owned() {
            // Another replica scrapes this cluster; rates restart when this one owns it again.
            if t.publish.borrow().is_some() {
                t.publish.send_replace(None);
                previous = None;
                windows = MemberWindows::new(t.monitoring.metrics_window);
                prober = Prober::default();
            }
            continue;
        }
        let round = tokio::select! {
            _ = t.token.cancelled() => break,
            r = one_round(&t, &http, &mut prober, &mut connection, &mut previous) => r,
        };
        let mut round = round;
        windows.apply(&mut round);
        let points = points_of(&round);
        // Recorded beside the round (see the health task).
        let (store, cluster) = (t.store.clone(), round.cluster.clone());
        tokio::spawn(async move {
            if let Err(e) = store.record_metrics(&cluster, &points).await {
                tracing::warn!(error = %e, "cannot record metric samples");
            }
        });
        let _ = t.events.send(MonitorEvent::Metrics {
            cluster: round.cluster.clone(),
            at_ms: round.at_ms,
        });
        t.publish.send_replace(Some(Arc::new(round)));
        release_freed_memory();
    }
}

/// Each member's raw scrapes of the last `monitoring.metrics_window`, and
/// its leader-change counter over the last day, by endpoint.
struct MemberWindows {
    span: std::time::Duration,
    by_endpoint: std::collections::HashMap<String, Window<WindowSample>>,
    days: std::collections::HashMap<String, Window<f64>>,
}

/// A member's window keeps about this many scrapes, whatever the metrics
/// interval: one per `metrics_window / WINDOW_POINTS` (15 s of the default
/// 5 minutes), and the newest.
const WINDOW_POINTS: u32 = 20;

/// The day's leader-change counts are kept one per this long.
const DAY_STEP_MS: i64 = 5 * 60 * 1000;
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

impl MemberWindows {
    fn new(span: std::time::Duration) -> Self {
        MemberWindows {
            span,
            by_endpoint: Default::default(),
            days: Default::default(),
        }
    }

    /// Leader changes the member saw over the last day (or as much of it as
    /// was watched), and the seconds that covers; the counter is kept every
    /// [`DAY_STEP_MS`], and the newest value always counts.
    fn leader_changes_per_day(
        &mut self,
        endpoint: &str,
        at_ms: i64,
        seen: f64,
    ) -> Option<(f64, f64)> {
        let day = self
            .days
            .entry(endpoint.to_string())
            .or_insert_with(|| Window::new(DAY));
        if day.last_at().is_none_or(|last| at_ms - last >= DAY_STEP_MS) {
            day.push(at_ms, seen);
        }
        let newest = (day.last_at() != Some(at_ms)).then_some((at_ms, seen));
        let points = day.points().map(|(at, v)| (at, *v)).chain(newest);
        let inc = increase(points)?;
        Some((inc.value, inc.seconds))
    }

    /// Adds the round's scrapes to the windows, fills each member's
    /// windowed figures, and drops the raw histograms from what is
    /// published (the window keeps them).
    fn apply(&mut self, round: &mut MetricsRound) {
        for entry in &mut round.members {
            let Some(m) = entry.metrics.as_mut() else {
                continue;
            };
            let window = self
                .by_endpoint
                .entry(entry.endpoint.clone())
                .or_insert_with(|| Window::thinned(self.span, WINDOW_POINTS));
            window.push(round.at_ms, m.take_window_sample());
            m.fill_window(window);
            if let Some(seen) = m.leader_changes_seen {
                let day = self.leader_changes_per_day(&entry.endpoint, round.at_ms, seen);
                m.leader_changes_per_day = day.map(|(n, _)| n);
                m.leader_changes_day_seconds = day.map(|(_, s)| s);
            }
        }
        // Members gone for a whole window (a day for the day's counts) are forgotten.
        let from = round.at_ms - self.span.as_millis() as i64;
        self.by_endpoint
            .retain(|_, w| w.last_at().is_some_and(|at| at >= from));
        let day_from = round.at_ms - DAY.as_millis() as i64;
        self.days
            .retain(|_, w| w.last_at().is_some_and(|at| at >= day_from));
        round.metrics_window_seconds = self.span.as_secs_f64();
    }
}

/// Hands memory freed by the round (scraped pages, parsed samples) back to
/// the system, so a long-running monitor's RSS stays at its working set.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Which client the probes, the lease count and the first member list go
/// through.
#[derive(Default)]
struct Probing {
    /// A client of the task's own, only while the health checks have no
    /// connection to a member it reached.
    own: Option<Client>,
    /// Turns through the reachable members, one per round.
    turn: usize,
}

impl Probing {
    /// The health checks' connection to a member their latest round
    /// reached, a different member each round (so the probes, like a
    /// balanced client's, take every member's path); before the first
    /// health check, or with none reached, a client of the task's own.
    async fn client(&mut self, t: &MetricsTask) -> Result<Client, String> {
        let reachable: Vec<String> = t
            .health
            .borrow()
            .as_ref()
            .map(|s| {
                s.observation
                    .members
                    .iter()
                    .filter(|m| m.reachable())
                    .map(|m| m.endpoint.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.turn = self.turn.wrapping_add(1);
        let n = reachable.len();
        if let Some(c) = (0..n).find_map(|i| t.clients.get(&reachable[(self.turn + i) % n])) {
            // Its connections are no longer needed.
            self.own = None;
            return Ok(c);
        }
        if let Some(c) = &self.own {
            return Ok(c.clone());
        }
        let c = connection::connect(&t.cluster)
            .await
            .map_err(|e| e.to_string())?;
        self.own = Some(c.clone());
        Ok(c)
    }
}

async fn one_round(
    t: &MetricsTask,
    http: &reqwest::Client,
    prober: &mut Prober,
    probing: &mut Probing,
    previous: &mut Option<(Instant, Option<i64>, Option<f64>)>,
) -> MetricsRound {
    let started = Instant::now();
    let at_ms = unix_ms(SystemTime::now());
    let n = t.monitoring.probes_per_round;
    let mut client = match probing.client(t).await {
        Ok(c) => Some(c),
        Err(e) => {
            prober.all_failed(n, &e);
            None
        }
    };
    // Whom to scrape: the members of the latest health check; before the
    // first one, the member list (so samples are keyed by member name from
    // the start); failing that, the configured endpoints.
    let from_health: Option<Vec<(String, String)>> = t
        .health
        .borrow()
        .as_ref()
        .filter(|s| !s.observation.members.is_empty())
        .map(|s| {
            s.observation
                .members
                .iter()
                .map(|m| (m.name.clone(), m.endpoint.clone()))
                .collect()
        });
    let targets = match from_health {
        Some(t) => t,
        None => listed_members(client.as_mut(), &t.cluster)
            .await
            .unwrap_or_else(|| {
                connection::endpoints(&t.cluster)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (String::new(), e))
                    .collect()
            }),
    };
    let scrapes: Vec<_> = targets
        .into_iter()
        .map(|(member, endpoint)| {
            let url = metrics_url_for(&t.cluster, &member, &endpoint);
            let http = http.clone();
            let timeout = t.cluster.request_timeout;
            tokio::spawn(async move {
                let result = scrape_metrics(&http, &url, timeout).await;
                let (metrics, error) = match result {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e)),
                };
                MemberMetricsEntry {
                    member,
                    endpoint,
                    metrics_url: url,
                    metrics,
                    error,
                }
            })
        })
        .collect();

    let revision = match client.as_mut() {
        Some(c) => prober.round(c, n, t.cluster.request_timeout).await,
        None => None,
    };

    let leases = match client.as_mut() {
        Some(c) => tokio::time::timeout(t.cluster.request_timeout, c.leases())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.leases().len() as i64),
        None => None,
    };

    let mut members = Vec::new();
    for s in scrapes {
        if let Ok(entry) = s.await {
            members.push(entry);
        }
    }
    let committed = members
        .iter()
        .filter_map(|m| m.metrics.as_ref())
        .find(|m| m.is_leader == Some(1.0))
        .and_then(|m| m.proposals_committed);
    let now = Instant::now();
    let (revision_rate, proposals_committed_rate) = match previous.as_ref() {
        Some((then, prev_rev, prev_committed)) => {
            let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
            (
                revision.zip(*prev_rev).map(|(a, b)| (a - b) as f64 / dt),
                committed
                    .zip(*prev_committed)
                    .map(|(a, b)| (a - b).max(0.0) / dt),
            )
        }
        None => (None, None),
    };
    *previous = Some((now, revision, committed));
    MetricsRound {
        cluster: t.cluster.name.clone(),
        at_ms,
        members,
        probes: prober.report(),
        revision,
        revision_rate,
        proposals_committed_rate,
        leases,
        metrics_window_seconds: t.monitoring.metrics_window.as_secs_f64(),
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// Member names and client endpoints from the member list, preferring the
/// configured endpoints (known to be routable from here).
async fn listed_members(
    client: Option<&mut Client>,
    cluster: &ClusterConfig,
) -> Option<Vec<(String, String)>> {
    let client = client?;
    let list = tokio::time::timeout(cluster.request_timeout, client.member_list())
        .await
        .ok()?
        .ok()?;
    let configured = connection::endpoints(cluster).unwrap_or_default();
    Some(
        list.members()
            .iter()
            .map(|m| {
                (
                    m.name().to_string(),
                    crate::cluster::pick_endpoint(m.client_urls(), &configured),
                )
            })
            .filter(|(_, e)| !e.is_empty())
            .collect(),
    )
}

/// The names of the samples `points_of` stores: per member, then per cluster.
pub const STORED_METRICS: &[&str] = &[
    "wal_fsync_p99_seconds",
    "backend_commit_p99_seconds",
    "peer_round_trip_p99_seconds",
    "grpc_unary_p99_seconds",
    "grpc_requests_rate",
    "grpc_failed_percent",
    "proposals_failed_rate",
    "peer_sent_failures_rate",
    "db_total_size_bytes",
    "db_in_use_bytes",
    "quota_backend_bytes",
    "proposals_pending",
    "leader_changes_seen",
    "watchers",
    "has_leader",
    "watch_streams",
    "lease_streams",
    "slow_watchers",
    "pending_events",
    "compact_revision",
    "compaction_lag",
    "resident_memory_bytes",
    "cpu_cores",
    "client_received_bytes_rate",
    "client_sent_bytes_rate",
    "peer_received_bytes_rate",
    "peer_sent_bytes_rate",
    "member_proposals_committed_rate",
    "proposals_applied_rate",
    "leases_granted_rate",
    "leases_revoked_rate",
    "leader_changes_per_day",
    "probe_put_p99_ms",
    "probe_linearizable_get_p99_ms",
    "probe_serializable_get_p99_ms",
    "revision_rate",
    "proposals_committed_rate",
    "leases",
    "grpc_method_rate",
    "grpc_method_failed_rate",
];

/// The stored metrics whose series are gRPC methods (summed over the
/// members) rather than members.
pub const BY_METHOD_METRICS: &[&str] = &["grpc_method_rate", "grpc_method_failed_rate"];

/// The samples stored for history charts.
pub(crate) fn points_of(r: &MetricsRound) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    let mut by_method: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    let mut push = |member: &str, name: &str, value: Option<f64>| {
        if let Some(value) = value {
            debug_assert!(
                STORED_METRICS.contains(&name),
                "{name} is missing from STORED_METRICS"
            );
            out.push(MetricPoint {
                member: member.to_string(),
                name: name.to_string(),
                at_ms: r.at_ms,
                value,
            });
        }
    };
    for m in &r.members {
        let Some(x) = &m.metrics else { continue };
        let who = if m.member.is_empty() {
            m.endpoint.as_str()
        } else {
            m.member.as_str()
        };
        // Stored name -> figure, in STORED_METRICS order.
        for (name, value) in [
            ("wal_fsync_p99_seconds", x.wal_fsync_p99),
            ("backend_commit_p99_seconds", x.backend_commit_p99),
            ("peer_round_trip_p99_seconds", x.peer_round_trip_p99),
            ("grpc_unary_p99_seconds", x.grpc_unary_p99),
            ("grpc_requests_rate", x.grpc_requests_rate),
            ("grpc_failed_percent", x.grpc_failed_percent),
            ("proposals_failed_rate", x.proposals_failed_rate),
            ("peer_sent_failures_rate", x.peer_sent_failures_rate),
            ("db_total_size_bytes", x.db_total_size_bytes),
            ("db_in_use_bytes", x.db_in_use_bytes),
            ("quota_backend_bytes", x.quota_backend_bytes),
            ("proposals_pending", x.proposals_pending),
            ("leader_changes_seen", x.leader_changes_seen),
            ("watchers", x.watchers),
            ("has_leader", x.has_leader),
            ("watch_streams", x.watch_streams),
            ("lease_streams", x.lease_streams),
            ("slow_watchers", x.slow_watchers),
            ("pending_events", x.pending_events),
            ("compact_revision", x.compact_revision),
            ("compaction_lag", x.compaction_lag),
            ("resident_memory_bytes", x.resident_memory_bytes),
            ("cpu_cores", x.cpu_cores),
            ("client_received_bytes_rate", x.client_received_bytes_rate),
            ("client_sent_bytes_rate", x.client_sent_bytes_rate),
            ("peer_received_bytes_rate", x.peer_received_bytes_rate),
            ("peer_sent_bytes_rate", x.peer_sent_bytes_rate),
            (
                "member_proposals_committed_rate",
                x.proposals_committed_rate,
            ),
            ("proposals_applied_rate", x.proposals_applied_rate),
            ("leases_granted_rate", x.leases_granted_rate),
            ("leases_revoked_rate", x.leases_revoked_rate),
            ("leader_changes_per_day", x.leader_changes_per_day),
        ] {
            push(who, name, value);
        }
        for (method, rates) in &x.grpc_methods {
            let sum = by_method.entry(method.as_str()).or_insert((0.0, 0.0));
            sum.0 += rates.requests_per_second;
            sum.1 += rates.failed_per_second;
        }
    }
    for (method, (requests, failed)) in by_method {
        push(method, "grpc_method_rate", Some(requests));
        push(method, "grpc_method_failed_rate", Some(failed));
    }
    push("", "probe_put_p99_ms", r.probes.put.p99_ms);
    push(
        "",
        "probe_linearizable_get_p99_ms",
        r.probes.linearizable_get.p99_ms,
    );
    push(
        "",
        "probe_serializable_get_p99_ms",
        r.probes.serializable_get.p99_ms,
    );
    push("", "revision_rate", r.revision_rate);
    push("", "proposals_committed_rate", r.proposals_committed_rate);
    push("", "leases", r.leases.map(|n| n as f64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_changes_count_over_the_day_across_restarts() {
        let mut w = MemberWindows::new(std::time::Duration::from_secs(300));
        let min = 60_000;
        // A first point alone counts nothing.
        assert_eq!(w.leader_changes_per_day("m", 0, 5.0), None);
        // Kept every 5 minutes; the newest value counts in between.
        assert_eq!(w.leader_changes_per_day("m", min, 6.0), Some((1.0, 60.0)));
        assert_eq!(
            w.leader_changes_per_day("m", 10 * min, 7.0),
            Some((2.0, 600.0))
        );
        // The member restarted: its counter starts again from zero.
        assert_eq!(
            w.leader_changes_per_day("m", 20 * min, 1.0),
            Some((3.0, 1200.0))
        );
        // A day later the first changes have left the day.
        let day = 24 * 60 * min;
        let (n, seconds) = w.leader_changes_per_day("m", day + 15 * min, 1.0).unwrap();
        assert_eq!(n, 0.0);
        assert!(seconds <= 86_400.0, "{seconds}");
    }

    #[test]
    fn method_rates_are_per_method_and_only_for_active_methods() {
        use crate::metrics::prom::Scrape;
        let page = |put: u32, range: u32, failed: u32| {
            let text = format!(
                "grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}} {put}\n\
                 grpc_server_handled_total{{grpc_code=\"Unavailable\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}} {failed}\n\
                 grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}} {range}\n\
                 grpc_server_started_total{{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}} 5\n\
                 grpc_server_handled_total{{grpc_code=\"Canceled\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}} 3\n"
            );
            MemberMetrics::from_scrape(&Scrape::parse_only(&text, MemberMetrics::wants).0)
        };
        let mut window = Window::new(std::time::Duration::from_secs(60));
        window.push(0, page(100, 50, 0).take_window_sample());
        window.push(10_000, page(150, 50, 10).take_window_sample());
        let mut m = page(150, 50, 10);
        m.fill_window(&window);
        let put = m.grpc_methods["Put"];
        assert_eq!(put.requests_per_second, 6.0); // 50 OK + 10 failed in 10 s
        assert_eq!(put.failed_per_second, 1.0);
        assert!(
            !m.grpc_methods.contains_key("Range"),
            "{:?}",
            m.grpc_methods
        );
        // Open streams: started minus finished (canceled included).
        assert_eq!(m.watch_streams, Some(2.0));
        assert_eq!(m.lease_streams, None);
    }
}
