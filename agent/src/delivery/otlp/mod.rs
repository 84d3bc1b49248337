//! OTLP/gRPC log export of alerts: a spool sink that acknowledges a batch
//! only after the collector accepted it. Optionally also raw events
//! ([`events`]), best effort.

pub mod attributes;
pub mod events;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::sink::{Sink, SinkError, SinkPolicy};
use super::spool::SpoolItem;
use super::telemetry::{METRICS, ResultLabel};
use super::tls::{ClientTls, TlsError};
use attributes::{kv, string};

/// `service.version` of the exported resource.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// OTLP exporter settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// Sink (cursor) name.
    pub name: String,
    /// Collector URL, `http://host:4317` or `https://host:4317`.
    pub endpoint: String,
    /// TLS towards the collector (for `https://`).
    pub tls: Option<ClientTls>,
    /// Per-export timeout (ms).
    pub timeout_ms: u64,
    /// Batching and retries.
    #[serde(rename = "batch")]
    pub policy: SinkPolicy,
    /// Also export enriched raw events (off when absent).
    pub events: Option<events::EventExportConfig>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            name: "otlp".into(),
            endpoint: "http://127.0.0.1:4317".into(),
            tls: None,
            timeout_ms: 10_000,
            policy: SinkPolicy::default(),
            events: None,
        }
    }
}

/// Exporter set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {0:?} is not a valid URL")]
    Endpoint(String),
    #[error("OTLP TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("OTLP transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The OTLP sink.
#[derive(Clone)]
pub struct OtlpSink {
    client: LogsServiceClient<Channel>,
    resource: Resource,
}

fn label(result: &str) -> ResultLabel {
    ResultLabel {
        result: result.to_owned(),
    }
}

/// OTLP's retryable gRPC codes (OTLP specification, "Failures").
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
            | Code::Unknown
    )
}

impl OtlpSink {
    /// Creates the exporter; the connection is made lazily, so a collector
    /// that is down at start-up only delays delivery.
    pub fn new(cfg: &OtlpConfig, host_name: &str, node_name: &str) -> Result<Self, OtlpError> {
        let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|_| OtlpError::Endpoint(cfg.endpoint.clone()))?;
        ep = ep
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.max(1)));
        if let Some(tls) = &cfg.tls {
            ep = ep.tls_config(tls.load()?)?;
        }
        let mut attrs = vec![
            kv("service.name", string("picket")),
            kv("service.version", string(SERVICE_VERSION)),
            kv("host.name", string(host_name)),
        ];
        if !node_name.is_empty() {
            attrs.push(kv("k8s.node.name", string(node_name)));
        }
        Ok(Self {
            client: LogsServiceClient::new(ep.connect_lazy()),
            resource: Resource {
                attributes: attrs,
                ..Default::default()
            },
        })
    }

    /// The export request of a batch.
    pub fn request(&self, items: &[SpoolItem]) -> ExportLogsServiceRequest {
        let now = jiff::Timestamp::now();
        let log_records = items
            .iter()
            .map(|it| match it {
                SpoolItem::Alert(a) => attributes::alert_record(a),
                SpoolItem::Gap(g) => attributes::gap_record(g, now),
            })
            .collect();
        self.wrap(log_records)
    }

    /// One request with this agent's resource and scope around `log_records`.
    pub fn wrap(
        &self,
        log_records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
    ) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "picket".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

impl Sink for OtlpSink {
    async fn deliver(&mut self, items: &[SpoolItem]) -> Result<(), SinkError> {
        let req = self.request(items);
        match self.client.export(req).await {
            Ok(resp) => {
                let rejected = resp
                    .get_ref()
                    .partial_success
                    .as_ref()
                    .map_or(0, |p| p.rejected_log_records);
                if rejected > 0 {
                    // The collector refused these for good: retrying cannot help.
                    METRICS.otlp_batches.get_or_create(&label("partial")).inc();
                    tracing::warn!(
                        rejected,
                        records = items.len(),
                        "OTLP collector rejected part of a batch"
                    );
                } else {
                    METRICS.otlp_batches.get_or_create(&label("ok")).inc();
                }
                Ok(())
            }
            Err(s) if retryable(s.code()) => {
                METRICS.otlp_batches.get_or_create(&label("retry")).inc();
                Err(SinkError(format!(
                    "OTLP export: {}: {}",
                    s.code(),
                    s.message()
                )))
            }
            Err(s) => {
                METRICS.otlp_batches.get_or_create(&label("rejected")).inc();
                tracing::error!(code = %s.code(), message = s.message(), records = items.len(), "OTLP collector rejected a batch permanently; dropping it");
                Ok(())
            }
        }
    }
}
