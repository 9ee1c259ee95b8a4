//! Maintenance POSTs: defrag, compact, snapshot, alarm disarm, move-leader,
//! through the same library functions as `etcd-monitor ctl` (and so with
//! the same safety rules: defrag checks health first and visits the leader
//! last).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::config::ClusterConfig;
use crate::ctl::endpoint::{self, Dialer};
use crate::ctl::error::CtlError;
use crate::ctl::maintenance::{self, DefragOptions};

type ApiResult = Result<Json<Value>, ApiError>;

pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| match e {
        JsonRejection::JsonDataError(e) => {
            ApiError::unprocessable(format!("bad request body: {}", e.body_text()))
        }
        other => ApiError::bad_request(format!("bad request body: {}", other.body_text())),
    })
}

impl From<CtlError> for ApiError {
    fn from(e: CtlError) -> Self {
        let message = e.to_string();
        match e {
            CtlError::Invalid(_) | CtlError::UnknownMember { .. } => {
                ApiError::unprocessable(message)
            }
            CtlError::Unsafe(_) | CtlError::Refused(_) => ApiError {
                status: axum::http::StatusCode::CONFLICT,
                code: "unsafe",
                message,
            },
            CtlError::Connect(_) => ApiError::unavailable(message),
            CtlError::Io { .. } => ApiError::internal(message),
            _ => ApiError::etcd(message),
        }
    }
}

fn cluster_config(state: &AppState, name: &str) -> Result<ClusterConfig, ApiError> {
    state.cluster(name)?;
    state
        .config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| ApiError::unknown_cluster(name, state.monitor.cluster_names()))
}

async fn connect(cluster: &ClusterConfig) -> Result<(Dialer, etcd_client::Client), ApiError> {
    let dialer = Dialer::new(cluster)?;
    let urls = crate::connection::endpoints(cluster)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let client = endpoint::first_voting_member(&dialer, &urls)
        .await
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "cluster {}: no voting member answers (tried {})",
                cluster.name,
                urls.join(", ")
            ))
        })?;
    Ok((dialer, client))
}

/// Body of `maintenance/defrag`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DefragBody {
    /// Only members that match, e.g. `min-size=100MB,min-free-ratio=0.3`.
    pub rule: Option<String>,
    /// Pause between members (default 5s).
    pub pause: Option<String>,
    /// Move leadership away before defragmenting the leader.
    pub move_leader: bool,
    /// Plan only.
    pub dry_run: bool,
    /// Limit to these members' client URLs.
    pub endpoints: Vec<String>,
}

/// `POST /api/v1/clusters/{name}/maintenance/defrag`.
pub async fn defrag(
    State(state): State<AppState>,
    Path(name): Path<String>,
    b: Result<Json<DefragBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let cluster = cluster_config(&state, &name)?;
    let mut opts = DefragOptions {
        move_leader: b.move_leader,
        dry_run: b.dry_run,
        endpoints: b.endpoints,
        ..DefragOptions::default()
    };
    if let Some(rule) = &b.rule {
        opts.rule = Some(
            rule.parse()
                .map_err(|e: String| ApiError::unprocessable(format!("rule: {e}")))?,
        );
    }
    if let Some(p) = &b.pause {
        opts.pause = crate::config::duration::parse(p)
            .map_err(|e| ApiError::unprocessable(format!("pause: {e}")))?;
        if opts.pause > Duration::from_secs(600) {
            return Err(ApiError::unprocessable("pause: at most 10m"));
        }
    }
    let (dialer, mut client) = connect(&cluster).await?;
    let reports = maintenance::defrag_cluster(&mut client, &dialer, &opts, |_| {}).await?;
    Ok(Json(json!({ "cluster": name, "members": reports })))
}

/// Body of `maintenance/compact`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CompactBody {
    /// Revision to compact to; default: the current revision.
    pub revision: Option<i64>,
    /// Wait until the space is reclaimed.
    pub physical: bool,
}

/// `POST /api/v1/clusters/{name}/maintenance/compact`.
pub async fn compact(
    State(state): State<AppState>,
    Path(name): Path<String>,
    b: Result<Json<CompactBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let cluster = cluster_config(&state, &name)?;
    let (_, mut client) = connect(&cluster).await?;
    let revision = match b.revision {
        Some(r) => r,
        None => client
            .get(
                "health",
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| {
                ApiError::etcd(format!(
                    "reading the current revision: {}",
                    crate::connection::cause_chain(&e)
                ))
            })?
            .header()
            .map(|h| h.revision())
            .unwrap_or(0),
    };
    let result = maintenance::compact(&mut client, revision, b.physical).await?;
    Ok(Json(
        json!({ "cluster": name, "revision": result.revision, "physical": result.physical }),
    ))
}

/// Body of `maintenance/snapshot`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotBody {
    /// File name inside `api.snapshot_dir` (no directories); default
    /// `<cluster>-<unix ms>.db`.
    pub name: Option<String>,
}

/// `POST /api/v1/clusters/{name}/maintenance/snapshot`: saves a verified
/// snapshot into `api.snapshot_dir` on the monitor's host.
pub async fn snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
    b: Result<Json<SnapshotBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let cluster = cluster_config(&state, &name)?;
    let file = b.name.unwrap_or_else(|| {
        format!(
            "{name}-{}.db",
            crate::store::unix_ms(std::time::SystemTime::now())
        )
    });
    if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
        return Err(ApiError::unprocessable(format!(
            "name {file:?}: a plain file name, without directories"
        )));
    }
    let dir = &state.config.api.snapshot_dir;
    tokio::fs::create_dir_all(dir).await.map_err(|e| {
        ApiError::internal(format!(
            "cannot create api.snapshot_dir {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(&file);
    if path.exists() {
        return Err(ApiError {
            status: axum::http::StatusCode::CONFLICT,
            code: "exists",
            message: format!("{} exists already", path.display()),
        });
    }
    let (_, mut client) = connect(&cluster).await?;
    let urls = crate::connection::endpoints(&cluster).unwrap_or_default();
    let info = maintenance::snapshot_save(
        &mut client,
        urls.first().map(String::as_str).unwrap_or(""),
        &path,
    )
    .await?;
    Ok(Json(
        json!({ "cluster": name, "path": info.path, "size": info.size, "sha256": info.sha256, "took_ms": info.took_ms as u64 }),
    ))
}

/// `POST /api/v1/clusters/{name}/maintenance/alarm-disarm`.
pub async fn alarm_disarm(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let cluster = cluster_config(&state, &name)?;
    let (_, mut client) = connect(&cluster).await?;
    let disarmed = maintenance::alarm_disarm(&mut client).await?;
    let list: Vec<Value> = disarmed
        .iter()
        .map(|a| json!({ "member_id": format!("{:x}", a.member_id), "alarm": a.alarm }))
        .collect();
    Ok(Json(json!({ "cluster": name, "disarmed": list })))
}

/// Body of `maintenance/move-leader`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveLeaderBody {
    /// The member id (hex) that should lead.
    pub target: String,
}

/// `POST /api/v1/clusters/{name}/maintenance/move-leader`.
pub async fn move_leader(
    State(state): State<AppState>,
    Path(name): Path<String>,
    b: Result<Json<MoveLeaderBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let target = u64::from_str_radix(b.target.trim_start_matches("0x"), 16).map_err(|_| {
        ApiError::unprocessable(format!("target {:?} is not a hex member id", b.target))
    })?;
    let cluster = cluster_config(&state, &name)?;
    let (dialer, mut client) = connect(&cluster).await?;
    let (from, to) = maintenance::move_leader(&mut client, &dialer, target).await?;
    Ok(Json(
        json!({ "cluster": name, "from": format!("{from:x}"), "to": format!("{to:x}") }),
    ))
}

fn default_name(state: &AppState) -> Result<Path<String>, ApiError> {
    Ok(Path(state.default_cluster()?.name.clone()))
}

/// Default-cluster `maintenance/defrag`.
pub async fn default_defrag(
    State(state): State<AppState>,
    b: Result<Json<DefragBody>, JsonRejection>,
) -> ApiResult {
    let name = default_name(&state)?;
    defrag(State(state), name, b).await
}

/// Default-cluster `maintenance/compact`.
pub async fn default_compact(
    State(state): State<AppState>,
    b: Result<Json<CompactBody>, JsonRejection>,
) -> ApiResult {
    let name = default_name(&state)?;
    compact(State(state), name, b).await
}

/// Default-cluster `maintenance/snapshot`.
pub async fn default_snapshot(
    State(state): State<AppState>,
    b: Result<Json<SnapshotBody>, JsonRejection>,
) -> ApiResult {
    let name = default_name(&state)?;
    snapshot(State(state), name, b).await
}

/// Default-cluster `maintenance/alarm-disarm`.
pub async fn default_alarm_disarm(State(state): State<AppState>) -> ApiResult {
    let name = default_name(&state)?;
    alarm_disarm(State(state), name).await
}

/// Default-cluster `maintenance/move-leader`.
pub async fn default_move_leader(
    State(state): State<AppState>,
    b: Result<Json<MoveLeaderBody>, JsonRejection>,
) -> ApiResult {
    let name = default_name(&state)?;
    move_leader(State(state), name, b).await
}
