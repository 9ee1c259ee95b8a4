//! Alerts: active alerts with their groups' acknowledgement, alert history,
//! silences (list, add, delete) and acknowledgement of a firing group.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, Scope};
use super::extract::{Body, Params};
use super::{ApiError, AppState};
use crate::alert::silence::{NewSilence, Silence, SilenceError};
use crate::alert::{Alert, Alerting};
use crate::store::unix_ms;

type ApiResult = Result<Json<Value>, ApiError>;

fn alerting(state: &AppState) -> Result<&Alerting, ApiError> {
    Ok(&state.alerting)
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
    Extension(caller): Extension<Principal>,
    Params(q): Params<AlertsQuery>,
) -> ApiResult {
    if let Some(c) = &q.cluster {
        in_scope(&caller, c)?;
        state.cluster(c)?;
    }
    let store = state.monitor.store();
    let alerts: Vec<Value> = store
        .active_alerts(q.cluster.as_deref())
        .await?
        .iter()
        .filter(|a| alert_in_scope(&caller.scope, a))
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
        .filter(|g| group_in_scope(&caller.scope, &g.state.group_key))
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
    Extension(caller): Extension<Principal>,
    Params(q): Params<HistoryQuery>,
) -> ApiResult {
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
    let alerts: Vec<Value> = alerts
        .iter()
        .filter(|a| alert_in_scope(&caller.scope, a))
        .map(view)
        .collect();
    Ok(Json(
        json!({ "from_ms": from, "to_ms": to, "alerts": alerts }),
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
    Extension(caller): Extension<Principal>,
    Body(b): Body<AckBody>,
) -> ApiResult {
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

/// `GET /api/v1/silences`: those the caller may see (a principal limited
/// to some clusters sees silences with a `cluster=` matcher for them).
pub async fn silences(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> ApiResult {
    let list: Vec<Silence> = alerting(&state)?
        .silences
        .list()
        .await
        .map_err(silence_error)?
        .into_iter()
        .filter(|s| silence_in_scope(&caller.scope, s))
        .collect();
    Ok(Json(json!({ "silences": list })))
}

/// `POST /api/v1/silences`: `{"matchers": ["cluster=prod", "alertname=etcdMembersDown"], "ends_at_ms": ..., "comment": "...", "created_by": "..."}`.
pub async fn add_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(mut b): Body<NewSilence>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))?),
    ))
}

/// `DELETE /api/v1/silences/{id}`.
pub async fn delete_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
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
    Ok(Json(json!({ "deleted": id })))
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
