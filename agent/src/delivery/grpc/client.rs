//! `picket alerts`: stream alerts from an agent's gRPC API to the terminal.

use std::io::Write;
use std::path::PathBuf;

use crate::unix_connector::UnixConnector;
use tonic::transport::{Channel, Endpoint};

use crate::delivery::filter::parse_label;
use crate::delivery::proto::{self, pb};
use crate::delivery::tls::{ClientTls, TlsError};
use crate::model::Severity;

/// Arguments of `picket alerts`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    /// Agent address: `host:port` (TLS), `https://host:port` or `unix:/path`.
    #[arg(long, default_value = "unix:/run/picket/picket.sock")]
    pub server: String,
    /// Only alerts at least this severe (info, low, medium, high, critical).
    #[arg(long, value_parser = parse_severity)]
    pub min_severity: Option<Severity>,
    /// Only alerts in this Kubernetes namespace (repeatable).
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Only alerts of this rule id (repeatable).
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Only alerts whose pod has this label, `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Start at this sequence number (1 = oldest kept) instead of new alerts only.
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Durable subscriber name: acknowledge what was printed and resume there next time.
    #[arg(long)]
    pub subscriber: Option<String>,
    /// Print JSON lines (`{"alert":..}` / `{"gap":..}`) instead of readable lines.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many alerts.
    #[arg(long)]
    pub max: Option<u64>,
    /// CA certificate (PEM) that signed the agent's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Name to verify in the agent's certificate (default: the host in --server).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Connect over plaintext TCP (only if the agent was started that way).
    #[arg(long)]
    pub insecure_plaintext: bool,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("unknown severity {s:?}"))
}

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {0:?}")]
    Address(String),
    #[error("{0}: pass --ca/--cert/--key for TLS, or --insecure-plaintext")]
    NoTls(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("server: {0}")]
    Status(#[from] tonic::Status),
    #[error("bad message from the server: {0}")]
    Convert(#[from] proto::ConvertError),
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens a channel to `server` (`unix:/path`, `host:port`, `http(s)://host:port`).
pub async fn connect(
    server: &str,
    tls: &ClientTls,
    insecure_plaintext: bool,
) -> Result<Channel, ClientError> {
    if let Some(path) = server.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // The URI is required by the API but unused by the connector.
        let ep = Endpoint::try_from("http://[::1]:50051")
            .map_err(|_| ClientError::Address(server.into()))?;
        let ch = ep.connect_with_connector(UnixConnector { path }).await?;
        return Ok(ch);
    }
    let has_tls = tls.ca.is_some() || tls.cert.is_some();
    let url = if server.contains("://") {
        server.to_owned()
    } else if has_tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    };
    if url.starts_with("http://") && !insecure_plaintext {
        return Err(ClientError::NoTls(server.into()));
    }
    let mut ep = Endpoint::from_shared(url).map_err(|_| ClientError::Address(server.into()))?;
    if has_tls || server.starts_with("https://") {
        ep = ep.tls_config(tls.load()?)?;
    }
    Ok(ep.connect().await?)
}

/// The request `args` describe.
pub fn request(args: &AlertsArgs) -> pb::StreamAlertsRequest {
    pb::StreamAlertsRequest {
        filter: Some(pb::AlertFilter {
            min_severity: args
                .min_severity
                .map_or(0, |s| proto::severity_to_pb(s) as i32),
            namespaces: args.namespaces.clone(),
            rule_ids: args.rules.clone(),
            pod_labels: args.labels.iter().cloned().collect(),
        }),
        from_seq: args.from_seq,
        subscriber: args.subscriber.clone().unwrap_or_default(),
    }
}

/// Streams alerts to stdout until the server ends the stream, `--max` is
/// reached or an error occurs.
pub async fn run(args: AlertsArgs) -> Result<(), ClientError> {
    let tls = ClientTls {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        domain: args.tls_server_name.clone(),
    };
    let channel = connect(&args.server, &tls, args.insecure_plaintext).await?;
    let mut client = pb::alert_service_client::AlertServiceClient::new(channel);
    let mut stream = client.stream_alerts(request(&args)).await?.into_inner();
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    while let Some(msg) = stream.message().await? {
        let (line, seq) = match msg.item {
            Some(pb::stream_alerts_response::Item::Alert(a)) => {
                let alert = proto::alert_from_pb(&a)?;
                printed += 1;
                let line = if args.json {
                    serde_json::json!({ "alert": alert }).to_string()
                } else {
                    format!("#{} {}", alert.seq, crate::output::alert_line(&alert))
                };
                (line, alert.seq)
            }
            Some(pb::stream_alerts_response::Item::Gap(g)) => {
                let line = if args.json {
                    serde_json::json!({ "gap": { "from_seq": g.from_seq, "to_seq": g.to_seq, "count": g.count } })
                        .to_string()
                } else {
                    format!(
                        "GAP: {} alerts dropped by the agent (seq {}..={})",
                        g.count, g.from_seq, g.to_seq
                    )
                };
                (line, g.to_seq)
            }
            None => continue,
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        if let Some(sub) = &args.subscriber {
            client
                .ack(pb::AckRequest {
                    subscriber: sub.clone(),
                    seq,
                })
                .await?;
        }
        if args.max.is_some_and(|m| printed >= m) {
            break;
        }
    }
    Ok(())
}

/// Entry point of `picket alerts`.
pub fn main(args: AlertsArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("picket alerts: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("picket alerts: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
