//! Alerting: rules over health snapshots and metrics, the alert lifecycle
//! (pending, firing, resolved), grouping, inhibition, silences, routing and
//! delivery through channels with a durable outbox.

pub mod config;

use crate::lifecycle::Lifecycle;
use crate::monitor::Monitor;

pub use config::AlertsConfig;

/// Starts the alert engine for `monitor` under `lifecycle`.
pub fn start(config: &AlertsConfig, monitor: &Monitor, lifecycle: &Lifecycle) {
    let _ = (config, monitor, lifecycle);
}
