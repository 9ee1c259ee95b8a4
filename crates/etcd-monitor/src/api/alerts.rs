//! Alerts: active alerts with their groups' acknowledgement, alert history,
//! silences (list, add, delete) and acknowledgement of a firing group.

use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::alert::silence::{NewSilence, SilenceError};
use crate::alert::{Alert, Alerting};
use crate::store::unix_ms;

type ApiResult = Result<Json<Value>, ApiError>;

fn alerting(state: &AppState) -> Result<&Alerting, ApiError> {
    state
        .monitor
        .alerting()
        .ok_or_else(|| ApiError::unavailable("the alert engine is not running"))
}

fn view(a: &Alert) -> Value {
    let label = |k: &str| a.labels.get(k).cloned();
    json!({
        "fingerprint": a.fingerprint,
        "group_key": a.group_key,
        "alertname": label("alertname"),
        "cluster": label("cluster"),
        "member": label("member"),
        "severity": label("severity"),
        "state": a.state,
        "summary": a.summary,
        "value": a.value,
        "labels": a.labels,
        "active_since_ms": a.active_since_ms,
        "starts_at_ms": a.starts_at_ms,
        "ends_at_ms": a.ends_at_ms,
        "suppressed": a.suppressed,
    })
}

/// Query of `alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only this cluster.
    pub cluster: Option<String>,
}

/// `GET /api/v1/alerts`: firing alerts and the notification groups.
pub async fn active(
    State(state): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("bad query parameters: {}", e.body_text())))?;
    if let Some(c) = &q.cluster {
        state.cluster(c)?;
    }
    let store = state.monitor.store();
    let alerts: Vec<Value> = store
        .active_alerts(q.cluster.as_deref())
        .await?
        .iter()
        .map(view)
        .collect();
    let groups = store.alert_groups().await?;
    let groups: Vec<&crate::store::alerts::AlertGroupRow> = groups
        .iter()
        .filter(|g| {
            q.cluster
                .as_ref()
                .is_none_or(|c| g.state.group_key.starts_with(&format!("{c}/")))
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts, "groups": groups })))
}

/// Query of `alerts/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
pub async fn history(
    State(state): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("bad query parameters: {}", e.body_text())))?;
    if let Some(c) = &q.cluster {
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
    let limit = q.limit.unwrap_or(200);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 5000"));
    }
    let alerts = state
        .monitor
        .store()
        .alert_history(q.cluster.as_deref(), q.state.as_deref(), from, to, limit)
        .await?;
    Ok(Json(
        json!({ "from_ms": from, "to_ms": to, "alerts": alerts.iter().map(view).collect::<Vec<_>>() }),
    ))
}

/// Body of `alerts/ack`.
#[derive(Debug, Deserialize)]
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
pub async fn ack(
    State(state): State<AppState>,
    b: Result<Json<AckBody>, JsonRejection>,
) -> ApiResult {
    let b = super::maintenance::body(b)?;
    let now = unix_ms(SystemTime::now());
    let by = if b.by.is_empty() {
        "api"
    } else {
        b.by.as_str()
    };
    if state
        .monitor
        .store()
        .ack_group(&b.group_key, by, &b.comment, now)
        .await?
    {
        Ok(Json(
            json!({ "group_key": b.group_key, "acked_at_ms": now, "acked_by": by }),
        ))
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

/// `GET /api/v1/silences`.
pub async fn silences(State(state): State<AppState>) -> ApiResult {
    let list = alerting(&state)?
        .silences
        .list()
        .await
        .map_err(silence_error)?;
    Ok(Json(json!({ "silences": list })))
}

/// `POST /api/v1/silences`: `{"matchers": ["cluster=prod", "alertname=etcdMembersDown"], "ends_at_ms": ..., "comment": "...", "created_by": "..."}`.
pub async fn add_silence(
    State(state): State<AppState>,
    b: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = super::maintenance::body(b)?;
    let s = alerting(&state)?
        .silences
        .add(b)
        .await
        .map_err(silence_error)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))?),
    ))
}

/// `DELETE /api/v1/silences/{id}`.
pub async fn delete_silence(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    alerting(&state)?
        .silences
        .delete(&id)
        .await
        .map_err(silence_error)?;
    Ok(Json(json!({ "deleted": id })))
}
