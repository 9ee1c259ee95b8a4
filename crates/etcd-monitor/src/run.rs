//! `etcd-monitor run`: open the history store, start the monitor, serve
//! until SIGINT/SIGTERM, then drain within a bound.

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::monitor::Monitor;
use crate::store::{Store, redact_url};

/// How long shutdown waits for tasks to finish.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Opens the store and starts monitoring every configured cluster.
pub async fn start(config: &Config, lifecycle: &Lifecycle) -> anyhow::Result<Monitor> {
    let store = Store::open(&config.storage.url).await.with_context(|| {
        format!(
            "cannot open the history store {}",
            redact_url(&config.storage.url)
        )
    })?;
    let monitor = Monitor::start(config, store, lifecycle);
    monitor.set_alerting(crate::alert::start(&config.alerts, &monitor, lifecycle));
    for c in &config.clusters {
        tracing::info!(
            cluster = %c.name,
            endpoints = %c.endpoints.join(","),
            health_interval = %crate::config::duration::format(&config.monitoring.health_check_interval),
            metrics_interval = %crate::config::duration::format(&config.monitoring.metrics_interval),
            "monitoring cluster"
        );
    }
    Ok(monitor)
}

/// Serves the REST API, `/metrics` and the dashboard on `api.listen` until
/// shutdown; returns the bound address.
pub async fn serve_api(
    config: &Config,
    monitor: &Monitor,
    lifecycle: &Lifecycle,
) -> anyhow::Result<std::net::SocketAddr> {
    let state = crate::api::AppState {
        monitor: monitor.clone(),
        config: std::sync::Arc::new(config.clone()),
        started: std::time::Instant::now(),
        started_at: std::time::SystemTime::now(),
        firing_cache: Default::default(),
        bench_runs: {
            let runs =
                crate::benchmarks::BenchRuns::new(monitor.store().clone(), lifecycle.clone());
            runs.schedule(config);
            runs
        },
    };
    let (addr, task) = crate::api::serve(&config.api.listen, state, lifecycle.token())
        .await
        .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
    lifecycle.spawn(async move {
        let _ = task.await;
    });
    tracing::info!(%addr, "API and dashboard at http://{addr}/");
    Ok(addr)
}

/// Runs the monitor and its API until a signal, then shuts down.
pub async fn run(config: Config, lifecycle: Lifecycle) -> anyhow::Result<()> {
    let monitor = start(&config, &lifecycle).await?;
    serve_api(&config, &monitor, &lifecycle).await?;
    lifecycle.wait_for_signal().await;
    shutdown(&monitor, &lifecycle).await;
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
