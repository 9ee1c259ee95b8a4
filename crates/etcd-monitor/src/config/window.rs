//! Maintenance windows: `Sat 02:00-04:00 UTC`, `Mon-Fri 22:00-02:00`,
//! `02:00-04:00` (every day), `always`.
//!
//! Days are `Mon`..`Sun`, a list (`Sat,Sun`) or a range (`Mon-Fri`,
//! wrapping: `Fri-Mon`); times are UTC (`UTC` may be written, no other
//! zone is accepted: an operator's local zone changes with the seasons and
//! the monitor may run elsewhere). An end before the start crosses
//! midnight, and the window belongs to the day it starts on.

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A weekly maintenance window in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Starting days, Monday first.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u16,
    end: u16,
    always: bool,
    text: String,
}

impl Window {
    /// The window that is always open.
    pub fn always() -> Self {
        Window {
            days: [true; 7],
            start: 0,
            end: 0,
            always: true,
            text: "always".into(),
        }
    }

    /// Whether `unix_secs` (seconds since the epoch, UTC) is inside.
    pub fn contains(&self, unix_secs: i64) -> bool {
        if self.always {
            return true;
        }
        let day = unix_secs.div_euclid(86_400);
        let minute = (unix_secs.rem_euclid(86_400) / 60) as u16;
        // 1970-01-01 was a Thursday (index 3).
        let weekday = |d: i64| (d + 3).rem_euclid(7) as usize;
        if self.start < self.end {
            self.days[weekday(day)] && (self.start..self.end).contains(&minute)
        } else {
            // Crossing midnight (or a whole day when start == end).
            (self.days[weekday(day)] && minute >= self.start)
                || (self.days[weekday(day - 1)] && minute < self.end)
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn day_index(name: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn minutes(hhmm: &str) -> Result<u16, String> {
    let bad = || format!("{hhmm:?} is not a time HH:MM (00:00 to 24:00)");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m > 0) || h.to_string().len() > 2 || m >= 60 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("always") {
            return Ok(Window::always());
        }
        let mut words: Vec<&str> = text.split_whitespace().collect();
        if words.last().is_some_and(|w| w.eq_ignore_ascii_case("UTC")) {
            words.pop();
        } else if let Some(zone) = words.last().filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphabetic() || c == '/' || c == '_')
                && day_index(w).is_err()
        }) {
            return Err(format!(
                "window {text:?}: zone {zone:?}: windows are in UTC (write UTC or nothing)"
            ));
        }
        let (days, times) = match words.as_slice() {
            [times] => ([true; 7], *times),
            [days, times] => {
                let mut set = [false; 7];
                for part in days.split(',') {
                    match part.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (
                                day_index(a).map_err(|e| format!("window {text:?}: {e}"))?,
                                day_index(b).map_err(|e| format!("window {text:?}: {e}"))?,
                            );
                            let mut d = a;
                            loop {
                                set[d] = true;
                                if d == b {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        }
                        None => {
                            set[day_index(part).map_err(|e| format!("window {text:?}: {e}"))?] =
                                true
                        }
                    }
                }
                (set, *times)
            }
            _ => {
                return Err(format!(
                    "window {text:?}: expected [DAYS] HH:MM-HH:MM [UTC], e.g. \"Sat 02:00-04:00 UTC\", or \"always\""
                ));
            }
        };
        let (a, b) = times
            .split_once('-')
            .ok_or_else(|| format!("window {text:?}: {times:?} is not HH:MM-HH:MM"))?;
        let (start, end) = (
            minutes(a).map_err(|e| format!("window {text:?}: {e}"))?,
            minutes(b).map_err(|e| format!("window {text:?}: {e}"))?,
        );
        if start == end {
            return Err(format!(
                "window {text:?}: it starts and ends at the same time (use \"always\" for no window)"
            ));
        }
        Ok(Window {
            days,
            start: start % 1440,
            end: end % 1440,
            always: false,
            text: text.to_string(),
        })
    }
}

serde_as_text!(Window);

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28 was a Saturday.
    const SAT: i64 = 1_795_824_000;

    fn at(day_offset: i64, hh: i64, mm: i64) -> i64 {
        SAT + day_offset * 86_400 + hh * 3600 + mm * 60
    }

    #[test]
    fn a_weekly_window_opens_on_its_day_only() {
        let w: Window = "Sat 02:00-04:00 UTC".parse().unwrap();
        assert!(!w.contains(at(0, 1, 59)));
        assert!(w.contains(at(0, 2, 0)));
        assert!(w.contains(at(0, 3, 59)));
        assert!(!w.contains(at(0, 4, 0)));
        assert!(!w.contains(at(1, 2, 30)), "Sunday");
        assert!(w.contains(at(7, 2, 30)), "next Saturday");
    }

    #[test]
    fn ranges_lists_and_midnight() {
        let w: Window = "Mon-Fri 22:00-02:00".parse().unwrap();
        assert!(w.contains(at(2, 23, 0)), "Monday night");
        assert!(
            w.contains(at(3, 1, 0)),
            "early Tuesday belongs to Monday's window"
        );
        assert!(
            !w.contains(at(2, 1, 0)),
            "early Monday: Sunday has no window"
        );
        assert!(w.contains(at(7, 1, 0)), "early Saturday: Friday's window");
        assert!(!w.contains(at(7, 23, 0)), "Saturday night");
        let w: Window = "fri-mon,wed 00:00-24:00".parse().unwrap();
        assert!(w.contains(at(0, 12, 0)) && w.contains(at(2, 12, 0)) && w.contains(at(4, 0, 0)));
        assert!(!w.contains(at(3, 12, 0)), "Tuesday");
        let w: Window = "10:00-11:00".parse().unwrap();
        assert!((0..7).all(|d| w.contains(at(d, 10, 30))));
        assert!(Window::always().contains(at(3, 3, 3)));
        assert_eq!("always".parse::<Window>().unwrap(), Window::always());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |s: &str| s.parse::<Window>().unwrap_err();
        assert!(err("Sat 02:00-04:00 Europe/Berlin").contains("windows are in UTC"));
        assert!(err("Sat 02:00-04:00 CET").contains("zone \"CET\""));
        assert!(err("Sam 02:00-04:00").contains("\"Sam\" is not a day"));
        assert!(err("Sat 2-4").contains("not a time HH:MM"));
        assert!(err("Sat 02:00").contains("not HH:MM-HH:MM"));
        assert!(err("Sat 25:00-26:00").contains("not a time"));
        assert!(err("Sat 02:00-02:00").contains("same time"));
        assert!(err("").contains("expected [DAYS] HH:MM-HH:MM"));
    }
}
