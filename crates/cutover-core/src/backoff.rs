//! Exponential back-off: how long to wait before trying again after failures in a row.
//!
//! One policy for every retry loop in the workspace (accepting connections, restarting a
//! crashed instance, persisting state, retrying a backend operation, resubmitting a
//! `Release` object), so that they all double the same way and all stop doubling at a cap.
//! It is pure: it never reads the clock and never sleeps. A driver asks it for the next
//! delay and sleeps for that long itself; the state machine adds the delay to the `now` it
//! was given. There is no jitter: every caller is a single loop on its own, not a crowd of
//! clients retrying against one server at once.

use crate::Duration;

/// A doubling delay between `first` and `max`, and how many failures in a row it has seen.
///
/// Written once as a constant policy and copied into each loop that uses it:
/// [`Backoff::next_delay`] counts a failure and says how long to wait, [`Backoff::reset`]
/// starts over after a success. [`Backoff::delay_after`] answers the same question for a
/// failure count kept elsewhere (in persisted state, in a map of retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A policy that waits `first` after the first failure, twice as long after each further
    /// failure in a row, and never longer than `max`. A `max` below `first` caps `first` too.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// The wait after `failures` failures in a row: `first × 2^(failures − 1)`, at most
    /// `max`. Zero failures are counted as one, so a caller never gets a zero wait by
    /// mistake and spins.
    #[must_use]
    pub fn delay_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        self.first.saturating_mul(1u64 << doublings).min(self.max)
    }

    /// Counts one more failure and returns how long to wait before the next attempt.
    #[must_use]
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay_after(self.failures)
    }

    /// Forgets the failures after a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row have been counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

    #[test]
    fn delays_double_from_first_and_stop_at_max() {
        let mut backoff = POLICY;
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff.failures(), 7);
    }

    #[test]
    fn reset_starts_again_from_first() {
        let mut backoff = POLICY;
        let _ = backoff.next_delay();
        let _ = backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn delay_after_matches_counted_delays() {
        let mut backoff = POLICY;
        for failures in 1..=10 {
            assert_eq!(backoff.next_delay(), POLICY.delay_after(failures));
        }
    }

    #[test]
    fn zero_failures_wait_like_one_never_zero() {
        assert_eq!(POLICY.delay_after(0), Duration::from_millis(100));
    }

    #[test]
    fn huge_failure_counts_saturate_at_max_without_overflow() {
        let huge = Backoff::new(
            Duration::from_secs(u64::MAX / 1000),
            Duration::from_secs(60),
        );
        assert_eq!(huge.delay_after(u32::MAX), Duration::from_secs(60));
        assert_eq!(POLICY.delay_after(64), Duration::from_secs(1));
        assert_eq!(POLICY.delay_after(u32::MAX), Duration::from_secs(1));
        let mut counted = POLICY;
        counted.failures = u32::MAX;
        assert_eq!(counted.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn max_below_first_caps_first() {
        let capped = Backoff::new(Duration::from_secs(5), Duration::from_secs(2));
        assert_eq!(capped.delay_after(1), Duration::from_secs(2));
    }
}
