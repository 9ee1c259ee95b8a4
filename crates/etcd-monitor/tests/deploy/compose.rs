//! The Compose stack: compose.yaml passes the Compose specification's schema,
//! every file a service mounts exists, and each one passes its own program's
//! checker where the service reads it (promtool, amtool, `etcd-monitor config
//! check`); names and ports agree across services. (No Docker daemon runs
//! here: `docker compose up` itself is not run in CI.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::kube::{output, venv_tool};
use super::root;

fn compose_dir() -> PathBuf {
    root().join("deploy/compose")
}

fn check_jsonschema(file: &Path) -> (bool, String) {
    output(
        Command::new(venv_tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(file),
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let (ok, text) = output(cmd);
    assert!(ok, "{cmd:?}:\n{text}");
    text
}

/// A service's filesystem as its bind mounts make it, under `into`: host
/// files and directories copied to their container paths. Returns the
/// container paths of the named volumes (created empty).
fn lay_out(service: &Value, into: &Path) -> Vec<String> {
    let mut named = Vec::new();
    for v in service["volumes"].as_array().into_iter().flatten() {
        let v = v.as_str().expect("short volume syntax");
        let mut parts = v.split(':');
        let (host, target) = (parts.next().unwrap(), parts.next().unwrap());
        let dest = into.join(target.trim_start_matches('/'));
        if host.starts_with('.') {
            let src = compose_dir().join(host);
            assert!(src.exists(), "{v}: {} does not exist", src.display());
            copy(&src, &dest);
        } else {
            std::fs::create_dir_all(&dest).unwrap();
            named.push(target.to_string());
        }
    }
    named
}

fn copy(src: &Path, dest: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &dest.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(src, dest).unwrap();
    }
}

/// A YAML file as Compose reads it: `<<` merge keys applied.
fn yaml(path: &Path) -> Value {
    let mut v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap()
}

/// host:port of a URL such as http://etcd-1:2381/metrics.
fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

#[test]
fn the_compose_stack_is_valid_and_every_service_accepts_its_files() {
    let file = compose_dir().join("compose.yaml");
    let (ok, text) = check_jsonschema(&file);
    assert!(ok, "check-jsonschema (Compose specification):\n{text}");
    // The check is live: a port list written as a string is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("compose.yaml");
    std::fs::write(
        &bad,
        "services:\n  x:\n    image: a\n    ports: \"8080:8080\"\n",
    )
    .unwrap();
    let (ok, text) = check_jsonschema(&bad);
    assert!(!ok, "{text}");

    let compose = yaml(&file);
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "alertmanager",
            "etcd-1",
            "etcd-2",
            "etcd-3",
            "etcd-monitor",
            "grafana",
            "prometheus"
        ]
    );
    let fs = tempfile::tempdir().unwrap();
    let at = |service: &str| fs.path().join(service);
    let mut named = BTreeMap::new();
    for (name, service) in services {
        named.insert(name.as_str(), lay_out(service, &at(name)));
        // Only loopback sees the published ports.
        for p in service["ports"].as_array().into_iter().flatten() {
            assert!(p.as_str().unwrap().starts_with("127.0.0.1:"), "{name}: {p}");
        }
    }

    // etcd: three members that name each other by service name.
    let mut metrics_targets = Vec::new();
    for i in 1..=3 {
        let member = format!("etcd-{i}");
        let env = &services[&member]["environment"];
        assert_eq!(env["ETCD_NAME"], member.as_str());
        let initial = env["ETCD_INITIAL_CLUSTER"].as_str().unwrap();
        assert!(
            initial.contains(&format!("{member}=http://{member}:2380")),
            "{initial}"
        );
        assert_eq!(
            env["ETCD_ADVERTISE_CLIENT_URLS"],
            format!("http://{member}:2379")
        );
        let metrics = env["ETCD_LISTEN_METRICS_URLS"].as_str().unwrap();
        metrics_targets.push(format!(
            "{member}:{}",
            host_port(metrics).split(':').nth(1).unwrap()
        ));
    }

    // The monitor: the image built from this repository, and a configuration
    // `config check` accepts where the image reads it.
    let monitor = &services["etcd-monitor"];
    let build = compose_dir().join(monitor["build"]["context"].as_str().unwrap());
    assert!(
        build
            .join(monitor["build"]["dockerfile"].as_str().unwrap())
            .exists()
    );
    assert_eq!(monitor["read_only"], true, "read-only root filesystem");
    assert_eq!(
        named["etcd-monitor"],
        ["/var/lib/etcd-monitor"],
        "its data is a volume"
    );
    let config = at("etcd-monitor").join("etc/etcd-monitor/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "/var/lib/etcd-monitor",
        &at("etcd-monitor")
            .join("var/lib/etcd-monitor")
            .display()
            .to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["config", "check"])
        .arg(&config)
        .env_remove("ETCD_MONITOR_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "config check {}:\n{stderr}",
        config.display()
    );
    // Anonymous viewers on every interface: allowed, and said at every start.
    assert!(stderr.contains("anonymous_role is \"viewer\""), "{stderr}");
    let effective: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let cluster = &effective["clusters"][0];
    let endpoints: Vec<String> = cluster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| host_port(e.as_str().unwrap()))
        .collect();
    assert_eq!(endpoints, ["etcd-1:2379", "etcd-2:2379", "etcd-3:2379"]);
    let metrics_urls: BTreeMap<String, String> = cluster["metrics_urls"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), host_port(v.as_str().unwrap())))
        .collect();
    for (i, target) in metrics_targets.iter().enumerate() {
        assert_eq!(&metrics_urls[&format!("etcd-{}", i + 1)], target);
    }
    let listen_port = effective["api"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let published = monitor["ports"][0].as_str().unwrap();
    assert!(
        published.ends_with(&format!(":{listen_port}")),
        "{published}"
    );
    assert_eq!(effective["api"]["auth"]["anonymous_role"], "viewer");
    let channels = effective["alerts"]["channels"].as_array().unwrap();
    let am = channels
        .iter()
        .find(|c| c["type"] == "alertmanager")
        .expect("an Alertmanager channel");

    // Alertmanager: its own checker on its file, at the address the monitor posts to.
    let alertmanager = &services["alertmanager"];
    assert_eq!(
        host_port(am["url"].as_str().unwrap()),
        format!(
            "alertmanager:{}",
            alertmanager["ports"][0]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
        )
    );
    let am_config = command_flag(alertmanager, "--config.file");
    run_ok(
        Command::new("amtool")
            .args(["check-config"])
            .arg(at("alertmanager").join(am_config.trim_start_matches('/'))),
    );

    // Prometheus: promtool on its file where it reads it (the rule file
    // beside it, as mounted); it scrapes the monitor and every member.
    let prometheus = &services["prometheus"];
    let prom_config =
        at("prometheus").join(command_flag(prometheus, "--config.file").trim_start_matches('/'));
    let text = run_ok(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(&prom_config),
    );
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/rules.yaml")).unwrap(),
    )
    .unwrap();
    let count = rules["groups"][0]["rules"].as_array().unwrap().len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
    let prom = yaml(&prom_config);
    let targets = |job: &str| -> Vec<String> {
        let job = prom["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == job)
            .unwrap_or_else(|| panic!("scrape job {job}"));
        job["static_configs"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        targets("etcd-monitor"),
        [format!("etcd-monitor:{listen_port}")]
    );
    assert_eq!(targets("etcd"), metrics_targets);
    assert_eq!(
        effective["api"]["auth"]["public_metrics"], true,
        "Prometheus scrapes without a token"
    );

    // Grafana: the data source is the stack's Prometheus, and the dashboard
    // provider reads the directory the dashboard is mounted in.
    let grafana = &services["grafana"];
    let prov = at("grafana").join("etc/grafana/provisioning");
    let ds = yaml(&prov.join("datasources/prometheus.yaml"));
    assert_eq!(
        host_port(ds["datasources"][0]["url"].as_str().unwrap()),
        "prometheus:9090"
    );
    let dashboards = yaml(&prov.join("dashboards/etcd-monitor.yaml"));
    let path = dashboards["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(
            at("grafana")
                .join(path.trim_start_matches('/'))
                .join("etcd-monitor.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(board["title"], "etcd-monitor");
    assert_eq!(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
        format!("{path}/etcd-monitor.json")
    );
}

/// The value of `--flag=VALUE` in a service's command.
fn command_flag(service: &Value, flag: &str) -> String {
    service["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix(&format!("{flag}=")))
        .next()
        .unwrap_or_else(|| panic!("{flag} in {}", service["command"]))
        .to_string()
}
