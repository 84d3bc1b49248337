//! The gRPC API server (`picket.v1`): alert and event streams, rule
//! management, agent info. Listens on TCP with mutual TLS, on a Unix socket
//! protected by file permissions, or — only when explicitly asked for with
//! `insecure_plaintext` — on plaintext TCP.

mod agent;
mod alerts;
pub mod client;
mod events;
pub mod identity;
mod rules;

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;

use super::http::Readiness;
use super::proto::pb;
use super::spool::Spool;
use super::telemetry::METRICS;
use super::tls::{ServerTls, TlsError};
use crate::model::Event;

pub use rules::{RuleControl, RuleProblem, RuleSummary, Validation};

/// gRPC server settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port` (TCP) or `unix:/path/to/socket`.
    pub listen: String,
    /// Required for TCP unless `insecure_plaintext`.
    pub tls: Option<ServerTls>,
    /// Allow TCP without TLS (tests, or a loopback-only sidecar).
    pub insecure_plaintext: bool,
    /// Permission bits of the Unix socket.
    pub unix_mode: u32,
    /// Group (name or number) that owns the Unix socket.
    pub unix_group: Option<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "unix:/run/picket/picket.sock".into(),
            tls: None,
            insecure_plaintext: false,
            unix_mode: 0o660,
            unix_group: None,
        }
    }
}

/// Server start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("gRPC listen address {0:?}: expected host:port or unix:/path")]
    Address(String),
    #[error("gRPC on TCP {0} needs `tls` (or `insecure_plaintext: true`)")]
    NeedsTls(String),
    #[error("gRPC TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("gRPC TLS set-up: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("unknown group {0:?}")]
    Group(String),
}

/// Where the server ended up listening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Shared state of the services.
pub struct ApiState {
    pub spool: Spool,
    pub events: broadcast::Sender<Arc<Event>>,
    pub rules: Option<Arc<dyn RuleControl>>,
    pub contain: Option<Arc<crate::contain::Containment>>,
    pub readiness: Readiness,
    pub host_name: String,
    pub node_name: String,
    pub started: jiff::Timestamp,
    pub shutdown: watch::Receiver<bool>,
}

/// Counts an open stream in `picket_grpc_subscribers` while alive.
struct SubscriberGuard;

impl SubscriberGuard {
    fn new() -> Self {
        METRICS.grpc_subscribers.inc();
        Self
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        METRICS.grpc_subscribers.dec();
    }
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> GrpcError + '_ {
    move |source| GrpcError::Io {
        path: path.to_owned(),
        source,
    }
}

fn lookup_gid(group: &str) -> Result<u32, GrpcError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| GrpcError::Group(group.to_owned()))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives it.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(GrpcError::Group(group.to_owned()));
    }
    Ok(grp.gr_gid)
}

fn prepare_socket_path(path: &Path) -> Result<(), GrpcError> {
    let shown = path.display().to_string();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(&shown))?;
    }
    match std::fs::symlink_metadata(path) {
        // A stale socket from a previous run: replace it. Never delete other files.
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(io_err(&shown)),
        Ok(_) => Err(GrpcError::Io {
            path: shown,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ),
        }),
        Err(_) => Ok(()),
    }
}

/// Binds and starts the server; it stops when `state.shutdown` turns true.
pub async fn serve(
    cfg: &GrpcConfig,
    state: Arc<ApiState>,
) -> Result<(BoundAddr, JoinHandle<()>), GrpcError> {
    let mut builder = Server::builder();
    let mut shutdown = state.shutdown.clone();
    let signal = async move {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    let router = |b: &mut Server| {
        b.add_service(pb::alert_service_server::AlertServiceServer::new(
            alerts::AlertApi {
                state: state.clone(),
            },
        ))
        .add_service(pb::event_service_server::EventServiceServer::new(
            events::EventApi {
                state: state.clone(),
            },
        ))
        .add_service(pb::rule_service_server::RuleServiceServer::new(
            rules::RuleApi {
                state: state.clone(),
            },
        ))
        .add_service(pb::agent_service_server::AgentServiceServer::new(
            agent::AgentApi {
                state: state.clone(),
            },
        ))
        .add_optional_service(state.contain.clone().map(|engine| {
            crate::contain::grpc::ContainmentServiceServer::new(
                crate::contain::grpc::ContainApi::new(engine),
            )
        }))
    };
    if let Some(path) = cfg.listen.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        prepare_socket_path(&path)?;
        let shown = path.display().to_string();
        let listener = tokio::net::UnixListener::bind(&path).map_err(io_err(&shown))?;
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(cfg.unix_mode & 0o777),
        )
        .map_err(io_err(&shown))?;
        if let Some(g) = &cfg.unix_group {
            let gid = lookup_gid(g)?;
            std::os::unix::fs::chown(&path, None, Some(gid)).map_err(io_err(&shown))?;
        }
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let router = router(&mut builder);
        tracing::info!(socket = %shown, mode = format!("{:o}", cfg.unix_mode), "gRPC API listening on a Unix socket");
        let task = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        return Ok((BoundAddr::Unix(path), task));
    }
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| GrpcError::Address(cfg.listen.clone()))?;
    match (&cfg.tls, cfg.insecure_plaintext) {
        (Some(tls), _) => builder = builder.tls_config(tls.load()?)?,
        (None, true) => tracing::warn!(%addr, "gRPC API on plaintext TCP (insecure_plaintext)"),
        (None, false) => return Err(GrpcError::NeedsTls(cfg.listen.clone())),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io_err(&cfg.listen))?;
    let local = listener.local_addr().map_err(io_err(&cfg.listen))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let router = router(&mut builder);
    tracing::info!(addr = %local, tls = cfg.tls.is_some(), "gRPC API listening");
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((BoundAddr::Tcp(local), task))
}
