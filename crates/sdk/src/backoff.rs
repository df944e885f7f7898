//! Reconnection delays: exponential backoff with full jitter, so that many clients losing the
//! same server do not all come back in the same instant.

use std::time::Duration;

/// Exponential backoff between `min` and `max`, doubling per failure.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), failures: 0 }
    }

    /// After a success: the next failure waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt, given a uniform `jitter` in `[0, 1)`: a random point
    /// in the upper half of the current window (never below `min`), so that the delay still
    /// grows while clients spread out.
    pub(crate) fn next_delay(&mut self, jitter: f64) -> Duration {
        let window = self.min.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter = jitter.clamp(0.0, 1.0);
        window.mul_f64(0.5 + jitter / 2.0).max(self.min)
    }

    /// The delay with jitter from the operating system's random source (the clock's nanoseconds
    /// if it has none).
    pub(crate) fn next(&mut self) -> Duration {
        self.next_delay(random_unit())
    }
}

/// A uniform number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos().into()).unwrap_or(0)
    });
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<u128> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(top, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100), "never below the minimum");
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(200), "half the 400 ms window");
    }

    #[test]
    fn jitter_stays_within_the_window() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(60));
        for failures in 0..30 {
            let d = b.next();
            let window = Duration::from_millis(10).saturating_mul(1 << failures.min(20)).min(Duration::from_secs(60));
            assert!(d >= window / 2 && d <= window, "{d:?} outside {window:?}");
        }
        assert!((0..100).map(|_| random_unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
