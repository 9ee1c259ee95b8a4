//! `etcdctl check perf`'s verdict: PASS when there were no errors, the
//! throughput exceeded 90 % of the load's target, the slowest request took
//! at most 0.5 s and the latency standard deviation is at most 0.1 s.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::BenchReport;
use crate::config::bench::spec::Load;

/// Slowest request allowed, seconds.
const MAX_SLOWEST_S: f64 = 0.5;
/// Latency standard deviation allowed, seconds.
const MAX_STDDEV_S: f64 = 0.1;
/// Share of the target rate that must be reached (exclusive, as etcdctl).
const MIN_THROUGHPUT_SHARE: f64 = 0.9;

/// One of the four checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CheckPerfCheck)]
pub struct Check {
    /// `errors`, `throughput`, `slowest` or `stddev`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// etcdctl's wording, e.g. `Throughput is 151 writes/s`.
    pub message: String,
}

/// The verdict of a `check-perf` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckPerfVerdict {
    /// The load profile.
    pub load: Load,
    /// Its target writes per second.
    pub target_rate: f64,
    /// All checks passed.
    pub passed: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

impl CheckPerfVerdict {
    /// Applies etcdctl's criteria to `report`.
    pub fn of(load: Load, report: &BenchReport) -> Self {
        let (target_rate, _) = load.target();
        let errors: u64 = report.errors.values().sum();
        let slowest = report.latency.max / 1000.0;
        let stddev = report.latency.stddev / 1000.0;
        let checks = vec![
            if errors == 0 {
                check("errors", true, "no errors".into())
            } else {
                check("errors", false, format!("too many errors ({errors})"))
            },
            if report.throughput / target_rate > MIN_THROUGHPUT_SHARE {
                check(
                    "throughput",
                    true,
                    format!("Throughput is {:.0} writes/s", report.throughput),
                )
            } else {
                check(
                    "throughput",
                    false,
                    format!(
                        "Throughput too low: {:.0} writes/s (needs more than {:.0})",
                        report.throughput,
                        target_rate * MIN_THROUGHPUT_SHARE
                    ),
                )
            },
            if slowest <= MAX_SLOWEST_S {
                check(
                    "slowest",
                    true,
                    format!("Slowest request took {slowest:.6}s"),
                )
            } else {
                check(
                    "slowest",
                    false,
                    format!(
                        "Slowest request took too long: {slowest:.6}s (limit {MAX_SLOWEST_S}s)"
                    ),
                )
            },
            if stddev <= MAX_STDDEV_S {
                check("stddev", true, format!("Stddev is {stddev:.6}s"))
            } else {
                check(
                    "stddev",
                    false,
                    format!("Stddev too high: {stddev:.6}s (limit {MAX_STDDEV_S}s)"),
                )
            },
        ];
        CheckPerfVerdict {
            load,
            target_rate,
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }

    /// etcdctl-style lines: `PASS: ...`, `FAIL: ...`, then `PASS` or `FAIL`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.message
            );
        }
        out.push_str(if self.passed { "PASS\n" } else { "FAIL\n" });
        out
    }
}

fn check(name: &str, passed: bool, message: String) -> Check {
    Check {
        name: name.into(),
        passed,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::bench::BenchSpec;
    use crate::bench::report::Recorder;

    fn report(latencies_ms: &[u64], errors: u64, secs: u64) -> BenchReport {
        let start = Instant::now();
        let mut rec = Recorder::new(start);
        for &ms in latencies_ms {
            rec.ok(start, Duration::from_millis(ms), None);
        }
        for _ in 0..errors {
            rec.failed(start, "Unavailable: timeout".into());
        }
        let spec = BenchSpec::check_perf(Load::S);
        rec.into_report(spec, vec![], 0, Duration::from_secs(secs), None)
    }

    #[test]
    fn follows_etcdctl_criteria() {
        let pass = CheckPerfVerdict::of(Load::S, &report(&[2; 300], 0, 2));
        assert!(pass.passed, "{}", pass.render());
        assert!(pass.render().contains("PASS: Throughput is 150 writes/s"));
        // 90 % exactly is not enough (etcdctl fails at <= 0.9).
        let slow = CheckPerfVerdict::of(Load::S, &report(&[2; 270], 0, 2));
        assert!(!slow.passed && slow.render().contains("Throughput too low"));
        let errors = CheckPerfVerdict::of(Load::S, &report(&[2; 300], 1, 2));
        assert!(!errors.passed && errors.render().contains("too many errors"));
        let mut lat = vec![2; 299];
        lat.push(600);
        let slowest = CheckPerfVerdict::of(Load::S, &report(&lat, 0, 2));
        assert!(!slowest.passed && slowest.render().contains("Slowest request took too long"));
        let spread = CheckPerfVerdict::of(Load::S, &report(&[[1, 400]; 150].concat(), 0, 2));
        assert!(!spread.passed && spread.render().contains("Stddev too high"));
    }
}
