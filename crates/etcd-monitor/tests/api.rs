//! The REST API, /metrics and the dashboard against a real cluster and a
//! running monitor: every endpoint's answer is checked against the OpenAPI
//! document; bad input gets a JSON error; `promtool` accepts /metrics; the
//! dashboard in headless Chromium shows a killed member without a reload.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::Monitor;
use etcd_testkit::{ClusterOptions, EtcdCluster, free_port};
use serde_json::Value;

struct Running {
    addr: SocketAddr,
    monitor: Monitor,
    lifecycle: Lifecycle,
    _dir: tempfile::TempDir,
}

async fn start(cluster: &EtcdCluster, name: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        clusters: vec![ClusterConfig {
            name: name.into(),
            endpoints: cluster.endpoints(),
            dial_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            ..ClusterConfig::default()
        }],
        ..Config::default()
    };
    config.monitoring.health_check_interval = Duration::from_millis(500);
    config.monitoring.metrics_interval = Duration::from_millis(500);
    config.storage.url = format!("sqlite://{}", dir.path().join("h.db").display());
    config.api.listen = "127.0.0.1:0".into();
    config.api.snapshot_dir = dir.path().join("snapshots");
    config.api.cors_origins = vec!["http://dashboard.test".into()];
    config.alerts = serde_yaml_ng::from_str("rules:\n  etcdMembersDown:\n    for: 0s\n").unwrap();
    // The dashboard test shows the hot writers and the defrag autopilot's
    // runs (a rule no member meets: a run that skips them all).
    if name == "browser" {
        config.keyspace.hot_writes.enabled = true;
        config.maintenance.defrag =
            Some(serde_yaml_ng::from_str("{ every: 1s, rule: \"dbSizeFree > 10GB\" }").unwrap());
    }
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle)
        .await
        .unwrap();
    let running = Running {
        addr,
        monitor,
        lifecycle,
        _dir: dir,
    };
    // Ready once checked, and a metrics round exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("http://{addr}/ready"))
            .await
            .unwrap()
            .status()
            == 200;
        let metrics = reqwest::get(format!("http://{addr}/api/v1/cluster/metrics/current"))
            .await
            .unwrap()
            .status()
            == 200;
        if ready && metrics {
            break;
        }
        assert!(Instant::now() < deadline, "the API never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running
}

/// Checks `value` against `schema`, a schema of the OpenAPI 3.1 document
/// `doc` (its `$ref`s into `#/components/schemas` resolve in `doc`), with a
/// JSON Schema 2020-12 validator.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    const URL: &str = "urn:etcd-monitor:openapi";
    let mut resource = doc.clone();
    resource["x-checked"] = schema.clone();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource(URL, resource)
        .map_err(|e| format!("{at}: the document: {e}"))?;
    let index = compiler
        .compile(&format!("{URL}#/x-checked"), &mut schemas)
        .map_err(|e| format!("{at}: the schema does not compile: {e:#}"))?;
    schemas
        .validate(value, index)
        .map_err(|e| format!("{at}: {e:#}"))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    assert!(
        r.headers().contains_key("x-request-id"),
        "{path}: no request id"
    );
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")),
    )
}

fn schema_for<'a>(doc: &'a Value, path: &str, status: u16) -> &'a Value {
    &doc["paths"][path]["get"]["responses"][status.to_string()]["content"]["application/json"]["schema"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_matches_the_openapi_document() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let r = start(&cluster, "main").await;
    let addr = r.addr;
    let (code, doc) = get(addr, "/api/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    // Two stored keyspace scans, so the growth between them answers too.
    for _ in 0..2 {
        let (code, body) = get(addr, "/api/v1/clusters/main/keyspace?depth=1").await;
        assert_eq!(code, 200, "{body}");
    }

    let mut checked = 0;
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for template in &paths {
        if ["/api/v1/events", "/api/v1/openapi.json", "/metrics"].contains(&template.as_str())
            || template.contains("{id}")
            || doc["paths"][template]["get"].is_null()
        {
            continue; // streams, non-JSON, POST-only and by-id paths are checked below or elsewhere
        }
        let path = template.replace("{name}", "main");
        let (code, body) = get(addr, &path).await;
        assert_eq!(code, 200, "{path}: {body}");
        let schema = schema_for(&doc, template, 200);
        assert!(!schema.is_null(), "{template}: no schema in the document");
        check(&doc, schema, &body, &path).unwrap_or_else(|e| panic!("{e}\n{body:#}"));
        checked += 1;
    }
    assert!(checked >= 16, "only {checked} endpoints checked");
    // The runbooks page the alerts and findings link to.
    let page = reqwest::get(format!("http://{addr}/runbooks"))
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for anchor in [
        "etcdhighfsyncdurations",
        "etcdmembersdown",
        "finding-quorum_lost",
    ] {
        assert!(
            html.contains(&format!("<a id=\"{anchor}\"></a>")),
            "no section {anchor}"
        );
    }
    assert!(html.contains("<h2"), "the markdown was not rendered");
    // The validator does reject what the document does not allow.
    let clusters = schema_for(&doc, "/api/v1/clusters", 200);
    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "clusters": [{ "name": 1 }] }),
        serde_json::json!({ "clusters": [{ "name": "a", "endpoints": [], "verdict": "fine",
            "leader": null, "members": 0, "voting_members": 0, "reachable_voting_members": 0,
            "findings": 0, "checked_at_ms": null }] }),
    ] {
        assert!(
            check(&doc, clusters, &bad, "bad").is_err(),
            "accepted {bad}"
        );
    }

    // Real data: three members, one leader, probes measured.
    let (_, members) = get(addr, "/api/v1/clusters/main/members").await;
    let list = members["members"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|m| m["is_leader"] == true).count(), 1);
    let (_, latency) = get(addr, "/api/v1/cluster/metrics/latency").await;
    assert!(
        latency["probes"]["put"]["count"].as_u64().unwrap() > 0,
        "{latency}"
    );
    let (_, hist) = get(
        addr,
        "/api/v1/cluster/metrics/history?metric=db_total_size_bytes&from=1h&step=1s",
    )
    .await;
    assert_eq!(hist["series"].as_array().unwrap().len(), 3, "{hist}");

    // Bad input: JSON errors with the right status, matching the Error schema.
    for (path, status, needle) in [
        (
            "/api/v1/clusters/nope/status",
            404,
            "no cluster named \"nope\"",
        ),
        (
            "/api/v1/clusters/main/metrics/history?metric=bogus",
            400,
            "unknown metric",
        ),
        (
            "/api/v1/clusters/main/metrics/history?from=yesterdayish",
            400,
            "from=",
        ),
        (
            "/api/v1/clusters/main/metrics/history?step=fast",
            400,
            "step",
        ),
        ("/api/v1/clusters/main/history?limit=0", 400, "limit"),
        (
            "/api/v1/clusters/main/leader?sincee=1h",
            400,
            "unknown field",
        ),
        ("/api/v1/no/such/thing", 404, "no such endpoint"),
    ] {
        let (code, body) = get(addr, path).await;
        assert_eq!(code, status, "{path}: {body}");
        check(
            &doc,
            &doc["components"]["schemas"]["ErrorBody"],
            &body,
            path,
        )
        .unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }

    // CORS: the configured origin is allowed, another is not.
    let allowed = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/clusters"))
        .header("origin", "http://dashboard.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("http://dashboard.test")
    );
    let other = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/clusters"))
        .header("origin", "http://elsewhere.test")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Server-sent events: hello first, then live health events.
    let mut sse = reqwest::get(format!("http://{addr}/api/v1/events"))
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(text.contains("event: hello") && text.contains("event: health")) {
        assert!(Instant::now() < deadline, "no events: {text}");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(2), sse.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(text.find("event: hello").unwrap() < text.find("event: health").unwrap());

    // /metrics: our figures, valid for promtool.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "etcd_monitor_cluster_health{cluster=\"main\"} 0",
        "etcd_monitor_cluster_members_up{cluster=\"main\"} 3",
        "etcd_monitor_member_is_leader{",
        "etcd_monitor_probe_duration_seconds_bucket{cluster=\"main\",probe=\"put\",le=\"+Inf\"}",
        "etcd_monitor_member_wal_fsync_p99_seconds{",
        "process_resident_memory_bytes ",
        "etcd_monitor_cluster_alerts_firing{cluster=\"main\"} 0",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by make test)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The dashboard and its assets are served from the binary.
    let page = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>etcd-monitor</title>") && page.contains("/assets/app.js"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads something from outside"
    );
    let js = reqwest::get(format!("http://{addr}/assets/app.js"))
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_members_and_a_kill_without_reload() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let r = start(&cluster, "browser").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/dashboard.mjs");
    let shot_dir = root.join("target/screenshots");
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join("dashboard.png");
    let mut node = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}/", r.addr))
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (with tests/browser installed by make test)");
    let mut stdin = node.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("browser: {line}");
            let _ = tx.send(line);
        }
    });
    let wait_line = |prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => assert!(!line.starts_with("PAGE ERROR"), "{line}"),
                Err(e) => panic!("browser never printed {prefix:?}: {e}"),
            }
        }
    };
    wait_line("SEEN 3 MEMBERS");
    // Writes for the Keyspace card's hot writers (20 a second, at most 40 s).
    let writer = tokio::spawn({
        let endpoints = cluster.endpoints();
        async move {
            let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
            for i in 0..800 {
                let _ = client
                    .put(format!("/registry/events/ns-a/e{i}"), "x", None)
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // The fsync chart names its window (monitoring.metrics_window, 5m here).
    assert_eq!(wait_line("WINDOW"), "WINDOW 5 min");
    // Every chart of the mixin's panels draws from the stored history, but
    // peer round trips: etcd observes them once per 30 s per peer, so a
    // cluster this young may have none in the window yet.
    let activity = wait_line("ACTIVITY");
    let defrag = wait_line("DEFRAG");
    assert!(
        defrag.contains("On: window always, rule dbSizeFree > 10GB.")
            && defrag.contains("skipped: m"),
        "{defrag}"
    );
    let hot = wait_line("HOT");
    assert!(hot.starts_with("HOT /registry/events/ "), "{hot}");
    writer.abort();
    assert!(
        ["ACTIVITY 16/16", "ACTIVITY 15/16 chart-peer-rtt"].contains(&activity.as_str()),
        "{activity}"
    );
    let leader = cluster.leader_index().await.unwrap().unwrap();
    cluster.kill((leader + 1) % 3).unwrap();
    writeln!(stdin, "KILLED").unwrap();
    let seen = wait_line("SEEN DOWN");
    eprintln!("{seen}");
    assert_eq!(
        wait_line("PHONE OVERFLOW"),
        "PHONE OVERFLOW false",
        "the page is wider than a phone"
    );
    assert_eq!(
        wait_line("EXTERNAL").trim(),
        "EXTERNAL 0",
        "the page asked for something outside"
    );
    drop(stdin);
    assert!(node.wait().unwrap().success());
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "no screenshot"
    );
    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")),
    )
}

fn post_schema<'a>(doc: &'a Value, path: &str, status: u16) -> &'a Value {
    &doc["paths"][path]["post"]["responses"][status.to_string()]["content"]["application/json"]["schema"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_and_maintenance_through_the_api() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let r = start(&cluster, "ops").await;
    let addr = r.addr;
    let (_, doc) = get(addr, "/api/v1/openapi.json").await;

    // A benchmark starts asynchronously and finishes with a report.
    let (code, started) = post(
        addr,
        "/api/v1/benchmarks",
        r#"{"workload": "put", "total": 300, "clients": 4, "prefix": "/api-bench/"}"#,
    )
    .await;
    assert_eq!(code, 202, "{started}");
    check(
        &doc,
        post_schema(&doc, "/api/v1/benchmarks", 202),
        &started,
        "POST /api/v1/benchmarks",
    )
    .unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (code, run) = get(addr, &format!("/api/v1/benchmarks/{id}")).await;
        assert_eq!(code, 200, "{run}");
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "the benchmark never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check(
        &doc,
        schema_for(&doc, "/api/v1/benchmarks/{id}", 200),
        &run,
        "run",
    )
    .unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["succeeded"], 300);
    // The spec and the report are typed in the document, not bare objects:
    // a report with a latency given as text, or a spec naming no known
    // workload, does not conform.
    let run_schema = schema_for(&doc, "/api/v1/benchmarks/{id}", 200);
    let mut wrong_report = run.clone();
    wrong_report["report"]["p99"] = serde_json::json!("fast");
    let mut wrong_spec = run.clone();
    wrong_spec["spec"]["workload"] = serde_json::json!("teleport");
    for wrong in [wrong_report, wrong_spec] {
        assert!(
            check(&doc, run_schema, &wrong, "wrong").is_err(),
            "accepted {wrong}"
        );
    }
    assert!(
        run["throughput"].as_f64().unwrap() > 0.0 && run["report"]["p99"].as_f64().is_some(),
        "{run}"
    );
    let (_, list) = get(addr, "/api/v1/benchmarks").await;
    check(
        &doc,
        schema_for(&doc, "/api/v1/benchmarks", 200),
        &list,
        "list",
    )
    .unwrap();
    assert!(
        list["benchmarks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id.as_str())
    );
    for (body, status, needle) in [
        (r#"{"workload": "bogus"}"#, 422, "workload"),
        (r#"{"workload": "put", "total": 0}"#, 422, "total"),
        (r#"{"cluster": "nope", "workload": "put"}"#, 404, "nope"),
        (r#"{"workload": "put", "slo": "p99 about 5"}"#, 422, "p99"),
        ("{not json", 400, "body"),
    ] {
        let (code, err) = post(addr, "/api/v1/benchmarks", body).await;
        assert_eq!(code, status, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }
    let (code, _) = get(addr, "/api/v1/benchmarks/nope").await;
    assert_eq!(code, 404);

    // Silences: add, list, delete; bad input; acknowledgement of a group that is not firing.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 600_000;
    let (code, sil) = post(
        addr,
        "/api/v1/silences",
        &format!(r#"{{"matchers": ["cluster=ops", "alertname=etcdMembersDown"], "ends_at_ms": {until}, "comment": "maintenance", "created_by": "test"}}"#),
    )
    .await;
    assert_eq!(code, 201, "{sil}");
    check(
        &doc,
        post_schema(&doc, "/api/v1/silences", 201),
        &sil,
        "silence",
    )
    .unwrap();
    let sid = sil["id"].as_str().unwrap().to_string();
    let (_, list) = get(addr, "/api/v1/silences").await;
    check(
        &doc,
        schema_for(&doc, "/api/v1/silences", 200),
        &list,
        "silences",
    )
    .unwrap();
    assert!(
        list["silences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == sid.as_str())
    );
    let (code, bad) = post(
        addr,
        "/api/v1/silences",
        &format!(r#"{{"matchers": ["cluster"], "ends_at_ms": {until}}}"#),
    )
    .await;
    assert_eq!(code, 422, "{bad}");
    let del = reqwest::Client::new()
        .delete(format!("http://{addr}/api/v1/silences/{sid}"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let again = reqwest::Client::new()
        .delete(format!("http://{addr}/api/v1/silences/{sid}"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let (code, bad) = post(
        addr,
        "/api/v1/alerts/ack",
        r#"{"group_key": "ops/etcdNoLeader"}"#,
    )
    .await;
    assert_eq!(code, 404, "{bad}");
    let (code, bad) = get(addr, "/api/v1/alerts/history?state=burning").await;
    assert_eq!(code, 400, "{bad}");

    // The Go original's spellings: the same run, marked deprecated.
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/performance/benchmark"))
        .header("content-type", "application/json")
        .body(r#"{"operations": 150, "type": "write"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    // RFC 9745: the date of deprecation as a structured-field date.
    assert_eq!(answer.headers()["deprecation"], "@1795910400");
    assert_eq!(
        answer.headers()["link"],
        "</api/v1/benchmarks>; rel=\"successor-version\""
    );
    let legacy: Value = answer.json().await.unwrap();
    assert_eq!(legacy["workload"], "put", "{legacy}");
    assert_eq!(legacy["spec"]["total"], 150, "{legacy}");
    let id = legacy["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = get(addr, &format!("/api/v1/benchmarks/{id}")).await;
        if run["state"] != "running" {
            assert_eq!(run["state"], "succeeded", "{run}");
            assert_eq!(run["succeeded"], 150, "{run}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the legacy benchmark never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, bad) = post(addr, "/api/v1/performance/benchmark", r#"{"ops": 5}"#).await;
    assert_eq!(code, 422, "{bad}");
    for (alias, successor) in [
        ("/api/v1/metrics/current", "/api/v1/cluster/metrics/current"),
        ("/api/v1/metrics/latency", "/api/v1/cluster/metrics/latency"),
    ] {
        let r = reqwest::get(format!("http://{addr}{alias}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{alias}");
        assert_eq!(r.headers()["deprecation"], "@1795910400", "{alias}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["cluster"], "ops", "{alias}: {body}");
        assert_eq!(doc["paths"][alias]["get"]["deprecated"], true, "{alias}");
        let (_, now) = get(addr, successor).await;
        assert_eq!(now["cluster"], body["cluster"]);
    }
    assert_eq!(
        doc["paths"]["/api/v1/performance/benchmark"]["post"]["deprecated"],
        true
    );
    // The successors are not deprecated.
    assert!(doc["paths"]["/api/v1/benchmarks"]["post"]["deprecated"].is_null());

    // Maintenance: compact, alarm disarm, snapshot, move-leader, defrag.
    let m = "/api/v1/clusters/ops/maintenance";
    let (code, c) = post(
        addr,
        &format!("{m}/compact"),
        r#"{"physical": true, "confirm": "ops"}"#,
    )
    .await;
    assert_eq!(code, 200, "{c}");
    check(
        &doc,
        post_schema(&doc, "/api/v1/clusters/{name}/maintenance/compact", 200),
        &c,
        "compact",
    )
    .unwrap();
    assert!(c["revision"].as_i64().unwrap() > 1);
    let (code, bad) = post(addr, &format!("{m}/compact"), r#"{"revision": -3}"#).await;
    assert_eq!(code, 422, "{bad}");

    let (code, a) = post(addr, &format!("{m}/alarm-disarm"), r#"{"confirm": "ops"}"#).await;
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["disarmed"].as_array().unwrap().len(), 0);

    let (code, snap) = post(addr, &format!("{m}/snapshot"), r#"{"name": "ops.db"}"#).await;
    assert_eq!(code, 200, "{snap}");
    check(
        &doc,
        post_schema(&doc, "/api/v1/clusters/{name}/maintenance/snapshot", 200),
        &snap,
        "snapshot",
    )
    .unwrap();
    let size = std::fs::metadata(snap["path"].as_str().unwrap())
        .unwrap()
        .len();
    assert_eq!(size, snap["size"].as_u64().unwrap());
    let (code, _) = post(
        addr,
        &format!("{m}/snapshot"),
        r#"{"name": "../escape.db"}"#,
    )
    .await;
    assert_eq!(code, 422);

    let leader = cluster.leader_index().await.unwrap().unwrap();
    let target = cluster.member((leader + 1) % 3).unwrap();
    let (code, moved) = post(
        addr,
        &format!("{m}/move-leader"),
        &format!(r#"{{"target": "{:x}", "confirm": "ops"}}"#, target.id),
    )
    .await;
    assert_eq!(code, 200, "{moved}");
    assert_eq!(moved["to"], format!("{:x}", target.id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.leader_index().await.unwrap() != Some(target.index) {
        assert!(Instant::now() < deadline, "leadership did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, bad) = post(
        addr,
        &format!("{m}/move-leader"),
        r#"{"target": "abc123", "confirm": "ops"}"#,
    )
    .await;
    assert_eq!(code, 422, "{bad}");
    let (code, bad) = post(
        addr,
        &format!("{m}/move-leader"),
        r#"{"target": "not-hex"}"#,
    )
    .await;
    assert_eq!(code, 422, "{bad}");

    let (code, d) = post(
        addr,
        "/api/v1/cluster/maintenance/defrag",
        r#"{"pause": "0s"}"#,
    )
    .await;
    assert_eq!(code, 200, "{d}");
    check(
        &doc,
        post_schema(&doc, "/api/v1/cluster/maintenance/defrag", 200),
        &d,
        "defrag",
    )
    .unwrap();
    let visited = d["members"].as_array().unwrap();
    assert_eq!(visited.len(), 3);
    assert!(
        visited.iter().all(|v| v["outcome"] == "defragmented"),
        "{d}"
    );
    assert_eq!(
        visited[2]["was_leader"], true,
        "the leader must be visited last: {d}"
    );
    let (code, bad) = post(
        addr,
        "/api/v1/cluster/maintenance/defrag",
        r#"{"pause": "soon"}"#,
    )
    .await;
    assert_eq!(code, 422, "{bad}");
    let (code, bad) = post(addr, "/api/v1/clusters/nope/maintenance/defrag", "{}").await;
    assert_eq!(code, 404, "{bad}");

    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_benchmarks_run_and_are_stored() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "clusters:\n  - name: sched\n    endpoints: [{}]\nmonitoring:\n  health_check_interval: 500ms\n  metrics_interval: 500ms\n\
         storage:\n  url: sqlite://{}\napi:\n  listen: 127.0.0.1:0\n\
         benchmark:\n  schedules:\n    - name: every-second\n      every: 1s\n      spec: {{ workload: put, total: 50, prefix: /sched/ }}\n      slo: \"throughput>1000000\"\n",
        cluster.endpoints().join(", "),
        dir.path().join("h.db").display()
    );
    let file = dir.path().join("m.yaml");
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let (_, list) = get(addr, "/api/v1/benchmarks").await;
        let done = list["benchmarks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["source"] == "every-second" && b["state"] != "running")
            .cloned();
        if let Some(run) = done {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run finished: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["succeeded"], 50);
    // The SLO is out of reach on purpose: the miss is recorded with its message.
    assert_eq!(run["slo_met"], false, "{run}");
    assert!(
        run["slo"][0].as_str().unwrap().contains("throughput"),
        "{run}"
    );
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    // Stored: a new store sees it.
    let store = etcd_monitor::store::Store::open(&config.storage.url)
        .await
        .unwrap();
    let stored = store.benchmarks(100).await.unwrap();
    assert!(stored.iter().any(|b| b["id"] == run["id"]), "not stored");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_is_confirmed_one_at_a_time_and_snapshots_stay_private() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let r = start(&cluster, "maint").await;
    let addr = r.addr;
    let m = "/api/v1/clusters/maint/maintenance";

    // Dangerous operations repeat the cluster's name; dry runs need not.
    for (op, body) in [
        ("compact", "{}"),
        ("alarm-disarm", "{}"),
        ("move-leader", r#"{"target": "1"}"#),
    ] {
        let (code, err) = post(addr, &format!("{m}/{op}"), body).await;
        assert_eq!(code, 422, "{op}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"confirm\": \"maint\""),
            "{op}: {err}"
        );
    }
    let (code, err) = post(addr, &format!("{m}/compact"), r#"{"confirm": "prod"}"#).await;
    assert_eq!(code, 422, "a name of another cluster: {err}");
    let (code, dry) = post(addr, &format!("{m}/compact"), r#"{"dry_run": true}"#).await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["revision"], dry["current_revision"]);
    let mut client = cluster.client().await.unwrap();
    let old = client
        .get("dry-run-probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.put("dry-run-probe", "v", None).await.unwrap();
    // The dry run compacted nothing: an old revision still reads.
    let at_old = client
        .get(
            "dry-run-probe",
            Some(etcd_client::GetOptions::new().with_revision(old)),
        )
        .await;
    assert!(at_old.is_ok(), "the dry run compacted: {at_old:?}");
    let (code, dry) = post(addr, &format!("{m}/alarm-disarm"), r#"{"dry_run": true}"#).await;
    assert_eq!(
        (code, dry["would_disarm"].clone()),
        (200, serde_json::json!([])),
        "{dry}"
    );
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let target = cluster.member((leader + 1) % 3).unwrap();
    let (code, dry) = post(
        addr,
        &format!("{m}/move-leader"),
        &format!(r#"{{"target": "{:x}", "dry_run": true}}"#, target.id),
    )
    .await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["to"], format!("{:x}", target.id));
    assert_eq!(
        cluster.leader_index().await.unwrap(),
        Some(leader),
        "a dry run moved the leader"
    );
    let (code, dry) = post(addr, &format!("{m}/defrag"), r#"{"dry_run": true}"#).await;
    assert_eq!(code, 200, "{dry}");
    assert!(
        dry["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["outcome"] == "planned"),
        "{dry}"
    );

    // One operation per cluster: a second defrag while one runs is refused.
    let first =
        tokio::spawn(async move { post(addr, &format!("{m}/defrag"), r#"{"pause": "2s"}"#).await });
    // The gate is taken before anything is sent to etcd: half a second is plenty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, busy) = post(addr, &format!("{m}/defrag"), r#"{"pause": "0s"}"#).await;
    assert_eq!(code, 409, "{busy}");
    let msg = busy["error"]["message"].as_str().unwrap();
    assert!(msg.contains("defrag started by anonymous"), "{msg}");
    let (code, other) = post(addr, &format!("{m}/compact"), r#"{"confirm": "maint"}"#).await;
    assert_eq!(code, 409, "any maintenance waits: {other}");
    let (code, done) = first.await.unwrap();
    assert_eq!(code, 200, "{done}");
    let (code, c) = post(addr, &format!("{m}/compact"), r#"{"confirm": "maint"}"#).await;
    assert_eq!(code, 200, "the slot is free again: {c}");

    // Snapshots: private, never overwritten, no .part left when the client leaves.
    let dir = r._dir.path().join("snapshots");
    let (code, dry) = post(
        addr,
        &format!("{m}/snapshot"),
        r#"{"name": "x.db", "dry_run": true}"#,
    )
    .await;
    assert_eq!(code, 200, "{dry}");
    assert!(!dir.join("x.db").exists());
    for i in 0..500 {
        client
            .put(format!("/fill/{i}"), vec![b'x'; 10_000], None)
            .await
            .unwrap();
    }
    // A client that goes away while its snapshot is being written.
    {
        use tokio::io::AsyncWriteExt;
        let body = r#"{"name": "left.db"}"#;
        let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
        gone.write_all(
            format!(
                "POST {m}/snapshot HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let part = dir.join("left.db.part");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !part.exists() && !dir.join("left.db").exists() {
            assert!(Instant::now() < deadline, "the snapshot never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(gone);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("left.db").exists() {
        if Instant::now() > deadline {
            let rows = r
                .monitor
                .store()
                .audit_records(0, i64::MAX, None, 100)
                .await
                .unwrap();
            panic!(
                "the snapshot was not finished after the client left: {:?} {rows:?}",
                std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, snap) = post(addr, &format!("{m}/snapshot"), r#"{"name": "kept.db"}"#).await;
    assert_eq!(code, 200, "{snap}");
    let (code, again) = post(addr, &format!("{m}/snapshot"), r#"{"name": "kept.db"}"#).await;
    assert_eq!(code, 409, "{again}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("kept.db")), 0o600);
    assert_eq!(mode(&dir.join("left.db")), 0o600);
    let parts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_alarm_is_disarmed_only_when_forced() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let r = start(&cluster, "corrupt").await;
    let mut client = cluster.client().await.unwrap();
    let id = cluster.member(0).unwrap().id;
    let mut opts = AlarmOptions::new();
    opts.with_member(id);
    client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(opts))
        .await
        .unwrap();
    let m = "/api/v1/clusters/corrupt/maintenance/alarm-disarm";
    let (code, dry) = post(r.addr, m, r#"{"dry_run": true}"#).await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["needs_force"], true, "{dry}");
    let (code, refused) = post(r.addr, m, r#"{"confirm": "corrupt"}"#).await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "corrupt");
    let still = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(still.alarms().len(), 1, "nothing was disarmed");
    let (code, done) = post(r.addr, m, r#"{"confirm": "corrupt", "force": true}"#).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["disarmed"][0]["alarm"], "CORRUPT");
    let after = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(after.alarms().is_empty());
    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}

/// Runs the `etcd-monitor` binary with `yaml` (logs into `dir/log`) and
/// waits until `http://127.0.0.1:{port}{path}` answers 200.
async fn run_binary(
    dir: &std::path::Path,
    yaml: &str,
    port: u16,
    path: &str,
) -> std::process::Child {
    let config = dir.join("m.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the monitor never answered {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// Resident anonymous memory (heap, stacks): what requests can grow. The
/// binary's own pages (file-backed, some 40 MiB of a debug build's
/// relocated tables) grow with its dependencies, not with requests.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

async fn send(
    addr: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The benchmark the API runs: within `benchmark.limits`, cancellable by
/// whoever started it (or an admin), and cleaning up only its own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_stay_within_limits_are_cancelled_and_remove_only_their_keys() {
    let cluster = EtcdCluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<(String, String)> = (0..3)
        .map(|_| etcd_monitor::api::auth::new_token().unwrap())
        .collect();
    let port = free_port();
    let yaml = format!(
        "clusters: [{{ name: lim, endpoints: [{}] }}]\nstorage: {{ url: \"sqlite://{}\" }}\n\
         api:\n  listen: 127.0.0.1:{port}\n  auth:\n    tokens:\n\
         \x20     - {{ name: op1, role: operator, token_sha256: {} }}\n\
         \x20     - {{ name: op2, role: operator, token_sha256: {} }}\n\
         \x20     - {{ name: adm, role: admin, token_sha256: {} }}\n",
        cluster.endpoints().join(", "),
        dir.path().join("h.db").display(),
        tokens[0].1,
        tokens[1].1,
        tokens[2].1
    );
    let mut child = run_binary(dir.path(), &yaml, port, "/health").await;
    let addr = format!("127.0.0.1:{port}");
    let (op1, op2, adm) = (&tokens[0].0, &tokens[1].0, &tokens[2].0);
    let post = reqwest::Method::POST;
    // Oversized requests are refused before anything is allocated or sent.
    for (body, field, limit) in [
        (
            r#"{"workload": "put", "val_size": 8589934592}"#,
            "val_size",
            "max_value_size",
        ),
        (
            r#"{"workload": "put", "clients": 100000}"#,
            "clients",
            "max_clients",
        ),
        (
            r#"{"workload": "put", "conns": 1000}"#,
            "conns",
            "max_conns",
        ),
        (
            r#"{"workload": "put", "key_size": 65536}"#,
            "key_size",
            "max_key_size",
        ),
        (
            r#"{"workload": "put", "total": 100000000}"#,
            "total",
            "max_total",
        ),
        (
            r#"{"workload": "put", "duration": "2h"}"#,
            "duration",
            "max_duration",
        ),
        (
            r#"{"workload": "put", "rate": 1e-9, "total": 5}"#,
            "rate",
            "min_rate",
        ),
        (
            r#"{"workload": "put", "rate": 1, "total": 100000}"#,
            "total",
            "max_duration",
        ),
        (
            r#"{"workload": "range", "key_space_size": 1000000, "val_size": 100000}"#,
            "key_space_size",
            "1073741824",
        ),
    ] {
        let (code, err) = send(&addr, post.clone(), "/api/v1/benchmarks", op1, body).await;
        assert_eq!(code, 422, "{body}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(limit), "{body}: {msg}");
    }
    let rss = rss_anon_kib(child.id());
    assert!(
        rss < 30 * 1024,
        "anonymous RSS {rss} KiB after the oversized requests"
    );

    // A run by op1 that would take 60 s; a key of someone else's appears under its prefix.
    let mut etcd = cluster.client().await.unwrap();
    let prefix = format!("/limits-{port}/");
    let body = format!(
        r#"{{"cluster": "lim", "workload": "put", "rate": 50, "duration": "60s", "key_space_size": 100, "prefix": "{prefix}"}}"#
    );
    let (code, started) = send(&addr, post.clone(), "/api/v1/benchmarks", op1, &body).await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["started_by"], "token:op1");
    assert_eq!(started["spec"]["duration"], "1m", "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // The foreign key goes in once the run writes: a run checks that its
    // prefix is empty before it starts, and a loaded machine may start it late.
    let deadline = Instant::now() + Duration::from_secs(15);
    let count_opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    while etcd
        .get(prefix.as_str(), Some(count_opts.clone()))
        .await
        .unwrap()
        .count()
        == 0
    {
        assert!(Instant::now() < deadline, "the run never wrote a key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    etcd.put(format!("{prefix}foreign"), "keep me", None)
        .await
        .unwrap();
    // Cancelled once it has written more than 10 keys of its own (a fixed
    // wait let a loaded machine cancel it before then).
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd
        .get(prefix.as_str(), Some(count_opts.clone()))
        .await
        .unwrap()
        .count()
        < 12
    {
        assert!(Instant::now() < deadline, "the run never wrote 11 keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let del = reqwest::Method::DELETE;
    let path = format!("/api/v1/benchmarks/{id}");
    let (code, err) = send(&addr, del.clone(), &path, op2, "").await;
    assert_eq!(code, 403, "another operator may not cancel it: {err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token:op1"),
        "{err}"
    );
    let (code, ok) = send(&addr, del.clone(), &path, op1, "").await;
    if code != 200 {
        let (_, run) = send(&addr, reqwest::Method::GET, &path, op1, "").await;
        panic!("cancelling answered {code}: {ok}; the run: {run}");
    }
    assert_eq!(ok["state"], "cancelling");
    let deadline = Instant::now() + Duration::from_secs(15);
    let run = loop {
        let (_, run) = send(&addr, reqwest::Method::GET, &path, op1, "").await;
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "the cancelled run never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["cancelled_by"], "token:op1");
    let wrote = run["succeeded"].as_u64().unwrap();
    assert!(wrote > 10 && wrote < 10_000, "{run}");
    assert!(run["report"]["cleanup_error"].is_null(), "{run}");
    let left = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let keys: Vec<String> = left
        .kvs()
        .iter()
        .map(|k| k.key_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        [format!("{prefix}foreign")],
        "only the run's own keys are removed"
    );
    let (code, _) = send(&addr, del.clone(), &path, op1, "").await;
    assert_eq!(code, 409, "it is not running any more");

    // auto_defrag goes through the safe defragmentation (health first, leader last).
    let (code, started) = send(
        &addr,
        post.clone(),
        "/api/v1/benchmarks",
        op1,
        &format!(r#"{{"cluster": "lim", "workload": "put", "total": 50, "auto_defrag": true, "prefix": "{prefix}d/"}}"#),
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let path_d = format!("/api/v1/benchmarks/{}", started["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, run) = send(&addr, reqwest::Method::GET, &path_d, op1, "").await;
        if run["state"] != "running" {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the defragmenting run never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run["report"]["cleanup_error"].is_null(), "{run}");

    // An admin may cancel anyone's run.
    etcd.delete(format!("{prefix}foreign"), None).await.unwrap();
    let (code, started) = send(&addr, post.clone(), "/api/v1/benchmarks", op2, &body).await;
    assert_eq!(code, 202, "{started}");
    let path = format!("/api/v1/benchmarks/{}", started["id"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, ok) = send(&addr, del, &path, adm, "").await;
    assert_eq!(code, 200, "{ok}");
    assert_eq!(ok["cancelled_by"], "token:adm");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap();
}

/// Benchmarks run on threads of their own: during a saturating run the
/// monitor's metrics rounds keep their interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_keep_their_schedule_during_a_saturating_benchmark() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(1000);
    let mut config = Config {
        clusters: vec![ClusterConfig {
            name: "sat".into(),
            endpoints: cluster.endpoints(),
            ..ClusterConfig::default()
        }],
        ..Config::default()
    };
    config.monitoring.health_check_interval = interval;
    config.monitoring.metrics_interval = interval;
    config.storage.url = format!("sqlite://{}", dir.path().join("h.db").display());
    config.api.listen = "127.0.0.1:0".into();
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle)
        .await
        .unwrap();
    let mut events = monitor.subscribe();
    let (code, started) = post(
        addr,
        "/api/v1/benchmarks",
        r#"{"workload": "put", "clients": 64, "conns": 4, "duration": "12s", "total": 10000000, "val_size": 256, "key_space_size": 1000, "prefix": "/saturate/"}"#,
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let mut rounds = Vec::new();
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        if let Ok(Ok(etcd_monitor::monitor::MonitorEvent::Metrics { at_ms, .. })) =
            tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        {
            rounds.push(at_ms);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, run) = get(addr, &format!("/api/v1/benchmarks/{id}")).await;
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    let ops = run["succeeded"].as_u64().unwrap();
    let gaps: Vec<i64> = rounds.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("{ops} puts by the benchmark; metrics rounds every {gaps:?} ms");
    // Saturated: many puts, or (on a loaded machine) few but slow ones; a
    // fresh-clone CI run saw 1687 puts at a p50 of 337 ms.
    let p50 = run["report"]["p50"].as_f64().unwrap_or(0.0);
    assert!(
        ops > 2000 || p50 > 100.0,
        "the benchmark did not saturate anything: {run}"
    );
    assert!(gaps.len() >= 8, "{gaps:?}");
    let ms = interval.as_millis() as i64;
    for g in &gaps {
        assert!(
            (g - ms).abs() <= ms / 5,
            "a round {g} ms after the previous one (interval {ms} ms): {gaps:?}"
        );
    }
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// The HTTP server against clients that hold on: slow headers, too many
/// connections, too many requests, too many event streams; and SIGTERM
/// with event streams open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cannot_be_starved_and_stops_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = EtcdCluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "clusters: [{{ name: srv, endpoints: [{}] }}]\nstorage: {{ url: \"sqlite://{}\" }}\n\
         monitoring: {{ health_check_interval: 500ms, metrics_interval: 500ms }}\n\
         api: {{ listen: 127.0.0.1:{port}, header_timeout: 1s, max_connections: 30, max_requests: 1, max_event_streams: 10 }}\n",
        cluster.endpoints().join(", "),
        dir.path().join("h.db").display(),
    );
    let mut child = run_binary(dir.path(), &yaml, port, "/ready").await;
    let addr = format!("127.0.0.1:{port}");

    // Slowloris: headers that never end, and a connection that says nothing.
    async fn closed_after(mut s: tokio::net::TcpStream, send: &[u8]) -> Duration {
        let t = Instant::now();
        s.write_all(send).await.unwrap();
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
                Ok(Ok(_)) => continue, // a 408 may come first
                Err(_) => panic!("the connection was never closed"),
            }
        }
    }
    let slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let took = closed_after(slow, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await;
    assert!(
        took < Duration::from_millis(2500),
        "partial headers held the connection {took:?}"
    );
    let idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let took = closed_after(idle, b"").await;
    assert!(
        took < Duration::from_millis(2500),
        "an idle connection stayed {took:?}"
    );

    // Too many connections: the one past the limit is answered 503 and closed.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains("retry-after: 1") && answer.contains("api.max_connections"),
        "{answer}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Too many requests at once (max_requests 1): a long defrag holds the only slot.
    // Other tests share the cluster: a defrag refused at once as unsafe (409)
    // while one of them has it busy is started again.
    let start_defrag = || {
        let addr = addr.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/api/v1/cluster/maintenance/defrag"))
                .header("content-type", "application/json")
                .body(r#"{"pause": "1s"}"#)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut defrag = start_defrag();
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shed = loop {
        let r = reqwest::get(format!("http://{addr}/api/v1/clusters"))
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        if defrag.is_finished() {
            refused.push(defrag.await.unwrap());
            defrag = start_defrag();
        }
        assert!(
            Instant::now() < deadline,
            "no request was shed (defrags that ended first: {refused:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(
        reqwest::get(format!("http://{addr}/health"))
            .await
            .unwrap()
            .status(),
        200,
        "probes pass"
    );
    let status = defrag.await.unwrap();
    assert!(
        status == 200 || status == 409,
        "the defrag holding the slot answered {status}"
    );

    // Event streams: ten fit, the eleventh is refused.
    let mut streams = Vec::new();
    for _ in 0..10 {
        let r = reqwest::get(format!("http://{addr}/api/v1/events"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let r = reqwest::get(format!("http://{addr}/api/v1/events"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("api.max_event_streams"));

    // SIGTERM with ten streams open: the process exits at once.
    let t = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} with open event streams"
    );
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_in_parallel_and_in_bounded_sizes() {
    let r = start(EtcdCluster::shared(), "hist").await;
    let addr = r.addr;
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(tokio::spawn(async move {
            let path = match i % 3 {
                0 => "/api/v1/cluster/metrics/history?metric=db_total_size_bytes&from=1h",
                1 => "/api/v1/cluster/history?from=1h",
                _ => "/api/v1/alerts/history",
            };
            get(addr, path).await
        }));
    }
    for t in tasks {
        let (code, body) = t.await.unwrap();
        assert_eq!(code, 200, "{body}");
    }
    // No step, or one too fine: widened so a series has at most 2000 points.
    for q in ["from=1h", "from=7d&step=1ms"] {
        let (code, h) = get(
            addr,
            &format!("/api/v1/cluster/metrics/history?metric=probe_put_p99_ms&{q}"),
        )
        .await;
        assert_eq!(code, 200, "{h}");
        let span = h["to_ms"].as_i64().unwrap() - h["from_ms"].as_i64().unwrap();
        let step = h["step_ms"].as_i64().unwrap();
        assert!(step * 2000 >= span, "{q}: step {step} ms over {span} ms");
        for s in h["series"].as_array().unwrap() {
            assert!(s["points"].as_array().unwrap().len() <= 2000);
        }
    }
    let (_, h) = get(
        addr,
        "/api/v1/cluster/metrics/history?metric=probe_put_p99_ms&from=1h&step=1m",
    )
    .await;
    assert_eq!(h["step_ms"], 60_000, "a coarse step is kept");
    etcd_monitor::run::shutdown(&r.monitor, &r.lifecycle).await;
}
