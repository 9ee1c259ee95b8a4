//! The API under a paced load on loopback: 1000 requests/s for 10 s to
//! `/api/v1/cluster/status` and to `/metrics` (one after the other), with
//! `/health` (no data behind it) as the baseline of the same run. The
//! requests are open-loop: each is sent at its scheduled time, whether or
//! not earlier ones have answered, so slow answers cannot hide queueing.
//!
//! Authentication's cost: the status endpoint anonymously, with a static
//! bearer token and with an RS256 JWT (verified against a JWKS file), in
//! `ROUNDS` rounds (default 3) whose order rotates, so drift of the
//! machine hits all three alike; medians of the rounds' p99 are compared.

use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_testkit::{ClusterOptions, EtcdCluster};

const RATE: u64 = 1000;
const SECONDS: u64 = 10;

async fn paced(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> (Vec<Duration>, usize) {
    let total = RATE * SECONDS;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.to_string());
        let bearer = bearer.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut req = client.get(&url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let ok = match req.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (t.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((d, true)) => lat.push(d),
            _ => errors += 1,
        }
    }
    lat.sort();
    (lat, errors)
}

fn pct(v: &[Duration], q: f64) -> f64 {
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(f64::NAN)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.expect("cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            clusters: vec![ClusterConfig { name: "bench".into(), endpoints: cluster.endpoints(), ..ClusterConfig::default() }],
            ..Config::default()
        };
        config.monitoring.health_check_interval = Duration::from_secs(5);
        config.monitoring.metrics_interval = Duration::from_secs(5);
        config.storage.url = format!("sqlite://{}", dir.path().join("h.db").display());
        config.api.listen = "127.0.0.1:0".into();
        // One server for all three: a token, a JWT provider, and anonymous admin.
        let (token, hash) = etcd_monitor::api::auth::new_token().expect("token");
        let jwt = {
            use jsonwebtoken::{Algorithm, EncodingKey, Header};
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
            let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("key");
            let mut jwk = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk")).expect("json");
            jwk["kid"] = "k1".into();
            let jwks = dir.path().join("jwks.json");
            std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).expect("jwks");
            config.api.auth.jwt = Some(etcd_monitor::config::JwtConfig {
                issuer: "https://idp.bench".into(),
                audience: "etcd-monitor".into(),
                jwks_file: Some(jwks),
                jwks_url: None,
                role_claim: "groups".into(),
                roles: [("ops".to_string(), etcd_monitor::config::Role::Viewer)].into(),
                clusters: vec!["*".into()],
            });
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("k1".into());
            let claims = serde_json::json!({ "iss": "https://idp.bench", "aud": "etcd-monitor", "sub": "bench", "groups": ["ops"], "exp": now + 3600 });
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        };
        config.api.auth.tokens = vec![etcd_monitor::config::TokenConfig {
            name: "bench".into(),
            role: etcd_monitor::config::Role::Viewer,
            token_file: None,
            token_sha256: Some(hash),
            clusters: vec!["*".into()],
        }];
        config.api.auth.anonymous_role = Some(etcd_monitor::config::AnonymousRole::Admin);
        let lifecycle = Lifecycle::new();
        let daemon = etcd_monitor::run::start(&config, &lifecycle).await.expect("monitor");
        let monitor = daemon.monitor.clone();
        let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle).await.expect("api");
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
        // Wait for data behind the endpoints.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("http://{addr}/api/v1/cluster/metrics/current")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "no data");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for path in ["/health", "/api/v1/cluster/status", "/metrics"] {
            let (lat, errors) = paced(&client, &format!("http://{addr}{path}"), None).await;
            println!(
                "{path}: {RATE} req/s for {SECONDS} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
            );
        }
        let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
        let kinds: [(&str, Option<&str>); 3] = [("anonymous", None), ("token", Some(&token)), ("jwt", Some(&jwt))];
        let mut p99s: [Vec<f64>; 3] = Default::default();
        let url = format!("http://{addr}/api/v1/cluster/status");
        for round in 0..rounds {
            for k in 0..3 {
                let i = (round + k) % 3;
                let (name, bearer) = kinds[i];
                let (lat, errors) = paced(&client, &url, bearer).await;
                assert_eq!(errors, 0, "{name}: {errors} requests failed (a wrong credential answers 401)");
                println!(
                    "round {round} status as {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    pct(&lat, 0.5),
                    pct(&lat, 0.99),
                    lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
                );
                p99s[i].push(pct(&lat, 0.99));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [mut anon, mut tok, mut jwt_p99] = p99s;
        let (anon, tok, jwt_p99) = (median(&mut anon), median(&mut tok), median(&mut jwt_p99));
        println!(
            "status p99, median of {rounds} rounds: anonymous {anon:.2} ms, token {tok:.2} ms ({:.2}x), jwt {jwt_p99:.2} ms ({:.2}x); bar <= 1.2x",
            tok / anon,
            jwt_p99 / anon
        );
        etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    });
}
