//! The monitor's own footprint: `etcd-monitor run` watching a 3-member
//! loopback cluster at a 5 s health and metrics interval for
//! `FOOTPRINT_SECS` seconds (default 600). Reports the peak and final RSS
//! and the CPU it used as a share of one core, read from /proc. For
//! context, the same figures for one etcd member of the cluster over the
//! same window.

#[path = "common/proc_stats.rs"]
mod proc_stats;
use proc_stats::{proc_cpu_seconds, rss_kib};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};

fn main() {
    let secs: u64 = std::env::var("FOOTPRINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(3)).expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("monitor.yaml");
    std::fs::write(
        &config,
        format!(
            "clusters:\n  - name: bench\n    endpoints: [{}]\nmonitoring:\n  health_check_interval: 5s\n  metrics_interval: 5s\nstorage:\n  url: sqlite://{}\napi:\n  listen: 127.0.0.1:0\nlogging:\n  level: warn\n",
            cluster.endpoints().join(", "),
            dir.path().join("history.db").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("etcd-monitor run");
    let pid = child.id();
    let etcd_pid = cluster.member(0).expect("member").pid.expect("pid");
    // Let it connect and settle, then measure.
    std::thread::sleep(Duration::from_secs(10));
    let (cpu0, etcd_cpu0, t0) = (
        proc_cpu_seconds(pid),
        proc_cpu_seconds(etcd_pid),
        Instant::now(),
    );
    let mut peak = 0;
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        samples.push(rss);
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the monitor exited during the run"
        );
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (proc_cpu_seconds(pid) - cpu0) / wall * 100.0;
    let etcd_cpu = (proc_cpu_seconds(etcd_pid) - etcd_cpu0) / wall * 100.0;
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    println!(
        "monitor over {wall:.0} s at 5 s intervals: RSS median {:.1} MiB, peak {:.1} MiB; CPU {cpu:.2} % of one core",
        median as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "context, one etcd member over the same window: RSS {:.1} MiB, CPU {etcd_cpu:.2} % of one core",
        rss_kib(etcd_pid) as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
