//! `etcd-monitor demo`: a local etcd cluster from the test kit with the
//! monitor running against it. Ctrl-C stops everything; no etcd process is
//! left behind (the members are bound to this process) and the demo's
//! history lives in the cluster's temporary directory.

use crate::cmd::cli::DemoArgs;
use etcd_monitor::config::Config;
use etcd_monitor::lifecycle::Lifecycle;

/// The demo needs the test kit, which starts members as Unix processes; the
/// release binary leaves it out unless built with the `demo` feature.
#[cfg(not(all(unix, feature = "demo")))]
pub async fn run(_config: Config, _args: DemoArgs, _lifecycle: Lifecycle) -> anyhow::Result<()> {
    if cfg!(unix) {
        anyhow::bail!(
            "this etcd-monitor was built without the demo (it links the test kit): run `make demo`, or `cargo run -p etcd-monitor --features demo -- demo`"
        )
    }
    anyhow::bail!(
        "etcd-monitor demo starts etcd members as Unix processes; run it on Linux or macOS, or point `run` at an existing cluster"
    )
}

/// Starts the cluster and the monitor, prints how to reach them and waits
/// for Ctrl-C or SIGTERM.
#[cfg(all(unix, feature = "demo"))]
pub async fn run(mut config: Config, args: DemoArgs, lifecycle: Lifecycle) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

    use etcd_testkit::{ClusterOptions, EtcdCluster};

    use etcd_monitor::config::ClusterConfig;

    let members = usize::from(args.members);
    let started = Instant::now();
    let cluster = EtcdCluster::start(ClusterOptions::new(members))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the demo etcd cluster: {e}"))?;
    let endpoints = cluster.endpoints().join(",");
    say(format_args!(
        "etcd demo cluster of {members} member(s) ready in {} ms (data in {})",
        started.elapsed().as_millis(),
        cluster.dir().display()
    ));
    for m in cluster.members() {
        say(format_args!(
            "  {name}  id {id:016x}  pid {pid}  client {client}  metrics {metrics}  log {log}",
            name = m.name,
            id = m.id,
            pid = m.pid.unwrap_or(0),
            client = m.client_url,
            metrics = m.metrics_url,
            log = m.log_file.display()
        ));
    }
    say(format_args!("endpoints: {endpoints}"));
    say(format_args!(
        "try:       etcd-monitor status --endpoints {endpoints}"
    ));

    // The monitor watches the demo cluster, with short intervals so changes show quickly.
    config.clusters = vec![ClusterConfig {
        name: "demo".into(),
        endpoints: cluster.endpoints(),
        ..ClusterConfig::default()
    }];
    config.monitoring.health_check_interval = Duration::from_secs(2);
    config.monitoring.metrics_interval = Duration::from_secs(5);
    config.storage.url = format!("sqlite://{}", cluster.dir().join("history.db").display());
    if let Some(port) = args.api_port {
        if let Ok(mut addr) = config.api.listen.parse::<std::net::SocketAddr>() {
            addr.set_port(port);
            config.api.listen = addr.to_string();
        }
    }
    let daemon = etcd_monitor::run::start(&config, &lifecycle).await?;
    let addr = match etcd_monitor::run::serve_api(&config, &daemon, &lifecycle).await {
        Ok(addr) => addr,
        // The default port is taken (another demo?): any free port will do.
        Err(e) if args.api_port.is_none() => {
            say(format_args!("note:      {e:#}; using a free port instead"));
            config.api.listen = "127.0.0.1:0".into();
            etcd_monitor::run::serve_api(&config, &daemon, &lifecycle).await?
        }
        Err(e) => return Err(e),
    };
    say(format_args!(
        "monitor:   watching cluster \"demo\" every 2s, history in {}",
        config.storage.url
    ));
    say(format_args!("dashboard: http://{addr}/"));
    say(format_args!(
        "api:       http://{addr}/api/v1/clusters   metrics: http://{addr}/metrics"
    ));
    say(format_args!("Ctrl-C stops the monitor and the cluster."));
    lifecycle.wait_for_signal().await;
    etcd_monitor::run::shutdown(&daemon.monitor, &lifecycle).await;
    drop(cluster);
    say(format_args!("demo cluster stopped"));
    Ok(())
}

#[cfg(all(unix, feature = "demo"))]
/// Prints a line, ignoring a closed stdout (the demo's output may be piped
/// into a program that has gone away; that must not stop the shutdown).
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}
