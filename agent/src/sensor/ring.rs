//! The ring-buffer reader: read inside the task that enriches the records,
//! woken by epoll on the map's fd, a batch at a time.
//!
//! There is no reader task of its own: the enrichment task (crate::agent)
//! awaits [`RingReader::readable`] and then calls [`RingReader::read`] with
//! the per-record work as a closure, so a record goes from the ring through
//! decoding and enrichment without a channel or a task hand-off.

use std::{sync::LazyLock, time::Duration};

use agent_common::EventKind;
use aya::maps::{MapData, RingBuf};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::io::unix::AsyncFd;

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

/// Most records read per [`RingReader::read`] call: the caller hands each
/// batch on before the next read, so other tasks on the event thread run
/// between batches, and a slow consumer holds back reading (back-pressure:
/// the ring fills and the kernel counts the losses).
pub const BATCH: usize = 256;

/// The `kernel_events` counter of each kind, looked up once: a label lookup
/// in the metric family per record (hashing the label, a lock) was ~1% of
/// the agent's CPU in an exec storm.
struct KindCounters {
    by_kind: Vec<Option<Counter>>,
    unknown: Counter,
}

impl KindCounters {
    fn new() -> Self {
        let by_kind = (0..EventKind::COUNT)
            .map(|k| {
                let kind = u16::try_from(k).ok().and_then(EventKind::from_u16)?;
                Some(RECEIVED.get_or_create_owned(&KindLabel { kind: kind.name() }))
            })
            .collect();
        Self {
            by_kind,
            unknown: RECEIVED.get_or_create_owned(&KindLabel { kind: "unknown" }),
        }
    }

    fn inc(&self, kind: u16) {
        match self.by_kind.get(usize::from(kind)) {
            Some(Some(c)) => c.inc(),
            _ => self.unknown.inc(),
        };
    }
}

/// The ring buffer, registered with the runtime's epoll.
///
/// Wake-up batching: `repoll` is the kernel's wake-up batching interval
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
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
    repoll: Duration,
    /// Timed re-reads left before waiting for a wake-up only.
    timed_reads: u8,
    /// The last read stopped at its limit: more records are waiting.
    more: bool,
    /// Records consumed since the reader last waited.
    found: usize,
    counters: KindCounters,
    /// `ring_reads{trigger="wakeup"}` and `{trigger="repoll"}`.
    reads: [Counter; 2],
}

impl RingReader {
    /// Registers the ring buffer's fd with the current runtime.
    pub fn new(ring: RingBuf<MapData>, repoll: Duration) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd; it stays open and unchanged
        // for as long as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            fd,
            repoll,
            timed_reads: 0,
            more: false,
            found: 0,
            counters: KindCounters::new(),
            reads: ["wakeup", "repoll"]
                .map(|trigger| READS.get_or_create_owned(&TriggerLabel { trigger })),
        })
    }

    /// Waits until a read may find records: at once when the last read
    /// stopped at its limit, else a kernel wake-up or, after a read that
    /// found records, the re-poll timer. Cancel-safe (for `select!`).
    pub async fn readable(&mut self) -> std::io::Result<()> {
        if self.more {
            return Ok(());
        }
        let [wakeup, repoll] = &self.reads;
        let trigger = if self.timed_reads > 0 && !self.repoll.is_zero() {
            match tokio::time::timeout(self.repoll, self.fd.readable_mut()).await {
                Ok(guard) => {
                    guard?.clear_ready();
                    wakeup
                }
                Err(_) => repoll,
            }
        } else {
            self.fd.readable_mut().await?.clear_ready();
            wakeup
        };
        // Readiness is cleared before reading, not after: a wake-up that
        // arrives while we read sets it again instead of being lost.
        trigger.inc();
        Ok(())
    }

    /// Reads up to `max` records, handing each decoded one to `f`
    /// (malformed ones are counted and skipped). Returns the number
    /// consumed, malformed ones included: they too may have been submitted
    /// without a wake-up.
    pub fn read(&mut self, max: usize, mut f: impl FnMut(RawEvent)) -> usize {
        let ring = self.fd.get_mut();
        let mut consumed = 0;
        while consumed < max {
            let Some(item) = ring.next() else { break };
            consumed += 1;
            match decode(&item) {
                Ok(ev) => {
                    // The record is released before `f` runs: enrichment
                    // may take a while, and the kernel can reuse the space.
                    drop(item);
                    self.counters.inc(ev.header().kind);
                    f(ev);
                }
                Err(e) => record_error(&e),
            }
        }
        self.found += consumed;
        self.more = consumed == max && max > 0;
        if !self.more {
            // The ring is drained: re-poll after a read that found records,
            // count down the timed reads after one that found none.
            self.timed_reads = if self.found > 0 {
                2
            } else {
                self.timed_reads.saturating_sub(1)
            };
            self.found = 0;
        }
        consumed
    }
}
