//! `POST /api/v1/benchmarks` (starts a run, answers 202 with its id at
//! once), `GET /api/v1/benchmarks`, `GET /api/v1/benchmarks/{id}`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::extract::{Body, Params};
use super::{ApiError, AppState};
use crate::bench::BenchSpec;
use crate::benchmarks::StartError;

/// `POST /api/v1/benchmarks`: `{"cluster": "...", "slo": "p99<50ms", "workload": "put", "total": 1000, ...}`.
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(mut body): Body<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::unprocessable(
            "the body must be a JSON object such as {\"workload\": \"put\", \"total\": 1000}",
        ));
    };
    let cluster_name = match obj.remove("cluster") {
        None | Some(Value::Null) => state.default_cluster()?.name.clone(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "cluster: expected a name, got {other}"
            )));
        }
    };
    let slo = match obj.remove("slo") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "slo: expected text like \"p99<50ms\", got {other}"
            )));
        }
    };
    let spec: BenchSpec = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::unprocessable(if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        })
    })?;
    if !caller.scope.allows(&cluster_name) {
        return Err(caller.out_of_scope(&format!("cluster {cluster_name:?}")));
    }
    state.cluster(&cluster_name)?;
    let cluster = state
        .config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .cloned()
        .ok_or_else(|| ApiError::unknown_cluster(&cluster_name, state.monitor.cluster_names()))?;
    match state
        .bench_runs
        .start(cluster, spec, "api", &caller.label(), slo)
    {
        Ok(record) => Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({ "id": record.id, "state": record.state, "cluster": record.cluster, "workload": record.workload, "started_by": record.started_by, "spec": record.spec }),
            ),
        )),
        Err(StartError::Invalid(m)) => Err(ApiError::unprocessable(m)),
        Err(e @ StartError::Busy(_)) => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "busy",
            message: e.to_string(),
        }),
    }
}

/// Query of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most runs (default 50, at most 500).
    pub limit: Option<usize>,
}

/// `GET /api/v1/benchmarks`.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::handlers::limit(q.limit, 50, 500)?;
    let mut runs = state.bench_runs.list(limit).await?;
    runs.retain(|r| caller.scope.allows(&r.cluster));
    Ok(Json(json!({ "benchmarks": runs })))
}

/// `GET /api/v1/benchmarks/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.bench_runs.get(&id).await? {
        Some(r) if !caller.scope.allows(&r.cluster) => {
            Err(caller.out_of_scope(&format!("cluster {:?}", r.cluster)))
        }
        Some(r) => serde_json::to_value(r)
            .map(Json)
            .map_err(|e| ApiError::internal(e.to_string())),
        None => Err(ApiError::not_found(format!("no benchmark run {id:?}"))),
    }
}

/// `DELETE /api/v1/benchmarks/{id}`: cancels a running benchmark. An
/// operator may cancel the runs it started; an admin any run.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(run) = state.bench_runs.get(&id).await? else {
        return Err(ApiError::not_found(format!("no benchmark run {id:?}")));
    };
    if !caller.scope.allows(&run.cluster) {
        return Err(caller.out_of_scope(&format!("cluster {:?}", run.cluster)));
    }
    if run.started_by != caller.label() && !caller.has(crate::config::Role::Admin) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "benchmark {id} was started by {}: only they or an admin may cancel it",
                if run.started_by.is_empty() {
                    "someone else"
                } else {
                    &run.started_by
                }
            ),
        });
    }
    match state.bench_runs.cancel(&id, &caller.label()) {
        Ok(r) => Ok(Json(
            json!({ "id": r.id, "state": "cancelling", "cancelled_by": r.cancelled_by, "succeeded": r.succeeded }),
        )),
        Err(e @ crate::benchmarks::CancelError::NotRunning { .. }) => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "not_running",
            message: e.to_string(),
        }),
        Err(e) => Err(ApiError::not_found(e.to_string())),
    }
}
