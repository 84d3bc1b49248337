//! Exponential back-off with equal jitter: the one retry policy of the
//! agent (Kubernetes watches, delivery sinks).
//!
//! The ceiling doubles per failure from `initial` up to `max`; each wait is
//! drawn uniformly from `[ceiling/2, ceiling]` ("equal jitter"). Half the
//! ceiling is always waited, so a failing peer is never hammered, and the
//! random half spreads the retries of thousands of agents (one per node)
//! after an API server or collector restart, so they do not reconnect in
//! lock-step. ("Full jitter", `[0, ceiling]`, spreads more but may retry at
//! once.)

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

/// Back-off state: failures since the last success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    seed: RandomState,
    draws: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            seed: RandomState::new(),
            draws: 0,
        }
    }

    /// Failures since the last success.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling of the wait after `attempt` earlier failures:
    /// `initial · 2^attempt`, capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait (counts a failure).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.draws = self.draws.wrapping_add(1);
        // A fresh 64-bit value per call from std's randomly keyed hasher
        // (enough for jitter; no extra dependency).
        equal_jitter(ceiling, self.seed.hash_one(self.draws))
    }
}

/// `ceiling/2 + random % (ceiling/2 + 1 ns)`: uniform in `[ceiling/2, ceiling]`.
pub fn equal_jitter(ceiling: Duration, random: u64) -> Duration {
    let half = ceiling / 2;
    let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % span.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for (d, c) in d.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(*d >= c / 2 && *d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

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

    #[test]
    fn ceilings_and_jitter_exactly() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        let c: Vec<u128> = (0..6).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(c, [50, 100, 200, 400, 400, 400]);
        // The cap holds for huge attempt counts (no overflow).
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(400));
        let ms = Duration::from_millis;
        assert_eq!(equal_jitter(ms(400), 0), ms(200));
        // 200 ms span + 1 ns: the largest draw lands on the ceiling.
        assert_eq!(equal_jitter(ms(400), 200_000_000), ms(400));
        assert_eq!(equal_jitter(ms(400), 200_000_001), ms(200));
        assert_eq!(equal_jitter(ms(400), 50_000_000), ms(250));
        assert_eq!(equal_jitter(Duration::ZERO, u64::MAX), Duration::ZERO);
    }
}
