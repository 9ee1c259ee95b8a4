//! The defrag autopilot (`maintenance.defrag`) against a real, fragmented
//! 3-member cluster: inside its window it defragments the members the rule
//! matches, followers first and the leader last, and stores each member's
//! sizes before and after; outside its window it does nothing; a rule that
//! matches no member skips them all, saying why.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::Client;
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::Monitor;
use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;

struct Running {
    addr: SocketAddr,
    monitor: Monitor,
    lifecycle: Lifecycle,
    _dir: tempfile::TempDir,
}

async fn start_monitor(endpoints: &str, defrag: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "clusters:\n  - {{ name: frag, endpoints: [{endpoints}] }}\n\
         monitoring: {{ health_check_interval: 500ms, metrics_interval: 500ms }}\n\
         storage: {{ url: \"sqlite://{db}\" }}\n\
         maintenance:\n  defrag: {defrag}\n\
         api:\n  listen: 127.0.0.1:0\n",
        db = dir.path().join("h.db").display(),
    );
    let file = dir.path().join("monitor.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config =
        etcd_monitor::run::load_config(Some(&file), &etcd_monitor::config::Overrides::new())
            .unwrap();
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle)
        .await
        .unwrap();
    Running {
        addr,
        monitor,
        lifecycle,
        _dir: dir,
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn runs(addr: SocketAddr) -> Value {
    let text = get(addr, "/api/v1/clusters/frag/maintenance/defrag/runs").await;
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["runs"].is_array(), "{text}");
    v
}

/// The newest stored run `wanted` accepts, waiting up to `secs` seconds.
async fn first_run(addr: SocketAddr, secs: u64, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = runs(addr).await;
        if let Some(run) = r["runs"].as_array().unwrap().iter().find(|x| wanted(x)) {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such run within {secs} s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A UTC window `HH:MM-HH:MM` from `from` to `to` minutes after now.
fn window(from: i64, to: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let hhmm = |m: i64| {
        let minute = (now / 60 + m).rem_euclid(1440);
        format!("{:02}:{:02}", minute / 60, minute % 60)
    };
    format!("{}-{}", hhmm(from), hhmm(to))
}

/// About 40 MiB of values written and deleted, then compacted: each member
/// has some 40 MiB free in its backend file.
async fn fragment(client: &mut Client) {
    for i in 0..40 {
        client
            .put(format!("/frag/{i}"), vec![b'f'; 1 << 20], None)
            .await
            .unwrap();
    }
    let rev = client
        .delete(
            "/frag/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autopilot_defragments_inside_its_window_what_its_rule_matches() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let endpoints = cluster.endpoints().join(",");
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    fragment(&mut client).await;
    let leader = cluster.leader_index().await.unwrap().expect("a leader");

    // A window that is not now: nothing happens, whatever the rule says.
    let m = start_monitor(
        &endpoints,
        &format!(
            "{{ every: 1s, window: \"{}\", rule: \"dbSize > 0\", pause: 200ms }}",
            window(120, 180)
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = runs(m.addr).await;
    assert_eq!(r["autopilot"], true);
    assert_eq!(r["runs"].as_array().unwrap().len(), 0, "{r}");
    let metrics = get(m.addr, "/metrics").await;
    assert!(
        metrics.contains(
            "etcd_monitor_defrag_runs_total{cluster=\"frag\",outcome=\"defragmented\"} 0"
        ),
        "{metrics}"
    );
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;

    // A rule no member meets: one run, every member skipped with its sizes.
    let m = start_monitor(
        &endpoints,
        "{ every: 1s, rule: \"dbSizeFree > 10GB || dbQuotaUsage > 0.9\" }",
    )
    .await;
    let skipped = first_run(m.addr, 20, |_| true).await;
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    let members = skipped["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{skipped}");
    for member in members {
        assert_eq!(member["outcome"], "skipped", "{member}");
        // The quota came from the monitor's scrape of each member.
        assert!(
            member["reason"]
                .as_str()
                .unwrap()
                .contains("quota 2147483648"),
            "{member}"
        );
    }
    // Later checks that skip again are counted, not stored again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(m.addr).await["runs"].as_array().unwrap().len(), 1);
    let metrics = get(m.addr, "/metrics").await;
    let skips: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("etcd_monitor_defrag_runs_total{cluster=\"frag\",outcome=\"skipped\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(skips >= 3.0, "{skips} skipped runs counted");
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;

    // A window that is now and a rule every fragmented member meets.
    let m = start_monitor(
        &endpoints,
        &format!(
            "{{ every: 1s, window: \"{} UTC\", rule: \"dbSizeFree > 10MB && dbQuotaUsage < 0.5\", pause: 200ms, compact_first: true }}",
            window(-1, 30)
        ),
    )
    .await;
    let run = first_run(m.addr, 60, |x| x["outcome"] == "defragmented").await;
    eprintln!("{run:#}");
    assert!(run["compacted_to"].as_i64().unwrap() > 0, "{run}");
    let members = run["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{run}");
    let leader_url = &cluster.endpoints()[leader];
    assert_eq!(
        &members[2]["endpoint"],
        leader_url.as_str(),
        "the leader last: {run}"
    );
    assert_eq!(members[2]["was_leader"], true);
    assert!(
        members[..2].iter().all(|x| x["was_leader"] == false),
        "{run}"
    );
    for member in members {
        assert_eq!(member["outcome"], "defragmented", "{member}");
        let (before, after) = (
            member["db_size_before"].as_i64().unwrap(),
            member["db_size_after"].as_i64().unwrap(),
        );
        assert!(before - after > 20 << 20, "{before} -> {after}: {member}");
    }
    let metrics = get(m.addr, "/metrics").await;
    assert!(
        metrics.contains(
            "etcd_monitor_defrag_runs_total{cluster=\"frag\",outcome=\"defragmented\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("etcd_monitor_defrag_members_total{cluster=\"frag\"} 3"));
    // Once done, the rule no longer matches: the members are left alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = runs(m.addr).await;
    assert_eq!(
        r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["outcome"] == "defragmented")
            .count(),
        1,
        "{r}"
    );
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autopilot_cures_nospace_and_disarms_it_when_asked() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3).quota_backend_bytes(2 << 20))
        .await
        .unwrap();
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    // Fill the 2 MiB quota until etcd raises NOSPACE, then delete it all
    // (deletes are allowed under NOSPACE; the file does not shrink).
    let value = vec![b'x'; 100_000];
    let mut full = false;
    for i in 0..200 {
        if let Err(e) = client.put(format!("fill/{i}"), value.clone(), None).await {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the quota was never reached");
    client
        .delete(
            "fill/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(!alarms.alarms().is_empty(), "NOSPACE raised");

    let m = start_monitor(
        &cluster.endpoints().join(","),
        // A cron schedule: every minute, on the minute (UTC).
        "{ schedule: \"* * * * *\", rule: \"dbQuotaUsage > 0.5\", compact_first: true, disarm_nospace: true, pause: 100ms }",
    )
    .await;
    let run = first_run(m.addr, 120, |x| x["outcome"] != "skipped").await;
    assert_eq!(run["outcome"], "defragmented", "{run}");
    assert!(
        !run["disarmed_nospace"].as_array().unwrap().is_empty(),
        "{run}"
    );
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 0, "an alarm is still armed");
    client.put("after", "writable again", None).await.unwrap();
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;
}
