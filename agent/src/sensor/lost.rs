//! Turning the kernel's per-CPU loss counters into metrics and
//! `events_lost` records.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use agent_common::EventKind;
use aya::maps::{MapData, PerCpuArray};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::sync::mpsc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabel {
    kind: String,
    reason: &'static str,
}

static LOST: LazyLock<Family<LostLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "events_lost",
        "Events the kernel could not deliver, by kind and reason",
        Family::default(),
    )
});

/// Events lost since the previous report, for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub kind: String,
    pub count: u64,
    pub reason: &'static str,
}

/// Name of a loss-counter slot.
pub fn kind_name(slot: u32) -> String {
    EventKind::from_u16(slot as u16)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("kind_{slot}"))
}

/// Creates `picket_events_lost_total{kind,reason}` at 0 for every kind, so
/// `rate()` and `absent()` alerts can be written before the first loss.
pub fn register_kinds() {
    for slot in 0..EventKind::COUNT {
        if let Some(k) = EventKind::from_u16(slot as u16) {
            let _ = LOST.get_or_create(&LostLabel {
                kind: k.name().to_string(),
                reason: "ringbuf_full",
            });
        }
    }
}

/// Tracks counter totals between polls.
pub struct LossTracker {
    map: PerCpuArray<MapData, u64>,
    last: BTreeMap<u32, u64>,
}

impl LossTracker {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        register_kinds();
        Self {
            map,
            last: BTreeMap::new(),
        }
    }

    /// Reads all counters and returns the increases since the last call.
    pub fn poll(&mut self) -> Vec<Loss> {
        let mut out = Vec::new();
        for slot in 0..EventKind::COUNT {
            let total: u64 = match self.map.get(&slot, 0) {
                Ok(values) => values.iter().copied().sum(),
                Err(e) => {
                    tracing::warn!(slot, error = %e, "reading loss counters failed");
                    continue;
                }
            };
            let prev = self.last.insert(slot, total).unwrap_or(0);
            if total > prev {
                let kind = kind_name(slot);
                let count = total - prev;
                LOST.get_or_create(&LostLabel {
                    kind: kind.clone(),
                    reason: "ringbuf_full",
                })
                .inc_by(count);
                tracing::warn!(kind, count, reason = "ringbuf_full", "kernel events lost");
                out.push(Loss {
                    kind,
                    count,
                    reason: "ringbuf_full",
                });
            }
        }
        out
    }
}

/// Polls every `every` and sends non-empty reports until `tx` closes.
pub async fn run(mut tracker: LossTracker, every: Duration, tx: mpsc::Sender<Vec<Loss>>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let losses = tracker.poll();
        if !losses.is_empty() && tx.send(losses).await.is_err() {
            return;
        }
    }
}
