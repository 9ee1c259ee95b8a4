//! Growth between two scans of the same prefix: which prefixes gained keys
//! and bytes, and how fast.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::KeyspaceReport;

/// How one prefix changed between two scans.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PrefixGrowth {
    /// The prefix.
    pub prefix: String,
    /// Its level below the scanned prefix.
    pub depth: usize,
    /// Keys in the earlier scan (0: the prefix was not there).
    pub keys_before: u64,
    /// Keys in the later scan.
    pub keys_after: u64,
    /// Key and value bytes in the earlier scan.
    pub bytes_before: u64,
    /// Key and value bytes in the later scan.
    pub bytes_after: u64,
    /// `bytes_after - bytes_before`.
    pub bytes_delta: i64,
    /// `bytes_delta` per hour between the two scans.
    pub bytes_per_hour: f64,
}

/// What grew between two scans, fastest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Growth {
    /// The scanned prefix (both scans').
    pub prefix: String,
    /// When the earlier scan started (ms since epoch).
    pub from_at_ms: i64,
    /// When the later scan started.
    pub to_at_ms: i64,
    /// The earlier scan's revision.
    pub from_revision: i64,
    /// The later scan's revision.
    pub to_revision: i64,
    /// Hours between the two.
    pub hours: f64,
    /// Key and value bytes gained in all (negative: lost).
    pub bytes_delta: i64,
    /// Every prefix in either scan, by `bytes_delta`, largest first.
    pub prefixes: Vec<PrefixGrowth>,
}

/// The growth between the two newest complete scheduled scans of a cluster
/// with the growth rules it is judged by (`keyspace.growth_rules`).
#[derive(Debug, Clone, PartialEq)]
pub struct GrowthCheck {
    /// The growth.
    pub growth: Growth,
    /// The rules.
    pub rules: Vec<crate::config::keyspace::GrowthRule>,
}

impl GrowthCheck {
    /// Each rule with its prefix's bytes per hour (0 when the prefix is in
    /// neither scan) and whether that exceeds `factor` x its limit.
    pub fn judged(&self, factor: f64) -> Vec<(&crate::config::keyspace::GrowthRule, f64, bool)> {
        self.rules
            .iter()
            .map(|r| {
                let rate = self
                    .growth
                    .prefixes
                    .iter()
                    .find(|p| p.prefix == r.prefix)
                    .map_or(0.0, |p| p.bytes_per_hour);
                (r, rate, rate > factor * r.max_bytes_per_hour as f64)
            })
            .collect()
    }
}

/// The growth from `before` to `after`. Errors when they scanned different
/// prefixes or are not in time order.
pub fn growth(before: &KeyspaceReport, after: &KeyspaceReport) -> Result<Growth, String> {
    if before.prefix != after.prefix {
        return Err(format!(
            "the scans cover different prefixes ({:?} and {:?})",
            before.prefix, after.prefix
        ));
    }
    let ms = after.at_ms - before.at_ms;
    if ms <= 0 {
        return Err(format!(
            "the earlier scan (at {} ms) is not older than the later one (at {} ms)",
            before.at_ms, after.at_ms
        ));
    }
    let hours = ms as f64 / 3_600_000.0;
    let mut both: BTreeMap<(usize, &str), (u64, u64, u64, u64)> = BTreeMap::new();
    for p in &before.prefixes {
        let e = both.entry((p.depth, &p.prefix)).or_default();
        e.0 = p.keys;
        e.1 = p.key_bytes + p.value_bytes;
    }
    for p in &after.prefixes {
        let e = both.entry((p.depth, &p.prefix)).or_default();
        e.2 = p.keys;
        e.3 = p.key_bytes + p.value_bytes;
    }
    let mut prefixes: Vec<PrefixGrowth> = both
        .into_iter()
        .map(|((depth, prefix), (kb, bb, ka, ba))| {
            let bytes_delta = ba as i64 - bb as i64;
            PrefixGrowth {
                prefix: prefix.to_string(),
                depth,
                keys_before: kb,
                keys_after: ka,
                bytes_before: bb,
                bytes_after: ba,
                bytes_delta,
                bytes_per_hour: bytes_delta as f64 / hours,
            }
        })
        .collect();
    prefixes.sort_by(|a, b| {
        b.bytes_delta
            .cmp(&a.bytes_delta)
            .then(a.depth.cmp(&b.depth))
            .then(a.prefix.cmp(&b.prefix))
    });
    let total = |r: &KeyspaceReport| (r.key_bytes + r.value_bytes) as i64;
    Ok(Growth {
        prefix: after.prefix.clone(),
        from_at_ms: before.at_ms,
        to_at_ms: after.at_ms,
        from_revision: before.revision,
        to_revision: after.revision,
        hours,
        bytes_delta: total(after) - total(before),
        prefixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Aggregator;

    fn report(at_ms: i64, keys: &[(&str, u64)]) -> KeyspaceReport {
        let mut a = Aggregator::new(b"", 2, 0, 100);
        for (k, v) in keys {
            a.add(k.as_bytes(), *v, 1);
        }
        let (key_bytes, value_bytes) = a.bytes();
        let scanned_keys = a.keys();
        let (prefixes, top_keys, resources) = a.finish();
        KeyspaceReport {
            scanned_keys,
            revision: at_ms,
            prefixes,
            top_keys,
            resources,
            prefix: String::new(),
            depth: 2,
            key_bytes,
            value_bytes,
            at_ms,
            ..KeyspaceReport::default()
        }
    }

    #[test]
    fn the_fastest_growing_prefix_comes_first_with_its_rate() {
        let before = report(0, &[("/a/x/1", 100), ("/b/y/1", 100)]);
        let after = report(
            1_800_000,
            &[
                ("/a/x/1", 100),
                ("/b/y/1", 100),
                ("/b/y/2", 1000),
                ("/c/z/1", 10),
            ],
        );
        let g = growth(&before, &after).unwrap();
        assert_eq!(g.hours, 0.5);
        assert_eq!(g.prefixes[0].prefix, "/b/");
        assert_eq!(g.prefixes[0].bytes_delta, 1006);
        assert_eq!(g.prefixes[0].bytes_per_hour, 2012.0);
        assert_eq!(
            (g.prefixes[0].keys_before, g.prefixes[0].keys_after),
            (1, 2)
        );
        let c = g.prefixes.iter().find(|p| p.prefix == "/c/").unwrap();
        assert_eq!(
            (c.keys_before, c.bytes_before),
            (0, 0),
            "new prefixes start from nothing"
        );
        assert_eq!(g.bytes_delta, 1006 + 16);
        assert!(growth(&after, &before).is_err(), "not in time order");
    }
}
