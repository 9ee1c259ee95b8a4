//! The monitor daemon's engine against real clusters: verdicts over time,
//! leader changes recorded, fragmentation, metrics parsing, history across
//! restarts, and isolation between clusters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::health::{HealthSnapshot, Verdict};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::{Monitor, MonitorEvent};
use etcd_monitor::store::Store;
use etcd_testkit::{ClusterOptions, EtcdCluster};

const HEALTH: Duration = Duration::from_millis(400);

fn config(clusters: Vec<ClusterConfig>, db: &std::path::Path) -> Config {
    let mut c = Config {
        clusters,
        ..Config::default()
    };
    c.monitoring.health_check_interval = HEALTH;
    c.monitoring.metrics_interval = Duration::from_millis(500);
    c.monitoring.consistency_check_interval = Duration::from_secs(2);
    c.storage.url = format!("sqlite://{}", db.display());
    c
}

fn cluster_config(name: &str, cluster: &EtcdCluster) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        endpoints: cluster.endpoints(),
        dial_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..ClusterConfig::default()
    }
}

async fn start(config: &Config) -> (Monitor, Lifecycle) {
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    (monitor, lifecycle)
}

/// Waits for a health snapshot of `cluster` that satisfies `want`.
async fn wait_for(
    monitor: &Monitor,
    cluster: &str,
    within: Duration,
    what: &str,
    want: impl Fn(&HealthSnapshot) -> bool,
) -> Arc<HealthSnapshot> {
    let mut rx = monitor.cluster(cluster).unwrap().health.clone();
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = rx.borrow_and_update().clone() {
            if want(&s) {
                return s;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not seen within {within:?}; last: {:#?}",
            rx.borrow().as_ref().map(|s| (&s.verdict, &s.findings))
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn kinds(s: &HealthSnapshot) -> Vec<&'static str> {
    s.findings.iter().map(|f| f.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_follow_failures_and_history_survives_a_restart() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let cfg = config(vec![cluster_config("main", &cluster)], &db);
    let (monitor, lifecycle) = start(&cfg).await;

    let s = wait_for(&monitor, "main", Duration::from_secs(10), "healthy", |s| {
        s.verdict == Verdict::Healthy
    })
    .await;
    assert!(s.findings.is_empty(), "{:#?}", s.findings);

    // One member down: degraded within two health intervals (plus a round's time).
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let victim = (leader + 1) % 3;
    let name = cluster.member(victim).unwrap().name;
    cluster.kill(victim).unwrap();
    let killed_at = Instant::now();
    let s = wait_for(
        &monitor,
        "main",
        2 * HEALTH + Duration::from_secs(2),
        "degraded",
        |s| s.verdict == Verdict::Degraded,
    )
    .await;
    assert!(
        killed_at.elapsed() <= 2 * HEALTH + Duration::from_millis(1500),
        "took {:?}",
        killed_at.elapsed()
    );
    let down = s
        .findings
        .iter()
        .find(|f| f.kind == "member_unreachable")
        .expect("member_unreachable");
    assert_eq!(down.member.as_deref(), Some(name.as_str()));

    // Two down: unavailable. Both back: healthy.
    let second = (leader + 2) % 3;
    cluster.kill(second).unwrap();
    wait_for(
        &monitor,
        "main",
        Duration::from_secs(8),
        "unavailable",
        |s| s.verdict == Verdict::Unavailable,
    )
    .await;
    cluster.restart(victim).await.unwrap();
    cluster.restart(second).await.unwrap();
    wait_for(
        &monitor,
        "main",
        Duration::from_secs(20),
        "healthy again",
        |s| s.verdict == Verdict::Healthy,
    )
    .await;

    // Stop the monitor; a new one on the same store sees the history.
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    let store = Store::open(&cfg.storage.url).await.unwrap();
    let rows = store.snapshots("main", 0, i64::MAX, 10_000).await.unwrap();
    for verdict in ["healthy", "degraded", "unavailable"] {
        assert!(
            rows.iter().any(|r| r.verdict == verdict),
            "no {verdict} row in history"
        );
    }
    let findings = store.findings("main", 0, i64::MAX, 1000).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "member_unreachable" && f.member.as_deref() == Some(name.as_str()))
    );
    store.close().await;
    let (monitor, lifecycle) = start(&cfg).await;
    wait_for(
        &monitor,
        "main",
        Duration::from_secs(10),
        "healthy after restart",
        |s| s.verdict == Verdict::Healthy,
    )
    .await;
    // Snapshots are recorded beside the rounds: wait for the first new row.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = monitor
            .store()
            .snapshots("main", 0, i64::MAX, 100_000)
            .await
            .unwrap();
        if after.len() > rows.len() || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after.len() > rows.len(),
        "history was not kept across the restart"
    );
    let samples = monitor
        .store()
        .metric_series("main", "db_total_size_bytes", 0, i64::MAX, 0)
        .await
        .unwrap();
    assert!(!samples.is_empty(), "no metric samples recorded");
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_a_recorded_leader_change() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        vec![cluster_config("main", &cluster)],
        &dir.path().join("h.db"),
    );
    let (monitor, lifecycle) = start(&cfg).await;
    let mut events = monitor.subscribe();
    let first = wait_for(&monitor, "main", Duration::from_secs(10), "healthy", |s| {
        s.verdict == Verdict::Healthy
    })
    .await;
    let old_leader = first.leader.clone().unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let old_name = cluster.member(leader).unwrap().name;

    cluster.pause(leader).unwrap();
    let s = wait_for(
        &monitor,
        "main",
        Duration::from_secs(15),
        "a new leader",
        |s| s.leader.as_ref().is_some_and(|l| *l != old_leader),
    )
    .await;
    let paused = s
        .findings
        .iter()
        .find(|f| f.kind == "member_unreachable")
        .expect("the paused member is reported");
    assert_eq!(paused.member.as_deref(), Some(old_name.as_str()));

    // The change is announced and stored with old and new leader and term.
    let deadline = Instant::now() + Duration::from_secs(5);
    let change = loop {
        match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            events.recv(),
        )
        .await
        {
            Ok(Ok(MonitorEvent::LeaderChanged(c))) => break c,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("no leader change event: {other:?}"),
        }
    };
    assert_eq!(change.old_leader.as_deref(), Some(old_leader.as_str()));
    assert_eq!(change.old_name.as_deref(), Some(old_name.as_str()));
    assert!(change.term.unwrap() >= 3, "{change:?}");
    let stored = monitor.store().leader_changes("main", 0).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0], change);

    cluster.resume(leader).unwrap();
    let s = wait_for(
        &monitor,
        "main",
        Duration::from_secs(15),
        "recovered",
        |s| s.verdict == Verdict::Healthy,
    )
    .await;
    assert_eq!(s.reachable_voting_members, 3);
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmentation_is_reported_and_clears_after_defrag() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let mut client = cluster.client().await.unwrap();
    let value = vec![b'v'; 32 * 1024];
    for i in 0..160 {
        client
            .put(format!("frag/{i:04}"), value.clone(), None)
            .await
            .unwrap();
    }
    let del = client
        .delete(
            "frag/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let rev = del.header().unwrap().revision();
    client
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        vec![cluster_config("frag", &cluster)],
        &dir.path().join("h.db"),
    );
    cfg.monitoring.thresholds.fragmentation_min_db_size = 1024 * 1024;
    let (monitor, lifecycle) = start(&cfg).await;
    let s = wait_for(
        &monitor,
        "frag",
        Duration::from_secs(10),
        "fragmentation",
        |s| kinds(s).contains(&"fragmentation"),
    )
    .await;
    let f = s
        .findings
        .iter()
        .find(|f| f.kind == "fragmentation")
        .unwrap();
    let before = f.evidence["ratio"].as_f64().unwrap();
    assert!(before < 0.5, "{f:?}");

    client.defragment().await.unwrap();
    let s = wait_for(
        &monitor,
        "frag",
        Duration::from_secs(10),
        "no fragmentation after defrag",
        |s| !kinds(s).contains(&"fragmentation"),
    )
    .await;
    let status = s.observation.members[0].status.as_ref().unwrap();
    let after = status.db_size_in_use as f64 / status.db_size as f64;
    assert!(after > before, "ratio {after} not above {before}");
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_fsync_and_commit_p99_agree_with_the_members_buckets() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let mut client = cluster.client().await.unwrap();
    for i in 0..50 {
        client.put(format!("p99/{i}"), "x", None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        vec![cluster_config("m", &cluster)],
        &dir.path().join("h.db"),
    );
    let (monitor, lifecycle) = start(&cfg).await;
    let mut rx = monitor.cluster("m").unwrap().metrics.clone();
    // The windowed figures need two scrapes with fsyncs between them (the
    // monitor's own probes write).
    let round = loop {
        rx.changed().await.unwrap();
        if let Some(r) = rx.borrow().clone() {
            if r.members.iter().all(|m| {
                m.metrics
                    .as_ref()
                    .is_some_and(|x| x.wal_fsync_p99.is_some())
            }) {
                break r;
            }
        }
    };
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    let monitored = round.members[0].metrics.clone().unwrap();
    assert!(monitored.backend_commit_p99.is_some(), "{monitored:?}");
    assert!(monitored.window_seconds.is_some_and(|s| s > 0.0));
    assert_eq!(round.metrics_window_seconds, 300.0);

    // Two pages with writes between them: our window over them against a
    // reading of the buckets' differences by hand.
    let url = &round.members[0].metrics_url;
    let page = || async { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let before = page().await;
    for i in 0..40 {
        client.put(format!("p99/b{i}"), "y", None).await.unwrap();
    }
    // etcd commits its backend in batches (every 100 ms): wait until both
    // histograms have counted something since the first page (bounded).
    let count = |text: &str, name: &str| buckets(text, name).last().map_or(0.0, |b| b.1);
    let grew = |text: &str| {
        [
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_backend_commit_duration_seconds",
        ]
        .iter()
        .all(|n| count(text, n) > count(&before, n))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = page().await;
    while !grew(&after) {
        assert!(
            Instant::now() < deadline,
            "no fsync or backend commit within 5 s of 40 puts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = page().await;
    }
    let parse = |text: &str| {
        let (scrape, bad_lines) = etcd_monitor::metrics::prom::Scrape::parse(text);
        assert_eq!(bad_lines, 0, "lines of a real page we could not parse");
        // The monitor parses only the families it needs; that must change nothing.
        let (only, _) = etcd_monitor::metrics::prom::Scrape::parse_only(
            text,
            etcd_monitor::cluster::MemberMetrics::wants,
        );
        assert!(only.samples.len() < scrape.samples.len());
        let ours = etcd_monitor::cluster::MemberMetrics::from_scrape(&scrape);
        assert_eq!(
            etcd_monitor::cluster::MemberMetrics::from_scrape(&only),
            ours
        );
        // Every family the monitor reads is on the page under the name it
        // reads (this file runs on etcd 3.4 and 3.5; a renamed family shows here).
        for (name, v) in [
            ("quota_backend_bytes", ours.quota_backend_bytes),
            ("db_total_size_bytes", ours.db_total_size_bytes),
            ("db_in_use_bytes", ours.db_in_use_bytes),
            ("has_leader", ours.has_leader),
            ("is_leader", ours.is_leader),
            ("leader_changes_seen", ours.leader_changes_seen),
            ("proposals_committed", ours.proposals_committed),
            ("proposals_applied", ours.proposals_applied),
            ("proposals_pending", ours.proposals_pending),
            ("proposals_failed", ours.proposals_failed),
            ("watchers", ours.watchers),
        ] {
            assert!(v.is_some(), "{name} is missing from the page");
        }
        assert!(ours.grpc_handled_by_code.contains_key("OK"));
        assert!(ours.histograms.wal_fsync.is_some() && ours.histograms.backend_commit.is_some());
        ours
    };
    let mut window = etcd_monitor::metrics::window::Window::new(Duration::from_secs(300));
    window.push(0, parse(&before).take_window_sample());
    window.push(1_000, parse(&after).take_window_sample());
    let mut ours = parse(&after);
    ours.fill_window(&window);
    for (name, got) in [
        ("etcd_disk_wal_fsync_duration_seconds", ours.wal_fsync_p99),
        (
            "etcd_disk_backend_commit_duration_seconds",
            ours.backend_commit_p99,
        ),
    ] {
        let expected = by_hand_p99(&buckets(&after, name), &buckets(&before, name));
        let got = got.unwrap_or_else(|| panic!("{name} p99 missing"));
        assert!(
            (got - expected).abs() <= 1e-9,
            "{name}: ours {got} vs buckets {expected}"
        );
    }
}

/// A histogram's `(le, count)` buckets as a page shows them.
fn buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    page.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").unwrap();
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                count.trim().parse().unwrap(),
            )
        })
        .collect()
}

/// An independent reading of `histogram_quantile(0.99, increase(...))`
/// between two pages of a member that did not restart.
fn by_hand_p99(now: &[(f64, f64)], then: &[(f64, f64)]) -> f64 {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .zip(then)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    let total = delta.last().unwrap().1;
    assert!(total > 0.0, "no observations between the pages");
    let rank = 0.99 * total;
    let i = delta.iter().position(|(_, c)| *c >= rank).unwrap();
    let (lo, below) = if i == 0 { (0.0, 0.0) } else { delta[i - 1] };
    let (hi, count) = delta[i];
    lo + (hi - lo) * (rank - below) / (count - below)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_hanging_does_not_delay_another() {
    let good = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let bad = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    bad.pause(0).unwrap(); // accepts connections, answers nothing: the worst case
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        vec![cluster_config("good", &good), cluster_config("bad", &bad)],
        &dir.path().join("h.db"),
    );
    let (monitor, lifecycle) = start(&cfg).await;
    wait_for(
        &monitor,
        "good",
        Duration::from_secs(10),
        "good is healthy",
        |s| s.verdict == Verdict::Healthy,
    )
    .await;

    let mut events = monitor.subscribe();
    let window = Duration::from_secs(4);
    let started = Instant::now();
    let mut good_checks = 0;
    while started.elapsed() < window {
        if let Ok(Ok(MonitorEvent::Health { cluster, .. })) =
            tokio::time::timeout(window, events.recv()).await
        {
            if cluster == "good" {
                good_checks += 1;
            }
        }
    }
    let expected = (window.as_secs_f64() / HEALTH.as_secs_f64()) as usize;
    assert!(
        good_checks + 2 >= expected,
        "good cluster checked {good_checks} times in {window:?}, expected about {expected}"
    );
    let bad_state = monitor.cluster("bad").unwrap().health.borrow().clone();
    if let Some(s) = bad_state {
        assert_eq!(s.verdict, Verdict::Unavailable);
    }
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    bad.resume(0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_slow_requests_are_evaluated_with_extensive_metrics() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1).extra_args(["--metrics", "extensive"]))
        .await
        .unwrap();
    let mut client = cluster.client().await.unwrap();
    for i in 0..20 {
        client.put(format!("grpc/{i}"), "x", None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        vec![cluster_config("g", &cluster)],
        &dir.path().join("h.db"),
    );
    // Any request is "slow" against a zero threshold: the rule must fire.
    cfg.alerts =
        serde_yaml_ng::from_str("rules:\n  etcdGRPCRequestsSlow:\n    threshold: 0\n    for: 0s\n")
            .unwrap();
    let (monitor, lifecycle) = start(&cfg).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let round = monitor.cluster("g").unwrap().metrics.borrow().clone();
        let p99 = round.and_then(|r| {
            r.members
                .first()
                .and_then(|m| m.metrics.as_ref().and_then(|x| x.grpc_unary_p99))
        });
        let firing = monitor.store().active_alerts(Some("g")).await.unwrap();
        if p99.is_some_and(|v| v > 0.0)
            && firing.iter().any(|a| {
                a.labels.get("alertname").map(String::as_str) == Some("etcdGRPCRequestsSlow")
            })
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC p99 ({p99:?}) or no firing etcdGRPCRequestsSlow ({firing:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// The etcd mixin's panels, from real members: per-method request rates,
/// open watch and lease streams, watchers, leases, compaction revision and
/// lag, memory and CPU, traffic, proposals, elections. Collected into the
/// round, stored in history, exported on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixins_metric_set_is_collected_stored_and_exported() {
    use etcd_client::{CompactionOptions, WatchOptions};
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        vec![cluster_config("main", &cluster)],
        &dir.path().join("h.db"),
    );
    cfg.monitoring.metrics_window = Duration::from_secs(30);
    cfg.api.listen = "127.0.0.1:0".into();
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&cfg, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&cfg, &daemon, &lifecycle)
        .await
        .unwrap();
    let rounds = monitor.cluster("main").unwrap().metrics.clone();
    let first = Instant::now() + Duration::from_secs(10);
    while rounds.borrow().is_none() {
        assert!(Instant::now() < first, "no metrics round");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The workload, after the first scrape so the window sees it grow.
    let mut client = cluster.client().await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut c = cluster.client().await.unwrap();
        streams.push(
            c.watch("mixin/", Some(WatchOptions::new().with_prefix()))
                .await
                .unwrap(),
        );
    }
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(client.lease_grant(60, None).await.unwrap().id());
    }
    let keeper = client.lease_keep_alive(leases[0]).await.unwrap();
    let mut compacted = 0;
    for i in 0..60 {
        let put = client.put(format!("mixin/{i}"), "v", None).await.unwrap();
        if i == 39 {
            compacted = put.header().unwrap().revision();
            client
                .compact(compacted, Some(CompactionOptions::new().with_physical()))
                .await
                .unwrap();
        }
    }

    let ok = |r: &etcd_monitor::monitor::MetricsRound| -> Result<(), String> {
        let m: Vec<_> = r
            .members
            .iter()
            .filter_map(|e| e.metrics.as_ref())
            .collect();
        if m.len() != 3 {
            return Err(format!("{} members scraped", m.len()));
        }
        let sum = |get: fn(&etcd_monitor::cluster::MemberMetrics) -> Option<f64>| {
            m.iter().filter_map(|x| get(x)).sum::<f64>()
        };
        let checks = [
            ("watch streams", sum(|x| x.watch_streams) >= 2.0),
            ("lease streams", sum(|x| x.lease_streams) >= 1.0),
            ("watchers", sum(|x| x.watchers) >= 2.0),
            ("leases", r.leases == Some(3)),
            (
                "compact revision",
                m.iter()
                    .all(|x| x.compact_revision == Some(compacted as f64)),
            ),
            (
                "compaction lag",
                m.iter().all(|x| {
                    x.current_revision
                        .zip(x.compaction_lag)
                        .is_some_and(|(cur, lag)| {
                            cur >= (compacted + 20) as f64 && lag == cur - compacted as f64
                        })
                }),
            ),
            (
                "memory",
                m.iter()
                    .all(|x| x.resident_memory_bytes.is_some_and(|b| b > 1e6)),
            ),
            (
                "cpu",
                m.iter().all(|x| x.cpu_cores.is_some_and(|c| c > 0.0)),
            ),
            ("client in", sum(|x| x.client_received_bytes_rate) > 0.0),
            ("client out", sum(|x| x.client_sent_bytes_rate) > 0.0),
            (
                "peer traffic",
                m.iter().all(|x| {
                    x.peer_sent_bytes_rate.is_some_and(|b| b > 0.0)
                        && x.peer_received_bytes_rate.is_some_and(|b| b > 0.0)
                }),
            ),
            (
                "proposals",
                m.iter().all(|x| {
                    x.proposals_committed_rate.is_some_and(|p| p > 0.0)
                        && x.proposals_applied_rate.is_some_and(|p| p > 0.0)
                }),
            ),
            ("leases granted", sum(|x| x.leases_granted_rate) > 0.0),
            (
                "elections",
                m.iter().all(|x| x.leader_changes_per_day.is_some()),
            ),
            (
                "puts by method",
                m.iter()
                    .filter_map(|x| x.grpc_methods.get("Put"))
                    .map(|p| p.requests_per_second)
                    .sum::<f64>()
                    > 0.0,
            ),
        ];
        let failed: Vec<&str> = checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| *what)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join(", "))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let round = rounds.borrow().clone().unwrap();
        match ok(&round) {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "{e}: {round:#?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Exported on /metrics (from the health snapshot, which takes the
    // latest round at its next check).
    let families = [
        "etcd_monitor_member_watch_streams",
        "etcd_monitor_member_lease_streams",
        "etcd_monitor_member_watchers",
        "etcd_monitor_member_slow_watchers",
        "etcd_monitor_member_pending_events",
        "etcd_monitor_member_compact_revision",
        "etcd_monitor_member_compaction_lag_revisions",
        "etcd_monitor_member_resident_memory_bytes",
        "etcd_monitor_member_cpu_cores",
        "etcd_monitor_member_client_received_bytes_per_second",
        "etcd_monitor_member_peer_sent_bytes_per_second",
        "etcd_monitor_member_proposals_committed_per_second",
        "etcd_monitor_member_proposals_applied_per_second",
        "etcd_monitor_member_leader_changes_per_day",
        "etcd_monitor_member_grpc_method_requests_per_second",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut missing: Vec<&str> = families
            .iter()
            .filter(|f| !page.lines().any(|l| l.starts_with(&format!("{f}{{"))))
            .copied()
            .collect();
        if !page
            .lines()
            .any(|l| l.starts_with("etcd_monitor_cluster_leases{cluster=\"main\"} 3"))
        {
            missing.push("etcd_monitor_cluster_leases 3");
        }
        if !page.lines().any(|l| {
            l.starts_with("etcd_monitor_member_grpc_method_requests_per_second{")
                && l.contains("method=\"Put\"")
        }) {
            missing.push("Put's request rate");
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing from /metrics: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Stored in history: per member, and per method for the request rates.
    let history = |metric: &str| {
        let url =
            format!("http://{addr}/api/v1/clusters/main/metrics/history?metric={metric}&from=5m");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let streams = history("watch_streams").await;
        let by_method = history("grpc_method_rate").await;
        let members = streams["series"].as_array().map_or(0, Vec::len);
        let put = by_method["series"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["method"] == "Put" && s["member"] == "");
        if members == 3 && put {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "history: {streams:#} {by_method:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop((streams, keeper));
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// Reading a frozen member's certificate waits for the timeout; it runs
/// beside the health rounds, so they stay as long as the frozen member's
/// own Status call makes them (the request timeout), not twice that, and
/// the live members' certificates are read meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_does_not_hold_up_rounds_for_its_certificate() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let cluster = EtcdCluster::start(ClusterOptions::new(3).tls())
        .await
        .unwrap();
    let files = cluster.tls_files().unwrap().clone();
    cluster.pause(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cc = cluster_config("main", &cluster);
    cc.request_timeout = TIMEOUT;
    cc.dial_timeout = TIMEOUT;
    cc.tls = Some(etcd_monitor::config::TlsConfig {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(files.client_cert_file.clone()),
        key_file: Some(files.client_key_file.clone()),
        server_name: None,
    });
    let (monitor, lifecycle) = start(&config(vec![cc], &dir.path().join("h.db"))).await;
    let live: Vec<String> = (0..2).map(|i| cluster.endpoint(i).unwrap()).collect();
    let snapshot = wait_for(
        &monitor,
        "main",
        Duration::from_secs(30),
        "the live members' serving certificates",
        |s| {
            live.iter().all(|ep| {
                s.observation
                    .certificates
                    .iter()
                    .any(|c| &c.location == ep && c.not_after_ms.is_some())
            })
        },
    )
    .await;
    let frozen = cluster.endpoint(2).unwrap();
    let stuck = snapshot
        .observation
        .certificates
        .iter()
        .find(|c| c.location == frozen)
        .expect("the frozen member's certificate entry");
    assert!(
        stuck
            .error
            .as_deref()
            .is_some_and(|e| e.contains("handshake")),
        "{stuck:?}"
    );
    // Every round so far: bounded by the frozen member's Status timeout
    // (plus scheduling), not by that and a handshake timeout in a row.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let history = monitor
            .store()
            .snapshots("main", 0, i64::MAX, 100)
            .await
            .unwrap();
        if history.len() >= 4 {
            break history;
        }
        assert!(Instant::now() < deadline, "{} checks", history.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let slowest = history.iter().map(|c| c.duration_ms).fold(0.0, f64::max);
    assert!(
        slowest < TIMEOUT.as_secs_f64() * 1e3 * 1.5,
        "a round took {slowest} ms"
    );
    cluster.resume(2).unwrap();
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}
