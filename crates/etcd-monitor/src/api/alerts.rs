//! Alerts: active alerts with their groups' acknowledgement, alert history,
//! silences (list, add, delete) and acknowledgement of a firing group.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Principal, Scope};
use super::extract::{Body, Params};
use super::{ApiError, AppState};
use crate::alert::silence::{NewSilence, Silence, SilenceError};
use crate::alert::{Alert, Alerting};
use crate::store::unix_ms;

fn alerting(state: &AppState) -> Result<&Alerting, ApiError> {
    Ok(&state.alerting)
}

/// One alert, its labels spelled out.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    /// The labels joined; stable across restarts.
    pub fingerprint: String,
    /// `cluster/rule`: the notification group.
    pub group_key: String,
    /// The `alertname` label.
    pub alertname: Option<String>,
    /// The `cluster` label.
    pub cluster: Option<String>,
    /// The `member` label, when one member is concerned.
    pub member: Option<String>,
    /// The `severity` label.
    pub severity: Option<String>,
    /// Pending, firing, resolved.
    pub state: crate::model::AlertState,
    /// One sentence for people.
    pub summary: String,
    /// The figure compared with the threshold.
    pub value: f64,
    /// Every label.
    pub labels: crate::model::Labels,
    /// When the condition was first seen (ms since epoch).
    pub active_since_ms: i64,
    /// When it started firing.
    pub starts_at_ms: Option<i64>,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
    /// `silenced by <id>` or `inhibited by <alertname> (<severity>)`.
    pub suppressed: Option<String>,
    /// What to do about it: its section of the runbooks (built-in rules).
    pub runbook_url: Option<String>,
}

fn view(a: &Alert) -> AlertView {
    let label = |k: &str| a.labels.get(k).cloned();
    AlertView {
        fingerprint: a.fingerprint.clone(),
        group_key: a.group_key.clone(),
        alertname: label("alertname"),
        cluster: label("cluster"),
        member: label("member"),
        severity: label("severity"),
        state: a.state,
        summary: a.summary.clone(),
        value: a.value,
        labels: a.labels.clone(),
        active_since_ms: a.active_since_ms,
        starts_at_ms: a.starts_at_ms,
        ends_at_ms: a.ends_at_ms,
        suppressed: a.suppressed.clone(),
        runbook_url: a.runbook_url.clone(),
    }
}

/// `GET /api/v1/alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveAlerts {
    /// Firing alerts, oldest first.
    pub alerts: Vec<AlertView>,
    /// Notification groups with their acknowledgement.
    pub groups: Vec<crate::store::alerts::AlertGroupRow>,
}

/// `GET /api/v1/alerts/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertHistory {
    /// Start (ms since epoch).
    pub from_ms: i64,
    /// End (ms since epoch).
    pub to_ms: i64,
    /// Alerts that fired, newest first.
    pub alerts: Vec<AlertView>,
}

/// `POST /api/v1/alerts/ack`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acked {
    /// The group.
    pub group_key: String,
    /// When (ms since epoch).
    pub acked_at_ms: i64,
    /// Who.
    pub acked_by: String,
}

/// `GET /api/v1/silences`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceList {
    /// Configured silences first, then those added through the API.
    pub silences: Vec<Silence>,
}

/// A deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// What was deleted.
    pub deleted: String,
}

/// Query of `alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Only this cluster.
    pub cluster: Option<String>,
}

/// `GET /api/v1/alerts`: firing alerts and the notification groups.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertsQuery), responses(
    (status = 200, description = "Firing alerts and notification groups", body = ActiveAlerts),
    (status = 400, description = "Bad parameters", body = super::ErrorBody), (status = 404, description = "Unknown cluster", body = super::ErrorBody)))]
pub async fn active(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<AlertsQuery>,
) -> Result<Json<ActiveAlerts>, ApiError> {
    if let Some(c) = &q.cluster {
        in_scope(&caller, c)?;
        state.cluster(c)?;
    }
    let store = state.monitor.store();
    let alerts: Vec<AlertView> = store
        .active_alerts(q.cluster.as_deref())
        .await?
        .iter()
        .filter(|a| alert_in_scope(&caller.scope, a))
        .map(view)
        .collect();
    let groups = store.alert_groups().await?;
    let groups: Vec<crate::store::alerts::AlertGroupRow> = groups
        .into_iter()
        .filter(|g| {
            q.cluster
                .as_ref()
                .is_none_or(|c| g.state.group_key.starts_with(&format!("{c}/")))
        })
        .filter(|g| group_in_scope(&caller.scope, &g.state.group_key))
        .collect();
    Ok(Json(ActiveAlerts { alerts, groups }))
}

/// Query of `alerts/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// `firing` or `resolved`.
    pub state: Option<String>,
    /// Start (ms since epoch or a duration ago); default 24h ago.
    pub from: Option<String>,
    /// End; default now.
    pub to: Option<String>,
    /// Most alerts (default 200, at most 5000).
    pub limit: Option<i64>,
}

/// `GET /api/v1/alerts/history`.
#[utoipa::path(get, path = "/api/v1/alerts/history", operation_id = "alert_history", tag = "alerts", params(HistoryQuery), responses(
    (status = 200, description = "Alerts that fired, newest first", body = AlertHistory),
    (status = 400, description = "Bad parameters", body = super::ErrorBody), (status = 404, description = "Unknown cluster", body = super::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<AlertHistory>, ApiError> {
    if let Some(c) = &q.cluster {
        in_scope(&caller, c)?;
        state.cluster(c)?;
    }
    if let Some(s) = q.state.as_deref() {
        if s != "firing" && s != "resolved" {
            return Err(ApiError::bad_request(format!(
                "state={s:?}: use firing or resolved"
            )));
        }
    }
    let now = unix_ms(SystemTime::now());
    let from = super::handlers::parse_time(q.from.as_deref(), now - 24 * 3_600_000, now, "from")?;
    let to = super::handlers::parse_time(q.to.as_deref(), now, now, "to")?;
    let limit = super::handlers::limit(q.limit, 200, 5000)?;
    let alerts = state
        .monitor
        .store()
        .alert_history(q.cluster.as_deref(), q.state.as_deref(), from, to, limit)
        .await?;
    let alerts = alerts
        .iter()
        .filter(|a| alert_in_scope(&caller.scope, a))
        .map(view)
        .collect();
    Ok(Json(AlertHistory {
        from_ms: from,
        to_ms: to,
        alerts,
    }))
}

/// Body of `alerts/ack`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The firing group, `cluster/rule` (see `group_key` in `GET /api/v1/alerts`).
    pub group_key: String,
    /// Who acknowledges.
    #[serde(default)]
    pub by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// `POST /api/v1/alerts/ack`: no more repeats of a firing group until it resolves.
#[utoipa::path(post, path = "/api/v1/alerts/ack", tag = "alerts", request_body = AckBody, responses(
    (status = 200, description = "Acknowledged", body = Acked),
    (status = 400, description = "Malformed body", body = super::ErrorBody), (status = 403, description = "Out of the caller's clusters", body = super::ErrorBody),
    (status = 404, description = "No such firing group", body = super::ErrorBody), (status = 422, description = "Invalid body", body = super::ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(b): Body<AckBody>,
) -> Result<Json<Acked>, ApiError> {
    if !group_in_scope(&caller.scope, &b.group_key) {
        return Err(caller.out_of_scope(&format!("alert group {:?}", b.group_key)));
    }
    let now = unix_ms(SystemTime::now());
    let label = caller.label();
    let by = if b.by.is_empty() {
        label.as_str()
    } else {
        b.by.as_str()
    };
    if state
        .alerting
        .ack(&b.group_key, by, &b.comment, now)
        .await?
    {
        Ok(Json(Acked {
            acked_by: by.to_string(),
            group_key: b.group_key,
            acked_at_ms: now,
        }))
    } else {
        Err(ApiError::not_found(format!(
            "no firing alert group {:?}",
            b.group_key
        )))
    }
}

fn silence_error(e: SilenceError) -> ApiError {
    match e {
        SilenceError::Invalid(m) => ApiError::unprocessable(format!("invalid silence: {m}")),
        e @ SilenceError::NotFound(_) => ApiError::not_found(e.to_string()),
        e @ SilenceError::FromConfig(_) => ApiError {
            status: StatusCode::CONFLICT,
            code: "from_config",
            message: e.to_string(),
        },
        other => ApiError::internal(other.to_string()),
    }
}

/// `GET /api/v1/silences`: those the caller may see (a principal limited
/// to some clusters sees silences with a `cluster=` matcher for them).
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts", responses(
    (status = 200, description = "Silences", body = SilenceList)))]
pub async fn silences(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<SilenceList>, ApiError> {
    let list: Vec<Silence> = alerting(&state)?
        .silences
        .list()
        .await
        .map_err(silence_error)?
        .into_iter()
        .filter(|s| silence_in_scope(&caller.scope, s))
        .collect();
    Ok(Json(SilenceList { silences: list }))
}

/// `POST /api/v1/silences`: `{"matchers": ["cluster=prod", "alertname=etcdMembersDown"], "ends_at_ms": ..., "comment": "...", "created_by": "..."}`.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", request_body = NewSilence, responses(
    (status = 201, description = "Added", body = Silence),
    (status = 400, description = "Malformed body", body = super::ErrorBody), (status = 403, description = "Out of the caller's clusters", body = super::ErrorBody),
    (status = 422, description = "Invalid silence", body = super::ErrorBody)))]
pub async fn add_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(mut b): Body<NewSilence>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    if !caller.scope.is_all() {
        let clusters: Vec<String> = b
            .matchers
            .iter()
            .filter_map(|m| crate::alert::silence::Matcher::parse(m).ok())
            .filter(|m| m.is_literal_equal() && m.name == "cluster")
            .map(|m| m.value)
            .collect();
        if clusters.is_empty() || clusters.iter().any(|c| !caller.scope.allows(c)) {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: format!(
                    "{} may only silence its own clusters: add a matcher cluster=NAME for one of {}",
                    caller.label(),
                    caller.scope.globs().join(", ")
                ),
            });
        }
    }
    if b.created_by.is_empty() {
        b.created_by = caller.label();
    }
    let s = alerting(&state)?
        .silences
        .add(b)
        .await
        .map_err(silence_error)?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// `DELETE /api/v1/silences/{id}`.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts",
    params(("id" = String, Path, description = "The silence's id")), responses(
    (status = 200, description = "Deleted", body = Deleted),
    (status = 403, description = "Out of the caller's clusters", body = super::ErrorBody),
    (status = 404, description = "No such silence", body = super::ErrorBody),
    (status = 409, description = "Defined in the configuration file", body = super::ErrorBody)))]
pub async fn delete_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let alerting = alerting(&state)?;
    if !caller.scope.is_all() {
        let list = alerting.silences.list().await.map_err(silence_error)?;
        if let Some(s) = list.iter().find(|s| s.id == id) {
            if !silence_in_scope(&caller.scope, s) {
                return Err(caller.out_of_scope(&format!("silence {id}")));
            }
        }
    }
    alerting.silences.delete(&id).await.map_err(silence_error)?;
    Ok(Json(Deleted { deleted: id }))
}

fn in_scope(caller: &Principal, cluster: &str) -> Result<(), ApiError> {
    if caller.scope.allows(cluster) {
        Ok(())
    } else {
        Err(caller.out_of_scope(&format!("cluster {cluster:?}")))
    }
}

fn alert_in_scope(scope: &Scope, a: &Alert) -> bool {
    match a.labels.get("cluster") {
        Some(c) => scope.allows(c),
        None => scope.is_all(),
    }
}

/// A group key is `cluster/rule`.
fn group_in_scope(scope: &Scope, group_key: &str) -> bool {
    match group_key.split_once('/') {
        Some((cluster, _)) => scope.allows(cluster),
        None => scope.is_all(),
    }
}

/// A silence concerns the clusters its `cluster=` matchers name; one
/// without such a matcher concerns every cluster.
fn silence_in_scope(scope: &Scope, s: &Silence) -> bool {
    if scope.is_all() {
        return true;
    }
    let mut named = s
        .matchers
        .iter()
        .filter(|m| m.is_literal_equal() && m.name == "cluster")
        .peekable();
    named.peek().is_some() && named.all(|m| scope.allows(&m.value))
}
