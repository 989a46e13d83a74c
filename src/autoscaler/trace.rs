//! Load traces for the simulator: requests arriving per second.
//!
//! Built in (deterministic, no randomness):
//! - `step`: 10 rps for 60 s, 200 rps for 120 s, 10 rps for 60 s (240 s, 25 200 requests);
//! - `spike`: 5 rps for 60 s, 500 rps for 10 s, 5 rps for 110 s (180 s, 5 850 requests);
//! - `diurnal`: a sinusoid between 5 and 200 rps with a 300 s period, starting at the low, over
//!   900 s (three "days"): `round(5 + 195 × (1 − cos(2π s / 300)) / 2)` in second `s`.
//!
//! Files are CSV with the header `second,arrivals`; seconds not listed get no arrivals.

use thiserror::Error;

/// The longest trace a file may describe (one week).
pub const MAX_TRACE_SECONDS: u64 = 7 * 24 * 3600;

/// Most arrivals in one second a file may ask for.
pub const MAX_ARRIVALS_PER_SECOND: u32 = 1_000_000;

/// Built-in traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trace {
    Step,
    Spike,
    Diurnal,
}

/// A trace file that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TraceError {
    #[error("the first line must be the header `second,arrivals`")]
    Header,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the trace has no seconds")]
    Empty,
}

/// Arrivals per second of a built-in trace.
pub fn builtin(trace: Trace) -> Vec<u32> {
    match trace {
        Trace::Step => [(60, 10), (120, 200), (60, 10)]
            .iter()
            .flat_map(|&(secs, rate)| std::iter::repeat_n(rate, secs))
            .collect(),
        Trace::Spike => [(60, 5), (10, 500), (110, 5)]
            .iter()
            .flat_map(|&(secs, rate)| std::iter::repeat_n(rate, secs))
            .collect(),
        Trace::Diurnal => (0..900u32)
            .map(|s| {
                let phase = std::f64::consts::TAU * f64::from(s) / 300.0;
                // Between 5 and 200: the saturating cast cannot overflow.
                (5.0 + 195.0 * (1.0 - phase.cos()) / 2.0).round() as u32
            })
            .collect(),
    }
}

/// Parses a `second,arrivals` CSV.
pub fn parse_csv(text: &str) -> Result<Vec<u32>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, header)) if header.replace(' ', "") == "second,arrivals" => {}
        _ => return Err(TraceError::Header),
    }
    let mut arrivals: Vec<u32> = Vec::new();
    let mut seen: Vec<bool> = Vec::new();
    for (line, text) in lines {
        let fail = |reason: String| TraceError::Line { line, reason };
        let (second, count) = text
            .split_once(',')
            .ok_or_else(|| fail("expected `second,arrivals`".into()))?;
        let second: u64 = second
            .trim()
            .parse()
            .map_err(|e| fail(format!("second `{}`: {e}", second.trim())))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|e| fail(format!("arrivals `{}`: {e}", count.trim())))?;
        if second >= MAX_TRACE_SECONDS {
            return Err(fail(format!("second {second} is past {MAX_TRACE_SECONDS}")));
        }
        if count > MAX_ARRIVALS_PER_SECOND {
            return Err(fail(format!(
                "{count} arrivals in one second is over {MAX_ARRIVALS_PER_SECOND}"
            )));
        }
        let index = usize::try_from(second).map_err(|e| fail(e.to_string()))?;
        if index >= arrivals.len() {
            arrivals.resize(index + 1, 0);
            seen.resize(index + 1, false);
        }
        if seen[index] {
            return Err(fail(format!("second {second} appears twice")));
        }
        seen[index] = true;
        arrivals[index] = count;
    }
    if arrivals.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_the_documented_shape() {
        let step = builtin(Trace::Step);
        assert_eq!(step.len(), 240);
        assert_eq!(step.iter().map(|&r| u64::from(r)).sum::<u64>(), 25_200);
        assert_eq!(
            (step[59], step[60], step[179], step[180]),
            (10, 200, 200, 10)
        );

        let spike = builtin(Trace::Spike);
        assert_eq!(spike.len(), 180);
        assert_eq!(spike.iter().map(|&r| u64::from(r)).sum::<u64>(), 5_850);

        let diurnal = builtin(Trace::Diurnal);
        assert_eq!(diurnal.len(), 900);
        assert_eq!((diurnal[0], diurnal[150], diurnal[300]), (5, 200, 5));
        assert!(diurnal.iter().all(|&r| (5..=200).contains(&r)));
    }

    #[test]
    fn csv_fills_gaps_with_zero() {
        let text = "second,arrivals\n0,3\n2, 5\n\n";
        assert_eq!(parse_csv(text), Ok(vec![3, 0, 5]));
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert_eq!(parse_csv("s,a\n0,1"), Err(TraceError::Header));
        assert_eq!(parse_csv("second,arrivals\n"), Err(TraceError::Empty));
        let err = parse_csv("second,arrivals\n0,1\n0,2").err();
        assert!(
            matches!(err, Some(TraceError::Line { line: 3, .. })),
            "{err:?}"
        );
        let err = parse_csv("second,arrivals\nx,1").err();
        assert!(
            matches!(err, Some(TraceError::Line { line: 2, .. })),
            "{err:?}"
        );
        let err = parse_csv("second,arrivals\n999999999,1").err();
        assert!(
            matches!(err, Some(TraceError::Line { line: 2, .. })),
            "{err:?}"
        );
    }
}
