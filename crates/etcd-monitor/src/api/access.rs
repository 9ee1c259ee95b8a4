//! The one layer every request passes: which routes need which role
//! ([`Access`], from the table next to the router), browser safety (Host,
//! Origin, Content-Type), authentication, the caller's cluster scope, and
//! the audit record of every state-changing request and every refusal.
//!
//! A route that has no entry in the table is refused (fail closed), and a
//! test walks the table and the OpenAPI document so that cannot ship.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::audit::{AuditLog, AuditRecord, summarize_body};
use super::auth::{Authenticator, Denied, Principal};
use crate::config::{ApiConfig, Role, listen_host};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without even a Host check: liveness and readiness probes
    /// (load balancers send whatever Host they like).
    Probe,
    /// Anyone: the dashboard's static page and assets, which hold no data
    /// and must load before a browser can ask for a token.
    Public,
    /// `viewer`, or anyone when `api.auth.public_metrics` is set.
    Metrics,
    /// At least this role.
    Role(Role),
}

impl Access {
    /// The role needed, given `public_metrics`.
    fn needs(self, public_metrics: bool) -> Option<Role> {
        match self {
            Access::Probe | Access::Public => None,
            Access::Metrics if public_metrics => None,
            Access::Metrics => Some(Role::Viewer),
            Access::Role(r) => Some(r),
        }
    }
}

/// One row of the permission table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    /// HTTP method (`HEAD` is served as `GET`).
    pub method: Method,
    /// The route as registered (`/api/v1/clusters/{name}/status`).
    pub path: String,
    /// Who may call it.
    pub access: Access,
}

/// What a connection tells about its peer: inserted into every request by
/// the server (`api::server`).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The subject CN of a client certificate verified against
    /// `api.tls.client_ca_file`.
    pub client_cn: Option<String>,
}

/// The largest request body the API reads (bodies are small JSON objects).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Everything the layer needs, built once at start.
pub struct AccessControl {
    table: HashMap<(Method, String), Access>,
    methods_of: HashMap<String, Vec<Method>>,
    auth: Authenticator,
    hosts: HostPolicy,
    cors_origins: Vec<String>,
    public_metrics: bool,
    default_cluster: Option<String>,
    audit: AuditLog,
    requests: Arc<tokio::sync::Semaphore>,
    body_timeout: std::time::Duration,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("routes", &self.table.len())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl AccessControl {
    /// The layer's state for `routes` under `api`.
    pub fn new(
        routes: &[RouteAccess],
        api: &ApiConfig,
        auth: Authenticator,
        default_cluster: Option<String>,
        audit: AuditLog,
    ) -> AccessControl {
        let mut table = HashMap::new();
        let mut methods_of: HashMap<String, Vec<Method>> = HashMap::new();
        for r in routes {
            table.insert((r.method.clone(), r.path.clone()), r.access);
            methods_of
                .entry(r.path.clone())
                .or_default()
                .push(r.method.clone());
        }
        AccessControl {
            table,
            methods_of,
            auth,
            hosts: HostPolicy::new(api),
            cors_origins: api.cors_origins.clone(),
            public_metrics: api.auth.public_metrics,
            default_cluster,
            audit,
            requests: Arc::new(tokio::sync::Semaphore::new(api.max_requests)),
            body_timeout: api.body_timeout,
        }
    }

    /// The audit log this layer writes.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }
}

/// Whether `method` changes state (and so is audited and CSRF-checked).
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Reads that load a cluster (a keyspace scan): audited, with their query,
/// like changes.
const AUDITED_READS: [&str; 2] = [
    "/api/v1/clusters/{name}/keyspace",
    "/api/v1/cluster/keyspace",
];

/// What is known about the request while it passes the layer.
struct Pending {
    method: Method,
    path: String,
    source: String,
    request_id: String,
    cluster: Option<String>,
    principal: Option<Principal>,
    /// Who was refused when no principal could be made (a valid JWT
    /// without a role).
    principal_label: Option<String>,
    body: Option<String>,
}

impl Pending {
    fn record(&self, status: StatusCode) -> AuditRecord {
        let (principal, role) = match &self.principal {
            Some(p) => (p.label(), p.role.map(|r| r.as_str().to_string())),
            None => (
                self.principal_label
                    .clone()
                    .unwrap_or_else(|| "unauthenticated".into()),
                None,
            ),
        };
        AuditRecord {
            at_ms: crate::store::unix_ms(std::time::SystemTime::now()),
            principal,
            role,
            source: self.source.clone(),
            method: self.method.to_string(),
            path: self.path.clone(),
            cluster: self.cluster.clone(),
            body: self.body.clone(),
            status: status.as_u16(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn enforce(State(ac): State<Arc<AccessControl>>, req: Request, next: Next) -> Response {
    let lookup = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let Some(template) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        // No route matched: the fallback answers 404 and reveals nothing.
        return next.run(req).await;
    };
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let mut pending = Pending {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        source: conn
            .as_ref()
            .map_or_else(|| "unknown".into(), |c| c.remote.ip().to_string()),
        request_id: req
            .headers()
            .get(super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        cluster: cluster_of(&template, req.uri().path(), ac.default_cluster.as_deref()),
        principal: None,
        principal_label: None,
        body: None,
    };
    let access = match ac.table.get(&(lookup, template.clone())) {
        Some(a) => *a,
        None => {
            if let Some(methods) = ac.methods_of.get(&template) {
                let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
                let mut resp = ApiError {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    code: "method_not_allowed",
                    message: format!(
                        "{} {} is not a route; use {}",
                        pending.method,
                        template,
                        allow.join(", ")
                    ),
                }
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                return resp;
            }
            tracing::error!(route = %template, method = %pending.method, "route without a permission entry refused");
            return deny(
                &ac,
                &pending,
                ApiError {
                    status: StatusCode::FORBIDDEN,
                    code: "no_permission_entry",
                    message: format!(
                        "{} {template} has no entry in the permission table, so nobody may call it",
                        pending.method
                    ),
                },
            )
            .await;
        }
    };
    if access == Access::Probe {
        return next.run(req).await;
    }
    // Load shedding: a flood of requests is answered 503 at once instead of
    // queueing until everything times out. Probes pass above; event streams
    // have their own limit and hold this permit only until they start.
    let Ok(_in_flight) = ac.requests.clone().try_acquire_owned() else {
        return ApiError::overloaded(
            "too many requests in progress (api.max_requests); retry shortly",
        )
        .into_response();
    };
    if let Err(e) = ac.hosts.check(req.headers(), req.uri()) {
        return deny(&ac, &pending, e).await;
    }
    let changing = is_state_changing(&pending.method);
    let needs = access.needs(ac.public_metrics);
    // Who is asking, first: so every refusal below names the caller.
    if needs.is_some() {
        let authorization = match req.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(s) => Some(s),
                Err(_) => {
                    let e = unauthorized("the Authorization header is not valid text");
                    return deny(&ac, &pending, e).await;
                }
            },
        };
        let client_cn = conn.as_ref().and_then(|c| c.client_cn.as_deref());
        match ac.auth.authenticate(authorization, client_cn).await {
            Ok(p) => pending.principal = Some(p),
            Err(Denied::Unauthenticated(m)) => {
                return deny(&ac, &pending, unauthorized(&m)).await;
            }
            Err(Denied::Forbidden(m, who)) => {
                pending.principal_label = Some(who);
                return deny(&ac, &pending, forbidden(m)).await;
            }
        }
    }
    if changing {
        let scheme = if conn.as_ref().is_some_and(|c| c.tls) {
            "https"
        } else {
            "http"
        };
        if let Err(e) = check_origin(req.headers(), req.uri(), scheme, &ac.cors_origins) {
            return deny(&ac, &pending, e).await;
        }
        if let Err(e) = check_json(req.headers()) {
            return deny(&ac, &pending, e).await;
        }
    }
    if let (Some(needs), Some(principal)) = (needs, &pending.principal) {
        if !principal.has(needs) {
            let e = match principal.role {
                None => unauthorized(&format!(
                    "{} {template} needs the role {needs}: send Authorization: Bearer <token>",
                    pending.method
                )),
                Some(have) => forbidden(format!(
                    "{} {template} needs the role {needs}; {} has the role {have}",
                    pending.method,
                    principal.label()
                )),
            };
            return deny(&ac, &pending, e).await;
        }
        if let Some(cluster) = &pending.cluster {
            if !principal.scope.allows(cluster) {
                let e = principal.out_of_scope(&format!("cluster {cluster:?}"));
                return deny(&ac, &pending, e).await;
            }
        }
    }
    let mut req = req;
    if let Some(p) = &pending.principal {
        req.extensions_mut().insert(p.clone());
    }
    if !changing {
        let audited = AUDITED_READS.contains(&template.as_str());
        if audited {
            // The query as a JSON object, summarized like a body.
            pending.body = req.uri().query().map(|q| {
                let fields: serde_json::Map<String, serde_json::Value> =
                    url::form_urlencoded::parse(q.as_bytes())
                        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                        .collect();
                summarize_body(serde_json::Value::Object(fields).to_string().as_bytes())
            });
        }
        let resp = next.run(req).await;
        if audited {
            ac.audit.write(pending.record(resp.status())).await;
            return resp;
        }
        // Refusals decided by a handler (a cluster out of scope in a query).
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            ac.audit.write_denial(pending.record(resp.status())).await;
        }
        return resp;
    }
    // State-changing: keep a summary of the body for the audit record.
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(ac.body_timeout, axum::body::to_bytes(body, MAX_BODY_BYTES));
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            let e = ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "body_timeout",
                message: format!(
                    "the request body did not arrive within {} (api.body_timeout)",
                    crate::config::duration::format(&ac.body_timeout)
                ),
            };
            return deny(&ac, &pending, e).await;
        }
        Ok(Err(_)) => {
            let e = ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
            };
            return deny(&ac, &pending, e).await;
        }
    };
    pending.body = Some(summarize_body(&bytes));
    if pending.cluster.is_none() {
        pending.cluster = body_cluster(&bytes);
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    ac.audit.write(pending.record(resp.status())).await;
    resp
}

/// Answers `e` and records the refusal.
async fn deny(ac: &AccessControl, pending: &Pending, e: ApiError) -> Response {
    let status = e.status;
    let mut resp = e.into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"etcd-monitor\""),
        );
    }
    ac.audit.write_denial(pending.record(status)).await;
    resp
}

fn unauthorized(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: message.to_string(),
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: "forbidden",
        message,
    }
}

/// The cluster a route acts on: its `{name}` segment, or the default
/// cluster for `/api/v1/cluster/...`.
fn cluster_of(template: &str, path: &str, default_cluster: Option<&str>) -> Option<String> {
    if template.starts_with("/api/v1/cluster/") {
        return default_cluster.map(str::to_string);
    }
    let index = template.split('/').position(|s| s == "{name}")?;
    let raw = path.split('/').nth(index)?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// A `cluster` field of a JSON body (benchmarks), or the cluster part of a
/// `group_key` (`cluster/rule`, acknowledgements).
fn body_cluster(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(c) = v.get("cluster").and_then(|c| c.as_str()) {
        return Some(c.to_string());
    }
    v.get("group_key")
        .and_then(|g| g.as_str())
        .and_then(|g| g.split_once('/'))
        .map(|(c, _)| c.to_string())
}

/// `Host` values the server answers (DNS rebinding).
#[derive(Debug)]
struct HostPolicy {
    any: bool,
    names: Vec<String>,
    any_ip: bool,
}

impl HostPolicy {
    fn new(api: &ApiConfig) -> HostPolicy {
        if api.allowed_hosts.iter().any(|h| h == "*") {
            return HostPolicy {
                any: true,
                names: Vec::new(),
                any_ip: true,
            };
        }
        let listen = listen_host(&api.listen);
        let mut names: Vec<String> = if api.allowed_hosts.is_empty() {
            let mut v = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
            v.extend(listen.clone());
            v
        } else {
            api.allowed_hosts.clone()
        };
        for n in &mut names {
            *n = normalize_host(n);
        }
        HostPolicy {
            any: false,
            names,
            // Listening on every interface: clients reach us by any of its
            // addresses (Prometheus scrapes a pod by its IP while people use
            // a name). An IP address cannot be rebound; names must be listed.
            any_ip: listen.is_none(),
        }
    }

    fn check(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), ApiError> {
        if self.any {
            return Ok(());
        }
        let given = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.to_string()));
        let Some(given) = given else {
            return Err(misdirected(
                "the request has no Host header; send the host name the API is reached by".into(),
            ));
        };
        let host = normalize_host(strip_port(&given));
        if self.names.contains(&host)
            || (self.any_ip && host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok())
        {
            Ok(())
        } else {
            Err(misdirected(format!(
                "Host {host:?} is not one this API answers; add it to api.allowed_hosts"
            )))
        }
    }
}

fn misdirected(message: String) -> ApiError {
    ApiError {
        status: StatusCode::MISDIRECTED_REQUEST,
        code: "host_not_allowed",
        message,
    }
}

fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `host:port` → `host`, `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A state-changing request from a browser must come from our own origin or
/// one listed in `api.cors_origins` (`*` there allows reading only).
fn check_origin(
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    scheme: &str,
    cors_origins: &[String],
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let own = format!("{scheme}://{host}");
    if origin == own
        || cors_origins
            .iter()
            .any(|o| o != "*" && o.to_ascii_lowercase() == origin)
    {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: "origin_not_allowed",
        message: format!(
            "a state-changing request from origin {origin:?} is refused: only {own} and api.cors_origins may change state"
        ),
    })
}

/// State-changing requests carry JSON: an HTML form cannot send it, so a
/// page elsewhere cannot post to us without a CORS preflight.
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: format!(
                "state-changing requests need Content-Type: application/json (got {:?})",
                if ct.is_empty() { "none" } else { ct }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_ports_and_clusters_from_paths() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(
            cluster_of(
                "/api/v1/clusters/{name}/status",
                "/api/v1/clusters/prod%2Deu/status",
                None
            ),
            Some("prod-eu".into())
        );
        assert_eq!(
            cluster_of(
                "/api/v1/cluster/status",
                "/api/v1/cluster/status",
                Some("a")
            ),
            Some("a".into())
        );
        assert_eq!(
            cluster_of("/api/v1/alerts", "/api/v1/alerts", Some("a")),
            None
        );
        assert_eq!(
            body_cluster(br#"{"group_key": "b/etcdNoLeader"}"#),
            Some("b".into())
        );
    }

    #[test]
    fn the_default_host_policy_follows_the_listen_address() {
        let headers = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            m
        };
        let uri: axum::http::Uri = "/".parse().unwrap();
        let local = HostPolicy::new(&ApiConfig::default());
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.",
            "[::1]:8080",
        ] {
            assert!(local.check(&headers(ok), &uri).is_ok(), "{ok}");
        }
        for bad in ["attacker.example:8080", "10.0.0.1:8080"] {
            let e = local.check(&headers(bad), &uri).unwrap_err();
            assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST, "{bad}");
        }
        let all = HostPolicy::new(&ApiConfig {
            listen: "0.0.0.0:8080".into(),
            ..ApiConfig::default()
        });
        assert!(all.check(&headers("10.0.0.1:8080"), &uri).is_ok());
        assert!(all.check(&headers("rebind.example"), &uri).is_err());
        let listed = HostPolicy::new(&ApiConfig {
            listen: "0.0.0.0:8080".into(),
            allowed_hosts: vec!["Monitor.Example.com".into()],
            ..ApiConfig::default()
        });
        assert!(
            listed
                .check(&headers("monitor.example.com:443"), &uri)
                .is_ok()
        );
        assert!(listed.check(&headers("10.0.0.1:8080"), &uri).is_ok());
        assert!(listed.check(&headers("rebind.example"), &uri).is_err());
        let one_address = HostPolicy::new(&ApiConfig {
            listen: "10.0.0.2:8080".into(),
            allowed_hosts: vec!["monitor.example.com".into()],
            ..ApiConfig::default()
        });
        assert!(one_address.check(&headers("10.0.0.1:8080"), &uri).is_err());
    }

    #[test]
    fn browser_checks_for_state_changing_requests() {
        let uri: axum::http::Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(
            check_origin(&h, &uri, "http", &[]).is_ok(),
            "no Origin: not a browser"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&h, &uri, "http", &[]).is_ok(), "same origin");
        assert!(
            check_origin(&h, &uri, "https", &[]).is_err(),
            "scheme differs"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&h, &uri, "http", &["*".into()]).is_err());
        assert!(check_origin(&h, &uri, "http", &["https://evil.example".into()]).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h, &uri, "http", &[]).is_err());

        let mut h = HeaderMap::new();
        assert!(check_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(
            check_json(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_json(&h).is_ok());
    }
}
