//! The two duration syntaxes of Knative manifests.
//!
//! [`parse_iso8601`]: ISO-8601, as eventing writes `backoffDelay`, `timeout` and
//! `retryAfterMax` (`PT0.2S`, `PT1M30S`, `P1D`).
//!
//! [`parse_go_duration`]: Go's `time.ParseDuration` syntax, as serving writes the autoscaling
//! annotations (`60s`, `1m30s`, `500ms`).
//!
//! ISO-8601 support: `PnW`, `PnD`, and a time part `TnHnMnS`, combinable as `PnWnDTnHnMnS` in that
//! order. The last component may carry a fraction (`PT0.2S`, `PT1.5M`, `P0.5D`; `.` or `,`).
//! Years and months are rejected because their length depends on the calendar; negative
//! durations are rejected.

use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;
const NANOS_PER_DAY: u128 = 24 * NANOS_PER_HOUR;
const NANOS_PER_WEEK: u128 = 7 * NANOS_PER_DAY;
/// Fraction digits beyond this many are ignored (they are below a nanosecond for any unit).
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses an ISO-8601 duration such as `PT0.2S`, `PT1M30S`, `P1D` or `P2W`.
///
/// The error is a sentence naming the input and what is wrong with it.
pub fn parse_iso8601(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|why| format!("invalid ISO-8601 duration {s:?}: {why}"))
}

/// Parses a Go duration such as `60s`, `1m30s`, `500ms`, `1.5h` or `0`, as Go's
/// `time.ParseDuration` does: a sequence of decimal numbers (fraction allowed) each followed
/// by a unit `ns`, `us` (or `µs`), `ms`, `s`, `m` or `h`; an optional leading `+`; `0` alone
/// needs no unit. Negative durations are rejected.
///
/// The error is a sentence naming the input and what is wrong with it.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_go(s).map_err(|why| format!("invalid duration {s:?}: {why}"))
}

fn parse_go(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("it is empty; write a number and a unit, e.g. `60s`".to_owned());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let integer_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let integer = &rest[..integer_end];
        let mut after = &rest[integer_end..];
        let mut fraction = "";
        let mut has_point = false;
        if let Some(tail) = after.strip_prefix('.') {
            has_point = true;
            let fraction_end = tail
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(tail.len());
            fraction = &tail[..fraction_end];
            after = &tail[fraction_end..];
        }
        if integer.is_empty() && fraction.is_empty() {
            let what = if has_point { "a lone `.`" } else { "a unit" };
            return Err(format!(
                "expected a number before {rest:?}, found {what}; e.g. `60s`"
            ));
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let unit = &after[..unit_end];
        let nanos_per_unit = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => NANOS_PER_MINUTE,
            "h" => NANOS_PER_HOUR,
            "" => {
                return Err(format!(
                    "the number {:?} has no unit; use ns, us, ms, s, m or h, e.g. `60s`",
                    &rest[..rest.len() - after.len()]
                ));
            }
            other => {
                return Err(format!("unknown unit {other:?}; use ns, us, ms, s, m or h"));
            }
        };
        let component = Component {
            integer: if integer.is_empty() { "0" } else { integer },
            fraction,
            designator: 's',
        };
        total = total
            .checked_add(value_nanos(&component, nanos_per_unit)?)
            .ok_or_else(too_large)?;
        rest = &after[unit_end..];
    }
    let seconds = u64::try_from(total / NANOS_PER_SECOND).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_SECOND).map_err(|_| too_large())?;
    Ok(Duration::new(seconds, nanos))
}

/// One `<number><designator>` component.
struct Component<'a> {
    integer: &'a str,
    fraction: &'a str,
    designator: char,
}

fn parse(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    let Some(rest) = s.strip_prefix('P') else {
        return Err("it must start with `P`, e.g. `PT10S`".to_owned());
    };
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    if time == Some("") {
        return Err("`T` must be followed by hours, minutes or seconds, e.g. `PT10S`".to_owned());
    }
    if date.is_empty() && time.is_none() {
        return Err("it has no components, e.g. `PT10S`".to_owned());
    }

    let date = components(date)?;
    let time = components(time.unwrap_or(""))?;
    let count = date.len() + time.len();

    let mut total: u128 = 0;
    let mut index = 0;
    for (part, in_date, units) in [
        (
            &date,
            true,
            &[('W', NANOS_PER_WEEK), ('D', NANOS_PER_DAY)][..],
        ),
        (
            &time,
            false,
            &[
                ('H', NANOS_PER_HOUR),
                ('M', NANOS_PER_MINUTE),
                ('S', NANOS_PER_SECOND),
            ][..],
        ),
    ] {
        let mut allowed = units;
        for component in part.iter() {
            let Some(position) = allowed.iter().position(|(d, _)| *d == component.designator)
            else {
                return Err(misplaced(component.designator, in_date));
            };
            let unit = allowed[position].1;
            allowed = &allowed[position + 1..];
            index += 1;
            if !component.fraction.is_empty() && index != count {
                return Err("only the last component may have a fraction".to_owned());
            }
            total = total
                .checked_add(value_nanos(component, unit)?)
                .ok_or_else(too_large)?;
        }
    }

    let seconds = u64::try_from(total / NANOS_PER_SECOND).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_SECOND).map_err(|_| too_large())?;
    Ok(Duration::new(seconds, nanos))
}

/// Splits `1W2D` into components, without checking designators against their part.
fn components(mut s: &str) -> Result<Vec<Component<'_>>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let integer_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let integer = &s[..integer_end];
        let mut rest = &s[integer_end..];
        let mut fraction = "";
        if let Some(after) = rest.strip_prefix(['.', ',']) {
            let fraction_end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            fraction = &after[..fraction_end];
            if fraction.is_empty() {
                return Err("a decimal separator must be followed by digits".to_owned());
            }
            rest = &after[fraction_end..];
        }
        let Some(designator) = rest.chars().next() else {
            return Err(format!("the number {:?} has no unit designator", &s));
        };
        if integer.is_empty() {
            return Err(format!(
                "the designator `{designator}` must follow a number"
            ));
        }
        out.push(Component {
            integer,
            fraction,
            designator,
        });
        s = &rest[designator.len_utf8()..];
    }
    Ok(out)
}

fn value_nanos(component: &Component<'_>, unit: u128) -> Result<u128, String> {
    let integer: u128 = component.integer.parse().map_err(|_| too_large())?;
    let mut total = integer.checked_mul(unit).ok_or_else(too_large)?;
    if !component.fraction.is_empty() {
        let digits = &component.fraction[..component.fraction.len().min(MAX_FRACTION_DIGITS)];
        let numerator: u128 = digits.parse().map_err(|_| too_large())?;
        let denominator = 10u128.pow(u32::try_from(digits.len()).map_err(|_| too_large())?);
        total = total
            .checked_add(numerator * unit / denominator)
            .ok_or_else(too_large)?;
    }
    Ok(total)
}

fn misplaced(designator: char, in_date: bool) -> String {
    match (designator, in_date) {
        ('Y', true) => "years have no fixed length; use days, e.g. `P365D`".to_owned(),
        ('M', true) => {
            "months have no fixed length; use days, e.g. `P30D` (minutes go after `T`: `PT1M`)"
                .to_owned()
        }
        ('H' | 'S', true) => format!("`{designator}` must come after `T`, e.g. `PT1{designator}`"),
        ('W' | 'D', false) => format!("`{designator}` must come before `T`, e.g. `P1{designator}`"),
        ('W' | 'D' | 'H' | 'M' | 'S', _) => {
            format!("`{designator}` is repeated or out of order (expected order: W D T H M S)")
        }
        _ => format!("unknown designator `{designator}` (expected W, D, H, M or S)"),
    }
}

fn too_large() -> String {
    "the duration is too large".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_iso8601(s) {
            Ok(d) => d,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_iso8601(s) {
            Ok(d) => panic!("{s} parsed as {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_knative_forms() {
        assert_eq!(ok("PT0.2S"), Duration::from_millis(200));
        assert_eq!(ok("PT10S"), Duration::from_secs(10));
        assert_eq!(ok("PT1M30S"), Duration::from_secs(90));
        assert_eq!(ok("P1D"), Duration::from_secs(86_400));
        assert_eq!(ok("P2W"), Duration::from_secs(14 * 86_400));
        assert_eq!(ok("P1DT1H1M1S"), Duration::from_secs(86_400 + 3_600 + 61));
        assert_eq!(ok("PT1,5S"), Duration::from_millis(1_500));
        assert_eq!(ok("PT1.5M"), Duration::from_secs(90));
        assert_eq!(ok("PT0S"), Duration::ZERO);
        assert_eq!(ok("PT0.000000001S"), Duration::from_nanos(1));
        assert_eq!(ok("PT0.0000000019S"), Duration::from_nanos(1));
    }

    #[test]
    fn rejects_with_reasons() {
        assert!(err("P1Y").contains("years"));
        assert!(err("P1M").contains("months"));
        assert!(err("P").contains("no components"));
        assert!(err("PT").contains("`T` must be followed"));
        assert!(err("").contains("start with `P`"));
        assert!(err("10s").contains("start with `P`"));
        assert!(err("-PT1S").contains("negative"));
        assert!(err("PT1S1M").contains("out of order"));
        assert!(err("PT1S1S").contains("out of order"));
        assert!(err("P1H").contains("after `T`"));
        assert!(err("PT1D").contains("before `T`"));
        assert!(err("PT1X").contains("unknown designator"));
        assert!(err("PTS").contains("must follow a number"));
        assert!(err("PT10").contains("no unit designator"));
        assert!(err("PT1.S").contains("followed by digits"));
        assert!(err("PT1.5M3S").contains("last component"));
        assert!(err("P99999999999999999999999999999999W").contains("too large"));
    }

    fn go(s: &str) -> Result<Duration, String> {
        parse_go_duration(s)
    }

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        for (input, expected) in [
            ("60s", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", ms(500)),
            ("1.5h", Duration::from_secs(5_400)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("1s1m", Duration::from_secs(61)),
            (".5s", ms(500)),
            ("1.s", Duration::from_secs(1)),
            ("+6s", Duration::from_secs(6)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0.000000001s", Duration::from_nanos(1)),
        ] {
            assert_eq!(go(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_go_durations_with_reasons() {
        for (input, why) in [
            ("", "empty"),
            ("-1s", "negative"),
            ("60", "no unit"),
            ("1m30", "\"30\" has no unit"),
            ("s", "expected a number"),
            (".s", "lone `.`"),
            ("1d", "unknown unit \"d\""),
            ("1 s", "unknown unit \" s\""),
            ("PT1S", "expected a number"),
            ("99999999999999999999999h", "too large"),
        ] {
            let error = go(input).err().unwrap_or_default();
            assert!(error.contains(why), "{input}: {error}");
            assert!(error.starts_with("invalid duration"), "{input}: {error}");
        }
    }
}
