//! Scheduled scaling composed with the class: one pure function of the windows, the Service's
//! own bounds and the instant.
//!
//! Outside every window the Service's `min-scale`/`max-scale` apply. Inside open windows the
//! class still decides, within bounds the windows adjust: the highest floor wins (a window
//! raises `min-scale`, it never lowers it), the lowest ceiling wins (a window may lower
//! `max-scale`), and the floor never exceeds the ceiling (the ceiling wins).

use jiff::Timestamp;
use triggers::schedule::Window;

/// `(min, max)` pods at `at`: `max` `None` is unbounded (as is Knative's `max-scale: 0`).
pub fn bounds(min: u32, max: Option<u32>, windows: &[Window], at: Timestamp) -> (u32, Option<u32>) {
    let max = max.filter(|m| *m > 0);
    let open: Vec<&Window> = windows.iter().filter(|w| w.is_open(at)).collect();
    if open.is_empty() {
        return (min, max);
    }
    let floor = open.iter().map(|w| w.min_scale).fold(min, u32::max);
    let ceiling = open.iter().filter_map(|w| w.max_scale).chain(max).min();
    match ceiling {
        Some(ceiling) => (floor.min(ceiling), Some(ceiling)),
        None => (floor, None),
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::DateTime;
    use triggers::schedule::{Cron, time_zone};

    use super::*;

    fn at(civil: &str) -> Timestamp {
        let dt: DateTime = civil.parse().expect("civil");
        time_zone("Europe/Berlin")
            .expect("zone")
            .to_ambiguous_zoned(dt)
            .compatible()
            .expect("zoned")
            .timestamp()
    }

    fn window(start: &str, end: &str, min_scale: u32, max_scale: Option<u32>) -> Window {
        Window {
            start: Cron::parse(start).expect("start"),
            end: Cron::parse(end).expect("end"),
            timezone: "Europe/Berlin".into(),
            tz: time_zone("Europe/Berlin").expect("zone"),
            min_scale,
            max_scale,
        }
    }

    #[test]
    fn outside_every_window_the_service_s_bounds_apply() {
        let windows = [window("0 8 * * *", "0 18 * * *", 5, Some(8))];
        assert_eq!(
            bounds(1, Some(10), &windows, at("2026-12-02T07:00")),
            (1, Some(10))
        );
        assert_eq!(
            bounds(0, Some(0), &windows, at("2026-12-02T19:00")),
            (0, None),
            "max-scale 0 is unbounded"
        );
    }

    #[test]
    fn a_window_raises_the_floor_and_may_lower_the_ceiling() {
        let windows = [window("0 8 * * *", "0 18 * * *", 5, Some(8))];
        assert_eq!(
            bounds(1, Some(10), &windows, at("2026-12-02T09:00")),
            (5, Some(8))
        );
        // It never lowers the Service's floor.
        assert_eq!(
            bounds(6, None, &windows, at("2026-12-02T09:00")),
            (6, Some(8))
        );
    }

    #[test]
    fn overlapping_windows_take_the_highest_floor_and_the_lowest_ceiling() {
        // Morning peak 08–12 at ≥ 4 (≤ 20), lunch 11:30–14 at ≥ 6, cost cap 10–16 at ≤ 5.
        let windows = [
            window("0 8 * * *", "0 12 * * *", 4, Some(20)),
            window("30 11 * * *", "0 14 * * *", 6, None),
            window("0 10 * * *", "0 16 * * *", 0, Some(5)),
        ];
        assert_eq!(
            bounds(1, None, &windows, at("2026-12-02T09:00")),
            (4, Some(20))
        );
        assert_eq!(
            bounds(1, None, &windows, at("2026-12-02T10:30")),
            (4, Some(5))
        );
        // 11:45: floors 4 and 6, ceilings 20 and 5 → floor 6 exceeds ceiling 5: the ceiling wins.
        assert_eq!(
            bounds(1, None, &windows, at("2026-12-02T11:45")),
            (5, Some(5))
        );
        assert_eq!(
            bounds(1, None, &windows, at("2026-12-02T15:00")),
            (1, Some(5))
        );
        assert_eq!(bounds(1, None, &windows, at("2026-12-02T17:00")), (1, None));
    }
}
