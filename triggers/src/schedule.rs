//! Scheduled scaling windows (`tidegate.dev/schedule`): standard 5-field cron expressions in
//! an IANA time zone, and whether a window is open at an instant.
//!
//! A window opens at each firing of `start` and closes at the next firing of `end`; it is open
//! at `t` when the latest `start` firing at or before `t` is later than the latest `end`
//! firing at or before `t`. Firings are civil times in the window's zone: a time skipped by a
//! daylight-saving jump fires shifted by the gap (02:30 on a 02:00 → 03:00 night fires at
//! 03:30), a repeated one at its first occurrence (the "compatible" rule of RFC 9557 and the
//! time zone database; no firing is lost).

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Days searched back for a firing: enough for any expression that fires at all (a
/// `29 2 *` date whose weekday must match recurs within 28 years; 8 years covers every
/// expression that does not also pin a weekday).
const SEARCH_DAYS: i32 = 366 * 8;

/// One parsed cron expression: the allowed values of each field.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// `day of month` and `day of week` both restricted: either may match (cron's rule).
    either_day: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week`: numbers, `*`, ranges `a-b`, steps
    /// `*/n` and `a-b/n`, lists `a,b`, three-letter month and weekday names, `7` for Sunday.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} is not a cron expression: expected 5 fields (minute hour \
                 day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let minutes = field(fields[0], "minute", 0, 59, &[], 0)?;
        let hours = field(fields[1], "hour", 0, 23, &[], 0)?;
        let days = field(fields[2], "day of month", 1, 31, &[], 0)?;
        let months = field(fields[3], "month", 1, 12, &MONTHS, 1)?;
        let mut weekdays = field(fields[4], "day of week", 0, 7, &DAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7); // 7 is Sunday
        }
        Ok(Self {
            text: text.to_owned(),
            minutes,
            hours: u32::try_from(hours).unwrap_or(u32::MAX),
            days: u32::try_from(days).unwrap_or(u32::MAX),
            months: u16::try_from(months).unwrap_or(u16::MAX),
            weekdays: u8::try_from(weekdays).unwrap_or(u8::MAX),
            either_day: fields[2] != "*" && fields[4] != "*",
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = u32::try_from(date.month()).unwrap_or(0);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days & (1 << u32::try_from(date.day()).unwrap_or(0)) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The latest firing at or before `at`, in `tz`; `None` if it never fired within the
    /// search horizon.
    pub fn last_fire(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let now = at.to_zoned(tz.clone());
        let mut date = now.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                for hour in (0..24).rev() {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in (0..60).rev() {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let civil = DateTime::from_parts(
                            date,
                            jiff::civil::time(hour as i8, minute as i8, 0, 0),
                        );
                        let Ok(fired) = tz.to_ambiguous_zoned(civil).compatible() else {
                            continue;
                        };
                        if fired.timestamp() <= at {
                            return Some(fired.timestamp());
                        }
                    }
                }
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

/// The bit set of one field.
fn field(
    text: &str,
    name: &str,
    low: u32,
    high: u32,
    names: &[&str],
    first_name: u32,
) -> Result<u64, String> {
    let value = |part: &str| -> Result<u32, String> {
        let lower = part.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(first_name + u32::try_from(i).unwrap_or(0));
        }
        let v: u32 = part
            .parse()
            .map_err(|_| format!("{name} {part:?} is not a number or a name"))?;
        if !(low..=high).contains(&v) {
            return Err(format!("{name} {v} is outside {low}-{high}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name} step {step:?} must be a positive number"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{name} range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if step > 1 { high } else { v })
        };
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    if bits == 0 {
        return Err(format!("{name} field {text:?} matches nothing"));
    }
    Ok(bits)
}

/// One window of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub start: Cron,
    pub end: Cron,
    /// The IANA name, as written.
    pub timezone: String,
    pub tz: TimeZone,
    /// Pods at least, while open.
    pub min_scale: u32,
    /// Pods at most, while open; `None` leaves the Service's own ceiling.
    pub max_scale: Option<u32>,
}

impl Window {
    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        match (
            self.start.last_fire(at, &self.tz),
            self.end.last_fire(at, &self.tz),
        ) {
            (Some(start), Some(end)) => start > end,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// One window as written: `{start, end, timezone, minScale, maxScale}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WindowSpec {
    start: String,
    end: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    min_scale: u32,
    #[serde(default)]
    max_scale: Option<u32>,
}

/// Reads a schedule written as a YAML or JSON list of windows. Each problem comes with where
/// it is, relative to the list: `""` for the whole text, `[i].field` for one field.
pub fn parse(text: &str) -> Result<Vec<Window>, Vec<(String, String)>> {
    let specs: Vec<WindowSpec> = serde_saphyr::from_str::<serde_json::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." {
                    String::new()
                } else {
                    format!(" at {path}")
                };
                format!("{}{at}", e.inner())
            })
        })
        .map_err(|why| {
            vec![(
                String::new(),
                format!(
                    "expected a YAML or JSON list of {{start, end, timezone, minScale, \
                     maxScale}}: {why}"
                ),
            )]
        })?;
    let mut windows = Vec::new();
    let mut problems = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let before = problems.len();
        let mut fail = |field: &str, why: String| problems.push((format!("[{i}].{field}"), why));
        let start = Cron::parse(&spec.start).map_err(|e| fail("start", e));
        let end = Cron::parse(&spec.end).map_err(|e| fail("end", e));
        let tz = match &spec.timezone {
            None => {
                fail(
                    "timezone",
                    "required: an IANA name such as Europe/Berlin (a schedule in the server's \
                     local time is the classic cron-scaling bug)"
                        .into(),
                );
                Err(())
            }
            Some(name) => time_zone(name).map_err(|e| fail("timezone", e)),
        };
        if spec
            .start
            .split_whitespace()
            .eq(spec.end.split_whitespace())
        {
            fail(
                "end",
                "must differ from start: such a window never opens".into(),
            );
        }
        if let Some(max) = spec.max_scale
            && spec.min_scale > max
        {
            fail(
                "minScale",
                format!("{} is greater than maxScale {max}", spec.min_scale),
            );
        }
        if let (Ok(start), Ok(end), Ok(tz)) = (start, end, tz)
            && problems.len() == before
        {
            windows.push(Window {
                start,
                end,
                timezone: spec.timezone.unwrap_or_default(),
                tz,
                min_scale: spec.min_scale,
                max_scale: spec.max_scale,
            });
        }
    }
    if problems.is_empty() {
        Ok(windows)
    } else {
        Err(problems)
    }
}

/// The IANA time zone `name`.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name)
        .map_err(|_| format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin"))
}

/// `at` in `tz`, for messages and tests.
pub fn zoned(at: Timestamp, tz: &TimeZone) -> Zoned {
    at.to_zoned(tz.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(civil: &str, tz: &str) -> Timestamp {
        let dt: DateTime = civil.parse().expect("civil time");
        time_zone(tz)
            .expect("zone")
            .to_ambiguous_zoned(dt)
            .compatible()
            .expect("zoned")
            .timestamp()
    }

    fn window(start: &str, end: &str, tz: &str) -> Window {
        Window {
            start: Cron::parse(start).expect("start"),
            end: Cron::parse(end).expect("end"),
            timezone: tz.to_owned(),
            tz: time_zone(tz).expect("zone"),
            min_scale: 3,
            max_scale: None,
        }
    }

    #[test]
    fn fields_parse_as_cron_writes_them() {
        let c = Cron::parse("*/15 9-17 * * mon-fri").expect("parses");
        assert_eq!(c.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.hours, (9..=17).fold(0, |b, h| b | (1 << h)));
        assert_eq!(c.weekdays, 0b0111110);
        assert_eq!(Cron::parse("0 0 * * 7").expect("sunday").weekdays, 1);
        assert_eq!(
            Cron::parse("0 0 1 jan,Jul *").expect("names").months,
            (1 << 1) | (1 << 7)
        );
        assert_eq!(
            Cron::parse("5/20 * * * *").expect("step from 5").minutes,
            (1 << 5) | (1 << 25) | (1 << 45)
        );
    }

    #[test]
    fn bad_fields_say_which_and_why() {
        for (text, says) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 24 * * *", "hour 24 is outside 0-23"),
            ("* * 0 * *", "day of month 0 is outside 1-31"),
            ("* * * 13 *", "month 13 is outside 1-12"),
            ("* * * * 8", "day of week 8 is outside 0-7"),
            ("*/0 * * * *", "step \"0\" must be a positive number"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "minute \"x\" is not a number or a name"),
        ] {
            let error = Cron::parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(
            time_zone("Mars/Olympus")
                .expect_err("unknown")
                .contains("unknown time zone")
        );
    }

    #[test]
    fn a_weekday_window_is_open_from_its_start_to_its_end_in_its_own_zone() {
        let w = window("0 8 * * mon-fri", "0 18 * * mon-fri", "Europe/Berlin");
        // 2026-12-02 is a Wednesday.
        assert!(!w.is_open(ts("2026-12-02T07:59", "Europe/Berlin")));
        assert!(w.is_open(ts("2026-12-02T08:00", "Europe/Berlin")));
        assert!(w.is_open(ts("2026-12-02T17:59", "Europe/Berlin")));
        assert!(
            !w.is_open(ts("2026-12-02T18:00", "Europe/Berlin")),
            "end wins at its minute"
        );
        // 08:00 in Berlin is 07:00 UTC in winter: the zone, not the host's, decides.
        assert!(!w.is_open(ts("2026-12-02T06:59", "UTC")));
        assert!(w.is_open(ts("2026-12-02T07:00", "UTC")));
        // Saturday: no start fired since Friday's end.
        assert!(!w.is_open(ts("2026-12-05T10:00", "Europe/Berlin")));
    }

    #[test]
    fn a_window_across_midnight_stays_open_overnight() {
        let w = window("0 22 * * *", "0 6 * * *", "UTC");
        assert!(w.is_open(ts("2026-12-02T23:30", "UTC")));
        assert!(w.is_open(ts("2026-12-03T05:59", "UTC")));
        assert!(!w.is_open(ts("2026-12-03T06:00", "UTC")));
    }

    #[test]
    fn daylight_saving_days_follow_the_zone_database() {
        // Berlin springs forward on 2026-03-29 at 02:00 → 03:00: a 02:30 start fires at 03:30
        // CEST (shifted by the gap, the "compatible" rule), not never.
        let w = window("30 2 * * *", "0 4 * * *", "Europe/Berlin");
        assert!(!w.is_open(ts("2026-03-29T01:59", "Europe/Berlin")));
        let fired = w
            .start
            .last_fire(ts("2026-03-29T03:40", "Europe/Berlin"), &w.tz)
            .expect("fired");
        assert_eq!(
            zoned(fired, &w.tz).to_string(),
            "2026-03-29T03:30:00+02:00[Europe/Berlin]"
        );
        assert!(w.is_open(ts("2026-03-29T03:45", "Europe/Berlin")));
        // Falls back on 2026-10-25 at 03:00 → 02:00: a 02:30 start fires once, at the first
        // 02:30 (+02:00).
        let fired = w
            .start
            .last_fire(ts("2026-10-25T03:30", "Europe/Berlin"), &w.tz)
            .expect("fired");
        assert_eq!(
            zoned(fired, &w.tz).to_string(),
            "2026-10-25T02:30:00+02:00[Europe/Berlin]"
        );
        // The window is 8 hours of wall clock from 22:00 to 06:00 either way.
        let night = window("0 22 * * *", "0 6 * * *", "Europe/Berlin");
        assert!(night.is_open(ts("2026-10-25T05:30", "Europe/Berlin")));
        assert!(!night.is_open(ts("2026-10-25T06:00", "Europe/Berlin")));
    }

    #[test]
    fn day_of_month_and_day_of_week_both_set_match_either() {
        let c = Cron::parse("0 12 1 * mon").expect("parses");
        let tz = time_zone("UTC").expect("utc");
        // Tuesday 2026-12-01 (the 1st) and Monday 2026-11-30 both fire.
        let fired = c
            .last_fire(ts("2026-12-01T13:00", "UTC"), &tz)
            .expect("fired");
        assert_eq!(fired, ts("2026-12-01T12:00", "UTC"));
        let fired = c
            .last_fire(ts("2026-12-01T11:00", "UTC"), &tz)
            .expect("fired");
        assert_eq!(fired, ts("2026-11-30T12:00", "UTC"));
    }
}
