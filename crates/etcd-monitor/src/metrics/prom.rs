//! A parser for the Prometheus text exposition format, enough for etcd's
//! `/metrics`: samples with labels, and quantiles from histogram buckets.

use std::collections::BTreeMap;

use super::window::Histogram;

/// One sample line: `name{label="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels in order of name.
    pub labels: BTreeMap<String, String>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

/// Which samples of a family [`Scrape::parse_selected`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// None.
    None,
    /// Every one.
    All,
    /// Those whose value is not zero.
    NonZero,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Samples in page order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses a page; malformed lines are skipped (and counted in the result).
    pub fn parse(text: &str) -> (Scrape, usize) {
        Self::parse_only(text, |_| true)
    }

    /// Parses only the samples whose metric family `wanted` accepts (the
    /// name up to its first `{` or space, `_bucket`/`_sum`/`_count`
    /// included): a member's page has thousands of samples and the monitor
    /// needs a few dozen, so the rest are skipped before any allocation.
    pub fn parse_only(text: &str, wanted: impl Fn(&str) -> bool) -> (Scrape, usize) {
        Self::parse_selected(text, |name| {
            if wanted(name) {
                Select::All
            } else {
                Select::None
            }
        })
    }

    /// Like [`Scrape::parse_only`], with [`Select::NonZero`] for families
    /// whose zero samples mean nothing to the caller (etcd lists every gRPC
    /// method with every status code, nearly all zero): those are skipped
    /// before their labels are read.
    pub fn parse_selected(text: &str, select: impl Fn(&str) -> Select) -> (Scrape, usize) {
        let mut samples = Vec::new();
        let mut bad = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
            match select(&line[..name_end]) {
                Select::None => continue,
                Select::NonZero
                    if value_text(line, name_end).and_then(parse_value) == Some(0.0) =>
                {
                    continue;
                }
                Select::All | Select::NonZero => {}
            }
            match parse_line(line) {
                Some(s) => samples.push(s),
                None => bad += 1,
            }
        }
        (Scrape { samples }, bad)
    }

    /// The value of an unlabelled sample (or the first sample) named `name`.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    /// The sum over every sample named `name` whose labels include `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let total = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && matching
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum();
        found.then_some(total)
    }

    /// The `q` quantile (0..1) of histogram `name` (base name, without
    /// `_bucket`), summed over every label set, interpolated linearly inside
    /// the bucket as Prometheus' `histogram_quantile` does. `None` without
    /// observations.
    pub fn histogram_quantile(&self, name: &str, q: f64) -> Option<f64> {
        self.histogram_quantile_where(name, q, |_| true)
    }

    /// Like [`Scrape::histogram_quantile`], over the label sets `keep` accepts.
    pub fn histogram_quantile_where(
        &self,
        name: &str,
        q: f64,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Option<f64> {
        self.histogram(name, keep)?.quantile(q)
    }

    /// Histogram `name` (base name, without `_bucket`) summed over the label
    /// sets `keep` accepts; `None` when the page does not have it.
    pub fn histogram(
        &self,
        name: &str,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == bucket && keep(&s.labels))
        {
            let le = s.labels.get("le").and_then(|v| parse_value(v))?;
            let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            entry.1 += s.value;
        }
        if by_le.is_empty() {
            return None;
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram { buckets })
    }
}

/// `histogram_quantile` over cumulative `(upper bound, count)` buckets sorted by bound.
pub fn quantile_from_buckets(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !buckets.last()?.0.is_infinite() {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Prometheus answers the largest finite bound here.
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    None
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name_labels, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], line[close + 1..].trim())
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], line[sp..].trim())
        }
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    let (name, labels) = match name_labels.find('{') {
        Some(open) => (
            &name_labels[..open],
            parse_labels(&name_labels[open + 1..name_labels.len() - 1])?,
        ),
        None => (name_labels, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The value's text of a sample line whose name ends at `name_end`.
fn value_text(line: &str, name_end: usize) -> Option<&str> {
    let rest = if line[name_end..].starts_with('{') {
        &line[line.rfind('}')? + 1..]
    } else {
        &line[name_end..]
    };
    rest.split_whitespace().next()
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        // The closing quote is the first one not escaped.
        let bytes = after.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        let end = loop {
            match bytes.get(i)? {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'"' => break i,
                _ => i += 1,
            }
        };
        let raw = after.get(..end)?;
        let value = if escaped {
            let mut value = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return None,
                    },
                    c => value.push(c),
                }
            }
            value
        } else {
            raw.to_string()
        };
        labels.insert(key, value);
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(labels)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"
# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 50
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 90
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 100
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100
etcd_disk_wal_fsync_duration_seconds_sum 0.1
etcd_disk_wal_fsync_duration_seconds_count 100
etcd_server_has_leader 1
etcd_server_quota_backend_bytes 2.147483648e+09
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
"#;

    #[test]
    fn zero_samples_of_a_nonzero_family_are_skipped_before_their_labels() {
        let (s, bad) = Scrape::parse_selected(PAGE, |name| match name {
            "grpc_server_handled_total" => Select::NonZero,
            "etcd_server_has_leader" => Select::All,
            _ => Select::None,
        });
        assert_eq!(bad, 0);
        assert_eq!(s.samples.len(), 3);
        let page = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\"} 0\n\
                    grpc_server_handled_total{grpc_code=\"Un}\\\"x\",grpc_method=\"Put\"} 2\n\
                    grpc_server_handled_total 0\n";
        let (s, bad) = Scrape::parse_selected(page, |_| Select::NonZero);
        assert_eq!(bad, 0);
        assert_eq!(s.samples.len(), 1);
        assert_eq!(s.samples[0].labels["grpc_code"], "Un}\"x");
        assert_eq!(s.samples[0].value, 2.0);
    }

    #[test]
    fn parses_values_labels_and_quantiles() {
        let (s, bad) = Scrape::parse(PAGE);
        assert_eq!(bad, 0);
        assert_eq!(s.value("etcd_server_has_leader"), Some(1.0));
        assert_eq!(
            s.value("etcd_server_quota_backend_bytes"),
            Some(2147483648.0)
        );
        assert_eq!(
            s.sum("grpc_server_handled_total", &[("grpc_code", "OK")]),
            Some(7.0)
        );
        assert_eq!(s.sum("grpc_server_handled_total", &[]), Some(10.0));
        // rank 50 of 100 falls at the top of the first bucket.
        assert_eq!(
            s.histogram_quantile("etcd_disk_wal_fsync_duration_seconds", 0.5),
            Some(0.001)
        );
        // rank 99: bucket (0.002, 0.004] holds 10, 9 of them below rank 99.
        let p99 = s
            .histogram_quantile("etcd_disk_wal_fsync_duration_seconds", 0.99)
            .unwrap();
        assert!((p99 - 0.0038).abs() < 1e-9, "{p99}");
        assert_eq!(s.histogram_quantile("missing", 0.99), None);
    }

    #[test]
    fn escaped_labels_and_garbage() {
        let (s, bad) = Scrape::parse("m{a=\"x\\\"y\",b=\"z\"} 2\nnot a sample\n");
        assert_eq!(bad, 1);
        assert_eq!(s.samples[0].labels["a"], "x\"y");
        assert_eq!(s.samples[0].labels["b"], "z");
    }
}
