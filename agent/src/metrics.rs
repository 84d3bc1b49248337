//! The agent's self-telemetry registry (Prometheus).
//!
//! Every module registers its metric families here once (through
//! [`register`]) and keeps a clone to update; the `/metrics` endpoint encodes
//! the whole registry. Following the "typed internal event" habit, a loss or
//! error should update a metric *and* emit one structured `tracing` event at
//! the same place, so neither the log nor the counter is ever the only record.

pub mod loop_lag;

use std::sync::{LazyLock, Mutex};

use prometheus_client::{encoding::text::encode, registry::Registry};

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("picket")));

/// Registers `metric` under `picket_<name>` and returns it (metrics are cheap
/// `Arc` clones). Call once per family, e.g. from a `LazyLock`.
pub fn register<M>(name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register(name, help, metric.clone());
    metric
}

/// The registry in the Prometheus text exposition format.
pub fn encode_text() -> String {
    let mut out = String::new();
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}
