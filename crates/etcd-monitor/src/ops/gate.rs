//! One maintenance operation per cluster at a time, shared by the REST API
//! and the monitor's own schedules (the defrag autopilot): two defrags of
//! different members at once could take a 3-member cluster below quorum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The maintenance operation running on each cluster.
#[derive(Debug, Default)]
pub struct MaintenanceGate {
    running: Mutex<HashMap<String, Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    op: &'static str,
    by: String,
    since: Instant,
}

/// The slot is taken: what holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The cluster.
    pub cluster: String,
    /// The running operation.
    pub op: &'static str,
    /// Who started it.
    pub by: String,
    /// Seconds since it started.
    pub secs: u64,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {}: {} started by {} {} s ago is still running; one maintenance operation per cluster at a time",
            self.cluster, self.op, self.by, self.secs
        )
    }
}

/// Holds a cluster's maintenance slot; released when dropped.
#[derive(Debug)]
pub struct GateGuard {
    gate: Arc<MaintenanceGate>,
    cluster: String,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.gate.running.lock() {
            map.remove(&self.cluster);
        }
    }
}

impl MaintenanceGate {
    /// Takes `cluster`'s slot for `op` started by `by`, or says what holds it.
    pub fn enter(
        self: &Arc<Self>,
        cluster: &str,
        op: &'static str,
        by: &str,
    ) -> Result<GateGuard, Busy> {
        // A poisoned map still holds valid entries: a panic elsewhere must
        // not open the gate to concurrent operations.
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(cluster) {
            return Err(Busy {
                cluster: cluster.to_string(),
                op: r.op,
                by: r.by.clone(),
                secs: r.since.elapsed().as_secs(),
            });
        }
        map.insert(
            cluster.to_string(),
            Running {
                op,
                by: by.to_string(),
                since: Instant::now(),
            },
        );
        Ok(GateGuard {
            gate: self.clone(),
            cluster: cluster.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operation_per_cluster_until_its_guard_drops() {
        let gate = Arc::new(MaintenanceGate::default());
        let guard = gate.enter("a", "defrag", "token:ops").unwrap();
        let busy = gate.enter("a", "compact", "autopilot").unwrap_err();
        assert_eq!((busy.op, busy.by.as_str()), ("defrag", "token:ops"));
        assert!(
            busy.to_string()
                .contains("cluster a: defrag started by token:ops")
        );
        let other = gate.enter("b", "compact", "autopilot").unwrap();
        drop(guard);
        drop(other);
        assert!(gate.enter("a", "compact", "autopilot").is_ok());
    }
}
