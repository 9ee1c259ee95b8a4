//! `benchmark.limits`: what a benchmark started through the API or by a
//! schedule may ask for. A request beyond them is refused (422 naming the
//! field and the limit) before anything is allocated or sent; the command
//! line only warns, since whoever runs it owns the machine.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{BenchSpec, Workload};

/// Bytes a run may write before it starts measuring (`range`, `mixed`,
/// `delete` populate `key_space_size` keys first).
pub const MAX_POPULATED_BYTES: u64 = 1 << 30;

/// `benchmark.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchLimits {
    /// Most concurrent clients.
    pub max_clients: usize,
    /// Most gRPC connections.
    pub max_conns: usize,
    /// Largest key (bytes, or `1KiB`).
    #[serde(with = "crate::config::size")]
    pub max_key_size: u64,
    /// Largest value (bytes, or `1.5MiB`: etcd's default request limit).
    #[serde(with = "crate::config::size")]
    pub max_value_size: u64,
    /// Most operations in one run.
    pub max_total: u64,
    /// Longest run; a run without `duration` stops here too.
    #[serde(with = "crate::config::duration")]
    pub max_duration: Duration,
    /// Slowest paced rate (operations per second), so a run cannot creep
    /// along for ever and hold its cluster's benchmark slot.
    pub min_rate: f64,
}

impl Default for BenchLimits {
    fn default() -> Self {
        BenchLimits {
            max_clients: 256,
            max_conns: 32,
            max_key_size: 1024,
            max_value_size: 1536 * 1024,
            max_total: 10_000_000,
            max_duration: Duration::from_secs(30 * 60),
            min_rate: 1.0,
        }
    }
}

impl BenchLimits {
    /// What in `spec` (resolved: defaults filled in) goes beyond the
    /// limits, as `(field, message)` naming the limit.
    pub fn violations(&self, spec: &BenchSpec) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut over = |field: &'static str, value: String, limit: String, key: &str| {
            out.push((
                field,
                format!("{field} {value} is over the limit of {limit} (benchmark.limits.{key})"),
            ));
        };
        if spec.clients > self.max_clients {
            over(
                "clients",
                spec.clients.to_string(),
                self.max_clients.to_string(),
                "max_clients",
            );
        }
        if spec.conns > self.max_conns {
            over(
                "conns",
                spec.conns.to_string(),
                self.max_conns.to_string(),
                "max_conns",
            );
        }
        if spec.key_size as u64 > self.max_key_size {
            over(
                "key_size",
                spec.key_size.to_string(),
                self.max_key_size.to_string(),
                "max_key_size",
            );
        }
        if spec.val_size as u64 > self.max_value_size {
            over(
                "val_size",
                spec.val_size.to_string(),
                self.max_value_size.to_string(),
                "max_value_size",
            );
        }
        if let Some(total) = spec.total.filter(|t| *t > self.max_total) {
            over(
                "total",
                total.to_string(),
                self.max_total.to_string(),
                "max_total",
            );
        }
        if let Some(d) = spec.duration.filter(|d| *d > self.max_duration) {
            over(
                "duration",
                crate::config::duration::format(&d),
                crate::config::duration::format(&self.max_duration),
                "max_duration",
            );
        }
        if let Some(rate) = spec.rate {
            if rate < self.min_rate {
                out.push((
                    "rate",
                    format!(
                        "rate {rate} is under the limit of {} operations per second (benchmark.limits.min_rate)",
                        self.min_rate
                    ),
                ));
            } else if let (Some(total), None) = (spec.total, spec.duration) {
                let takes = Duration::from_secs_f64(total as f64 / rate);
                if takes > self.max_duration {
                    out.push((
                        "total",
                        format!(
                            "total {total} at rate {rate}/s takes {}, over the limit of {} (benchmark.limits.max_duration): lower total or raise rate",
                            crate::config::duration::format(&Duration::from_secs(takes.as_secs())),
                            crate::config::duration::format(&self.max_duration)
                        ),
                    ));
                }
            }
        }
        if spec.workload.needs_populated_keys() {
            let bytes = spec
                .key_space_size
                .saturating_mul(spec.val_size as u64 + spec.key_size as u64);
            if bytes > MAX_POPULATED_BYTES {
                out.push((
                    "key_space_size",
                    format!(
                        "{} first writes key_space_size {} keys of {} bytes ({bytes} bytes), over the limit of {MAX_POPULATED_BYTES}",
                        spec.workload.name(),
                        spec.key_space_size,
                        spec.val_size + spec.key_size
                    ),
                ));
            }
        }
        out
    }

    /// `spec` with its run bounded by `max_duration` (a run given only a
    /// `total` stops there too).
    pub fn bounded(&self, mut spec: BenchSpec) -> BenchSpec {
        if spec.workload != Workload::CheckPerf {
            spec.duration = Some(
                spec.duration
                    .unwrap_or(self.max_duration)
                    .min(self.max_duration),
            );
        }
        spec
    }

    /// Semantic checks of the limits themselves.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let at = |k: &str| format!("benchmark.limits.{k}");
        for (key, zero) in [
            ("max_clients", self.max_clients == 0),
            ("max_conns", self.max_conns == 0),
            ("max_key_size", self.max_key_size == 0),
            ("max_total", self.max_total == 0),
            ("max_duration", self.max_duration.is_zero()),
        ] {
            if zero {
                out.push((at(key), "must be greater than zero".into()));
            }
        }
        if !(self.min_rate > 0.0 && self.min_rate.is_finite()) {
            out.push((at("min_rate"), "must be a positive number".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BenchSpec {
        serde_yaml_ng::from_str::<BenchSpec>(yaml)
            .unwrap()
            .resolved()
            .unwrap()
    }

    #[test]
    fn oversized_requests_are_named_with_their_limit() {
        let l = BenchLimits::default();
        assert!(l.violations(&spec("workload: put\ntotal: 1000")).is_empty());
        let v = l.violations(&spec(
            "workload: put\nclients: 100000\nconns: 64\nval_size: 8589934592\nkey_size: 4096\ntotal: 20000000",
        ));
        let fields: Vec<&str> = v.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            ["clients", "conns", "key_size", "val_size", "total"]
        );
        assert!(v[3].1.contains("benchmark.limits.max_value_size"), "{v:?}");
        let slow = l.violations(&spec("workload: put\nrate: 0.000000001\ntotal: 10"));
        assert_eq!(slow[0].0, "rate", "{slow:?}");
        let long = l.violations(&spec("workload: put\nrate: 2\ntotal: 10000"));
        assert!(long[0].1.contains("takes 1h 23m 20s"), "{long:?}");
        let fill = l.violations(&spec(
            "workload: range\nkey_space_size: 1000000\nval_size: 4096",
        ));
        assert_eq!(fill[0].0, "key_space_size", "{fill:?}");
        let bounded = l.bounded(spec("workload: put\ntotal: 5"));
        assert_eq!(bounded.duration, Some(Duration::from_secs(1800)));
    }
}
