//! OTLP export of enriched raw events, for pipelines that want the full
//! activity and not only alerts.
//!
//! Events are not spooled (at tens of thousands per second the spool would
//! be the bottleneck); the exporter reads the live event broadcast, batches,
//! retries a batch a bounded number of times with back-off, and then drops
//! it. Every event that does not reach the collector is counted in
//! `picket_otlp_events_total{result="dropped_lagged"|"dropped_export_failed"}`
//! and logged, so a loss is never silent. Alerts keep their exactly-once
//! spool path regardless.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{OtlpSink, attributes::event_record, retryable};
use crate::{
    delivery::telemetry::{METRICS, ResultLabel},
    model::{Event, EventKindName},
};

/// `otlp.events`: which events to export and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventExportConfig {
    /// Event kinds exported (empty: every kind).
    pub kinds: Vec<EventKindName>,
    /// Records per export request.
    pub max_batch: usize,
    /// A partial batch is sent after this long.
    pub max_delay_ms: u64,
    /// Attempts of a batch before it is dropped (at least 1).
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt.
    pub retry_initial_ms: u64,
}

impl Default for EventExportConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            max_batch: 512,
            max_delay_ms: 1000,
            max_attempts: 3,
            retry_initial_ms: 200,
        }
    }
}

fn count(result: &str, n: usize) {
    METRICS
        .otlp_events
        .get_or_create(&ResultLabel {
            result: result.to_owned(),
        })
        .inc_by(n as u64);
}

/// Exports `batch`; `Err` after the last failed attempt.
async fn export(
    sink: &OtlpSink,
    cfg: &EventExportConfig,
    batch: &[Arc<Event>],
) -> Result<(), String> {
    let mut delay = Duration::from_millis(cfg.retry_initial_ms.max(1));
    let mut attempt = 1;
    loop {
        let req = sink.wrap(batch.iter().map(|e| event_record(e)).collect());
        let mut client = sink.client.clone();
        match client.export(req).await {
            Ok(_) => return Ok(()),
            Err(s) if retryable(s.code()) && attempt < cfg.max_attempts.max(1) => {
                tracing::debug!(code = %s.code(), attempt, "OTLP event export failed; retrying");
            }
            Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
        attempt += 1;
    }
}

async fn flush(sink: &OtlpSink, cfg: &EventExportConfig, batch: &mut Vec<Arc<Event>>) {
    if batch.is_empty() {
        return;
    }
    match export(sink, cfg, batch).await {
        Ok(()) => count("exported", batch.len()),
        Err(e) => {
            count("dropped_export_failed", batch.len());
            tracing::warn!(events = batch.len(), error = %e, "OTLP event export failed after retries; events dropped");
        }
    }
    batch.clear();
}

/// Runs until `shutdown` turns true (then flushes once) or the broadcast
/// closes.
pub async fn run(
    sink: OtlpSink,
    cfg: EventExportConfig,
    mut events: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_batch = cfg.max_batch.max(1);
    let delay = Duration::from_millis(cfg.max_delay_ms.max(1));
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(max_batch);
    let mut deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            r = events.recv() => match r {
                Ok(ev) => {
                    if !cfg.kinds.is_empty() && !cfg.kinds.contains(&ev.kind()) {
                        continue;
                    }
                    if batch.is_empty() {
                        deadline = tokio::time::Instant::now() + delay;
                    }
                    batch.push(ev);
                    if batch.len() >= max_batch {
                        flush(&sink, &cfg, &mut batch).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    count("dropped_lagged", usize::try_from(n).unwrap_or(usize::MAX));
                    tracing::warn!(events = n, "OTLP event exporter fell behind; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                flush(&sink, &cfg, &mut batch).await;
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    flush(&sink, &cfg, &mut batch).await;
}
