//! Exponential backoff, the one formula every retry in the engine uses: a
//! store write the delivery actor keeps, a drone actor restarted by the
//! fleet, a supervisor restarting a child, the pump after a failed receive,
//! a message put back on the queue.

use std::time::Duration;

/// `base × 2^attempt`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay before retry number `attempt` (0: the first retry waits
    /// `base`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_maximum() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(6_400));
        let delays: Vec<u64> = (0..10).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 6_400, 6_400, 6_400]
        );
        // No overflow, however many attempts.
        assert_eq!(b.delay(31), b.max);
        assert_eq!(b.delay(u32::MAX), b.max);
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }
}
