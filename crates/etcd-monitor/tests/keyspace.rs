//! Keyspace analytics against real etcd: a cluster seeded with a known
//! Kubernetes-like shape must be counted exactly (keys, key bytes, value
//! bytes at every depth, the largest keys, resources per namespace) by
//! `ctl keyspace` in JSON and as tables, and through the API within its role,
//! limits and audit; scans keep their pace, their time bound and their
//! member choice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::Monitor;
use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::{Value, json};

/// The seeded keys and their value sizes.
type Shape = BTreeMap<String, usize>;

fn shape() -> Shape {
    let mut s = Shape::new();
    for i in 0..1000 {
        s.insert(format!("/registry/pods/ns-a/pod-{i:04}"), 1024);
    }
    for i in 0..100 {
        s.insert(format!("/registry/secrets/ns-b/secret-{i:03}"), 10 * 1024);
    }
    for i in 0..50 {
        s.insert(
            format!("/registry/example.com/widgets/ns-c/widget-{i:02}"),
            2048,
        );
    }
    for ns in ["ns-a", "ns-b", "ns-c"] {
        s.insert(format!("/registry/namespaces/{ns}"), 100);
    }
    for i in 0..3 {
        s.insert(format!("/blobs/big-{i}"), 1 << 20);
    }
    s.insert("/app/config/flags".into(), 64);
    s.insert("plain-key".into(), 10);
    s
}

/// Writes `shape` in transactions of at most 64 puts and about 512 KiB
/// (etcd refuses requests over its --max-request-bytes).
async fn seed(client: &mut Client, shape: &Shape) {
    let mut ops = Vec::new();
    let mut bytes = 0;
    for (i, (k, n)) in shape.iter().enumerate() {
        ops.push(TxnOp::put(k.as_str(), vec![b'x'; *n], None));
        bytes += n;
        if ops.len() == 64 || bytes >= 512 << 10 || i + 1 == shape.len() {
            client
                .txn(Txn::new().and_then(std::mem::take(&mut ops)))
                .await
                .unwrap();
            bytes = 0;
        }
    }
}

/// A dedicated cluster of `members` seeded with `shape`: the cluster, its
/// endpoints comma-separated, and a client.
async fn seeded(members: usize, shape: &Shape) -> (EtcdCluster, String, Client) {
    let cluster = EtcdCluster::start(ClusterOptions::new(members))
        .await
        .unwrap();
    let endpoints = cluster.endpoints().join(",");
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    seed(&mut client, shape).await;
    (cluster, endpoints, client)
}

/// What a scan of `prefix` to `depth` must report, computed here
/// independently of the monitor's aggregation: per prefix (keys, key bytes,
/// value bytes).
fn expected_prefixes(
    shape: &Shape,
    prefix: &str,
    depth: usize,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for (key, size) in shape.iter().filter(|(k, _)| k.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        let lead = if rest.starts_with('/') { "/" } else { "" };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        // A level exists where a `/` follows: every part but the last.
        for d in 1..=depth.min(parts.len() - 1) {
            let p = format!("{prefix}{lead}{}/", parts[..d].join("/"));
            let e = out.entry(p).or_default();
            e.0 += 1;
            e.1 += key.len() as u64;
            e.2 += *size as u64;
        }
    }
    out
}

fn reported_prefixes(report: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    report["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["prefix"].as_str().unwrap().to_string(),
                (
                    p["keys"].as_u64().unwrap(),
                    p["key_bytes"].as_u64().unwrap(),
                    p["value_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn ctl(endpoints: &str, args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["ctl", "keyspace"])
        .args(args)
        .args(["--endpoints", endpoints])
        .env_remove("ETCD_MONITOR_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ctl keyspace {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = if args.contains(&"json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    } else {
        Value::Null
    };
    (json, stdout)
}

struct Running {
    addr: SocketAddr,
    monitor: Monitor,
    lifecycle: Lifecycle,
    _dir: tempfile::TempDir,
}

async fn start_monitor(endpoints: &str, tokens: &str) -> Running {
    start_monitor_with(endpoints, tokens, "").await
}

/// A monitor of `endpoints` as cluster `k8s` with `tokens` and `extra`
/// top-level configuration.
async fn start_monitor_with(endpoints: &str, tokens: &str, extra: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "clusters:\n  - {{ name: k8s, endpoints: [{endpoints}] }}\n\
         monitoring: {{ health_check_interval: 500ms, metrics_interval: 1s }}\n\
         storage: {{ url: \"sqlite://{db}\" }}\n{extra}\
         api:\n  listen: 127.0.0.1:0\n  snapshot_dir: {snap}\n  auth:\n    tokens:\n{tokens}",
        db = dir.path().join("h.db").display(),
        snap = dir.path().join("snapshots").display(),
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

/// A monitor of `endpoints` with `extra` configuration and a viewer and
/// an operator: the monitor, its base URL, the viewer's and the operator's
/// token.
async fn monitor_for_viewer_and_operator(
    endpoints: &str,
    extra: &str,
) -> (Running, String, String, String) {
    let (viewer, v_line) = token("v", "viewer");
    let (operator, o_line) = token("o", "operator");
    let m = start_monitor_with(endpoints, &format!("{v_line}{o_line}"), extra).await;
    let base = format!("http://{}", m.addr);
    (m, base, viewer, operator)
}

fn token(name: &str, role: &str) -> (String, String) {
    let (token, hash) = etcd_monitor::api::auth::new_token().unwrap();
    (
        token,
        format!("      - {{ name: {name}, role: {role}, token_sha256: {hash} }}\n"),
    )
}

async fn get(base: &str, path: &str, bearer: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The monitor's /metrics page, read with `bearer`.
async fn metrics_text(base: &str, bearer: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The throwaway members' directories in the temporary directory.
fn restore_dirs() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("etcd-monitor-restore-")
            })
        })
        .count()
}

/// The fields that do not depend on how or from where the scan ran.
fn counted(r: &Value) -> Value {
    json!({
        "scanned_keys": r["scanned_keys"],
        "key_bytes": r["key_bytes"],
        "value_bytes": r["value_bytes"],
        "prefixes": r["prefixes"],
        "top_keys": r["top_keys"],
        "resources": r["resources"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_keyspace_is_counted_exactly_by_ctl_and_the_api() {
    let shape = shape();
    let (cluster, endpoints, mut client) = seeded(3, &shape).await;
    let revision = client
        .get("plain-key", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    // The whole keyspace, three levels deep.
    let (r, _) = ctl(&endpoints, &["--depth", "3", "--top", "5", "-w", "json"]);
    assert_eq!(r["scanned_keys"], shape.len() as u64);
    assert_eq!(r["revision"], revision);
    assert_eq!(r["complete"], true);
    assert_eq!(r["consistent"], true);
    assert_eq!(r["serializable"], true);
    assert_eq!(r["from_leader"], false, "a follower by default");
    let values: u64 = shape.values().map(|n| *n as u64).sum();
    let keys: u64 = shape.keys().map(|k| k.len() as u64).sum();
    assert_eq!(
        (r["value_bytes"].as_u64(), r["key_bytes"].as_u64()),
        (Some(values), Some(keys))
    );
    assert_eq!(reported_prefixes(&r), expected_prefixes(&shape, "", 3));
    let levels: Vec<u64> = r["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["depth"].as_u64().unwrap())
        .collect();
    assert!(levels.is_sorted(), "by level: {levels:?}");
    let pods = r["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "/registry/pods/ns-a/")
        .unwrap();
    assert!(pods["min_mod_revision"].as_i64().unwrap() > 1);
    assert!(pods["min_mod_revision"].as_i64() <= pods["max_mod_revision"].as_i64());
    assert!(pods["max_mod_revision"].as_i64().unwrap() <= revision);

    // The largest keys: the three 1 MiB blobs, then the 10 KiB secrets by name.
    let top: Vec<(String, u64)> = r["top_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["value_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        top,
        [
            ("/blobs/big-0".to_string(), 1 << 20),
            ("/blobs/big-1".into(), 1 << 20),
            ("/blobs/big-2".into(), 1 << 20),
            ("/registry/secrets/ns-b/secret-000".into(), 10240),
            ("/registry/secrets/ns-b/secret-001".into(), 10240),
        ]
    );

    // Kubernetes objects by resource and namespace, CRDs by group.
    let resources: BTreeMap<(String, String, String), (u64, u64)> = r["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let s = |k: &str| x[k].as_str().unwrap().to_string();
            (
                (s("group"), s("resource"), s("namespace")),
                (
                    x["keys"].as_u64().unwrap(),
                    x["value_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let k = |g: &str, r: &str, n: &str| (g.to_string(), r.to_string(), n.to_string());
    assert_eq!(
        resources,
        BTreeMap::from([
            (k("", "pods", "ns-a"), (1000, 1000 * 1024)),
            (k("", "secrets", "ns-b"), (100, 100 * 10240)),
            (k("example.com", "widgets", "ns-c"), (50, 50 * 2048)),
            (k("", "namespaces", ""), (3, 300)),
        ])
    );

    // A snapshot of the same data, restored into a throwaway member, counts
    // the same, revisions included; the member and its data are gone after.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s.db");
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["ctl", "snapshot", "save"])
        .arg(&file)
        .args(["--endpoints", &cluster.endpoints()[0]])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restores_before = restore_dirs();
    let (snap, _) = ctl(
        &endpoints,
        &[
            "--snapshot",
            file.to_str().unwrap(),
            "--depth",
            "3",
            "--top",
            "5",
            "-w",
            "json",
        ],
    );
    assert_eq!(counted(&snap), counted(&r));
    assert_eq!(snap["revision"], revision);
    assert_eq!(snap["snapshot"], file.display().to_string());
    assert_eq!(
        restore_dirs(),
        restores_before,
        "the throwaway member's data is removed"
    );
    let (_, text) = ctl(
        &endpoints,
        &["--snapshot", file.to_str().unwrap(), "--depth", "1"],
    );
    assert!(
        text.contains(&format!(
            "read from snapshot {} (restored, ",
            file.display()
        )),
        "{text}"
    );
    let bad = dir.path().join("not-a-snapshot.db");
    std::fs::write(&bad, b"nothing like a bolt database").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["ctl", "keyspace", "--snapshot"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("snapshot restore")
            && stderr.contains("not-a-snapshot.db"),
        "{stderr}"
    );

    // Under a prefix, levels count from it.
    let (r1, _) = ctl(&endpoints, &["/registry/", "--depth", "1", "-w", "json"]);
    assert_eq!(r1["scanned_keys"], 1153);
    assert_eq!(
        reported_prefixes(&r1),
        expected_prefixes(&shape, "/registry/", 1)
    );
    assert!(reported_prefixes(&r1).contains_key("/registry/example.com/"));
    let (r2, _) = ctl(
        &endpoints,
        &["/registry/pods/", "--depth", "2", "-w", "json"],
    );
    assert_eq!(
        reported_prefixes(&r2),
        expected_prefixes(&shape, "/registry/pods/", 2)
    );
    assert_eq!(r2["scanned_keys"], 1000);

    // Tables: the same figures, as etcdctl-style tables.
    let (_, text) = ctl(&endpoints, &["--depth", "2", "--top", "3", "-w", "table"]);
    assert!(
        text.starts_with(&format!("{} keys under \"\"", shape.len())),
        "{text}"
    );
    let row = |first: &str| -> Vec<String> {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("| {first} ")) || l.starts_with(&format!("|   {first} "))
            })
            .unwrap_or_else(|| panic!("no row {first}:\n{text}"))
            .split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    // PREFIX | DEPTH | KEYS | KEY BYTES | VALUE BYTES | MOD REVISIONS
    let registry = row("/registry/");
    assert_eq!((registry[1].as_str(), registry[2].as_str()), ("1", "1153"));
    assert_eq!(
        registry[4], "2.2 MB",
        "1000 x 1 KiB + 100 x 10 KiB + 50 x 2 KiB + 300 B"
    );
    assert_eq!(row("/registry/pods/")[2], "1000");
    assert_eq!(row("/blobs/big-0")[1], "1.0 MB");
    // RESOURCE | GROUP (empty for core) | NAMESPACE | OBJECTS | VALUE BYTES
    assert_eq!(
        row("pods")[1..],
        ["ns-a", "1000", "1.0 MB"].map(String::from)
    );
    assert_eq!(
        row("widgets")[1..],
        ["example.com", "ns-c", "50", "102 kB"].map(String::from)
    );

    // The API: the same counts, for an operator; viewers are refused; the
    // scan is audited with its parameters; bad parameters are named.
    let (viewer, v_line) = token("v", "viewer");
    let (operator, o_line) = token("o", "operator");
    let (admin, a_line) = token("adm", "admin");
    let m = start_monitor(&endpoints, &format!("{v_line}{o_line}{a_line}")).await;
    let base = format!("http://{}", m.addr);
    // (Under /registry/: the monitor's own probes write __etcd_monitor/probe.)
    let path = "/api/v1/clusters/k8s/keyspace?prefix=/registry/&depth=1&top=10&rate=50";
    let (status, body) = get(&base, path, &viewer).await;
    assert_eq!(status, 403, "{body}");
    let (status, api) = get(&base, path, &operator).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(counted(&api), counted(&r1));
    assert_eq!(api["complete"], true);
    let (status, body) = get(&base, "/api/v1/clusters/k8s/keyspace?rate=500", &operator).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate 500"),
        "{body}"
    );
    let (status, audit) = get(&base, "/api/v1/audit?limit=50", &admin).await;
    assert_eq!(status, 200);
    let scans: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["path"] == "/api/v1/clusters/k8s/keyspace")
        .collect();
    assert_eq!(scans.len(), 3, "every scan and refusal is audited: {audit}");
    assert!(
        scans.iter().any(|a| a["status"] == 200
            && a["principal"] == "token:o"
            && a["body"].as_str().unwrap().contains("\"depth\":\"1\"")),
        "{scans:?}"
    );
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_keep_their_pace_their_time_bound_and_their_member() {
    let shape: Shape = (0..1000)
        .map(|i| (format!("/paced/k-{i:04}"), 100))
        .collect();
    let (_cluster, endpoints, mut client) = seeded(3, &shape).await;

    // Unpaced, pages of 20 keys: 50 requests in well under a second.
    let (fast, _) = ctl(&endpoints, &["/paced/", "--page-size", "20", "-w", "json"]);
    assert_eq!(fast["requests"], 50);
    assert_eq!(fast["scanned_keys"], 1000);
    // --rate 50: request n leaves n/50 s after the start, so 50 requests
    // take at least 49/50 s.
    let started = Instant::now();
    let (paced, _) = ctl(
        &endpoints,
        &["/paced/", "--page-size", "20", "--rate", "50", "-w", "json"],
    );
    let took = started.elapsed();
    assert_eq!(paced["requests"], 50);
    assert_eq!(paced["scanned_keys"], 1000);
    let ms = paced["duration_ms"].as_u64().unwrap();
    assert!((980..3000).contains(&ms), "{ms} ms for 50 requests at 50/s");
    assert!(took >= Duration::from_millis(980));
    assert!(
        fast["duration_ms"].as_u64().unwrap() < ms / 2,
        "{} vs {ms}",
        fast["duration_ms"]
    );

    // --max-duration stops a slow scan and says so.
    let (cut, text) = ctl(
        &endpoints,
        &[
            "/paced/",
            "--page-size",
            "10",
            "--rate",
            "5",
            "--max-duration",
            "1s",
            "-w",
            "json",
        ],
    );
    assert_eq!(cut["complete"], false, "{text}");
    assert!(
        cut["stopped"].as_str().unwrap().contains("max duration 1s"),
        "{text}"
    );
    let n = cut["scanned_keys"].as_u64().unwrap();
    assert!(
        (10..=100).contains(&n),
        "{n} keys in 1 s at 5 pages of 10 per second"
    );
    let (_, table) = ctl(
        &endpoints,
        &[
            "/paced/",
            "--page-size",
            "10",
            "--rate",
            "5",
            "--max-duration",
            "1s",
        ],
    );
    assert!(
        table.contains("INCOMPLETE: max duration 1s reached"),
        "{table}"
    );

    // The member read from: a follower by default, the leader when asked;
    // linearizable when asked.
    let leader_id = client.status().await.unwrap().leader();
    let (lead, _) = ctl(
        &endpoints,
        &[
            "/paced/",
            "--from-leader",
            "--consistency",
            "l",
            "-w",
            "json",
        ],
    );
    assert_eq!(lead["from_leader"], true);
    assert_eq!(lead["serializable"], false);
    let mut at = Client::connect([lead["endpoint"].as_str().unwrap()], None)
        .await
        .unwrap();
    let header = at.status().await.unwrap();
    assert_eq!(header.header().unwrap().member_id(), leader_id);
    let mut at = Client::connect([fast["endpoint"].as_str().unwrap()], None)
        .await
        .unwrap();
    assert_ne!(
        at.status().await.unwrap().header().unwrap().member_id(),
        leader_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_against_a_saved_scan_shows_what_grew() {
    let before: Shape = (0..20).map(|i| (format!("/steady/k-{i:02}"), 50)).collect();
    let (_cluster, endpoints, mut client) = seeded(1, &before).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("before.json");
    let (_, text) = ctl(&endpoints, &["--depth", "1", "-w", "json"]);
    std::fs::write(&saved, text).unwrap();
    let fresh: Shape = (0..10).map(|i| (format!("/fresh/a-{i}"), 1000)).collect();
    seed(&mut client, &fresh).await;

    let (g, _) = ctl(
        &endpoints,
        &[
            "--depth",
            "1",
            "--diff",
            saved.to_str().unwrap(),
            "-w",
            "json",
        ],
    );
    let added: u64 = fresh.iter().map(|(k, n)| (k.len() + n) as u64).sum();
    let first = &g["prefixes"][0];
    assert_eq!(first["prefix"], "/fresh/", "{g}");
    assert_eq!(
        (first["keys_before"].as_u64(), first["keys_after"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(first["bytes_delta"].as_u64(), Some(added));
    assert!(
        first["bytes_per_hour"].as_f64().unwrap() > added as f64,
        "less than an hour apart: {g}"
    );
    let steady = g["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "/steady/")
        .unwrap();
    assert_eq!(steady["bytes_delta"], 0);
    assert_eq!(g["bytes_delta"].as_u64(), Some(added));
    let (_, table) = ctl(
        &endpoints,
        &["--depth", "1", "--diff", saved.to_str().unwrap()],
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("| /fresh/ ") && l.contains("0 -> 10")),
        "{table}"
    );
    assert!(
        !table.contains("/steady/"),
        "unchanged prefixes are left out: {table}"
    );

    // A scan of another prefix, or a file that is no scan, is refused by name.
    for (args, needle) in [
        (
            vec!["/steady/", "--diff", saved.to_str().unwrap()],
            "different prefixes",
        ),
        (
            vec!["--diff", "/nonexistent/scan.json"],
            "/nonexistent/scan.json",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
            .args(["ctl", "keyspace"])
            .args(&args)
            .args(["--endpoints", &endpoints])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_scans_are_stored_and_a_fast_growing_prefix_alerts() {
    let cold: Shape = (0..10)
        .map(|i| (format!("/grow/cold/k-{i}"), 100))
        .collect();
    let (_cluster, endpoints, client) = seeded(1, &cold).await;
    let (m, base, viewer, operator) = monitor_for_viewer_and_operator(
        &endpoints,
        "keyspace:\n  schedule: { every: 1s, prefix: /grow/, depth: 1, rate: 100 }\n  growth_rules:\n    - { prefix: /grow/hot/, max_bytes_per_hour: 1MiB }\n    - { prefix: /grow/cold/, max_bytes_per_hour: 1MiB }\n",
    )
    .await;

    // About 200 kB a second under /grow/hot/: some 700 MB an hour.
    let writer = tokio::spawn({
        let mut client = client.clone();
        async move {
            for i in 0..60 {
                client
                    .put(format!("/grow/hot/k-{i:03}"), vec![b'h'; 20_000], None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let firing = |alerts: &Value, prefix: &str| {
        alerts["alerts"].as_array().unwrap().iter().any(|a| {
            a["alertname"] == "etcdKeyspacePrefixGrowing" && a["labels"]["prefix"] == prefix
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, alerts) = get(&base, "/api/v1/alerts", &viewer).await;
        assert_eq!(status, 200);
        if firing(&alerts, "/grow/hot/") {
            assert!(!firing(&alerts, "/grow/cold/"), "{alerts}");
            let a = alerts["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["alertname"] == "etcdKeyspacePrefixGrowing")
                .unwrap();
            assert!(a["value"].as_f64().unwrap() > 1048576.0, "{a}");
            assert!(
                a["runbook_url"]
                    .as_str()
                    .unwrap()
                    .ends_with("#etcdkeyspaceprefixgrowing")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcdKeyspacePrefixGrowing never fired: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The scans are stored; growth and /metrics say which prefix grew.
    let (status, scans) = get(
        &base,
        "/api/v1/clusters/k8s/keyspace/scans?prefix=/grow/&limit=5",
        &operator,
    )
    .await;
    assert_eq!(status, 200, "{scans}");
    let scans = scans["scans"].as_array().unwrap();
    assert!(
        scans.len() >= 2 && scans.iter().all(|s| s["source"] == "schedule"),
        "{scans:?}"
    );
    let (status, growth) = get(
        &base,
        "/api/v1/clusters/k8s/keyspace/growth?prefix=/grow/",
        &operator,
    )
    .await;
    assert_eq!(status, 200, "{growth}");
    assert_eq!(growth["prefixes"][0]["prefix"], "/grow/hot/", "{growth}");
    let (status, _) = get(
        &base,
        "/api/v1/clusters/k8s/keyspace/growth?prefix=/grow/",
        &viewer,
    )
    .await;
    assert_eq!(status, 403);
    let (status, none) = get(
        &base,
        "/api/v1/clusters/k8s/keyspace/growth?prefix=/never/",
        &operator,
    )
    .await;
    assert_eq!(status, 404, "{none}");
    let metrics = metrics_text(&base, &viewer).await;
    assert!(
        metrics.contains("etcd_monitor_keyspace_prefix_growth_limit_bytes_per_hour{cluster=\"k8s\",prefix=\"/grow/hot/\"} 1048576"),
        "{metrics}"
    );
    assert!(metrics.contains("etcd_monitor_keyspace_prefix_growth_bytes_per_hour{cluster=\"k8s\",prefix=\"/grow/cold/\"} 0"));

    // Writes stop: the next scans see no growth, and the alert resolves.
    writer.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, alerts) = get(&base, "/api/v1/alerts", &viewer).await;
        if !firing(&alerts, "/grow/hot/") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert never resolved: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;
}

/// Puts to `prefix` at `rate` a second for `secs` seconds (paced by an
/// interval, a few writers so one slow fsync does not stall the pace);
/// returns the puts and the seconds they took.
async fn put_at_rate(
    client: &Client,
    prefix: &str,
    rate: u32,
    secs: u32,
    value: usize,
) -> (u64, f64) {
    let writers = 4;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut client, prefix) = (client.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(
                f64::from(writers) / f64::from(rate),
            ));
            let n = rate * secs / writers;
            for i in 0..n {
                tick.tick().await;
                client
                    .put(format!("{prefix}w{w}-{i:05}"), vec![b'e'; value], None)
                    .await
                    .unwrap();
            }
            u64::from(n)
        }));
    }
    let mut puts = 0;
    for t in tasks {
        puts += t.await.unwrap();
    }
    (puts, start.elapsed().as_secs_f64())
}

fn bucket<'a>(hot: &'a Value, prefix: &str) -> Option<&'a Value> {
    hot["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["prefix"] == prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_writes_rank_the_busiest_prefix_at_its_rate_and_survive_a_member_loss() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let endpoints = cluster.endpoints().join(",");
    let (m, base, viewer, operator) = monitor_for_viewer_and_operator(
        &endpoints,
        "keyspace:\n  hot_writes: { enabled: true, depth: 2, top: 3 }\n",
    )
    .await;
    let (code, _) = get(&base, "/api/v1/clusters/k8s/keyspace/hot", &viewer).await;
    assert_eq!(code, 403, "hot writes show key names: operator");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, hot) = get(&base, "/api/v1/clusters/k8s/keyspace/hot", &operator).await;
        assert_eq!(code, 200, "{hot}");
        assert_eq!(hot["enabled"], true);
        if hot["watching"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never opened: {hot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ~200 puts/s of 100 bytes to /registry/events/ for 10 s, beside 20
    // puts/s to /registry/pods/ and deletes under /registry/leases/.
    let client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let events = put_at_rate(&client, "/registry/events/ns-a/", 200, 10, 100);
    let pods = put_at_rate(&client, "/registry/pods/ns-b/", 20, 10, 1000);
    let deletes = {
        let mut client = client.clone();
        async move {
            for i in 0..50 {
                client
                    .put(format!("/registry/leases/l{i}"), "x", None)
                    .await
                    .unwrap();
                client
                    .delete(format!("/registry/leases/l{i}"), None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    };
    let ((puts, secs), _, ()) = tokio::join!(events, pods, deletes);
    let true_rate = puts as f64 / secs;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, hot) = get(
        &base,
        "/api/v1/clusters/k8s/keyspace/hot?window=10s&top=3",
        &operator,
    )
    .await;
    eprintln!("{puts} puts in {secs:.2} s ({true_rate:.1}/s): {hot:#}");
    let top = &hot["buckets"][0];
    assert_eq!(top["prefix"], "/registry/events/", "{hot}");
    let seen = top["puts_per_second"].as_f64().unwrap();
    assert!(
        (seen - true_rate).abs() <= 0.2 * true_rate,
        "{seen:.1} puts/s reported, {true_rate:.1} written"
    );
    let bytes = top["value_bytes_per_second"].as_f64().unwrap();
    assert!(
        (bytes - 100.0 * seen).abs() < 1.0,
        "{bytes} value bytes/s for {seen} puts/s"
    );
    let leases = bucket(&hot, "/registry/leases/").expect("the leases bucket");
    assert!(
        leases["deletes_per_second"].as_f64().unwrap() > 0.0,
        "{leases}"
    );
    assert_eq!(hot["buckets"].as_array().unwrap().len(), 3, "top=3");
    assert_eq!(hot["skipped_revisions"], 0);

    // /metrics exports the top buckets (keyspace.hot_writes.top) only.
    let metrics = metrics_text(&base, &viewer).await;
    let hot_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("etcd_monitor_keyspace_hot_writes_per_second{"))
        .collect();
    assert!(
        hot_lines.len() <= 3
            && hot_lines
                .iter()
                .any(|l| l.contains(r#"cluster="k8s",prefix="/registry/events/""#)),
        "{hot_lines:?}"
    );
    assert!(metrics.contains("etcd_monitor_keyspace_hot_watching{cluster=\"k8s\"} 1"));

    // The member the watch started on (the first endpoint) dies: writes
    // after it are all counted, once.
    cluster.kill(0).unwrap();
    let mut writer = Client::connect(&cluster.endpoints()[1..], None)
        .await
        .unwrap();
    for i in 0..100 {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = writer.put(format!("/after/kill/k{i}"), "v", None).await {
            assert!(Instant::now() < deadline, "put {i} kept failing: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, hot) = get(
            &base,
            "/api/v1/clusters/k8s/keyspace/hot?window=1m&top=100",
            &operator,
        )
        .await;
        let after = bucket(&hot, "/after/kill/").map(|b| b["puts"].as_u64().unwrap());
        if after == Some(100) {
            break;
        }
        assert!(after.is_none_or(|n| n < 100), "counted twice: {hot}");
        assert!(
            Instant::now() < deadline,
            "writes after the kill not all counted: {hot}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    etcd_monitor::run::shutdown(&m.monitor, &m.lifecycle).await;
}
