//! Retry delays: Knative's linear and exponential policies, with jitter.
//!
//! Retry `n` (1 for the first retry) waits `delay × n` (linear) or `delay × 2^(n-1)`
//! (exponential, so the first retry waits exactly `backoffDelay`), multiplied by a jitter factor
//! drawn uniformly from [0.8, 1.2] so that subscribers recovering from an outage are not hit by
//! every trigger at the same instant. Delays are capped at [`MAX_BACKOFF`].

use std::time::Duration;

use triggers::BackoffPolicy;

/// Longest single wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Spread of the jitter factor around 1.0.
pub const JITTER: f64 = 0.2;

/// The delay before retry `retry` (1-based) without jitter.
pub fn base_delay(policy: BackoffPolicy, delay: Duration, retry: u32) -> Duration {
    let retry = retry.max(1);
    let factor = match policy {
        BackoffPolicy::Linear => f64::from(retry),
        BackoffPolicy::Exponential => 2f64.powi(i32::try_from(retry - 1).unwrap_or(i32::MAX)),
    };
    let secs = delay.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= MAX_BACKOFF.as_secs_f64() {
        MAX_BACKOFF
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// Applies a jitter factor `unit` in [0, 1) mapped onto [1 - JITTER, 1 + JITTER).
pub fn jittered(base: Duration, unit: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    base.mul_f64(factor).min(MAX_BACKOFF)
}

/// The delay before retry `retry`, honouring a `Retry-After` hint when the trigger allows it:
/// the wait becomes `max(backoff, min(retry_after, retry_after_max))`.
pub fn delay_for(
    policy: BackoffPolicy,
    delay: Duration,
    retry: u32,
    retry_after: Option<Duration>,
    retry_after_max: Option<Duration>,
) -> Duration {
    let backoff = jittered(base_delay(policy, delay, retry), rand::random::<f64>());
    match (retry_after, retry_after_max) {
        (Some(hint), Some(max)) => backoff.max(hint.min(max)),
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: Duration = Duration::from_millis(200);

    #[test]
    fn linear_grows_by_delay() {
        assert_eq!(base_delay(BackoffPolicy::Linear, D, 1), D);
        assert_eq!(base_delay(BackoffPolicy::Linear, D, 3), D * 3);
    }

    #[test]
    fn exponential_doubles_from_delay() {
        assert_eq!(base_delay(BackoffPolicy::Exponential, D, 1), D);
        assert_eq!(base_delay(BackoffPolicy::Exponential, D, 2), D * 2);
        assert_eq!(base_delay(BackoffPolicy::Exponential, D, 4), D * 8);
    }

    #[test]
    fn huge_retry_counts_are_capped() {
        assert_eq!(base_delay(BackoffPolicy::Exponential, D, 5000), MAX_BACKOFF);
        assert_eq!(base_delay(BackoffPolicy::Linear, D, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_is_bounded_by_retry_after_max() {
        let hint = Some(Duration::from_secs(120));
        let max = Some(Duration::from_secs(5));
        let d = delay_for(BackoffPolicy::Linear, D, 1, hint, max);
        assert_eq!(d, Duration::from_secs(5));
        // Without retryAfterMax the hint is ignored, as in Knative.
        let d = delay_for(BackoffPolicy::Linear, D, 1, hint, None);
        assert!(d <= D.mul_f64(1.0 + JITTER));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(ms in 1u64..100_000, unit in 0.0f64..1.0) {
            let base = Duration::from_millis(ms);
            let d = jittered(base, unit);
            prop_assert!(d >= base.mul_f64(1.0 - JITTER - 1e-9));
            prop_assert!(d <= base.mul_f64(1.0 + JITTER + 1e-9));
        }

        #[test]
        fn delays_never_shrink_with_more_retries(n in 1u32..64, exp in any::<bool>()) {
            let policy = if exp { BackoffPolicy::Exponential } else { BackoffPolicy::Linear };
            prop_assert!(base_delay(policy, D, n + 1) >= base_delay(policy, D, n));
        }
    }
}
