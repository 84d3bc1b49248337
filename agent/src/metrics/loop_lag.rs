//! A watchdog for the event runtime: how late a timer fires.
//!
//! `picket run` drives the whole event path (ring reads, enrichment, rules,
//! output, delivery) on one current-thread tokio runtime. A blocking call
//! anywhere on it (a synchronous file read, a lock held across I/O, a long
//! loop) stalls every event behind it, and no functional test notices. This
//! task asks to wake every [`INTERVAL`] and records how much later than
//! asked it actually ran: on an idle agent about the timer's 1 ms
//! granularity; a blocking call of N ms shows as a lag of about N ms.
//!
//! Exported as `picket_event_loop_lag_seconds` (histogram) and
//! `picket_event_loop_lag_max_seconds` (the largest lag since start); a lag
//! above [`WARN_LAG`] is also logged.

use std::{
    sync::{LazyLock, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::metrics::{gauge::Gauge, histogram::Histogram};

/// How often the watchdog asks to be woken.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Lags above this are logged (a warning per occurrence, at most one per
/// [`INTERVAL`]).
pub const WARN_LAG: Duration = Duration::from_millis(100);

/// Bucket bounds in seconds: from the timer's granularity (1 ms) to seconds.
const BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Where one watchdog records its measurements.
#[derive(Clone)]
pub struct LagMetrics {
    pub lag: Histogram,
    pub max: Gauge<f64, AtomicU64>,
}

impl LagMetrics {
    /// Metrics not registered anywhere (tests).
    pub fn unregistered() -> Self {
        Self {
            lag: Histogram::new(BUCKETS),
            max: Gauge::default(),
        }
    }

    fn observe(&self, lag: Duration) {
        let secs = lag.as_secs_f64();
        self.lag.observe(secs);
        if secs > self.max.get() {
            self.max.set(secs);
        }
    }
}

/// The agent's registered lag metrics.
pub static METRICS: LazyLock<LagMetrics> = LazyLock::new(|| LagMetrics {
    lag: crate::metrics::register(
        "event_loop_lag_seconds",
        "How much later than asked a timer on the event runtime fired (seconds): \
         a blocking call on the event path shows here",
        Histogram::new(BUCKETS),
    ),
    max: crate::metrics::register(
        "event_loop_lag_max_seconds",
        "The largest event-runtime lag seen since start (seconds)",
        Gauge::default(),
    ),
});

/// Measures the lag of the runtime it is spawned on, forever, into the
/// agent's registered metrics.
pub async fn watch(interval: Duration) {
    watch_into(interval, &METRICS).await
}

/// [`watch`] into the given metrics.
pub async fn watch_into(interval: Duration, m: &LagMetrics) {
    loop {
        let due = tokio::time::Instant::now() + interval;
        tokio::time::sleep_until(due).await;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        m.observe(lag);
        if lag > WARN_LAG {
            tracing::warn!(
                lag_ms = lag.as_millis() as u64,
                "the event runtime was blocked: a timer fired late"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(count, sum)` of the histogram, from its text encoding.
    fn count_and_sum(m: &LagMetrics) -> (u64, f64) {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("lag_seconds", "test", m.lag.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .trim()
                .to_owned()
        };
        (
            value("lag_seconds_count").parse().expect("count"),
            value("lag_seconds_sum").parse().expect("sum"),
        )
    }

    /// On an idle runtime the watchdog runs once per interval and sees
    /// small lags; the agent's metric family is registered under the
    /// documented names.
    #[test]
    fn idle_runtime_has_small_lag_and_the_metric_exists() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let m = LagMetrics::unregistered();
        let watched = m.clone();
        rt.block_on(async move {
            let w =
                tokio::spawn(async move { watch_into(Duration::from_millis(10), &watched).await });
            tokio::time::sleep(Duration::from_millis(200)).await;
            w.abort();
        });
        let (n, sum) = count_and_sum(&m);
        // 200 ms at 10 ms per wake-up (+ the lag of each): about 18-20,
        // fewer only if the machine itself starves this thread.
        assert!((5..=20).contains(&n), "{n} measurements in 200 ms");
        // Small-bounded, not a performance assertion: nothing blocked.
        assert!(m.max.get() < 1.0, "idle lag {} s", m.max.get());
        assert!(sum <= m.max.get() * n as f64 + 1e-9, "sum {sum}");

        LazyLock::force(&METRICS);
        let text = crate::metrics::encode_text();
        for line in [
            "# TYPE picket_event_loop_lag_seconds histogram",
            "picket_event_loop_lag_seconds_bucket{le=\"0.001\"}",
            "picket_event_loop_lag_seconds_bucket{le=\"+Inf\"}",
            "# TYPE picket_event_loop_lag_max_seconds gauge",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    /// A blocking call on the runtime shows as a lag at least as long as
    /// the block (the guard this module exists for).
    #[test]
    fn a_blocking_call_shows_as_lag() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let m = LagMetrics::unregistered();
        let watched = m.clone();
        rt.block_on(async move {
            let w =
                tokio::spawn(async move { watch_into(Duration::from_millis(10), &watched).await });
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Deliberately blocks the only thread of the runtime.
            std::thread::sleep(Duration::from_millis(300));
            tokio::time::sleep(Duration::from_millis(30)).await;
            w.abort();
        });
        // The watchdog's timer was due at most 10 ms into the block.
        assert!(m.max.get() >= 0.29, "max lag {} s", m.max.get());
        assert!(m.max.get() < 5.0, "max lag {} s", m.max.get());
    }
}
