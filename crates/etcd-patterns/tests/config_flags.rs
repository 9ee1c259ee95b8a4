//! Config manager and feature flags against a real etcd (shared cluster).

mod common;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use common::{eventually, shared_client};
use etcd_patterns::{Config, Error, Flag, Flags, Format};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Limits {
    max_conns: u32,
}

fn limits(n: u32) -> Limits {
    Limits { max_conns: n }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_fires_once_per_change_with_old_and_new() {
    let client = shared_client().await;
    let config = Config::start(client.clone(), "t-cfg-reload").await.unwrap();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let s = seen.clone();
    let _reload = config.watch("limits", move |old: Option<Limits>, new: Option<Limits>| {
        s.lock().unwrap().push((old, new));
    });
    config.set("limits", &limits(1)).await.unwrap();
    config.set("other", &limits(9)).await.unwrap();
    config.set("limits", &limits(2)).await.unwrap();
    let rev = config.delete("limits").await.unwrap();
    config.wait_for(rev).await.unwrap();
    eventually(Duration::from_secs(3), "three callbacks", || {
        let n = seen.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (None, Some(limits(1))),
            (Some(limits(1)), Some(limits(2))),
            (Some(limits(2)), None),
        ]
    );
    assert_eq!(config.get::<Limits>("other").unwrap(), Some(limits(9)));
    assert_eq!(config.get::<Limits>("limits").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_reports_conflicts() {
    let client = shared_client().await;
    let config = Config::start(client.clone(), "t-cfg-cas").await.unwrap();
    let r1 = config.compare_and_set("k", &limits(1), 0).await.unwrap();
    let r2 = config.compare_and_set("k", &limits(2), r1).await.unwrap();
    match config.compare_and_set("k", &limits(3), r1).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "k");
            assert_eq!(expected, r1);
            assert_eq!(actual, r2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        config.compare_and_set("k", &limits(3), 0).await,
        Err(Error::Conflict { actual, .. }) if actual == r2
    ));
    config.wait_for(r2).await.unwrap();
    assert_eq!(
        config.get_versioned::<Limits>("k").unwrap(),
        Some((limits(2), r2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback_restore_an_old_value() {
    let client = shared_client().await;
    let config = Config::start(client.clone(), "t-cfg-hist").await.unwrap();
    let r1 = config.set("k", &limits(1)).await.unwrap();
    let r2 = config.set("k", &limits(2)).await.unwrap();
    let r3 = config.set("k", &limits(3)).await.unwrap();
    let history = config.history::<Limits>("k", 10).await.unwrap();
    let got: Vec<(i64, u32)> = history
        .iter()
        .map(|v| (v.revision, v.value.max_conns))
        .collect();
    assert_eq!(got, [(r3, 3), (r2, 2), (r1, 1)]);

    let r4 = config.rollback("k", r1).await.unwrap();
    config.wait_for(r4).await.unwrap();
    assert_eq!(config.get::<Limits>("k").unwrap(), Some(limits(1)));
    assert_eq!(
        config.history::<Limits>("k", 2).await.unwrap()[1].revision,
        r3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_round_trip_as_yaml_and_json() {
    let client = shared_client().await;
    let from = Config::start(client.clone(), "t-cfg-exp-a").await.unwrap();
    from.set("limits", &limits(7)).await.unwrap();
    from.set("name", "api").await.unwrap();
    for format in [Format::Yaml, Format::Json] {
        let text = from.export(format).await.unwrap();
        let ns = format!("t-cfg-exp-{format:?}");
        let to = Config::start(client.clone(), &ns).await.unwrap();
        assert_eq!(to.import(&text, format).await.unwrap(), 2);
        eventually(Duration::from_secs(3), "imported keys cached", || {
            let n = to.keys().len();
            async move { n == 2 }
        })
        .await;
        assert_eq!(to.get::<Limits>("limits").unwrap(), Some(limits(7)));
        assert_eq!(to.get::<String>("name").unwrap().as_deref(), Some("api"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_from_the_cache_rollout_lists_and_kill_switch() {
    let client = shared_client().await;
    let a = Flags::start(client.clone(), "t-flags").await.unwrap();
    let b = Flags::start(client.clone(), "t-flags").await.unwrap();
    assert!(!a.is_enabled("new-ui", "alice"), "unknown flag is off");
    let flag = Flag::rollout(30.0).allowing(["vip"]).denying(["bot"]);
    let rev = a.set("new-ui", &flag).await.unwrap();
    a.wait_for(rev).await.unwrap();
    b.wait_for(rev).await.unwrap();
    assert!(a.is_enabled("new-ui", "vip"));
    assert!(!a.is_enabled("new-ui", "bot"));
    let subjects: Vec<String> = (0..2000).map(|i| format!("s-{i}")).collect();
    let on_a: Vec<bool> = subjects.iter().map(|s| a.is_enabled("new-ui", s)).collect();
    let on_b: Vec<bool> = subjects.iter().map(|s| b.is_enabled("new-ui", s)).collect();
    assert_eq!(on_a, on_b, "two caches agree subject by subject");
    let share = on_a.iter().filter(|&&x| x).count() as f64 / 2000.0;
    assert!((0.25..=0.35).contains(&share), "share {share}");

    let rev = a.kill("new-ui").await.unwrap();
    b.wait_for(rev).await.unwrap();
    assert!(
        !b.is_enabled("new-ui", "vip"),
        "kill switch beats the allow list"
    );
    assert!(subjects.iter().all(|s| !b.is_enabled("new-ui", s)));
}

const CHILD_ENV: &str = "ETCD_PATTERNS_FLAG_BUCKETS_CHILD";

fn buckets() -> Vec<String> {
    (0..200)
        .map(|i| {
            let subject = format!("subject-{i}");
            format!(
                "BUCKET {subject} {}",
                etcd_patterns::flags::bucket("new-ui", &subject)
            )
        })
        .collect()
}

/// Runs this test binary again as a second process and compares the
/// buckets it computes with ours: no per-process hash seed.
#[test]
fn flag_buckets_match_a_second_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        for line in buckets() {
            println!("{line}");
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flag_buckets_match_a_second_process",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn the test binary");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let theirs: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("BUCKET "))
        .map(str::to_string)
        .collect();
    assert_eq!(theirs, buckets());
}
