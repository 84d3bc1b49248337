//! Exponential back-off with jitter for API retries.
//!
//! Jitter spreads the retries of thousands of agents (one per node) after an
//! API server restart, so they do not reconnect in lock-step.

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

/// Delays `min, 2·min, 4·min, ...` capped at `max`, each drawn uniformly from
/// `[d/2, d]` ("equal jitter").
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    seed: RandomState,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            seed: RandomState::new(),
        }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let full = self.min.saturating_mul(factor).min(self.max);
        let half = full / 2;
        // A fresh random 64-bit value per call from std's randomly keyed hasher.
        let r = self.seed.hash_one(self.attempt) % 1_000_000;
        let extra = half.mul_f64(r as f64 / 1_000_000.0);
        half + extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in [{lo}, {hi}] ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
