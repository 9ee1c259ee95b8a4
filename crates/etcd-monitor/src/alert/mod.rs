//! Alerting, in Alertmanager's stages with plain data between them:
//!
//! - [`rules`]: health snapshots and metrics -> [`Sample`]s (conditions holding now);
//! - [`engine`]: the lifecycle pending -> firing -> resolved, grouping per
//!   cluster and rule, inhibition and [`silence`]s, acknowledgement,
//!   `repeat_interval`; decisions become [`Notification`]s in the outbox;
//! - [`route`]: which channels get a notification;
//! - [`deliver`] and [`channels`]: the durable outbox drained per channel
//!   with timeouts, retries, exponential backoff and jitter.
//!
//! Everything the REST API needs is reachable from the history store:
//! [`Store::active_alerts`](crate::store::Store::active_alerts),
//! [`Store::alert_history`](crate::store::Store::alert_history),
//! [`Store::ack_group`](crate::store::Store::ack_group), and [`Silences`].

pub mod channels;
pub mod config;
pub mod deliver;
pub mod engine;
pub mod route;
pub mod rules;
pub mod silence;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::lifecycle::Lifecycle;
use crate::monitor::Monitor;

pub use config::AlertsConfig;
pub use silence::{Silence, Silences};

/// Alert labels: `alertname`, `severity`, `cluster`, `member` (when one
/// member is concerned), and rule-specific ones (`alarm`).
pub type Labels = BTreeMap<String, String>;

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
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It stopped holding after firing.
    Resolved,
}

/// One alert: a rule's condition for one label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The labels joined: `alertname=..,cluster=..,...`; stable across restarts.
    pub fingerprint: String,
    /// `cluster/rule`: the notification group.
    pub group_key: String,
    /// Rule configuration key.
    pub rule: String,
    /// Labels.
    pub labels: Labels,
    /// One sentence for people.
    pub summary: String,
    /// The latest figure.
    pub value: f64,
    /// Pending, firing, resolved.
    pub state: AlertState,
    /// When the condition was first seen (ms since epoch).
    pub active_since_ms: i64,
    /// When it started firing.
    pub starts_at_ms: Option<i64>,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
    /// `silenced by <id>` or `inhibited by <alertname>`, when suppressed.
    pub suppressed: Option<String>,
}

/// The fingerprint of a label set.
pub fn fingerprint(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a notification reports trouble or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// At least one alert of the group fires.
    Firing,
    /// Every alert of the group resolved.
    Resolved,
}

/// One message about one alert group, as queued in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per dispatch; receivers can de-duplicate on it.
    pub id: String,
    /// `cluster/rule`: stable for the group (PagerDuty's `dedup_key`).
    pub group_key: String,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// `firing`, `update`, `repeat` or `resolved`.
    pub reason: String,
    /// Cluster name.
    pub cluster: String,
    /// `alertname` of the group.
    pub alertname: String,
    /// `severity` of the group.
    pub severity: String,
    /// The group's alerts (firing ones, or the resolved ones).
    pub alerts: Vec<Alert>,
    /// When decided (ms since epoch).
    pub at_ms: i64,
    /// `alerts.external_url`.
    pub external_url: Option<String>,
}

impl Notification {
    /// A one-line title: `[FIRING] etcdMembersDown on main (warning)`.
    pub fn title(&self) -> String {
        let status = match self.status {
            NotificationStatus::Firing => "FIRING",
            NotificationStatus::Resolved => "RESOLVED",
        };
        format!(
            "[{status}] {} on {} ({})",
            self.alertname, self.cluster, self.severity
        )
    }
}

/// The running alert engine's handle.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// Silences (configuration and API).
    pub silences: Silences,
}

/// Starts the alert engine for `monitor` under `lifecycle`: one evaluation
/// task per cluster and one delivery worker per channel.
pub fn start(config: &AlertsConfig, monitor: &Monitor, lifecycle: &Lifecycle) -> Alerting {
    let silences = Silences::new(monitor.store().clone(), &config.silences);
    let wake = Arc::new(tokio::sync::Notify::new());
    let direct = Arc::new(deliver::DirectDelivery::new(&config.channels));
    for channel in &config.channels {
        lifecycle.spawn(deliver::run(deliver::Worker {
            channel: channel.clone(),
            store: monitor.store().clone(),
            wake: wake.clone(),
            token: lifecycle.token(),
        }));
    }
    for name in monitor.cluster_names() {
        if let Some(handle) = monitor.cluster(name) {
            lifecycle.spawn(engine::run(engine::ClusterEngine::new(
                config,
                handle.clone(),
                monitor.store().clone(),
                silences.clone(),
                wake.clone(),
                lifecycle.token(),
                direct.clone(),
            )));
        }
    }
    Alerting { silences }
}
