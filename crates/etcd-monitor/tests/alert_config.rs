//! `alerts.*` configuration: rule names, channel settings, routes and
//! silences are checked with their key paths; secrets are redacted.

use std::path::Path;

use etcd_monitor::config::{self, Overrides};
use etcd_monitor::run::load_config;

fn load(text: &str) -> Result<config::Config, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, text).unwrap();
    load_config(Some(&file), &Overrides::new()).map_err(|e| {
        e.0.iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    })
}

fn assert_error(text: &str, path: &str, needle: &str) {
    let errors = load(text).expect_err("accepted a bad configuration");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "no error at {path} mentioning {needle:?} in {errors:#?}"
    );
}

#[test]
fn rule_overrides_apply_and_unknown_names_are_errors() {
    let c =
        load("alerts:\n  rules:\n    etcdMembersDown:\n      for: 0s\n      severity: critical\n")
            .unwrap();
    let rules = etcd_monitor::alert::rules::RuleSet::from_config(&c.alerts);
    let r = rules.get(etcd_monitor::alert::rules::Rule::MembersDown);
    assert_eq!(r.for_, std::time::Duration::ZERO);
    assert_eq!(r.severity.as_str(), "critical");
    assert_error(
        "alerts:\n  rules:\n    etcdMembresDown:\n      for: 0s\n",
        "alerts.rules.etcdMembresDown",
        "unknown rule",
    );
    assert_error(
        "alerts:\n  rules:\n    etcdNoLeader:\n      for: soon\n",
        "alerts.rules.etcdNoLeader.for",
        "\"soon\"",
    );
    assert_error(
        "alerts:\n  rules:\n    etcdNoLeader:\n      treshold: 1\n",
        "alerts.rules.etcdNoLeader.treshold",
        "unknown",
    );
    assert_error(
        "alerts:\n  custom_rules:\n    - name: X\n      metric: nope\n      comparison: '>'\n      threshold: 1\n",
        "alerts.custom_rules[0].metric",
        "unknown metric",
    );
}

#[test]
fn channels_routes_and_silences_are_checked() {
    assert_error(
        "alerts:\n  channels:\n    - name: a\n      type: webhook\n",
        "alerts.channels[0].url",
        "required",
    );
    assert_error(
        "alerts:\n  channels:\n    - name: a\n      type: pagerduty\n",
        "alerts.channels[0].routing_key",
        "required",
    );
    assert_error(
        "alerts:\n  channels:\n    - name: a\n      type: slack\n      url: http://x\n      secret: s\n",
        "alerts.channels[0].secret",
        "not a setting of a slack channel",
    );
    assert_error(
        "alerts:\n  channels:\n    - name: a\n      type: carrier-pigeon\n",
        "alerts.channels[0].type",
        "unknown variant",
    );
    assert_error(
        "alerts:\n  channels:\n    - name: a\n      type: console\n  routes:\n    - channels: [b]\n",
        "alerts.routes[0].channels[0]",
        "no channel named \"b\"",
    );
    assert_error(
        "alerts:\n  silences:\n    - matchers: [cluster=a]\n      ends_at: tomorrow\n",
        "alerts.silences[0]",
        "ends_at",
    );
}

#[test]
fn channel_secrets_are_redacted_and_the_example_loads() {
    let c = load(
        "alerts:\n  channels:\n    - name: a\n      type: webhook\n      url: http://x\n      secret: hush\n      headers: { Authorization: Bearer hush2 }\n    - name: p\n      type: pagerduty\n      routing_key: hush3\n",
    )
    .unwrap();
    let shown = config::to_redacted_yaml(&c);
    for secret in ["hush\n", "hush2", "hush3"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains(config::REDACTED));
    // The secret from the environment, into the file's channel.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "alerts:\n  channels:\n    - name: a\n      type: webhook\n      url: http://x\n",
    )
    .unwrap();
    let env = config::env_overrides([(
        "ETCD_MONITOR_ALERTS__CHANNELS__0__SECRET".to_string(),
        "from-env".to_string(),
    )]);
    let c = load_config(Some(&file), &env).unwrap();
    assert_eq!(c.alerts.channels[0].secret.as_deref(), Some("from-env"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml");
    let c = load_config(Some(&example), &Overrides::new()).unwrap();
    assert_eq!(c.alerts.channels.len(), 1);
}

#[test]
fn inhibit_rules_default_replace_and_are_checked() {
    let defaults = load("alerts: {}\n").unwrap();
    assert_eq!(defaults.alerts.inhibit_rules.len(), 2);
    let none = load("alerts:\n  inhibit_rules: []\n").unwrap();
    assert!(none.alerts.inhibit_rules.is_empty());
    let one = load(
        "alerts:\n  inhibit_rules:\n    - source_matchers: [alertname=etcdNoLeader]\n      target_matchers: ['alertname=~etcdMembers.*']\n      equal: [cluster]\n",
    )
    .unwrap();
    assert_eq!(one.alerts.inhibit_rules.len(), 1);
    assert_error(
        "alerts:\n  inhibit_rules:\n    - source_matchers: [alertname=etcdNoLeader]\n      target_matchers: ['alertname=~(']\n",
        "alerts.inhibit_rules[0].target_matchers[0]",
        "regular expression",
    );
    assert_error(
        "alerts:\n  inhibit_rules:\n    - source_matchers: []\n      target_matchers: [severity=warning]\n",
        "alerts.inhibit_rules[0].source_matchers",
        "at least one matcher",
    );
    assert_error(
        "alerts:\n  inhibit_rules:\n    - source_matchers: [nonsense]\n      target_matchers: [severity=warning]\n",
        "alerts.inhibit_rules[0].source_matchers[0]",
        "name=value",
    );
}

#[test]
fn a_shared_threshold_is_set_in_one_place() {
    // The finding and the alert move together with the rule's threshold.
    let c = load(
        "alerts:\n  rules:\n    etcdDatabaseQuotaLowSpace:\n      threshold: 90\n    etcdLeaderChangesPerHour:\n      threshold: 5\n",
    )
    .unwrap();
    let t = etcd_monitor::run::health_thresholds(&c);
    assert_eq!(t.db_quota_critical_percent, 90.0);
    assert!(
        t.leader_changes
            .iter()
            .any(|l| l.max == 5.0 && !l.inclusive)
    );
    assert_eq!(t.fragmentation_ratio, 0.5);
    // The old second place is an error naming the one to use.
    assert_error(
        "monitoring:\n  thresholds:\n    fragmentation_ratio: 0.4\n",
        "monitoring.thresholds.fragmentation_ratio",
        "alerts.rules.etcdDatabaseHighFragmentationRatio.threshold",
    );
    assert_error(
        "monitoring:\n  thresholds:\n    max_leader_changes_per_hour: 5\n",
        "monitoring.thresholds.max_leader_changes_per_hour",
        "alerts.rules.etcdLeaderChangesPerHour.threshold",
    );
}
