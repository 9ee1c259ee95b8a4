//! Who is calling: a request's principal comes from exactly one of a
//! bearer token (static, or a JWT from an OIDC provider), a client
//! certificate, or nobody (`api.auth.anonymous_role`). Each principal has
//! one role and the clusters it may touch.
//!
//! Static tokens are kept only as SHA-256 and compared in constant time;
//! the token a caller presents is never stored, logged or echoed.

mod jwt;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::config::{ApiConfig, Role, is_loopback_listen};

pub use jwt::JwtVerifier;

/// How a principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// No credentials.
    Anonymous,
    /// A static bearer token from `api.auth.tokens`.
    Token,
    /// A JWT verified against the provider's JWKS.
    Jwt,
    /// A client certificate verified against `api.tls.client_ca_file`.
    ClientCert,
}

/// The clusters a principal may see and act on.
#[derive(Debug, Clone)]
pub struct Scope {
    globs: Vec<String>,
    patterns: Vec<glob::Pattern>,
}

impl Scope {
    /// Every cluster.
    pub fn all() -> Scope {
        Scope::new(&["*".to_string()])
    }

    /// The clusters matching any of `globs` (invalid globs match nothing;
    /// the configuration check refuses them).
    pub fn new(globs: &[String]) -> Scope {
        Scope {
            globs: globs.to_vec(),
            patterns: globs
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect(),
        }
    }

    /// Whether `cluster` is in scope.
    pub fn allows(&self, cluster: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(cluster))
    }

    /// Whether every cluster is in scope (so cluster-less records, such as
    /// silences without a `cluster` matcher, may be shown and changed).
    pub fn is_all(&self) -> bool {
        self.globs.iter().any(|g| g == "*")
    }

    /// The globs, as configured.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }
}

/// The caller of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// Who: the token's name, the JWT's subject, the certificate's CN, or
    /// `anonymous`.
    pub name: String,
    /// How it was established.
    pub method: AuthMethod,
    /// What it may do; `None`: nothing but the open routes.
    pub role: Option<Role>,
    /// Which clusters.
    #[serde(skip)]
    pub scope: Scope,
}

impl Principal {
    /// Whether this principal's role is at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r >= role)
    }

    /// How the audit log names it: `token:ci`, `jwt:alice`, `cert:ops`,
    /// `anonymous`.
    pub fn label(&self) -> String {
        match self.method {
            AuthMethod::Anonymous => "anonymous".into(),
            AuthMethod::Token => format!("token:{}", self.name),
            AuthMethod::Jwt => format!("jwt:{}", self.name),
            AuthMethod::ClientCert => format!("cert:{}", self.name),
        }
    }

    /// The 403 of a request for `what` (a cluster, a silence) outside this
    /// principal's clusters.
    pub fn out_of_scope(&self, what: &str) -> super::ApiError {
        super::ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "{} may not access {what} (its clusters: {})",
                self.label(),
                self.scope.globs().join(", ")
            ),
        }
    }

    fn anonymous(role: Option<Role>) -> Principal {
        Principal {
            name: "anonymous".into(),
            method: AuthMethod::Anonymous,
            role,
            scope: Scope::all(),
        }
    }
}

/// Why a request was not authenticated or not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials where they are needed, or bad ones.
    Unauthenticated(String),
    /// 403: known caller, not allowed; the caller as the audit log names it.
    Forbidden(String, String),
}

struct StaticToken {
    name: String,
    role: Role,
    sha256: [u8; 32],
    scope: Scope,
}

/// Turns a request's credentials into a [`Principal`].
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    jwt: Option<JwtVerifier>,
    cert_roles: BTreeMap<String, Role>,
    anonymous: Option<Role>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.is_some())
            .field("cert_roles", &self.cert_roles.len())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// The role of requests without credentials: `api.auth.anonymous_role`
/// when set; otherwise `admin` for a local tool (nothing configured,
/// loopback listen address) and nothing in every other case.
pub fn anonymous_role(api: &ApiConfig) -> Option<Role> {
    match api.auth.anonymous_role {
        Some(explicit) => explicit.role(),
        None if !api.auth.any_configured(api.tls.as_ref()) && is_loopback_listen(&api.listen) => {
            Some(Role::Admin)
        }
        None => None,
    }
}

/// Whether `run` may serve `api` as configured: refuses a non-loopback
/// address with no authentication (unless `anonymous_role` says so
/// explicitly, which is returned as a warning to log at every start).
pub fn startup_check(api: &ApiConfig) -> Result<Option<String>, String> {
    let any = api.auth.any_configured(api.tls.as_ref());
    if any || is_loopback_listen(&api.listen) {
        return Ok(None);
    }
    match api.auth.anonymous_role {
        None => Err(format!(
            "api.listen {} is not a loopback address and api.auth configures no authentication: \
             anyone who reaches it could compact, defragment or disarm alarms. Configure \
             api.auth.tokens, api.auth.jwt or client certificates (see docs/security.md), or set \
             api.auth.anonymous_role explicitly",
            api.listen
        )),
        Some(role) => Ok(Some(format!(
            "api.listen {} is reachable from other hosts and api.auth.anonymous_role is {:?}: \
             anyone who reaches it has that role",
            api.listen,
            role.role().map_or("none", Role::as_str)
        ))),
    }
}

impl Authenticator {
    /// Builds the authenticator of `api.auth`: reads token files (keeping
    /// only their hashes) and loads the JWKS. The error names the key.
    pub async fn from_config(api: &ApiConfig) -> Result<Authenticator, String> {
        let mut tokens = Vec::new();
        for (i, t) in api.auth.tokens.iter().enumerate() {
            let sha256 = match (&t.token_file, &t.token_sha256) {
                (Some(file), _) => {
                    let secret = crate::config::secret::read_secret_file(file)
                        .map_err(|e| format!("api.auth.tokens[{i}].token_file: {e}"))?;
                    warn_if_shared(file, &format!("api.auth.tokens[{i}].token_file"));
                    sha256(secret.as_bytes())
                }
                (None, Some(hex)) => parse_hex32(hex).ok_or_else(|| {
                    format!("api.auth.tokens[{i}].token_sha256: must be 64 hex digits")
                })?,
                (None, None) => {
                    return Err(format!(
                        "api.auth.tokens[{i}]: set token_sha256 or token_file"
                    ));
                }
            };
            tokens.push(StaticToken {
                name: t.name.clone(),
                role: t.role,
                sha256,
                scope: Scope::new(&t.clusters),
            });
        }
        let jwt = match &api.auth.jwt {
            Some(j) => Some(JwtVerifier::new(j).await?),
            None => None,
        };
        Ok(Authenticator {
            tokens,
            jwt,
            cert_roles: api.auth.client_cert_roles.clone(),
            anonymous: anonymous_role(api),
        })
    }

    /// The principal of a request with this `Authorization` header value
    /// and this verified client-certificate CN. A present `Authorization`
    /// header decides alone; then the certificate; then anonymous.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cn: Option<&str>,
    ) -> Result<Principal, Denied> {
        if let Some(value) = authorization {
            let token = bearer(value)?;
            if let Some(jwt) = &self.jwt {
                if looks_like_jwt(token) {
                    // A configured static token may contain dots too.
                    return match jwt.verify(token).await {
                        Err(Denied::Unauthenticated(why)) => self
                            .static_token(token)
                            .map_err(|_| Denied::Unauthenticated(why)),
                        other => other,
                    };
                }
            }
            return self.static_token(token);
        }
        if let Some(cn) = client_cn {
            return match self.cert_roles.get(cn) {
                Some(role) => Ok(Principal {
                    name: cn.to_string(),
                    method: AuthMethod::ClientCert,
                    role: Some(*role),
                    scope: Scope::all(),
                }),
                None => Err(Denied::Forbidden(
                    format!(
                        "client certificate CN {cn:?} has no role in api.auth.client_cert_roles"
                    ),
                    format!("cert:{cn}"),
                )),
            };
        }
        Ok(Principal::anonymous(self.anonymous))
    }

    fn static_token(&self, token: &str) -> Result<Principal, Denied> {
        let presented = sha256(token.as_bytes());
        // Compare with every configured hash, so the time taken does not
        // tell which (or whether one) matched early.
        let mut found = None;
        for t in &self.tokens {
            if aws_lc_rs::constant_time::verify_slices_are_equal(&t.sha256, &presented).is_ok() {
                found = Some(t);
            }
        }
        match found {
            Some(t) => Ok(Principal {
                name: t.name.clone(),
                method: AuthMethod::Token,
                role: Some(t.role),
                scope: t.scope.clone(),
            }),
            None => Err(Denied::Unauthenticated(
                "the bearer token is not valid".into(),
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(value: &str) -> Result<&str, Denied> {
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::Unauthenticated(
            "only bearer tokens are accepted: send Authorization: Bearer <token>".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Denied::Unauthenticated(
            "the Authorization header has no token after Bearer".into(),
        ));
    }
    Ok(token)
}

/// Three dot-separated parts: a JWS in compact form. Static tokens from
/// `token new` never contain a dot.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random API token (`emt_` and 64 hex digits: 256 bits from the
/// system's secure random source) and its SHA-256 in hex.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system's random source failed".to_string())?;
    let token = format!("emt_{}", hex(&bytes));
    let hash = hex(&sha256(token.as_bytes()));
    Ok((token, hash))
}

/// Logs a warning when a file holding a secret is readable by everyone.
pub(crate) fn warn_if_shared(file: &Path, key: &str) {
    if crate::config::secret::readable_by_others(file) {
        tracing::warn!(
            file = %file.display(),
            "{key}: the file is readable by every user on this host; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AnonymousRole, AuthConfig, TokenConfig};

    fn api(listen: &str, auth: AuthConfig) -> ApiConfig {
        ApiConfig {
            listen: listen.into(),
            auth,
            ..ApiConfig::default()
        }
    }

    #[test]
    fn anonymous_is_admin_only_for_an_unconfigured_loopback_listener() {
        assert_eq!(
            anonymous_role(&api("127.0.0.1:8080", AuthConfig::default())),
            Some(Role::Admin)
        );
        assert_eq!(
            anonymous_role(&api("[::1]:8080", AuthConfig::default())),
            Some(Role::Admin)
        );
        assert_eq!(
            anonymous_role(&api("0.0.0.0:8080", AuthConfig::default())),
            None
        );
        let with_token = AuthConfig {
            tokens: vec![TokenConfig {
                name: "ci".into(),
                role: Role::Viewer,
                token_file: None,
                token_sha256: Some("0".repeat(64)),
                clusters: vec!["*".into()],
            }],
            ..AuthConfig::default()
        };
        assert_eq!(anonymous_role(&api("127.0.0.1:8080", with_token)), None);
        let explicit = AuthConfig {
            anonymous_role: Some(AnonymousRole::Viewer),
            ..AuthConfig::default()
        };
        assert_eq!(
            anonymous_role(&api("0.0.0.0:8080", explicit)),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn a_public_listener_without_auth_refuses_to_start_unless_told() {
        let e = startup_check(&api("0.0.0.0:8080", AuthConfig::default())).unwrap_err();
        assert!(e.contains("api.auth"), "{e}");
        assert_eq!(
            startup_check(&api("127.0.0.1:0", AuthConfig::default())),
            Ok(None)
        );
        let explicit = AuthConfig {
            anonymous_role: Some(AnonymousRole::None),
            ..AuthConfig::default()
        };
        let warning = startup_check(&api("0.0.0.0:8080", explicit))
            .unwrap()
            .unwrap();
        assert!(warning.contains("anonymous_role"), "{warning}");
    }

    #[tokio::test]
    async fn static_tokens_match_by_hash_and_bad_ones_are_refused() {
        let (token, hash) = new_token().unwrap();
        assert!(token.starts_with("emt_") && token.len() == 68);
        assert_eq!(hash, hex(&sha256(token.as_bytes())));
        let auth = AuthConfig {
            tokens: vec![TokenConfig {
                name: "ci".into(),
                role: Role::Operator,
                token_file: None,
                token_sha256: Some(hash.to_uppercase()),
                clusters: vec!["prod-*".into()],
            }],
            ..AuthConfig::default()
        };
        let a = Authenticator::from_config(&api("127.0.0.1:0", auth))
            .await
            .unwrap();
        let p = a
            .authenticate(Some(&format!("Bearer {token}")), None)
            .await
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ci", Some(Role::Operator)));
        assert!(p.scope.allows("prod-eu") && !p.scope.allows("staging"));
        let p = a
            .authenticate(Some(&format!("bearer  {token} ")), None)
            .await
            .unwrap();
        assert_eq!(p.method, AuthMethod::Token);
        for bad in [
            format!("Bearer {token}x"),
            "Bearer ".to_string(),
            format!("Basic {token}"),
        ] {
            let denied = a.authenticate(Some(&bad), None).await.unwrap_err();
            let Denied::Unauthenticated(msg) = denied else {
                panic!("{bad}: not 401");
            };
            assert!(!msg.contains(&token), "{msg}");
        }
        // Configured auth: no credentials means no role.
        let anon = a.authenticate(None, None).await.unwrap();
        assert_eq!(anon.role, None);
    }
}
