//! JWT bearer tokens from an OIDC provider, verified against its JWKS.
//!
//! Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA, EdDSA):
//! `none` never parses, and HS* is refused before any key is looked at, so
//! a token "signed" with the provider's public key as an HMAC secret goes
//! nowhere. `exp`, `iss` and `aud` are required, `nbf` checked when present,
//! with 60 s of leeway for clock skew. The key set is cached; a token whose
//! `kid` is unknown (the provider rotated its keys) refreshes it, at most
//! once a minute, so garbage tokens cannot make us hammer the provider.
//!
//! A verified token's principal is remembered (by the token's SHA-256) until
//! the token expires, at most [`CACHE_TTL`], and never across a change of
//! the key set: a dashboard polling with one JWT costs one signature check
//! per five minutes instead of one per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthMethod, Denied, Principal, Scope};
use crate::config::JwtConfig;

/// Algorithms a token may be signed with.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
/// Shortest time between two refreshes of the key set.
const MIN_REFRESH: Duration = Duration::from_secs(60);
/// Keys older than this are refreshed at the next request (a provider may
/// also withdraw a key).
const MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Longest a verified token is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most tokens remembered at once.
const CACHE_ENTRIES: usize = 4096;

/// Principals of verified tokens, by the token's SHA-256, with when to
/// forget them.
type Verified = std::collections::HashMap<[u8; 32], (Principal, Instant)>;

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

struct KeySet {
    keys: Vec<Key>,
    fetched: Instant,
}

/// Verifies JWTs of `api.auth.jwt`.
pub struct JwtVerifier {
    config: JwtConfig,
    scope: Scope,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    verified: std::sync::Mutex<Verified>,
    /// When the key set was last (re)loaded on demand; held while loading,
    /// so concurrent requests with a new `kid` cause one fetch.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl JwtVerifier {
    /// Loads the key set: a `jwks_file` must parse; a `jwks_url` that does
    /// not answer yet is retried when the first token arrives.
    pub async fn new(config: &JwtConfig) -> Result<JwtVerifier, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("api.auth.jwt: HTTP client: {e}"))?;
        let verifier = JwtVerifier {
            config: config.clone(),
            scope: Scope::new(&config.clusters),
            http,
            keys: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                fetched: Instant::now(),
            }),
            verified: std::sync::Mutex::new(Verified::new()),
            last_refresh: tokio::sync::Mutex::new(None),
        };
        match verifier.load().await {
            Ok(keys) => verifier.keys.store(Arc::new(keys)),
            Err(e) if config.jwks_url.is_some() => {
                tracing::warn!("api.auth.jwt: {e}; retrying when a token arrives");
            }
            Err(e) => return Err(format!("api.auth.jwt: {e}")),
        }
        Ok(verifier)
    }

    /// The principal of a JWT, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, Denied> {
        let digest = super::sha256(token.as_bytes());
        if let Some(p) = self.remembered(&digest) {
            return Ok(p);
        }
        let (principal, exp) = self.check(token).await?;
        self.remember(digest, &principal, exp);
        Ok(principal)
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Principal> {
        let cache = self.verified.lock().ok()?;
        let (p, until) = cache.get(digest)?;
        (Instant::now() < *until).then(|| p.clone())
    }

    /// Remembers a verified token until its `exp` (Unix seconds) passes,
    /// at most [`CACHE_TTL`].
    fn remember(&self, digest: [u8; 32], p: &Principal, exp: u64) {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(exp.saturating_sub(now_unix)).min(CACHE_TTL);
        let Ok(mut cache) = self.verified.lock() else {
            return;
        };
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, (p.clone(), Instant::now() + left));
    }

    /// Verifies a token: its principal and `exp`.
    async fn check(&self, token: &str) -> Result<(Principal, u64), Denied> {
        let unauthenticated = |m: String| Denied::Unauthenticated(m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("not a valid JWT: {e}")))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(unauthenticated(format!(
                "JWT algorithm {:?} is not accepted: only RS*, PS*, ES256, ES384 and EdDSA",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let known = find_in(&self.keys.load().keys, kid, header.alg).is_some();
        if !known || self.keys.load().fetched.elapsed() > MAX_AGE {
            self.refresh().await;
        }
        let keys = self.keys.load();
        let Some(key) = find_in(&keys.keys, kid, header.alg) else {
            return Err(unauthenticated(match kid {
                Some(k) => format!("no key {k:?} for {:?} in the provider's JWKS", header.alg),
                None => format!(
                    "the JWT has no kid and the JWKS has no single {:?} key",
                    header.alg
                ),
            }));
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|e| unauthenticated(format!("JWT refused: {}", reason(&e))))?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let name = ["preferred_username", "email", "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_string();
        let role = claim_values(&claims, &self.config.role_claim)
            .iter()
            .filter_map(|v| self.config.roles.get(v))
            .max()
            .copied();
        let Some(role) = role else {
            return Err(Denied::Forbidden(
                format!(
                    "JWT of {name:?}: no value of its {:?} claim has a role in api.auth.jwt.roles",
                    self.config.role_claim
                ),
                format!("jwt:{name}"),
            ));
        };
        Ok((
            Principal {
                name,
                method: AuthMethod::Jwt,
                role: Some(role),
                scope: self.scope.clone(),
            },
            exp,
        ))
    }

    /// Reloads the key set unless that was done less than a minute ago.
    async fn refresh(&self) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return;
        }
        *last = Some(Instant::now());
        match self.load().await {
            Ok(keys) => {
                tracing::info!(keys = keys.keys.len(), "api.auth.jwt: key set reloaded");
                self.keys.store(Arc::new(keys));
                // A withdrawn key must not live on in remembered tokens.
                if let Ok(mut cache) = self.verified.lock() {
                    cache.clear();
                }
            }
            Err(e) => tracing::warn!("api.auth.jwt: {e}; keeping the keys we have"),
        }
    }

    async fn load(&self) -> Result<KeySet, String> {
        let (text, from) = match (&self.config.jwks_file, &self.config.jwks_url) {
            (Some(file), _) => (
                std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?,
                file.display().to_string(),
            ),
            (None, Some(url)) => (self.fetch(url).await?, url.clone()),
            (None, None) => return Err("set jwks_file or jwks_url".into()),
        };
        let keys = parse_jwks(&text).map_err(|e| format!("JWKS from {from}: {e}"))?;
        Ok(KeySet {
            keys,
            fetched: Instant::now(),
        })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            format!(
                "cannot fetch the JWKS from {url}: {}",
                crate::connection::error_chain(&e.without_url())
            )
        })?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS URL {url} answered {}", resp.status()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the JWKS from {url}: {}", e.without_url()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS at {url} is larger than 1 MiB"));
        }
        Ok(body.to_vec())
    }
}

fn find_in<'a>(keys: &'a [Key], kid: Option<&str>, alg: Algorithm) -> Option<&'a Key> {
    let usable = |k: &&Key| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
    match kid {
        Some(kid) => keys
            .iter()
            .filter(usable)
            .find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut matching = keys.iter().filter(usable);
            let first = matching.next();
            if matching.next().is_some() {
                None
            } else {
                first
            }
        }
    }
}

/// The signing keys of a JWKS document. Keys for encryption, symmetric
/// keys and keys of unknown types are skipped, never trusted.
fn parse_jwks(text: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for v in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if key.family() == AlgorithmFamily::Hmac {
            continue;
        }
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            family: key.family(),
            key,
        });
    }
    Ok(keys)
}

/// The strings at a dotted claim path: one string, or an array's strings.
fn claim_values(claims: &serde_json::Map<String, Value>, path: &str) -> Vec<String> {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    let mut at = claims.get(first);
    for p in parts {
        at = at.and_then(|v| v.get(p));
    }
    match at {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "its algorithm does not match the key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("it lacks the {c} claim"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn key(kid: &str) -> (EncodingKey, Value) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap(),
        )
        .unwrap();
        jwk["kid"] = kid.into();
        (key, jwk)
    }

    #[tokio::test]
    async fn remembered_tokens_are_forgotten_when_the_keys_change_or_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let (k1, jwk1) = key("k1");
        std::fs::write(&jwks, serde_json::json!({ "keys": [jwk1] }).to_string()).unwrap();
        let config = JwtConfig {
            issuer: "iss".into(),
            audience: "aud".into(),
            jwks_file: Some(jwks.clone()),
            jwks_url: None,
            role_claim: "realm_access.roles".into(),
            roles: [("ops".to_string(), crate::config::Role::Operator)].into(),
            clusters: vec!["*".into()],
        };
        let v = JwtVerifier::new(&config).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let sign = |exp: u64| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some("k1".into());
            let claims = serde_json::json!({ "iss": "iss", "aud": "aud", "sub": "s",
                "realm_access": { "roles": ["ops"] }, "exp": exp });
            jsonwebtoken::encode(&h, &claims, &k1).unwrap()
        };
        let token = sign(now + 600);
        let p = v.verify(&token).await.unwrap();
        assert_eq!(
            p.role,
            Some(crate::config::Role::Operator),
            "dotted role claim"
        );
        assert!(
            v.remembered(&super::super::sha256(token.as_bytes()))
                .is_some()
        );
        // A token past its exp (but within the leeway) is checked, not remembered.
        let late = sign(now - 5);
        assert!(v.verify(&late).await.is_ok());
        assert!(
            v.remembered(&super::super::sha256(late.as_bytes()))
                .is_none()
        );
        // The provider withdraws k1: after the reload, the remembered token is refused.
        let (_, jwk2) = key("k2");
        std::fs::write(&jwks, serde_json::json!({ "keys": [jwk2] }).to_string()).unwrap();
        v.refresh().await;
        assert!(matches!(
            v.verify(&token).await,
            Err(Denied::Unauthenticated(m)) if m.contains("k1")
        ));
    }
}
