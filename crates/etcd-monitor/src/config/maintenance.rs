//! `maintenance.*`: maintenance the monitor runs by itself. For now the
//! defrag autopilot (`maintenance.defrag`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::cron::Cron;
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
    /// How often the rule is checked (inside the window). Default: 10m,
    /// unless `schedule` is set.
    #[serde(
        default,
        with = "crate::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub every: Option<Duration>,
    /// When the rule is checked, as a cron schedule in UTC (`0 3 * * Sat`);
    /// instead of `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Cron>,
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

/// `every` when neither it nor `schedule` is set.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);

fn pause() -> Duration {
    Duration::from_secs(5)
}

impl MaintenanceConfig {
    /// Checks, as `(key path, message)`. The rule's syntax is checked by
    /// the layer that owns the rule language (`run::load_config`).
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.defrag {
            if d.every.is_some() && d.schedule.is_some() {
                out.push((
                    "maintenance.defrag.schedule".into(),
                    "set either schedule or every, not both".into(),
                ));
            }
            if let Some(cron) = &d.schedule {
                // Any match within 8 years (a leap day is at most 8 years away).
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if !(0..8).any(|y| cron.next_after(now + y * 365 * 86_400).is_some()) {
                    out.push((
                        "maintenance.defrag.schedule".into(),
                        format!("\"{cron}\": no date ever matches it"),
                    ));
                }
            }
            if d.every.is_some_and(|e| e < Duration::from_secs(1)) {
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
