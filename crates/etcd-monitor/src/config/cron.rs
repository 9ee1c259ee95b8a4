//! Cron schedules in UTC: `MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, e.g.
//! `0 3 * * Sat` (03:00 every Saturday) or `*/30 1-5 * * Mon-Fri`.
//!
//! Each field is `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or a
//! comma-separated list of those. Months and days of the week may be named
//! (`Jan`, `Mon`); day of the week 0 and 7 are both Sunday. As in cron,
//! when both day fields are restricted, a day matching either one matches.

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A parsed cron schedule (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
    text: String,
}

/// The allowed values of one field, as a bit set.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + min);
        }
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{name} {v:?} is not {min} to {max}{}",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" or {}..{}", names[0], names[names.len() - 1])
                }
            )),
        }
    };
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(n) if n > 0 => (r, n),
                _ => return Err(format!("{name}: step {s:?} is not a positive number")),
            },
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("{name}: range {range:?} goes backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

impl Cron {
    /// Whether the minute starting at `unix_secs` (UTC) is scheduled.
    pub fn matches(&self, unix_secs: i64) -> bool {
        let minute_of_day = unix_secs.rem_euclid(86_400) / 60;
        let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
        let days = unix_secs.div_euclid(86_400);
        let (_, month, day) = civil(days);
        // 1970-01-01 was a Thursday (4, with Sunday 0).
        let weekday = (days + 4).rem_euclid(7);
        let day_ok = self.days & (1 << day) != 0;
        let weekday_ok = self.weekdays & (1 << weekday) != 0;
        let dated = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day_ok,
            (true, false) => weekday_ok,
            (false, false) => day_ok || weekday_ok,
        };
        self.minutes & (1 << minute) != 0
            && self.hours & (1 << hour) != 0
            && self.months & (1 << month) != 0
            && dated
    }

    /// The first scheduled minute strictly after `unix_secs`, within a
    /// year and a day (`None`: never, e.g. `0 0 31 2 *`).
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let mut t = unix_secs.div_euclid(60) * 60 + 60;
        for _ in 0..(366 * 24 * 60 + 1) {
            if self.matches(t) {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = parts.as_slice() else {
            return Err(format!(
                "schedule {text:?}: expected 5 fields MIN HOUR DAY MONTH WEEKDAY (UTC), e.g. \"0 3 * * Sat\""
            ));
        };
        let at = |e: String| format!("schedule {text:?}: {e}");
        let weekdays = field(dow, "day of the week", 0, 7, &WEEKDAYS).map_err(at)?;
        Ok(Cron {
            minutes: field(m, "minute", 0, 59, &[]).map_err(at)?,
            hours: field(h, "hour", 0, 23, &[]).map_err(at)? as u32,
            days: field(dom, "day of the month", 1, 31, &[]).map_err(at)? as u32,
            months: field(mon, "month", 1, 12, &MONTHS).map_err(at)? as u16,
            // 7 is Sunday too.
            weekdays: ((weekdays | (weekdays >> 7)) & 0x7f) as u8,
            any_day: *dom == "*",
            any_weekday: *dow == "*",
            text: text.to_string(),
        })
    }
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

serde_as_text!(Cron);

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28 00:00 UTC, a Saturday.
    const SAT: i64 = 1_795_824_000;

    fn at(day: i64, hh: i64, mm: i64) -> i64 {
        SAT + day * 86_400 + hh * 3600 + mm * 60
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(SAT / 86_400), (2026, 11, 28));
        assert_eq!(civil(SAT / 86_400 + 34), (2027, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn weekly_and_stepped_schedules() {
        let c: Cron = "0 3 * * Sat".parse().unwrap();
        assert!(c.matches(at(0, 3, 0)));
        assert!(!c.matches(at(0, 3, 1)) && !c.matches(at(1, 3, 0)));
        assert_eq!(c.next_after(at(0, 3, 0)), Some(at(7, 3, 0)));
        assert_eq!(c.next_after(at(0, 2, 59) + 30), Some(at(0, 3, 0)));
        let c: Cron = "*/30 1-2 * * Mon-Fri".parse().unwrap();
        assert!(c.matches(at(2, 1, 30)), "Monday 01:30");
        assert!(!c.matches(at(2, 1, 15)) && !c.matches(at(2, 3, 0)) && !c.matches(at(1, 1, 0)));
        let c: Cron = "0 0 1 * 0".parse().unwrap();
        assert!(c.matches(at(1, 0, 0)), "a Sunday");
        assert!(
            c.matches(at(3, 0, 0)),
            "December 1st, a Tuesday: either day field"
        );
        let c: Cron = "15 12 * Dec 7".parse().unwrap();
        assert!(!c.matches(at(1, 12, 15)), "November");
        assert!(c.matches(at(8, 12, 15)), "Sunday, December 6th");
        assert_eq!("0 0 31 2 *".parse::<Cron>().unwrap().next_after(SAT), None);
        // A leap day: none within a year from now, 2028-02-29 from a year on.
        let leap: Cron = "0 0 29 2 *".parse().unwrap();
        assert_eq!(leap.next_after(SAT), None);
        assert_eq!(leap.next_after(at(365, 0, 0)), Some(at(458, 0, 0)));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |s: &str| s.parse::<Cron>().unwrap_err();
        assert!(err("0 3 * *").contains("expected 5 fields"));
        assert!(err("60 3 * * *").contains("minute \"60\" is not 0 to 59"));
        assert!(err("0 3 * * Sam").contains("day of the week \"Sam\" is not 0 to 7 or sun..sat"));
        assert!(err("0 5-3 * * *").contains("goes backwards"));
        assert!(err("*/0 * * * *").contains("step \"0\""));
    }
}
