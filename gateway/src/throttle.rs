//! Rate limiting for warnings that can repeat every poll (a full disk, a failing sync): the
//! first is logged, then at most one a minute with the number held back in between.

use std::time::{Duration, Instant};

/// How often a repeated warning is let through.
pub const WARNING_EVERY: Duration = Duration::from_secs(60);

/// Lets a repeated warning through at most once per [`WARNING_EVERY`].
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// Whether to log this occurrence; if so, how many were held back since the last one.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARNING_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_passes_and_repeats_are_counted_until_the_next() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!((throttle.allow(), throttle.allow()), (None, None));
        throttle.last = throttle.last.map(|last| last - WARNING_EVERY);
        assert_eq!(throttle.allow(), Some(2));
    }
}
