//! `benchmark.*` configuration, and the specification of a benchmark run
//! with the limits runs started by the API or a schedule must respect.
//! Plain data and its checks: the runner is [`crate::bench`].

pub mod limits;
pub mod spec;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use limits::BenchLimits;
pub use spec::{BenchSpec, Consistency, InvalidSpec, LegacyBenchmarkType, Load, Workload};

/// `benchmark.*` configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchmarkConfig {
    /// Benchmarks run on a schedule; none by default.
    pub schedules: Vec<ScheduledBenchmark>,
    /// What runs started by the API or a schedule may ask for.
    pub limits: BenchLimits,
}

/// One scheduled benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledBenchmark {
    /// Name, for logs.
    pub name: String,
    /// Cluster to run against; default: the first configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How often (at least 1s; minutes or hours in practice).
    #[serde(with = "crate::config::duration")]
    pub every: Duration,
    /// The run, as `etcd-monitor bench` flags in YAML (`workload: put`, `clients: 8`, `total: 1000`, ...).
    #[serde(default)]
    pub spec: BenchSpec,
    /// SLO targets such as `p99<50ms,throughput>1000`; a miss is logged as a warning and recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<String>,
}

impl BenchmarkConfig {
    /// Checks the schema alone can make, as `(key path, message)`; the SLO
    /// grammar is checked by [`crate::benchmarks::config_problems`].
    pub(crate) fn problems(&self, clusters: &[super::ClusterConfig]) -> Vec<(String, String)> {
        let mut out = self.limits.problems();
        for (i, s) in self.schedules.iter().enumerate() {
            let at = |k: &str| format!("benchmark.schedules[{i}].{k}");
            if let Some(c) = &s.cluster {
                if !clusters.iter().any(|x| &x.name == c) {
                    out.push((at("cluster"), format!("no cluster named {c:?}")));
                }
            }
            if s.every < Duration::from_secs(1) {
                out.push((
                    at("every"),
                    "run at most once a second (every >= 1s)".into(),
                ));
            }
            match s.spec.resolved() {
                Err(e) => out.push((at("spec"), e.to_string())),
                Ok(spec) => {
                    for (field, message) in self.limits.violations(&spec) {
                        out.push((at(&format!("spec.{field}")), message));
                    }
                }
            }
        }
        out
    }
}
