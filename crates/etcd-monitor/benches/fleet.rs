//! The monitor's cost per watched cluster: `etcd-monitor run` (this build)
//! with N cluster entries (N = 1, 10, 100 by default; `FLEET_SIZES`), all
//! over one real 3-member loopback cluster, at 5 s health and metrics
//! intervals. After `WARMUP_SECS` (default 20) it reads the process's CPU
//! time and RSS over `WINDOW_SECS` (default 60): CPU as a share of one core,
//! RSS at the end of the window, and the cost per cluster both as
//! total / N and as the marginal cost over N = 1.
//!
//! Then two replicas (`ha`, PostgreSQL started here, a 1-member
//! coordination cluster) with the largest N: once both own their share,
//! each one's CPU over the window and the split between them.
//!
//! Run: `cargo bench -p etcd-monitor --bench fleet` (about 6 minutes).

#[path = "common/proc_stats.rs"]
mod proc_stats;
use proc_stats::{proc_cpu_seconds, rss_kib};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster, Postgres, free_port};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clusters_yaml(n: usize, endpoints: &str) -> String {
    let mut out = String::from("clusters:\n");
    for i in 0..n {
        out.push_str(&format!(
            "  - name: c{i:03}\n    endpoints: [{endpoints}]\n"
        ));
    }
    out
}

fn spawn(config: &std::path::Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("etcd-monitor run"),
    )
}

/// CPU share of one core over `window` and RSS (MiB) at its end, per process.
fn measure(pids: &[u32], window: Duration) -> Vec<(f64, f64)> {
    let before: Vec<f64> = pids.iter().map(|p| proc_cpu_seconds(*p)).collect();
    let start = Instant::now();
    std::thread::sleep(window);
    let secs = start.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| {
            (
                100.0 * (proc_cpu_seconds(*p) - b) / secs,
                rss_kib(*p) as f64 / 1024.0,
            )
        })
        .collect()
}

fn owned(api: &str) -> Option<usize> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("{api}/api/v1/replicas")])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["self"] == true)?["clusters"]
        .as_array()
        .map(|c| c.len())
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FLEET_SIZES")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let warmup = Duration::from_secs(env_or("WARMUP_SECS", 20));
    let window = Duration::from_secs(env_or("WINDOW_SECS", 60));
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(3)).expect("cluster");
    let endpoints = cluster.endpoints().join(", ");
    let dir = tempfile::tempdir().expect("tempdir");
    let common = "monitoring:\n  health_check_interval: 5s\n  metrics_interval: 5s\nlogging:\n  level: warn\n";

    println!(
        "| cluster entries | CPU (% of a core) | RSS (MiB) | CPU per cluster (total / N) | RSS per cluster (total / N) | marginal CPU per cluster | marginal RSS per cluster |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut first: Option<(usize, f64, f64)> = None;
    for &n in &sizes {
        let config = dir.path().join(format!("fleet-{n}.yaml"));
        std::fs::write(
            &config,
            format!(
                "{}{common}storage:\n  url: sqlite://{}\napi:\n  listen: 127.0.0.1:0\n",
                clusters_yaml(n, &endpoints),
                dir.path().join(format!("history-{n}.db")).display()
            ),
        )
        .expect("config");
        let child = spawn(&config);
        std::thread::sleep(warmup);
        let (cpu, rss) = measure(&[child.0.id()], window)[0];
        drop(child);
        let (marginal_cpu, marginal_rss) = match first {
            Some((n0, c0, r0)) if n > n0 => (
                format!("{:.3} %", (cpu - c0) / (n - n0) as f64),
                format!("{:.2} MiB", (rss - r0) / (n - n0) as f64),
            ),
            _ => ("".into(), "".into()),
        };
        if first.is_none() {
            first = Some((n, cpu, rss));
        }
        println!(
            "| {n} | {cpu:.2} % | {rss:.1} | {:.3} % | {:.2} MiB | {marginal_cpu} | {marginal_rss} |",
            cpu / n as f64,
            rss / n as f64
        );
    }

    // Two replicas sharing the largest fleet.
    let n = *sizes.iter().max().unwrap_or(&100);
    let pg = Postgres::start(None);
    let coordination = EtcdCluster::start_blocking(ClusterOptions::new(1)).expect("coordination");
    let mut replicas = Vec::new();
    let mut apis = Vec::new();
    for name in ["r1", "r2"] {
        let port = free_port();
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "{}{common}storage:\n  url: {}\napi:\n  listen: 127.0.0.1:{port}\nha:\n  enabled: true\n  replica_name: {name}\n  etcd:\n    endpoints: [{}]\n",
                clusters_yaml(n, &endpoints),
                pg.url,
                coordination.endpoints().join(", ")
            ),
        )
        .expect("config");
        replicas.push(spawn(&config));
        apis.push(format!("http://127.0.0.1:{port}"));
        // The first one migrates the store alone.
        std::thread::sleep(Duration::from_secs(2));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let split = loop {
        let owned: Vec<Option<usize>> = apis.iter().map(|a| owned(a)).collect();
        if owned.iter().all(Option::is_some)
            && owned.iter().map(|o| o.unwrap_or(0)).sum::<usize>() == n
        {
            break owned;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not split the clusters: {owned:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    std::thread::sleep(warmup);
    let pids: Vec<u32> = replicas.iter().map(|r| r.0.id()).collect();
    let m = measure(&pids, window);
    println!();
    println!("| replica | clusters owned | CPU (% of a core) | RSS (MiB) |");
    println!("|---|---|---|---|");
    for (i, (cpu, rss)) in m.iter().enumerate() {
        println!(
            "| r{} | {} | {cpu:.2} % | {rss:.1} |",
            i + 1,
            split[i].unwrap_or(0)
        );
    }
    let (a, b) = (m[0].0, m[1].0);
    println!(
        "\nCPU split r1 : r2 = {:.2} : {:.2} (of their sum {:.2} % of a core)",
        a / (a + b),
        b / (a + b),
        a + b
    );
    drop(replicas);
    drop(pg);
}
