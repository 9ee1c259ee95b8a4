//! A throwaway member restored from a snapshot file: `etcdutl snapshot
//! restore` (or etcd 3.4's `etcdctl snapshot restore`) into a private
//! temporary directory, then etcd started on free loopback ports. It serves
//! the snapshot's keys at their revisions, so anything that reads a live
//! cluster (a keyspace scan, a key count, hashkv) reads the snapshot with
//! etcd's own numbers. Dropping it kills the member and removes its data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::CtlError;

/// A running single-member etcd restored from a snapshot.
#[derive(Debug)]
pub struct ThrowawayMember {
    child: Child,
    dir: tempfile::TempDir,
    client_url: String,
}

/// How long the restored member may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `etcd` from `$ETCD_BIN`, else from `PATH`.
pub fn etcd_binary() -> Result<PathBuf, CtlError> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Ok(PathBuf::from(p));
    }
    in_path("etcd").ok_or_else(|| {
        CtlError::Invalid(
            "no etcd binary to restore the snapshot into: install etcd or set ETCD_BIN".into(),
        )
    })
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The restore command: `etcdutl` beside the etcd binary or in `PATH`
/// (etcd 3.5+), else `etcdctl` beside it or in `PATH` (etcd 3.4).
fn restore_tool(etcd: &Path) -> Result<(PathBuf, bool), CtlError> {
    let beside = |name: &str| etcd.parent().map(|d| d.join(name)).filter(|p| p.is_file());
    if let Some(p) = beside("etcdutl").or_else(|| in_path("etcdutl")) {
        return Ok((p, true));
    }
    if let Some(p) = beside("etcdctl").or_else(|| in_path("etcdctl")) {
        return Ok((p, false));
    }
    Err(CtlError::Invalid(
        "neither etcdutl nor etcdctl found to restore the snapshot: install etcd's client tools"
            .into(),
    ))
}

fn free_port() -> Result<u16, CtlError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| CtlError::Io {
            what: "finding a free loopback port",
            path: "127.0.0.1".into(),
            source,
        })
}

impl ThrowawayMember {
    /// Restores `snapshot` and starts a member on it; waits until it answers.
    pub async fn from_snapshot(snapshot: &Path) -> Result<Self, CtlError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| CtlError::Io { what, path, source }
        };
        std::fs::metadata(snapshot).map_err(io("reading the snapshot", snapshot))?;
        let etcd = etcd_binary()?;
        // The snapshot holds every key: a private directory (0700).
        let dir = tempfile::Builder::new()
            .prefix("etcd-monitor-restore-")
            .tempdir()
            .map_err(io("creating a temporary directory", Path::new("/tmp")))?;
        let data = dir.path().join("data");
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let cluster = format!("restore={peer_url}");
        restore_into(
            snapshot,
            &data,
            &RestoreMember {
                name: "restore".into(),
                initial_cluster: cluster.clone(),
                initial_advertise_peer_urls: peer_url.clone(),
                initial_cluster_token: None,
            },
        )?;
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(io("creating", &dir.path().join("etcd.log")))?;
        let child = Command::new(&etcd)
            .args(["--name", "restore", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("starting", &etcd))?;
        let mut member = ThrowawayMember {
            child,
            dir,
            client_url,
        };
        member.wait_until_serving().await?;
        Ok(member)
    }

    async fn wait_until_serving(&mut self) -> Result<(), CtlError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(CtlError::Invalid(format!(
                    "the restored member exited ({status}): {}",
                    self.log_tail()
                )));
            }
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2));
            if let Ok(mut c) = etcd_client::Client::connect([&self.client_url], Some(opts)).await {
                if c.get("health-probe", None).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(CtlError::Invalid(format!(
                    "the restored member did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        text.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    }

    /// The member's client URL (plain HTTP on loopback).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }
}

impl Drop for ThrowawayMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The temporary directory (the restored keys) goes with `dir`.
    }
}

/// What `etcdutl snapshot status` reads from a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct SnapshotStatus {
    /// The database's revision.
    pub revision: i64,
    /// Keys in the database, every revision of each counted.
    #[serde(rename = "totalKey")]
    pub total_keys: i64,
    /// The database's size in bytes.
    #[serde(rename = "totalSize")]
    pub total_size: i64,
}

/// Reads a snapshot file's revision with `etcdutl snapshot status` (or
/// etcd 3.4's `etcdctl`), beside `$ETCD_BIN` or in `PATH`.
pub fn snapshot_status(snapshot: &Path) -> Result<SnapshotStatus, CtlError> {
    let etcd = etcd_binary().ok();
    let (tool, etcdutl) = restore_tool(etcd.as_deref().unwrap_or(Path::new("")))?;
    let out = Command::new(&tool)
        .args(["snapshot", "status", "-w", "json"])
        .arg(snapshot)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CtlError::Io {
            what: "running",
            path: tool.display().to_string(),
            source,
        })?;
    let name = if etcdutl { "etcdutl" } else { "etcdctl" };
    if !out.status.success() {
        return Err(tool_failed(name, "status", snapshot, &out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        CtlError::Invalid(format!(
            "{name} snapshot status {}: unexpected answer ({e})",
            snapshot.display()
        ))
    })
}

/// The member a snapshot is restored as (`etcdutl snapshot restore`'s
/// `--name`, `--initial-cluster`, ...).
#[derive(Debug, Clone)]
pub struct RestoreMember {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: Option<String>,
}

/// Restores `snapshot` into `data_dir` (which must not exist) with
/// `etcdutl snapshot restore` (etcd 3.4: `etcdctl`), beside `$ETCD_BIN` or
/// in `PATH`. etcd's tool checks the snapshot's trailing sha256.
pub fn restore_into(
    snapshot: &Path,
    data_dir: &Path,
    member: &RestoreMember,
) -> Result<(), CtlError> {
    let etcd = etcd_binary().ok();
    let (tool, etcdutl) = restore_tool(etcd.as_deref().unwrap_or(Path::new("")))?;
    let mut cmd = Command::new(&tool);
    cmd.args(["snapshot", "restore"])
        .arg(snapshot)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", &member.name])
        .args(["--initial-cluster", &member.initial_cluster])
        .args([
            "--initial-advertise-peer-urls",
            &member.initial_advertise_peer_urls,
        ]);
    if let Some(t) = &member.initial_cluster_token {
        cmd.args(["--initial-cluster-token", t]);
    }
    let out = cmd
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CtlError::Io {
            what: "running",
            path: tool.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let name = if etcdutl { "etcdutl" } else { "etcdctl" };
        return Err(tool_failed(name, "restore", snapshot, &out.stderr));
    }
    Ok(())
}

/// `TOOL snapshot VERB FILE failed: ` and the last line the tool printed.
fn tool_failed(tool: &str, verb: &str, snapshot: &Path, stderr: &[u8]) -> CtlError {
    let stderr = String::from_utf8_lossy(stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    CtlError::Invalid(format!(
        "{tool} snapshot {verb} {} failed: {last}",
        snapshot.display()
    ))
}
