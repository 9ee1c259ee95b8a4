//! JSON endpoints: health and readiness, clusters, status, members, leader,
//! metrics (current, latency, history) and check history.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::extract::{Cluster, Params};
use super::{ApiError, AppState};
use crate::monitor::ClusterHandle;
use crate::store::unix_ms;

/// A `limit` parameter: `default` when absent, a 400 outside `1..=max`.
pub(super) fn limit<T>(given: Option<T>, default: T, max: T) -> Result<T, ApiError>
where
    T: PartialOrd + From<u8> + std::fmt::Display + Copy,
{
    let limit = given.unwrap_or(default);
    if limit < T::from(1) || limit > max {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}"
        )));
    }
    Ok(limit)
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// The monitor's version.
    pub version: &'static str,
    /// Seconds since the API started.
    pub uptime_seconds: u64,
}

/// `GET /health`: the process is up.
#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Every cluster checked once and the store takes writes.
    pub ready: bool,
    /// Clusters not checked yet.
    pub pending: Vec<String>,
    /// Why the history store refuses writes, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// `GET /ready`: every cluster has been checked at least once, and the
/// history store takes writes (while it does not, alerts are delivered
/// directly, but history is being lost: an orchestrator should know).
#[utoipa::path(get, path = "/ready", tag = "probes", responses(
    (status = 200, description = "Ready", body = Ready),
    (status = 503, description = "Not ready: clusters not checked yet, or the store refuses writes", body = Ready)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let pending: Vec<String> = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| {
            state
                .monitor
                .cluster(n)
                // Replicas: another replica checks the clusters this one does not own.
                .is_some_and(|c| c.ownership.owned() && c.health.borrow().is_none())
        })
        .cloned()
        .collect();
    let store = state
        .monitor
        .store()
        .write_failure()
        .map(|e| format!("the history store refuses writes: {e}"));
    let ready = pending.is_empty() && store.is_none();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Ready {
            ready,
            pending,
            store,
        }),
    )
}

/// Unknown routes.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// How the audit log names the caller: `token:ci`, `jwt:alice`, `anonymous`.
    pub principal: String,
    /// The token's name, the JWT's subject, the certificate's CN.
    pub name: String,
    /// `token`, `jwt`, `certificate`, `anonymous`.
    #[schema(value_type = String)]
    pub method: super::auth::AuthMethod,
    /// `viewer`, `operator`, `admin`; absent: only the open routes.
    #[schema(value_type = Option<String>)]
    pub role: Option<crate::config::Role>,
    /// Cluster globs it may access.
    pub clusters: Vec<String>,
    /// The state-changing routes it may call, and the reads that need more
    /// than viewer (the audit log, keyspace scans and hot writes):
    /// `POST /api/v1/...`, `GET /api/v1/audit`.
    pub allowed: Vec<String>,
}

/// `GET /api/v1/whoami`: the caller, its role and clusters, and the
/// state-changing routes and above-viewer reads it may call (the
/// dashboard shows what it may do).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "api",
    responses((status = 200, description = "The caller", body = WhoAmI)))]
pub async fn whoami(Extension(caller): Extension<Principal>) -> Json<WhoAmI> {
    let allowed: Vec<String> = super::route_table()
        .into_iter()
        .filter(|r| {
            super::access::is_state_changing(&r.method)
                || matches!(r.access, super::access::Access::Role(need) if need > crate::config::Role::Viewer)
        })
        .filter(|r| match r.access {
            super::access::Access::Role(need) => caller.has(need),
            _ => true,
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    Json(WhoAmI {
        principal: caller.label(),
        name: caller.name.clone(),
        method: caller.method,
        role: caller.role,
        clusters: caller.scope.globs().to_vec(),
        allowed,
    })
}

/// One cluster of `GET /api/v1/clusters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterSummary {
    /// Cluster name.
    pub name: String,
    /// Configured endpoints.
    pub endpoints: Vec<String>,
    /// The latest verdict; absent until the first check.
    pub verdict: Option<crate::health::Verdict>,
    /// The agreed leader (hex id).
    pub leader: Option<String>,
    /// Members seen.
    pub members: usize,
    /// Voting members.
    pub voting_members: usize,
    /// Voting members that answer.
    pub reachable_voting_members: usize,
    /// Findings of the latest check.
    pub findings: usize,
    /// When last checked (ms since epoch).
    pub checked_at_ms: Option<i64>,
    /// Replicas (`ha.*`): the replica that checks the cluster (the figures
    /// above are what it published when this one does not own it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `GET /api/v1/clusters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterList {
    /// The clusters the caller may see, in configuration order.
    pub clusters: Vec<ClusterSummary>,
}

/// `GET /api/v1/clusters`: the clusters the caller may see.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters",
    responses((status = 200, description = "Clusters", body = ClusterList)))]
pub async fn clusters(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Json<ClusterList> {
    let handles = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| caller.scope.allows(n))
        .filter_map(|n| state.monitor.cluster(n))
        .cloned()
        .collect::<Vec<_>>();
    let mut clusters = Vec::with_capacity(handles.len());
    for c in handles {
        let snap = c.health.borrow().clone();
        let endpoints = state
            .config
            .clusters
            .iter()
            .find(|x| x.name == c.name)
            .map(|x| x.endpoints.clone())
            .unwrap_or_default();
        let replicas = state.monitor.replicas();
        if snap.is_none() && !c.ownership.owned() {
            if let Some(p) = published(&state, &c.name).await {
                clusters.push(summary_of_published(c.name.clone(), endpoints, &p));
                continue;
            }
        }
        clusters.push(ClusterSummary {
            name: c.name.clone(),
            endpoints,
            verdict: snap.as_ref().map(|s| s.verdict),
            leader: snap.as_ref().and_then(|s| s.leader.clone()),
            members: snap.as_ref().map_or(0, |s| s.observation.members.len()),
            voting_members: snap.as_ref().map_or(0, |s| s.voting_members),
            reachable_voting_members: snap.as_ref().map_or(0, |s| s.reachable_voting_members),
            findings: snap.as_ref().map_or(0, |s| s.findings.len()),
            checked_at_ms: snap.as_ref().map(|s| unix_ms(s.observation.taken_at)),
            owner: (replicas.enabled && c.ownership.owned()).then(|| replicas.name.clone()),
        });
    }
    Json(ClusterList { clusters })
}

/// A cluster's status as the replica owning it published it (replicas,
/// `ha.*`), when this replica does not own it.
async fn published(state: &AppState, cluster: &str) -> Option<crate::store::PublishedStatus> {
    match state.monitor.store().published_status(cluster).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%cluster, error = %e, "cannot read the status published by the owning replica");
            None
        }
    }
}

fn summary_of_published(
    name: String,
    endpoints: Vec<String>,
    p: &crate::store::PublishedStatus,
) -> ClusterSummary {
    let s = &p.status;
    let count = |key: &str| s.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    ClusterSummary {
        name,
        endpoints,
        verdict: s
            .get("verdict")
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        leader: s.get("leader").and_then(|v| v.as_str()).map(str::to_string),
        members: s
            .pointer("/observation/members")
            .and_then(|m| m.as_array())
            .map_or(0, |m| m.len()),
        voting_members: count("voting_members"),
        reachable_voting_members: count("reachable_voting_members"),
        findings: s
            .get("findings")
            .and_then(|f| f.as_array())
            .map_or(0, |f| f.len()),
        checked_at_ms: Some(p.at_ms),
        owner: Some(p.replica.clone()),
    }
}

/// Answers with what the owning replica published (headers name it and
/// its age), for a cluster this replica does not own.
fn published_answer(p: crate::store::PublishedStatus, body: serde_json::Value) -> Response {
    let age = (crate::time::now_ms() - p.at_ms).max(0) / 1000;
    let mut r = Json(body).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&p.replica) {
        r.headers_mut().insert("x-etcd-monitor-owner", v);
    }
    r.headers_mut()
        .insert(axum::http::header::AGE, axum::http::HeaderValue::from(age));
    r
}

fn latest_health(
    c: &ClusterHandle,
) -> Result<std::sync::Arc<crate::health::HealthSnapshot>, ApiError> {
    c.health.borrow().clone().ok_or_else(|| {
        if c.ownership.owned() {
            ApiError::unavailable(format!("cluster {} has not been checked yet", c.name))
        } else {
            ApiError::unavailable(format!(
                "cluster {} is checked by another replica (ha): GET /api/v1/clusters/{}/status and /metrics/current answer here; GET /api/v1/replicas names the owner, whose API answers the rest",
                c.name, c.name
            ))
        }
    })
}

/// One member of `.../members`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// Member id (hex).
    pub id: String,
    /// Member name.
    pub name: String,
    /// The endpoint the monitor asks.
    pub endpoint: String,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// A raft learner.
    pub is_learner: bool,
    /// It answered Status.
    pub reachable: bool,
    /// It leads.
    pub is_leader: bool,
    /// Why it could not be asked.
    pub error: Option<String>,
    /// etcd version.
    pub version: Option<String>,
    /// Allocated database size, bytes.
    pub db_size: Option<i64>,
    /// Database bytes in use.
    pub db_size_in_use: Option<i64>,
    /// The quota (`--quota-backend-bytes`), bytes.
    pub quota_backend_bytes: Option<f64>,
    /// Raft term.
    pub raft_term: Option<u64>,
    /// Raft index.
    pub raft_index: Option<u64>,
    /// Raft applied index.
    pub raft_applied_index: Option<u64>,
    /// Status latency, ms.
    pub status_latency_ms: Option<f64>,
    /// Linearizable read latency through it, ms.
    pub linearizable_read_ms: Option<f64>,
    /// WAL fsync p99 over `monitoring.metrics_window`, seconds.
    pub wal_fsync_p99_seconds: Option<f64>,
    /// Backend commit p99 over `monitoring.metrics_window`, seconds.
    pub backend_commit_p99_seconds: Option<f64>,
}

/// `GET .../members`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Members {
    /// Cluster name.
    pub cluster: String,
    /// When checked (ms since epoch).
    pub checked_at_ms: i64,
    /// The members, in member-list order.
    pub members: Vec<MemberView>,
}

fn members_of(c: &ClusterHandle) -> Result<Json<Members>, ApiError> {
    let s = latest_health(c)?;
    let metrics = c.metrics.borrow().clone();
    let members = s
        .observation
        .members
        .iter()
        .map(|m| {
            let st = m.status.as_ref();
            let scraped = metrics
                .as_ref()
                .and_then(|r| r.members.iter().find(|e| e.endpoint == m.endpoint))
                .and_then(|e| e.metrics.clone());
            MemberView {
                id: format!("{:x}", m.id),
                name: m.name.clone(),
                endpoint: m.endpoint.clone(),
                client_urls: m.client_urls.clone(),
                peer_urls: m.peer_urls.clone(),
                is_learner: m.is_learner,
                reachable: m.reachable(),
                is_leader: st.is_some_and(|x| x.leader == m.id && m.id != 0),
                error: m.error.clone(),
                version: st.map(|x| x.version.clone()),
                db_size: st.map(|x| x.db_size),
                db_size_in_use: st.map(|x| x.db_size_in_use),
                quota_backend_bytes: scraped.as_ref().and_then(|x| x.quota_backend_bytes),
                raft_term: st.map(|x| x.raft_term),
                raft_index: st.map(|x| x.raft_index),
                raft_applied_index: st.map(|x| x.raft_applied_index),
                status_latency_ms: m.status_latency_ms,
                linearizable_read_ms: m.linearizable_read_ms,
                wal_fsync_p99_seconds: scraped.as_ref().and_then(|x| x.wal_fsync_p99),
                backend_commit_p99_seconds: scraped.as_ref().and_then(|x| x.backend_commit_p99),
            }
        })
        .collect();
    Ok(Json(Members {
        cluster: c.name.clone(),
        checked_at_ms: unix_ms(s.observation.taken_at),
        members,
    }))
}

/// Query of `leader`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaderQuery {
    /// History since (ms since epoch or a duration ago such as `24h`); default 24h.
    pub since: Option<String>,
}

/// The leader now.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderNow {
    /// Member id (hex).
    pub id: String,
    /// Member name.
    pub name: Option<String>,
    /// Raft term.
    pub term: Option<u64>,
}

/// `GET .../leader`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Leader {
    /// Cluster name.
    pub cluster: String,
    /// The agreed leader, if the members agree on one.
    pub leader: Option<LeaderNow>,
    /// Start of the change history (ms since epoch).
    pub since_ms: i64,
    /// Leader changes since then, oldest first.
    pub changes: Vec<crate::store::LeaderChange>,
}

async fn leader_of(
    state: &AppState,
    c: &ClusterHandle,
    q: LeaderQuery,
) -> Result<Json<Leader>, ApiError> {
    let now = unix_ms(SystemTime::now());
    let since = parse_time(q.since.as_deref(), now - 24 * 3_600_000, now, "since")?;
    let s = c.health.borrow().clone();
    let changes = state.monitor.store().leader_changes(&c.name, since).await?;
    let leader = s.as_ref().and_then(|s| {
        let id = s.leader.clone()?;
        let m = s
            .observation
            .members
            .iter()
            .find(|m| format!("{:x}", m.id) == id);
        Some(LeaderNow {
            id,
            name: m.map(|m| m.label()),
            term: m.and_then(|m| m.status.as_ref()).map(|x| x.raft_term),
        })
    });
    Ok(Json(Leader {
        cluster: c.name.clone(),
        leader,
        since_ms: since,
        changes,
    }))
}

/// One member's latencies as the health check measured them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberLatency {
    /// Member name (or hex id).
    pub name: String,
    /// The endpoint asked.
    pub endpoint: String,
    /// Status call, ms.
    pub status_ms: Option<f64>,
    /// Linearizable read through it, ms.
    pub linearizable_read_ms: Option<f64>,
}

/// `GET .../metrics/latency`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Latency {
    /// Cluster name.
    pub cluster: String,
    /// The probes' rolling latency, when a metrics round ran.
    pub probes: Option<crate::monitor::ProbeReport>,
    /// Per member, from the latest health check.
    pub members: Vec<MemberLatency>,
}

fn latency_of(c: &ClusterHandle) -> Result<Json<Latency>, ApiError> {
    let r = c.metrics.borrow().clone();
    let s = c.health.borrow().clone();
    if r.is_none() && s.is_none() {
        return Err(ApiError::unavailable(format!(
            "no data for cluster {} yet",
            c.name
        )));
    }
    let members = s
        .map(|s| {
            s.observation
                .members
                .iter()
                .map(|m| MemberLatency {
                    name: m.label(),
                    endpoint: m.endpoint.clone(),
                    status_ms: m.status_latency_ms,
                    linearizable_read_ms: m.linearizable_read_ms,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(Latency {
        cluster: c.name.clone(),
        probes: r.map(|r| r.probes.clone()),
        members,
    }))
}

/// Query of `metrics/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Metric name (see docs/monitoring.md); default `probe_put_p99_ms`.
    pub metric: Option<String>,
    /// Start: ms since epoch, or a duration ago (`1h`); default 1h ago.
    pub from: Option<String>,
    /// End: ms since epoch, or a duration ago; default now.
    pub to: Option<String>,
    /// Bucket width (`60s`); default: raw samples, or buckets wide enough
    /// that a member's series has at most [`MAX_POINTS`] points.
    pub step: Option<String>,
}

/// Most points of one member's series in one answer: a week of raw samples
/// would otherwise be tens of megabytes. A narrower `step` is widened.
pub const MAX_POINTS: i64 = 2000;

/// Stored metric names.
use crate::monitor::STORED_METRICS as METRIC_NAMES;

/// One member's series (`member` empty: a cluster-wide metric).
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// Member name, or empty.
    pub member: String,
    /// The gRPC method, for `grpc_method_rate` and `grpc_method_failed_rate`
    /// (one series per method, summed over the members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `[ms since epoch, value]` pairs, oldest first.
    pub points: Vec<[f64; 2]>,
}

/// `GET .../metrics/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsHistory {
    /// Cluster name.
    pub cluster: String,
    /// The metric.
    pub metric: String,
    /// Start (ms since epoch).
    pub from_ms: i64,
    /// End (ms since epoch).
    pub to_ms: i64,
    /// Bucket width actually used, ms.
    pub step_ms: i64,
    /// One series per member.
    pub series: Vec<Series>,
}

async fn metrics_history_of(
    state: &AppState,
    c: &ClusterHandle,
    q: HistoryQuery,
) -> Result<Json<MetricsHistory>, ApiError> {
    let now = unix_ms(SystemTime::now());
    let metric = q.metric.unwrap_or_else(|| "probe_put_p99_ms".into());
    if !METRIC_NAMES.contains(&metric.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown metric {metric:?}; known: {}",
            METRIC_NAMES.join(", ")
        )));
    }
    let from = parse_time(q.from.as_deref(), now - 3_600_000, now, "from")?;
    let to = parse_time(q.to.as_deref(), now, now, "to")?;
    if from > to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    let step = match q.step.as_deref() {
        None | Some("") => 0,
        Some(s) => crate::config::duration::parse(s)
            .map_err(|e| ApiError::bad_request(format!("step: {e}")))?
            .as_millis() as i64,
    };
    // Raw samples are 1 ms buckets: widen so at most MAX_POINTS come back.
    let min_step = ((to - from) / MAX_POINTS + 1).max(1);
    let step = if step.max(1) < min_step {
        min_step
    } else {
        step
    };
    let points = state
        .monitor
        .store()
        .metric_series(&c.name, &metric, from, to, step)
        .await?;
    let mut series: std::collections::BTreeMap<String, Vec<[f64; 2]>> =
        std::collections::BTreeMap::new();
    for p in points {
        series
            .entry(p.member)
            .or_default()
            .push([p.at_ms as f64, p.value]);
    }
    Ok(Json(MetricsHistory {
        cluster: c.name.clone(),
        metric: metric.clone(),
        from_ms: from,
        to_ms: to,
        step_ms: step,
        series: series
            .into_iter()
            .map(|(key, points)| {
                if crate::monitor::BY_METHOD_METRICS.contains(&metric.as_str()) {
                    Series {
                        member: String::new(),
                        method: Some(key),
                        points,
                    }
                } else {
                    Series {
                        member: key,
                        method: None,
                        points,
                    }
                }
            })
            .collect(),
    }))
}

/// Query of `history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChecksQuery {
    /// Start (ms since epoch or a duration ago); default 1h ago.
    pub from: Option<String>,
    /// End; default now.
    pub to: Option<String>,
    /// Most rows (default 500, at most 10000).
    pub limit: Option<i64>,
}

/// One stored health check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// When (ms since epoch).
    pub at_ms: i64,
    /// `healthy`, `degraded`, `unavailable`.
    pub verdict: String,
    /// Leader id (hex).
    pub leader: Option<String>,
    /// Voting members that answered.
    pub reachable: i64,
    /// Voting members.
    pub voting: i64,
    /// Duration of the check, ms.
    pub duration_ms: f64,
}

/// `GET .../history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// Cluster name.
    pub cluster: String,
    /// Start (ms since epoch).
    pub from_ms: i64,
    /// End (ms since epoch).
    pub to_ms: i64,
    /// Checks, newest first.
    pub checks: Vec<Check>,
    /// Findings of those checks, newest first.
    pub findings: Vec<crate::store::FindingRow>,
}

async fn history_of(
    state: &AppState,
    c: &ClusterHandle,
    q: ChecksQuery,
) -> Result<Json<Checks>, ApiError> {
    let now = unix_ms(SystemTime::now());
    let from = parse_time(q.from.as_deref(), now - 3_600_000, now, "from")?;
    let to = parse_time(q.to.as_deref(), now, now, "to")?;
    let limit = limit(q.limit, 500, 10_000)?;
    let checks = state
        .monitor
        .store()
        .snapshots(&c.name, from, to, limit)
        .await?
        .into_iter()
        .map(|r| Check {
            at_ms: r.at_ms,
            verdict: r.verdict,
            leader: r.leader,
            reachable: r.reachable,
            voting: r.voting,
            duration_ms: r.duration_ms,
        })
        .collect();
    let findings = state
        .monitor
        .store()
        .findings(&c.name, from, to, limit)
        .await?;
    Ok(Json(Checks {
        cluster: c.name.clone(),
        from_ms: from,
        to_ms: to,
        checks,
        findings,
    }))
}

/// Reads a time parameter: ms since epoch, `now`, or a duration ago (`1h`, `-1h`).
pub fn parse_time(v: Option<&str>, default: i64, now: i64, name: &str) -> Result<i64, ApiError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    if v == "now" {
        return Ok(now);
    }
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    crate::config::duration::parse(v.trim_start_matches('-'))
        .map(|d: Duration| now - d.as_millis() as i64)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name}={v:?}: use milliseconds since the epoch, `now`, or a duration ago like 1h"
            ))
        })
}

/// `GET .../status`: the latest verdict with findings and evidence.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/status", tag = "clusters", params(ClusterName),
    responses((status = 200, description = "The latest health snapshot", body = crate::health::HealthSnapshot),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody),
        (status = 503, description = "Not checked yet", body = super::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Cluster(c): Cluster,
) -> Result<Response, ApiError> {
    if c.health.borrow().is_none() && !c.ownership.owned() {
        if let Some(p) = published(&state, &c.name).await {
            let body = p.status.clone();
            return Ok(published_answer(p, body));
        }
    }
    Ok(Json(latest_health(&c)?.as_ref().clone()).into_response())
}

/// `GET .../members`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/members", tag = "clusters", params(ClusterName),
    responses((status = 200, description = "Members with status and key figures", body = Members),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody),
        (status = 503, description = "Not checked yet", body = super::ErrorBody)))]
pub async fn members(Cluster(c): Cluster) -> Result<Json<Members>, ApiError> {
    members_of(&c)
}

/// `GET .../leader`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/leader", tag = "clusters", params(ClusterName, LeaderQuery),
    responses((status = 200, description = "The leader and its changes", body = Leader),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody)))]
pub async fn leader(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<LeaderQuery>,
) -> Result<Json<Leader>, ApiError> {
    leader_of(&state, &c, q).await
}

/// `GET .../metrics/current`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/metrics/current", tag = "metrics", params(ClusterName),
    responses((status = 200, description = "The latest metrics round", body = crate::monitor::MetricsRound),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody),
        (status = 503, description = "No metrics round yet", body = super::ErrorBody)))]
pub async fn metrics_current(
    State(state): State<AppState>,
    Cluster(c): Cluster,
) -> Result<Response, ApiError> {
    if c.metrics.borrow().is_none() && !c.ownership.owned() {
        if let Some(mut p) = published(&state, &c.name).await {
            if let Some(body) = p.metrics.take() {
                return Ok(published_answer(p, body));
            }
        }
    }
    let r = c.metrics.borrow().clone().ok_or_else(|| {
        ApiError::unavailable(format!("no metrics round for cluster {} yet", c.name))
    })?;
    Ok(Json(r.as_ref().clone()).into_response())
}

/// `GET .../metrics/latency`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/metrics/latency", tag = "metrics", params(ClusterName),
    responses((status = 200, description = "Probe and member latencies", body = Latency),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody),
        (status = 503, description = "No data yet", body = super::ErrorBody)))]
pub async fn metrics_latency(Cluster(c): Cluster) -> Result<Json<Latency>, ApiError> {
    latency_of(&c)
}

/// `GET .../metrics/history`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/metrics/history", tag = "metrics", params(ClusterName, HistoryQuery),
    responses((status = 200, description = "Stored samples of one metric", body = MetricsHistory),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody)))]
pub async fn metrics_history(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<MetricsHistory>, ApiError> {
    metrics_history_of(&state, &c, q).await
}

/// `GET .../history`.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/history", operation_id = "health_history", tag = "clusters", params(ClusterName, ChecksQuery),
    responses((status = 200, description = "Stored checks and findings", body = Checks),
        (status = 400, description = "Bad parameters", body = super::ErrorBody),
        (status = 404, description = "Unknown cluster", body = super::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<ChecksQuery>,
) -> Result<Json<Checks>, ApiError> {
    history_of(&state, &c, q).await
}

/// The `{name}` of `/api/v1/clusters/{name}/...` (the same routes under
/// `/api/v1/cluster/...` serve the first configured cluster).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path parameter to the OpenAPI document only
pub struct ClusterName {
    /// Cluster name, as configured.
    name: String,
}
