//! Waiting longer and longer between attempts at something that keeps failing (a device that
//! does not answer, a broker that cannot be reached), so that the failures cost little and hold
//! nothing else up, and starting over once it works again.

use std::time::Duration;

/// Doublings after which a wait grows no more, whatever its bound.
const MAX_DOUBLINGS: u32 = 10;

/// Counts failures in a row and says how long to wait before the next attempt.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt: `first`, doubled for each failure in a row so far, at
    /// most `max`. The caller gives the bounds, since some (a poll interval) change over time.
    pub fn delay(&self, first: Duration, max: Duration) -> Duration {
        first.saturating_mul(1 << self.failures.min(MAX_DOUBLINGS)).min(max)
    }

    /// Counts one more failure in a row.
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// It worked: the next wait is the first one again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_bound_and_start_over_after_a_success() {
        let (first, max) = (Duration::from_millis(250), Duration::from_secs(30));
        let mut backoff = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            waits.push(backoff.delay(first, max).as_millis());
            backoff.failed();
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
        assert!(backoff.is_failing());
        backoff.reset();
        assert!(!backoff.is_failing());
        assert_eq!(backoff.delay(first, max), first);
        // However many failures, the doubling stops: a bound far off is never reached.
        for _ in 0..100 {
            backoff.failed();
        }
        assert_eq!(backoff.delay(first, Duration::MAX), first * 1024);
    }
}
