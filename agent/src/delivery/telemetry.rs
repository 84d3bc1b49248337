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
});

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
