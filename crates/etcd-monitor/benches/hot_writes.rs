//! The CPU cost of hot-write tracking (`keyspace.hot_writes`): the monitor
//! (`etcd-monitor run`, health and metrics every 5 s) on a 1-member
//! loopback cluster while the benchmark puts `RATE` (env, default 2000)
//! keys a second for `LOAD_SECS` (env, default 20) seconds, 100-byte values
//! spread over 50 prefixes. Each round runs it twice, with hot writes off
//! (the baseline) and on, alternating which goes first; the cost is the
//! difference in the monitor's CPU (utime + stime from /proc) per 1000
//! events a second. Medians over `ROUNDS` (env, default 3).

#[path = "common/proc_stats.rs"]
mod proc_stats;
use proc_stats::proc_cpu_seconds;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use etcd_testkit::{ClusterOptions, EtcdCluster, free_port};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Monitor {
    child: Child,
    port: u16,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_monitor(endpoints: &str, hot: bool) -> Monitor {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (token, hash) = etcd_monitor::api::auth::new_token().unwrap();
    let config = dir.path().join("monitor.yaml");
    std::fs::write(
        &config,
        format!(
            "clusters:\n  - {{ name: bench, endpoints: [{endpoints}] }}\n\
             monitoring: {{ health_check_interval: 5s, metrics_interval: 5s }}\n\
             storage: {{ url: \"sqlite://{db}\" }}\n\
             keyspace:\n  hot_writes: {{ enabled: {hot} }}\n\
             api:\n  listen: 127.0.0.1:{port}\n  auth:\n    tokens:\n      - {{ name: b, role: viewer, token_sha256: {hash} }}\n\
             logging: {{ level: warn }}\n",
            db = dir.path().join("h.db").display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("etcd-monitor run");
    Monitor {
        child,
        port,
        token,
        _dir: dir,
    }
}

/// A sample of the monitor's /metrics, when it has one.
async fn metric(m: &Monitor, name: &str) -> Option<f64> {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", m.port))
        .bearer_auth(&m.token)
        .send()
        .await
        .ok()?;
    let text = resp.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Puts at `rate` a second for `secs`, from 16 paced writers: the puts
/// made and the seconds taken.
async fn load(client: &Client, round: u64, rate: u64, secs: u64) -> (u64, f64) {
    let writers = 16;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(writers as f64 / rate as f64));
            let n = rate * secs / writers;
            let deadline = Instant::now() + Duration::from_secs(secs * 3);
            let mut done = 0;
            for i in 0..n {
                if Instant::now() > deadline {
                    break;
                }
                tick.tick().await;
                let key = format!("/bench/p{:02}/r{round}-w{w}-{i:06}", (i + w) % 50);
                if client.put(key, vec![b'v'; 100], None).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut puts = 0;
    for t in tasks {
        puts += t.await.unwrap();
    }
    (puts, start.elapsed().as_secs_f64())
}

/// One phase: (monitor CPU as % of one core during the load, puts/s,
/// puts, events the monitor counted).
async fn phase(
    endpoints: &str,
    client: &Client,
    hot: bool,
    round: u64,
    rate: u64,
    secs: u64,
) -> (f64, f64, f64, f64) {
    let m = start_monitor(endpoints, hot);
    // Connected and settled (and, with hot writes on, watching).
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = |v: Option<f64>| if hot { v == Some(1.0) } else { v.is_some() };
    loop {
        let name = if hot {
            "etcd_monitor_keyspace_hot_watching{"
        } else {
            "etcd_monitor_cluster_health{"
        };
        if ready(metric(&m, name).await) {
            break;
        }
        assert!(Instant::now() < deadline, "the monitor never got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = m.child.id();
    let cpu0 = proc_cpu_seconds(pid);
    let (puts, wall) = load(client, round * 2 + u64::from(hot), rate, secs).await;
    let cpu = (proc_cpu_seconds(pid) - cpu0) / wall * 100.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counted = metric(&m, "etcd_monitor_keyspace_hot_events_total{")
        .await
        .unwrap_or(0.0);
    (cpu, puts as f64 / wall, puts as f64, counted)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rate = env_u64("RATE", 2000);
    let secs = env_u64("LOAD_SECS", 20);
    let rounds = env_u64("ROUNDS", 3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(1)).expect("cluster");
    let endpoints = cluster.endpoints().join(", ");
    runtime.block_on(async {
        let client = Client::connect(cluster.endpoints(), None).await.unwrap();
        let (mut off, mut on, mut rates, mut per_k) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            let mut got = [(0.0, 0.0, 0.0, 0.0); 2];
            for hot in order {
                got[usize::from(hot)] = phase(&endpoints, &client, hot, round, rate, secs).await;
            }
            let [(cpu_off, rate_off, _, _), (cpu_on, rate_on, puts, counted)] = got;
            println!(
                "round {round}: off {cpu_off:.1} % CPU at {rate_off:.0} puts/s; on {cpu_on:.1} % at {rate_on:.0} puts/s, {counted:.0} events counted for {puts:.0} puts"
            );
            // Every put is counted (and the monitor's own probe writes too).
            assert!(counted >= puts, "the monitor counted {counted} events of {puts} puts");
            per_k.push((cpu_on - cpu_off) / (rate_on / 1000.0));
            off.push(cpu_off);
            on.push(cpu_on);
            rates.push(rate_on);
        }
        println!(
            "median of {rounds}: {:.0} puts/s; monitor CPU {:.1} % of one core with hot writes off, {:.1} % on; hot-write tracking costs {:.2} % of one core per 1000 events/s",
            median(rates),
            median(off),
            median(on),
            median(per_k)
        );
    });
}
