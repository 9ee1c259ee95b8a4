//! Which backups retention removes: a backup is kept while it is among the
//! newest `count`, or the newest of its UTC day within the last
//! `keep_daily` days; none is kept once older than `max_age`; and the
//! newest backup is never removed, whatever the policy says (a schedule
//! whose backups keep failing must not age its last good one away).

use crate::config::backup::Retention;

const DAY_MS: i64 = 86_400_000;

/// The names to remove among `backups` (`(name, created_ms)`), at `now_ms`.
pub fn plan(backups: &[(String, i64)], policy: &Retention, now_ms: i64) -> Vec<String> {
    let mut sorted: Vec<&(String, i64)> = backups.iter().collect();
    // Newest first; equal times by name, so the plan is deterministic.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let today = now_ms.div_euclid(DAY_MS);
    let mut days_kept = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, (name, at)) in sorted.iter().enumerate() {
        // The newest of its day: the first seen of that day, newest first.
        let day = at.div_euclid(DAY_MS);
        let daily = policy
            .keep_daily
            .is_some_and(|n| today - day < i64::from(n) && !days_kept.contains(&day));
        days_kept.insert(day);
        if i == 0 {
            continue;
        }
        let by_count = policy.count.is_none_or(|c| i < c);
        let too_old = policy
            .max_age
            .is_some_and(|age| now_ms - at > age.as_millis() as i64);
        let keep = (by_count && policy.count.is_some()
            || daily
            || policy.count.is_none() && policy.keep_daily.is_none())
            && !too_old;
        if !keep {
            out.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn b(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    fn policy(count: Option<usize>, max_age: Option<u64>, keep_daily: Option<u32>) -> Retention {
        Retention {
            count,
            max_age: max_age.map(Duration::from_secs),
            keep_daily,
        }
    }

    #[test]
    fn count_keeps_the_newest() {
        let list = b(&[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]);
        let mut gone = plan(&list, &policy(Some(3), None, None), 10);
        gone.sort();
        assert_eq!(gone, ["a", "b"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_recent_day() {
        let now = 10 * DAY_MS + 1000;
        // Two per day on days 10, 9, 8, 7.
        let list = b(&[
            ("d10b", 10 * DAY_MS + 500),
            ("d10a", 10 * DAY_MS + 100),
            ("d9b", 9 * DAY_MS + 500),
            ("d9a", 9 * DAY_MS + 100),
            ("d8b", 8 * DAY_MS + 500),
            ("d8a", 8 * DAY_MS + 100),
            ("d7b", 7 * DAY_MS + 500),
        ]);
        let mut gone = plan(&list, &policy(Some(1), None, Some(3)), now);
        gone.sort();
        // Kept: d10b (newest), d9b, d8b (newest of days within 3 days).
        assert_eq!(gone, ["d10a", "d7b", "d8a", "d9a"]);
    }

    #[test]
    fn max_age_removes_old_ones_but_never_the_newest() {
        let list = b(&[("old1", 0), ("old2", 1000)]);
        assert_eq!(
            plan(&list, &policy(Some(5), Some(1), None), 1_000_000),
            ["old1"]
        );
        assert!(plan(&list[1..], &policy(Some(5), Some(1), None), 1_000_000).is_empty());
    }

    #[test]
    fn without_count_or_daily_everything_young_enough_stays() {
        let list = b(&[("a", 1), ("b", 2), ("c", 3)]);
        assert!(plan(&list, &policy(None, None, None), 10).is_empty());
        assert_eq!(plan(&list, &policy(None, Some(0), None), 4000), ["b", "a"]);
    }

    proptest! {
        #[test]
        fn the_newest_stays_and_count_bounds_the_rest(
            times in proptest::collection::vec(0i64..100 * DAY_MS, 1..40),
            count in 1usize..10,
            daily in proptest::option::of(1u32..10),
            age in proptest::option::of(0u64..200 * 86_400),
        ) {
            let list: Vec<(String, i64)> =
                times.iter().enumerate().map(|(i, t)| (format!("b{i:03}"), *t)).collect();
            let now = 100 * DAY_MS;
            let p = policy(Some(count), age, daily);
            let gone = plan(&list, &p, now);
            let newest = list.iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0))).unwrap();
            prop_assert!(!gone.contains(&newest.0));
            let kept = list.len() - gone.len();
            prop_assert!(kept >= 1);
            prop_assert!(kept <= count + daily.unwrap_or(0) as usize);
            for (name, at) in &list {
                let old = age.is_some_and(|a| now - at > a as i64 * 1000);
                if old && name != &newest.0 {
                    prop_assert!(gone.contains(name));
                }
            }
            // Never a name twice, never one that is not there.
            let mut g = gone.clone();
            g.sort();
            g.dedup();
            prop_assert_eq!(g.len(), gone.len());
            prop_assert!(gone.iter().all(|n| list.iter().any(|(x, _)| x == n)));
        }
    }
}
