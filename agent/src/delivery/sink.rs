//! The sink driver: reads the spool at the sink's own pace, batches,
//! delivers with retries and acknowledges only what the sink accepted.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::http::Readiness;
use super::retry::Backoff;
use super::spool::{Spool, SpoolError, SpoolItem, SpoolReader};
use super::telemetry::{self, METRICS};
use crate::model::Alert;

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

/// What a sink task gets from the delivery stack besides the spool.
#[derive(Default)]
pub struct SinkContext {
    /// Where the sink reports a failing spool read or cursor write
    /// (condition `sink <name>`).
    pub readiness: Readiness,
    /// Alerts the spool could not take (disk faults): delivered live, once.
    pub unspooled: Option<broadcast::Receiver<Arc<Alert>>>,
}

/// Waits for the next unspooled alert (forever when there is no channel).
async fn next_unspooled(
    rx: &mut Option<broadcast::Receiver<Arc<Alert>>>,
) -> Result<Arc<Alert>, broadcast::error::RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Tracks the sink's spool faults: counted, logged, reported to readiness,
/// retried with back-off.
struct Faults {
    name: String,
    condition: String,
    label: telemetry::SinkLabel,
    readiness: Readiness,
    backoff: Backoff,
    failing: bool,
}

impl Faults {
    fn fail(&mut self, what: &str, e: &SpoolError) -> Duration {
        METRICS.sink_spool_errors.get_or_create(&self.label).inc();
        self.readiness
            .set_problem(&self.condition, format!("{what} failed: {e}"));
        self.failing = true;
        let delay = self.backoff.next_delay();
        tracing::warn!(sink = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "sink {what} failed; will retry");
        delay
    }

    fn ok(&mut self) {
        if self.failing {
            self.failing = false;
            self.backoff.reset();
            self.readiness.clear_problem(&self.condition);
            tracing::info!(sink = %self.name, "sink spool access recovered");
        }
    }
}

/// Runs `sink` named `name` until `shutdown` turns true, then delivers what
/// is already spooled once more (no retries) and returns.
///
/// Spool faults (a segment that cannot be opened, a cursor that cannot be
/// written: EMFILE, ENOSPC, EPERM) never stop the sink: they are retried with
/// back-off, counted in `picket_sink_spool_errors_total{sink}` and shown by
/// `/readyz` until they clear. A delivered batch whose cursor write failed is
/// not sent again while the agent runs; its acknowledgement is retried.
pub async fn run_sink<S: Sink>(
    name: String,
    mut sink: S,
    spool: Spool,
    policy: SinkPolicy,
    mut shutdown: watch::Receiver<bool>,
    mut ctx: SinkContext,
) -> Result<(), SpoolError> {
    let start = spool.bounds().0;
    let mut reader = spool.reader_for_sink(&name, start)?;
    let label = telemetry::sink(&name);
    telemetry::register_sink(&name);
    let mut backoff = Backoff::new(
        Duration::from_millis(policy.retry_initial_ms.max(1)),
        Duration::from_millis(policy.retry_max_ms.max(1)),
    );
    let mut faults = Faults {
        name: name.clone(),
        condition: format!("sink {name}"),
        label: label.clone(),
        readiness: ctx.readiness.clone(),
        backoff: backoff.clone(),
        failing: false,
    };
    let max_batch = policy.max_batch.max(1);
    // The newest delivered position whose cursor write has not succeeded.
    let mut pending_ack: Option<u64> = None;
    let mut ack_retry_at = Instant::now();
    tracing::info!(sink = %name, from_seq = reader.position(), "sink started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(seq) = pending_ack
            && Instant::now() >= ack_retry_at
        {
            match spool.ack(&name, seq) {
                Ok(_) => {
                    pending_ack = None;
                    faults.ok();
                }
                Err(SpoolError::Closed) => return Ok(()),
                Err(e) => ack_retry_at = Instant::now() + faults.fail("cursor write", &e),
            }
        }
        let ack_due = pending_ack.map(|_| ack_retry_at);
        let ack_wait = async move {
            match ack_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = reader.wait() => r?,
            _ = ack_wait => continue,
            a = next_unspooled(&mut ctx.unspooled) => {
                deliver_unspooled(&name, &mut sink, &label, a).await;
                continue;
            }
            _ = shutdown.changed() => break,
        }
        let mut items = match reader.read_available(max_batch) {
            Ok(items) => items,
            Err(SpoolError::Closed) => return Ok(()),
            Err(e) => {
                let delay = faults.fail("spool read", &e);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.changed() => break,
                }
            }
        };
        let deadline = Instant::now() + Duration::from_millis(policy.max_delay_ms);
        while items.len() < max_batch && policy.max_delay_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                r = reader.wait() => {
                    r?;
                    match reader.read_available(max_batch - items.len()) {
                        Ok(more) => items.extend(more),
                        // Deliver what we have; the next round retries.
                        Err(_) => break,
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if items.is_empty() {
            if pending_ack.is_none() {
                faults.ok();
            }
            continue;
        }
        loop {
            match sink.deliver(&items).await {
                Ok(()) => {
                    backoff.reset();
                    count_delivered(&name, &label, &items);
                    if let Some(last) = items.last() {
                        match spool.ack(&name, last.last_seq()) {
                            Ok(_) => {
                                pending_ack = None;
                                faults.ok();
                            }
                            Err(SpoolError::Closed) => return Ok(()),
                            Err(e) => {
                                pending_ack = Some(last.last_seq());
                                ack_retry_at = Instant::now() + faults.fail("cursor write", &e);
                            }
                        }
                    }
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
    if let Some(seq) = pending_ack {
        let _ = spool.ack(&name, seq);
    }
    drain(&name, &mut sink, &mut reader, max_batch, &label).await
}

/// Delivers one alert the spool could not take (a few attempts; it has no
/// cursor and is not replayed).
async fn deliver_unspooled<S: Sink>(
    name: &str,
    sink: &mut S,
    label: &telemetry::SinkLabel,
    a: Result<Arc<Alert>, broadcast::error::RecvError>,
) {
    let alert = match a {
        Ok(a) => a,
        Err(broadcast::error::RecvError::Lagged(n)) => {
            METRICS.sink_gaps.get_or_create(label).inc_by(n);
            tracing::error!(sink = %name, missed = n, "sink missed unspooled alerts (fell behind)");
            return;
        }
        Err(broadcast::error::RecvError::Closed) => {
            std::future::pending::<()>().await;
            return;
        }
    };
    let items = [SpoolItem::Alert(Box::new((*alert).clone()))];
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=UNSPOOLED_ATTEMPTS {
        match sink.deliver(&items).await {
            Ok(()) => {
                METRICS.sink_unspooled.get_or_create(label).inc();
                return;
            }
            Err(e) => {
                METRICS.sink_failed.get_or_create(label).inc();
                tracing::warn!(sink = %name, attempt, error = %e, "delivery of an unspooled alert failed");
                if attempt < UNSPOOLED_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
    METRICS.sink_gaps.get_or_create(label).inc();
    tracing::error!(sink = %name, rule = %alert.rule.id, "unspooled alert lost for this sink");
}

/// Attempts per unspooled alert and sink.
const UNSPOOLED_ATTEMPTS: u32 = 3;

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
        count_delivered(name, label, &items);
        if let Some(last) = items.last() {
            reader.spool().ack(name, last.last_seq())?;
        }
    }
}

fn count_delivered(name: &str, label: &telemetry::SinkLabel, items: &[SpoolItem]) {
    let (mut alerts, mut gap) = (0u64, 0u64);
    for it in items {
        match it {
            SpoolItem::Alert(_) => alerts += 1,
            SpoolItem::Gap(g) => gap += g.count,
        }
    }
    METRICS.sink_delivered.get_or_create(label).inc_by(alerts);
    if gap > 0 {
        METRICS.sink_gaps.get_or_create(label).inc_by(gap);
        tracing::warn!(sink = %name, missed = gap, "sink missed alerts dropped from the spool");
    }
}
