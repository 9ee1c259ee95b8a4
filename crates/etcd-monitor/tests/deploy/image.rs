//! The container image: the Dockerfile passes hadolint and builds what `make
//! build` builds; the image's configuration runs as the image's non-root user
//! against a real member, and its HEALTHCHECK command tells up from down.
//! (No Docker daemon runs here: the image itself is not built in CI.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};

use super::kube::{output, venv_tool};
use super::{Kill, free_port, root};

fn hadolint(file: &Path) -> (bool, String) {
    output(
        Command::new(venv_tool("hadolint"))
            .arg("--no-color")
            .arg(file),
    )
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_what_make_build_builds() {
    let (ok, text) = hadolint(&root().join("Dockerfile"));
    assert!(ok, "hadolint Dockerfile:\n{text}");
    // The check is live: a Dockerfile with known mistakes fails it.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN cd /src && make\n").unwrap();
    let (ok, text) = hadolint(&bad);
    assert!(
        !ok && text.contains("DL3007") && text.contains("DL3003"),
        "{text}"
    );

    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    // The build stage runs `make binary`, which `make build` runs too: the
    // release binary of etcd-monitor alone, no features (so no test kit).
    assert!(dockerfile.contains("RUN make binary"), "{dockerfile}");
    assert!(
        makefile.contains("\nbuild: deps binary\n"),
        "make build runs make binary"
    );
    let recipe = makefile
        .split("\nbinary:\n")
        .nth(1)
        .and_then(|r| r.lines().next())
        .expect("a `binary` target");
    assert_eq!(
        recipe.trim(),
        "$(CARGO) build --release --locked -p etcd-monitor --bin etcd-monitor"
    );
    let manifest = std::fs::read_to_string(root().join("crates/etcd-monitor/Cargo.toml")).unwrap();
    assert!(manifest.contains("etcd-testkit = { workspace = true, optional = true }"));
    assert!(manifest.contains("demo = [\"dep:etcd-testkit\"]"));
    assert!(
        !manifest.contains("default = ["),
        "no default features pull the test kit in"
    );

    // The run stage: minimal base, non-root, one volume for everything the
    // monitor writes, health-checked, labelled.
    let run_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(run_stage.starts_with("gcr.io/distroless/"), "{run_stage}");
    for line in [
        "USER 65532:65532",
        "VOLUME [\"/var/lib/etcd-monitor\"]",
        "EXPOSE 8080",
        "COPY deploy/container/config.yaml /etc/etcd-monitor/config.yaml",
        "ENV ETCD_MONITOR_CONFIG=/etc/etcd-monitor/config.yaml",
        "CMD [\"/usr/local/bin/etcd-monitor\", \"healthcheck\"]",
        "org.opencontainers.image.title=",
        "org.opencontainers.image.version=",
        "org.opencontainers.image.revision=",
        "org.opencontainers.image.licenses=",
    ] {
        assert!(run_stage.contains(line), "the run stage has {line}");
    }
    assert!(run_stage.contains("HEALTHCHECK "));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "the build context leaves target/ out"
    );
}

/// Runs `etcd-monitor ARGS` as the image's user (65532) with `env`.
fn as_image_user(args: &[&str], env: &[(String, String)], dir: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65532",
        "--regid",
        "65532",
        "--clear-groups",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_etcd-monitor"))
    .args(args)
    .current_dir(dir)
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", dir)
    .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn healthcheck(extra: &[&str], env: &[(String, String)], dir: &Path) -> (bool, String) {
    let mut args = vec!["healthcheck"];
    args.extend_from_slice(extra);
    let out = as_image_user(&args, env, dir).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_configuration_runs_as_its_user_and_answers_its_healthcheck() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    // The data directory is the image's volume: owned by its user, 0700.
    let data = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(data.path(), Some(65532), Some(65532)).unwrap();
    let token = format!(
        "emt_{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let token_file = data.path().join("admin.token");
    std::fs::write(&token_file, &token).unwrap();
    std::os::unix::fs::chown(&token_file, Some(65532), Some(65532)).unwrap();
    let port = free_port();
    let d = data.path().display();
    // The image's own file, with what a deployment sets by environment: the
    // endpoints, and (for this test only) paths and port moved out of the
    // way, still listening on every interface.
    let env: Vec<(String, String)> = [
        (
            "ETCD_MONITOR_CONFIG",
            root()
                .join("deploy/container/config.yaml")
                .display()
                .to_string(),
        ),
        ("ETCD_MONITOR_ENDPOINTS", cluster.endpoints().join(",")),
        ("ETCD_MONITOR_API__LISTEN", format!("0.0.0.0:{port}")),
        ("ETCD_MONITOR_API__SNAPSHOT_DIR", format!("{d}/snapshots")),
        (
            "ETCD_MONITOR_API__AUTH__TOKENS__0__TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "ETCD_MONITOR_STORAGE__URL",
            format!("sqlite://{d}/etcd-monitor.db"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let log = std::fs::File::create(data.path().join("monitor.log")).unwrap();
    let monitor = Kill(
        as_image_user(&["run"], &env, data.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = monitor.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, err) = healthcheck(&["--ready"], &env, data.path());
        if ok {
            last.clear();
            break;
        }
        last = err;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log_text = || std::fs::read_to_string(data.path().join("monitor.log")).unwrap();
    assert!(last.is_empty(), "never ready: {last}\n{}", log_text());
    let (ok, err) = healthcheck(&[], &env, data.path());
    assert!(ok, "{err}");

    // It runs as the image's user, and wrote only into its volume.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65532"),
        "{uid}"
    );
    use std::os::unix::fs::MetadataExt;
    let db = std::fs::metadata(data.path().join("etcd-monitor.db")).unwrap();
    assert_eq!(db.uid(), 65532);

    // Off loopback it asks who is calling; the token from the file is admin.
    let api = format!("http://127.0.0.1:{port}/api/v1/clusters");
    let anonymous = reqwest::get(&api).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let who: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["role"], "admin", "{who}");
    // logging.format json: every log line is a JSON object.
    let text = log_text();
    let first = text.lines().next().expect("the monitor logged");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok_and(|v| v.is_object()),
        "{first}"
    );
    assert!(!text.contains(&token), "the token never reaches the log");

    drop(monitor);
    let (ok, err) = healthcheck(&[], &env, data.path());
    assert!(!ok && err.starts_with("unhealthy: "), "{err}");
    drop(cluster);
}
