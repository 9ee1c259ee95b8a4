//! Hot writes: puts, deletes and value bytes per prefix bucket over the
//! last minute, fed by a watch (`keyspace.hot_writes`).
//!
//! Each bucket keeps one slot per second for the last [`HISTORY_SECS`]
//! seconds, so any window up to a minute is a sum of slots (the oldest one
//! weighted by how much of it the window covers). Memory is bounded:
//! at most `max_buckets` buckets plus one fold bucket `<prefix>*` per
//! watched prefix (for the rest), each a fixed ring of about 1.5 KiB;
//! buckets quiet for a minute are dropped when room is needed.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

/// Seconds of history per bucket: the longest window.
pub const HISTORY_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The second (ms since epoch / 1000) this slot counts; others are stale.
    second: u64,
    puts: u32,
    deletes: u32,
    value_bytes: u64,
}

#[derive(Debug)]
struct Bucket {
    slots: Box<[Slot; HISTORY_SECS as usize]>,
    last_second: u64,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            slots: Box::new([Slot::default(); HISTORY_SECS as usize]),
            last_second: 0,
        }
    }

    fn slot(&mut self, second: u64) -> &mut Slot {
        let s = &mut self.slots[(second % HISTORY_SECS) as usize];
        if s.second != second {
            *s = Slot {
                second,
                ..Slot::default()
            };
        }
        self.last_second = self.last_second.max(second);
        s
    }

    /// Puts, deletes and value bytes in `(from_ms, to_ms]`, the slot
    /// holding `from_ms` weighted by the part of it inside.
    fn sum(&self, from_ms: u64, to_ms: u64) -> (f64, f64, f64) {
        let (mut p, mut d, mut b) = (0.0, 0.0, 0.0);
        for s in self.slots.iter() {
            let (start, end) = (s.second * 1000, s.second * 1000 + 1000);
            if s.second == 0 || end <= from_ms || start > to_ms {
                continue;
            }
            let w = if start < from_ms {
                (end - from_ms) as f64 / 1000.0
            } else {
                1.0
            };
            p += w * f64::from(s.puts);
            d += w * f64::from(s.deletes);
            b += w * s.value_bytes as f64;
        }
        (p, d, b)
    }
}

/// One bucket's rates over a window, as `GET .../keyspace/hot` and
/// `/metrics` report it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HotBucket {
    /// The prefix (keys up to `depth` levels below a watched prefix; `*`
    /// at the end: buckets folded past `max_buckets`).
    pub prefix: String,
    /// Puts and deletes per second.
    pub writes_per_second: f64,
    /// Puts per second.
    pub puts_per_second: f64,
    /// Deletes per second.
    pub deletes_per_second: f64,
    /// Value bytes written per second (puts only).
    pub value_bytes_per_second: f64,
    /// Puts in the window.
    pub puts: u64,
    /// Deletes in the window.
    pub deletes: u64,
    /// Value bytes written in the window.
    pub value_bytes: u64,
}

/// Counts writes per prefix bucket.
#[derive(Debug)]
pub struct HotTracker {
    prefixes: Vec<String>,
    depth: usize,
    max_buckets: usize,
    buckets: HashMap<String, Bucket>,
    started_ms: u64,
    events: u64,
}

impl HotTracker {
    /// A tracker of keys under `prefixes` (each key counted under the
    /// longest that it starts with), bucketed `depth` levels below it (by
    /// `/`, as the keyspace scan counts levels), at most `max_buckets`
    /// buckets; started at `now_ms`.
    pub fn new(prefixes: &[String], depth: usize, max_buckets: usize, now_ms: u64) -> Self {
        HotTracker {
            prefixes: prefixes.to_vec(),
            depth: depth.max(1),
            max_buckets: max_buckets.max(1),
            buckets: HashMap::new(),
            started_ms: now_ms,
            events: 0,
        }
    }

    /// Events counted since the start.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The bucket of `key`: the key up to its `depth`-th level boundary
    /// below the watched prefix it falls under (a `/` right at the start of
    /// the rest does not count, as in the scan), or up to its last one when
    /// it has fewer; the watched prefix itself when it has none.
    fn bucket_of<'k>(&self, key: &'k str) -> &'k str {
        let base = self
            .prefixes
            .iter()
            .filter(|p| key.starts_with(p.as_str()))
            .map(String::len)
            .max()
            .unwrap_or(0);
        let rest = &key.as_bytes()[base..];
        let mut end = if rest.first() == Some(&b'/') {
            base + 1
        } else {
            base
        };
        let mut level = 0;
        for (i, b) in rest.iter().enumerate() {
            if *b != b'/' || i == 0 {
                continue;
            }
            level += 1;
            end = base + i + 1;
            if level == self.depth {
                break;
            }
        }
        &key[..end]
    }

    /// Counts a put (`Some(value bytes)`) or a delete (`None`) of `key`
    /// at `now_ms`.
    pub fn record(&mut self, key: &str, put: Option<u64>, now_ms: u64) {
        self.events += 1;
        let second = now_ms / 1000;
        let bucket = self.bucket_of(key);
        let b = if let Some(b) = self.buckets.get_mut(bucket) {
            b
        } else {
            if self.buckets.len() >= self.max_buckets {
                self.evict(now_ms);
            }
            let name = if self.buckets.len() >= self.max_buckets {
                let base = self
                    .prefixes
                    .iter()
                    .filter(|p| key.starts_with(p.as_str()))
                    .max_by_key(|p| p.len())
                    .map(String::as_str)
                    .unwrap_or("");
                format!("{base}*")
            } else {
                bucket.to_string()
            };
            self.buckets.entry(name).or_insert_with(Bucket::new)
        };
        let s = b.slot(second);
        match put {
            Some(bytes) => {
                s.puts = s.puts.saturating_add(1);
                s.value_bytes = s.value_bytes.saturating_add(bytes);
            }
            None => s.deletes = s.deletes.saturating_add(1),
        }
    }

    /// Drops buckets with no write in the last minute.
    pub fn evict(&mut self, now_ms: u64) {
        let oldest = (now_ms / 1000).saturating_sub(HISTORY_SECS);
        self.buckets.retain(|_, b| b.last_second > oldest);
    }

    /// The `top` buckets by writes per second over the `window_secs`
    /// (1 to 60) before `now_ms`, busiest first. A tracker younger than
    /// the window divides by its age instead.
    pub fn top(&self, window_secs: u64, top: usize, now_ms: u64) -> Vec<HotBucket> {
        let window_ms = window_secs.clamp(1, HISTORY_SECS) * 1000;
        let from_ms = now_ms.saturating_sub(window_ms).max(self.started_ms);
        let secs = (now_ms.saturating_sub(from_ms)).max(1) as f64 / 1000.0;
        let mut out: Vec<HotBucket> = self
            .buckets
            .iter()
            .filter_map(|(prefix, b)| {
                let (p, d, bytes) = b.sum(from_ms, now_ms);
                (p + d > 0.0).then(|| HotBucket {
                    prefix: prefix.clone(),
                    writes_per_second: (p + d) / secs,
                    puts_per_second: p / secs,
                    deletes_per_second: d / secs,
                    value_bytes_per_second: bytes / secs,
                    puts: p.round() as u64,
                    deletes: d.round() as u64,
                    value_bytes: bytes.round() as u64,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.writes_per_second
                .total_cmp(&a.writes_per_second)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        out.truncate(top);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn keys_are_bucketed_by_level_below_their_watched_prefix() {
        let t = HotTracker::new(&["".into()], 2, 100, T0);
        assert_eq!(t.bucket_of("/registry/events/ns/e1"), "/registry/events/");
        assert_eq!(t.bucket_of("/registry/events"), "/registry/");
        assert_eq!(t.bucket_of("/top"), "/");
        assert_eq!(t.bucket_of("plain"), "");
        assert_eq!(t.bucket_of("a/b/c/d"), "a/b/");
        let t = HotTracker::new(&["/registry/".into(), "/other/".into()], 1, 100, T0);
        assert_eq!(t.bucket_of("/registry/pods/ns/p"), "/registry/pods/");
        assert_eq!(t.bucket_of("/other/x"), "/other/");
    }

    #[test]
    fn rates_cover_exactly_the_window() {
        let mut t = HotTracker::new(&["".into()], 2, 100, T0);
        // 100 puts of 10 bytes a second to /a/x/ for 20 s, 10 deletes a
        // second to /b/y/ for the last 5 s.
        for sec in 0..20u64 {
            for i in 0..100u64 {
                t.record("/a/x/k", Some(10), T0 + sec * 1000 + i * 10);
            }
            if sec >= 15 {
                for i in 0..10u64 {
                    t.record("/b/y/k", None, T0 + sec * 1000 + i * 100);
                }
            }
        }
        let now = T0 + 20_000;
        let top = t.top(10, 10, now);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].prefix, "/a/x/");
        assert!((top[0].puts_per_second - 100.0).abs() < 1e-9, "{top:?}");
        assert!((top[0].value_bytes_per_second - 1000.0).abs() < 1e-9);
        assert_eq!((top[0].puts, top[0].deletes), (1000, 0));
        assert_eq!(top[1].prefix, "/b/y/");
        assert!((top[1].deletes_per_second - 5.0).abs() < 1e-9, "{top:?}");
        // Half a second later the window starts half-way into a slot.
        let top = t.top(10, 10, now + 500);
        assert!((top[0].puts_per_second - 95.0).abs() < 1e-9, "{top:?}");
        // A minute covers the tracker's age only: 20 s.
        let top = t.top(60, 1, now);
        assert_eq!(top.len(), 1);
        assert!((top[0].puts_per_second - 100.0).abs() < 1e-9, "{top:?}");
        // A minute after the last write nothing is left.
        assert!(t.top(60, 10, now + 61_000).is_empty());
        t.evict(now + 61_000);
        assert!(t.is_empty());
    }

    #[test]
    fn buckets_past_the_cap_fold_and_the_ring_is_reused() {
        let mut t = HotTracker::new(&["/r/".into()], 1, 3, T0);
        for i in 0..10 {
            t.record(&format!("/r/b{i}/k"), Some(1), T0);
        }
        // Three real buckets and the fold bucket of /r/.
        assert_eq!(t.len(), 4);
        let top = t.top(10, 10, T0 + 1000);
        let names: Vec<&str> = top.iter().map(|b| b.prefix.as_str()).collect();
        assert_eq!(names, ["/r/*", "/r/b0/", "/r/b1/", "/r/b2/"]);
        assert_eq!(top[0].puts, 7);
        assert_eq!(t.events(), 10);
        // Two minutes on, the ring's slots are reused: old counts do not leak.
        t.record("/r/b0/k", Some(1), T0 + 120_000);
        let top = t.top(60, 10, T0 + 121_000);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].prefix.as_str(), top[0].puts), ("/r/b0/", 1));
    }
}
