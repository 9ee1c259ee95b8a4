//! Alerting, in Alertmanager's stages with plain data between them:
//!
//! - [`rules`]: the rule table; health snapshots and metrics -> [`Sample`]s
//!   (conditions holding now);
//! - [`book`]: the pure engine: the lifecycle pending -> firing -> resolved,
//!   grouping per cluster and rule, [`inhibit_rules`](crate::config::alerts::InhibitRuleConfig)
//!   and [`silence`]s, acknowledgement, `repeat_interval`, with the time
//!   injected; each step yields [`Effect`]s;
//! - [`engine`]: the async shell that gathers inputs and records each
//!   step's effects in one store transaction (notifications in the outbox);
//! - [`route`]: which channels get a notification;
//! - [`deliver`] and [`channels`]: the durable outbox drained per channel
//!   with timeouts, retries, exponential backoff and jitter.
//!
//! The data (alerts, groups, notifications, silences) lives in
//! [`crate::model`], shared with the store and the API.

pub mod book;
pub mod channels;
pub mod deliver;
pub mod engine;
pub mod prometheus;
pub mod route;
pub mod rules;
pub mod silence;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::Thresholds;
use crate::lifecycle::Lifecycle;
use crate::monitor::Monitor;
use crate::store::{Store, StoreError};

pub use crate::config::alerts::AlertsConfig;
pub use crate::model::{
    Alert, AlertState, Effect, GroupState, Labels, Notification, NotificationStatus, fingerprint,
};
pub use silence::{Silence, Silences};

/// The checks of `alerts.*` that need the rule table and the stored
/// metrics: rule names, custom rules' metrics, silences. The configuration
/// loader ([`crate::run::load_config`]) runs them beside the schema's own.
pub fn config_problems(config: &crate::config::Config) -> Vec<(String, String)> {
    let alerts = &config.alerts;
    let mut out = Vec::new();
    let known = || rules::Rule::keys().collect::<Vec<_>>().join(", ");
    for name in alerts.rules.keys() {
        if rules::Rule::from_key(name).is_none() {
            out.push((
                format!("alerts.rules.{name}"),
                format!("unknown rule; built-in rules are {}", known()),
            ));
        }
    }
    for (i, r) in alerts.custom_rules.iter().enumerate() {
        if rules::Rule::from_key(&r.name).is_some() {
            out.push((
                format!("alerts.custom_rules[{i}].name"),
                format!(
                    "{:?} is a built-in rule: override it under alerts.rules",
                    r.name
                ),
            ));
        }
        if !rules::STORED_METRICS.contains(&r.metric.as_str()) {
            out.push((
                format!("alerts.custom_rules[{i}].metric"),
                format!(
                    "unknown metric {:?}; stored metrics are {}",
                    r.metric,
                    rules::STORED_METRICS.join(", ")
                ),
            ));
        }
    }
    for (i, s) in alerts.silences.iter().enumerate() {
        if let Err(e) = Silence::from_config(s) {
            out.push((format!("alerts.silences[{i}]"), e));
        }
    }
    out
}

/// A condition a rule found holding now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The rule's configuration key.
    pub rule: String,
    /// Labels; they identify the alert.
    pub labels: Labels,
    /// One sentence for people.
    pub summary: String,
    /// The figure compared with the threshold.
    pub value: f64,
    /// The rule's runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
}

/// How often the engines re-read silences and acknowledgements even
/// without a change made through this process (another process sharing the
/// store may have made one).
const INPUTS_REFRESH: Duration = Duration::from_secs(15);

/// How long reading silences and acknowledgements may take.
const INPUTS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Silences and acknowledged groups, cached for every cluster's engine and
/// re-read when this process changes them, and every [`INPUTS_REFRESH`].
#[derive(Debug, Clone)]
pub(crate) struct AlertInputs {
    silences: Silences,
    store: Store,
    changed: Arc<AtomicU64>,
    cache: Arc<tokio::sync::Mutex<InputsCache>>,
}

#[derive(Debug, Default)]
struct InputsCache {
    silences: Arc<Vec<Silence>>,
    acked: Arc<BTreeSet<String>>,
    /// When read, and the change counter then.
    loaded: Option<(tokio::time::Instant, u64)>,
}

impl AlertInputs {
    fn new(silences: Silences, store: Store, changed: Arc<AtomicU64>) -> AlertInputs {
        AlertInputs {
            silences,
            store,
            changed,
            cache: Default::default(),
        }
    }

    /// The silences (expired ones included: the book judges expiry) and the
    /// acknowledged groups; re-read when stale, the previous ones kept when
    /// the store fails.
    pub(crate) async fn current(&self) -> (Arc<Vec<Silence>>, Arc<BTreeSet<String>>) {
        let mut c = self.cache.lock().await;
        // Read before loading: a change during the load makes the next call load again.
        let version = self.changed.load(Ordering::Acquire);
        let fresh = c
            .loaded
            .is_some_and(|(at, v)| v == version && at.elapsed() < INPUTS_REFRESH);
        if !fresh {
            // Bounded: every cluster's engine waits on this lock, and a hung
            // store must not stop alerting (the last silences read stay).
            let load = tokio::time::timeout(INPUTS_READ_TIMEOUT, self.load()).await;
            match load.unwrap_or_else(|_| Err(StoreError::Timeout(INPUTS_READ_TIMEOUT))) {
                Ok((silences, acked)) => {
                    c.silences = Arc::new(silences);
                    c.acked = Arc::new(acked);
                    c.loaded = Some((tokio::time::Instant::now(), version));
                }
                Err(e) => {
                    // Tried again after INPUTS_REFRESH (or a change), not by
                    // every engine every second while the store is down.
                    c.loaded = Some((tokio::time::Instant::now(), version));
                    tracing::warn!(error = %e, "cannot read silences and acknowledgements; using the last ones read")
                }
            }
        }
        (c.silences.clone(), c.acked.clone())
    }

    async fn load(&self) -> Result<(Vec<Silence>, BTreeSet<String>), StoreError> {
        let silences = self.silences.list().await.map_err(|e| match e {
            silence::SilenceError::Store(e) => e,
            // `list` fails only in the store.
            other => StoreError::Unavailable(other.to_string()),
        })?;
        let acked = self.store.acked_groups().await?;
        Ok((silences, acked))
    }
}

/// The running alert engine's handle.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// Silences (configuration and API).
    pub silences: Silences,
    store: Store,
    changed: Arc<AtomicU64>,
}

impl Alerting {
    /// Acknowledges a firing group (`cluster/rule`): no more repeats until
    /// it resolves. Returns false when no such group is firing.
    pub async fn ack(
        &self,
        group_key: &str,
        by: &str,
        comment: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let acked = self.store.ack_group(group_key, by, comment, at_ms).await?;
        self.changed.fetch_add(1, Ordering::AcqRel);
        Ok(acked)
    }
}

/// Starts the alert engine for `monitor` under `lifecycle`: one evaluation
/// task per cluster and one delivery worker per channel. `thresholds` are
/// the health checks' (built from the same rule table).
pub fn start(
    config: &AlertsConfig,
    thresholds: &Thresholds,
    monitor: &Monitor,
    lifecycle: &Lifecycle,
) -> Alerting {
    let store = monitor.store().clone();
    let silences = Silences::new(store.clone(), &config.silences);
    let changed = silences.on_change();
    let inputs = AlertInputs::new(silences.clone(), store.clone(), changed.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let direct = Arc::new(deliver::DirectDelivery::new(&config.channels));
    for channel in &config.channels {
        lifecycle.spawn(deliver::run(deliver::Worker {
            channel: channel.clone(),
            replica: monitor.replicas().name.clone(),
            store: store.clone(),
            wake: wake.clone(),
            token: lifecycle.token(),
        }));
    }
    for name in monitor.cluster_names() {
        if let Some(handle) = monitor.cluster(name) {
            lifecycle.spawn(engine::run(engine::ClusterEngine::new(
                engine::EngineParts {
                    config: config.clone(),
                    thresholds: thresholds.clone(),
                    handle: handle.clone(),
                    store: store.clone(),
                    inputs: inputs.clone(),
                    wake: wake.clone(),
                    token: lifecycle.token(),
                    direct: direct.clone(),
                },
            )));
        }
    }
    Alerting {
        silences,
        store,
        changed,
    }
}
