//! Active probes: a linearizable get, a put to a monitor-owned key and a
//! serializable get, with latency percentiles over a rolling window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use serde::Serialize;

/// The key the monitor writes to measure write latency. One key per
/// cluster, overwritten each round: no growth beyond etcd's revisions.
pub const PROBE_KEY: &str = "__etcd_monitor/probe";

/// Latency figures of one probe kind over the rolling window.
#[derive(Debug, Clone, Serialize, Default, PartialEq, utoipa::ToSchema)]
pub struct LatencySummary {
    /// Successful requests in the window.
    pub count: usize,
    /// Failed requests in the window.
    pub errors: usize,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest, ms.
    pub max_ms: Option<f64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Every successful request since the monitor started, as a cumulative
    /// histogram (for Prometheus).
    pub histogram: CumulativeHistogram,
    /// Failed requests since the monitor started.
    pub errors_total: u64,
}

/// Upper bounds of the probe latency histogram, milliseconds.
pub const BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// A cumulative latency histogram, Prometheus-style.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CumulativeHistogram {
    /// Upper bounds, ms ([`BUCKETS_MS`]).
    pub bounds_ms: Vec<f64>,
    /// Observations at or below each bound (cumulative).
    pub cumulative_counts: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Sum of observations, ms.
    pub sum_ms: f64,
}

impl Default for CumulativeHistogram {
    fn default() -> Self {
        CumulativeHistogram {
            bounds_ms: BUCKETS_MS.to_vec(),
            cumulative_counts: vec![0; BUCKETS_MS.len()],
            count: 0,
            sum_ms: 0.0,
        }
    }
}

impl CumulativeHistogram {
    fn observe(&mut self, ms: f64) {
        for (bound, count) in self.bounds_ms.iter().zip(self.cumulative_counts.iter_mut()) {
            if ms <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_ms += ms;
    }
}

/// All probe kinds.
#[derive(Debug, Clone, Serialize, Default, PartialEq, utoipa::ToSchema)]
pub struct ProbeReport {
    /// Linearizable get (goes through the leader and a quorum).
    pub linearizable_get: LatencySummary,
    /// Put to the monitor's probe key (a raft proposal).
    pub put: LatencySummary,
    /// Serializable get (served locally by a member).
    pub serializable_get: LatencySummary,
}

#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<Result<f64, String>>,
    histogram: CumulativeHistogram,
    errors_total: u64,
}

impl Window {
    const CAPACITY: usize = 600;

    fn push(&mut self, r: Result<f64, String>) {
        match &r {
            Ok(ms) => self.histogram.observe(*ms),
            Err(_) => self.errors_total += 1,
        }
        if self.samples.len() == Self::CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(r);
    }

    fn summary(&self) -> LatencySummary {
        let mut ok: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        ok.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            (!ok.is_empty())
                .then(|| ok[((ok.len() as f64 * q).ceil() as usize).clamp(1, ok.len()) - 1])
        };
        LatencySummary {
            count: ok.len(),
            errors: self.samples.len() - ok.len(),
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            p99_ms: pct(0.99),
            max_ms: ok.last().copied(),
            last_error: self
                .samples
                .iter()
                .rev()
                .find_map(|r| r.as_ref().err().cloned()),
            histogram: self.histogram.clone(),
            errors_total: self.errors_total,
        }
    }
}

/// Runs probes and keeps their windows.
#[derive(Debug, Default)]
pub(crate) struct Prober {
    lin: Window,
    put: Window,
    ser: Window,
}

impl Prober {
    /// Runs `n` of each probe through `client`, each bounded by `timeout`.
    /// Returns the latest header revision seen.
    pub(crate) async fn round(
        &mut self,
        client: &mut Client,
        n: u32,
        timeout: Duration,
    ) -> Option<i64> {
        let mut revision = None;
        for _ in 0..n {
            let t = Instant::now();
            let value = format!("{}", crate::store::unix_ms(std::time::SystemTime::now()));
            let r = bounded(timeout, client.put(PROBE_KEY, value, None)).await;
            if let Ok(resp) = &r {
                revision = resp.header().map(|h| h.revision()).or(revision);
            }
            self.put.push(r.map(|_| ms(t)));

            let t = Instant::now();
            let r = bounded(timeout, client.get(PROBE_KEY, None)).await;
            if let Ok(resp) = &r {
                revision = resp.header().map(|h| h.revision()).or(revision);
            }
            self.lin.push(r.map(|_| ms(t)));

            let t = Instant::now();
            let r = bounded(
                timeout,
                client.get(PROBE_KEY, Some(GetOptions::new().with_serializable())),
            )
            .await;
            self.ser.push(r.map(|_| ms(t)));
        }
        revision
    }

    /// Records that no client could be had this round.
    pub(crate) fn all_failed(&mut self, n: u32, error: &str) {
        for _ in 0..n {
            for w in [&mut self.lin, &mut self.put, &mut self.ser] {
                w.push(Err(error.to_string()));
            }
        }
    }

    pub(crate) fn report(&self) -> ProbeReport {
        ProbeReport {
            linearizable_get: self.lin.summary(),
            put: self.put.summary(),
            serializable_get: self.ser.summary(),
        }
    }
}

async fn bounded<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::connection::cause_chain(&e)),
        Err(_) => Err(format!(
            "timed out after {}",
            crate::config::duration::format(&timeout)
        )),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_window() {
        let mut w = Window::default();
        for i in 1..=100 {
            w.push(Ok(i as f64));
        }
        w.push(Err("boom".into()));
        let s = w.summary();
        assert_eq!((s.count, s.errors), (100, 1));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        assert_eq!((s.histogram.count, s.errors_total), (100, 1));
        assert_eq!(
            s.histogram.cumulative_counts[4], 10,
            "10 observations at or below 10 ms"
        );
        for _ in 0..Window::CAPACITY {
            w.push(Ok(1.0));
        }
        assert_eq!(
            w.summary().max_ms,
            Some(1.0),
            "old samples leave the window"
        );
    }
}
