//! Scheduled backups (`backup.schedules`) against real etcd and a real
//! S3-compatible server (moto, started on loopback): files and manifests
//! with retention, each backup proven by a real restore into a throwaway
//! member; a corrupted backup fails its drill and raises
//! `etcdBackupUnverified`; an unreachable target counts failures and raises
//! `etcdBackupTooOld`; `ctl snapshot restore` checks the manifest and
//! restores from a file or from `s3://`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_monitor::lifecycle::Lifecycle;
use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::{Value, json};

struct Running {
    addr: SocketAddr,
    lifecycle: Lifecycle,
    _dir: tempfile::TempDir,
}

async fn start_monitor(endpoints: &str, db: &Path, backup: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "clusters:\n  - {{ name: main, endpoints: [{endpoints}] }}\n\
         monitoring: {{ health_check_interval: 500ms, metrics_interval: 500ms }}\n\
         storage: {{ url: \"sqlite://{db}\" }}\n\
         alerts:\n  rules:\n    etcdBackupTooOld: {{ for: 0s }}\n\
         backup:\n{backup}\n\
         api:\n  listen: 127.0.0.1:0\n",
        db = db.display(),
    );
    let file = dir.path().join("monitor.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config =
        etcd_monitor::run::load_config(Some(&file), &etcd_monitor::config::Overrides::new())
            .unwrap_or_else(|e| panic!("{e}"));
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle)
        .await
        .unwrap();
    Running {
        addr,
        lifecycle,
        _dir: dir,
    }
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let text = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

async fn metrics(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits up to `secs` for `check` to hold on the value `read` gives.
async fn wait_for<F, Fut>(
    secs: u64,
    what: &str,
    mut read: F,
    check: impl Fn(&Value) -> bool,
) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = read().await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s: {v:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn write_keys(endpoints: Vec<String>, prefix: &str, n: usize) {
    let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
    for i in 0..n {
        c.put(format!("{prefix}{i:04}"), vec![b'v'; 512], None)
            .await
            .unwrap();
    }
}

fn alert_of(alerts: &Value, name: &str) -> Option<Value> {
    alerts["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .cloned()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    files
}

fn local_schedule(dir: &Path, every: &str) -> String {
    format!(
        "  schedules:\n    - {{ name: local, every: {every}, target: \"{}\", retention: {{ count: 3 }} }}",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_schedule_keeps_three_verified_backups_and_a_corrupted_one_fails_its_drill() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    write_keys(cluster.endpoints(), "/app/", 200).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let db = work.path().join("history.db");
    let endpoints = cluster.endpoints().join(",");

    // Every 2 s, keep 3: after five backups or more, retention has had to
    // remove some.
    let m = start_monitor(&endpoints, &db, &local_schedule(&dir, "2s")).await;
    wait_for(
        60,
        "five backups taken",
        || get_json(m.addr, "/api/v1/backups"),
        |v| {
            let s = &v["schedules"][0];
            s["last_verified_ms"].as_i64().unwrap_or(0) > 0
                && s["last_success_ms"].as_i64().unwrap_or(0) - s["since_ms"].as_i64().unwrap_or(0)
                    > 8_000
        },
    )
    .await;
    m.lifecycle.shutdown();
    m.lifecycle.drain(Duration::from_secs(10)).await;
    let files = files_in(&dir);
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".db")).count(),
        3,
        "retention keeps 3: {files:?}"
    );
    assert_eq!(
        files
            .iter()
            .filter(|f| f.ends_with(".db.manifest.json"))
            .count(),
        3,
        "{files:?}"
    );
    assert_eq!(files.len(), 6, "nothing else (no .part left): {files:?}");
    assert_eq!(mode(&dir), 0o700);
    for f in &files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    let before = std::fs::read_dir(&dir).unwrap().count();
    assert!(before > 0);
    // The same history, a schedule that does not come round again for an
    // hour (its first backup is taken at once). The last success before
    // the restart is known at once, from the history.
    let m = start_monitor(&endpoints, &db, &local_schedule(&dir, "1h")).await;
    let seeded = get_json(m.addr, "/api/v1/backups").await;
    assert!(
        seeded["schedules"][0]["last_success_ms"]
            .as_i64()
            .unwrap_or(0)
            > 0,
        "{seeded:#}"
    );
    let listed = wait_for(
        60,
        "the restarted schedule's first backup verified",
        || get_json(m.addr, "/api/v1/backups"),
        |v| {
            let s = &v["schedules"][0];
            s["last_verified_ms"].as_i64().unwrap_or(0) > s["since_ms"].as_i64().unwrap_or(0)
        },
    )
    .await;
    let dbs: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".db"))
        .collect();
    assert_eq!(dbs.len(), 3, "{dbs:?}");
    // Each kept backup: its manifest describes the file and what the
    // cluster held; its restore drill matched (revision, key count, HashKV).
    for f in &dbs {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{f}.manifest.json"))).unwrap())
                .unwrap();
        assert_eq!(manifest["file"], f.as_str());
        // The keys written, and the monitor's own probe key.
        assert!(manifest["key_count"].as_i64().unwrap() >= 200, "{manifest}");
        assert!(manifest["hashkv"].is_u64(), "{manifest}");
        let (size, sha) = sha256(&dir.join(f));
        assert_eq!(manifest["size"], size);
        assert_eq!(manifest["sha256"], sha.as_str());
        let r = listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == f.as_str())
            .unwrap_or_else(|| panic!("{f} not recorded: {listed:#}"));
        let v = &r["verification"];
        assert_eq!(v["verified"], true, "{r:#}");
        assert_eq!(v["key_count"], manifest["key_count"], "{r:#}");
        assert_eq!(v["revision"], manifest["revision"], "{r:#}");
        assert_eq!(v["hashkv"], manifest["hashkv"], "{r:#}");
    }

    // Bytes flipped in the oldest backup: drilled again through the API,
    // it fails on its sha256, and etcdBackupUnverified fires.
    let victim = dbs[0].clone();
    let path = dir.join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("http://{}/api/v1/backups", m.addr))
        .json(&json!({ "schedule": "local", "backup": victim }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let r: Value = answer.json().await.unwrap();
    assert_eq!(r["verification"]["verified"], false, "{r:#}");
    let error = r["verification"]["error"].as_str().unwrap();
    assert!(error.contains("does not match its manifest"), "{error}");
    let alerts = wait_for(
        20,
        "etcdBackupUnverified firing",
        || get_json(m.addr, "/api/v1/alerts"),
        |a| alert_of(a, "etcdBackupUnverified").is_some(),
    )
    .await;
    let alert = alert_of(&alerts, "etcdBackupUnverified").unwrap();
    assert_eq!(alert["labels"]["backup"], victim.as_str(), "{alert:#}");
    assert_eq!(alert["labels"]["schedule"], "local", "{alert:#}");
    let text = metrics(m.addr).await;
    let labels = "{cluster=\"main\",schedule=\"local\"}";
    let value = |name: &str| sample(&text, &format!("{name}{labels}"));
    assert_eq!(value("etcd_monitor_backup_unverified"), Some(1.0), "{text}");
    assert_eq!(
        value("etcd_monitor_backup_verify_failures_total"),
        Some(1.0)
    );
    assert_eq!(value("etcd_monitor_backup_failures_total"), Some(0.0));
    assert!(value("etcd_monitor_backup_size_bytes").unwrap() > 100_000.0);
    assert!(value("etcd_monitor_backup_last_verified_timestamp_seconds").unwrap() > 0.0);
    assert!(value("etcd_monitor_backup_last_success_timestamp_seconds").unwrap() > 0.0);
    m.lifecycle.shutdown();
    m.lifecycle.drain(Duration::from_secs(10)).await;

    // The CLI refuses it too, before touching the data directory; a good
    // one restores.
    let target = work.path().join("restored");
    let out = ctl(
        &[
            "snapshot",
            "restore",
            path.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    assert!(!target.exists());
    let good = dir.join(&dbs[2]);
    let out = ctl(
        &[
            "snapshot",
            "restore",
            good.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(target.join("member/snap/db").is_file());
}

fn sha256(p: &Path) -> (u64, String) {
    etcd_monitor::ops::backup::sha256_file(p).unwrap()
}

fn ctl(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.arg("ctl").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `moto_server` from the test virtualenv (make test installs it), or `PATH`.
fn moto_server() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        })
        .expect("moto_server: run `make test`, which installs moto[server] into target/venv")
}

/// An S3 server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    url: String,
}

impl S3Server {
    async fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&url).await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The bucket.
        let r = reqwest::Client::new()
            .put(format!("{url}/backups"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        S3Server { child, url }
    }

    /// The bucket's keys.
    async fn keys(&self) -> Vec<String> {
        let xml = reqwest::get(format!("{}/backups?list-type=2", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_schedule_uploads_keeps_two_restores_from_s3_and_alerts_when_the_server_is_gone() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    write_keys(cluster.endpoints(), "/s3/", 100).await;
    let mut s3 = S3Server::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let creds = secrets.path().join("credentials");
    std::fs::write(
        &creds,
        "[backup]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n",
    )
    .unwrap();
    let m = start_monitor(
        &cluster.endpoints().join(","),
        &secrets.path().join("history.db"),
        &format!(
            "  schedules:\n    - name: remote\n      every: 2s\n      target: s3://backups/etcd/main\n      \
             s3: {{ endpoint: \"{}\", region: us-east-1, credentials_file: \"{}\", profile: backup }}\n      \
             compression: zstd\n      retention: {{ count: 2 }}",
            s3.url,
            creds.display()
        ),
    )
    .await;
    let listed = wait_for(
        60,
        "3 backups uploaded",
        || get_json(m.addr, "/api/v1/backups"),
        |v| {
            let s = &v["schedules"][0];
            s["last_success_ms"].as_i64().unwrap_or(0) - s["since_ms"].as_i64().unwrap_or(0) > 4_000
                && s["last_verified_ms"].as_i64().unwrap_or(0) > 0
        },
    )
    .await;
    assert_eq!(listed["schedules"][0]["failures"], 0, "{listed:#}");
    assert_eq!(listed["schedules"][0]["target"], "s3://backups/etcd/main");

    // Retention: exactly two backups and their manifests under the prefix.
    let keys = wait_for(
        10,
        "retention down to 2",
        || async { json!(s3.keys().await) },
        |k| k.as_array().unwrap().len() == 4,
    )
    .await;
    let keys: Vec<String> = serde_json::from_value(keys).unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("etcd/main/remote-")),
        "{keys:?}"
    );
    let newest = keys
        .iter()
        .filter(|k| k.ends_with(".db.zst"))
        .max()
        .unwrap()
        .clone();
    let record = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verification"]["verified"] == true)
        .unwrap_or_else(|| panic!("no verified backup: {listed:#}"));
    assert_eq!(record["manifest"]["compression"], "zstd");
    assert!(
        record["manifest"]["key_count"].as_i64().unwrap() >= 100,
        "{record:#}"
    );
    assert_eq!(
        record["verification"]["key_count"],
        record["manifest"]["key_count"]
    );
    assert!(
        record["manifest"]["size"].as_u64().unwrap()
            < record["manifest"]["snapshot_size"].as_u64().unwrap(),
        "zstd made it smaller: {record:#}"
    );

    // Restore from s3://, the manifest checked first: a data directory etcd starts from.
    let out_dir = tempfile::tempdir().unwrap();
    let data = out_dir.path().join("data");
    let source = format!("s3://backups/{newest}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
    ];
    let out = ctl(
        &[
            "snapshot",
            "restore",
            &source,
            "--data-dir",
            data.to_str().unwrap(),
            "--dry-run",
            "--s3-endpoint",
            &s3.url,
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("matches its manifest and restores"), "{said}");
    assert!(!data.exists(), "a dry run writes nothing");
    let out = ctl(
        &[
            "snapshot",
            "restore",
            &source,
            "--data-dir",
            data.to_str().unwrap(),
            "--s3-endpoint",
            &s3.url,
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("member/snap/db").is_file());

    // The server goes away: failures are counted, and with no success for
    // more than 2 x 2 s, etcdBackupTooOld fires.
    s3.stop();
    let alerts = wait_for(
        60,
        "etcdBackupTooOld firing",
        || get_json(m.addr, "/api/v1/alerts"),
        |a| alert_of(a, "etcdBackupTooOld").is_some(),
    )
    .await;
    let alert = alert_of(&alerts, "etcdBackupTooOld").unwrap();
    assert_eq!(alert["labels"]["schedule"], "remote");
    let text = metrics(m.addr).await;
    let failures = sample(
        &text,
        "etcd_monitor_backup_failures_total{cluster=\"main\",schedule=\"remote\"}",
    )
    .unwrap();
    assert!(failures >= 1.0, "{text}");
    let list = get_json(m.addr, "/api/v1/backups").await;
    let failed = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "failed")
        .unwrap_or_else(|| panic!("no failed attempt recorded: {list:#}"));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("s3://backups/etcd/main/"),
        "{failed:#}"
    );
    assert!(!failed.to_string().contains("testing-secret"), "{failed:#}");
    m.lifecycle.shutdown();
    m.lifecycle.drain(Duration::from_secs(10)).await;
}
