//! What a run measured: HDR latency histograms per client, merged into a
//! [`BenchReport`] (throughput, percentiles, buckets, errors, timeline), and
//! its table form.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::check_perf::CheckPerfVerdict;
use crate::config::bench::spec::{BenchSpec, Workload};

/// Highest latency the histograms hold, in microseconds (one hour).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = BenchLatency)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            stddev: h.stdev() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Samples with a latency up to `le_ms` (and above the previous bucket's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = BenchBucket)]
pub struct Bucket {
    /// Upper bound in milliseconds.
    pub le_ms: f64,
    /// Samples in this bucket.
    pub count: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = BenchSecond)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Operations that succeeded and started in this second.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Mean latency of the successful ones, ms.
    pub mean_ms: f64,
    /// Slowest successful one, ms.
    pub max_ms: f64,
}

/// The result of a run. Latencies are in milliseconds, throughput in
/// successful operations per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BenchReport {
    /// The workload run.
    pub workload: Workload,
    /// The spec as run (defaults filled in).
    pub spec: BenchSpec,
    /// The endpoints the clients used.
    pub endpoints: Vec<String>,
    /// Start of the measured phase, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Length of the measured phase.
    pub elapsed_seconds: f64,
    /// Operations attempted (for `watch-latency`: puts).
    pub operations: u64,
    /// Operations that succeeded.
    pub succeeded: u64,
    /// Operations that failed.
    pub failed: u64,
    /// Successful operations per second (for `watch-latency`: events delivered per second).
    pub throughput: f64,
    /// Latency of successful operations (for `watch-latency`: put to event delivery).
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Latency histogram.
    pub histogram: Vec<Bucket>,
    /// Latency per kind of operation, when a workload has several.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_operation: BTreeMap<String, LatencySummary>,
    /// Failures by kind (gRPC code or cause).
    pub errors: BTreeMap<String, u64>,
    /// Per-second throughput and latency.
    pub timeline: Vec<Second>,
    /// CPU time (user + system) of the whole client process during the
    /// measured phase, seconds; Linux only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_seconds: Option<f64>,
    /// Why the keys under the prefix could not be deleted, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// `check-perf` only: etcdctl's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_perf: Option<CheckPerfVerdict>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SecondAcc {
    ops: u64,
    errors: u64,
    sum_us: u64,
    max_us: u64,
}

/// What one client measured; merged into a report at the end.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    latency: Histogram<u64>,
    kinds: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    seconds: Vec<SecondAcc>,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

fn histogram() -> Histogram<u64> {
    // Constant bounds within hdrhistogram's limits: this cannot fail.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid constant histogram bounds")
}

impl Recorder {
    pub(crate) fn new(start: Instant) -> Self {
        Recorder {
            start,
            latency: histogram(),
            kinds: BTreeMap::new(),
            errors: BTreeMap::new(),
            seconds: Vec::new(),
            succeeded: 0,
            failed: 0,
        }
    }

    fn second(&mut self, at: Instant) -> &mut SecondAcc {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize(i + 1, SecondAcc::default());
        }
        &mut self.seconds[i]
    }

    /// A successful operation that started at `at` and took `latency`.
    pub(crate) fn ok(&mut self, at: Instant, latency: Duration, kind: Option<&'static str>) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.latency.saturating_record(us);
        if let Some(kind) = kind {
            self.kinds
                .entry(kind)
                .or_insert_with(histogram)
                .saturating_record(us);
        }
        self.succeeded += 1;
        let s = self.second(at);
        s.ops += 1;
        s.sum_us += us;
        s.max_us = s.max_us.max(us);
    }

    /// A failed operation.
    pub(crate) fn failed(&mut self, at: Instant, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.failed += 1;
        self.second(at).errors += 1;
    }

    /// Failures that belong to no single operation (e.g. missing watch events).
    pub(crate) fn add_errors(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_string()).or_default() += n;
        }
    }

    /// Adds `other`'s failures (not its samples) to these.
    pub(crate) fn merge_errors(&mut self, other: &Recorder) {
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    /// Adds `other`'s samples to these.
    pub(crate) fn merge(&mut self, other: Recorder) {
        let _ = self.latency.add(&other.latency);
        for (kind, h) in other.kinds {
            let _ = self.kinds.entry(kind).or_insert_with(histogram).add(&h);
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize(other.seconds.len(), SecondAcc::default());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(other.seconds) {
            mine.ops += theirs.ops;
            mine.errors += theirs.errors;
            mine.sum_us += theirs.sum_us;
            mine.max_us = mine.max_us.max(theirs.max_us);
        }
        self.succeeded += other.succeeded;
        self.failed += other.failed;
    }

    /// The report; `operations` and `throughput_samples` let `watch-latency`
    /// count puts as operations and deliveries as throughput.
    pub(crate) fn into_report(
        self,
        spec: BenchSpec,
        endpoints: Vec<String>,
        started_unix_ms: u64,
        elapsed: Duration,
        counts: Option<(u64, u64, u64)>,
    ) -> BenchReport {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let (succeeded, failed) = counts.map_or((self.succeeded, self.failed), |(_, s, f)| (s, f));
        let operations = counts.map_or(succeeded + failed, |(o, _, _)| o);
        let by_operation = if self.kinds.len() > 1 {
            self.kinds
                .iter()
                .map(|(k, h)| (k.to_string(), LatencySummary::of(h)))
                .collect()
        } else {
            BTreeMap::new()
        };
        BenchReport {
            workload: spec.workload,
            spec,
            endpoints,
            started_unix_ms,
            elapsed_seconds: elapsed.as_secs_f64(),
            operations,
            succeeded,
            failed,
            throughput: self.latency.len() as f64 / secs,
            latency: LatencySummary::of(&self.latency),
            histogram: buckets(&self.latency),
            by_operation,
            errors: self.errors,
            timeline: self
                .seconds
                .iter()
                .enumerate()
                .map(|(i, s)| Second {
                    second: i as u64,
                    ops: s.ops,
                    errors: s.errors,
                    mean_ms: if s.ops == 0 {
                        0.0
                    } else {
                        s.sum_us as f64 / s.ops as f64 / 1000.0
                    },
                    max_ms: s.max_us as f64 / 1000.0,
                })
                .collect(),
            client_cpu_seconds: None,
            cleanup_error: None,
            check_perf: None,
        }
    }
}

/// 1-2-5 buckets from 0.1 ms up to the first bound above the slowest sample.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    // Values are stored with 3 significant digits: compare their lowest equivalents.
    let top = h.lowest_equivalent(h.max());
    let mut bounds_us = Vec::new();
    let mut decade = 100u64;
    'outer: loop {
        for m in [1, 2, 5] {
            let b = decade * m;
            bounds_us.push(b);
            if b >= top || b >= MAX_MICROS {
                break 'outer;
            }
        }
        decade *= 10;
    }
    let mut counts = vec![0u64; bounds_us.len()];
    for v in h.iter_recorded() {
        let value = h.lowest_equivalent(v.value_iterated_to());
        let i = bounds_us
            .partition_point(|&b| b < value)
            .min(counts.len() - 1);
        counts[i] += v.count_at_value();
    }
    // Drop empty leading buckets so the table starts where the samples do.
    let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
    bounds_us
        .iter()
        .zip(counts)
        .skip(first)
        .map(|(&b, count)| Bucket {
            le_ms: b as f64 / 1000.0,
            count,
        })
        .collect()
}

/// Milliseconds for people: `0.412`, `12.3`, `1520`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// The report as text tables.
pub fn render_table(r: &BenchReport) -> String {
    let mut out = String::new();
    let s = &r.spec;
    let _ = writeln!(
        out,
        "workload {}  clients {}  conns {}  endpoints {}",
        r.workload.name(),
        s.clients,
        s.conns,
        r.endpoints.join(",")
    );
    let _ = writeln!(
        out,
        "operations {}  succeeded {}  failed {}  elapsed {:.2} s  throughput {:.1} ops/s",
        r.operations, r.succeeded, r.failed, r.elapsed_seconds, r.throughput
    );
    if let Some(cpu) = r.client_cpu_seconds {
        let per_op = cpu * 1e6 / (r.operations.max(1) as f64);
        let _ = writeln!(out, "client CPU {cpu:.2} s ({per_op:.0} µs per operation)");
    }
    out.push('\n');
    let header = [
        "LATENCY (ms)",
        "COUNT",
        "MIN",
        "MEAN",
        "STDDEV",
        "P50",
        "P90",
        "P95",
        "P99",
        "P99.9",
        "MAX",
    ];
    let row = |name: &str, l: &LatencySummary| -> Vec<String> {
        let mut v = vec![name.to_string(), l.count.to_string()];
        v.extend(
            [
                l.min, l.mean, l.stddev, l.p50, l.p90, l.p95, l.p99, l.p999, l.max,
            ]
            .map(fmt_ms),
        );
        v
    };
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.push(row(
        if r.workload == Workload::WatchLatency {
            "delivery"
        } else {
            "all"
        },
        &r.latency,
    ));
    for (kind, l) in &r.by_operation {
        rows.push(row(kind, l));
    }
    out.push_str(&columns(&rows));
    if !r.histogram.is_empty() {
        out.push_str("\nHISTOGRAM (ms)\n");
        let top = r
            .histogram
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(1)
            .max(1);
        for b in &r.histogram {
            let bar = "#".repeat(((b.count * 40).div_ceil(top)) as usize);
            let _ = writeln!(out, "  <= {:>8}  {:>9}  {bar}", fmt_ms(b.le_ms), b.count);
        }
    }
    if r.errors.is_empty() {
        out.push_str("\nERRORS none\n");
    } else {
        out.push_str("\nERRORS\n");
        for (kind, n) in &r.errors {
            let _ = writeln!(out, "  {kind}: {n}");
        }
    }
    if r.timeline.len() > 1 {
        out.push_str("\nTIMELINE\n");
        let mut rows = vec![
            ["SECOND", "OPS", "ERRORS", "MEAN", "MAX"]
                .map(String::from)
                .to_vec(),
        ];
        for t in &r.timeline {
            rows.push(vec![
                t.second.to_string(),
                t.ops.to_string(),
                t.errors.to_string(),
                fmt_ms(t.mean_ms),
                fmt_ms(t.max_ms),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    if let Some(e) = &r.cleanup_error {
        let _ = writeln!(out, "\nWARNING {e}");
    }
    if let Some(v) = &r.check_perf {
        out.push('\n');
        out.push_str(&v.render());
    }
    out
}

/// Left-aligned first column, right-aligned numbers.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_summarizes() {
        let start = Instant::now();
        let mut a = Recorder::new(start);
        let mut b = Recorder::new(start);
        for ms in 1..=100u64 {
            a.ok(start, Duration::from_millis(ms), Some("put"));
        }
        b.ok(
            start + Duration::from_secs(1),
            Duration::from_millis(500),
            Some("range"),
        );
        b.failed(start + Duration::from_secs(1), "Unavailable".into());
        a.merge(b);
        let r = a.into_report(
            BenchSpec::default(),
            vec![],
            0,
            Duration::from_secs(2),
            None,
        );
        assert_eq!((r.operations, r.succeeded, r.failed), (102, 101, 1));
        assert!((r.throughput - 50.5).abs() < 1e-9);
        assert!(
            r.latency.p50 >= 49.9 && r.latency.p50 <= 51.1,
            "{}",
            r.latency.p50
        );
        assert!(r.latency.max >= 499.0 && r.latency.p99 <= r.latency.max);
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 101);
        assert_eq!(r.histogram.last().map(|b| b.le_ms), Some(500.0));
        assert_eq!(r.timeline.len(), 2);
        assert_eq!((r.timeline[1].ops, r.timeline[1].errors), (1, 1));
        assert_eq!(r.by_operation.len(), 2);
        assert_eq!(r.errors.get("Unavailable"), Some(&1));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("p99").is_some() && json.get("throughput").is_some());
        assert!(render_table(&r).contains("P99.9"));
    }
}
