//! Configuration: every bad input names its key, layers override in order,
//! and `config check` behaves as documented.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etcd_monitor::config::{self, Overrides, Source};
use etcd_monitor::run::load_config;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn errors_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.yaml", text);
    match load_config(Some(&file), &Overrides::new()) {
        Ok(c) => panic!("accepted a bad configuration: {c:?}"),
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        }
    }
}

fn assert_error(text: &str, path: &str, needle: &str) {
    let errors = errors_of(text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "no error at {path} mentioning {needle:?} in {errors:#?}"
    );
}

#[test]
fn each_bad_input_is_named_by_its_key_path() {
    assert_error(
        "clusters:\n  - name: a\n    dial_timeuot: 5s\n",
        "clusters[0].dial_timeuot",
        "unknown key",
    );
    assert_error(
        "clusters:\n  - name: a\n    dial_timeout: fivesec\n",
        "clusters[0].dial_timeout",
        "\"fivesec\"",
    );
    assert_error(
        "monitoring:\n  health_check_interval: 10\n",
        "monitoring.health_check_interval",
        "no unit",
    );
    assert_error(
        "keyspace:\n  hot_writes: { enabled: true, prefixes: [/registry/, /registry/events/] }\n",
        "keyspace.hot_writes.prefixes",
        "overlap: their writes would be counted twice",
    );
    assert_error(
        "keyspace:\n  hot_writes: { enabled: true, depth: 0 }\n",
        "keyspace.hot_writes.depth",
        "0: 1 to 8",
    );
    assert_error(
        "keyspace:\n  hot_writes: { enabled: true, top: 1000 }\n",
        "keyspace.hot_writes.top",
        "1000: 1 to 100",
    );
    assert_error(
        "keyspace:\n  hot_writes: { enabled: true, prefixes: [] }\n",
        "keyspace.hot_writes.prefixes",
        "at least one",
    );
    assert_error(
        "maintenance:\n  defrag: { rule: \"dbSize >> 1\" }\n",
        "maintenance.defrag.rule",
        "column 9: expected a number, a quantity or",
    );
    assert_error(
        "maintenance:\n  defrag: { rule: \"dbSize > 1\", window: \"Sat 02:00-04:00 CET\" }\n",
        "maintenance.defrag.window",
        "windows are in UTC",
    );
    assert_error(
        "maintenance:\n  defrag: { rule: \"dbSize > 1\", schedule: \"0 3 * * Sam\" }\n",
        "maintenance.defrag.schedule",
        "day of the week \"Sam\"",
    );
    assert_error(
        "maintenance:\n  defrag: { rule: \"dbSize > 1\", schedule: \"0 3 31 2 *\" }\n",
        "maintenance.defrag.schedule",
        "no date ever matches it",
    );
    assert_error(
        "maintenance:\n  defrag: { rule: \"dbSize > 1\", schedule: \"0 3 * * *\", every: 1h }\n",
        "maintenance.defrag.schedule",
        "either schedule or every",
    );
    let backup = |schedule: &str| format!("backup:\n  schedules:\n    - {schedule}\n");
    assert_error(
        &backup("{ name: a, every: 1h, cron: \"0 3 * * *\", target: /b }"),
        "backup.schedules[0].cron",
        "either every or cron",
    );
    assert_error(
        &backup("{ name: a, target: /b }"),
        "backup.schedules[0].every",
        "required",
    );
    assert_error(
        &backup("{ name: a, cron: \"0 3 * * Sam\", target: /b }"),
        "backup.schedules[0].cron",
        "day of the week \"Sam\"",
    );
    assert_error(
        &backup("{ name: \"a b\", every: 1h, target: /b }"),
        "backup.schedules[0].name",
        "letters, digits",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: relative/dir }"),
        "backup.schedules[0].target",
        "an absolute directory path",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: \"gs://bucket\" }"),
        "backup.schedules[0].target",
        "no other scheme",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: \"s3:///x\" }"),
        "backup.schedules[0].target",
        "needs a bucket",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: \"s3://b/p\", s3: { endpoint: \"ftp://x\" } }"),
        "backup.schedules[0].s3.endpoint",
        "an http:// or https:// URL",
    );
    assert_error(
        &backup("{ name: a, cluster: nope, every: 1h, target: /b }"),
        "backup.schedules[0].cluster",
        "no cluster is named \"nope\"",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: /b, retention: { count: 0 } }"),
        "backup.schedules[0].retention.count",
        "at least 1",
    );
    assert_error(
        &backup("{ name: a, every: 1h, target: /b, compression: gzip }"),
        "backup.schedules[0].compression",
        "zstd",
    );
    assert_error(
        "backup:\n  schedules:\n    - { name: a, every: 1h, target: /b }\n    - { name: a, every: 2h, target: /c }\n",
        "backup.schedules[1].name",
        "used by another schedule",
    );
    let pg = "storage:\n  url: postgres://m@db/x\n";
    assert_error(
        "ha:\n  enabled: true\n  cluster: default\n",
        "ha.enabled",
        "storage.url must be postgres://",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n"),
        "ha",
        "ha.cluster (a watched cluster) or ha.etcd.endpoints",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  cluster: nope\n"),
        "ha.cluster",
        "\"nope\" is not a configured cluster",
    );
    assert_error(
        &format!(
            "{pg}ha:\n  enabled: true\n  cluster: default\n  etcd: {{ endpoints: [\"127.0.0.1:2379\"] }}\n"
        ),
        "ha.cluster",
        "not both",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  etcd: {{ endpoints: [] }}\n"),
        "ha.etcd.endpoints",
        "at least one endpoint",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  cluster: default\n  ttl: 1s\n"),
        "ha.ttl",
        "use 2s to 5m",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  cluster: default\n  prefix: /\n"),
        "ha.prefix",
        "a prefix of its own",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  cluster: default\n  replica_name: a/b\n"),
        "ha.replica_name",
        "no '/'",
    );
    assert_error(
        &format!("{pg}ha:\n  enabled: true\n  cluster: default\n  advertise_url: ftp://x\n"),
        "ha.advertise_url",
        "not an http(s) URL",
    );
    assert_error(
        &format!(
            "{pg}ha:\n  enabled: true\n  etcd: {{ endpoints: [\"127.0.0.1:2379\"], tls: {{ ca_file: /nonexistent/ca.pem }} }}\n"
        ),
        "ha.etcd.tls.ca_file",
        "cannot read /nonexistent/ca.pem",
    );
    assert_error(
        &format!(
            "{pg}ha:\n  enabled: true\n  etcd: {{ endpoints: [\"127.0.0.1:2379\"], password: x }}\n"
        ),
        "ha.etcd.username",
        "a password needs a username",
    );
    assert_error("ha:\n  enabeld: true\n", "ha.enabeld", "unknown key");
    assert_error(
        "maintenance:\n  defrag: { window: always }\n",
        "maintenance.defrag",
        "rule",
    );
    assert_error(
        "keyspace:\n  hot_writes: { enabeld: true }\n",
        "keyspace.hot_writes.enabeld",
        "unknown key",
    );
    assert_error(
        "clusters:\n  - name: a\n    endpoints: [127.0.0.1:2379]\nmonitoring:\n  metrics_interval: 10s\n  metrics_window: 15s\n",
        "monitoring.metrics_window",
        "fewer than two scrapes at monitoring.metrics_interval 10s: use at least 20s",
    );
    assert_error(
        "monitoring:\n  metrics_interval: [1]\n",
        "monitoring.metrics_interval",
        "invalid type",
    );
    assert_error(
        "clusters:\n  - endpoints: 5\n",
        "clusters[0].endpoints",
        "invalid type",
    );
    assert_error(
        "clusters:\n  - endpoints: [\"nope\"]\n",
        "clusters[0].endpoints[0]",
        "no port",
    );
    assert_error("api:\n  listen: nowhere\n", "api.listen", "host:port");
    assert_error("storage:\n  url: mysql://x\n", "storage.url", "sqlite://");
    assert_error(
        "logging:\n  level: loud\n",
        "logging.level",
        "not a log level",
    );
    assert_error("logging:\n  format: xml\n", "logging.format", "xml");
    assert_error("bogus: 1\n", "bogus", "unknown key");
    assert_error(
        "clusters:\n  - name: a\n    username: u\n    password_file: /does/not/exist\n",
        "clusters[0].password_file",
        "cannot read /does/not/exist",
    );
    assert_error(
        "clusters:\n  - name: a\n    tls:\n      ca_file: /no/ca.pem\n",
        "clusters[0].tls.ca_file",
        "cannot read",
    );
    assert_error(
        "clusters:\n  - name: a\n  - name: a\n",
        "clusters[1].name",
        "duplicate",
    );
}

#[test]
fn every_error_is_reported_in_one_run() {
    let errors = errors_of(
        "clusters:\n  - name: a\n    dial_timeuot: 5s\n    request_timeout: fivesec\nmonitoring:\n  metrics_interval: x\napi:\n  listen: nowhere\n",
    );
    for path in [
        "clusters[0].dial_timeuot",
        "clusters[0].request_timeout",
        "monitoring.metrics_interval",
        "api.listen",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "{path} missing from {errors:#?}"
        );
    }
}

#[test]
fn unreadable_and_malformed_files_name_the_file() {
    let missing =
        load_config(Some(Path::new("/no/such/monitor.yaml")), &Overrides::new()).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("/no/such/monitor.yaml: cannot read"),
        "{missing}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "broken.yaml", "clusters: [\n");
    let broken = load_config(Some(&file), &Overrides::new()).unwrap_err();
    assert!(
        broken.to_string().contains("broken.yaml: not valid YAML"),
        "{broken}"
    );
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.yaml",
        "clusters:\n  - name: prod\n    endpoints: [\"10.0.0.1:2379\"]\nmonitoring:\n  health_check_interval: 30s\nlogging:\n  level: warn\n",
    );
    let env = vec![
        (
            "ETCD_MONITOR_MONITORING__HEALTH_CHECK_INTERVAL".to_string(),
            "5s".to_string(),
        ),
        (
            "ETCD_MONITOR_LOGGING__LEVEL".to_string(),
            "debug".to_string(),
        ),
        (
            "ETCD_MONITOR_CLUSTERS__0__PASSWORD".to_string(),
            "s3cret".to_string(),
        ),
        (
            "ETCD_MONITOR_CLUSTERS__0__USERNAME".to_string(),
            "monitor".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let mut layers = config::env_overrides(env);
    let mut flags = Overrides::new();
    flags.set(
        Source::Flag("--log-level".into()),
        "logging.level",
        "error".into(),
    );
    flags.endpoints(
        Source::Flag("--endpoints".into()),
        vec!["127.0.0.1:3379".into()],
    );
    layers.extend(flags);
    let c = load_config(Some(&file), &layers).unwrap();
    assert_eq!(
        c.monitoring.health_check_interval,
        Duration::from_secs(5),
        "env beats the file"
    );
    assert_eq!(c.logging.level, "error", "the flag beats env and file");
    assert_eq!(c.clusters[0].endpoints, vec!["127.0.0.1:3379".to_string()]);
    assert_eq!(c.clusters[0].name, "prod");
    assert_eq!(c.clusters[0].password.as_deref(), Some("s3cret"));
    let shown = config::to_redacted_yaml(&c);
    assert!(
        !shown.contains("s3cret") && shown.contains(config::REDACTED),
        "{shown}"
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let env = vec![(
        "ETCD_MONITOR_MONITORING__METRICS_INTERVAL".to_string(),
        "soon".to_string(),
    )];
    let err = load_config(None, &config::env_overrides(env)).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(
        err.0[0].source,
        Source::Env("ETCD_MONITOR_MONITORING__METRICS_INTERVAL".into())
    );
    assert_eq!(err.0[0].path, "monitoring.metrics_interval");
}

#[test]
fn secrets_from_the_environment_arrive_as_written_and_typed_keys_still_work() {
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    for password in ["123456", "abc #x", "true", "0x1F", "- a", "{x: 1}", "007"] {
        let c = load_config(
            None,
            &config::env_overrides(env(&[
                ("ETCD_MONITOR_CLUSTERS__0__USERNAME", "monitor"),
                ("ETCD_MONITOR_CLUSTERS__0__PASSWORD", password),
                ("ETCD_MONITOR_MONITORING__PROBES_PER_ROUND", "5"),
                ("ETCD_MONITOR_API__AUTH__PUBLIC_METRICS", "true"),
                ("ETCD_MONITOR_CLUSTERS__0__REQUIRE_LEADER", "false"),
            ])),
        )
        .unwrap_or_else(|e| panic!("{password:?}: {e}"));
        assert_eq!(c.clusters[0].password.as_deref(), Some(password));
        assert_eq!(
            c.monitoring.probes_per_round, 5,
            "numbers are still numbers"
        );
        assert!(c.api.auth.public_metrics, "booleans are still booleans");
        assert!(!c.clusters[0].require_leader);
    }
    // A number where text is needed, and text where a number is: the error
    // names the variable; a secret is never repeated.
    let err = load_config(
        None,
        &config::env_overrides(env(&[(
            "ETCD_MONITOR_MONITORING__PROBES_PER_ROUND",
            "many",
        )])),
    )
    .unwrap_err();
    assert_eq!(err.0[0].path, "monitoring.probes_per_round", "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.yaml",
        "clusters:\n  - name: a\n    username: u\n    password: 918273645\n",
    );
    let err = load_config(Some(&file), &Overrides::new()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("clusters[0].password") && text.contains("quote it"),
        "{text}"
    );
    assert!(
        !text.contains("918273645"),
        "the secret is repeated: {text}"
    );
}

#[test]
fn secret_files_feed_channels_storage_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, text: &str| write(dir.path(), name, text).display().to_string();
    let slack = p("slack", "https://hooks.slack.com/services/T0/B0/S3CR3T\n");
    let pg = p("pg", "p@ss:w/rd\n");
    let token = p("token", "emt_abc\n");
    let file = write(
        dir.path(),
        "c.yaml",
        &format!(
            "storage: {{ url: \"postgres://mon@db.example:5432/history\", password_file: {pg} }}\n\
             api:\n  auth:\n    tokens: [{{ name: ci, role: viewer, token_file: {token} }}]\n\
             alerts:\n  channels: [{{ name: s, type: slack, url_file: {slack} }}]\n"
        ),
    );
    let c = load_config(Some(&file), &Overrides::new()).unwrap();
    let url = c.storage.connect_url().unwrap();
    assert_eq!(
        url,
        "postgres://mon:p%40ss%3Aw%2Frd@db.example:5432/history"
    );
    let channel = c.alerts.channels[0].with_secret_files().unwrap();
    assert_eq!(
        channel.url.as_deref(),
        Some("https://hooks.slack.com/services/T0/B0/S3CR3T")
    );
    let shown = config::to_redacted_yaml(&c);
    assert!(
        !shown.contains("p@ss") && !shown.contains("S3CR3T"),
        "{shown}"
    );
    // Both a value and its file, or an unreadable file: errors naming the key.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "storage: {{ url: \"postgres://mon:inline@db/h\", password_file: {pg} }}\n\
             alerts:\n  channels: [{{ name: s, type: slack, url: \"https://x\", url_file: {slack} }},\n\
             \x20   {{ name: w, type: webhook, url: \"http://x\", secret_file: /nonexistent/secret }}]\n"
        ),
    );
    let err = load_config(Some(&bad), &Overrides::new())
        .unwrap_err()
        .to_string();
    for needle in [
        "storage.password_file: storage.url has a password already",
        "alerts.channels[0].url_file: set either url or url_file",
        "alerts.channels[1].secret_file: cannot read /nonexistent/secret",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!err.contains("inline"), "{err}");
}

fn etcd_monitor() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.env_remove("ETCD_MONITOR_CONFIG")
        .env_remove("ETCD_MONITOR_ENDPOINTS");
    cmd
}

fn example_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml")
}

#[test]
fn config_check_accepts_the_example_and_prints_the_effective_config() {
    let out = etcd_monitor()
        .args(["config", "check"])
        .arg(example_file())
        .env("ETCD_MONITOR_CLUSTERS__0__USERNAME", "monitor")
        .env("ETCD_MONITOR_CLUSTERS__0__PASSWORD", "hunter2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("health_check_interval: 10s"), "{stdout}");
    assert!(stdout.contains("username: monitor"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "a secret was printed: {stdout}"
    );
}

#[test]
fn config_check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        "clusters:\n  - name: a\n    dial_timeuot: 5s\nmonitoring:\n  health_check_interval: fivesec\n",
    );
    let out = etcd_monitor()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 configuration errors"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: clusters[0].dial_timeuot: unknown key",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("monitoring.health_check_interval: invalid duration \"fivesec\""),
        "{stderr}"
    );

    let missing = etcd_monitor()
        .args(["config", "check", "/no/such.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such.yaml: cannot read"));
}

#[test]
fn cli_lists_the_subcommands_and_keeps_the_seed_spellings() {
    let help = etcd_monitor().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for sub in ["run", "demo", "status", "bench", "ctl", "config"] {
        assert!(
            text.contains(&format!("\n  {sub} ")),
            "--help lacks {sub}: {text}"
        );
    }
    // One exit-status convention, printed by --help (root and one-shot commands).
    assert!(text.contains("Exit status (every command):"), "{text}");
    for sub in ["status", "bench", "ctl"] {
        let help = etcd_monitor().args([sub, "--help"]).output().unwrap();
        assert!(help.status.success());
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("3    usage"), "{sub} --help: {text}");
    }
    let version = etcd_monitor().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("etcd-monitor "));
    // The seed's quick start parses; a bad port is a clear flag error.
    let bad = etcd_monitor()
        .args(["--endpoints=localhost:2379", "--api-port=notaport"])
        .output()
        .unwrap();
    // Usage errors exit 3 (2 is an unavailable cluster for `status`).
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--api-port"));
    // Bad flag values go through the same checks as the file.
    let bad = etcd_monitor()
        .args(["run", "--endpoints=ftp://x:1"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("flag --endpoints: clusters[0].endpoints[0]"),
        "{stderr}"
    );
}

#[test]
fn rules_list_prints_the_table_as_configured() {
    let out = etcd_monitor().args(["rules", "list"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        " NAME ",
        "| etcdHighFsyncDurations_critical ",
        "| 1000 ms ",
        "docs/runbooks.md#etcdhighfsyncdurations",
        "| 95.0% ",
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "alerts:\n  rules:\n    etcdNoLeader:\n      enabled: false\n      for: 30s\n  custom_rules:\n    - name: WatchersHigh\n      metric: watchers\n      comparison: '>'\n      threshold: 10000\n",
    )
    .unwrap();
    let out = etcd_monitor()
        .args(["rules", "list", "-w", "json", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        etcd_monitor::alert::rules::Rule::ALL.len() + 1,
        "the built-in rules and the custom one"
    );
    let no_leader = rows.iter().find(|r| r["name"] == "etcdNoLeader").unwrap();
    assert_eq!(no_leader["enabled"], false);
    assert_eq!(no_leader["for"], "30s");
    assert_eq!(no_leader["needs"], serde_json::json!(["health"]));
    let custom = rows.last().unwrap();
    assert_eq!(custom["source"], "custom");
    assert_eq!(custom["expression"], "watchers > threshold");
}
