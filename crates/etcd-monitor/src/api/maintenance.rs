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

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::extract::{Body, Cluster};
use super::{ApiError, AppState};
use crate::config::{ClusterConfig, SnapshotRetention};
use crate::ops::endpoint::{self, Dialer};
use crate::ops::error::CtlError;
use crate::ops::maintenance::{self, DefragOptions};

type ApiResult = Result<Json<Value>, ApiError>;

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

/// The maintenance operation running on each cluster.
#[derive(Debug, Default)]
pub struct MaintenanceGate {
    running: Mutex<HashMap<String, Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    op: &'static str,
    by: String,
    since: Instant,
}

/// Holds a cluster's maintenance slot; released when dropped.
#[derive(Debug)]
pub struct GateGuard {
    gate: Arc<MaintenanceGate>,
    cluster: String,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.gate.running.lock() {
            map.remove(&self.cluster);
        }
    }
}

impl MaintenanceGate {
    /// Takes `cluster`'s slot for `op`, or a 409 naming what holds it.
    pub fn enter(
        self: &Arc<Self>,
        cluster: &str,
        op: &'static str,
        by: &str,
    ) -> Result<GateGuard, ApiError> {
        let mut map = self
            .running
            .lock()
            .map_err(|_| ApiError::internal("the maintenance gate is poisoned"))?;
        if let Some(r) = map.get(cluster) {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "busy",
                message: format!(
                    "cluster {cluster}: {} started by {} {} s ago is still running; one maintenance operation per cluster at a time",
                    r.op,
                    r.by,
                    r.since.elapsed().as_secs()
                ),
            });
        }
        map.insert(
            cluster.to_string(),
            Running {
                op,
                by: by.to_string(),
                since: Instant::now(),
            },
        );
        Ok(GateGuard {
            gate: self.clone(),
            cluster: cluster.to_string(),
        })
    }
}

/// Runs `work` on a task of its own holding `guard`, and waits for it: a
/// client that goes away does not cut an operation short.
async fn run_guarded<F>(guard: GateGuard, work: F) -> ApiResult
where
    F: std::future::Future<Output = ApiResult> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let _guard = guard;
        work.await
    });
    task.await
        .map_err(|e| ApiError::internal(format!("the maintenance task failed: {e}")))?
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
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<DefragBody>,
) -> ApiResult {
    let name = c.name;
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
    let work = async move {
        let (dialer, mut client) = connect(&cluster).await?;
        let reports = maintenance::defrag_cluster(&mut client, &dialer, &opts, |_| {}).await?;
        Ok(Json(
            json!({ "cluster": cluster.name, "dry_run": opts.dry_run, "members": reports }),
        ))
    };
    if b.dry_run {
        return work.await;
    }
    let guard = state.maintenance.enter(&name, "defrag", &caller.label())?;
    run_guarded(guard, work).await
}

/// Body of `maintenance/compact`.
#[derive(Debug, Deserialize, Default)]
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
pub async fn compact(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<CompactBody>,
) -> ApiResult {
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
            return Ok(Json(json!({
                "cluster": cluster.name, "revision": revision, "physical": b.physical,
                "current_revision": current, "dry_run": true,
            })));
        }
        let result = maintenance::compact(&mut client, revision, b.physical).await?;
        Ok(Json(json!({
            "cluster": cluster.name, "revision": result.revision, "physical": result.physical,
            "current_revision": current, "dry_run": false,
        })))
    };
    if b.dry_run {
        return work.await;
    }
    let guard = state.maintenance.enter(&name, "compact", &caller.label())?;
    run_guarded(guard, work).await
}

/// Body of `maintenance/snapshot`.
#[derive(Debug, Deserialize, Default)]
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
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<SnapshotBody>,
) -> ApiResult {
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
        return Ok(Json(
            json!({ "cluster": name, "path": path, "dry_run": true }),
        ));
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
        Ok(Json(json!({
            "cluster": cluster.name, "path": info.path, "size": info.size, "sha256": info.sha256,
            "took_ms": info.took_ms as u64, "dry_run": false, "removed": removed,
        })))
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
#[derive(Debug, Deserialize, Default)]
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
pub async fn alarm_disarm(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<AlarmDisarmBody>,
) -> ApiResult {
    let name = c.name;
    let cluster = cluster_config(&state, &name)?;
    let view = |alarms: &[maintenance::Alarm]| -> Vec<Value> {
        alarms
            .iter()
            .map(|a| json!({ "member_id": format!("{:x}", a.member_id), "alarm": a.alarm }))
            .collect()
    };
    if b.dry_run {
        let (_, mut client) = connect(&cluster).await?;
        let alarms = maintenance::alarm_list(&mut client).await?;
        let needs_force = alarms.iter().any(|a| a.alarm == "CORRUPT");
        return Ok(Json(json!({
            "cluster": name, "disarmed": [], "would_disarm": view(&alarms),
            "needs_force": needs_force, "dry_run": true,
        })));
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
        Ok(Json(
            json!({ "cluster": cluster.name, "disarmed": view(&disarmed), "dry_run": false }),
        ))
    })
    .await
}

/// Body of `maintenance/move-leader`.
#[derive(Debug, Deserialize)]
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
pub async fn move_leader(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Cluster(c): Cluster,
    Body(b): Body<MoveLeaderBody>,
) -> ApiResult {
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
        return Ok(Json(json!({
            "cluster": name, "from": format!("{leader:x}"), "to": format!("{target:x}"), "dry_run": true,
        })));
    }
    confirmed(b.confirm.as_deref(), &name, "leader move")?;
    let guard = state
        .maintenance
        .enter(&name, "move-leader", &caller.label())?;
    run_guarded(guard, async move {
        let (dialer, mut client) = connect(&cluster).await?;
        let (from, to) = maintenance::move_leader(&mut client, &dialer, target).await?;
        Ok(Json(json!({
            "cluster": cluster.name, "from": format!("{from:x}"), "to": format!("{to:x}"), "dry_run": false,
        })))
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
