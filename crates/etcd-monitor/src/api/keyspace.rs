//! `GET /api/v1/clusters/{name}/keyspace`: a keyspace scan, as `ctl
//! keyspace` runs it, inside the API's limits.
//!
//! A scan reads every key under the prefix and shows key names (Secrets'
//! names among them), so unlike other reads it needs the operator role, is
//! paced (at most [`MAX_RATE`] range requests per second, [`DEFAULT_RATE`]
//! unless asked), bounded in time ([`MAX_DURATION`]), takes the cluster's
//! maintenance slot (one heavy operation per cluster at a time, 409
//! otherwise) and is written to the audit log with its parameters.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::extract::{Cluster, Params};
use super::maintenance::{cluster_config, run_guarded};
use super::{ApiError, AppState};
use crate::connection::Dialer;
use crate::keyspace::{self, Consistency, Growth, KeyspaceReport, ScanOptions};
use crate::ops::CtlError;
use crate::store::StoredScan;

/// Range requests per second a scan through the API may send at most.
pub const MAX_RATE: f64 = 50.0;
/// The rate of a scan that does not ask for one.
pub const DEFAULT_RATE: f64 = 20.0;
/// The longest a scan through the API may run; it reports what it read.
pub const MAX_DURATION: Duration = Duration::from_secs(120);

/// Query parameters of a scan.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyspaceQuery {
    /// Keys under this prefix; default every key.
    pub prefix: Option<String>,
    /// Levels below the prefix (split at `/`), 0..=8; default 3.
    pub depth: Option<usize>,
    /// The largest keys to list, 0..=100; default 10.
    pub top: Option<usize>,
    /// Range requests per second, up to 50; default 20.
    pub rate: Option<f64>,
    /// Stop after this long (`30s`), up to 2m; default 2m.
    pub max_duration: Option<String>,
    /// `s` (serializable, default) or `l` (linearizable).
    pub consistency: Option<String>,
    /// Read from the leader instead of a follower.
    pub from_leader: Option<bool>,
}

impl KeyspaceQuery {
    fn options(&self) -> Result<ScanOptions, ApiError> {
        let depth = self.depth.unwrap_or(3);
        if depth > 8 {
            return Err(ApiError::bad_request(format!("depth {depth}: at most 8")));
        }
        let top = self.top.unwrap_or(10);
        if top > 100 {
            return Err(ApiError::bad_request(format!("top {top}: at most 100")));
        }
        let rate = self.rate.unwrap_or(DEFAULT_RATE);
        if !(rate > 0.0 && rate <= MAX_RATE) {
            return Err(ApiError::bad_request(format!(
                "rate {rate}: more than 0 and at most {MAX_RATE} requests per second"
            )));
        }
        let max_duration = match &self.max_duration {
            None => MAX_DURATION,
            Some(d) => {
                let d = humantime::parse_duration(d)
                    .map_err(|e| ApiError::bad_request(format!("max_duration {d:?}: {e}")))?;
                if d > MAX_DURATION || d.is_zero() {
                    return Err(ApiError::bad_request(format!(
                        "max_duration {}: more than 0 and at most 2m",
                        humantime::format_duration(d)
                    )));
                }
                d
            }
        };
        let consistency = match self.consistency.as_deref() {
            None | Some("s") => Consistency::Serializable,
            Some("l") => Consistency::Linearizable,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "consistency {other:?}: s or l"
                )));
            }
        };
        Ok(ScanOptions {
            prefix: self.prefix.clone().unwrap_or_default(),
            depth,
            top,
            rate: Some(rate),
            max_duration: Some(max_duration),
            consistency,
            ..ScanOptions::default()
        })
    }
}

/// `GET /api/v1/clusters/{name}/keyspace`: keys and bytes per prefix and
/// per Kubernetes resource, and the largest keys.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/keyspace", tag = "keyspace",
    description = "Scan the keyspace (paced, bounded, serializable from a follower by default): keys and bytes per prefix at each level, the largest keys, Kubernetes objects per resource and namespace. Needs operator; takes the cluster's maintenance slot; audited.",
    params(super::handlers::ClusterName, KeyspaceQuery), responses(
    (status = 200, description = "The scan (complete: false when max_duration stopped it)", body = KeyspaceReport),
    (status = 400, description = "A parameter out of range"),
    (status = 409, description = "Another maintenance operation or scan runs on this cluster"),
    (status = 422, description = "etcd refused the reads")))]
pub async fn scan(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Params(q): Params<KeyspaceQuery>,
) -> Result<Json<KeyspaceReport>, ApiError> {
    let opts = q.options()?;
    let cluster = cluster_config(&state, &c.name)?;
    let from_leader = q.from_leader.unwrap_or(false);
    let guard = state
        .maintenance
        .enter(&c.name, "keyspace scan", &caller.label())?;
    let store = state.monitor.store().clone();
    let source = format!("api:{}", caller.label());
    run_guarded(guard, async move {
        let dialer = Dialer::new(&cluster).map_err(CtlError::from)?;
        let urls = crate::connection::endpoints(&cluster).map_err(CtlError::from)?;
        let (client, endpoint, leader) =
            keyspace::choose_member(&dialer, &urls, from_leader).await?;
        let report = keyspace::scan(&client, &endpoint, leader, &opts, |_| {}).await?;
        // Stored for growth; a store that refuses writes costs the history, not the answer.
        if let Err(e) = store
            .record_keyspace_scan(&cluster.name, &source, &report)
            .await
        {
            tracing::warn!(cluster = %cluster.name, error = %e, "keyspace scan not stored");
        }
        Ok(Json(report))
    })
    .await
}

/// Query of the stored scans and of growth.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StoredQuery {
    /// Scans of this prefix; default every key's (`""`).
    pub prefix: Option<String>,
    /// Most scans (newest first), 1..=100; default 10 (scans only).
    pub limit: Option<i64>,
}

/// The stored scans.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredScans {
    /// Newest first.
    pub scans: Vec<StoredScan>,
}

/// `GET /api/v1/clusters/{name}/keyspace/scans`: stored scans (scheduled
/// and from the API), newest first.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/keyspace/scans", tag = "keyspace",
    description = "Stored keyspace scans of a prefix (keyspace.schedule and API scans), newest first. Needs operator.",
    params(super::handlers::ClusterName, StoredQuery), responses(
    (status = 200, description = "The scans", body = StoredScans),
    (status = 400, description = "A parameter out of range")))]
pub async fn scans(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<StoredQuery>,
) -> Result<Json<StoredScans>, ApiError> {
    let limit = super::handlers::limit(q.limit, 10, 100)?;
    let prefix = q.prefix.unwrap_or_default();
    let scans = state
        .monitor
        .store()
        .keyspace_scans(&c.name, Some(&prefix), limit)
        .await?;
    Ok(Json(StoredScans { scans }))
}

/// `GET /api/v1/clusters/{name}/keyspace/growth`: which prefixes grew
/// most between the two newest stored scans of a prefix, with bytes per hour.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/keyspace/growth", tag = "keyspace",
    description = "Growth between the two newest stored scans of a prefix: per prefix keys and bytes before and after, the change and bytes per hour, most gained first. Needs operator.",
    params(super::handlers::ClusterName, StoredQuery), responses(
    (status = 200, description = "The growth", body = Growth),
    (status = 404, description = "Fewer than two stored scans of that prefix")))]
pub async fn growth(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    Params(q): Params<StoredQuery>,
) -> Result<Json<Growth>, ApiError> {
    let prefix = q.prefix.unwrap_or_default();
    let scans = state
        .monitor
        .store()
        .keyspace_scans(&c.name, Some(&prefix), 2)
        .await?;
    let [after, before] = scans.as_slice() else {
        return Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "not_enough_scans",
            message: format!(
                "cluster {}: {} stored scan(s) of prefix {prefix:?}; growth needs two (keyspace.schedule, or GET .../keyspace twice)",
                c.name,
                scans.len()
            ),
        });
    };
    keyspace::growth(&before.report, &after.report)
        .map(Json)
        .map_err(ApiError::unprocessable)
}

/// Query of the hot writes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HotQuery {
    /// The window the rates cover, 1s to 1m; default 1m.
    pub window: Option<String>,
    /// Most buckets, busiest first, 1..=100; default 20.
    pub top: Option<i64>,
}

/// `GET /api/v1/clusters/{name}/keyspace/hot`: the busiest prefix buckets
/// by writes per second, from the hot-write watch (`keyspace.hot_writes`).
#[utoipa::path(get, path = "/api/v1/clusters/{name}/keyspace/hot", tag = "keyspace",
    description = "Puts, deletes and value bytes per second per prefix bucket over the last window (at most a minute), busiest first, counted by a watch when keyspace.hot_writes.enabled is set (otherwise enabled is false and buckets empty). Needs operator.",
    params(super::handlers::ClusterName, HotQuery), responses(
    (status = 200, description = "The busiest buckets", body = crate::monitor::hot_writes::HotReport),
    (status = 400, description = "A parameter out of range")))]
pub async fn hot(
    Cluster(c): Cluster,
    Params(q): Params<HotQuery>,
) -> Result<Json<crate::monitor::hot_writes::HotReport>, ApiError> {
    let window = match q.window.as_deref() {
        None => Duration::from_secs(60),
        Some(w) => crate::config::duration::parse(w)
            .map_err(|e| ApiError::bad_request(format!("window: {e}")))?,
    };
    if window < Duration::from_secs(1) || window > Duration::from_secs(keyspace::HISTORY_SECS) {
        return Err(ApiError::bad_request(format!(
            "window: {}: 1s to 1m (the hot-write history is a minute)",
            crate::config::duration::format(&window)
        )));
    }
    let top = super::handlers::limit(q.top, 20, 100)? as usize;
    Ok(Json(c.hot_writes.report(&c.name, window.as_secs(), top)))
}
