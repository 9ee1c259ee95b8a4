//! A backup of a 1 GiB database (`backup.schedules`): the monitor's own
//! process (`etcd-monitor run`, this build) saving to a local directory and
//! to an S3 server (moto on loopback), next to `etcdctl snapshot save` of
//! the same member, in one run; and the monitor's peak resident memory
//! (VmHWM, the whole process over its life) while it saves, uploads and
//! drills the backup. One fresh monitor process per backup; tools alternate
//! by round. Medians over `ROUNDS` (env, default 3).
//!
//! The database: `GIB` (env, default 1) GiB of 1 MiB values, half random
//! and half repeated text, so zstd has something to do.
//!
//! Run: `cargo bench -p etcd-monitor --bench backup` (needs moto_server:
//! `make deploy-tools`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak and current RSS of `pid`, KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn moto_server() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/moto_server");
    assert!(venv.is_file(), "moto_server: run `make deploy-tools`");
    venv
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn fill(cluster: &EtcdCluster, gib: usize) {
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let endpoints = cluster.endpoints();
        tasks.push(tokio::spawn(async move {
            let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ w as u64;
            for i in (w..gib * 1024).step_by(4) {
                let mut v = vec![0u8; 1 << 20];
                for chunk in v[..1 << 19].chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
                }
                for (j, b) in v[1 << 19..].iter_mut().enumerate() {
                    *b = b"etcd-monitor backup benchmark "[j % 30];
                }
                c.put(format!("/bench/{i:06}"), v, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// One backup by a fresh monitor process: (seconds of the save, stored
/// bytes, peak RSS KiB, whether the drill verified it).
async fn monitor_backup(
    endpoint: &str,
    schedule: &str,
    work: &Path,
    env: &[(&str, &str)],
) -> (f64, u64, u64, bool) {
    let dir = tempfile::tempdir_in(work).unwrap();
    let yaml = format!(
        "clusters:\n  - {{ name: big, endpoints: [\"{endpoint}\"] }}\n\
         storage: {{ url: \"sqlite://{}\" }}\n\
         backup:\n  staging_dir: \"{}\"\n  schedules:\n{schedule}\n\
         api:\n  listen: 127.0.0.1:0\n",
        dir.path().join("h.db").display(),
        dir.path().join("staging").display(),
    );
    let config = dir.path().join("m.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Killed(cmd.spawn().unwrap());
    let pid = child.0.id();
    // The address is in the log ("listening on ...").
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(a) = text
            .split("dashboard at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
        {
            break a.to_string();
        }
        assert!(Instant::now() < deadline, "no address in the log: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body: Value = match reqwest::get(format!("http://{addr}/api/v1/backups")).await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let s = &body["schedules"][0];
        if s["failures"].as_u64().unwrap_or(0) > 0 {
            panic!("the backup failed: {body:#}");
        }
        let drilled = s["last_verified_ms"].as_i64().unwrap_or(0) > 0
            || s["verify_failures"].as_u64().unwrap_or(0) > 0;
        if drilled {
            let r = &body["backups"][0];
            let secs = r["duration_ms"].as_f64().unwrap() / 1000.0;
            let size = r["manifest"]["size"].as_u64().unwrap();
            let verified = r["verification"]["verified"] == true;
            let (peak, _) = rss(pid);
            return (secs, size, peak, verified);
        }
        assert!(
            Instant::now() < deadline,
            "no backup within 600 s: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn etcdctl_save(endpoint: &str, work: &Path) -> f64 {
    let file = work.join("etcdctl.db");
    let _ = std::fs::remove_file(&file);
    let t = Instant::now();
    let out = Command::new("etcdctl")
        .args(["--endpoints", endpoint, "snapshot", "save"])
        .arg(&file)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = env_or("ROUNDS", 3);
    let gib: usize = env_or("GIB", 1);
    let cluster =
        EtcdCluster::start(ClusterOptions::new(1).quota_backend_bytes((gib as u64 + 2) << 30))
            .await
            .unwrap();
    let endpoint = cluster.endpoints()[0].clone();
    let t = Instant::now();
    fill(&cluster, gib).await;
    println!("filled {gib} GiB in {:.1} s", t.elapsed().as_secs_f64());
    let work = tempfile::tempdir().unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Killed(
        Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let s3 = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(&s3).await.is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reqwest::Client::new()
        .put(format!("{s3}/bench"))
        .send()
        .await
        .unwrap();
    let creds = [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
    ];
    let local = |dir: &Path| {
        format!(
            "    - {{ name: local, every: 1h, target: \"{}\", retention: {{ count: 1 }} }}",
            dir.display()
        )
    };
    let remote = |compression: &str| {
        format!(
            "    - {{ name: s3, every: 1h, target: \"s3://bench/{compression}\", s3: {{ endpoint: \"{s3}\" }}, compression: {compression}, retention: {{ count: 1 }} }}"
        )
    };

    let (mut base, mut loc, mut s3n, mut s3z) = (vec![], vec![], vec![], vec![]);
    let (mut peak, mut size_raw, mut size_zst) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        let mut order: Vec<u8> = vec![0, 1, 2, 3];
        order.rotate_left(round % 4);
        for tool in order {
            match tool {
                0 => base.push(etcdctl_save(&endpoint, work.path())),
                1 => {
                    let dir = work.path().join("local");
                    let (s, size, p, ok) =
                        monitor_backup(&endpoint, &local(&dir), work.path(), &[]).await;
                    assert!(ok, "local backup not verified");
                    loc.push(s);
                    size_raw = size;
                    peak = peak.max(p);
                    println!("round {round}: local {s:.2} s, peak RSS {} MiB", p / 1024);
                }
                2 => {
                    let (s, size, p, ok) =
                        monitor_backup(&endpoint, &remote("none"), work.path(), &creds).await;
                    assert!(ok, "s3 backup not verified");
                    s3n.push(s);
                    size_raw = size;
                    peak = peak.max(p);
                    println!("round {round}: s3 {s:.2} s, peak RSS {} MiB", p / 1024);
                }
                _ => {
                    let (s, size, p, ok) =
                        monitor_backup(&endpoint, &remote("zstd"), work.path(), &creds).await;
                    assert!(ok, "s3+zstd backup not verified");
                    s3z.push(s);
                    size_zst = size;
                    peak = peak.max(p);
                    println!("round {round}: s3+zstd {s:.2} s, peak RSS {} MiB", p / 1024);
                }
            }
        }
    }
    let mib = size_raw as f64 / (1 << 20) as f64;
    let b = median(base);
    println!("\nsnapshot {mib:.0} MiB; medians of {rounds} rounds");
    println!(
        "etcdctl snapshot save      {b:6.2} s  {:7.1} MiB/s  1.00x",
        mib / b
    );
    for (name, v) in [
        ("monitor -> local dir", loc),
        ("monitor -> s3", s3n),
        ("monitor -> s3 + zstd", s3z),
    ] {
        let m = median(v);
        println!(
            "{name:<26} {m:6.2} s  {:7.1} MiB/s  {:.2}x etcdctl's time",
            mib / m,
            m / b
        );
    }
    println!(
        "zstd: {:.0} MiB stored ({:.2} of the snapshot)",
        size_zst as f64 / (1 << 20) as f64,
        size_zst as f64 / size_raw.max(1) as f64
    );
    println!(
        "monitor peak RSS (VmHWM) over all runs: {:.1} MiB",
        peak as f64 / 1024.0
    );
}
