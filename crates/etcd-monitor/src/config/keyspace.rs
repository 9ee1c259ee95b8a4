//! `keyspace.*` configuration: scheduled keyspace scans (stored, for growth)
//! and the growth rules that alert on them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alerts::AlertSeverity as Severity;

/// `keyspace.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyspaceConfig {
    /// Scans of every cluster on a schedule, stored for growth; off unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<KeyspaceSchedule>,
    /// Alerts when a prefix grows faster than its limit between two
    /// scheduled scans (needs `schedule`).
    pub growth_rules: Vec<GrowthRule>,
    /// Writes counted per prefix bucket from a watch; off unless enabled.
    pub hot_writes: HotWrites,
}

/// `keyspace.hot_writes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotWrites {
    /// Watch every cluster and count its writes. Default: false
    pub enabled: bool,
    /// Prefixes watched (one watch each; none may start with another).
    /// Default: `[""]`, the whole keyspace.
    pub prefixes: Vec<String>,
    /// Levels below a watched prefix that make a bucket. Default: 2
    pub depth: usize,
    /// Buckets exported in `/metrics`, the busiest. Default: 10
    pub top: usize,
    /// Buckets tracked per cluster; writes to more fold into `<prefix>*`.
    /// Default: 1000
    pub max_buckets: usize,
}

impl Default for HotWrites {
    fn default() -> Self {
        HotWrites {
            enabled: false,
            prefixes: vec![String::new()],
            depth: 2,
            top: 10,
            max_buckets: 1000,
        }
    }
}

impl HotWrites {
    fn problems(&self, out: &mut Vec<(String, String)>) {
        let at = |k: &str| format!("keyspace.hot_writes.{k}");
        if self.prefixes.is_empty() {
            out.push((
                at("prefixes"),
                "at least one (\"\" watches the whole keyspace)".into(),
            ));
        }
        for (i, a) in self.prefixes.iter().enumerate() {
            for b in &self.prefixes[i + 1..] {
                if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                    out.push((
                        at("prefixes"),
                        format!("{a:?} and {b:?} overlap: their writes would be counted twice"),
                    ));
                }
            }
        }
        if !(1..=8).contains(&self.depth) {
            out.push((at("depth"), format!("{}: 1 to 8", self.depth)));
        }
        if !(1..=100).contains(&self.top) {
            out.push((at("top"), format!("{}: 1 to 100", self.top)));
        }
        if !(1..=100_000).contains(&self.max_buckets) {
            out.push((
                at("max_buckets"),
                format!("{}: 1 to 100000", self.max_buckets),
            ));
        }
    }
}

/// `keyspace.schedule`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceSchedule {
    /// How often each cluster is scanned (at least 1s; an hour in practice).
    #[serde(with = "crate::config::duration")]
    pub every: Duration,
    /// Keys under this prefix. Default: every key.
    #[serde(default)]
    pub prefix: String,
    /// Levels below the prefix. Default: 3
    #[serde(default = "depth")]
    pub depth: usize,
    /// Largest keys kept. Default: 10
    #[serde(default = "top")]
    pub top: usize,
    /// Range requests per second. Default: 20
    #[serde(default = "rate")]
    pub rate: f64,
    /// A scan stops after this long and is stored as incomplete. Default: 10m
    #[serde(default = "max_duration", with = "crate::config::duration")]
    pub max_duration: Duration,
    /// Prefix (and resource) buckets kept per scan before the rest fold into
    /// `*` buckets: bounds each stored scan's size. Default: 2000
    #[serde(default = "max_buckets")]
    pub max_buckets: usize,
}

fn max_buckets() -> usize {
    2000
}

fn depth() -> usize {
    3
}
fn top() -> usize {
    10
}
fn rate() -> f64 {
    20.0
}
fn max_duration() -> Duration {
    Duration::from_secs(600)
}

/// One `keyspace.growth_rules` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthRule {
    /// A prefix the scans report (one of their levels, ending in `/`).
    pub prefix: String,
    /// Bytes (keys and values) per hour above which the alert fires
    /// (`100MiB`, `50MB`).
    #[serde(with = "crate::config::size")]
    pub max_bytes_per_hour: u64,
    /// Severity of the alert. Default: warning
    #[serde(default = "warning")]
    pub severity: Severity,
}

fn warning() -> Severity {
    Severity::Warning
}

impl KeyspaceConfig {
    /// Checks, as `(key path, message)`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.hot_writes.problems(&mut out);
        if let Some(s) = &self.schedule {
            let at = |k: &str| format!("keyspace.schedule.{k}");
            if s.every < Duration::from_secs(1) {
                out.push((
                    at("every"),
                    "scan at most once a second (every >= 1s)".into(),
                ));
            }
            if s.depth > 8 {
                out.push((at("depth"), format!("{}: at most 8", s.depth)));
            }
            if s.top > 100 {
                out.push((at("top"), format!("{}: at most 100", s.top)));
            }
            if !(s.rate > 0.0 && s.rate <= 1000.0) {
                out.push((
                    at("rate"),
                    format!(
                        "{}: more than 0 and at most 1000 requests per second",
                        s.rate
                    ),
                ));
            }
            if !(1..=100_000).contains(&s.max_buckets) {
                out.push((at("max_buckets"), format!("{}: 1 to 100000", s.max_buckets)));
            }
            if s.max_duration < Duration::from_secs(1) {
                out.push((at("max_duration"), "at least 1s".into()));
            }
        }
        for (i, r) in self.growth_rules.iter().enumerate() {
            let at = |k: &str| format!("keyspace.growth_rules[{i}].{k}");
            if self.schedule.is_none() {
                out.push((
                    at("prefix"),
                    "growth rules compare scheduled scans: set keyspace.schedule too".into(),
                ));
            }
            if !r.prefix.ends_with('/') {
                out.push((
                    at("prefix"),
                    format!(
                        "{:?}: a level of the scans ends in / (e.g. /registry/events/)",
                        r.prefix
                    ),
                ));
            }
            if let Some(s) = &self.schedule {
                if !r.prefix.starts_with(&s.prefix) || r.prefix.len() <= s.prefix.len() {
                    out.push((
                        at("prefix"),
                        format!(
                            "{:?} is not below keyspace.schedule.prefix {:?}",
                            r.prefix, s.prefix
                        ),
                    ));
                }
            }
            if r.max_bytes_per_hour == 0 {
                out.push((at("max_bytes_per_hour"), "more than 0".into()));
            }
        }
        out
    }
}
