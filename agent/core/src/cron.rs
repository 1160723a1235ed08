//! Cron expressions for scheduled backups: five fields (minute, hour, day of month, month, day
//! of week), UTC, with `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n`, `a-b/n`. As in
//! cron, when both day fields are restricted a day matches either. Pure: times come in as Unix
//! milliseconds.

use crate::backup::civil_from_days;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

fn field(text: &str, name: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("{name}: step {s:?} is not a number"))?;
                if s == 0 {
                    return Err(format!("{name}: a step must be at least 1"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let num = |v: &str| -> Result<u32, String> {
            let n: u32 = v.parse().map_err(|_| format!("{name}: {v:?} is not a number"))?;
            if n < min || n > max {
                return Err(format!("{name}: {n} is outside {min}-{max}"));
            }
            Ok(n)
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, max),
                None => (num(r)?, num(r)?),
            },
        };
        if lo > hi {
            return Err(format!("{name}: range {range} runs backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// Parses `"0 0 * * *"`; the error says which field is wrong and what a field looks like.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [mi, h, d, mo, wd] = f[..] else {
            return Err(format!(
                "{text:?} must have five fields (minute hour day-of-month month day-of-week, UTC), like \"0 0 * * *\" for daily at midnight"
            ));
        };
        let mut weekdays = field(wd, "day of week", 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Schedule {
            minutes: field(mi, "minute", 0, 59)?,
            hours: field(h, "hour", 0, 23)?,
            days: field(d, "day of month", 1, 31)?,
            months: field(mo, "month", 1, 12)?,
            weekdays,
            any_day: d == "*",
            any_weekday: wd == "*",
        })
    }

    fn matches_day(&self, days_since_epoch: i64) -> bool {
        let (_, m, d) = civil_from_days(days_since_epoch);
        let wd = (days_since_epoch + 4).rem_euclid(7); // 1970-01-01 was a Thursday
        let dom = self.days & (1 << d) != 0;
        let dow = self.weekdays & (1 << wd) != 0;
        let day = match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        self.months & (1 << m) != 0 && day
    }

    /// The first due minute strictly after `after_ms`, in Unix milliseconds (`None` if none
    /// within about five years, e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let mut minute = after_ms / 60_000 + 1;
        let limit = minute + 5 * 366 * 24 * 60;
        while minute < limit {
            let day = (minute / 1440) as i64;
            if !self.matches_day(day) {
                minute = (minute / 1440 + 1) * 1440;
                continue;
            }
            let (h, mi) = ((minute % 1440) / 60, minute % 60);
            if self.hours & (1 << h) == 0 {
                minute = (minute / 60 + 1) * 60;
                continue;
            }
            if self.minutes & (1 << mi) != 0 {
                return Some(minute * 60_000);
            }
            minute += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_6_2026: u64 = 1_796_515_200_000; // a Sunday, 00:00 UTC

    #[test]
    fn daily_at_midnight_is_due_once_a_day() {
        let s = Schedule::parse("0 0 * * *").expect("valid");
        assert_eq!(s.next_after(DEC_6_2026 - 1), Some(DEC_6_2026));
        assert_eq!(s.next_after(DEC_6_2026), Some(DEC_6_2026 + 86_400_000));
    }

    #[test]
    fn steps_ranges_lists_and_weekdays() {
        let s = Schedule::parse("*/15 2-3 * * *").expect("valid");
        assert_eq!(s.next_after(DEC_6_2026), Some(DEC_6_2026 + 2 * 3_600_000));
        assert_eq!(s.next_after(DEC_6_2026 + 2 * 3_600_000), Some(DEC_6_2026 + 2 * 3_600_000 + 15 * 60_000));
        let mon = Schedule::parse("30 1 * * 1").expect("valid");
        assert_eq!(mon.next_after(DEC_6_2026), Some(DEC_6_2026 + 86_400_000 + 90 * 60_000));
        let sun = Schedule::parse("0 0 * * 7").expect("valid");
        assert_eq!(sun.next_after(DEC_6_2026 - 1), Some(DEC_6_2026));
        let every = Schedule::parse("* * * * *").expect("valid");
        assert_eq!(every.next_after(DEC_6_2026 + 30_000), Some(DEC_6_2026 + 60_000));
    }

    #[test]
    fn bad_expressions_say_which_field_is_wrong() {
        assert!(Schedule::parse("0 0 * *").expect_err("refused").contains("five fields"));
        assert!(Schedule::parse("60 0 * * *").expect_err("refused").contains("minute: 60 is outside 0-59"));
        assert!(Schedule::parse("0 0 0 * *").expect_err("refused").contains("day of month"));
        assert!(Schedule::parse("0 0 * * x").expect_err("refused").contains("day of week"));
        assert!(Schedule::parse("*/0 * * * *").expect_err("refused").contains("at least 1"));
        assert_eq!(Schedule::parse("0 0 31 2 *").expect("valid").next_after(DEC_6_2026), None);
    }
}
