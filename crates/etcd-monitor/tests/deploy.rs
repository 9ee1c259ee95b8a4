//! Deployment artifacts against real parts: the Prometheus rule file is the
//! monitor's own export and passes promtool's checks and unit tests; every
//! rule expression and every Grafana panel query runs in a real Prometheus
//! scraping a real monitor watching a real TLS cluster. The Dockerfile passes
//! hadolint and its configuration runs as the image's user; the Compose file
//! passes the Compose specification's schema and every file its services
//! read passes that service's own checker; the Kubernetes manifests and the
//! Helm chart (rendered for two value sets) pass the API's schemas, fit
//! together, and the monitor accepts the configuration their pod would see.

#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/helm.rs"]
mod helm;
#[path = "deploy/image.rs"]
mod image;
#[path = "deploy/kube.rs"]
mod kube;
#[path = "deploy/manifests.rs"]
mod manifests;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, Config, TlsConfig};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_testkit::{ClusterOptions, EtcdCluster, free_port};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn export(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["rules", "export", "--format", "prometheus"])
        .args(args)
        .env_remove("ETCD_MONITOR_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_rule_file_in_deploy_is_the_export_of_the_default_configuration() {
    let committed = std::fs::read_to_string(root().join("deploy/prometheus/rules.yaml")).unwrap();
    assert!(
        export(&[]) == committed,
        "deploy/prometheus/rules.yaml drifted from the built-in rules; regenerate it:\n  \
         cargo run -p etcd-monitor -- rules export --format prometheus -o deploy/prometheus/rules.yaml"
    );
}

#[test]
fn the_export_follows_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "alerts:\n  runbook_base_url: https://runbooks.example/etcd\n  rules:\n    etcdHighFsyncDurations: {threshold: 0.3, for: 2m}\n    etcdDatabaseSizeLarge: {enabled: false}\n  custom_rules:\n    - {name: WatchersHigh, metric: watchers, comparison: '>', threshold: 1000}\n",
    )
    .unwrap();
    let out = dir.path().join("rules.yaml");
    let run = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["rules", "export", "--format", "prometheus", "-o"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .env_remove("ETCD_MONITOR_CONFIG")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("WatchersHigh"),
        "the skipped custom rule is named: {stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let rules = file["groups"][0]["rules"].as_sequence().unwrap();
    let fsync = rules
        .iter()
        .find(|r| r["alert"] == "etcdHighFsyncDurations" && r["labels"]["severity"] == "warning")
        .unwrap();
    assert_eq!(
        fsync["expr"],
        "etcd_monitor_member_wal_fsync_p99_seconds > 0.3"
    );
    assert_eq!(fsync["for"], "2m");
    assert_eq!(
        fsync["annotations"]["runbook_url"],
        "https://runbooks.example/etcd#etcdhighfsyncdurations"
    );
    assert!(!rules.iter().any(|r| r["alert"] == "etcdDatabaseSizeLarge"));
    promtool(&["check", "rules"], &out);
}

fn promtool(args: &[&str], file: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool (installed by make test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let text = promtool(
        &["check", "rules"],
        &root().join("deploy/prometheus/rules.yaml"),
    );
    assert!(text.contains("SUCCESS"), "{text}");
    let text = promtool(
        &["test", "rules"],
        &root().join("deploy/prometheus/rules.test.yaml"),
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Kills the child (Prometheus) when the test ends, however it ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(prom: &str, expr: &str) -> Value {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", expr)])
        .unwrap();
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The metric names an expression reads.
fn series_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("etcd_monitor_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_queries_run_in_prometheus_against_a_real_monitor() {
    const DAY: Duration = Duration::from_secs(86_400);
    // TLS, so the certificate series exist (certificates running out in 20
    // days, so one rule holds), and extensive metrics, so the gRPC latency
    // histogram does.
    let cluster = EtcdCluster::start(
        ClusterOptions::new(3)
            .tls_valid_for(20 * DAY, 400 * DAY)
            .extra_args(["--metrics", "extensive"]),
    )
    .await
    .unwrap();
    let files = cluster.tls_files().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster_config = ClusterConfig {
        name: "main".into(),
        endpoints: cluster.endpoints(),
        dial_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        tls: Some(TlsConfig {
            ca_file: Some(files.ca_file.clone()),
            cert_file: Some(files.client_cert_file.clone()),
            key_file: Some(files.client_key_file.clone()),
            server_name: None,
        }),
        ..ClusterConfig::default()
    };
    for i in 0..3 {
        let m = cluster.member(i).unwrap();
        cluster_config
            .metrics_urls
            .insert(m.name.clone(), m.metrics_url.clone());
    }
    let mut config = Config {
        clusters: vec![cluster_config],
        ..Config::default()
    };
    config.monitoring.health_check_interval = Duration::from_millis(500);
    config.monitoring.metrics_interval = Duration::from_millis(500);
    config.storage.url = format!("sqlite://{}", dir.path().join("h.db").display());
    config.api.listen = "127.0.0.1:0".into();
    // The monitor's own engine fires on the certificates too (at once), so
    // the dashboard's "alerts firing by rule" has a series.
    config.alerts.rules.insert(
        "etcdCertificateExpiring".into(),
        etcd_monitor::config::alerts::RuleOverride {
            for_: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    // Keyspace scans every second with a growth rule on the monitor's own
    // probe keys, so the growth series exist (after two scans).
    config.keyspace = serde_yaml_ng::from_str(
        "schedule: {every: 1s, depth: 1, rate: 100}\ngrowth_rules: [{prefix: __etcd_monitor/, max_bytes_per_hour: 1GiB}]",
    )
    .unwrap();
    // A backup schedule, so the backup series the backup rules read exist.
    config.backup = serde_yaml_ng::from_str(&format!(
        "schedules: [{{name: deploy, every: 1h, target: \"{}\", verify_every: 0}}]",
        dir.path().join("backups").display()
    ))
    .unwrap();
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&config, &daemon, &lifecycle)
        .await
        .unwrap();

    let rules_file = dir.path().join("rules.yaml");
    std::fs::write(&rules_file, export(&[])).unwrap();
    let port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: etcd-monitor\n    static_configs: [{{targets: ['{addr}']}}]\n",
            rules_file.display()
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (installed by make test)");
    let _prometheus = Kill(child);
    let prom = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{prom}/-/ready"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "Prometheus never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let file: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&rules_file).unwrap()).unwrap();
    let exprs: Vec<(String, String)> = file["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["alert"].as_str().unwrap(),
                    r["labels"]["severity"].as_str().unwrap()
                ),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<String> = {
        let mut all: Vec<String> = exprs.iter().flat_map(|(_, e)| series_names(e)).collect();
        all.sort();
        all.dedup();
        all
    };

    // Every series the rules read is on the monitor's page, as Prometheus
    // scraped it (rates need two scrapes and a window of history).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut missing = Vec::new();
        for name in &names {
            let v = query(&prom, &format!("count({name})")).await;
            if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series the rules read that Prometheus never got: {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every expression parses and evaluates; each rule group evaluation is
    // healthy.
    for (rule, expr) in &exprs {
        let v = query(&prom, expr).await;
        assert_eq!(v["status"], "success", "{rule}: {expr}: {v}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = reqwest::get(format!("{prom}/api/v1/rules"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rules = v["data"]["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let evaluated = rules.len() == exprs.len() && rules.iter().all(|r| r["health"] == "ok");
        if evaluated {
            // The certificates running out in 20 days hold the warning rule.
            let cert = rules
                .iter()
                .find(|r| {
                    r["name"] == "etcdCertificateExpiring" && r["labels"]["severity"] == "warning"
                })
                .unwrap();
            if !cert["alerts"].as_array().is_none_or(|a| a.is_empty()) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "rules not all evaluated and healthy: {:#}",
            Value::from(rules)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The Grafana dashboard: its cluster variable lists the cluster, and
    // every panel query parses and returns series.
    let v: Value = reqwest::get(format!(
        "{prom}/api/v1/label/cluster/values?match[]=etcd_monitor_cluster_health"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"], serde_json::json!(["main"]), "{v}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/etcd-monitor.json")).unwrap(),
    )
    .unwrap();
    let variable = &dashboard["templating"]["list"][1];
    assert_eq!(variable["name"], "cluster");
    let targets: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    assert!(targets.len() >= 18, "{} panel queries", targets.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &targets {
            let v = query(&prom, &expr.replace("$cluster", "main")).await;
            assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
            if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries without series: {empty:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}
