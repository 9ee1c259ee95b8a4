//! `etcd-monitor ctl keyspace` over a large keyspace next to
//! `etcdctl get "" --prefix --keys-only | wc -l` on the same 3-member
//! testkit cluster in the same run.
//!
//! The benchmark seeds `KEYS` (env, default 1,000,000) Kubernetes-shaped
//! keys (`/registry/<resource>/ns-<n>/<name>`, 100-byte values), then per
//! round runs our unpaced scan (depth 3, top 10, JSON) and etcdctl's
//! key-only listing, alternating which goes first. It reports wall time,
//! keys per second and our peak RSS (VmHWM of the scanning process, polled
//! every 20 ms), medians over `ROUNDS` (env, default 3) rounds.
//! Bar (issue 19): peak RSS under 50 MB whatever the key count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use etcd_testkit::{ClusterOptions, EtcdCluster};

const RESOURCES: [&str; 5] = ["pods", "events", "configmaps", "secrets", "leases"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn seed(endpoints: &[String], keys: usize) {
    let started = Instant::now();
    let writers = 8;
    let per = keys.div_ceil(writers);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let endpoints = endpoints.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(endpoints, None).await.unwrap();
            let range = (w * per)..((w + 1) * per).min(keys);
            let ids: Vec<usize> = range.collect();
            for chunk in ids.chunks(128) {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|i| {
                        let res = RESOURCES[i % RESOURCES.len()];
                        let key = format!("/registry/{res}/ns-{}/obj-{i:08}", i % 100);
                        TxnOp::put(key, vec![b'v'; 100], None)
                    })
                    .collect();
                client.txn(Txn::new().and_then(ops)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "seeded {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Peak resident set (VmHWM, bytes) of a running process, or 0.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Our scan: wall seconds, keys reported, peak RSS bytes.
fn ours(endpoints: &str) -> (f64, u64, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args([
            "ctl", "keyspace", "--depth", "3", "--top", "10", "-w", "json",
        ])
        .args(["--endpoints", endpoints])
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(vm_hwm(child.id()));
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    (wall, report["scanned_keys"].as_u64().unwrap(), peak)
}

/// etcdctl's key-only listing counted by wc: wall seconds, keys.
fn etcdctl(endpoint: &str) -> (f64, u64) {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ETCDCTL_API=3 etcdctl --command-timeout=300s --endpoints {endpoint} get '' --prefix --keys-only | grep -c ."
        ))
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let keys = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (wall, keys)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let keys = env_usize("KEYS", 1_000_000);
    let rounds = env_usize("ROUNDS", 3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime
        .block_on(EtcdCluster::start(
            ClusterOptions::new(3).quota_backend_bytes(8 << 30),
        ))
        .unwrap();
    let endpoints = cluster.endpoints();
    runtime.block_on(seed(&endpoints, keys));
    let (mut our_wall, mut their_wall, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let run_ours = |walls: &mut Vec<f64>, peaks: &mut Vec<f64>| {
            let (wall, n, peak) = ours(&endpoints.join(","));
            assert_eq!(n, keys as u64, "our scan counted every key");
            walls.push(wall);
            peaks.push(peak as f64);
        };
        let run_theirs = |walls: &mut Vec<f64>| {
            let (wall, n) = etcdctl(&endpoints[1]);
            assert_eq!(n, keys as u64, "etcdctl listed every key");
            walls.push(wall);
        };
        if round % 2 == 0 {
            run_ours(&mut our_wall, &mut peaks);
            run_theirs(&mut their_wall);
        } else {
            run_theirs(&mut their_wall);
            run_ours(&mut our_wall, &mut peaks);
        }
        eprintln!(
            "round {round}: ours {:.2} s (peak {:.1} MiB), etcdctl {:.2} s",
            our_wall[round],
            peaks[round] / 1048576.0,
            their_wall[round]
        );
    }
    let (ow, tw, peak) = (median(our_wall), median(their_wall), median(peaks));
    println!("keyspace scan of {keys} keys, 3-member cluster, medians of {rounds} rounds");
    println!(
        "etcd-monitor ctl keyspace (depth 3, top 10, json): {ow:.2} s, {:.0} keys/s, peak RSS {:.1} MiB",
        keys as f64 / ow,
        peak / 1048576.0
    );
    println!(
        "etcdctl get --prefix --keys-only | grep -c .:    {tw:.2} s, {:.0} keys/s",
        keys as f64 / tw
    );
    println!("ratio (ours / etcdctl, wall): {:.2}", ow / tw);
    println!(
        "bar peak RSS < 50 MB: {}",
        if peak < 50e6 { "PASS" } else { "FAIL" }
    );
}
