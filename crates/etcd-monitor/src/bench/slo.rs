//! Service-level gates on a report: `p99<50ms,throughput>10000,error_rate<=0.1%`.
//!
//! Metrics: `min`, `mean`, `stddev`, `p50`, `p90`, `p95`, `p99`, `p99.9`
//! (or `p999`), `max` (durations: `us`, `ms`, `s`), `throughput` (ops/s),
//! `errors` (a count) and `error_rate` (a fraction, or a percentage with `%`).
//! Comparisons: `<`, `<=`, `>`, `>=`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::report::{BenchReport, fmt_ms};

/// A metric an SLO can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fastest latency.
    Min,
    /// Mean latency.
    Mean,
    /// Latency standard deviation.
    Stddev,
    /// Median latency.
    P50,
    /// 90th percentile latency.
    P90,
    /// 95th percentile latency.
    P95,
    /// 99th percentile latency.
    P99,
    /// 99.9th percentile latency.
    P999,
    /// Slowest latency.
    Max,
    /// Successful operations per second.
    Throughput,
    /// Failed operations.
    Errors,
    /// Failed / attempted operations.
    ErrorRate,
}

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "min" => Metric::Min,
            "mean" | "avg" => Metric::Mean,
            "stddev" => Metric::Stddev,
            "p50" => Metric::P50,
            "p90" => Metric::P90,
            "p95" => Metric::P95,
            "p99" => Metric::P99,
            "p99.9" | "p999" => Metric::P999,
            "max" => Metric::Max,
            "throughput" => Metric::Throughput,
            "errors" => Metric::Errors,
            "error_rate" | "error-rate" => Metric::ErrorRate,
            _ => return None,
        })
    }

    fn is_latency(self) -> bool {
        !matches!(
            self,
            Metric::Throughput | Metric::Errors | Metric::ErrorRate
        )
    }

    /// The measured value: ms for latencies, ops/s, a count, or a fraction.
    fn value(self, r: &BenchReport) -> f64 {
        let l = &r.latency;
        match self {
            Metric::Min => l.min,
            Metric::Mean => l.mean,
            Metric::Stddev => l.stddev,
            Metric::P50 => l.p50,
            Metric::P90 => l.p90,
            Metric::P95 => l.p95,
            Metric::P99 => l.p99,
            Metric::P999 => l.p999,
            Metric::Max => l.max,
            Metric::Throughput => r.throughput,
            Metric::Errors => r.errors.values().sum::<u64>() as f64,
            Metric::ErrorRate => {
                let errors = r.errors.values().sum::<u64>() as f64;
                let attempts = (r.operations as f64).max(errors);
                if attempts == 0.0 {
                    0.0
                } else {
                    errors / attempts
                }
            }
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            m if m.is_latency() => format!("{} ms", fmt_ms(v)),
            Metric::Throughput => format!("{v:.1} ops/s"),
            Metric::Errors => format!("{v:.0}"),
            _ => format!("{:.3}%", v * 100.0),
        }
    }
}

/// `<`, `<=`, `>`, `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// At most.
    #[serde(rename = "<=")]
    Le,
    /// More than.
    #[serde(rename = ">")]
    Gt,
    /// At least.
    #[serde(rename = ">=")]
    Ge,
}

impl Comparison {
    fn holds(self, actual: f64, target: f64) -> bool {
        match self {
            Comparison::Lt => actual < target,
            Comparison::Le => actual <= target,
            Comparison::Gt => actual > target,
            Comparison::Ge => actual >= target,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// One target, e.g. `p99<50ms`. The threshold is in the metric's unit
/// (ms, ops/s, count, fraction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// As written.
    pub text: String,
    /// The metric.
    pub metric: Metric,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
}

/// Bad SLO syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SLO {text:?}: {reason}")]
pub struct SloSyntaxError {
    /// The target as written.
    pub text: String,
    /// What is wrong and how to write it.
    pub reason: String,
}

/// The outcome of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// As written.
    pub slo: String,
    /// Met or not.
    pub passed: bool,
    /// The measured value, in the metric's unit.
    pub actual: f64,
    /// e.g. `p99 = 63.2 ms, target < 50 ms: missed by 13.2 ms (26.4%)`.
    pub message: String,
}

/// Parses a comma-separated list of targets.
pub fn parse(text: &str) -> Result<Vec<Slo>, SloSyntaxError> {
    let slos: Vec<Slo> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_one)
        .collect::<Result<_, _>>()?;
    if slos.is_empty() {
        return Err(SloSyntaxError {
            text: text.into(),
            reason: "no target given: write e.g. p99<50ms,throughput>10000".into(),
        });
    }
    Ok(slos)
}

fn parse_one(text: &str) -> Result<Slo, SloSyntaxError> {
    let err = |reason: String| SloSyntaxError {
        text: text.into(),
        reason,
    };
    let at = text.find(['<', '>']).ok_or_else(|| {
        err(
            "no comparison: write METRIC<VALUE, METRIC<=VALUE, METRIC>VALUE or METRIC>=VALUE"
                .into(),
        )
    })?;
    let name = text[..at].trim().to_ascii_lowercase();
    let rest = &text[at..];
    let (comparison, value) = if let Some(v) = rest.strip_prefix("<=") {
        (Comparison::Le, v)
    } else if let Some(v) = rest.strip_prefix(">=") {
        (Comparison::Ge, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Comparison::Lt, v)
    } else {
        (Comparison::Gt, &rest[1..])
    };
    let metric = Metric::parse(&name).ok_or_else(|| {
        err(format!(
            "unknown metric {name:?}: use min, mean, stddev, p50, p90, p95, p99, p99.9, max, throughput, errors or error_rate"
        ))
    })?;
    let value = value.trim();
    let threshold = if metric.is_latency() {
        let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = value
            .strip_suffix("us")
            .or_else(|| value.strip_suffix("µs"))
        {
            (n, 0.001)
        } else if let Some(n) = value.strip_suffix('s') {
            (n, 1000.0)
        } else {
            return Err(err(format!(
                "latency {value:?} needs a unit: us, ms or s, e.g. 50ms"
            )));
        };
        number_of(number).map_err(err)? * scale
    } else if metric == Metric::ErrorRate {
        match value.strip_suffix('%') {
            Some(p) => number_of(p).map_err(err)? / 100.0,
            None => number_of(value).map_err(err)?,
        }
    } else {
        number_of(value.strip_suffix("/s").unwrap_or(value)).map_err(err)?
    };
    Ok(Slo {
        text: text.into(),
        metric,
        comparison,
        threshold,
    })
}

fn number_of(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{:?} is not a non-negative number", s.trim())),
    }
}

impl Slo {
    /// Checks this target against `report`.
    pub fn evaluate(&self, report: &BenchReport) -> SloResult {
        let actual = self.metric.value(report);
        let passed = self.comparison.holds(actual, self.threshold);
        let mut message = format!(
            "{} = {}, target {} {}",
            self.text[..self.text.find(['<', '>']).unwrap_or(0)].trim(),
            self.metric.format(actual),
            self.comparison.symbol(),
            self.metric.format(self.threshold)
        );
        if !passed {
            let by = (actual - self.threshold).abs();
            message.push_str(&format!(": missed by {}", self.metric.format(by)));
            if self.threshold > 0.0 {
                message.push_str(&format!(" ({:.1}%)", by / self.threshold * 100.0));
            }
        }
        SloResult {
            slo: self.text.clone(),
            passed,
            actual,
            message,
        }
    }
}

impl fmt::Display for SloResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.message
        )
    }
}

/// Evaluates every target.
pub fn evaluate(slos: &[Slo], report: &BenchReport) -> Vec<SloResult> {
    slos.iter().map(|s| s.evaluate(report)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_comparisons() {
        let s = parse("p99<50ms, throughput>=10000,p99.9<=1s,error_rate<0.5%,errors<1,max<800us")
            .unwrap();
        assert_eq!(
            (s[0].metric, s[0].comparison, s[0].threshold),
            (Metric::P99, Comparison::Lt, 50.0)
        );
        assert_eq!(
            (s[1].metric, s[1].comparison),
            (Metric::Throughput, Comparison::Ge)
        );
        assert_eq!((s[2].metric, s[2].threshold), (Metric::P999, 1000.0));
        assert!((s[3].threshold - 0.005).abs() < 1e-12);
        assert!((s[5].threshold - 0.8).abs() < 1e-12);
    }

    #[test]
    fn bad_syntax_says_what_to_write() {
        for (text, needle) in [
            ("p99=50ms", "no comparison"),
            ("p98<5ms", "unknown metric"),
            ("p99<50", "needs a unit"),
            ("throughput>lots", "not a non-negative number"),
            ("", "no target"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
