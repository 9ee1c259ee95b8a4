//! `etcd-monitor status` against real clusters: verdicts, findings with
//! evidence, exit codes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;

fn status(endpoints: &[String], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .arg("status")
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
        .args(extra)
        .env_remove("ETCD_MONITOR_CONFIG")
        .output()
        .unwrap()
}

fn status_json(endpoints: &[String]) -> (i32, Value) {
    let out = status(endpoints, &["-w", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), json)
}

fn kinds(json: &Value) -> Vec<String> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `status` until `want` holds (a new leader may take an election or two).
fn status_until(
    endpoints: &[String],
    what: &str,
    want: impl Fn(i32, &Value) -> bool,
) -> (i32, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, json) = status_json(endpoints);
        if want(code, &json) {
            return (code, json);
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: exit {code}, {json:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_follow_member_failures_and_recovery() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let eps = cluster.endpoints();

    let (code, json) = status_json(&eps);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["verdict"], "healthy");
    assert_eq!(
        kinds(&json),
        Vec::<String>::new(),
        "a healthy cluster has no findings"
    );
    assert_eq!(json["observation"]["members"].as_array().unwrap().len(), 3);
    // The etcd version under test: `make test` runs this file on Debian's
    // 3.4 and again on 3.5 (ETCD_BIN), saying which it expects.
    let expected = std::env::var("ETCD_EXPECT_VERSION").unwrap_or_else(|_| "3.4.".into());
    for m in json["observation"]["members"].as_array().unwrap() {
        let version = m["status"]["version"].as_str().unwrap();
        assert!(
            version.starts_with(&expected),
            "etcd {version}, expected {expected}"
        );
    }
    let leader = cluster.leader_index().await.unwrap().unwrap();
    assert_eq!(
        json["leader"],
        format!("{:x}", cluster.member(leader).unwrap().id)
    );

    // The table names every member and the verdict.
    let table = String::from_utf8(status(&eps, &[]).stdout).unwrap();
    assert!(
        table.contains("HEALTHY") && table.contains("leader") && table.contains("m2"),
        "{table}"
    );

    // One member down: degraded, the finding names it by name and endpoint.
    let victim = (leader + 1) % 3;
    let info = cluster.member(victim).unwrap();
    cluster.kill(victim).unwrap();
    let (code, json) = status_json(&eps);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["verdict"], "degraded");
    let down: Vec<&Value> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "member_unreachable")
        .collect();
    assert_eq!(down.len(), 1, "{json:#}");
    let msg = down[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&info.name) && msg.contains(&info.client_url),
        "{msg}"
    );
    assert!(msg.contains("refused"), "the cause is missing: {msg}");

    // Two down: unavailable.
    let second = (leader + 2) % 3;
    cluster.kill(second).unwrap();
    let (code, json) = status_json(&eps);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(json["verdict"], "unavailable");
    assert!(
        kinds(&json).contains(&"quorum_lost".to_string()),
        "{json:#}"
    );

    // Both back: healthy again.
    cluster.restart(victim).await.unwrap();
    cluster.restart(second).await.unwrap();
    status_until(&eps, "healthy after restart", |code, _| code == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_reported_and_a_new_leader_found() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let eps = cluster.endpoints();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let old = cluster.member(leader).unwrap();
    cluster.pause(leader).unwrap();
    let (code, json) = status_until(&eps, "a new leader while the old one is paused", |_, j| {
        j["leader"].is_string() && j["leader"] != format!("{:x}", old.id)
    });
    assert_eq!(code, 1, "{json:#}");
    let paused = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "member_unreachable")
        .unwrap_or_else(|| panic!("paused member not reported: {json:#}"));
    assert_eq!(paused["member"], old.name.as_str());

    cluster.resume(leader).unwrap();
    // The old leader rejoins as a follower of the new term.
    let (_, json) = status_until(&eps, "healthy after resume", |code, _| code == 0);
    assert_ne!(json["leader"], format!("{:x}", old.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_and_quota_are_reported() {
    let quota: u64 = 2 * 1024 * 1024;
    let cluster = EtcdCluster::start(ClusterOptions::new(1).quota_backend_bytes(quota))
        .await
        .unwrap();
    let mut client = cluster.client().await.unwrap();
    let value = vec![b'x'; 64 * 1024];
    let mut full = false;
    for i in 0..200 {
        if let Err(e) = client.put(format!("fill/{i}"), value.clone(), None).await {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the quota was never reached");
    let (code, json) = status_json(&cluster.endpoints());
    assert_eq!(code, 1, "{json:#}");
    let found = kinds(&json);
    assert!(found.contains(&"alarm".to_string()), "{json:#}");
    assert!(found.contains(&"db_quota".to_string()), "{json:#}");
    let alarm = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "alarm")
        .unwrap();
    assert_eq!(alarm["evidence"]["alarm"], "NOSPACE");
}

#[test]
fn nothing_reachable_is_unavailable_and_says_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let out = status(std::slice::from_ref(&ep), &[]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNAVAILABLE")
            && text.contains(&format!("http://{ep}"))
            && text.contains("refused"),
        "{text}"
    );
}

/// A configured endpoint of another cluster (a member left over from an old
/// cluster) is reported as a cluster-ID mismatch and as no member; listed
/// members that are not configured are reported for information only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_two_clusters_and_unconfigured_members_are_reported() {
    let a = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let b = EtcdCluster::start(ClusterOptions::new(1).name_prefix("old"))
        .await
        .unwrap();
    let stray = b.endpoint(0).unwrap();
    let mut eps = a.endpoints();
    eps.push(stray.clone());
    let (code, json) = status_json(&eps);
    let found = kinds(&json);
    assert!(
        found.contains(&"cluster_id_mismatch".to_string()),
        "{json:#}"
    );
    assert!(
        found.contains(&"endpoint_not_member".to_string()),
        "{json:#}"
    );
    assert_eq!(json["verdict"], "degraded", "{json:#}");
    assert_eq!(code, 1);
    let mismatch = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "cluster_id_mismatch")
        .unwrap();
    assert_eq!(mismatch["severity"], "critical");
    let ids = mismatch["evidence"]["cluster_ids"].as_object().unwrap();
    assert_eq!(ids.len(), 2, "{mismatch:#}");
    assert!(
        ids.values()
            .any(|who| who.as_array().unwrap() == &vec![Value::from(stray.clone())]),
        "the stray endpoint stands alone under its cluster ID: {mismatch:#}"
    );
    let unlisted = &json["observation"]["unlisted_endpoints"][0];
    assert_eq!(unlisted["endpoint"], stray.as_str());
    assert_eq!(
        unlisted["member_id"],
        format!("{:x}", b.member(0).unwrap().id),
        "{unlisted:#}"
    );

    // A member configured under a name it does not advertise (localhost
    // for 127.0.0.1) answers as itself: nothing to report.
    let mut aliased = a.endpoints();
    aliased[0] = aliased[0].replace("127.0.0.1", "localhost");
    let (code, json) = status_json(&aliased);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(kinds(&json), Vec::<String>::new(), "{json:#}");

    // Only one of the three configured: the two others are reported for
    // information, and the cluster stays healthy.
    let (code, json) = status_json(&a.endpoints()[..1]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["verdict"], "healthy");
    assert_eq!(
        kinds(&json),
        vec!["member_not_configured".to_string(); 2],
        "{json:#}"
    );
}

/// `status` reads each member's serving certificate from the handshake and
/// the client certificate and CA from their files, and reports those that
/// run out soon: under 7 days critical, under 30 days a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_running_out_are_reported_with_their_dates() {
    const DAY: Duration = Duration::from_secs(86_400);
    let cluster = EtcdCluster::start(ClusterOptions::new(1).tls_valid_for(6 * DAY, 25 * DAY))
        .await
        .unwrap();
    let files = cluster.tls_files().unwrap().clone();
    let path = |p: &std::path::Path| p.display().to_string();
    let tls = [
        "--cacert".to_string(),
        path(&files.ca_file),
        "--cert".into(),
        path(&files.client_cert_file),
        "--key".into(),
        path(&files.client_key_file),
    ];
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(["-w", "json"]);
    let out = status(&cluster.endpoints(), &args);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["verdict"], "degraded");
    let expiring: Vec<(&str, &str)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "certificate_expiring")
        .map(|f| {
            (
                f["severity"].as_str().unwrap(),
                f["evidence"]["certificate"]["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        expiring,
        vec![("critical", "serving"), ("warning", "client")],
        "{json:#}"
    );
    // Every certificate is listed with its dates, read from the certificate.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let days_left = |source: &str| {
        let c = json["observation"]["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["source"] == source)
            .unwrap_or_else(|| panic!("no {source} certificate: {json:#}"));
        (c["not_after_ms"].as_f64().unwrap() - now_ms) / 86_400_000.0
    };
    assert!((5.9..6.0).contains(&days_left("serving")));
    assert!((24.9..25.0).contains(&days_left("client")));
    assert!(days_left("ca") > 365.0);

    // The table names the certificate and the date.
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(["-w", "table"]);
    let text = String::from_utf8(status(&cluster.endpoints(), &args).stdout).unwrap();
    assert!(
        text.contains("serving certificate") && text.contains("expires in 6.0 days"),
        "{text}"
    );

    // Without TLS files there is nothing of the monitor's own to read, and
    // plain-HTTP members have no certificate.
    let plain = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let (code, json) = status_json(&plain.endpoints());
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["observation"]["certificates"], serde_json::json!([]));
}
