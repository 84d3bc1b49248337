//! Alert delivery: the durable spool and the sinks that read it.
//!
//! ```text
//! detection ──publish──▶ spool (segments on disk, seq numbers)
//!                          ├─▶ JSON lines (stdout / rotated file)   cursor "jsonl"
//!                          ├─▶ OTLP/gRPC log export                 cursor "otlp"
//!                          └─▶ gRPC AlertService subscribers         cursor per named subscriber
//! detection ──publish_event──▶ broadcast ─▶ gRPC EventService (live only)
//!                                         └▶ OTLP event export (optional, best effort, losses counted)
//! ```
//!
//! `publish` only appends to the spool; every sink reads at its own pace and
//! acknowledges what it delivered, so a slow or absent sink never blocks
//! detection or other sinks. See `docs/delivery.md`.

pub mod config;
pub mod filter;
pub mod grpc;
pub mod http;
pub mod jsonl;
pub mod limits;
pub mod otlp;
pub mod proto;
mod retry;
pub mod sink;
pub mod spool;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use config::DeliveryConfig;
pub use grpc::client::{AlertsArgs, main as alerts_main, run as run_alerts_client};
pub use grpc::{BoundAddr, RuleControl, RuleProblem, RuleSummary, Validation};
pub use http::Readiness;
pub use spool::{Gap, Spool, SpoolItem};

use crate::model::{Alert, Event};

/// Start-up and publish failures.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error(transparent)]
    Jsonl(#[from] jsonl::JsonlError),
    #[error("invalid sink name {0:?} (1-64 of [A-Za-z0-9._-], not starting with \"api.\")")]
    SinkName(String),
    #[error("event_buffer {0} is out of range (1..={MAX_EVENT_BUFFER})")]
    EventBuffer(usize),
    #[error("spool task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A configured sink's name: a valid cursor name outside the namespace of
/// API subscribers, so no API client can acknowledge on a sink's behalf.
fn config_sink_name(name: &str) -> bool {
    spool::valid_sink_name(name) && !name.starts_with(grpc::identity::SUBSCRIBER_PREFIX)
}

/// What the rest of the agent lends the delivery stack.
#[derive(Clone, Default)]
pub struct DeliveryHooks {
    /// Serves `RuleService` (answers UNIMPLEMENTED when absent).
    pub rules: Option<Arc<dyn RuleControl>>,
    /// Readiness shared with `/readyz`; delivery sets `sinks_started`.
    pub readiness: Readiness,
    /// Serves `ContainmentService` (answers UNIMPLEMENTED when absent:
    /// containment is disabled).
    pub contain: Option<Arc<crate::contain::Containment>>,
}

/// The running delivery stack. Dropping it stops every task and releases
/// the spool (like a crash, minus the torn write); [`shutdown`](Self::shutdown)
/// additionally lets sinks flush first.
pub struct Delivery {
    spool: Spool,
    events: broadcast::Sender<Arc<Event>>,
    shutdown: watch::Sender<bool>,
    sinks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    grpc_addr: Option<BoundAddr>,
    http_addr: Option<SocketAddr>,
    readiness: Readiness,
    shutdown_timeout: Duration,
    /// Alerts the spool could not take, for the live sinks.
    unspooled: broadcast::Sender<Arc<Alert>>,
}

/// Largest accepted `event_buffer` (live events buffered for slow event
/// subscribers); beyond it the allocation alone would threaten the node.
pub const MAX_EVENT_BUFFER: usize = 1 << 20;

/// Attempts to append an alert before it is delivered unspooled, and the
/// first pause between them (quadrupling: 10, 40, 160 ms).
const APPEND_ATTEMPTS: u32 = 4;
const APPEND_FIRST_PAUSE: Duration = Duration::from_millis(10);

fn spawn_sink<S: sink::Sink>(
    name: String,
    s: S,
    spool: &Spool,
    policy: sink::SinkPolicy,
    shutdown: watch::Receiver<bool>,
    ctx: sink::SinkContext,
) -> JoinHandle<()> {
    let spool = spool.clone();
    tokio::spawn(async move {
        let n = name.clone();
        match sink::run_sink(name, s, spool, policy, shutdown, ctx).await {
            Ok(()) | Err(spool::SpoolError::Closed) => tracing::info!(sink = %n, "sink stopped"),
            Err(e) => tracing::error!(sink = %n, error = %e, "sink stopped on a spool error"),
        }
    })
}

impl Delivery {
    /// Opens the spool and starts the configured sinks and servers.
    pub async fn start(cfg: DeliveryConfig, hooks: DeliveryHooks) -> Result<Self, DeliveryError> {
        let event_buffer = cfg.event_buffer.unwrap_or(4096);
        if !(1..=MAX_EVENT_BUFFER).contains(&event_buffer) {
            return Err(DeliveryError::EventBuffer(event_buffer));
        }
        telemetry::register_known();
        let spool_cfg = cfg.spool.clone();
        let spool = tokio::task::spawn_blocking(move || Spool::open(spool_cfg)).await??;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (events, _) = broadcast::channel(event_buffer);
        let (unspooled, _) = broadcast::channel(1024);
        let host_name = cfg
            .host_name
            .clone()
            .unwrap_or_else(config::kernel_host_name);
        let node_name = cfg
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .unwrap_or_default();
        let mut me = Self {
            spool: spool.clone(),
            events: events.clone(),
            shutdown,
            sinks: Vec::new(),
            servers: Vec::new(),
            grpc_addr: None,
            http_addr: None,
            readiness: hooks.readiness.clone(),
            shutdown_timeout: Duration::from_millis(cfg.shutdown_timeout_ms.unwrap_or(5000)),
            unspooled: unspooled.clone(),
        };
        let ctx = |me: &Self| sink::SinkContext {
            readiness: me.readiness.clone(),
            unspooled: Some(me.unspooled.subscribe()),
        };
        // On any error below `me` is dropped, which stops what already started.
        for j in &cfg.jsonl {
            if !config_sink_name(&j.name) {
                return Err(DeliveryError::SinkName(j.name.clone()));
            }
            let s = jsonl::JsonlSink::open(j)?;
            let policy = sink::SinkPolicy {
                max_delay_ms: 0,
                ..Default::default()
            };
            let c = ctx(&me);
            me.sinks.push(spawn_sink(
                j.name.clone(),
                s,
                &spool,
                policy,
                shutdown_rx.clone(),
                c,
            ));
        }
        if let Some(o) = &cfg.otlp {
            if !config_sink_name(&o.name) {
                return Err(DeliveryError::SinkName(o.name.clone()));
            }
            let s = otlp::OtlpSink::new(o, &host_name, &node_name)?;
            if let Some(ev_cfg) = &o.events {
                me.sinks.push(tokio::spawn(otlp::events::run(
                    s.clone(),
                    ev_cfg.clone(),
                    events.subscribe(),
                    shutdown_rx.clone(),
                )));
            }
            let c = ctx(&me);
            me.sinks.push(spawn_sink(
                o.name.clone(),
                s,
                &spool,
                o.policy.clone(),
                shutdown_rx.clone(),
                c,
            ));
        }
        if let Some(g) = &cfg.grpc {
            let state = Arc::new(grpc::ApiState {
                spool: spool.clone(),
                events,
                rules: hooks.rules.clone(),
                contain: hooks.contain.clone(),
                readiness: hooks.readiness.clone(),
                host_name: host_name.clone(),
                node_name: node_name.clone(),
                started: jiff::Timestamp::now(),
                shutdown: shutdown_rx.clone(),
                streams: Arc::new(tokio::sync::Semaphore::new(g.max_streams.max(1))),
                unspooled: unspooled.clone(),
            });
            let (addr, task) = grpc::serve(g, state).await?;
            me.grpc_addr = Some(addr);
            me.servers.push(task);
        }
        if let Some(h) = &cfg.http {
            let (addr, task) = http::serve(h, hooks.readiness.clone(), shutdown_rx.clone()).await?;
            me.http_addr = Some(addr);
            me.servers.push(task);
        }
        me.readiness.set_sinks_started(true);
        Ok(me)
    }

    /// Appends `alert` to the spool and returns its sequence number. Never
    /// waits for a sink; the disk write runs on the blocking pool.
    ///
    /// A failing disk (ENOSPC, EIO, EPERM, EMFILE) is retried
    /// [`APPEND_ATTEMPTS`] times with a short back-off (each failure counted
    /// in `picket_spool_append_failures_total`). If the spool still refuses,
    /// the alert is handed to the live sinks once, with `seq` 0 (counted in
    /// `picket_alerts_unspooled_total`, `/readyz` reports condition `spool`
    /// until an append succeeds again), and `Ok(0)` is returned: degraded,
    /// not lost.
    pub async fn publish(&self, alert: Alert) -> Result<u64, DeliveryError> {
        let mut pause = APPEND_FIRST_PAUSE;
        let mut last_err = None;
        for attempt in 1..=APPEND_ATTEMPTS {
            let spool = self.spool.clone();
            let mut a = alert.clone();
            match tokio::task::spawn_blocking(move || spool.append(&mut a)).await? {
                Ok(seq) => {
                    if attempt > 1 {
                        tracing::info!(seq, attempt, "spool append succeeded after failures");
                    }
                    self.readiness.clear_problem("spool");
                    return Ok(seq);
                }
                Err(e @ spool::SpoolError::Io { .. }) => {
                    telemetry::METRICS.spool_append_failures.inc();
                    tracing::warn!(attempt, error = %e, "spool append failed");
                    last_err = Some(e);
                    if attempt < APPEND_ATTEMPTS {
                        tokio::time::sleep(pause).await;
                        pause *= 4;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let reason = last_err.map_or_else(String::new, |e| e.to_string());
        self.readiness
            .set_problem("spool", format!("append failed: {reason}"));
        telemetry::METRICS.alerts_unspooled.inc();
        let mut a = alert;
        a.seq = 0;
        tracing::error!(rule = %a.rule.id, error = %reason, "alert not spooled; delivered live to the sinks (degraded)");
        let _ = self.unspooled.send(Arc::new(a));
        Ok(0)
    }

    /// Offers an enriched event to live gRPC event subscribers (not spooled;
    /// free when nobody listens).
    pub fn publish_event(&self, ev: &Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(ev.clone()));
        }
    }

    /// Where the gRPC API listens (port 0 in the config resolved).
    pub fn grpc_addr(&self) -> Option<&BoundAddr> {
        self.grpc_addr.as_ref()
    }

    /// Where the HTTP endpoint listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Stops accepting work, lets sinks deliver what is spooled (bounded by
    /// `shutdown_timeout_ms`), stops the servers and closes the spool.
    pub async fn shutdown(mut self) {
        self.readiness.set_sinks_started(false);
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        for t in self.sinks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!("a sink did not finish within the shutdown timeout");
                abort.abort();
            }
        }
        for t in self.servers.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
        let spool = self.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for t in self.sinks.iter().chain(self.servers.iter()) {
            t.abort();
        }
        self.spool.close();
    }
}
