//! Kubernetes objects from deploy/ (plain manifests, the kubeadm example, the
//! rendered Helm chart) checked three ways: against the API's schemas
//! (kubernetes-validate for built-in kinds, the Prometheus operator's types for
//! ServiceMonitor and PrometheusRule), against each other (selectors, ports,
//! secret keys, mounts), and by the monitor itself: the pod's files are laid
//! out as the kubelet would mount them and `etcd-monitor config check` reads
//! the configuration from there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::root;

/// The YAML documents of `text` (empty ones and comments-only ones dropped).
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("valid YAML");
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A program installed by `make deploy-tools` into the virtualenv.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = root().join("target/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `make deploy-tools` installs it",
        path.display()
    );
    path
}

/// Runs `cmd`: whether it succeeded, and its stdout and stderr together.
pub fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn is_operator_kind(o: &Value) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Validates every object against its schema: built-in kinds with
/// `kubernetes-validate --strict` (unknown fields are errors), the Prometheus
/// operator's kinds with its generated types (tests/deploy). Returns the
/// problems, one line each (empty: all valid).
pub fn schema_problems(objects: &[Value]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (operator, builtin): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| is_operator_kind(o));
    let mut problems = Vec::new();
    if !builtin.is_empty() {
        let mut files = Vec::new();
        for (i, o) in builtin.iter().enumerate() {
            let f = dir.path().join(format!("{i:02}.yaml"));
            std::fs::write(&f, serde_yaml_ng::to_string(o).unwrap()).unwrap();
            files.push(f);
        }
        let (ok, text) = output(
            Command::new(venv_tool("kubernetes-validate"))
                .arg("--strict")
                .args(&files),
        );
        let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
        if !ok || passed != builtin.len() {
            problems.push(format!(
                "kubernetes-validate: {passed} of {} passed:\n{text}",
                builtin.len()
            ));
        }
    }
    if !operator.is_empty() {
        let mut child = Command::new("node")
            .arg("validate-crds.mjs")
            .current_dir(root().join("tests/deploy"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (installed by make test)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_string(&operator).unwrap().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = text.lines().filter(|l| l.starts_with("ok ")).count();
        if !out.status.success() || passed != operator.len() {
            problems.push(format!(
                "Prometheus-operator types: {passed} of {} passed:\n{text}",
                operator.len()
            ));
        }
    }
    problems
}

pub fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}: {found:?}");
    found[0]
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The contents of the Secrets the pod reads, by Secret name and key. Secrets
/// among the objects give their keys (the empty placeholders filled by
/// `fill`); `external` adds Secrets the chart only names (existingSecret).
pub fn secrets(
    objects: &[Value],
    external: &[(&str, &[&str])],
    fill: &dyn Fn(&str) -> String,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in objects.iter().filter(|o| o["kind"] == "Secret") {
        let data = s["stringData"].as_object().cloned().unwrap_or_default();
        out.insert(
            s["metadata"]["name"].as_str().unwrap().to_string(),
            data.iter()
                .map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    (
                        k.clone(),
                        if v.is_empty() { fill(k) } else { v.to_string() },
                    )
                })
                .collect(),
        );
    }
    for (name, keys) in external {
        out.insert(
            name.to_string(),
            keys.iter().map(|k| (k.to_string(), fill(k))).collect(),
        );
    }
    out
}

/// What the monitor made of the pod's configuration: `config check`'s
/// effective configuration (secrets redacted).
pub struct Checked {
    pub effective: Value,
}

/// Lays the Deployment's pod out under a temporary root as the kubelet would
/// mount it (ConfigMap keys, Secret items, volumes) with the environment it
/// would get, then runs `etcd-monitor config check` on the file its `--config`
/// names. Every path the configuration names inside a mount is moved under
/// the root. Panics naming what does not fit (a missing key, claim or file).
pub fn check_pod_config(
    objects: &[Value],
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> Checked {
    let deployment = the(objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let fs = tempfile::tempdir().unwrap();
    let at = |p: &str| fs.path().join(p.trim_start_matches('/'));
    let volumes = pod["volumes"].as_array().unwrap();
    let mut mounts: Vec<String> = Vec::new();
    for m in container["volumeMounts"].as_array().unwrap() {
        let path = m["mountPath"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("volumeMount {} has no volume", m["name"]));
        let files: BTreeMap<String, String> = if let Some(cm) = v.get("configMap") {
            let name = cm["name"].as_str().unwrap();
            let cm = find(objects, "ConfigMap", name)
                .unwrap_or_else(|| panic!("ConfigMap {name} is not among the objects"));
            cm["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        } else if let Some(s) = v.get("secret") {
            let name = s["secretName"].as_str().unwrap();
            let data = secrets
                .get(name)
                .unwrap_or_else(|| panic!("Secret {name} (volume {}) is unknown", v["name"]));
            match s["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap();
                        let value = data
                            .get(key)
                            .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
                        (i["path"].as_str().unwrap().to_string(), value.clone())
                    })
                    .collect(),
                None => data.clone(),
            }
        } else if let Some(claim) = v.get("persistentVolumeClaim") {
            let name = claim["claimName"].as_str().unwrap();
            assert!(
                find(objects, "PersistentVolumeClaim", name).is_some(),
                "PersistentVolumeClaim {name} is not among the objects"
            );
            BTreeMap::new()
        } else {
            assert!(v.get("emptyDir").is_some(), "unexpected volume {v}");
            BTreeMap::new()
        };
        match m.get("subPath").and_then(Value::as_str) {
            Some(sub) => {
                let content = files
                    .get(sub)
                    .unwrap_or_else(|| panic!("subPath {sub} is not in volume {}", v["name"]));
                std::fs::create_dir_all(at(path).parent().unwrap()).unwrap();
                std::fs::write(at(path), content).unwrap();
            }
            None => {
                std::fs::create_dir_all(at(path)).unwrap();
                for (file, content) in &files {
                    let f = at(path).join(file);
                    std::fs::write(&f, content).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
                }
            }
        }
        mounts.push(path.to_string());
    }
    // Longest first, so /etc/etcd-monitor/tokens moves before /etc/etcd-monitor.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let relocate = |text: &str| {
        mounts.iter().fold(text.to_string(), |t, m| {
            t.replace(m.as_str(), &at(m).display().to_string())
        })
    };
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("the container names its --config");
    let config_file = at(config);
    let text = std::fs::read_to_string(&config_file)
        .unwrap_or_else(|e| panic!("--config {config} is not mounted: {e}"));
    std::fs::write(&config_file, relocate(&text)).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.args(["config", "check"]).arg(&config_file);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ETCD_MONITOR_")) {
        cmd.env_remove(k);
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        if let Some(v) = e["value"].as_str() {
            cmd.env(name, relocate(v));
        } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
            let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            match secrets.get(secret).and_then(|s| s.get(key)) {
                Some(v) => {
                    cmd.env(name, v);
                }
                None => assert!(
                    r["optional"] == true,
                    "env {name}: Secret {secret} has no key {key}"
                ),
            }
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "config check of the pod's configuration failed:\n{stderr}\n{stdout}\n--- the file:\n{text}"
    );
    Checked {
        effective: serde_yaml_ng::from_str(&stdout).unwrap(),
    }
}

/// The objects fit together as the monitor's deployment needs: one pod
/// template that is locked down and probed, and every selector, port name and
/// Secret key that refers to it or to its configuration resolves.
pub fn check_objects_fit(objects: &[Value], checked: &Checked) {
    let deployment = the(objects, "Deployment");
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    let pod = &template["spec"];
    let c = &pod["containers"][0];
    assert!(
        selects(&deployment["spec"]["selector"]["matchLabels"], labels),
        "the Deployment selects its own pods"
    );
    // Locked down: non-root, read-only root, no privileges, no API token.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let sa = pod["serviceAccountName"].as_str().unwrap();
    assert!(
        find(objects, "ServiceAccount", sa).is_some(),
        "ServiceAccount {sa}"
    );
    // Probed on the monitor's own endpoints, at its port.
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"], 8080);
    let listen = checked.effective["api"]["listen"].as_str().unwrap();
    assert!(
        listen.ends_with(":8080"),
        "api.listen {listen} is the container port"
    );
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port["name"], "{probe}");
    }
    for r in ["requests.cpu", "requests.memory", "limits.memory"] {
        let (a, b) = r.split_once('.').unwrap();
        assert!(c["resources"][a][b].is_string(), "resources.{r}");
    }
    // Every path the monitor writes is a volume, not the read-only root.
    let data = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/var/lib/etcd-monitor" && m["readOnly"] != true);
    assert!(data, "/var/lib/etcd-monitor is a writable volume");
    let snapshot_dir = checked.effective["api"]["snapshot_dir"].as_str().unwrap();
    assert!(
        snapshot_dir.contains("/var/lib/etcd-monitor"),
        "{snapshot_dir}"
    );
    let storage = checked.effective["storage"]["url"].as_str().unwrap();
    assert!(
        storage.starts_with("postgres") || storage.contains("/var/lib/etcd-monitor/"),
        "the history is in the volume or PostgreSQL: {storage}"
    );

    let service = the(objects, "Service");
    assert!(
        selects(&service["spec"]["selector"], labels),
        "the Service selects the pods"
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    if let Some(pdb) = objects.iter().find(|o| o["kind"] == "PodDisruptionBudget") {
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"], labels),
            "{}",
            id(pdb)
        );
    }
    if let Some(np) = objects.iter().find(|o| o["kind"] == "NetworkPolicy") {
        assert!(
            selects(&np["spec"]["podSelector"]["matchLabels"], labels),
            "{}",
            id(np)
        );
        let open = np["spec"]["ingress"].as_array().unwrap().iter().any(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == 8080)
        });
        assert!(open, "the NetworkPolicy lets clients reach the API");
    }
    if let Some(sm) = objects.iter().find(|o| o["kind"] == "ServiceMonitor") {
        assert!(
            selects(
                &sm["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"]
            ),
            "the ServiceMonitor selects the Service"
        );
        let ep = &sm["spec"]["endpoints"][0];
        assert_eq!(ep["port"], service["spec"]["ports"][0]["name"]);
        assert_eq!(ep["path"], "/metrics");
        let auth = &checked.effective["api"]["auth"];
        match ep.get("authorization") {
            Some(a) => {
                // Prometheus sends the token the monitor reads as a viewer's.
                let key = a["credentials"]["key"].as_str().unwrap();
                let token = auth["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == key)
                    .unwrap_or_else(|| panic!("no api.auth.tokens entry named {key}"));
                assert_eq!(token["role"], "viewer");
                let secret = a["credentials"]["name"].as_str().unwrap();
                let tokens_volume = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| {
                        v["secret"]["items"]
                            .as_array()
                            .is_some_and(|i| i.iter().any(|i| i["key"] == key))
                    })
                    .expect("a volume mounts the token");
                assert_eq!(tokens_volume["secret"]["secretName"], secret);
            }
            None => assert_eq!(auth["public_metrics"], true, "/metrics needs no token"),
        }
    }
    if let Some(rule) = objects.iter().find(|o| o["kind"] == "PrometheusRule") {
        let file: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(root().join("deploy/prometheus/rules.yaml")).unwrap(),
        )
        .unwrap();
        assert!(
            rule["spec"] == file,
            "the PrometheusRule holds deploy/prometheus/rules.yaml"
        );
    }
    let namespaces: std::collections::BTreeSet<_> = objects
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .map(|o| o["metadata"]["namespace"].to_string())
        .collect();
    assert_eq!(namespaces.len(), 1, "one namespace for all: {namespaces:?}");
}
