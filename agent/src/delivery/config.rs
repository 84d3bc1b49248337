//! The delivery configuration (serde, every field defaulted).

use serde::{Deserialize, Serialize};

use super::grpc::GrpcConfig;
use super::http::HttpConfig;
use super::jsonl::JsonlConfig;
use super::otlp::OtlpConfig;
use super::spool::SpoolConfig;

/// Everything [`Delivery`](super::Delivery) starts. Sections left out are off
/// (except the spool, which always exists).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    pub spool: SpoolConfig,
    /// The gRPC API (off when absent).
    pub grpc: Option<GrpcConfig>,
    /// `/metrics`, `/healthz`, `/readyz` (off when absent).
    pub http: Option<HttpConfig>,
    /// OTLP log export (off when absent).
    pub otlp: Option<OtlpConfig>,
    /// JSON lines outputs (stdout and/or files), each its own sink.
    pub jsonl: Vec<JsonlConfig>,
    /// `host.name` (default: the kernel's host name).
    pub host_name: Option<String>,
    /// `k8s.node.name` (default: `$NODE_NAME`, set from the downward API).
    pub node_name: Option<String>,
    /// Live events buffered per gRPC event subscriber before it is told it
    /// missed some (default 4096).
    pub event_buffer: Option<usize>,
    /// How long `shutdown` lets sinks flush (ms, default 5000).
    pub shutdown_timeout_ms: Option<u64>,
}

/// The kernel's host name (one reader for the whole agent: [`crate::node`]).
pub fn kernel_host_name() -> String {
    crate::node::hostname()
}
