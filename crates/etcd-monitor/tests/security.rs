//! API security against a running monitor and real etcd: every route of
//! the permission table answered by role (401 anonymous, 403 below its
//! role, served at its role), cluster scopes, JWTs from a provider whose
//! JWKS a local server hands out, TLS and client certificates, browser
//! attacks (cross-origin forms, DNS rebinding), the audit log, and no
//! secret in any log line, audit row or API answer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_monitor::api::access::Access;
use etcd_monitor::config::Role;
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::Monitor;
use etcd_testkit::{ClusterOptions, EtcdCluster, TlsFiles};
use serde_json::{Value, json};

struct Running {
    addr: SocketAddr,
    monitor: Monitor,
    lifecycle: Lifecycle,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(self) {
        etcd_monitor::run::shutdown(&self.monitor, &self.lifecycle).await;
    }
}

/// A token and the config line that grants it `role` on `clusters`.
fn token(name: &str, role: &str, clusters: &str) -> (String, String) {
    let (token, hash) = etcd_monitor::api::auth::new_token().unwrap();
    (
        token,
        format!(
            "      - {{ name: {name}, role: {role}, token_sha256: {hash}, clusters: [{clusters}] }}\n"
        ),
    )
}

/// Starts a monitor of two clusters `a` and `b` (both the shared test
/// cluster) with `api_yaml` under `api:` (indented two spaces).
async fn start(api_yaml: &str) -> Result<Running, String> {
    let dir = tempfile::tempdir().unwrap();
    let endpoints = EtcdCluster::shared().endpoints().join(", ");
    let yaml = format!(
        "clusters:\n  - {{ name: a, endpoints: [{endpoints}] }}\n  - {{ name: b, endpoints: [{endpoints}] }}\n\
         monitoring: {{ health_check_interval: 500ms, metrics_interval: 500ms }}\n\
         storage: {{ url: \"sqlite://{db}\" }}\n\
         api:\n  snapshot_dir: {snap}\n{api_yaml}",
        db = dir.path().join("h.db").display(),
        snap = dir.path().join("snapshots").display(),
    );
    let file = dir.path().join("monitor.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config =
        etcd_monitor::run::load_config(Some(&file), &etcd_monitor::config::Overrides::new())
            .map_err(|e| e.to_string())?;
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let monitor = daemon.monitor.clone();
    match etcd_monitor::run::serve_api(&config, &daemon, &lifecycle).await {
        Ok(addr) => Ok(Running {
            addr,
            monitor,
            lifecycle,
            _dir: dir,
        }),
        Err(e) => {
            etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
            Err(format!("{e:#}"))
        }
    }
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut req = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if method != "GET" {
        req = req
            .header("content-type", "application/json")
            .body(body.unwrap_or("{}").to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    // Event streams never end: the status is all we need.
    if path.ends_with("/events") {
        return (status, String::new());
    }
    (status, resp.text().await.unwrap_or_default())
}

/// A body each state-changing route refuses by validation (so the matrix
/// changes nothing), with the status that refusal has.
fn refused_by_validation(path: &str) -> (&'static str, u16) {
    match path.rsplit('/').next().unwrap() {
        "snapshot" => (r#"{"name": "../escape.db"}"#, 422),
        "defrag" => (r#"{"pause": "soon"}"#, 422),
        "compact" => (r#"{"revision": -3}"#, 422),
        "move-leader" => (r#"{"target": "not-hex"}"#, 422),
        "alarm-disarm" => (r#"{"confirm": "not-this-cluster"}"#, 422),
        "ack" => (r#"{"group_key": "a/etcdNoLeader"}"#, 404),
        "silences" => (r#"{"matchers": ["cluster"], "ends_at_ms": 1}"#, 422),
        "benchmarks" => (r#"{"workload": "bogus"}"#, 422),
        "backups" => (r#"{"schedule": "none-such"}"#, 404),
        "benchmark" => (r#"{"operations": "many"}"#, 422), // the Go original's spelling
        "{id}" => ("{}", 404), // DELETE /api/v1/silences/{id} of no silence
        other => panic!("no validation body for {other}"),
    }
}

/// The audit records `GET /api/v1/audit?{query}` answers `bearer`.
async fn audit(client: &reqwest::Client, base: &str, query: &str, bearer: &str) -> Vec<Value> {
    let (status, text) = call(
        client,
        base,
        "GET",
        &format!("/api/v1/audit?{query}"),
        Some(bearer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["records"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(client, base, "GET", "/ready", None, None).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_refused_below_its_role_and_served_at_it() {
    let (viewer, v_line) = token("v", "viewer", "\"*\"");
    let (operator, o_line) = token("o", "operator", "\"*\"");
    let (admin, a_line) = token("adm", "admin", "\"*\"");
    let (scoped, s_line) = token("scoped", "admin", "a");
    let r = start(&format!(
        "  listen: 127.0.0.1:0\n  auth:\n    tokens:\n{v_line}{o_line}{a_line}{s_line}"
    ))
    .await
    .unwrap();
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    // Refusals are audited up to a limit per source address and minute
    // (audit::DENIALS_PER_MINUTE): the anonymous calls come from a second
    // loopback address, so the matrix's refusals all stay under it.
    let anonymous = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let tokens = [
        (Role::Viewer, viewer.as_str()),
        (Role::Operator, operator.as_str()),
        (Role::Admin, admin.as_str()),
    ];
    let table = etcd_monitor::api::route_table();
    assert!(table.len() >= 40, "{} routes", table.len());
    let mut mutations = 0;
    for route in &table {
        let method = route.method.as_str();
        let path = route.path.replace("{name}", "a").replace("{id}", "nope");
        let (body, served) = if method == "GET" {
            (
                None,
                if route.path.ends_with("{id}") {
                    404
                } else {
                    200
                },
            )
        } else {
            mutations += 1;
            let (b, s) = refused_by_validation(&route.path);
            (Some(b), s)
        };
        let at = format!("{method} {path}");
        let needs = match route.access {
            Access::Probe | Access::Public => {
                let (status, text) = call(&client, &base, method, &path, None, body).await;
                assert_eq!(status, 200, "{at} anonymous: {text}");
                continue;
            }
            Access::Metrics => Role::Viewer,
            Access::Role(role) => role,
        };
        let (status, text) = call(&anonymous, &base, method, &path, None, body).await;
        assert_eq!(status, 401, "{at} anonymous: {text}");
        if !text.is_empty() {
            let err: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(err["error"]["code"], "unauthorized", "{at}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(needs.as_str()),
                "{at}: the error names the role: {text}"
            );
        }
        for (role, t) in tokens {
            let (status, text) = call(&client, &base, method, &path, Some(t), body).await;
            if role < needs {
                assert_eq!(status, 403, "{at} as {role}: {text}");
                assert!(
                    text.contains(&format!("needs the role {needs}")),
                    "{at}: {text}"
                );
            } else {
                assert_eq!(status, served, "{at} as {role}: {text}");
            }
        }
    }
    assert!(mutations >= 14, "{mutations} state-changing routes");

    // A token limited to cluster a: b does not exist for it.
    let (status, text) = call(
        &client,
        &base,
        "GET",
        "/api/v1/clusters/b/status",
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let message = serde_json::from_str::<Value>(&text).unwrap()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("cluster \"b\""),
        "{text}"
    );
    let (status, _) = call(
        &client,
        &base,
        "GET",
        "/api/v1/clusters/a/status",
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, text) = call(
        &client,
        &base,
        "GET",
        "/api/v1/clusters",
        Some(&scoped),
        None,
    )
    .await;
    let names: Vec<String> = serde_json::from_str::<Value>(&text).unwrap()["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a"]);
    for (method, path, body) in [
        ("GET", "/api/v1/alerts?cluster=b", None),
        ("GET", "/api/v1/alerts/history?cluster=b", None),
        (
            "POST",
            "/api/v1/clusters/b/maintenance/compact",
            Some(r#"{"revision": -3}"#),
        ),
        (
            "POST",
            "/api/v1/benchmarks",
            Some(r#"{"cluster": "b", "workload": "put", "total": 1}"#),
        ),
        (
            "POST",
            "/api/v1/alerts/ack",
            Some(r#"{"group_key": "b/etcdNoLeader"}"#),
        ),
        (
            "POST",
            "/api/v1/silences",
            Some(r#"{"matchers": ["alertname=etcdNoLeader"], "ends_at_ms": 99999999999999}"#),
        ),
    ] {
        let (status, text) = call(&client, &base, method, path, Some(&scoped), body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
    }
    let (status, text) = call(
        &client,
        &base,
        "POST",
        "/api/v1/silences",
        Some(&scoped),
        Some(r#"{"matchers": ["cluster=a", "alertname=etcdNoLeader"], "ends_at_ms": 99999999999999}"#),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let (_, metrics) = call(&client, &base, "GET", "/metrics", Some(&scoped), None).await;
    assert!(metrics.contains("cluster=\"a\"") && !metrics.contains("cluster=\"b\""));
    let (_, metrics) = call(&client, &base, "GET", "/metrics", Some(&viewer), None).await;
    assert!(metrics.contains("cluster=\"b\""));

    // whoami tells each caller what it may change.
    let (_, who) = call(
        &client,
        &base,
        "GET",
        "/api/v1/whoami",
        Some(&operator),
        None,
    )
    .await;
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        (who["principal"].as_str(), who["role"].as_str()),
        (Some("token:o"), Some("operator"))
    );
    let allowed: Vec<&str> = who["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(allowed.contains(&"POST /api/v1/silences"), "{allowed:?}");
    // Reads above viewer are listed too: the dashboard shows its Keyspace
    // card (scans, hot writes) from them.
    for read in [
        "GET /api/v1/clusters/{name}/keyspace",
        "GET /api/v1/clusters/{name}/keyspace/hot",
    ] {
        assert!(allowed.contains(&read), "{read}: {allowed:?}");
    }
    assert!(!allowed.contains(&"GET /api/v1/audit"), "{allowed:?}");
    assert!(
        !allowed.iter().any(|a| a.contains("compact")),
        "{allowed:?}"
    );

    // The audit log: every state-changing call (with its principal) and every refusal.
    let records = audit(&client, &base, "limit=5000", &admin).await;
    for route in table.iter().filter(|r| r.method != "GET") {
        let path = route.path.replace("{name}", "a").replace("{id}", "nope");
        let rows: Vec<&Value> = records
            .iter()
            .filter(|x| x["method"] == route.method.as_str() && x["path"] == path.as_str())
            .collect();
        assert!(
            rows.iter()
                .any(|x| x["principal"] == "token:adm" && x["status"].as_u64() != Some(403)),
            "no audit row of the admin's {} {path}",
            route.method
        );
        assert!(
            rows.iter().any(|x| x["status"] == 401),
            "no audit row of the anonymous {} {path}: its rows {rows:?}; {} records, {} of them 401",
            route.method,
            records.len(),
            records.iter().filter(|x| x["status"] == 401).count()
        );
        for row in &rows {
            let from = if row["status"] == 401 {
                "127.0.0.2"
            } else {
                "127.0.0.1"
            };
            assert_eq!(row["source"], from, "{row}");
            assert!(!row["request_id"].as_str().unwrap().is_empty());
        }
        if route.path.contains("{name}") || route.path.starts_with("/api/v1/cluster/") {
            assert!(rows.iter().all(|x| x["cluster"] == "a"), "{rows:?}");
        }
    }
    let denied_gets = records
        .iter()
        .filter(|x| x["method"] == "GET" && x["status"] == 401 && x["path"] == "/api/v1/clusters")
        .count();
    assert_eq!(
        denied_gets, 1,
        "one anonymous GET /api/v1/clusters was refused"
    );
    assert!(
        records.iter().any(|x| x["path"] == "/api/v1/alerts"
            && x["principal"] == "token:scoped"
            && x["status"] == 403),
        "a refusal by a handler (cluster out of scope) is audited too"
    );
    let body_of_compact = records
        .iter()
        .find(|x| {
            x["path"] == "/api/v1/clusters/a/maintenance/compact" && x["principal"] == "token:adm"
        })
        .unwrap();
    assert_eq!(body_of_compact["body"], r#"{"revision":-3}"#);
    assert_eq!(body_of_compact["role"], "admin");
    let mine = audit(&client, &base, "principal=token:o", &admin).await;
    assert!(!mine.is_empty() && mine.iter().all(|x| x["principal"] == "token:o"));
    // A scoped admin reads only its clusters' records.
    let scoped_rows = audit(&client, &base, "limit=5000", &scoped).await;
    assert!(!scoped_rows.is_empty() && scoped_rows.iter().all(|x| x["cluster"] == "a"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_table_the_router_and_the_openapi_document_agree() {
    let r = start("  listen: 127.0.0.1:0\n").await.unwrap();
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::new();
    let (_, doc) = call(&client, &base, "GET", "/api/v1/openapi.json", None, None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((
                method.to_uppercase(),
                path.clone(),
                op["x-required-role"].to_string(),
            ));
        }
    }
    let table: BTreeSet<(String, String, String)> = etcd_monitor::api::route_table()
        .into_iter()
        .filter(|r| r.access != Access::Public) // the dashboard's files are not API
        .map(|r| {
            let role = match r.access {
                Access::Role(role) => json!(role.as_str()),
                Access::Metrics => json!("viewer (none with api.auth.public_metrics)"),
                _ => Value::Null,
            };
            (r.method.to_string(), r.path, role.to_string())
        })
        .collect();
    assert_eq!(
        documented.symmetric_difference(&table).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "the OpenAPI document and the permission table differ"
    );
    // Every table entry is a real route (anything else answers "no such endpoint").
    for route in etcd_monitor::api::route_table() {
        let path = route.path.replace("{name}", "a").replace("{id}", "x");
        let (_, text) = call(
            &client,
            &base,
            route.method.as_str(),
            &path,
            None,
            Some("{}"),
        )
        .await;
        assert!(
            !text.contains("no such endpoint"),
            "{} {path}: {text}",
            route.method
        );
    }
    // A method the table does not list is 405 with Allow, not silently open.
    let resp = client
        .delete(format!("{base}/api/v1/clusters"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_missing_from_the_permission_table_is_refused() {
    use axum::routing::post;
    use etcd_monitor::api::access::{AccessControl, enforce};
    use etcd_monitor::api::audit::AuditLog;
    use etcd_monitor::api::auth::Authenticator;
    use tower::ServiceExt;

    let api = etcd_monitor::config::ApiConfig::default(); // loopback: anonymous is admin
    let dir = tempfile::tempdir().unwrap();
    let store = etcd_monitor::store::Store::open(&format!(
        "sqlite://{}",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    let access = Arc::new(AccessControl::new(
        &etcd_monitor::api::route_table(),
        &api,
        Authenticator::from_config(&api).await.unwrap(),
        None,
        AuditLog::new(store.clone()),
    ));
    let app = axum::Router::new()
        .route("/api/v1/forgotten", post(|| async { "done" }))
        .layer(axum::middleware::from_fn_with_state(access, enforce));
    let resp = app
        .oneshot(
            axum::http::Request::post("/api/v1/forgotten")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "an unlisted route must not be open");
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("no_permission_entry"));
    let rows = store.audit_records(0, i64::MAX, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1, "the refusal is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_attacks_and_unsafe_listeners_are_refused() {
    // The default: loopback, no auth: anonymous is admin, as a local tool...
    let r = start("  listen: 127.0.0.1:0\n").await.unwrap();
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let compact = "/api/v1/cluster/maintenance/compact";
    // ...but a page elsewhere cannot use that: a form post is not JSON,
    let resp = client
        .post(format!("{base}{compact}"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("revision=1")
        .send()
        .await
        .unwrap();
    assert!(
        [403, 415].contains(&resp.status().as_u16()),
        "{}",
        resp.status()
    );
    let resp = client
        .post(format!("{base}/api/v1/cluster/maintenance/alarm-disarm"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415, "a text/plain POST is refused");
    // a JSON post from another origin is refused,
    let resp = client
        .post(format!("{base}{compact}"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "origin_not_allowed");
    // and a rebound DNS name reaches nothing.
    let resp = client
        .get(format!("{base}/api/v1/clusters"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api.allowed_hosts")
    );
    // The dashboard's own origin may change state.
    let resp = client
        .post(format!("{base}/api/v1/cluster/maintenance/alarm-disarm"))
        .header("origin", base.as_str())
        .header("content-type", "application/json")
        .body(r#"{"confirm": "a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Probes answer whatever Host a load balancer sends.
    let resp = client
        .get(format!("{base}/health"))
        .header("host", "lb.internal")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    r.stop().await;

    // Reachable from other hosts with no authentication: `run` refuses.
    let e = start("  listen: 0.0.0.0:0\n")
        .await
        .err()
        .expect("must refuse");
    assert!(e.contains("api.auth"), "{e}");
    // Unless anonymous access is chosen explicitly.
    let r = start("  listen: 0.0.0.0:0\n  auth: { anonymous_role: viewer }\n")
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", r.addr.port());
    let (status, _) = call(&client, &base, "GET", "/api/v1/clusters", None, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&client, &base, "POST", "/api/v1/silences", None, Some("{}")).await;
    assert_eq!(status, 403, "anonymous viewer cannot silence");
    r.stop().await;
}

// ---------------------------------------------------------------- JWT

/// A signing key of the test's identity provider and its public JWK.
struct Signer {
    alg: jsonwebtoken::Algorithm,
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
    /// The public key in PEM: what an attacker would use as an HMAC secret.
    public_pem: String,
}

fn signer(alg: jsonwebtoken::Algorithm, kid: &str) -> Signer {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let (rcgen_alg, make): (&rcgen::SignatureAlgorithm, fn(&[u8]) -> EncodingKey) = match alg {
        Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, |p| {
            EncodingKey::from_rsa_pem(p).unwrap()
        }),
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            EncodingKey::from_ec_pem(p).unwrap()
        }),
        Algorithm::EdDSA => {
            // jsonwebtoken wants PKCS#8 v1 for Ed25519 (rcgen writes v2).
            use aws_lc_rs::signature::KeyPair;
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
            let der = pair.to_pkcs8v1().unwrap();
            let public = pair.public_key().as_ref().to_vec();
            return Signer {
                alg,
                kid: kid.into(),
                key: EncodingKey::from_ed_der(der.as_ref()),
                jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": kid, "use": "sig", "alg": "EdDSA" }),
                public_pem: String::new(),
            };
        }
        other => panic!("no test key for {other:?}"),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
    let key = make(pair.serialize_pem().as_bytes());
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
            .unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    Signer {
        alg,
        kid: kid.into(),
        key,
        jwk,
        public_pem: pair.public_key_pem(),
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt(s: &Signer, claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(s.alg);
    header.kid = Some(s.kid.clone());
    jsonwebtoken::encode(&header, &claims, &s.key).unwrap()
}

fn claims(groups: &[&str]) -> Value {
    json!({ "iss": "https://idp.test", "aud": "etcd-monitor", "sub": "u-123", "email": "alice@example.com",
            "groups": groups, "exp": now_s() + 600, "nbf": now_s() - 10 })
}

fn b64(data: &[u8]) -> String {
    // base64url without padding, as JWS uses.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_against_the_providers_rotating_keys() {
    use jsonwebtoken::Algorithm;
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let ec = signer(Algorithm::ES256, "ec-1");
    let ed = signer(Algorithm::EdDSA, "ed-1");
    let rotated = signer(Algorithm::RS256, "rsa-2");
    let never = signer(Algorithm::RS256, "rsa-3");

    // The provider's JWKS endpoint, counting fetches; rotation adds rsa-2.
    let jwks = Arc::new(std::sync::Mutex::new(
        json!({ "keys": [rsa.jwk, ec.jwk, ed.jwk] }),
    ));
    let fetches = Arc::new(AtomicUsize::new(0));
    let idp = {
        let (jwks, fetches) = (jwks.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (jwks, fetches) = (jwks.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(jwks.lock().unwrap().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, idp).await.unwrap() });

    let r = start(&format!(
        "  listen: 127.0.0.1:0\n  auth:\n    jwt:\n      issuer: https://idp.test\n      audience: etcd-monitor\n\
         \x20     jwks_url: http://{idp_addr}/jwks.json\n      roles: {{ etcd-viewers: viewer, etcd-admins: admin }}\n"
    ))
    .await
    .unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the JWKS is fetched at start"
    );
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::new();
    let who = |t: String| {
        let (client, base) = (client.clone(), base.clone());
        async move { call(&client, &base, "GET", "/api/v1/whoami", Some(&t), None).await }
    };

    for s in [&rsa, &ec, &ed] {
        let (status, text) = who(jwt(s, claims(&["etcd-viewers", "unrelated"]))).await;
        assert_eq!(status, 200, "{:?}: {text}", s.alg);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["principal"], "jwt:alice@example.com");
        assert_eq!(v["role"], "viewer");
        assert_eq!(v["method"], "jwt");
    }
    let (status, text) = who(jwt(&rsa, claims(&["etcd-viewers", "etcd-admins"]))).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap()["role"].clone()
        ),
        (200, json!("admin"))
    );
    // A valid token whose groups map to no role: known, not allowed.
    let (status, text) = who(jwt(&rsa, claims(&["marketing"]))).await;
    assert_eq!(status, 403, "{text}");

    let mut expired = claims(&["etcd-admins"]);
    expired["exp"] = json!(now_s() - 120); // beyond the 60 s leeway
    let mut early = claims(&["etcd-admins"]);
    early["nbf"] = json!(now_s() + 300);
    let mut skewed = claims(&["etcd-admins"]);
    skewed["exp"] = json!(now_s() - 30); // within the leeway: accepted
    let mut wrong_iss = claims(&["etcd-admins"]);
    wrong_iss["iss"] = json!("https://other.test");
    let mut wrong_aud = claims(&["etcd-admins"]);
    wrong_aud["aud"] = json!("grafana");
    let mut no_aud = claims(&["etcd-admins"]);
    no_aud.as_object_mut().unwrap().remove("aud");
    let good = jwt(&rsa, claims(&["etcd-admins"]));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_payload = b64(claims(&["etcd-admins"])
        .to_string()
        .replace("alice", "mallory")
        .as_bytes());
    let bad_signature = format!("{head}.{forged_payload}.{sig}");
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64(claims(&["etcd-admins"]).to_string().as_bytes())
    );
    let hs256_with_public_key = {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &claims(&["etcd-admins"]),
            &jsonwebtoken::EncodingKey::from_secret(rsa.public_pem.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(
        who(jwt(&rsa, skewed)).await.0,
        200,
        "60 s of clock skew is tolerated"
    );
    for (what, token, needle) in [
        ("expired", jwt(&rsa, expired), "expired"),
        ("nbf in the future", jwt(&rsa, early), "not valid yet"),
        ("wrong issuer", jwt(&rsa, wrong_iss), "issuer"),
        ("wrong audience", jwt(&rsa, wrong_aud), "audience"),
        ("no audience", jwt(&rsa, no_aud), "aud"),
        ("bad signature", bad_signature, "signature"),
        ("alg none", alg_none, "JWT"),
        ("HS256 with the public key", hs256_with_public_key, "HS256"),
    ] {
        let (status, text) = who(token).await;
        assert_eq!(status, 401, "{what}: {text}");
        assert!(text.contains(needle), "{what}: {text}");
    }

    // Key rotation: the provider adds rsa-2; its first token makes us refetch.
    let before = fetches.load(Ordering::SeqCst);
    jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated.jwk.clone());
    let (status, text) = who(jwt(&rotated, claims(&["etcd-viewers"]))).await;
    assert_eq!(status, 200, "after rotation: {text}");
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
    // A key nobody published: refused, and no second fetch within the minute.
    for _ in 0..5 {
        let (status, text) = who(jwt(&never, claims(&["etcd-viewers"]))).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("rsa-3"), "{text}");
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        before + 1,
        "refreshes are limited to one a minute"
    );

    // A JWT reaches the API like a static token, and the audit log names its user.
    let admin = jwt(&rsa, claims(&["etcd-admins"]));
    let (status, text) = call(
        &client,
        &base,
        "POST",
        "/api/v1/cluster/maintenance/alarm-disarm",
        Some(&admin),
        Some(r#"{"confirm": "a"}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let records = audit(&client, &base, "", &admin).await;
    let text = format!("{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r["principal"] == "jwt:alice@example.com"
                && r["role"] == "admin"
                && r["path"] == "/api/v1/cluster/maintenance/alarm-disarm"),
        "{text}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["principal"] == "jwt:alice@example.com"
                && r["status"] == 403
                && r["role"].is_null()),
        "a valid JWT without a role is audited under its user: {text}"
    );
    r.stop().await;
}

// ---------------------------------------------------------------- TLS

fn https_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_certificate_rotation() {
    let pki = tempfile::tempdir().unwrap();
    let trusted = TlsFiles::generate(pki.path()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = TlsFiles::generate(other_dir.path()).unwrap();
    // The server's files live where the monitor reads them, so they can be rotated.
    let served = tempfile::tempdir().unwrap();
    let cert = served.path().join("api.pem");
    let key = served.path().join("api-key.pem");
    std::fs::copy(&trusted.server_cert_file, &cert).unwrap();
    std::fs::copy(&trusted.server_key_file, &key).unwrap();
    let (viewer, v_line) = token("v", "viewer", "\"*\"");
    let r = start(&format!(
        "  listen: 127.0.0.1:0\n  tls:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\n    reload_interval: 1s\n\
         \x20 auth:\n    client_cert_roles: {{ root: operator }}\n    tokens:\n{v_line}",
        cert.display(),
        key.display(),
        trusted.ca_file.display()
    ))
    .await
    .unwrap();
    let port = r.addr.port();
    let base = format!("https://127.0.0.1:{port}");

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must fail"
    );

    // TLS without a certificate: a bearer token works, nothing else does.
    let tls = https_client(&trusted.ca_file, None);
    assert_eq!(call(&tls, &base, "GET", "/health", None, None).await.0, 200);
    assert_eq!(
        call(&tls, &base, "GET", "/api/v1/whoami", None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(&tls, &base, "GET", "/api/v1/whoami", Some(&viewer), None)
            .await
            .0,
        200
    );

    // The client certificate (CN root) is an operator.
    let mtls = https_client(
        &trusted.ca_file,
        Some((&trusted.client_cert_file, &trusted.client_key_file)),
    );
    let (status, text) = call(&mtls, &base, "GET", "/api/v1/whoami", None, None).await;
    assert_eq!(status, 200, "{text}");
    let who: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (who["principal"].as_str(), who["role"].as_str()),
        (Some("cert:root"), Some("operator"))
    );
    let (status, text) = call(
        &mtls,
        &base,
        "POST",
        "/api/v1/cluster/maintenance/compact",
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(status, 403, "an operator may not compact: {text}");
    // The same request with https as its origin passes the browser checks.
    let resp = mtls
        .post(format!("{base}/api/v1/silences"))
        .header("origin", base.as_str())
        .header("content-type", "application/json")
        .body(r#"{"matchers": ["cluster=a"], "ends_at_ms": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "origin {base} is our own");

    // A certificate from another CA does not get through the handshake.
    let stranger = https_client(
        &trusted.ca_file,
        Some((&other.client_cert_file, &other.client_key_file)),
    );
    let result = stranger.get(format!("{base}/api/v1/whoami")).send().await;
    assert!(
        result.is_err() || result.unwrap().status() != 200,
        "untrusted client certificate"
    );

    // Rotation: the files change, new connections get the new certificate.
    let only_other = https_client(&other.ca_file, None);
    assert!(
        only_other
            .get(format!("{base}/health"))
            .send()
            .await
            .is_err()
    );
    std::fs::copy(&other.server_cert_file, &cert).unwrap();
    std::fs::copy(&other.server_key_file, &key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = https_client(&other.ca_file, None);
        if fresh
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken rotation keeps the working certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = https_client(&other.ca_file, None);
    assert_eq!(
        fresh
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    r.stop().await;
}

// ---------------------------------------------------------------- secrets

/// Runs the binary with secrets in files, environment variables and the
/// configuration, makes it use every one of them (failed deliveries, API
/// calls, audit records), then looks for each secret in everything it
/// wrote: logs, API answers, the audit log, the store, `config check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_an_audit_row_or_an_answer() {
    // A cluster with etcd auth on: the password is `abc #x`, given through
    // the environment, and must arrive intact for the monitor to connect.
    let password = "abc #x";
    let cluster = EtcdCluster::start(ClusterOptions::new(1).auth(password))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        (
            "slack",
            "https://127.0.0.1:9/services/T000SLACKSECRET/B000/XyZsEcReT",
        ),
        (
            "webhook",
            "http://127.0.0.1:9/hooks/WEBHOOKPATHSECRET?token=QUERYSECRET",
        ),
        ("hmac", "hmac-shared-SECRET-42"),
        ("routing", "R0UTINGKEYSECRET0000000000000000"),
        ("smtp", "smtp-PASSWORD-secret"),
    ];
    for (name, value) in secrets {
        std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
    }
    let (api_token, api_hash) = etcd_monitor::api::auth::new_token().unwrap();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, &api_token).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        "clusters:\n  - {{ name: s, endpoints: [{endpoints}], username: root }}\n\
         monitoring: {{ health_check_interval: 300ms, metrics_interval: 300ms }}\n\
         storage: {{ url: \"sqlite://{db}\" }}\n\
         logging: {{ level: debug }}\n\
         api:\n  listen: 127.0.0.1:{port}\n  auth:\n    tokens:\n\
         \x20     - {{ name: admin, role: admin, token_file: {token_file} }}\n\
         \x20     - {{ name: unused, role: viewer, token_sha256: {api_hash_other} }}\n\
         alerts:\n  custom_rules:\n    - {{ name: AlwaysOn, metric: probe_put_p99_ms, comparison: \">=\", threshold: 0 }}\n\
         \x20 channels:\n\
         \x20   - {{ name: slack, type: slack, url_file: {d}/slack, retry_backoff: 100ms, max_backoff: 200ms, timeout: 1s }}\n\
         \x20   - {{ name: hook, type: webhook, url_file: {d}/webhook, secret_file: {d}/hmac, retry_backoff: 100ms, max_backoff: 200ms, timeout: 1s }}\n\
         \x20   - {{ name: pd, type: pagerduty, url: \"http://127.0.0.1:9/v2/enqueue\", routing_key_file: {d}/routing, retry_backoff: 100ms, max_backoff: 200ms, timeout: 1s }}\n\
         \x20   - {{ name: mail, type: email, smtp_host: 127.0.0.1, smtp_port: 9, smtp_tls: none, username: mon, password_file: {d}/smtp, from: m@example.com, to: [o@example.com], retry_backoff: 100ms, max_backoff: 200ms, timeout: 1s }}\n",
        endpoints = cluster.endpoints().join(", "),
        db = dir.path().join("h.db").display(),
        token_file = token_file.display(),
        api_hash_other = api_hash.chars().rev().collect::<String>(),
        d = dir.path().display(),
    );
    let config = dir.path().join("monitor.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = env!("CARGO_BIN_EXE_etcd-monitor");
    let log_file = dir.path().join("monitor.log");
    let log = std::fs::File::create(&log_file).unwrap();
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("ETCD_MONITOR_CLUSTERS__0__PASSWORD", password)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut answers = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/health")).send().await.is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the monitor exited ({status}):\n{}",
                std::fs::read_to_string(&log_file).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "the monitor never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Connected (the password arrived intact) and the alert fired.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = call(
            &client,
            &base,
            "GET",
            "/api/v1/cluster/status",
            Some(&api_token),
            None,
        )
        .await;
        let (_, alerts) = call(
            &client,
            &base,
            "GET",
            "/api/v1/alerts",
            Some(&api_token),
            None,
        )
        .await;
        if status == 200 && text.contains("\"healthy\"") && alerts.contains("AlwaysOn") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy with an alert: {text} {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // deliveries fail and are retried
    let (status, _) = call(
        &client,
        &base,
        "POST",
        "/api/v1/silences",
        Some(&api_token),
        Some(&format!(
            r#"{{"matchers": ["cluster=s"], "ends_at_ms": 1, "comment": "{}"}}"#,
            "x"
        )),
    )
    .await;
    assert_eq!(status, 422);
    call(
        &client,
        &base,
        "GET",
        "/api/v1/whoami",
        Some("wrong-token"),
        None,
    )
    .await;
    for route in etcd_monitor::api::route_table()
        .iter()
        .filter(|r| r.method == "GET")
    {
        if route.path.ends_with("/events") {
            continue;
        }
        let path = route.path.replace("{name}", "s").replace("{id}", "x");
        let (_, text) = call(&client, &base, "GET", &path, Some(&api_token), None).await;
        answers.push_str(&text);
    }
    assert!(answers.contains("token:admin"), "the audit log was read");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log_file).unwrap();
    assert!(logs.contains("audit"), "audit events are logged");
    assert!(
        logs.contains("slack") && logs.contains("delivery"),
        "failed deliveries are logged:\n{logs}"
    );
    // The store, row by row (the outbox keeps each delivery's last error).
    let store = etcd_monitor::store::Store::open(&format!(
        "sqlite://{}",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    let mut outbox = Vec::new();
    for channel in ["slack", "hook", "pd", "mail"] {
        outbox.extend(store.outbox_pending(channel).await.unwrap());
    }
    assert!(
        outbox.iter().any(|o| o.last_error.is_some()),
        "deliveries failed: {outbox:?}"
    );
    let stored = format!(
        "{outbox:?}{:?}",
        store
            .audit_records(0, i64::MAX, None, 10_000)
            .await
            .unwrap()
    );
    store.close().await;
    let check = Command::new(bin)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);

    let mut needles: Vec<&str> = secrets.iter().map(|(_, v)| *v).collect();
    needles.extend([
        "T000SLACKSECRET",
        "WEBHOOKPATHSECRET",
        "QUERYSECRET",
        password,
        api_token.as_str(),
    ]);
    for (what, text) in [
        ("logs", &logs),
        ("API answers", &answers),
        ("store", &stored),
        ("config check", &check),
    ] {
        for secret in &needles {
            assert!(
                !text.contains(secret),
                "{what} contain the secret {secret:?}"
            );
        }
    }
    // Each channel is still named in its errors, with a redacted URL.
    assert!(
        stored.contains("127.0.0.1") && stored.contains("<redacted>"),
        "{stored}"
    );
}

// ---------------------------------------------------------------- dashboard

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_and_shows_only_what_the_role_may_do() {
    use std::io::{BufRead, BufReader};
    let (viewer, v_line) = token("v", "viewer", "\"*\"");
    let (admin, a_line) = token("adm", "admin", "\"*\"");
    let r = start(&format!(
        "  listen: 127.0.0.1:0\n  auth:\n    tokens:\n{v_line}{a_line}"
    ))
    .await
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shot_dir = root.join("target/screenshots");
    std::fs::create_dir_all(&shot_dir).unwrap();
    let mut node = Command::new("node")
        .arg(root.join("tests/browser/signin.mjs"))
        .arg(format!("http://{}/", r.addr))
        .args([&viewer, &admin, "a"])
        .arg(shot_dir.join("dashboard-signin.png"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (with tests/browser installed by make test)");
    let stdout = node.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .inspect(|l| eprintln!("browser: {l}"))
            .collect::<Vec<String>>()
    })
    .await
    .unwrap();
    let status = node.wait().unwrap();
    let line = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("the browser never printed {prefix:?}: {lines:?}"))
            .clone()
    };
    assert!(
        !lines.iter().any(|l| l.starts_with("PAGE ERROR")),
        "{lines:?}"
    );
    line("SIGNIN ASKED");
    assert!(line("WRONG TOKEN").contains("not valid"), "{lines:?}");
    assert_eq!(
        line("VIEWER"),
        "VIEWER who=token:v (viewer) actions=0 bench=0 audit=0 live=on",
        "a viewer sees no maintenance, benchmark or audit controls"
    );
    assert_eq!(
        line("ADMIN"),
        "ADMIN who=token:adm (admin) actions=4 bench=1 audit=1"
    );
    assert!(line("DISARM").contains("done"), "{lines:?}");
    line("AUDIT SHOWS DISARM");
    assert!(status.success());
    // The browser never sent the token in a URL: the audit paths show none.
    let store = r.monitor.store().clone();
    let rows = store.audit_records(0, i64::MAX, None, 1000).await.unwrap();
    assert!(rows.iter().any(|x| x.principal == "token:adm"
        && x.path.ends_with("alarm-disarm")
        && x.status == 200));
    assert!(
        rows.iter()
            .all(|x| !x.path.contains(&viewer) && !x.path.contains(&admin))
    );
    r.stop().await;
}
