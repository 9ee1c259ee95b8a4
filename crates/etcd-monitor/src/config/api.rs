//! `api.*`: the HTTP server's address, browser rules, TLS and who may call it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address, `host:port`.
    pub listen: String,
    /// Origins allowed by CORS (`https://ops.example.com`, or `*`); none by
    /// default. `*` lets other sites read, never change anything.
    pub cors_origins: Vec<String>,
    /// `Host` header values accepted (DNS rebinding); empty: the listen
    /// host, `localhost`, `127.0.0.1` and `[::1]` (and any IP address when
    /// listening on all interfaces). `*` accepts any host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Where `POST .../maintenance/snapshot` writes snapshots.
    pub snapshot_dir: PathBuf,
    /// Which snapshots in `snapshot_dir` are kept after each new one.
    pub snapshot_retention: SnapshotRetention,
    /// TLS for the API; absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsConfig>,
    /// Who may call the API and with which role.
    pub auth: AuthConfig,
    /// How long a client has to send a request's headers (also how long an
    /// idle keep-alive connection stays open): slow clients cannot hold
    /// connections for ever.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long a client has to send a request's body.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Requests being served at once at most (event streams and
    /// `/health`, `/ready` aside); more are answered 503 with Retry-After.
    pub max_requests: usize,
    /// Open event streams (`/api/v1/events`) at most; more are answered 503.
    pub max_event_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            snapshot_dir: PathBuf::from("./snapshots"),
            snapshot_retention: SnapshotRetention::default(),
            tls: None,
            auth: AuthConfig::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_requests: 256,
            max_event_streams: 64,
        }
    }
}

/// `api.snapshot_retention`: after each snapshot the API saves, older
/// snapshot files (`*.db`) in `api.snapshot_dir` beyond these limits are
/// removed. Unset: kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotRetention {
    /// Keep at most this many, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<usize>,
    /// Remove those older than this.
    #[serde(
        with = "super::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

/// `api.tls`: the server certificate, and client certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle that signs client certificates; set: clients may
    /// authenticate with a certificate whose CN is mapped in
    /// `api.auth.client_cert_roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes (rotated certificates
    /// are picked up without a restart).
    #[serde(with = "duration", default = "default_reload_interval")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// A role of the API, in rising order of power.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything a dashboard shows.
    Viewer,
    /// Viewer, plus silences, acknowledgements, benchmarks, snapshots.
    Operator,
    /// Operator, plus defrag, compact, alarm disarm, move-leader, audit log.
    Admin,
}

impl Role {
    /// The name used in configuration and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `api.auth.anonymous_role`: what a request without credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousRole {
    /// Nothing: credentials are required.
    None,
    /// Read-only.
    Viewer,
    /// Operator.
    Operator,
    /// Everything (a local tool).
    Admin,
}

impl AnonymousRole {
    /// The role, if any.
    pub fn role(self) -> Option<Role> {
        match self {
            AnonymousRole::None => None,
            AnonymousRole::Viewer => Some(Role::Viewer),
            AnonymousRole::Operator => Some(Role::Operator),
            AnonymousRole::Admin => Some(Role::Admin),
        }
    }
}

/// `api.auth`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Role of requests without credentials. Unset: `admin` when nothing
    /// else is configured and the API listens on loopback, else `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_role: Option<AnonymousRole>,
    /// Serve `/metrics` without credentials.
    pub public_metrics: bool,
    /// Static bearer tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    /// JWT bearer tokens from an OIDC provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Role of a client certificate, by its subject CN (needs
    /// `api.tls.client_ca_file`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub client_cert_roles: BTreeMap<String, Role>,
}

impl AuthConfig {
    /// Whether any way to authenticate is configured.
    pub fn any_configured(&self, tls: Option<&ApiTlsConfig>) -> bool {
        !self.tokens.is_empty()
            || self.jwt.is_some()
            || tls.is_some_and(|t| t.client_ca_file.is_some())
    }
}

fn all_clusters() -> Vec<String> {
    vec!["*".into()]
}

/// `api.auth.tokens[]`: one static bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in the audit log and `whoami`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// File holding the token itself (its first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// SHA-256 of the token, hex (`etcd-monitor token new` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Clusters it may see and act on (globs such as `prod-*`).
    #[serde(default = "all_clusters")]
    pub clusters: Vec<String>,
}

fn groups() -> String {
    "groups".into()
}

/// `api.auth.jwt`: JWTs signed by an OIDC provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// JWKS document on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL of the provider (`https://idp.example.com/.well-known/jwks.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Claim holding the caller's groups or roles; a dotted path reaches
    /// into objects (`realm_access.roles`).
    #[serde(default = "groups")]
    pub role_claim: String,
    /// Role per claim value; the highest matching role wins.
    pub roles: BTreeMap<String, Role>,
    /// Clusters JWT callers may see and act on (globs).
    #[serde(default = "all_clusters")]
    pub clusters: Vec<String>,
}

/// Whether `listen` (`host:port`) is a loopback address.
pub fn is_loopback_listen(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

impl ApiConfig {
    /// Semantic checks of `api.*`.
    pub(crate) fn problems(&self, out: &mut Vec<(String, String)>) {
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if !(origin == "*" || is_origin(origin)) {
                out.push((
                    format!("api.cors_origins[{i}]"),
                    format!("{origin:?} is not an origin such as https://ops.example.com, or *"),
                ));
            }
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            out.push((
                "api.listen".into(),
                format!(
                    "{:?} is not a host:port address such as 127.0.0.1:8080",
                    self.listen
                ),
            ));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            let ok = host == "*"
                || (!host.is_empty()
                    && !host.contains(['/', ' ', '@', '?', '#'])
                    && !host.contains("://"));
            if !ok {
                out.push((
                    format!("api.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name such as monitor.example.com, or *"),
                ));
            }
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("max_requests", self.max_requests),
            ("max_event_streams", self.max_event_streams),
        ] {
            if value == 0 {
                out.push((format!("api.{key}"), "must be at least 1".into()));
            }
        }
        for (key, d) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d < Duration::from_millis(100) {
                out.push((format!("api.{key}"), "use at least 100ms".into()));
            }
        }
        if self.snapshot_retention.max_count == Some(0) {
            out.push((
                "api.snapshot_retention.max_count".into(),
                "keep at least 1 (or leave it unset to keep every snapshot)".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [
                ("cert_file", Some(&tls.cert_file)),
                ("key_file", Some(&tls.key_file)),
                ("client_ca_file", tls.client_ca_file.as_ref()),
            ] {
                if let Some(p) = file {
                    if let Err(e) = std::fs::File::open(p) {
                        out.push((
                            format!("api.tls.{key}"),
                            format!("cannot read {}: {e}", p.display()),
                        ));
                    }
                }
            }
            if tls.reload_interval < Duration::from_secs(1) {
                out.push(("api.tls.reload_interval".into(), "use at least 1s".into()));
            }
        }
        self.auth.problems(self.tls.as_ref(), out);
    }
}

impl AuthConfig {
    fn problems(&self, tls: Option<&ApiTlsConfig>, out: &mut Vec<(String, String)>) {
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |key: &str| format!("api.auth.tokens[{i}].{key}");
            if t.name.trim().is_empty() {
                out.push((at("name"), "must not be empty".into()));
            }
            if self.tokens.iter().take(i).any(|o| o.name == t.name) {
                out.push((at("name"), format!("duplicate token name {:?}", t.name)));
            }
            match (&t.token_file, &t.token_sha256) {
                (Some(_), Some(_)) => out.push((
                    at("token_sha256"),
                    "set either token_file or token_sha256, not both".into(),
                )),
                (None, None) => out.push((
                    at("token_sha256"),
                    "set token_sha256 (from `etcd-monitor token new`) or token_file".into(),
                )),
                (Some(p), None) => {
                    if let Err(e) = super::secret::read_secret_file(p) {
                        out.push((at("token_file"), e));
                    }
                }
                (None, Some(hex)) => {
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        out.push((
                            at("token_sha256"),
                            "must be 64 hex digits: the SHA-256 of the token, as `etcd-monitor token new` prints it".into(),
                        ));
                    }
                }
            }
            check_globs(&t.clusters, &at("clusters"), out);
        }
        if let Some(j) = &self.jwt {
            let at = |key: &str| format!("api.auth.jwt.{key}");
            for (key, v) in [
                ("issuer", &j.issuer),
                ("audience", &j.audience),
                ("role_claim", &j.role_claim),
            ] {
                if v.trim().is_empty() {
                    out.push((at(key), "must not be empty".into()));
                }
            }
            match (&j.jwks_file, &j.jwks_url) {
                (Some(_), Some(_)) => out.push((
                    at("jwks_url"),
                    "set either jwks_file or jwks_url, not both".into(),
                )),
                (None, None) => out.push((
                    at("jwks_url"),
                    "set jwks_url (the provider's JWKS endpoint) or jwks_file".into(),
                )),
                (Some(p), None) => {
                    if let Err(e) = std::fs::File::open(p) {
                        out.push((at("jwks_file"), format!("cannot read {}: {e}", p.display())));
                    }
                }
                (None, Some(u)) => {
                    if !(u.starts_with("https://") || u.starts_with("http://")) {
                        out.push((at("jwks_url"), format!("{u:?} is not an http(s) URL")));
                    }
                }
            }
            if j.roles.is_empty() {
                out.push((
                    at("roles"),
                    format!(
                        "map at least one value of the {:?} claim to a role, e.g. {{etcd-admins: admin}}",
                        j.role_claim
                    ),
                ));
            }
            check_globs(&j.clusters, &at("clusters"), out);
        }
        if !self.client_cert_roles.is_empty() && tls.is_none_or(|t| t.client_ca_file.is_none()) {
            out.push((
                "api.auth.client_cert_roles".into(),
                "client certificates need api.tls.client_ca_file (and api.tls.cert_file, key_file)"
                    .into(),
            ));
        }
    }
}

fn check_globs(globs: &[String], at: &str, out: &mut Vec<(String, String)>) {
    if globs.is_empty() {
        out.push((
            at.into(),
            "list at least one cluster name or glob (\"*\" for all)".into(),
        ));
    }
    for (k, g) in globs.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(g) {
            out.push((format!("{at}[{k}]"), format!("{g:?} is not a glob: {e}")));
        }
    }
}

/// `scheme://host[:port]` with no path, as browsers send in `Origin`.
pub(crate) fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    (scheme == "http" || scheme == "https")
        && !rest.is_empty()
        && !rest.contains(['/', ' ', '?', '#'])
        && axum::http::HeaderValue::from_str(origin).is_ok()
}

/// The host part of `listen`, as a `Host` header would carry it
/// (`[::1]` for IPv6), or `None` for all interfaces.
pub fn listen_host(listen: &str) -> Option<String> {
    let addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        return None;
    }
    Some(match addr.ip() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    })
}
