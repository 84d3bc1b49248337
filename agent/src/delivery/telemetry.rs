//! Delivery's metric families, registered once in the agent registry
//! (`crate::metrics`). Names are `picket_<name>` there.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::register;

/// Label of per-sink families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// Label of the OTLP batch results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// All delivery metrics.
pub struct Metrics {
    pub spool_records: Gauge,
    pub spool_bytes: Gauge,
    pub spool_dropped: Counter,
    pub spool_corrupt: Counter,
    pub spool_last_seq: Gauge,
    pub sink_lag: Family<SinkLabel, Gauge>,
    pub sink_delivered: Family<SinkLabel, Counter>,
    pub sink_failed: Family<SinkLabel, Counter>,
    pub sink_retries: Family<SinkLabel, Counter>,
    pub sink_gaps: Family<SinkLabel, Counter>,
    pub grpc_subscribers: Gauge,
    pub events_dropped: Counter,
    pub otlp_batches: Family<ResultLabel, Counter>,
    pub otlp_events: Family<ResultLabel, Counter>,
    pub grpc_streams_rejected: Counter,
    pub grpc_connections_rejected: Counter,
    pub grpc_accept_errors: Counter,
    pub spool_append_failures: Counter,
    pub alerts_unspooled: Counter,
    pub sink_spool_errors: Family<SinkLabel, Counter>,
    pub sink_unspooled: Family<SinkLabel, Counter>,
}

/// The process-wide delivery metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    spool_records: register(
        "spool_records",
        "Alerts currently kept in the spool.",
        Gauge::default(),
    ),
    spool_bytes: register(
        "spool_bytes",
        "Bytes of spool segment files.",
        Gauge::default(),
    ),
    spool_dropped: register(
        "spool_dropped_alerts",
        "Alerts deleted from the full spool before every sink read them.",
        Counter::default(),
    ),
    spool_corrupt: register(
        "spool_corrupt_records",
        "Spool records skipped because their checksum or JSON was invalid.",
        Counter::default(),
    ),
    spool_last_seq: register(
        "spool_last_seq",
        "Sequence number of the newest alert.",
        Gauge::default(),
    ),
    sink_lag: register(
        "sink_lag_alerts",
        "Alerts in the spool after the sink's acknowledged position.",
        Family::default(),
    ),
    sink_delivered: register(
        "sink_delivered_alerts",
        "Alerts a sink delivered and acknowledged.",
        Family::default(),
    ),
    sink_failed: register(
        "sink_failed_attempts",
        "Delivery attempts of a sink that failed.",
        Family::default(),
    ),
    sink_retries: register(
        "sink_retries",
        "Delivery attempts of a sink that repeated a failed one.",
        Family::default(),
    ),
    sink_gaps: register(
        "sink_gap_alerts",
        "Alerts a sink never saw because the spool dropped them first.",
        Family::default(),
    ),
    grpc_subscribers: register(
        "grpc_subscribers",
        "Open gRPC alert and event streams.",
        Gauge::default(),
    ),
    events_dropped: register(
        "grpc_events_dropped",
        "Live events skipped for gRPC event subscribers that fell behind.",
        Counter::default(),
    ),
    otlp_batches: register(
        "otlp_batches",
        "OTLP export batches by result.",
        Family::default(),
    ),
    otlp_events: register(
        "otlp_events",
        "Raw events for OTLP export by result: exported, or dropped (lagged: the exporter fell behind the event rate; export_failed: the collector stayed unreachable through the retries).",
        Family::default(),
    ),
    grpc_streams_rejected: register(
        "grpc_streams_rejected",
        "Alert and event streams refused with RESOURCE_EXHAUSTED because grpc.max_streams were open.",
        Counter::default(),
    ),
    grpc_connections_rejected: register(
        "grpc_connections_rejected",
        "gRPC connections closed at once because grpc.max_connections were open.",
        Counter::default(),
    ),
    grpc_accept_errors: register(
        "grpc_accept_errors",
        "Failed accept() calls of the gRPC listener (e.g. EMFILE: out of file descriptors).",
        Counter::default(),
    ),
    spool_append_failures: register(
        "spool_append_failures",
        "Failed attempts to append an alert to the spool (disk full, I/O or permission errors); retried.",
        Counter::default(),
    ),
    alerts_unspooled: register(
        "alerts_unspooled",
        "Alerts the spool could not take after retries; handed to the live sinks once instead (degraded: no replay, seq 0).",
        Counter::default(),
    ),
    sink_spool_errors: register(
        "sink_spool_errors",
        "Spool read or cursor write failures of a sink; the sink retries with back-off and /readyz reports it.",
        Family::default(),
    ),
    sink_unspooled: register(
        "sink_unspooled_alerts",
        "Unspooled alerts (spool write failed) a sink delivered live.",
        Family::default(),
    ),
});

/// Result labels of `picket_otlp_batches_total`.
pub const OTLP_BATCH_RESULTS: [&str; 4] = ["ok", "partial", "retry", "rejected"];

/// Result labels of `picket_otlp_events_total`.
pub const OTLP_EVENT_RESULTS: [&str; 3] = ["exported", "dropped_lagged", "dropped_export_failed"];

/// Creates every per-sink series of `name` at 0, so dashboards and
/// `absent()`/`rate()` alerts see them before the first event.
pub fn register_sink(name: &str) {
    let l = sink(name);
    let _ = METRICS.sink_lag.get_or_create(&l);
    let _ = METRICS.sink_delivered.get_or_create(&l);
    let _ = METRICS.sink_failed.get_or_create(&l);
    let _ = METRICS.sink_retries.get_or_create(&l);
    let _ = METRICS.sink_gaps.get_or_create(&l);
    let _ = METRICS.sink_spool_errors.get_or_create(&l);
    let _ = METRICS.sink_unspooled.get_or_create(&l);
}

/// Creates the series with known labels at 0 (see [`register_sink`]).
pub fn register_known() {
    LazyLock::force(&METRICS);
    for r in OTLP_BATCH_RESULTS {
        let _ = METRICS
            .otlp_batches
            .get_or_create(&ResultLabel { result: r.into() });
    }
    for r in OTLP_EVENT_RESULTS {
        let _ = METRICS
            .otlp_events
            .get_or_create(&ResultLabel { result: r.into() });
    }
    register_sink("grpc");
}

/// The label value for sink `name`.
pub fn sink(name: &str) -> SinkLabel {
    SinkLabel {
        sink: name.to_owned(),
    }
}

/// Clamps a u64 into a gauge value.
pub fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
