//! The history store on a real PostgreSQL server, started by the test on a
//! loopback port (Debian's postgresql package; `make test` installs it):
//! migrations, every kind of record, retention, and the monitor writing its
//! history there while it watches a real etcd cluster.

use std::time::{Duration, Instant, SystemTime};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::health::Verdict;
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::store::{LeaderChange, MetricPoint, Store, unix_ms};
use etcd_testkit::{ClusterOptions, EtcdCluster, Postgres};

fn start_postgres() -> Postgres {
    Postgres::start(None)
}

fn start_postgres_with(tls: Option<&etcd_testkit::TlsFiles>) -> Postgres {
    Postgres::start(tls)
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
