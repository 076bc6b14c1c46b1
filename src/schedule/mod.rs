//! Recurring posts: a 5-field crontab (the `cron` crate underneath) in a time zone
//! (default Asia/Tokyo; DST-correct elsewhere through `chrono-tz`), a holiday policy from
//! the Cabinet Office's list shipped as data, and the Japanese date placeholders a
//! template can use. The firing loop is [`runner`]; the store is `store/schedules.rs`; the
//! routes are `api/schedules.rs`.

pub mod runner;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed 5-field crontab: minute, hour, day of month, month, day of week (0 or 7 =
/// Sunday), as `crontab(5)` writes them.
#[derive(Clone, Debug)]
pub struct Cron {
    pub expression: String,
    schedule: cron::Schedule,
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// The day-of-week field as day names: crontab counts 0–7 from Sunday, the `cron` crate
/// 1–7; names mean the same to both.
fn day_of_week_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let day = |s: &str| -> Result<usize, String> {
        if let Ok(n) = s.parse::<usize>() {
            return if n <= 7 {
                Ok(n % 7)
            } else {
                Err(format!("day of week `{s}` is not 0–7"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a day of the week (0–7 or Sun–Sat)"))
    };
    let mut days = BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a step"))?,
            ),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (
                        day(a)?,
                        b.parse::<usize>()
                            .map(|n| if n == 7 { 7 } else { n % 7 })
                            .or_else(|_| day(b))?,
                    );
                    (a, b)
                }
                None => {
                    let d = day(r)?;
                    (d, if step > 1 { 6 } else { d })
                }
            },
        };
        if from > to {
            return Err(format!("the range `{range}` runs backwards"));
        }
        for d in (from..=to).step_by(step) {
            days.insert(d % 7);
        }
    }
    Ok(days
        .into_iter()
        .map(|d| DAY_NAMES[d])
        .collect::<Vec<_>>()
        .join(","))
}

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week`.
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{expression}` has {} fields; write five: minute hour day-of-month month day-of-week (e.g. `0 7 * * 1` for Mondays at 7:00)",
                fields.len()
            ));
        }
        let dow = day_of_week_names(fields[4])?;
        let six = format!(
            "0 {} {} {} {} {dow}",
            fields[0], fields[1], fields[2], fields[3]
        );
        let schedule = cron::Schedule::from_str(&six)
            .map_err(|e| format!("`{expression}` is not a crontab expression: {e}"))?;
        Ok(Cron {
            expression: expression.to_string(),
            schedule,
        })
    }

    /// The firings strictly after `after`, in `tz`, as instants.
    pub fn after(&self, tz: Tz, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.schedule
            .after(&after.with_timezone(&tz))
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Japanese public holidays (the Cabinet Office's `syukujitsu.csv`: `YYYY/M/D,name`).
#[derive(Clone, Debug, Default)]
pub struct Holidays {
    dates: HashSet<NaiveDate>,
    pub last: Option<NaiveDate>,
}

impl Holidays {
    pub fn parse(csv: &str) -> Result<Holidays, String> {
        let mut dates = HashSet::new();
        for (i, line) in csv.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let date = line.split(',').next().unwrap_or("");
            let d = NaiveDate::parse_from_str(date, "%Y/%m/%d")
                .map_err(|_| format!("line {}: `{date}` is not YYYY/M/D", i + 1))?;
            dates.insert(d);
        }
        let last = dates.iter().max().copied();
        Ok(Holidays { dates, last })
    }
    pub fn load(path: &Path) -> Result<Holidays, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Holidays::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.dates.contains(&d)
    }
}

/// What a firing on a public holiday does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolidayPolicy {
    /// Fires anyway.
    Ignore,
    /// Does not fire that day.
    Skip,
    /// Fires on the next day that is not a holiday, at the same time (garbage collection
    /// days move this way).
    NextDay,
}

impl HolidayPolicy {
    pub fn parse(s: &str) -> Option<HolidayPolicy> {
        match s {
            "ignore" => Some(HolidayPolicy::Ignore),
            "skip" => Some(HolidayPolicy::Skip),
            "next_day" => Some(HolidayPolicy::NextDay),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            HolidayPolicy::Ignore => "ignore",
            HolidayPolicy::Skip => "skip",
            HolidayPolicy::NextDay => "next_day",
        }
    }
}

/// Everything that decides when a schedule fires.
#[derive(Clone, Debug)]
pub struct Timing {
    pub cron: Cron,
    pub tz: Tz,
    pub holidays: HolidayPolicy,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl Timing {
    /// The next firing strictly after `after`, holidays applied, within starts/ends.
    pub fn next_after(&self, after: DateTime<Utc>, calendar: &Holidays) -> Option<DateTime<Utc>> {
        let from = match self.starts_at {
            Some(s) if s > after => s - Duration::seconds(1),
            _ => after,
        };
        for t in self.cron.after(self.tz, from).take(1000) {
            let fire = match self.holidays {
                HolidayPolicy::Ignore => Some(t),
                HolidayPolicy::Skip => {
                    (!calendar.contains(t.with_timezone(&self.tz).date_naive())).then_some(t)
                }
                HolidayPolicy::NextDay => {
                    let mut local = t.with_timezone(&self.tz);
                    let mut moved = 0;
                    while calendar.contains(local.date_naive()) && moved < 14 {
                        let naive = local.naive_local() + Duration::days(1);
                        local = match self.tz.from_local_datetime(&naive).earliest() {
                            Some(l) => l,
                            None => break,
                        };
                        moved += 1;
                    }
                    Some(local.with_timezone(&Utc)).filter(|m| *m > after)
                }
            };
            let Some(fire) = fire else { continue };
            if self.ends_at.is_some_and(|e| fire > e) {
                return None;
            }
            return Some(fire);
        }
        None
    }

    /// The next `n` firings after `after`.
    pub fn upcoming(
        &self,
        after: DateTime<Utc>,
        n: usize,
        calendar: &Holidays,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, calendar) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// The placeholders every scheduled template may use, for the firing's local date:
/// `date` (12月1日（月）), `date_long` (令和8年12月1日（月）), `era_year` (令和8年),
/// `date_iso` (2026-12-01).
pub fn date_params(at: DateTime<Utc>, tz: Tz) -> Vec<(&'static str, String)> {
    const WEEKDAYS: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];
    let local = at.with_timezone(&tz);
    let weekday = WEEKDAYS[local.weekday().num_days_from_monday() as usize];
    let date = format!("{}月{}日（{weekday}）", local.month(), local.day());
    let era = era_year(local.date_naive());
    vec![
        ("date", date.clone()),
        ("date_long", format!("{era}{date}")),
        ("era_year", era),
        ("date_iso", local.format("%Y-%m-%d").to_string()),
    ]
}

/// 令和 (from 2019-05-01) and 平成 years as a city writes them; 元年 for the first.
pub fn era_year(d: NaiveDate) -> String {
    let reiwa = NaiveDate::from_ymd_opt(2019, 5, 1).expect("a date");
    let (name, n) = if d >= reiwa {
        ("令和", d.year() - 2018)
    } else {
        ("平成", d.year() - 1988)
    };
    if n == 1 {
        format!("{name}元年")
    } else {
        format!("{name}{n}年")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn timing(expr: &str, tz: &str, holidays: HolidayPolicy) -> Timing {
        Timing {
            cron: Cron::parse(expr).unwrap(),
            tz: tz.parse().unwrap(),
            holidays,
            starts_at: None,
            ends_at: None,
        }
    }

    fn calendar() -> Holidays {
        Holidays::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/holidays.csv")).unwrap()
    }

    #[test]
    fn crontab_days_of_week_count_from_sunday() {
        let t = timing("0 7 * * 1", "Asia/Tokyo", HolidayPolicy::Ignore);
        // 2026-11-30 is a Monday.
        let next = t
            .next_after(utc("2026-11-27T00:00:00Z"), &Holidays::default())
            .unwrap();
        assert_eq!(next, utc("2026-11-30T07:00:00+09:00"));
        for (expr, day) in [
            ("0 7 * * 0", "2026-11-29"),
            ("0 7 * * 7", "2026-11-29"),
            ("0 7 * * 6", "2026-11-28"),
            ("0 7 * * 5-7", "2026-11-28"),
        ] {
            let next = timing(expr, "Asia/Tokyo", HolidayPolicy::Ignore)
                .next_after(utc("2026-11-26T23:00:00Z"), &Holidays::default())
                .unwrap();
            assert_eq!(
                next.with_timezone(&chrono_tz::Asia::Tokyo)
                    .date_naive()
                    .to_string(),
                day,
                "{expr}"
            );
        }
        assert!(Cron::parse("0 7 * *").unwrap_err().contains("five"));
        assert!(Cron::parse("0 7 * * 8").is_err());
        assert!(Cron::parse("61 7 * * *").is_err());
    }

    /// A weekly 09:00 in New York stays at 09:00 local across the DST change (14:00 UTC
    /// before 1 November 2026, 15:00 after); Tokyo has none.
    #[test]
    fn weekly_firings_keep_local_time_across_dst() {
        let ny = timing("0 9 * * 0", "America/New_York", HolidayPolicy::Ignore);
        let fires = ny.upcoming(utc("2026-10-20T00:00:00Z"), 3, &Holidays::default());
        assert_eq!(
            fires,
            [
                utc("2026-10-25T13:00:00Z"),
                utc("2026-11-01T14:00:00Z"),
                utc("2026-11-08T14:00:00Z")
            ]
        );
        let tokyo = timing("0 9 * * 0", "Asia/Tokyo", HolidayPolicy::Ignore);
        let fires = tokyo.upcoming(utc("2026-10-20T00:00:00Z"), 2, &Holidays::default());
        assert_eq!(
            fires,
            [utc("2026-10-25T00:00:00Z"), utc("2026-11-01T00:00:00Z")]
        );
    }

    /// 2026-11-23 (勤労感謝の日) is a Monday holiday: skipped, or moved to Tuesday.
    #[test]
    fn holidays_skip_or_move_a_firing() {
        let cal = calendar();
        assert!(cal.contains(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()));
        let after = utc("2026-11-20T00:00:00Z");
        let skip = timing("0 7 * * 1", "Asia/Tokyo", HolidayPolicy::Skip);
        assert_eq!(
            skip.next_after(after, &cal),
            Some(utc("2026-11-30T07:00:00+09:00"))
        );
        let moved = timing("0 7 * * 1", "Asia/Tokyo", HolidayPolicy::NextDay);
        assert_eq!(
            moved.next_after(after, &cal),
            Some(utc("2026-11-24T07:00:00+09:00"))
        );
        let ignore = timing("0 7 * * 1", "Asia/Tokyo", HolidayPolicy::Ignore);
        assert_eq!(
            ignore.next_after(after, &cal),
            Some(utc("2026-11-23T07:00:00+09:00"))
        );
        // Golden Week: 5/4, 5/5, 5/6 (a substitute holiday) in a row move to 5/7.
        let daily = timing("0 7 * * *", "Asia/Tokyo", HolidayPolicy::NextDay);
        assert_eq!(
            daily.next_after(utc("2026-05-03T00:00:00Z"), &cal),
            Some(utc("2026-05-07T07:00:00+09:00"))
        );
    }

    #[test]
    fn starts_and_ends_bound_the_firings() {
        let mut t = timing("0 7 * * *", "Asia/Tokyo", HolidayPolicy::Ignore);
        t.starts_at = Some(utc("2026-12-01T00:00:00+09:00"));
        t.ends_at = Some(utc("2026-12-02T23:59:59+09:00"));
        let fires = t.upcoming(utc("2026-11-01T00:00:00Z"), 5, &Holidays::default());
        assert_eq!(
            fires,
            [
                utc("2026-12-01T07:00:00+09:00"),
                utc("2026-12-02T07:00:00+09:00")
            ]
        );
    }

    #[test]
    fn japanese_dates_and_era_years() {
        let p = date_params(utc("2026-12-01T07:00:00+09:00"), chrono_tz::Asia::Tokyo);
        assert_eq!(p[0], ("date", "12月1日（火）".to_string()));
        assert_eq!(p[2], ("era_year", "令和8年".to_string()));
        assert_eq!(p[1].1, "令和8年12月1日（火）");
        assert_eq!(
            era_year(NaiveDate::from_ymd_opt(2019, 5, 1).unwrap()),
            "令和元年"
        );
        assert_eq!(
            era_year(NaiveDate::from_ymd_opt(2019, 4, 30).unwrap()),
            "平成31年"
        );
    }
}
