//! `POST /api/v1/benchmarks` (starts a run, answers 202 with its id at
//! once), `GET /api/v1/benchmarks`, `GET /api/v1/benchmarks/{id}`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::extract::{Body, Params};
use super::{ApiError, AppState};
use crate::bench::BenchSpec;
use crate::benchmarks::StartError;

/// `POST /api/v1/benchmarks`: the run started.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkStarted {
    /// The run's id.
    pub id: String,
    /// `running`.
    pub state: String,
    /// Cluster name.
    pub cluster: String,
    /// Workload name.
    pub workload: String,
    /// Who started it.
    pub started_by: String,
    /// The spec as resolved (defaults applied).
    pub spec: crate::bench::BenchSpec,
}

/// `GET /api/v1/benchmarks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkList {
    /// Runs, newest first.
    pub benchmarks: Vec<crate::benchmarks::RunRecord>,
}

/// `DELETE /api/v1/benchmarks/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkCancelled {
    /// The run's id.
    pub id: String,
    /// `cancelling`: it cleans up, then is recorded as cancelled.
    pub state: String,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// Operations done so far.
    pub succeeded: u64,
}

/// The errors starting a run may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes the answers to the OpenAPI document only
enum StartErrors {
    /// Malformed body.
    #[response(status = 400, description = "Malformed body")]
    Malformed(super::ErrorBody),
    /// Unknown cluster.
    #[response(status = 404, description = "Unknown cluster")]
    UnknownCluster(super::ErrorBody),
    /// One run per cluster.
    #[response(status = 409, description = "A run is going on that cluster")]
    Busy(super::ErrorBody),
    /// Invalid spec, or over the limits.
    #[response(status = 422, description = "Invalid spec, or beyond benchmark.limits")]
    Invalid(super::ErrorBody),
}

/// `POST /api/v1/benchmarks`: `{"cluster": "...", "slo": "p99<50ms", "workload": "put", "total": 1000, ...}`.
#[utoipa::path(post, path = "/api/v1/benchmarks", tag = "benchmarks",
    request_body(content = Object, description = "A `BenchSpec` (see its schema: `workload`, `total` or `duration`, `clients`, `rate`, ...) with two more fields: `cluster` (default: the first) and `slo` (e.g. `p99<50ms`)."),
    responses((status = 202, description = "Started", body = BenchmarkStarted), StartErrors))]
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(mut body): Body<Value>,
) -> Result<(StatusCode, Json<BenchmarkStarted>), ApiError> {
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
    start_run(&state, &caller, cluster_name, spec, slo)
}

/// Starts `spec` on the cluster for `caller`: scope, limits, one run per
/// cluster; answers 202 with the run.
fn start_run(
    state: &AppState,
    caller: &Principal,
    cluster_name: String,
    spec: BenchSpec,
    slo: Option<String>,
) -> Result<(StatusCode, Json<BenchmarkStarted>), ApiError> {
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
            Json(BenchmarkStarted {
                id: record.id,
                state: record.state,
                cluster: record.cluster,
                workload: record.workload,
                started_by: record.started_by,
                spec: record.spec,
            }),
        )),
        Err(StartError::Invalid(m)) => Err(ApiError::unprocessable(m)),
        Err(e @ StartError::Busy(_)) => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "busy",
            message: e.to_string(),
        }),
    }
}

/// `POST /api/v1/performance/benchmark`: the Go original's request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyBenchmark {
    /// Operations in all (`total`).
    pub operations: u64,
    /// `write` (default), `read` or `mixed`.
    #[serde(default, rename = "type")]
    pub kind: Option<crate::bench::LegacyBenchmarkType>,
    /// Cluster name; default: the first configured.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// `POST /api/v1/performance/benchmark`: the Go original's spelling of
/// `POST /api/v1/benchmarks` with `{"workload": "put", "total": N}`. The
/// same run, limits, roles and audit; the answer carries `Deprecation` and
/// a `Link` to the successor.
#[utoipa::path(post, path = "/api/v1/performance/benchmark", tag = "benchmarks",
    request_body = LegacyBenchmark,
    responses((status = 202, description = "Started; follow it at /api/v1/benchmarks/{id}", body = BenchmarkStarted), StartErrors))]
pub async fn start_legacy(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(body): Body<LegacyBenchmark>,
) -> Result<(StatusCode, Json<BenchmarkStarted>), ApiError> {
    let cluster_name = match body.cluster {
        Some(c) => c,
        None => state.default_cluster()?.name.clone(),
    };
    let spec = BenchSpec {
        workload: body.kind.unwrap_or_default().workload(),
        total: Some(body.operations),
        ..BenchSpec::default()
    };
    start_run(&state, &caller, cluster_name, spec, None)
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most runs (default 50, at most 500).
    pub limit: Option<usize>,
}

/// `GET /api/v1/benchmarks`.
#[utoipa::path(get, path = "/api/v1/benchmarks", operation_id = "list_benchmarks", tag = "benchmarks", params(ListQuery), responses(
    (status = 200, description = "Runs, newest first", body = BenchmarkList),
    (status = 400, description = "Bad parameters", body = super::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<ListQuery>,
) -> Result<Json<BenchmarkList>, ApiError> {
    let limit = super::handlers::limit(q.limit, 50, 500)?;
    let mut runs = state.bench_runs.list(limit).await?;
    runs.retain(|r| caller.scope.allows(&r.cluster));
    Ok(Json(BenchmarkList { benchmarks: runs }))
}

/// `GET /api/v1/benchmarks/{id}`.
#[utoipa::path(get, path = "/api/v1/benchmarks/{id}", tag = "benchmarks",
    params(("id" = String, Path, description = "The run's id")), responses(
    (status = 200, description = "One run with its report", body = crate::benchmarks::RunRecord),
    (status = 404, description = "No such run", body = super::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<crate::benchmarks::RunRecord>, ApiError> {
    match state.bench_runs.get(&id).await? {
        Some(r) if !caller.scope.allows(&r.cluster) => {
            Err(caller.out_of_scope(&format!("cluster {:?}", r.cluster)))
        }
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::not_found(format!("no benchmark run {id:?}"))),
    }
}

/// `DELETE /api/v1/benchmarks/{id}`: cancels a running benchmark. An
/// operator may cancel the runs it started; an admin any run.
#[utoipa::path(delete, path = "/api/v1/benchmarks/{id}", tag = "benchmarks",
    params(("id" = String, Path, description = "The run's id")), responses(
    (status = 200, description = "Cancelling", body = BenchmarkCancelled),
    (status = 403, description = "Started by someone else (admins may cancel any run)", body = super::ErrorBody),
    (status = 404, description = "No such run", body = super::ErrorBody), (status = 409, description = "Not running", body = super::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BenchmarkCancelled>, ApiError> {
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
        Ok(r) => Ok(Json(BenchmarkCancelled {
            id: r.id,
            state: "cancelling".into(),
            cancelled_by: r.cancelled_by,
            succeeded: r.succeeded,
        })),
        Err(e @ crate::benchmarks::CancelError::NotRunning { .. }) => Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "not_running",
            message: e.to_string(),
        }),
        Err(e) => Err(ApiError::not_found(e.to_string())),
    }
}
