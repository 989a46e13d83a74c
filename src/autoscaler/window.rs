//! Time windows over integer bucket indexes (seconds or ticks since an origin).
//!
//! - [`AverageWindow`]: per-bucket values averaged over the last `n` buckets, with the partial
//!   window rules of knative/serving `pkg/autoscaler/aggregation/bucketing.go`.
//! - [`MaxWindow`]: the largest value recorded in the last `n` buckets, as
//!   `pkg/autoscaler/aggregation/max/window.go` keeps it for the scale-down delay.

use std::collections::VecDeque;

/// Averages are floored to this many decimal digits so float noise cannot add a pod
/// (`ceil(7.000000001 / 7) = 2`).
const PRECISION_DIGITS: i32 = 6;

/// Per-bucket values over the last `n` buckets.
///
/// Averaging follows Knative: when the first value is younger than the window, the average is over
/// the buckets since then; when the last value is older than now, the buckets after it do not
/// count; a bucket with no value between two that have one counts as 0; after a whole window
/// without values the window starts afresh.
#[derive(Clone, Debug)]
pub struct AverageWindow {
    buckets: Vec<f64>,
    first: i64,
    last: Option<i64>,
}

impl AverageWindow {
    /// A window of `n` buckets (at least 1).
    pub fn new(n: usize) -> Self {
        Self {
            buckets: vec![0.0; n.max(1)],
            first: 0,
            last: None,
        }
    }

    /// Buckets in the window.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True before the first value.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Records `value` in `bucket`. One value per bucket: when two land in the same bucket the
    /// larger wins. Values older than the window are ignored.
    pub fn record(&mut self, bucket: i64, value: f64) {
        let n = self.len_i64();
        match self.last {
            None => {
                self.first = bucket;
                self.last = Some(bucket);
                self.buckets.fill(0.0);
            }
            Some(last) if bucket > last => {
                if bucket - last >= n {
                    self.buckets.fill(0.0);
                    self.first = bucket;
                } else {
                    for b in last + 1..=bucket {
                        let i = self.index(b);
                        self.buckets[i] = 0.0;
                    }
                }
                self.last = Some(bucket);
            }
            Some(last) if last - bucket >= n => return,
            Some(_) => self.first = self.first.min(bucket),
        }
        let i = self.index(bucket);
        self.buckets[i] = self.buckets[i].max(value);
    }

    /// The average over the window ending at bucket `now`; 0 without values in it.
    pub fn average(&self, now: i64) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let n = self.len_i64();
        let gap = now - last;
        if gap >= n {
            return 0.0;
        }
        let gap = gap.max(0);
        // Buckets that hold values: (max(now, last) - n, last].
        let end = last;
        let start = (now.max(last) - n + 1).max(self.first);
        let total: f64 = (start..=end).map(|b| self.buckets[self.index(b)]).sum();
        let count = (last - self.first + 1).min(n - gap);
        if count <= 0 {
            return 0.0;
        }
        floor_digits(total / count as f64)
    }

    fn len_i64(&self) -> i64 {
        i64::try_from(self.buckets.len()).unwrap_or(i64::MAX)
    }

    fn index(&self, bucket: i64) -> usize {
        // rem_euclid of a positive length is in [0, len).
        usize::try_from(bucket.rem_euclid(self.len_i64())).unwrap_or(0)
    }
}

/// The largest value recorded in the last `n` buckets (a descending-maxima deque).
#[derive(Clone, Debug)]
pub struct MaxWindow {
    n: i64,
    maxima: VecDeque<(i64, u32)>,
}

impl MaxWindow {
    /// A window of `n` buckets (at least 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: i64::try_from(n.max(1)).unwrap_or(i64::MAX),
            maxima: VecDeque::new(),
        }
    }

    /// Records `value` in `bucket` (buckets never go backwards) and returns the window's maximum.
    pub fn record(&mut self, bucket: i64, value: u32) -> u32 {
        let mut value = value;
        while let Some(&(b, v)) = self.maxima.back() {
            if b == bucket {
                value = value.max(v);
                self.maxima.pop_back();
            } else if v <= value {
                self.maxima.pop_back();
            } else {
                break;
            }
        }
        while self
            .maxima
            .front()
            .is_some_and(|&(b, _)| bucket - b >= self.n)
        {
            self.maxima.pop_front();
        }
        self.maxima.push_back((bucket, value));
        self.current()
    }

    /// The maximum of the last recorded window.
    pub fn current(&self) -> u32 {
        self.maxima.front().map_or(0, |&(_, v)| v)
    }
}

fn floor_digits(x: f64) -> f64 {
    let p = 10f64.powi(PRECISION_DIGITS);
    (x * p).floor() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_window_averages_over_the_buckets_since_the_first_value() {
        let mut w = AverageWindow::new(60);
        assert_eq!(w.average(0), 0.0);
        w.record(10, 6.0);
        assert_eq!(w.average(10), 6.0);
        w.record(11, 0.0);
        w.record(12, 3.0);
        assert_eq!(w.average(12), 3.0);
    }

    #[test]
    fn full_window_drops_old_buckets() {
        let mut w = AverageWindow::new(6);
        for b in 0..6 {
            w.record(b, 6.0);
        }
        assert_eq!(w.average(5), 6.0);
        w.record(6, 0.0);
        w.record(7, 0.0);
        assert_eq!(w.average(7), 4.0);
    }

    #[test]
    fn gaps_inside_count_as_zero_gaps_at_the_end_do_not() {
        let mut w = AverageWindow::new(10);
        w.record(0, 10.0);
        w.record(4, 10.0);
        // Buckets 1..=3 hold nothing: 20 / 5.
        assert_eq!(w.average(4), 4.0);
        // Two buckets without values after the last: still 20 / 5 (Knative excludes them).
        assert_eq!(w.average(6), 4.0);
        // Once the whole window has passed, nothing.
        assert_eq!(w.average(14), 0.0);
    }

    #[test]
    fn a_window_without_values_starts_afresh() {
        let mut w = AverageWindow::new(6);
        for b in 0..6 {
            w.record(b, 0.0);
        }
        w.record(20, 12.0);
        assert_eq!(w.average(20), 12.0);
    }

    #[test]
    fn same_bucket_keeps_the_larger_value() {
        let mut w = AverageWindow::new(6);
        w.record(3, 2.0);
        w.record(3, 5.0);
        w.record(3, 1.0);
        assert_eq!(w.average(3), 5.0);
    }

    #[test]
    fn averages_are_floored_to_six_digits() {
        let mut w = AverageWindow::new(3);
        w.record(0, 7.000_000_000_1);
        assert_eq!(w.average(0), 7.0);
    }

    #[test]
    fn max_window_keeps_the_largest_recent_value() {
        let mut m = MaxWindow::new(3);
        assert_eq!(m.current(), 0);
        assert_eq!(m.record(0, 4), 4);
        assert_eq!(m.record(1, 2), 4);
        assert_eq!(m.record(2, 3), 4);
        assert_eq!(m.record(3, 1), 3, "4 scrolled out");
        assert_eq!(m.record(5, 0), 1);
        assert_eq!(m.record(6, 0), 0);
        assert_eq!(m.record(6, 7), 7, "same bucket: the larger");
        assert_eq!(m.record(6, 2), 7);
    }
}
