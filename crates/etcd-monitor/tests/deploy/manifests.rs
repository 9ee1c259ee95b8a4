//! deploy/kubernetes and deploy/helm: schemas, fit, and the monitor's own
//! reading of the configuration each pod would see. The PrometheusRule
//! objects are generated from deploy/prometheus/rules.yaml here:
//! `UPDATE_DEPLOY=1 cargo test -p etcd-monitor --test deploy generated` rewrites them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::kube::{self, documents, yaml_files};
use super::{helm, root};

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn objects_in(files: &[PathBuf]) -> Vec<Value> {
    files.iter().flat_map(|f| documents(&read(f))).collect()
}

/// Secret values as a filled-in Secret would hold them: real PEM files for
/// the TLS keys, random tokens for the rest, a URL for PostgreSQL.
fn fill(pem: &tempfile::TempDir) -> impl Fn(&str) -> String + '_ {
    let tls = etcd_testkit::TlsFiles::generate(pem.path()).unwrap();
    move |key: &str| match key {
        "ca.crt" => std::fs::read_to_string(&tls.ca_file).unwrap(),
        "tls.crt" => std::fs::read_to_string(&tls.client_cert_file).unwrap(),
        "tls.key" => std::fs::read_to_string(&tls.client_key_file).unwrap(),
        "url" | "storage-url" => "postgres://monitor:pw@postgres.db.svc/etcd_monitor".into(),
        _ => format!("emt_{:032x}", rand::random::<u128>()),
    }
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_kubernetes_manifests_are_valid_and_fit_together() {
    let dir = root().join("deploy/kubernetes");
    let objects = objects_in(&yaml_files(&dir));
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Secret",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
        .map(String::from)
        .into()
    );
    let problems = kube::schema_problems(&objects);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Both validators are live: an unknown Deployment field and a malformed
    // scrape interval are refused.
    let mut bad_deployment = kube::the(&objects, "Deployment").clone();
    bad_deployment["spec"]["replica"] = json!(1);
    let mut bad_monitor = kube::the(&objects, "ServiceMonitor").clone();
    bad_monitor["spec"]["endpoints"][0]["interval"] = json!("often");
    let problems = kube::schema_problems(&[bad_deployment, bad_monitor]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("replica"), "{}", problems[0]);
    assert!(problems[1].contains("interval"), "{}", problems[1]);

    // The Secret ships without values: nobody runs with a published token.
    let secret = kube::the(&objects, "Secret");
    for (key, value) in secret["stringData"].as_object().unwrap() {
        assert_eq!(value, "", "secret.yaml: {key} is empty until filled in");
    }
    let pem = tempfile::tempdir().unwrap();
    let secrets = kube::secrets(&objects, &[], &fill(&pem));
    let checked = kube::check_pod_config(&objects, &secrets);
    kube::check_objects_fit(&objects, &checked);
    let names: Vec<&str> = checked.effective["api"]["auth"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prometheus", "admin"]);

    // The kubeadm example: its ConfigMap in place of the plain one.
    let kubeadm = objects_in(&yaml_files(&dir.join("kubeadm")));
    assert_eq!(kinds(&kubeadm), ["ConfigMap".to_string()].into());
    let objects: Vec<Value> = objects
        .into_iter()
        .filter(|o| o["kind"] != "ConfigMap")
        .chain(kubeadm)
        .collect();
    let problems = kube::schema_problems(&objects);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let checked = kube::check_pod_config(&objects, &secrets);
    kube::check_objects_fit(&objects, &checked);
    let cluster = &checked.effective["clusters"][0];
    assert_eq!(cluster["name"], "kubernetes");
    assert!(
        cluster["tls"]["cert_file"]
            .as_str()
            .unwrap()
            .ends_with("/etc/etcd-monitor/etcd-tls/tls.crt")
    );
}

fn chart() -> PathBuf {
    root().join("deploy/helm/etcd-monitor")
}

fn render(values: &Value) -> Vec<Value> {
    let text = helm::render(&chart(), "monitor", "observability", values)
        .unwrap_or_else(|e| panic!("rendering the chart: {e}"));
    assert!(
        !text.contains("<no value>"),
        "a template reads a value the chart does not define:\n{text}"
    );
    documents(&text)
}

#[test]
fn the_helm_chart_renders_the_same_objects_for_two_value_sets() {
    let pem = tempfile::tempdir().unwrap();
    let fill = fill(&pem);

    // Required values are named when missing.
    let err = helm::render(&chart(), "monitor", "observability", &json!({})).unwrap_err();
    assert!(err.contains("auth.existingSecret"), "{err}");

    // 1. The defaults with the Secrets they need: SQLite on a volume, client
    //    TLS, tokens, NetworkPolicy and PodDisruptionBudget, no operator objects.
    let sqlite = render(&json!({
        "auth": { "existingSecret": "monitor-tokens" },
        "etcdTLS": { "existingSecret": "etcd-client-tls" },
    }));
    let sqlite_kinds = kinds(&sqlite);
    assert_eq!(
        sqlite_kinds,
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into()
    );
    let problems = kube::schema_problems(&sqlite);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let secrets = kube::secrets(
        &sqlite,
        &[
            ("monitor-tokens", &["prometheus", "admin"]),
            ("etcd-client-tls", &["ca.crt", "tls.crt", "tls.key"]),
        ],
        &fill,
    );
    let checked = kube::check_pod_config(&sqlite, &secrets);
    kube::check_objects_fit(&sqlite, &checked);
    assert!(
        checked.effective["storage"]["url"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
    assert_eq!(checked.effective["clusters"][0]["name"], "main");

    // 2. PostgreSQL from a Secret, two clusters without TLS, anonymous
    //    viewers, the operator's objects, an Alertmanager channel.
    let postgres = render(&json!({
        "clusters": [
            { "name": "a", "endpoints": ["http://etcd-a.etcd.svc:2379"] },
            { "name": "b", "endpoints": ["http://etcd-b.etcd.svc:2379"], "require_leader": false },
        ],
        "auth": {
            "existingSecret": "monitor-tokens",
            "anonymousRole": "viewer",
            "allowedHosts": ["monitor.example.com"],
        },
        "storage": { "type": "postgres", "postgres": { "existingSecret": "monitor-pg" } },
        "alerts": { "channels": [
            { "name": "log", "type": "console" },
            { "name": "am", "type": "alertmanager", "url": "http://alertmanager.monitoring.svc:9093" },
        ]},
        "config": { "monitoring": { "health_check_interval": "5s" }, "logging": { "format": "text" } },
        "extraEnv": [{ "name": "RUST_BACKTRACE", "value": "1" }],
        "serviceMonitor": { "enabled": true, "labels": { "release": "kube-prometheus" } },
        "prometheusRule": { "enabled": true },
        "networkPolicy": { "enabled": false },
        "podDisruptionBudget": { "enabled": false },
        "nodeSelector": { "kubernetes.io/os": "linux" },
    }));
    let postgres_kinds = kinds(&postgres);
    assert_eq!(
        postgres_kinds,
        [
            "ConfigMap",
            "Deployment",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
        .map(String::from)
        .into()
    );
    let problems = kube::schema_problems(&postgres);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let secrets = kube::secrets(
        &postgres,
        &[
            ("monitor-tokens", &["prometheus", "admin"]),
            ("monitor-pg", &["url"]),
        ],
        &fill,
    );
    let checked = kube::check_pod_config(&postgres, &secrets);
    kube::check_objects_fit(&postgres, &checked);
    let e = &checked.effective;
    assert!(
        e["storage"]["url"]
            .as_str()
            .unwrap()
            .starts_with("postgres://"),
        "{}",
        e["storage"]
    );
    assert_eq!(e["clusters"][1]["name"], "b");
    assert_eq!(e["clusters"][1]["require_leader"], false);
    assert_eq!(e["monitoring"]["health_check_interval"], "5s");
    assert_eq!(e["api"]["auth"]["anonymous_role"], "viewer");
    let hosts = e["api"]["allowed_hosts"].as_array().unwrap();
    assert!(
        hosts.contains(&json!("monitor.example.com"))
            && hosts.contains(&json!("monitor.observability.svc"))
    );
    let sm = kube::the(&postgres, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");

    // The example values in docs/deploy.md render and check too.
    let doc = read(&root().join("docs/deploy.md"));
    let example = doc
        .split("```yaml\n# my-values.yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/deploy.md has the my-values.yaml example");
    let example: Value = serde_yaml_ng::from_str(example).unwrap();
    let objects = render(&example);
    let problems = kube::schema_problems(&objects);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let secrets = kube::secrets(
        &objects,
        &[
            ("etcd-monitor-tokens", &["prometheus", "admin"]),
            ("etcd-client-tls", &["ca.crt", "tls.crt", "tls.key"]),
            ("pagerduty", &["routing-key"]),
        ],
        &fill,
    );
    let checked = kube::check_pod_config(&objects, &secrets);
    kube::check_objects_fit(&objects, &checked);
    assert_eq!(
        checked.effective["alerts"]["channels"][0]["type"],
        "pagerduty"
    );

    // The same objects as the plain manifests (the chart takes existing
    // Secrets and leaves the namespace to `helm install -n`).
    let manifests = kinds(&objects_in(&yaml_files(&root().join("deploy/kubernetes"))));
    let chart_kinds: BTreeSet<String> = sqlite_kinds.union(&postgres_kinds).cloned().collect();
    let expected: BTreeSet<String> = manifests
        .into_iter()
        .filter(|k| k != "Namespace" && k != "Secret")
        .collect();
    assert_eq!(chart_kinds, expected);
}

/// The generated files: the Prometheus operator's PrometheusRule holding
/// deploy/prometheus/rules.yaml, as a plain manifest and as a chart template
/// (where `{{` of the annotations is escaped from Helm's own templating).
fn generated() -> Vec<(PathBuf, String)> {
    let rules = read(&root().join("deploy/prometheus/rules.yaml"));
    let body: String = rules
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("  {l}\n"))
        .collect();
    let header = "# Generated from deploy/prometheus/rules.yaml (the monitor's built-in rules) by\n\
                  # crates/etcd-monitor/tests/deploy: do not edit. Let Prometheus page with these\n\
                  # or the monitor with its channels, not both (docs/deploy.md).\n";
    let manifest = format!(
        "{header}apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: etcd-monitor\n  namespace: etcd-monitor\n  labels:\n    app.kubernetes.io/name: etcd-monitor\n    app.kubernetes.io/component: monitor\nspec:\n{body}"
    );
    let template = format!(
        "{{{{- if .Values.prometheusRule.enabled }}}}\n{header}apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: {{{{ .Release.Name }}}}\n  namespace: {{{{ .Release.Namespace }}}}\n  labels:{{{{ template \"etcd-monitor.labels\" . }}}}\n    {{{{- with .Values.prometheusRule.labels }}}}\n    {{{{- toYaml . | nindent 4 }}}}\n    {{{{- end }}}}\nspec:\n{}{{{{- end }}}}\n",
        body.replace("{{", "{{ \"{{\" }}")
    );
    vec![
        (
            root().join("deploy/kubernetes/prometheusrule.yaml"),
            manifest,
        ),
        (chart().join("templates/prometheusrule.yaml"), template),
    ]
}

#[test]
fn the_generated_prometheus_rule_objects_hold_the_rule_file() {
    let update = std::env::var_os("UPDATE_DEPLOY").is_some();
    for (path, text) in generated() {
        if update {
            std::fs::write(&path, &text).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path).is_ok_and(|t| t == text),
            "{} is not the rule file's: UPDATE_DEPLOY=1 cargo test -p etcd-monitor --test deploy generated",
            path.display()
        );
    }
}
