//! The history store on a real PostgreSQL server, started by the test on a
//! loopback port (Debian's postgresql package; `make test` installs it):
//! migrations, every kind of record, retention, and the monitor writing its
//! history there while it watches a real etcd cluster.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::health::Verdict;
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::store::{LeaderChange, MetricPoint, Store, unix_ms};
use etcd_testkit::{ClusterOptions, EtcdCluster};

struct Postgres {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql/*/bin"))
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
fn as_server_user(program: PathBuf) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_postgres() -> Postgres {
    start_postgres_with(None)
}

/// A server; with `tls`, serving `ssl=on` with that certificate and key.
fn start_postgres_with(tls: Option<&etcd_testkit::TlsFiles>) -> Postgres {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = user_ids("postgres");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    let out = as_server_user(pg_bin("initdb"))
        .args(["-D"])
        .arg(&data)
        .args(["-A", "trust", "-U", "monitor", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut ssl = Vec::new();
    if let Some(files) = tls {
        // The server reads its key only if nobody else can.
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::copy(&files.server_cert_file, &cert).unwrap();
        std::fs::copy(&files.server_key_file, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = user_ids("postgres");
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
            }
        }
        ssl = vec![
            "-c".to_string(),
            "ssl=on".into(),
            "-c".into(),
            format!("ssl_cert_file={}", cert.display()),
            "-c".into(),
            format!("ssl_key_file={}", key.display()),
        ];
    }
    let child = as_server_user(pg_bin("postgres"))
        .arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ])
        .args(&ssl)
        .arg("-k")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Postgres {
        child,
        url: format!("postgres://monitor@127.0.0.1:{port}/postgres"),
        _dir: dir,
    }
}

fn user_ids(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .expect("a postgres user");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

async fn open_when_ready(url: &str) -> Store {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(url).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot open {url}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lives_in_postgresql() {
    let pg = start_postgres();
    let store = open_when_ready(&pg.url).await;
    // Opening twice runs no migration twice.
    let again = Store::open(&pg.url).await.unwrap();
    again.close().await;

    let now = unix_ms(SystemTime::now());
    let change = LeaderChange {
        cluster: "pg".into(),
        at_ms: now,
        old_leader: Some("a1".into()),
        new_leader: Some("b2".into()),
        old_name: Some("m0".into()),
        new_name: Some("m1".into()),
        term: Some(7),
    };
    store.record_leader_change(&change).await.unwrap();
    assert_eq!(
        store.leader_changes("pg", now - 1).await.unwrap(),
        vec![change]
    );
    let points: Vec<MetricPoint> = (0..10)
        .map(|i| MetricPoint {
            member: "m0".into(),
            name: "db_total_size_bytes".into(),
            at_ms: now - 10_000 + i * 1000,
            value: i as f64,
        })
        .collect();
    store.record_metrics("pg", &points).await.unwrap();
    assert_eq!(
        store
            .metric_series("pg", "db_total_size_bytes", 0, i64::MAX, 0)
            .await
            .unwrap()
            .len(),
        10
    );
    let buckets = store
        .metric_series("pg", "db_total_size_bytes", 0, i64::MAX, 5000)
        .await
        .unwrap();
    assert!(buckets.len() >= 2 && buckets.len() <= 3, "{buckets:?}");
    let removed = store.enforce_retention(now - 5_000).await.unwrap();
    assert!(removed >= 5, "retention removed {removed} rows");
    assert_eq!(
        store
            .metric_series("pg", "db_total_size_bytes", 0, i64::MAX, 0)
            .await
            .unwrap()
            .len(),
        5
    );

    // The monitor writes its history there while watching a real cluster.
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let mut config = Config {
        clusters: vec![ClusterConfig {
            name: "pg".into(),
            endpoints: cluster.endpoints(),
            ..ClusterConfig::default()
        }],
        ..Config::default()
    };
    config.monitoring.health_check_interval = Duration::from_millis(300);
    config.monitoring.metrics_interval = Duration::from_millis(300);
    config.storage.url = pg.url.clone();
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = monitor
            .store()
            .snapshots("pg", 0, i64::MAX, 100)
            .await
            .unwrap();
        let samples = monitor
            .store()
            .metric_series("pg", "probe_put_p99_ms", 0, i64::MAX, 0)
            .await
            .unwrap();
        if rows
            .iter()
            .any(|r| r.verdict == "healthy" && r.body.is_some())
            && !samples.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no history in PostgreSQL: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshot = monitor
        .cluster("pg")
        .unwrap()
        .health
        .borrow()
        .clone()
        .unwrap();
    assert_eq!(snapshot.verdict, Verdict::Healthy);
    // Alert history and benchmark tables exist and answer.
    monitor
        .store()
        .alert_history(Some("pg"), None, 0, i64::MAX, 10)
        .await
        .unwrap();
    monitor.store().benchmarks(10).await.unwrap();
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let files = etcd_testkit::TlsFiles::generate(pki.path()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = etcd_testkit::TlsFiles::generate(other_dir.path()).unwrap();
    let pg = start_postgres_with(Some(&files));
    // verify-full: the CA signed it and the name (127.0.0.1) matches.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        files.ca_file.display()
    );
    let store = open_when_ready(&url).await;
    store
        .record_leader_change(&LeaderChange {
            cluster: "tls".into(),
            at_ms: unix_ms(SystemTime::now()),
            old_leader: None,
            new_leader: Some("1".into()),
            old_name: None,
            new_name: Some("m0".into()),
            term: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(store.leader_changes("tls", 0).await.unwrap().len(), 1);
    store.close().await;
    // A CA that did not sign the server's certificate: refused.
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        other.ca_file.display()
    );
    let e = Store::open(&wrong).await.unwrap_err().to_string();
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("tls") || e.contains("TLS"),
        "{e}"
    );
    // verify-ca checks the CA only; require encrypts without checking.
    let ca_only = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        pg.url,
        files.ca_file.display()
    );
    Store::open(&ca_only).await.unwrap().close().await;
    Store::open(&format!("{}?sslmode=require", pg.url))
        .await
        .unwrap()
        .close()
        .await;
}
