//! The ring-buffer reader: a tokio task woken by epoll on the map's fd.

use std::{sync::LazyLock, time::Duration};

use aya::maps::{MapData, RingBuf};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::decode::{RawEvent, decode, record_error};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

static RECEIVED: LazyLock<Family<KindLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "kernel_events",
        "Records read from the ring buffer, by event kind",
        Family::default(),
    )
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    /// `wakeup` (the kernel signalled the fd) or `repoll` (the batching
    /// timer ran out first).
    trigger: &'static str,
}

static READS: LazyLock<Family<TriggerLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "ring_reads",
        "Reads of the ring buffer, by what started them: a kernel wake-up or the \
         re-poll after a read that found records (wake-up batching, --ring-wakeup-us)",
        Family::default(),
    )
});

/// Most records drained per wake-up before yielding to the runtime.
const BATCH: usize = 256;

/// Reads records until `tx` closes. Decoded events are sent in batches; a full
/// channel applies back-pressure to this task, which lets the ring buffer
/// fill, which the kernel counts as lost events: nothing is dropped silently.
///
/// `repoll` is the kernel's wake-up batching interval
/// (`agent_common::settings::wakeup`; zero = a wake-up per record). Records
/// submitted after the last forced wake-up raise no readiness, so after every
/// read that found records the ring is read again `repoll` later, until two
/// reads in a row find it empty; then only a wake-up resumes reading.
///
/// Why two: a record reserved (still busy) when a read finds the ring empty,
/// and committed just after without a wake-up, would otherwise wait for the
/// next forced wake-up — on a quiet host an unbounded delay. A program holds
/// a record busy for microseconds, far less than `repoll`, so one more timed
/// read finds it, at the cost of one timer per burst.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<RawEvent>>,
    repoll: Duration,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd; it stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Timed re-reads left before waiting for a wake-up only.
    let mut timed_reads = 0u8;
    loop {
        let trigger = if timed_reads > 0 && !repoll.is_zero() {
            match tokio::time::timeout(repoll, fd.readable_mut()).await {
                Ok(guard) => {
                    guard?.clear_ready();
                    "wakeup"
                }
                Err(_) => "repoll",
            }
        } else {
            fd.readable_mut().await?.clear_ready();
            "wakeup"
        };
        READS.get_or_create(&TriggerLabel { trigger }).inc();
        // Readiness is cleared before draining, not after: a wake-up that
        // arrives while we drain sets it again instead of being lost.
        match drain(fd.get_mut(), &tx).await {
            Some(0) => timed_reads = timed_reads.saturating_sub(1),
            Some(_) => timed_reads = 2,
            None => return Ok(()),
        }
    }
}

/// Reads every record available now; the number consumed (malformed ones
/// included: they too may have been submitted without a wake-up), or `None`
/// once `tx` is closed.
async fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Vec<RawEvent>>) -> Option<usize> {
    let mut total = 0;
    loop {
        let mut batch = Vec::with_capacity(32);
        let mut consumed = 0;
        while consumed < BATCH {
            let Some(item) = ring.next() else { break };
            consumed += 1;
            match decode(&item) {
                Ok(ev) => {
                    let kind = agent_common::EventKind::from_u16(ev.header().kind)
                        .map(|k| k.name())
                        .unwrap_or("unknown");
                    RECEIVED.get_or_create(&KindLabel { kind }).inc();
                    batch.push(ev);
                }
                Err(e) => record_error(&e),
            }
        }
        total += consumed;
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return None;
        }
        if consumed < BATCH {
            return Some(total);
        }
    }
}
