//! Figures over a sliding window of scrapes, the way Prometheus computes
//! `increase(counter[5m])` and `histogram_quantile(0.99, rate(h_bucket[5m]))`:
//! from the differences between consecutive scrapes, not from the totals a
//! member has accumulated since it started. A p99 over a member's whole life
//! barely moves when its disk turns slow after weeks of fast fsyncs, and
//! never forgets a past spike; a p99 over the last minutes does both.
//!
//! Counter resets (a member restarted) are detected per pair of consecutive
//! scrapes: a value lower than the previous one starts again from zero, so
//! the increase of that pair is the new value. Scrapes that failed are simply
//! missing from the series; the increase spans the gap. Nothing is
//! extrapolated to the window's edges: the figures cover the time between
//! the oldest and the newest scrape in the window, which is reported beside
//! them.

use std::collections::VecDeque;
use std::time::Duration;

use super::prom::quantile_from_buckets;

/// A cumulative histogram as a member exposes it: for each upper bound, the
/// observations at or below it, sorted by bound, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(upper bound, cumulative count)`.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Observations in all (the `+Inf` bucket).
    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile (0..1), as `histogram_quantile` computes it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_from_buckets(&self.buckets, q)
    }

    /// What was observed between `earlier` and `self`: bucket by bucket the
    /// difference, or all of `self` when the member restarted in between
    /// (fewer observations than before) or changed its bucket layout.
    fn since(&self, earlier: &Histogram) -> Histogram {
        let same_layout = self.buckets.len() == earlier.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .all(|(a, b)| a.0 == b.0);
        if !same_layout || self.total() < earlier.total() {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, then)| (now.0, (now.1 - then.1).max(0.0)))
                .collect(),
        }
    }

    /// Adds `other`'s counts bucket by bucket (same layout), or starts over
    /// from `other` when the layouts differ.
    fn add(&mut self, other: &Histogram) {
        if self.buckets.len() != other.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&other.buckets)
                .any(|(a, b)| a.0 != b.0)
        {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

/// How much a counter grew over a series, and over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    /// The growth, resets accounted for.
    pub value: f64,
    /// Seconds between the first and the last point.
    pub seconds: f64,
}

impl Increase {
    /// Per second; `None` over no time.
    pub fn rate(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.value / self.seconds)
    }
}

/// The increase of a counter over `(at_ms, value)` points in time order:
/// the sum of the increases between consecutive points, a decrease counting
/// as a reset to zero. `None` with fewer than two points.
pub fn increase(points: impl IntoIterator<Item = (i64, f64)>) -> Option<Increase> {
    let mut points = points.into_iter();
    let (first_at, mut previous) = points.next()?;
    let mut last_at = first_at;
    let mut value = 0.0;
    for (at, v) in points {
        value += if v >= previous { v - previous } else { v };
        previous = v;
        last_at = at;
    }
    (last_at > first_at).then(|| Increase {
        value,
        seconds: (last_at - first_at) as f64 / 1e3,
    })
}

/// What a histogram observed over `(at_ms, histogram)` points in time order,
/// resets accounted for, and over how long. `None` with fewer than two
/// points.
pub fn histogram_increase<'a>(
    points: impl IntoIterator<Item = (i64, &'a Histogram)>,
) -> Option<(Histogram, f64)> {
    let mut points = points.into_iter();
    let (first_at, mut previous) = points.next()?;
    let mut last_at = first_at;
    let mut sum: Option<Histogram> = None;
    for (at, h) in points {
        let delta = h.since(previous);
        match &mut sum {
            Some(s) => s.add(&delta),
            None => sum = Some(delta),
        }
        previous = h;
        last_at = at;
    }
    sum.map(|s| (s, (last_at - first_at) as f64 / 1e3))
}

/// The scrapes of the last `span`, oldest first.
#[derive(Debug, Clone)]
pub struct Window<T> {
    span: Duration,
    /// Kept points are at least this far apart (ms), except the newest.
    step_ms: i64,
    points: VecDeque<(i64, T)>,
}

impl<T> Window<T> {
    /// An empty window over `span` that keeps every point.
    pub fn new(span: Duration) -> Self {
        Window {
            span,
            step_ms: 0,
            points: VecDeque::new(),
        }
    }

    /// An empty window over `span` that keeps about `points` of what is
    /// pushed (one per `span / points`) and always the newest: the newest
    /// replaces the one before it while that one is closer than the step
    /// to its predecessor. Increases over the kept points are the same as
    /// over all of them, except that a counter reset inside a step loses
    /// what the counter gained before it (as with a longer scrape interval).
    pub fn thinned(span: Duration, points: u32) -> Self {
        Window {
            span,
            step_ms: (span / points.max(1)).as_millis() as i64,
            points: VecDeque::new(),
        }
    }

    /// Adds a point taken at `at_ms` and forgets those older than the span.
    pub fn push(&mut self, at_ms: i64, value: T) {
        let n = self.points.len();
        if n >= 2 && self.points[n - 1].0 - self.points[n - 2].0 < self.step_ms {
            self.points.pop_back();
        }
        self.points.push_back((at_ms, value));
        let from = at_ms - self.span.as_millis() as i64;
        while self.points.front().is_some_and(|(at, _)| *at < from) {
            self.points.pop_front();
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = (i64, &T)> + Clone {
        self.points.iter().map(|(at, v)| (*at, v))
    }

    /// The newest point's time.
    pub fn last_at(&self) -> Option<i64> {
        self.points.back().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(counts: &[f64]) -> Histogram {
        let bounds = [0.001, 0.01, 0.1, 1.0, f64::INFINITY];
        Histogram {
            buckets: bounds.iter().copied().zip(counts.iter().copied()).collect(),
        }
    }

    #[test]
    fn a_counter_grows_across_a_reset_and_a_gap() {
        // 10 -> 15 (+5), restart -> 3 (+3), 3 -> 9 (+6); the point at 3 s is missing.
        let inc = increase([(0, 10.0), (1000, 15.0), (2000, 3.0), (4000, 9.0)]).unwrap();
        assert_eq!(inc.value, 14.0);
        assert_eq!(inc.seconds, 4.0);
        assert_eq!(inc.rate(), Some(3.5));
        assert_eq!(increase([(0, 1.0)]), None);
        assert_eq!(increase(std::iter::empty()), None);
    }

    #[test]
    fn a_slow_minute_after_a_fast_month_shows_in_the_window_only() {
        // A month of fast fsyncs (all under 1 ms), then 20 slow ones (under 1 s).
        let month = h(&[1e6, 1e6, 1e6, 1e6, 1e6]);
        let now = h(&[1e6, 1e6, 1e6, 1e6 + 20.0, 1e6 + 20.0]);
        let cumulative = now.quantile(0.99).unwrap();
        assert!(cumulative <= 0.001, "since start: {cumulative}");
        let (window, secs) = histogram_increase([(0, &month), (60_000, &now)]).unwrap();
        assert_eq!(secs, 60.0);
        assert_eq!(window.total(), 20.0);
        let p99 = window.quantile(0.99).unwrap();
        // All 20 in (0.1, 1]: rank 19.8 of 20 interpolates to 0.1 + 0.9 * 0.99.
        assert!((p99 - (0.1 + 0.9 * 0.99)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn a_restart_starts_the_histogram_over() {
        let before = h(&[100.0, 100.0, 100.0, 100.0, 100.0]);
        // Restarted: 4 slow observations since.
        let after = h(&[0.0, 0.0, 0.0, 4.0, 4.0]);
        let later = h(&[0.0, 0.0, 0.0, 6.0, 6.0]);
        let (w, _) = histogram_increase([(0, &before), (1000, &after), (2000, &later)]).unwrap();
        assert_eq!(w.buckets, h(&[0.0, 0.0, 0.0, 6.0, 6.0]).buckets);
        // Nothing observed: no quantile.
        let (idle, _) = histogram_increase([(0, &before), (1000, &before)]).unwrap();
        assert_eq!(idle.quantile(0.99), None);
        assert!(histogram_increase([(0, &before)]).is_none());
    }

    #[test]
    fn a_thinned_window_keeps_one_point_per_step_and_the_newest() {
        // 60 s span, 6 points: one per 10 s. Pushed every 3 s.
        let mut w = Window::thinned(Duration::from_secs(60), 6);
        for s in 0..=40 {
            w.push(s * 3000, s * 3);
        }
        let kept: Vec<i64> = w.points().map(|(at, _)| at / 1000).collect();
        // 120 s pushed: the span keeps 60..=120; steps of at least 10 s, then the newest.
        assert_eq!(kept.first(), Some(&60));
        assert_eq!(kept.last(), Some(&120));
        for pair in kept.windows(2).take(kept.len() - 2) {
            assert!(pair[1] - pair[0] >= 10, "{kept:?}");
        }
        assert!(kept.len() <= 8, "{kept:?}");
        // A counter's increase over the kept points is its increase over all.
        let inc = increase(w.points().map(|(at, v)| (at, *v as f64))).unwrap();
        assert_eq!(inc.value, 60.0);
        assert_eq!(inc.seconds, 60.0);
    }

    #[test]
    fn a_window_keeps_its_span() {
        let mut w = Window::new(Duration::from_secs(10));
        for s in 0..30 {
            w.push(s * 1000, s);
        }
        let kept: Vec<i64> = w.points().map(|(at, _)| at).collect();
        assert_eq!(kept.first(), Some(&19_000));
        assert_eq!(kept.last(), Some(&29_000));
        assert_eq!(w.last_at(), Some(29_000));
    }
}
