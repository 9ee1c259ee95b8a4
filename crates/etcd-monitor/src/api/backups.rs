//! `GET /api/v1/backups` (the schedules' state and their backups, with
//! their restore drills) and `POST /api/v1/backups` (operator: take one
//! now, through the schedule's own steps).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::extract::{Body, Params};
use super::{ApiError, AppState};
use crate::monitor::backups::{BackupContext, BackupStatus, RunRefused, ScheduleState};
use crate::store::BackupRecord;

/// `GET /api/v1/backups`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    /// Each schedule's state (last success, last verification, failures).
    pub schedules: Vec<BackupStatus>,
    /// Backups still kept and failed attempts, newest first.
    pub backups: Vec<BackupRecord>,
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Only this schedule.
    pub schedule: Option<String>,
    /// At most this many backups (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// `POST /api/v1/backups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupNow {
    /// The schedule (`backup.schedules[].name`); may be left out when there
    /// is only one.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Run the restore drill on this backup even when `verify_every` would
    /// not. Default: false
    #[serde(default)]
    pub verify: bool,
    /// Instead of taking a backup, run the restore drill again on this
    /// stored one (its file name): proves an older backup still restores.
    #[serde(default)]
    pub backup: Option<String>,
}

/// The schedules the caller may see.
fn visible(state: &AppState, caller: &Principal) -> Vec<std::sync::Arc<ScheduleState>> {
    state
        .monitor
        .backup_schedules()
        .into_iter()
        .filter(|s| caller.scope.allows(&s.status().cluster))
        .collect()
}

/// `GET /api/v1/backups`.
#[utoipa::path(get, path = "/api/v1/backups", operation_id = "list_backups", tag = "backups",
    description = "The backup schedules (backup.schedules) with their last success, last verification and failures, and their backups newest first, each with its manifest and restore drill.",
    params(BackupQuery), responses(
    (status = 200, description = "Schedules and backups", body = BackupList),
    (status = 400, description = "A parameter out of range")))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<BackupQuery>,
) -> Result<Json<BackupList>, ApiError> {
    let limit = super::handlers::limit(q.limit, 50, 500)?;
    let schedules = visible(&state, &caller);
    if let Some(name) = &q.schedule {
        if !schedules.iter().any(|s| &s.config.name == name) {
            return Err(unknown(name, &schedules));
        }
    }
    let names: Vec<String> = schedules.iter().map(|s| s.config.name.clone()).collect();
    let backups = state
        .monitor
        .store()
        .backups(q.schedule.as_deref(), limit)
        .await?
        .into_iter()
        .filter(|b| names.contains(&b.schedule))
        .collect();
    Ok(Json(BackupList {
        schedules: schedules.iter().map(|s| s.status()).collect(),
        backups,
    }))
}

fn unknown(name: &str, schedules: &[std::sync::Arc<ScheduleState>]) -> ApiError {
    let known: Vec<&str> = schedules.iter().map(|s| s.config.name.as_str()).collect();
    ApiError::not_found(format!(
        "no backup schedule is named {name:?} (configured: {})",
        if known.is_empty() {
            "none; see backup.schedules in docs/backup.md".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// The errors of "back up now".
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes the answers to the OpenAPI document only
enum NowErrors {
    /// Malformed body.
    #[response(status = 400, description = "Malformed body")]
    Malformed(super::ErrorBody),
    /// Unknown schedule.
    #[response(status = 404, description = "No such schedule")]
    Unknown(super::ErrorBody),
    /// A backup of the schedule, or another maintenance operation on its
    /// cluster, is running.
    #[response(status = 409, description = "Busy")]
    Busy(super::ErrorBody),
    /// No schedule named and several configured.
    #[response(status = 422, description = "Which schedule?")]
    Invalid(super::ErrorBody),
    /// The backup failed (recorded, counted, and in the answer's message).
    #[response(status = 502, description = "The backup failed")]
    Failed(super::ErrorBody),
}

/// `POST /api/v1/backups`: takes a backup of a schedule now: the snapshot,
/// the manifest, the restore drill when due (or asked), retention. With
/// `backup`, runs the restore drill again on that stored backup instead.
/// Answers when done; the run goes on if the caller disconnects.
#[utoipa::path(post, path = "/api/v1/backups", operation_id = "backup_now", tag = "backups",
    request_body = BackupNow,
    responses((status = 200, description = "Saved, or drilled again (see `verification`)", body = BackupRecord), NowErrors))]
pub async fn now(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(b): Body<BackupNow>,
) -> Result<Json<BackupRecord>, ApiError> {
    let schedules = visible(&state, &caller);
    let schedule = match &b.schedule {
        Some(name) => schedules
            .iter()
            .find(|s| &s.config.name == name)
            .cloned()
            .ok_or_else(|| unknown(name, &schedules))?,
        None if schedules.len() == 1 => schedules[0].clone(),
        None => {
            return Err(ApiError::unprocessable(if schedules.is_empty() {
                "no backup schedule is configured (backup.schedules; docs/backup.md)".to_string()
            } else {
                format!(
                    "schedule: required, one of {}",
                    schedules
                        .iter()
                        .map(|s| s.config.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        }
    };
    let ctx = BackupContext::new(
        &state.config,
        &schedule,
        state.monitor.store(),
        &state.maintenance,
    );
    let who = caller.label();
    if let Some(name) = b.backup {
        let task = tokio::spawn(async move { schedule.drill_stored(&ctx, &name).await });
        return task
            .await
            .map_err(|e| ApiError::internal(format!("the drill task failed: {e}")))?
            .map_err(refused)?
            .map(Json)
            .map_err(ApiError::unprocessable);
    }
    let task = tokio::spawn(async move { schedule.run(&ctx, &who, b.verify).await });
    let record = task
        .await
        .map_err(|e| ApiError::internal(format!("the backup task failed: {e}")))?
        .map_err(refused)?;
    if record.outcome != "saved" {
        return Err(ApiError {
            status: StatusCode::BAD_GATEWAY,
            code: "backup_failed",
            message: format!(
                "backup of schedule {} failed: {}",
                record.schedule,
                record.error.as_deref().unwrap_or("unknown error")
            ),
        });
    }
    Ok(Json(record))
}

fn refused(r: RunRefused) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code: "busy",
        message: match r {
            RunRefused::Running => "a backup of this schedule is running".into(),
            RunRefused::Busy(why) => why,
        },
    }
}
