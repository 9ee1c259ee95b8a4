//! The daemon's engine: per cluster, a health task and a metrics task on
//! their own schedules, publishing immutable snapshots that the API, the
//! dashboard and the alert engine read, and writing history.
//!
//! Data flows one way: collectors -> snapshots (watch channels, events) ->
//! readers. One cluster's outage never delays another's checks: every
//! cluster has its own tasks, and every call inside a round is bounded by the
//! cluster's timeouts.

pub mod backups;
pub mod defrag_autopilot;
pub mod ha;
mod health_task;
pub mod hot_writes;
pub mod keyspace_schedule;
mod metrics_task;
mod probes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::Config;
use crate::health::{HealthSnapshot, Thresholds};
use crate::lifecycle::Lifecycle;
use crate::store::{LeaderChange, Store, unix_ms};

pub(crate) use metrics_task::points_of;
pub use metrics_task::{BY_METHOD_METRICS, MemberMetricsEntry, MetricsRound, STORED_METRICS};
pub use probes::{BUCKETS_MS, CumulativeHistogram, LatencySummary, PROBE_KEY, ProbeReport};

/// Something that happened, for live subscribers (server-sent events, alerts).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MonitorEvent {
    /// A health check finished.
    Health {
        /// Cluster name.
        cluster: String,
        /// The verdict (`healthy`, ...).
        verdict: crate::health::Verdict,
        /// Number of findings.
        findings: usize,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// The verdict changed.
    VerdictChanged {
        /// Cluster name.
        cluster: String,
        /// Before.
        from: Option<crate::health::Verdict>,
        /// After.
        to: crate::health::Verdict,
        /// When (ms since epoch).
        at_ms: i64,
    },
    /// A new leader was seen.
    LeaderChanged(LeaderChange),
    /// A metrics round finished.
    Metrics {
        /// Cluster name.
        cluster: String,
        /// When (ms since epoch).
        at_ms: i64,
    },
}

impl MonitorEvent {
    /// The cluster the event is about.
    pub fn cluster(&self) -> &str {
        match self {
            MonitorEvent::Health { cluster, .. }
            | MonitorEvent::VerdictChanged { cluster, .. }
            | MonitorEvent::Metrics { cluster, .. } => cluster,
            MonitorEvent::LeaderChanged(c) => &c.cluster,
        }
    }
}

/// What the monitor publishes about one cluster.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    /// Cluster name.
    pub name: String,
    /// The latest health snapshot.
    pub health: watch::Receiver<Option<Arc<HealthSnapshot>>>,
    /// The latest metrics round.
    pub metrics: watch::Receiver<Option<Arc<MetricsRound>>>,
    /// Leader changes observed since the monitor started.
    pub leader_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Growth between the two newest scheduled keyspace scans
    /// (`keyspace.schedule`), for the growth rules and `/metrics`.
    pub keyspace_growth: Arc<arc_swap::ArcSwapOption<crate::keyspace::GrowthCheck>>,
    /// Writes per prefix bucket (`keyspace.hot_writes`; not counting
    /// unless enabled).
    pub hot_writes: Arc<hot_writes::HotWrites>,
    /// The defrag autopilot's counters (`maintenance.defrag`).
    pub defrag: Arc<defrag_autopilot::DefragStats>,
    /// The cluster's backup schedules (`backup.schedules`).
    pub backups: Arc<Vec<Arc<backups::ScheduleState>>>,
    /// `clusters[].paused_members`: members stopped on purpose.
    pub paused_members: Arc<Vec<String>>,
    /// Whether this process works on the cluster now (replicas, `ha.*`).
    pub ownership: ha::Ownership,
}

/// The running monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    clusters: BTreeMap<String, ClusterHandle>,
    order: Vec<String>,
    events: broadcast::Sender<MonitorEvent>,
    store: Store,
    replicas: Arc<ha::Replicas>,
}

impl Monitor {
    /// Starts the tasks of every configured cluster under `lifecycle`;
    /// health checks judge with `thresholds`.
    pub fn start(
        config: &Config,
        thresholds: &Thresholds,
        store: Store,
        lifecycle: &Lifecycle,
    ) -> Monitor {
        let (events, _) = broadcast::channel(1024);
        let replicas = Arc::new(ha::Replicas::new(config));
        let mut clusters = BTreeMap::new();
        let mut order = Vec::new();
        for cluster in &config.clusters {
            let (health_tx, health_rx) = watch::channel(None);
            let (metrics_tx, metrics_rx) = watch::channel(None);
            let leader_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let ownership = replicas.ownership(&cluster.name);
            let clients = crate::cluster::MemberClients::default();
            lifecycle.spawn(health_task::run(health_task::HealthTask {
                ownership: ownership.clone(),
                cluster: cluster.clone(),
                monitoring: config.monitoring.clone(),
                thresholds: thresholds.clone(),
                store: store.clone(),
                events: events.clone(),
                publish: health_tx,
                metrics: metrics_rx.clone(),
                leader_changes: leader_changes.clone(),
                clients: clients.clone(),
                token: lifecycle.token(),
            }));
            lifecycle.spawn(metrics_task::run(metrics_task::MetricsTask {
                ownership: ownership.clone(),
                cluster: cluster.clone(),
                monitoring: config.monitoring.clone(),
                store: store.clone(),
                events: events.clone(),
                publish: metrics_tx,
                health: health_rx.clone(),
                clients,
                token: lifecycle.token(),
            }));
            let hot = Arc::new(hot_writes::HotWrites::new(&config.keyspace.hot_writes));
            if config.keyspace.hot_writes.enabled {
                lifecycle.spawn(hot_writes::run(
                    cluster.clone(),
                    hot.clone(),
                    ownership.clone(),
                    lifecycle.token(),
                ));
            }
            order.push(cluster.name.clone());
            clusters.insert(
                cluster.name.clone(),
                ClusterHandle {
                    name: cluster.name.clone(),
                    health: health_rx,
                    metrics: metrics_rx,
                    leader_changes,
                    keyspace_growth: Arc::default(),
                    hot_writes: hot,
                    defrag: Arc::default(),
                    backups: Arc::new(
                        config
                            .backup
                            .schedules
                            .iter()
                            .filter(|s| s.cluster_name(config) == cluster.name)
                            .map(|s| Arc::new(backups::ScheduleState::new(s, &cluster.name)))
                            .collect(),
                    ),
                    paused_members: Arc::new(cluster.paused_members.clone()),
                    ownership,
                },
            );
        }
        let retention = config.storage.retention;
        let audit_retention = config.storage.audit_retention;
        let retention_store = store.clone();
        let token = lifecycle.token();
        lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600).min(retention / 2));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        let cutoff = unix_ms(std::time::SystemTime::now()) - retention.as_millis() as i64;
                        match retention_store.enforce_retention(cutoff).await {
                            Ok(n) if n > 0 => tracing::info!(removed = n, "history retention enforced"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "history retention failed"),
                        }
                        let cutoff = unix_ms(std::time::SystemTime::now()) - audit_retention.as_millis() as i64;
                        match retention_store.enforce_audit_retention(cutoff).await {
                            Ok(n) if n > 0 => tracing::info!(removed = n, "audit log retention enforced"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "audit log retention failed"),
                        }
                    }
                }
            }
        });
        Monitor {
            clusters,
            order,
            events,
            store,
            replicas,
        }
    }

    /// Cluster names in configuration order.
    pub fn cluster_names(&self) -> &[String] {
        &self.order
    }

    /// One cluster's handle.
    pub fn cluster(&self, name: &str) -> Option<&ClusterHandle> {
        self.clusters.get(name)
    }

    /// The first configured cluster (the API's "default cluster").
    pub fn default_cluster(&self) -> Option<&ClusterHandle> {
        self.order.first().and_then(|n| self.clusters.get(n))
    }

    /// Live events.
    pub fn subscribe(&self) -> broadcast::Receiver<MonitorEvent> {
        self.events.subscribe()
    }

    /// The history store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This replica among the others (`ha.*`).
    pub fn replicas(&self) -> &Arc<ha::Replicas> {
        &self.replicas
    }

    /// Every backup schedule, in cluster order.
    pub fn backup_schedules(&self) -> Vec<Arc<backups::ScheduleState>> {
        self.order
            .iter()
            .filter_map(|n| self.clusters.get(n))
            .flat_map(|c| c.backups.iter().cloned())
            .collect()
    }
}
