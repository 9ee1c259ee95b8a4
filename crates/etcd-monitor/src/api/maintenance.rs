//! Maintenance POSTs: defrag, compact, snapshot, alarm disarm, move-leader,
//! through the same library functions as `etcd-monitor ctl` (and so with
//! the same safety rules: defrag checks health first and visits the leader
//! last).
//!
//! On top of those, for an API anyone on the network may reach:
//! - one operation per cluster at a time (409 naming the running one and
//!   who started it): two defrags of different members would take a
//!   3-member cluster below quorum;
//! - `dry_run: true` answers what would be done and changes nothing;
//! - compact, alarm disarm and move-leader need `"confirm": "<cluster>"`,
//!   and disarming CORRUPT needs `"force": true`;
//! - the operation runs on a task of its own, so a client that disconnects
//!   halfway does not leave a defrag half done or a snapshot half written.

use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::extract::{Body, Cluster};
use super::{ApiError, AppState};
use crate::config::{ClusterConfig, SnapshotRetention};
use crate::ops::endpoint::{self, Dialer};
use crate::ops::error::CtlError;
use crate::ops::maintenance::{self, DefragOptions};

impl From<CtlError> for ApiError {
    fn from(e: CtlError) -> Self {
        let message = e.to_string();
        match e {
            CtlError::Invalid(_) | CtlError::UnknownMember { .. } => {
                ApiError::unprocessable(message)
            }
            CtlError::Unsafe(_) | CtlError::Refused(_) => ApiError {
                status: StatusCode::CONFLICT,
                code: "unsafe",
                message,
            },
            CtlError::Connect(_) => ApiError::unavailable(message),
            CtlError::Io { .. } => ApiError::internal(message),
            _ => ApiError::etcd(message),
        }
    }
}

pub use crate::ops::gate::{Busy, GateGuard, MaintenanceGate};

impl From<Busy> for ApiError {
    fn from(b: Busy) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code: "busy",
            message: b.to_string(),
        }
    }
}

/// Runs `work` on a task of its own holding `guard`, and waits for it: a
/// client that goes away does not cut an operation short.
pub(super) async fn run_guarded<F, T>(guard: GateGuard, work: F) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::spawn(async move {
        let _guard = guard;
        work.await
    });
    task.await
        .map_err(|e| ApiError::internal(format!("the maintenance task failed: {e}")))?
}

pub(super) fn cluster_config(state: &AppState, name: &str) -> Result<ClusterConfig, ApiError> {
    state.cluster(name)?;
    state
        .config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| ApiError::unknown_cluster(name, state.monitor.cluster_names()))
}

/// A dialer for `cluster` and a client of one voting member; when none
/// answers, 503 naming each endpoint and its cause.
async fn connect(cluster: &ClusterConfig) -> Result<(Dialer, etcd_client::Client), ApiError> {
    let dialer = Dialer::new(cluster).map_err(CtlError::from)?;
    let urls = crate::connection::endpoints(cluster)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let client = endpoint::first_voting_member(&dialer, &urls)
        .await
        .map_err(CtlError::from)?;
    Ok((dialer, client))
}

/// Dangerous operations repeat the cluster's name, as `ctl` asks on a
/// terminal: a script aimed at the wrong cluster, or a replayed request
/// for another one, changes nothing.
fn confirmed(confirm: Option<&str>, cluster: &str, op: &str) -> Result<(), ApiError> {
    match confirm {
        Some(c) if c == cluster => Ok(()),
        Some(other) => Err(ApiError::unprocessable(format!(
            "confirm is {other:?} but this {op} is on cluster {cluster:?}; nothing was done"
        ))),
        None => Err(ApiError::unprocessable(format!(
            "{op} changes cluster {cluster:?} for good: repeat its name in the body, \"confirm\": \"{cluster}\" (or send \"dry_run\": true to see what it would do)"
        ))),
    }
}

/// The errors every maintenance operation may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes the answers to the OpenAPI document only
enum MaintenanceErrors {
    /// Malformed body.
    #[response(status = 400, description = "Malformed body")]
    Malformed(super::ErrorBody),
    /// Unknown cluster.
    #[response(status = 404, description = "Unknown cluster")]
    UnknownCluster(super::ErrorBody),
    /// Unsafe, busy, or CORRUPT without force.
    #[response(
        status = 409,
        description = "Unsafe right now, another maintenance operation runs on the cluster, or CORRUPT without force; nothing changed"
    )]
    Refused(super::ErrorBody),
    /// Invalid arguments.
    #[response(status = 422, description = "Invalid arguments")]
    Invalid(super::ErrorBody),
    /// etcd answered with an error.
    #[response(status = 502, description = "etcd answered with an error")]
    Etcd(super::ErrorBody),
    /// No member answers.
    #[response(status = 503, description = "No member answers")]
    Unavailable(super::ErrorBody),
}

/// `maintenance/defrag`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefragResult {
    /// Cluster name.
    pub cluster: String,
    /// Planned only.
    pub dry_run: bool,
    /// One line per member, in visiting order (the leader last).
    pub members: Vec<maintenance::DefragReport>,
}

/// `maintenance/compact`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompactResult {
    /// Cluster name.
    pub cluster: String,
    /// The revision compacted to (or that would be).
    pub revision: i64,
    /// Waited until the space was reclaimed.
    pub physical: bool,
    /// The revision before.
    pub current_revision: i64,
    /// Checked only.
    pub dry_run: bool,
}

/// `maintenance/snapshot`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResult {
    /// Cluster name.
    pub cluster: String,
    /// The file (on the monitor's host).
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Bytes written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the file, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How long it took, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    /// Checked only.
    pub dry_run: bool,
    /// Older snapshots removed by `api.snapshot_retention`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub removed: Vec<PathBuf>,
}

/// An alarm of `maintenance/alarm-disarm`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmView {
    /// The member that raised it (hex id).
    pub member_id: String,
    /// `NOSPACE`, `CORRUPT`.
    pub alarm: String,
}

/// `maintenance/alarm-disarm`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmDisarmResult {
    /// Cluster name.
    pub cluster: String,
    /// Alarms disarmed.
    pub disarmed: Vec<AlarmView>,
    /// With dry_run: the active alarms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_disarm: Option<Vec<AlarmView>>,
    /// With dry_run: a CORRUPT alarm is active (disarming it needs force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_force: Option<bool>,
    /// Listed only.
    pub dry_run: bool,
}

/// `maintenance/move-leader`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MoveLeaderResult {
    /// Cluster name.
    pub cluster: String,
    /// The leader before (hex id).
    pub from: String,
    /// The leader after (hex id).
    pub to: String,
    /// Checked only.
    pub dry_run: bool,
}

/// Body of `maintenance/defrag`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DefragBody {
    /// Only members that match, e.g. `dbQuotaUsage > 0.8 || dbSizeFree > 200MB`
    /// (docs/ctl.md, the defrag rule language).
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
#[utoipa::path(post, path = "/api/v1/clusters/{name}/maintenance/defrag", tag = "maintenance",
    description = "Defragment the members one at a time, the leader last, after health checks", params(super::handlers::ClusterName), request_body = DefragBody, responses(
    (status = 200, description = "Done (or, with dry_run, what would be done)", body = DefragResult),
    MaintenanceErrors))]
pub async fn defrag(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<DefragBody>,
) -> Result<Json<DefragResult>, ApiError> {
    let name = c.name.clone();
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
    opts.quotas = crate::monitor::defrag_autopilot::quotas(&c);
    if let Some(p) = &b.pause {
        opts.pause = crate::config::duration::parse(p)
            .map_err(|e| ApiError::unprocessable(format!("pause: {e}")))?;
        if opts.pause > Duration::from_secs(600) {
            return Err(ApiError::unprocessable("pause: at most 10m"));
        }
    }
    let work = async move {
        let (dialer, mut client) = connect(&cluster).await?;
        let reports = maintenance::defrag_cluster(&mut client, &dialer, &opts, |_| {}).await?;
        Ok(Json(DefragResult {
            cluster: cluster.name,
            dry_run: opts.dry_run,
            members: reports,
        }))
    };
    if b.dry_run {
        return work.await;
    }
    let guard = state.maintenance.enter(&name, "defrag", &caller.label())?;
    run_guarded(guard, work).await
}

/// Body of `maintenance/compact`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CompactBody {
    /// Revision to compact to; default: the current revision.
    pub revision: Option<i64>,
    /// Wait until the space is reclaimed.
    pub physical: bool,
    /// The cluster's name, repeated.
    pub confirm: Option<String>,
    /// Say what would be compacted; change nothing.
    pub dry_run: bool,
}

/// `POST /api/v1/clusters/{name}/maintenance/compact`.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/maintenance/compact", tag = "maintenance",
    description = "Compact the history up to a revision (default: the current one)", params(super::handlers::ClusterName), request_body = CompactBody, responses(
    (status = 200, description = "Done (or, with dry_run, what would be done)", body = CompactResult),
    MaintenanceErrors))]
pub async fn compact(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<CompactBody>,
) -> Result<Json<CompactResult>, ApiError> {
    let name = c.name;
    if b.revision.is_some_and(|r| r <= 0) {
        return Err(ApiError::unprocessable(format!(
            "revision {}: compaction needs a revision > 0",
            b.revision.unwrap_or(0)
        )));
    }
    let cluster = cluster_config(&state, &name)?;
    if !b.dry_run {
        confirmed(b.confirm.as_deref(), &name, "compaction")?;
    }
    let work = async move {
        let (_, mut client) = connect(&cluster).await?;
        let current = client
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
            .unwrap_or(0);
        let revision = b.revision.unwrap_or(current);
        if revision > current {
            return Err(ApiError::unprocessable(format!(
                "revision {revision} is in the future: the current revision is {current}"
            )));
        }
        if b.dry_run {
            return Ok(Json(CompactResult {
                cluster: cluster.name,
                revision,
                physical: b.physical,
                current_revision: current,
                dry_run: true,
            }));
        }
        let result = maintenance::compact(&mut client, revision, b.physical).await?;
        Ok(Json(CompactResult {
            cluster: cluster.name,
            revision: result.revision,
            physical: result.physical,
            current_revision: current,
            dry_run: false,
        }))
    };
    if b.dry_run {
        return work.await;
    }
    let guard = state.maintenance.enter(&name, "compact", &caller.label())?;
    run_guarded(guard, work).await
}

/// Body of `maintenance/snapshot`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotBody {
    /// File name inside `api.snapshot_dir` (no directories); default
    /// `<cluster>-<unix ms>.db`.
    pub name: Option<String>,
    /// Say where it would go; write nothing.
    pub dry_run: bool,
}

/// `POST /api/v1/clusters/{name}/maintenance/snapshot`: saves a verified
/// snapshot into `api.snapshot_dir` on the monitor's host (file 0600 in a
/// 0700 directory), then applies `api.snapshot_retention`.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/maintenance/snapshot", tag = "maintenance",
    description = "Save a snapshot into api.snapshot_dir (0600 file, 0700 directory), then apply api.snapshot_retention", params(super::handlers::ClusterName), request_body = SnapshotBody, responses(
    (status = 200, description = "Done (or, with dry_run, what would be done)", body = SnapshotResult),
    MaintenanceErrors))]
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<SnapshotBody>,
) -> Result<Json<SnapshotResult>, ApiError> {
    let name = c.name;
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
    if file.ends_with(".part") {
        return Err(ApiError::unprocessable(format!(
            "name {file:?}: .part is reserved for snapshots being written"
        )));
    }
    let dir = state.config.api.snapshot_dir.clone();
    let path = dir.join(&file);
    if path.exists() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "exists",
            message: format!("{} exists already", path.display()),
        });
    }
    if b.dry_run {
        return Ok(Json(SnapshotResult {
            cluster: name,
            path,
            size: None,
            sha256: None,
            took_ms: None,
            dry_run: true,
            removed: Vec::new(),
        }));
    }
    let retention = state.config.api.snapshot_retention.clone();
    let guard = state
        .maintenance
        .enter(&name, "snapshot", &caller.label())?;
    run_guarded(guard, async move {
        private_dir(&dir)?;
        let (_, mut client) = connect(&cluster).await?;
        let urls = crate::connection::endpoints(&cluster).unwrap_or_default();
        let info = maintenance::snapshot_save(
            &mut client,
            urls.first().map(String::as_str).unwrap_or(""),
            &path,
            false,
        )
        .await?;
        let removed = apply_retention(&dir, &retention, &path);
        Ok(Json(SnapshotResult {
            cluster: cluster.name,
            path: info.path,
            size: Some(info.size),
            sha256: Some(info.sha256),
            took_ms: Some(info.took_ms as u64),
            dry_run: false,
            removed,
        }))
    })
    .await
}

/// Creates `dir` readable by its owner only; warns when an existing one is
/// open to others (snapshots hold every key of a cluster).
fn private_dir(dir: &FsPath) -> Result<(), ApiError> {
    let cannot = |e: std::io::Error| {
        ApiError::internal(format!(
            "cannot create api.snapshot_dir {}: {e}",
            dir.display()
        ))
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(cannot)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(dir = %dir.display(), "api.snapshot_dir can be read by other users; snapshots hold every key: chmod 700 it");
        }
    }
    Ok(())
}

/// Removes `.part` files left in `dir` by a process that died while
/// writing a snapshot. Called when the API starts.
pub fn remove_stale_parts(dir: &FsPath) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "part") {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(file = %path.display(), "removed an unfinished snapshot"),
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "cannot remove an unfinished snapshot")
                }
            }
        }
    }
}

/// Applies `retention` to the `*.db` files of `dir` (never `just_saved`);
/// returns the files removed.
fn apply_retention(
    dir: &FsPath,
    retention: &SnapshotRetention,
    just_saved: &FsPath,
) -> Vec<PathBuf> {
    if retention.max_count.is_none() && retention.max_age.is_none() {
        return Vec::new();
    }
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "db") && p != just_saved)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0)); // newest first
    let keep_others = retention.max_count.map(|n| n.saturating_sub(1));
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for (i, (modified, path)) in files.into_iter().enumerate() {
        let too_many = keep_others.is_some_and(|n| i >= n);
        let too_old = retention
            .max_age
            .is_some_and(|age| now.duration_since(modified).unwrap_or_default() > age);
        if too_many || too_old {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an old snapshot")
                }
            }
        }
    }
    removed
}

/// Body of `maintenance/alarm-disarm`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmDisarmBody {
    /// The cluster's name, repeated.
    pub confirm: Option<String>,
    /// Also disarm CORRUPT (members' data differ; disarming hides it).
    pub force: bool,
    /// List what would be disarmed; change nothing.
    pub dry_run: bool,
}

/// `POST /api/v1/clusters/{name}/maintenance/alarm-disarm`.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/maintenance/alarm-disarm", tag = "maintenance",
    description = "Disarm every active alarm (CORRUPT only with force)", params(super::handlers::ClusterName), request_body = AlarmDisarmBody, responses(
    (status = 200, description = "Done (or, with dry_run, what would be done)", body = AlarmDisarmResult),
    MaintenanceErrors))]
pub async fn alarm_disarm(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<AlarmDisarmBody>,
) -> Result<Json<AlarmDisarmResult>, ApiError> {
    let name = c.name;
    let cluster = cluster_config(&state, &name)?;
    let view = |alarms: &[maintenance::Alarm]| -> Vec<AlarmView> {
        alarms
            .iter()
            .map(|a| AlarmView {
                member_id: format!("{:x}", a.member_id),
                alarm: a.alarm.clone(),
            })
            .collect()
    };
    if b.dry_run {
        let (_, mut client) = connect(&cluster).await?;
        let alarms = maintenance::alarm_list(&mut client).await?;
        let needs_force = alarms.iter().any(|a| a.alarm == "CORRUPT");
        return Ok(Json(AlarmDisarmResult {
            cluster: name,
            disarmed: Vec::new(),
            would_disarm: Some(view(&alarms)),
            needs_force: Some(needs_force),
            dry_run: true,
        }));
    }
    confirmed(b.confirm.as_deref(), &name, "alarm disarm")?;
    let guard = state
        .maintenance
        .enter(&name, "alarm disarm", &caller.label())?;
    run_guarded(guard, async move {
        let (_, mut client) = connect(&cluster).await?;
        let disarmed = maintenance::alarm_disarm(&mut client, b.force)
            .await
            .map_err(|e| match e {
                CtlError::Refused(m) => ApiError {
                    status: StatusCode::CONFLICT,
                    code: "corrupt",
                    message: format!("{m}: send \"force\": true"),
                },
                other => other.into(),
            })?;
        Ok(Json(AlarmDisarmResult {
            cluster: cluster.name,
            disarmed: view(&disarmed),
            would_disarm: None,
            needs_force: None,
            dry_run: false,
        }))
    })
    .await
}

/// Body of `maintenance/move-leader`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLeaderBody {
    /// The member id (hex) that should lead.
    pub target: String,
    /// The cluster's name, repeated.
    #[serde(default)]
    pub confirm: Option<String>,
    /// Check the move and say what it would be; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /api/v1/clusters/{name}/maintenance/move-leader`.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/maintenance/move-leader", tag = "maintenance",
    description = "Transfer leadership to a member", params(super::handlers::ClusterName), request_body = MoveLeaderBody, responses(
    (status = 200, description = "Done (or, with dry_run, what would be done)", body = MoveLeaderResult),
    MaintenanceErrors))]
pub async fn move_leader(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<MoveLeaderBody>,
) -> Result<Json<MoveLeaderResult>, ApiError> {
    let name = c.name;
    let target = u64::from_str_radix(b.target.trim_start_matches("0x"), 16).map_err(|_| {
        ApiError::unprocessable(format!("target {:?} is not a hex member id", b.target))
    })?;
    let cluster = cluster_config(&state, &name)?;
    if b.dry_run {
        let (_, mut client) = connect(&cluster).await?;
        let members = endpoint::members(&mut client).await?;
        let Some(t) = members.iter().find(|m| m.id == target) else {
            return Err(endpoint::unknown_member(target, &members).into());
        };
        if t.is_learner {
            return Err(ApiError::unprocessable(format!(
                "member {target:x} ({}) is a learner and cannot lead",
                t.name
            )));
        }
        let leader = maintenance::current_leader(&mut client).await?;
        return Ok(Json(MoveLeaderResult {
            cluster: name,
            from: format!("{leader:x}"),
            to: format!("{target:x}"),
            dry_run: true,
        }));
    }
    confirmed(b.confirm.as_deref(), &name, "leader move")?;
    let guard = state
        .maintenance
        .enter(&name, "move-leader", &caller.label())?;
    run_guarded(guard, async move {
        let (dialer, mut client) = connect(&cluster).await?;
        let (from, to) = maintenance::move_leader(&mut client, &dialer, target).await?;
        Ok(Json(MoveLeaderResult {
            cluster: cluster.name,
            from: format!("{from:x}"),
            to: format!("{to:x}"),
            dry_run: false,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_go_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |name: &str, age_s: u64| {
            let p = d.join(name);
            std::fs::write(&p, b"x").unwrap();
            let t = SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
            p
        };
        write("dead.db.part", 0);
        write("notes.txt", 100_000);
        for (i, age) in [10, 20, 30, 40, 50].iter().enumerate() {
            write(&format!("s{i}.db"), *age * 3600);
        }
        let new = write("new.db", 0);
        remove_stale_parts(d);
        assert!(!d.join("dead.db.part").exists());
        assert!(apply_retention(d, &SnapshotRetention::default(), &new).is_empty());
        let by_count = SnapshotRetention {
            max_count: Some(3),
            max_age: None,
        };
        let mut removed = apply_retention(d, &by_count, &new);
        removed.sort();
        assert_eq!(
            removed,
            vec![d.join("s2.db"), d.join("s3.db"), d.join("s4.db")]
        );
        let by_age = SnapshotRetention {
            max_count: None,
            max_age: Some(Duration::from_secs(15 * 3600)),
        };
        assert_eq!(apply_retention(d, &by_age, &new), vec![d.join("s1.db")]);
        assert!(new.exists() && d.join("s0.db").exists() && d.join("notes.txt").exists());
    }
}

/// Query of the defrag runs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DefragRunsQuery {
    /// Most runs, newest first, 1..=100; default 20.
    pub limit: Option<i64>,
}

/// The stored defragmentation runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefragRuns {
    /// Whether `maintenance.defrag` (the autopilot) is set.
    pub autopilot: bool,
    /// The autopilot's window, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The autopilot's rule, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Newest first.
    pub runs: Vec<crate::store::DefragRun>,
}

/// `GET /api/v1/clusters/{name}/maintenance/defrag/runs`: the defrag
/// autopilot's runs, with each member's size before and after.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/maintenance/defrag/runs", tag = "maintenance",
    description = "The defrag autopilot's runs (maintenance.defrag), newest first: outcome, the members in visiting order with their sizes before and after, compaction and NOSPACE disarming.",
    params(super::handlers::ClusterName, DefragRunsQuery), responses(
    (status = 200, description = "The runs", body = DefragRuns),
    (status = 400, description = "A parameter out of range")))]
pub async fn defrag_runs(
    State(state): State<AppState>,
    Cluster(c): Cluster,
    super::extract::Params(q): super::extract::Params<DefragRunsQuery>,
) -> Result<Json<DefragRuns>, ApiError> {
    let limit = super::handlers::limit(q.limit, 20, 100)?;
    let runs = state.monitor.store().defrag_runs(&c.name, limit).await?;
    let auto = state.config.maintenance.defrag.as_ref();
    Ok(Json(DefragRuns {
        autopilot: auto.is_some(),
        window: auto.map(|a| a.window.to_string()),
        rule: auto.map(|a| a.rule.clone()),
        runs,
    }))
}
