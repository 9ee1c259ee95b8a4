//! The HTTP server: REST API under `/api/v1`, Prometheus `/metrics`, the
//! dashboard at `/`, server-sent events. Handlers are thin: they read the
//! latest snapshots or the history store and serialize.

pub mod access;
mod alerts;
pub mod audit;
pub mod auth;
mod backups;
mod benchmarks;
mod error;
mod events;
pub mod extract;
mod handlers;
mod keyspace;
mod maintenance;
pub mod openapi;
mod prom;
mod replicas;
mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use access::{Access, AccessControl, RouteAccess};
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ErrorBody, ErrorDetail};

use crate::config::{Config, Role};
use crate::monitor::{ClusterHandle, Monitor};

/// What every handler can read.
#[derive(Clone)]
pub struct AppState {
    /// The running monitor.
    pub monitor: Monitor,
    /// The alert engine's handle (silences, acknowledgements).
    pub alerting: crate::alert::Alerting,
    /// The configuration (secrets never serialized from here).
    pub config: Arc<Config>,
    /// When the server started.
    pub started: Instant,
    /// Wall-clock start, for `process_start_time_seconds`.
    pub started_at: SystemTime,
    /// Benchmark runs.
    pub bench_runs: crate::benchmarks::BenchRuns,
    /// Firing alerts counted for `/metrics`, refreshed at most every 2 s so
    /// scrapes do not query the store each time.
    pub firing_cache: Arc<tokio::sync::Mutex<FiringCache>>,
    /// Cancelled at shutdown: ends event streams, which would otherwise
    /// keep their connections open.
    pub shutdown: CancellationToken,
    /// One maintenance operation per cluster at a time.
    pub maintenance: Arc<maintenance::MaintenanceGate>,
    /// Permits of open event streams (`api.max_event_streams`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
}

/// Counts of firing alerts by (cluster, alertname, severity), and when taken.
#[derive(Debug, Default)]
pub struct FiringCache {
    taken: Option<Instant>,
    counts: std::collections::BTreeMap<(String, String, String), u64>,
}

impl AppState {
    /// A cluster's handle, or a 404 naming the configured clusters.
    pub fn cluster(&self, name: &str) -> Result<&ClusterHandle, ApiError> {
        self.monitor
            .cluster(name)
            .ok_or_else(|| ApiError::unknown_cluster(name, self.monitor.cluster_names()))
    }

    /// The default cluster (the first configured).
    pub fn default_cluster(&self) -> Result<&ClusterHandle, ApiError> {
        self.monitor
            .default_cluster()
            .ok_or_else(|| ApiError::not_found("no cluster is configured"))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes served both per cluster (`/api/v1/clusters/{name}...`) and for
/// the default cluster (`/api/v1/cluster...`), with who may call them.
const CLUSTER_ROUTES: [(Method, &str, Access); 17] = [
    (Method::GET, "/status", Access::Role(Role::Viewer)),
    (Method::GET, "/members", Access::Role(Role::Viewer)),
    (Method::GET, "/leader", Access::Role(Role::Viewer)),
    (Method::GET, "/metrics/current", Access::Role(Role::Viewer)),
    (Method::GET, "/metrics/latency", Access::Role(Role::Viewer)),
    (Method::GET, "/metrics/history", Access::Role(Role::Viewer)),
    (Method::GET, "/history", Access::Role(Role::Viewer)),
    (
        Method::POST,
        "/maintenance/snapshot",
        Access::Role(Role::Operator),
    ),
    (
        Method::POST,
        "/maintenance/defrag",
        Access::Role(Role::Admin),
    ),
    (
        Method::POST,
        "/maintenance/compact",
        Access::Role(Role::Admin),
    ),
    (
        Method::POST,
        "/maintenance/alarm-disarm",
        Access::Role(Role::Admin),
    ),
    (
        Method::POST,
        "/maintenance/move-leader",
        Access::Role(Role::Admin),
    ),
    // Reads every key and shows key names, and loads the cluster (paced).
    (Method::GET, "/keyspace", Access::Role(Role::Operator)),
    (Method::GET, "/keyspace/scans", Access::Role(Role::Operator)),
    (
        Method::GET,
        "/keyspace/growth",
        Access::Role(Role::Operator),
    ),
    (Method::GET, "/keyspace/hot", Access::Role(Role::Operator)),
    (
        Method::GET,
        "/maintenance/defrag/runs",
        Access::Role(Role::Viewer),
    ),
];

/// Every other route, with who may call it.
const ROUTES: [(Method, &str, Access); 25] = [
    (Method::GET, "/health", Access::Probe),
    (Method::GET, "/ready", Access::Probe),
    (Method::GET, "/", Access::Public),
    (Method::GET, "/runbooks", Access::Public),
    (Method::GET, "/assets/app.js", Access::Public),
    (Method::GET, "/assets/style.css", Access::Public),
    (Method::GET, "/metrics", Access::Metrics),
    (
        Method::GET,
        "/api/v1/openapi.json",
        Access::Role(Role::Viewer),
    ),
    (Method::GET, "/api/v1/whoami", Access::Role(Role::Viewer)),
    (Method::GET, "/api/v1/clusters", Access::Role(Role::Viewer)),
    (Method::GET, "/api/v1/events", Access::Role(Role::Viewer)),
    (Method::GET, "/api/v1/alerts", Access::Role(Role::Viewer)),
    (
        Method::GET,
        "/api/v1/alerts/history",
        Access::Role(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/alerts/ack",
        Access::Role(Role::Operator),
    ),
    (Method::GET, "/api/v1/silences", Access::Role(Role::Viewer)),
    (
        Method::POST,
        "/api/v1/silences",
        Access::Role(Role::Operator),
    ),
    (
        Method::DELETE,
        "/api/v1/silences/{id}",
        Access::Role(Role::Operator),
    ),
    (Method::GET, "/api/v1/replicas", Access::Role(Role::Viewer)),
    (Method::GET, "/api/v1/backups", Access::Role(Role::Viewer)),
    // Loads the cluster (a snapshot streams the whole database) and writes
    // every key to the target.
    (
        Method::POST,
        "/api/v1/backups",
        Access::Role(Role::Operator),
    ),
    (
        Method::GET,
        "/api/v1/benchmarks",
        Access::Role(Role::Viewer),
    ),
    (
        Method::POST,
        "/api/v1/benchmarks",
        Access::Role(Role::Operator),
    ),
    (
        Method::GET,
        "/api/v1/benchmarks/{id}",
        Access::Role(Role::Viewer),
    ),
    (
        Method::DELETE,
        "/api/v1/benchmarks/{id}",
        Access::Role(Role::Operator),
    ),
    (Method::GET, "/api/v1/audit", Access::Role(Role::Admin)),
];

/// The Go original's spellings, kept for its users: `(method, alias,
/// successor)`. An alias needs the successor's role, answers with
/// `Deprecation: @<date>` and a `Link` to the successor, and is marked
/// deprecated in the OpenAPI document.
pub const LEGACY_ROUTES: [(Method, &str, &str); 4] = [
    (
        Method::GET,
        "/api/v1/metrics/current",
        "/api/v1/cluster/metrics/current",
    ),
    (
        Method::GET,
        "/api/v1/metrics/history",
        "/api/v1/cluster/metrics/history",
    ),
    (
        Method::GET,
        "/api/v1/metrics/latency",
        "/api/v1/cluster/metrics/latency",
    ),
    (
        Method::POST,
        "/api/v1/performance/benchmark",
        "/api/v1/benchmarks",
    ),
];

/// The successor of a legacy route, if `method` `path` is one.
pub fn legacy_successor(method: &Method, path: &str) -> Option<&'static str> {
    LEGACY_ROUTES
        .iter()
        .find(|(m, alias, _)| m == method && *alias == path)
        .map(|(_, _, successor)| *successor)
}

/// When the legacy routes were deprecated (2026-11-29T00:00:00Z), as RFC
/// 9745's `Deprecation` header writes it: a structured-field date.
pub const LEGACY_DEPRECATED_SINCE: &str = "@1795910400";

/// Marks the answers of the legacy routes as deprecated (RFC 9745's
/// `Deprecation` with the date, and the successor as an RFC 8288 `Link`).
async fn mark_deprecated(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let successor = legacy_successor(req.method(), req.uri().path());
    let mut response = next.run(req).await;
    if let Some(successor) = successor {
        let headers = response.headers_mut();
        headers.insert(
            "deprecation",
            HeaderValue::from_static(LEGACY_DEPRECATED_SINCE),
        );
        if let Ok(link) =
            HeaderValue::from_str(&format!("<{successor}>; rel=\"successor-version\""))
        {
            headers.insert(axum::http::header::LINK, link);
        }
    }
    response
}

/// The permission table: every route the router serves and who may call
/// it. The access layer refuses a route that is missing here.
pub fn route_table() -> Vec<RouteAccess> {
    let mut out: Vec<RouteAccess> = ROUTES
        .iter()
        .map(|(method, path, access)| RouteAccess {
            method: method.clone(),
            path: (*path).to_string(),
            access: *access,
        })
        .collect();
    for prefix in ["/api/v1/clusters/{name}", "/api/v1/cluster"] {
        out.extend(
            CLUSTER_ROUTES
                .iter()
                .map(|(method, path, access)| RouteAccess {
                    method: method.clone(),
                    path: format!("{prefix}{path}"),
                    access: *access,
                }),
        );
    }
    for (method, alias, successor) in &LEGACY_ROUTES {
        let access = out
            .iter()
            .find(|r| r.method == method && r.path == *successor)
            .map(|r| r.access);
        if let Some(access) = access {
            out.push(RouteAccess {
                method: method.clone(),
                path: (*alias).to_string(),
                access,
            });
        }
    }
    out
}

/// The whole router, every request through `access`.
pub fn router(state: AppState, access: Arc<AccessControl>) -> Router {
    let per_cluster = Router::new()
        .route("/status", get(handlers::status))
        .route("/members", get(handlers::members))
        .route("/leader", get(handlers::leader))
        .route("/metrics/current", get(handlers::metrics_current))
        .route("/metrics/latency", get(handlers::metrics_latency))
        .route("/metrics/history", get(handlers::metrics_history))
        .route("/history", get(handlers::history))
        .route("/maintenance/defrag", post(maintenance::defrag))
        .route("/maintenance/defrag/runs", get(maintenance::defrag_runs))
        .route("/maintenance/compact", post(maintenance::compact))
        .route("/maintenance/snapshot", post(maintenance::snapshot))
        .route("/maintenance/alarm-disarm", post(maintenance::alarm_disarm))
        .route("/maintenance/move-leader", post(maintenance::move_leader))
        .route("/keyspace", get(keyspace::scan))
        .route("/keyspace/scans", get(keyspace::scans))
        .route("/keyspace/growth", get(keyspace::growth))
        .route("/keyspace/hot", get(keyspace::hot));
    let api = Router::new()
        .route("/clusters", get(handlers::clusters))
        // One set of handlers: the `Cluster` extractor picks the named or the default cluster.
        .nest("/clusters/{name}", per_cluster.clone())
        .nest("/cluster", per_cluster)
        .route("/whoami", get(handlers::whoami))
        .route("/events", get(events::sse))
        .route("/alerts", get(alerts::active))
        .route("/alerts/history", get(alerts::history))
        .route("/alerts/ack", post(alerts::ack))
        .route("/silences", get(alerts::silences).post(alerts::add_silence))
        .route(
            "/silences/{id}",
            axum::routing::delete(alerts::delete_silence),
        )
        .route("/backups", get(backups::list).post(backups::now))
        .route("/replicas", get(replicas::list))
        .route("/benchmarks", get(benchmarks::list).post(benchmarks::start))
        .route(
            "/benchmarks/{id}",
            get(benchmarks::get).delete(benchmarks::cancel),
        )
        .route("/audit", get(audit::list))
        .route("/openapi.json", get(openapi::serve))
        // LEGACY_ROUTES: the Go original's spellings.
        .route("/metrics/current", get(handlers::metrics_current))
        .route("/metrics/history", get(handlers::metrics_history))
        .route("/metrics/latency", get(handlers::metrics_latency))
        .route("/performance/benchmark", post(benchmarks::start_legacy));

    let cors = cors_layer(&state.config.api.cors_origins);
    Router::new()
        .route("/", get(dashboard_index))
        .route("/runbooks", get(runbooks))
        .route("/assets/app.js", get(dashboard_js))
        .route("/assets/style.css", get(dashboard_css))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(prom::metrics))
        .nest("/api/v1", api)
        .fallback(handlers::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(mark_deprecated))
        .layer(axum::middleware::from_fn_with_state(access, access::enforce))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
        ]);
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        base.allow_origin(AllowOrigin::list(list))
    }
}

/// The application behind the listener: the router with its access layer
/// (authentication from `api.auth`, the audit log in the monitor's store).
pub async fn app(state: AppState) -> Result<(Router, Arc<AccessControl>), String> {
    let api = &state.config.api;
    let authenticator = auth::Authenticator::from_config(api).await?;
    maintenance::remove_stale_parts(&api.snapshot_dir);
    let access = Arc::new(AccessControl::new(
        &route_table(),
        api,
        authenticator,
        state.monitor.default_cluster().map(|c| c.name.clone()),
        audit::AuditLog::new(state.monitor.store().clone()),
    ));
    Ok((router(state, access.clone()), access))
}

/// Binds `api.listen` and serves until `token` is cancelled: TLS when
/// `api.tls` is set, every request through the access layer. Returns the
/// bound address (useful with port 0) and the server task.
pub async fn serve(
    state: AppState,
    token: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let api = &state.config.api;
    let tls = match &api.tls {
        Some(files) => Some(Arc::new(tls::TlsSetup::load(files)?)),
        None => None,
    };
    let (app, access) = app(state.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .map_err(|e| format!("cannot listen on api.listen {}: {e}", api.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("api.listen {}: {e}", api.listen))?;
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(token.clone()));
    }
    let flusher = access;
    let flush_token = token.clone();
    tokio::spawn(async move {
        // Every second: audit records the store could not take yet; every
        // minute: the summaries of refusals left out.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut seconds = 0u64;
        loop {
            tokio::select! {
                _ = flush_token.cancelled() => break,
                _ = tick.tick() => {
                    seconds += 1;
                    if seconds % 60 == 0 {
                        flusher.audit().flush().await;
                    } else {
                        flusher.audit().retry().await;
                    }
                }
            }
        }
    });
    let limits = server::ServerLimits {
        header_timeout: api.header_timeout,
        max_connections: api.max_connections,
    };
    let task = tokio::spawn(server::serve(listener, app, tls, limits, token));
    Ok((addr, task))
}

/// `GET /runbooks`: docs/runbooks.md as a page, one section per alert
/// and finding (what `runbook_url` and the dashboard's findings link to).
async fn runbooks() -> axum::response::Html<&'static str> {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    axum::response::Html(PAGE.get_or_init(|| {
        let markdown = include_str!("../../../../docs/runbooks.md");
        let mut body = String::new();
        let options = pulldown_cmark::Options::ENABLE_TABLES;
        pulldown_cmark::html::push_html(&mut body, pulldown_cmark::Parser::new_ext(markdown, options));
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>etcd-monitor runbooks</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
             </head><body><main class=\"runbooks\">{body}</main></body></html>"
        )
    }))
}

async fn dashboard_index() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard/index.html"))
}

async fn dashboard_js() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("dashboard/app.js"),
    )
}

async fn dashboard_css() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("dashboard/style.css"),
    )
}
