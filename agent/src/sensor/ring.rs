//! The ring-buffer reader: a tokio task woken by epoll on the map's fd.

use std::sync::LazyLock;

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

/// Most records drained per wake-up before yielding to the runtime.
const BATCH: usize = 256;

/// Reads records until `tx` closes. Decoded events are sent in batches; a full
/// channel applies back-pressure to this task, which lets the ring buffer
/// fill, which the kernel counts as lost events: nothing is dropped silently.
pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<Vec<RawEvent>>) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd; it stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        loop {
            let mut batch = Vec::with_capacity(32);
            {
                let ring = guard.get_inner_mut();
                while batch.len() < BATCH {
                    let Some(item) = ring.next() else { break };
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
            }
            let full = batch.len() == BATCH;
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
        guard.clear_ready();
    }
}
