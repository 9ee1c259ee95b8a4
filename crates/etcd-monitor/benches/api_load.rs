//! The API under a paced load on loopback: 1000 requests/s for 10 s to
//! `/api/v1/cluster/status` and to `/metrics` (one after the other), with
//! `/health` (no data behind it) as the baseline of the same run. The
//! requests are open-loop: each is sent at its scheduled time, whether or
//! not earlier ones have answered, so slow answers cannot hide queueing.

use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_testkit::{ClusterOptions, EtcdCluster};

const RATE: u64 = 1000;
const SECONDS: u64 = 10;

async fn paced(client: &reqwest::Client, url: &str) -> (Vec<Duration>, usize) {
    let total = RATE * SECONDS;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match client.get(&url).send().await {
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
        let lifecycle = Lifecycle::new();
        let monitor = etcd_monitor::run::start(&config, &lifecycle).await.expect("monitor");
        let addr = etcd_monitor::run::serve_api(&config, &monitor, &lifecycle).await.expect("api");
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
        // Wait for data behind the endpoints.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("http://{addr}/api/v1/cluster/metrics/current")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "no data");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for path in ["/health", "/api/v1/cluster/status", "/metrics"] {
            let (lat, errors) = paced(&client, &format!("http://{addr}{path}")).await;
            println!(
                "{path}: {RATE} req/s for {SECONDS} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
            );
        }
        etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    });
}
