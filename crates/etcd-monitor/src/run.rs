//! `etcd-monitor run`: open the history store, start the monitor, serve
//! until SIGINT/SIGTERM, then drain within a bound.

use std::time::Duration;

use anyhow::Context;

use crate::config::{self, Config};
use crate::lifecycle::Lifecycle;
use crate::monitor::Monitor;
use crate::store::{Store, redact_url};

/// How long shutdown waits for tasks to finish.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The running daemon: the monitor and its alert engine.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Collectors and their snapshots, and the history store.
    pub monitor: Monitor,
    /// The alert engine's handle.
    pub alerting: crate::alert::Alerting,
    /// One maintenance operation per cluster at a time, shared by the API
    /// and the defrag autopilot.
    pub maintenance: std::sync::Arc<crate::ops::gate::MaintenanceGate>,
}

/// Loads and checks the configuration as the program does: the schema's
/// checks ([`config::load`]) and those of the layers that own the rule table
/// and the benchmark grammar.
pub fn load_config(
    file: Option<&std::path::Path>,
    overrides: &config::Overrides,
) -> Result<Config, config::ConfigErrors> {
    config::load(
        file,
        overrides,
        &[
            crate::alert::config_problems,
            crate::benchmarks::config_problems,
            crate::monitor::defrag_autopilot::config_problems,
        ],
    )
}

/// The health checks' thresholds under `config`: `monitoring.thresholds`,
/// and the alert rules' for the conditions both judge.
pub fn health_thresholds(config: &Config) -> crate::health::Thresholds {
    crate::alert::rules::RuleSet::from_config(&config.alerts)
        .health_thresholds(&config.monitoring.thresholds)
}

/// Opens the store and starts monitoring and alerting on every configured cluster.
pub async fn start(config: &Config, lifecycle: &Lifecycle) -> anyhow::Result<Daemon> {
    let url = config.storage.connect_url().map_err(anyhow::Error::msg)?;
    let store = Store::open(&url).await.with_context(|| {
        format!(
            "cannot open the history store {}",
            redact_url(&config.storage.url)
        )
    })?;
    warn_plain_passwords(config);
    let thresholds = health_thresholds(config);
    let monitor = Monitor::start(config, &thresholds, store, lifecycle);
    crate::monitor::keyspace_schedule::start(config, &monitor, lifecycle);
    let maintenance = std::sync::Arc::new(crate::ops::gate::MaintenanceGate::default());
    crate::monitor::defrag_autopilot::start(config, &monitor, &maintenance, lifecycle);
    crate::monitor::backups::start(config, &monitor, &maintenance, lifecycle).await;
    let alerting = crate::alert::start(&config.alerts, &thresholds, &monitor, lifecycle);
    crate::monitor::ha::start(config, monitor.replicas(), lifecycle);
    for c in &config.clusters {
        tracing::info!(
            cluster = %c.name,
            endpoints = %c.endpoints.join(","),
            health_interval = %crate::config::duration::format(&config.monitoring.health_check_interval),
            metrics_interval = %crate::config::duration::format(&config.monitoring.metrics_interval),
            "monitoring cluster"
        );
    }
    Ok(Daemon {
        monitor,
        alerting,
        maintenance,
    })
}

/// What the API's handlers share, for `monitor` under `config`
/// (benchmark schedules start here).
pub fn app_state(config: &Config, daemon: &Daemon, lifecycle: &Lifecycle) -> crate::api::AppState {
    let monitor = &daemon.monitor;
    crate::api::AppState {
        monitor: monitor.clone(),
        alerting: daemon.alerting.clone(),
        config: std::sync::Arc::new(config.clone()),
        started: std::time::Instant::now(),
        started_at: std::time::SystemTime::now(),
        firing_cache: Default::default(),
        bench_runs: {
            let runs = crate::benchmarks::BenchRuns::new(
                monitor.store().clone(),
                lifecycle.clone(),
                config.benchmark.limits.clone(),
            );
            runs.schedule(config, monitor.replicas());
            runs
        },
        shutdown: lifecycle.token(),
        maintenance: daemon.maintenance.clone(),
        event_streams: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config.api.max_event_streams,
        )),
    }
}

/// Serves the REST API, `/metrics` and the dashboard on `api.listen` until
/// shutdown; returns the bound address.
pub async fn serve_api(
    config: &Config,
    daemon: &Daemon,
    lifecycle: &Lifecycle,
) -> anyhow::Result<std::net::SocketAddr> {
    match crate::api::auth::startup_check(&config.api) {
        Ok(None) => {}
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Err(e) => anyhow::bail!(e),
    }
    let state = app_state(config, daemon, lifecycle);
    let (addr, task) = crate::api::serve(state, lifecycle.token())
        .await
        .map_err(anyhow::Error::msg)?;
    lifecycle.spawn(async move {
        let _ = task.await;
    });
    daemon.monitor.replicas().set_bound_address(config, addr);
    let scheme = if config.api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let anonymous = crate::api::auth::anonymous_role(&config.api).map_or("none", |r| r.as_str());
    tracing::info!(%addr, anonymous_role = anonymous, "API and dashboard at {scheme}://{addr}/");
    Ok(addr)
}

/// Warns about clusters whose password would cross the network in clear.
fn warn_plain_passwords(config: &Config) {
    for (cluster, endpoint) in plain_password_endpoints(config) {
        tracing::warn!(
            %cluster,
            %endpoint,
            "the etcd password of this cluster is sent over plain http:// to another host; use https:// endpoints (clusters[].tls)"
        );
    }
}

/// `(cluster, endpoint)` pairs where a password would go over plain
/// `http://` to a host other than this one.
pub fn plain_password_endpoints(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in &config.clusters {
        if c.password.is_none() && c.password_file.is_none() {
            continue;
        }
        let Ok(urls) = crate::connection::endpoints(c) else {
            continue;
        };
        for url in urls.into_iter().filter(|u| u.starts_with("http://")) {
            let authority = url
                .trim_start_matches("http://")
                .split(['/', '?'])
                .next()
                .unwrap_or("");
            let host = match authority.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => authority,
            }
            .trim_matches(['[', ']']);
            let local = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !local {
                out.push((c.name.clone(), url));
            }
        }
    }
    out
}

/// Runs the monitor and its API until a signal, then shuts down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let daemon = start(&config, &lifecycle).await?;
    serve_api(&config, &daemon, &lifecycle).await?;
    lifecycle.wait_for_signal().await;
    shutdown(&daemon.monitor, &lifecycle).await;
    Ok(())
}

/// Cancels every task, waits up to [`DRAIN`], closes the store.
pub async fn shutdown(monitor: &Monitor, lifecycle: &Lifecycle) {
    if !lifecycle.drain(DRAIN).await {
        tracing::warn!("some tasks did not stop within {:?}", DRAIN);
    }
    monitor.store().close().await;
    tracing::info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    #[test]
    fn a_password_over_plain_http_to_another_host_is_found() {
        let cluster = |name: &str, endpoints: &[&str], password: bool| ClusterConfig {
            name: name.into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            username: Some("u".into()),
            password: password.then(|| "p".into()),
            ..ClusterConfig::default()
        };
        let config = Config {
            clusters: vec![
                cluster(
                    "remote",
                    &[
                        "http://10.0.0.1:2379",
                        "127.0.0.1:2379",
                        "http://[::1]:2379",
                    ],
                    true,
                ),
                cluster("local", &["http://localhost:2379"], true),
                cluster("nopassword", &["http://10.0.0.2:2379"], false),
            ],
            ..Config::default()
        };
        assert_eq!(
            plain_password_endpoints(&config),
            vec![("remote".to_string(), "http://10.0.0.1:2379".to_string())]
        );
    }
}
