//! `etcd-monitor demo`: a local etcd cluster from the test kit to try the
//! monitor on. Ctrl-C stops everything; no etcd process is left behind (the
//! members are bound to this process).

use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};

use crate::lifecycle::Lifecycle;

/// Starts a `members`-member cluster, prints how to reach it and waits for
/// Ctrl-C or SIGTERM.
pub async fn run(members: usize, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = EtcdCluster::start(ClusterOptions::new(members))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the demo etcd cluster: {e}"))?;
    let endpoints = cluster.endpoints().join(",");
    println!(
        "etcd demo cluster of {members} member(s) ready in {} ms (data in {})",
        started.elapsed().as_millis(),
        cluster.dir().display()
    );
    for m in cluster.members() {
        println!(
            "  {name}  id {id:016x}  pid {pid}  client {client}  metrics {metrics}  log {log}",
            name = m.name,
            id = m.id,
            pid = m.pid.unwrap_or(0),
            client = m.client_url,
            metrics = m.metrics_url,
            log = m.log_file.display()
        );
    }
    println!("endpoints: {endpoints}");
    println!("try:       etcdctl --endpoints={endpoints} endpoint status -w table");
    println!("Ctrl-C stops the cluster.");
    lifecycle.wait_for_signal().await;
    drop(cluster);
    lifecycle.drain(Duration::from_secs(5)).await;
    say(format_args!("demo cluster stopped"));
    Ok(())
}

/// Prints a line, ignoring a closed stdout (the demo's output may be piped
/// into a program that has gone away; that must not stop the shutdown).
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}
