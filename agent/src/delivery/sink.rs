//! The sink driver: reads the spool at the sink's own pace, batches,
//! delivers with retries and acknowledges only what the sink accepted.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::retry::Backoff;
use super::spool::{Spool, SpoolError, SpoolItem, SpoolReader};
use super::telemetry::{self, METRICS};

/// Why a delivery attempt failed (the batch is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// A destination of spooled alerts.
pub trait Sink: Send + 'static {
    /// Delivers `items` (alerts and gap records, in order). On `Err` the same
    /// batch is offered again after a back-off.
    fn deliver(
        &mut self,
        items: &[SpoolItem],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Batching and retry settings of one sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkPolicy {
    /// Most items per delivery.
    pub max_batch: usize,
    /// How long to wait for a batch to fill once it has one item (ms).
    pub max_delay_ms: u64,
    /// First retry delay (ms); doubles per failure.
    pub retry_initial_ms: u64,
    /// Ceiling of the retry delay (ms).
    pub retry_max_ms: u64,
}

impl Default for SinkPolicy {
    fn default() -> Self {
        Self {
            max_batch: 512,
            max_delay_ms: 200,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
        }
    }
}

/// Runs `sink` named `name` until `shutdown` turns true, then delivers what
/// is already spooled once more (no retries) and returns.
pub async fn run_sink<S: Sink>(
    name: String,
    mut sink: S,
    spool: Spool,
    policy: SinkPolicy,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SpoolError> {
    let start = spool.bounds().0;
    let mut reader = spool.reader_for_sink(&name, start)?;
    let label = telemetry::sink(&name);
    let mut backoff = Backoff::new(
        Duration::from_millis(policy.retry_initial_ms.max(1)),
        Duration::from_millis(policy.retry_max_ms.max(1)),
    );
    let max_batch = policy.max_batch.max(1);
    tracing::info!(sink = %name, from_seq = reader.position(), "sink started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = reader.wait() => r?,
            _ = shutdown.changed() => break,
        }
        let mut items = reader.read_available(max_batch)?;
        let deadline = Instant::now() + Duration::from_millis(policy.max_delay_ms);
        while items.len() < max_batch && policy.max_delay_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                r = reader.wait() => {
                    r?;
                    items.extend(reader.read_available(max_batch - items.len())?);
                }
                _ = shutdown.changed() => break,
            }
        }
        if items.is_empty() {
            continue;
        }
        loop {
            match sink.deliver(&items).await {
                Ok(()) => {
                    backoff.reset();
                    record_delivered(&spool, &name, &label, &items)?;
                    break;
                }
                Err(e) => {
                    METRICS.sink_failed.get_or_create(&label).inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        sink = %name,
                        error = %e,
                        attempt = backoff.attempt(),
                        retry_in_ms = delay.as_millis() as u64,
                        first_seq = items.first().map(SpoolItem::last_seq),
                        "sink delivery failed; will retry"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {
                            METRICS.sink_retries.get_or_create(&label).inc();
                        }
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
            }
        }
    }
    drain(&name, &mut sink, &mut reader, max_batch, &label).await
}

async fn drain<S: Sink>(
    name: &str,
    sink: &mut S,
    reader: &mut SpoolReader,
    max_batch: usize,
    label: &telemetry::SinkLabel,
) -> Result<(), SpoolError> {
    loop {
        let items = reader.read_available(max_batch)?;
        if items.is_empty() {
            return Ok(());
        }
        if let Err(e) = sink.deliver(&items).await {
            METRICS.sink_failed.get_or_create(label).inc();
            tracing::warn!(sink = %name, error = %e, "final delivery at shutdown failed; the spool keeps the alerts");
            return Ok(());
        }
        let spool = reader.spool().clone();
        record_delivered(&spool, name, label, &items)?;
    }
}

fn record_delivered(
    spool: &Spool,
    name: &str,
    label: &telemetry::SinkLabel,
    items: &[SpoolItem],
) -> Result<(), SpoolError> {
    let (mut alerts, mut gap) = (0u64, 0u64);
    for it in items {
        match it {
            SpoolItem::Alert(_) => alerts += 1,
            SpoolItem::Gap(g) => gap += g.count,
        }
    }
    if let Some(last) = items.last() {
        spool.ack(name, last.last_seq())?;
    }
    METRICS.sink_delivered.get_or_create(label).inc_by(alerts);
    if gap > 0 {
        METRICS.sink_gaps.get_or_create(label).inc_by(gap);
        tracing::warn!(sink = %name, missed = gap, "sink missed alerts dropped from the full spool");
    }
    Ok(())
}
