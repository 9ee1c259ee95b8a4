//! `maintenance.*`: maintenance the monitor runs by itself. For now the
//! defrag autopilot (`maintenance.defrag`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::window::Window;

/// `maintenance.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Defragments every cluster's members that match `rule`, inside
    /// `window`; off unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defrag: Option<DefragAutopilot>,
}

/// `maintenance.defrag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefragAutopilot {
    /// How often the rule is checked (inside the window). Default: 10m
    #[serde(default = "every", with = "crate::config::duration")]
    pub every: Duration,
    /// When it may run (UTC), e.g. `Sat 02:00-04:00 UTC`. Default: always
    #[serde(default = "Window::always")]
    pub window: Window,
    /// Which members need it, evaluated per member (the defrag rule
    /// language of `ctl defrag --defrag-rule`).
    pub rule: String,
    /// Compact to the current revision first, so the defragmentation
    /// returns the space of old revisions too. Default: false
    #[serde(default)]
    pub compact_first: bool,
    /// Disarm a NOSPACE alarm once every member is defragmented and under
    /// its quota. Default: false
    #[serde(default)]
    pub disarm_nospace: bool,
    /// Wait between two members. Default: 5s
    #[serde(default = "pause", with = "crate::config::duration")]
    pub pause: Duration,
    /// Move leadership to a defragmented follower before the leader's
    /// turn. Default: false
    #[serde(default)]
    pub move_leader: bool,
}

fn every() -> Duration {
    Duration::from_secs(600)
}

fn pause() -> Duration {
    Duration::from_secs(5)
}

impl MaintenanceConfig {
    /// Checks, as `(key path, message)`. The rule's syntax is checked by
    /// the layer that owns the rule language (`run::load_config`).
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.defrag {
            if d.every < Duration::from_secs(1) {
                out.push((
                    "maintenance.defrag.every".into(),
                    "check at most once a second (every >= 1s)".into(),
                ));
            }
            if d.pause > Duration::from_secs(600) {
                out.push(("maintenance.defrag.pause".into(), "at most 10m".into()));
            }
            if d.rule.trim().is_empty() {
                out.push((
                    "maintenance.defrag.rule".into(),
                    "required: which members need it, e.g. dbQuotaUsage > 0.8 || dbSizeFree > 200MB"
                        .into(),
                ));
            }
        }
        out
    }
}
