//! JSON endpoints: health and readiness, clusters, status, members, leader,
//! metrics (current, latency, history) and check history.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Principal;
use super::extract::{Cluster, Params};
use super::{ApiError, AppState};
use crate::monitor::ClusterHandle;
use crate::store::unix_ms;

type ApiResult = Result<Json<Value>, ApiError>;

fn to_json<T: Serialize>(v: &T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
}

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

/// `GET /health`: the process is up.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(
        json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_seconds": state.started.elapsed().as_secs() }),
    )
}

/// `GET /ready`: every cluster has been checked at least once, and the
/// history store takes writes (while it does not, alerts are delivered
/// directly, but history is being lost: an orchestrator should know).
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let pending: Vec<&String> = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| {
            state
                .monitor
                .cluster(n)
                .is_some_and(|c| c.health.borrow().is_none())
        })
        .collect();
    let store = state.monitor.store().write_failure();
    let ready = pending.is_empty() && store.is_none();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ready": ready, "pending": pending });
    if let Some(e) = store {
        body["store"] = json!(format!("the history store refuses writes: {e}"));
    }
    (code, Json(body))
}

/// Unknown routes.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// `GET /api/v1/whoami`: the caller, its role and clusters, and the
/// state-changing routes it may call (the dashboard shows what it may do).
pub async fn whoami(Extension(caller): Extension<Principal>) -> ApiResult {
    let allowed: Vec<String> = super::route_table()
        .into_iter()
        .filter(|r| super::access::is_state_changing(&r.method) || r.path == "/api/v1/audit")
        .filter(|r| match r.access {
            super::access::Access::Role(need) => caller.has(need),
            _ => true,
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    Ok(Json(json!({
        "principal": caller.label(),
        "name": caller.name,
        "method": caller.method,
        "role": caller.role,
        "clusters": caller.scope.globs(),
        "allowed": allowed,
    })))
}

/// `GET /api/v1/clusters`: the clusters the caller may see.
pub async fn clusters(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> ApiResult {
    let list: Vec<Value> = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| caller.scope.allows(n))
        .filter_map(|n| state.monitor.cluster(n))
        .map(|c| {
            let snap = c.health.borrow().clone();
            let cfg = state.config.clusters.iter().find(|x| x.name == c.name);
            match snap {
                Some(s) => json!({
                    "name": c.name,
                    "endpoints": cfg.map(|x| x.endpoints.clone()).unwrap_or_default(),
                    "verdict": s.verdict,
                    "leader": s.leader,
                    "members": s.observation.members.len(),
                    "voting_members": s.voting_members,
                    "reachable_voting_members": s.reachable_voting_members,
                    "findings": s.findings.len(),
                    "checked_at_ms": unix_ms(s.observation.taken_at),
                }),
                None => json!({
                    "name": c.name,
                    "endpoints": cfg.map(|x| x.endpoints.clone()).unwrap_or_default(),
                    "verdict": null, "leader": null, "members": 0, "voting_members": 0,
                    "reachable_voting_members": 0, "findings": 0, "checked_at_ms": null,
                }),
            }
        })
        .collect();
    Ok(Json(json!({ "clusters": list })))
}

fn latest_health(
    c: &ClusterHandle,
) -> Result<std::sync::Arc<crate::health::HealthSnapshot>, ApiError> {
    c.health.borrow().clone().ok_or_else(|| {
        ApiError::unavailable(format!("cluster {} has not been checked yet", c.name))
    })
}

fn status_of(c: &ClusterHandle) -> ApiResult {
    to_json(&*latest_health(c)?)
}

fn members_of(c: &ClusterHandle) -> ApiResult {
    let s = latest_health(c)?;
    let metrics = c.metrics.borrow().clone();
    let members: Vec<Value> = s
        .observation
        .members
        .iter()
        .map(|m| {
            let st = m.status.as_ref();
            let scraped = metrics
                .as_ref()
                .and_then(|r| r.members.iter().find(|e| e.endpoint == m.endpoint))
                .and_then(|e| e.metrics.clone());
            json!({
                "id": format!("{:x}", m.id),
                "name": m.name,
                "endpoint": m.endpoint,
                "client_urls": m.client_urls,
                "peer_urls": m.peer_urls,
                "is_learner": m.is_learner,
                "reachable": m.reachable(),
                "is_leader": st.is_some_and(|x| x.leader == m.id && m.id != 0),
                "error": m.error,
                "version": st.map(|x| x.version.clone()),
                "db_size": st.map(|x| x.db_size),
                "db_size_in_use": st.map(|x| x.db_size_in_use),
                "quota_backend_bytes": scraped.as_ref().and_then(|x| x.quota_backend_bytes),
                "raft_term": st.map(|x| x.raft_term),
                "raft_index": st.map(|x| x.raft_index),
                "raft_applied_index": st.map(|x| x.raft_applied_index),
                "status_latency_ms": m.status_latency_ms,
                "linearizable_read_ms": m.linearizable_read_ms,
                "wal_fsync_p99_seconds": scraped.as_ref().and_then(|x| x.wal_fsync_p99),
                "backend_commit_p99_seconds": scraped.as_ref().and_then(|x| x.backend_commit_p99),
            })
        })
        .collect();
    Ok(Json(
        json!({ "cluster": c.name, "checked_at_ms": unix_ms(s.observation.taken_at), "members": members }),
    ))
}

/// Query of `leader`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderQuery {
    /// History since (ms since epoch or a duration ago such as `24h`); default 24h.
    pub since: Option<String>,
}

async fn leader_of(state: &AppState, c: &ClusterHandle, q: LeaderQuery) -> ApiResult {
    let now = unix_ms(SystemTime::now());
    let since = parse_time(q.since.as_deref(), now - 24 * 3_600_000, now, "since")?;
    let s = c.health.borrow().clone();
    let changes = state.monitor.store().leader_changes(&c.name, since).await?;
    let (id, name, term) = match &s {
        Some(s) => {
            let leader = s.leader.clone();
            let m = s
                .observation
                .members
                .iter()
                .find(|m| Some(format!("{:x}", m.id)) == leader);
            (
                leader,
                m.map(|m| m.label()),
                m.and_then(|m| m.status.as_ref()).map(|x| x.raft_term),
            )
        }
        None => (None, None, None),
    };
    Ok(Json(json!({
        "cluster": c.name,
        "leader": id.map(|id| json!({ "id": id, "name": name, "term": term })),
        "since_ms": since,
        "changes": changes,
    })))
}

fn metrics_current_of(c: &ClusterHandle) -> ApiResult {
    let r = c.metrics.borrow().clone().ok_or_else(|| {
        ApiError::unavailable(format!("no metrics round for cluster {} yet", c.name))
    })?;
    to_json(&*r)
}

fn latency_of(c: &ClusterHandle) -> ApiResult {
    let r = c.metrics.borrow().clone();
    let s = c.health.borrow().clone();
    if r.is_none() && s.is_none() {
        return Err(ApiError::unavailable(format!(
            "no data for cluster {} yet",
            c.name
        )));
    }
    let members: Vec<Value> = s
        .map(|s| {
            s.observation
                .members
                .iter()
                .map(|m| json!({ "name": m.label(), "endpoint": m.endpoint, "status_ms": m.status_latency_ms, "linearizable_read_ms": m.linearizable_read_ms }))
                .collect()
        })
        .unwrap_or_default();
    let probes = r
        .map(|r| serde_json::to_value(&r.probes).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(Json(
        json!({ "cluster": c.name, "probes": probes, "members": members }),
    ))
}

/// Query of `metrics/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

async fn metrics_history_of(state: &AppState, c: &ClusterHandle, q: HistoryQuery) -> ApiResult {
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
    let series: Vec<Value> = series
        .into_iter()
        .map(|(member, points)| json!({ "member": member, "points": points }))
        .collect();
    Ok(Json(
        json!({ "cluster": c.name, "metric": metric, "from_ms": from, "to_ms": to, "step_ms": step, "series": series }),
    ))
}

/// Query of `history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksQuery {
    /// Start (ms since epoch or a duration ago); default 1h ago.
    pub from: Option<String>,
    /// End; default now.
    pub to: Option<String>,
    /// Most rows (default 500, at most 10000).
    pub limit: Option<i64>,
}

async fn history_of(state: &AppState, c: &ClusterHandle, q: ChecksQuery) -> ApiResult {
    let now = unix_ms(SystemTime::now());
    let from = parse_time(q.from.as_deref(), now - 3_600_000, now, "from")?;
    let to = parse_time(q.to.as_deref(), now, now, "to")?;
    let limit = limit(q.limit, 500, 10_000)?;
    let checks = state
        .monitor
        .store()
        .snapshots(&c.name, from, to, limit)
        .await?;
    let checks: Vec<Value> = checks
        .into_iter()
        .map(|r| json!({ "at_ms": r.at_ms, "verdict": r.verdict, "leader": r.leader, "reachable": r.reachable, "voting": r.voting, "duration_ms": r.duration_ms }))
        .collect();
    let findings = state
        .monitor
        .store()
        .findings(&c.name, from, to, limit)
        .await?;
    Ok(Json(
        json!({ "cluster": c.name, "from_ms": from, "to_ms": to, "checks": checks, "findings": findings }),
    ))
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

/// `GET .../status`.
pub async fn status(Cluster(c): Cluster) -> ApiResult {
    status_of(&c)
}

/// `GET .../members`.
pub async fn members(Cluster(c): Cluster) -> ApiResult {
    members_of(&c)
}

/// `GET .../leader`.
pub async fn leader(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<LeaderQuery>,
) -> ApiResult {
    leader_of(&state, &c, q).await
}

/// `GET .../metrics/current`.
pub async fn metrics_current(Cluster(c): Cluster) -> ApiResult {
    metrics_current_of(&c)
}

/// `GET .../metrics/latency`.
pub async fn metrics_latency(Cluster(c): Cluster) -> ApiResult {
    latency_of(&c)
}

/// `GET .../metrics/history`.
pub async fn metrics_history(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<HistoryQuery>,
) -> ApiResult {
    metrics_history_of(&state, &c, q).await
}

/// `GET .../history`.
pub async fn history(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<ChecksQuery>,
) -> ApiResult {
    history_of(&state, &c, q).await
}
