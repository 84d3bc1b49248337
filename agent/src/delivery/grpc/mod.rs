//! The gRPC API server (`picket.v1`): alert and event streams, rule
//! management, agent info. Listens on TCP with mutual TLS, on a Unix socket
//! protected by file permissions, or — only when explicitly asked for with
//! `insecure_plaintext` — on plaintext TCP.

/// Implements `AsyncWrite` for a connection wrapper (`struct W<S> { io: S,
/// .. }`) by forwarding every call, vectored writes included, to `io`: the
/// wrappers (`incoming::Capped`, `authority::AuthorityFix`) act only on
/// reads or on their own lifetime. Defined before the modules that use it.
macro_rules! forward_async_write {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
        }
    };
}

mod agent;
mod alerts;
mod authority;
pub mod client;
mod events;
pub mod identity;
mod incoming;
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
    /// Permission bits of the Unix socket: an octal string (`"0660"`,
    /// `"0o660"`, `"660"`) or a number (its value, e.g. 432 in JSON). Modes
    /// that give anything to others (`0o007`) or bits above `0o777` are
    /// rejected: an unquoted YAML `660` is the decimal number 660.
    #[serde(deserialize_with = "unix_mode::deserialize")]
    pub unix_mode: u32,
    /// Group (name or number) that owns the Unix socket.
    pub unix_group: Option<String>,
    /// Most alert and event streams open at once (all clients together);
    /// one more is refused with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Most connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Deadline of the TLS handshake (ms).
    pub handshake_timeout_ms: u64,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "unix:/run/picket/picket.sock".into(),
            tls: None,
            insecure_plaintext: false,
            unix_mode: 0o660,
            unix_group: None,
            max_streams: 64,
            max_connections: 256,
            handshake_timeout_ms: 5000,
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
    #[error("{0}")]
    Mode(String),
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
    /// Alerts the spool could not take; streams pass them on live.
    pub unspooled: broadcast::Sender<Arc<crate::model::Alert>>,
    /// Slots of open alert/event streams (`GrpcConfig::max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    /// Takes one stream slot, or refuses with RESOURCE_EXHAUSTED (counted in
    /// `picket_grpc_streams_rejected_total`).
    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, tonic::Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            METRICS.grpc_streams_rejected.inc();
            tonic::Status::resource_exhausted(
                "too many open streams on this agent (grpc.max_streams); retry later",
            )
        })
    }
}

/// Counts an open stream in `picket_grpc_subscribers` and holds its stream
/// slot while alive.
struct SubscriberGuard(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl SubscriberGuard {
    fn new(slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        METRICS.grpc_subscribers.inc();
        Self(slot)
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
    let mut builder = Server::builder()
        // Dead peers give their connection slot back.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
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
            std::fs::Permissions::from_mode(unix_mode::check(cfg.unix_mode)?),
        )
        .map_err(io_err(&shown))?;
        if let Some(g) = &cfg.unix_group {
            let gid = lookup_gid(g)?;
            std::os::unix::fs::chown(&path, None, Some(gid)).map_err(io_err(&shown))?;
        }
        let incoming = incoming::capped(listener, cfg.max_connections);
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
        (Some(tls), _) => {
            let timeout = std::time::Duration::from_millis(cfg.handshake_timeout_ms.max(1));
            builder = builder.tls_config(tls.load()?.timeout(timeout))?
        }
        (None, true) => tracing::warn!(%addr, "gRPC API on plaintext TCP (insecure_plaintext)"),
        (None, false) => return Err(GrpcError::NeedsTls(cfg.listen.clone())),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io_err(&cfg.listen))?;
    let local = listener.local_addr().map_err(io_err(&cfg.listen))?;
    let incoming = incoming::capped(listener, cfg.max_connections);
    let router = router(&mut builder);
    tracing::info!(addr = %local, tls = cfg.tls.is_some(), "gRPC API listening");
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((BoundAddr::Tcp(local), task))
}

/// `unix_mode`: accepted spellings and the safety check.
pub mod unix_mode {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }

    /// Parses an octal string: `0660`, `0o660`, `660`.
    pub fn parse(s: &str) -> Result<u32, String> {
        let t = s.trim();
        let digits = t
            .strip_prefix("0o")
            .or_else(|| t.strip_prefix("0O"))
            .unwrap_or(t);
        u32::from_str_radix(digits, 8)
            .map_err(|_| format!("unix_mode {s:?} is not an octal mode like \"0660\""))
    }

    /// Rejects modes that are not permission bits or that let others (not
    /// the owner, not the group) connect: the socket reaches Contain.
    pub fn check(mode: u32) -> Result<u32, super::GrpcError> {
        if mode > 0o777 {
            return Err(super::GrpcError::Mode(format!(
                "unix_mode {mode} (0o{mode:o}) is not a permission mode; an unquoted YAML number is decimal: write it as a quoted octal string, e.g. unix_mode: \"0660\""
            )));
        }
        if mode & 0o007 != 0 {
            return Err(super::GrpcError::Mode(format!(
                "unix_mode 0o{mode:03o} gives access to others; the socket must be reachable by owner and group only (e.g. \"0660\")"
            )));
        }
        Ok(mode)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let mode = match Raw::deserialize(d)? {
            Raw::Num(n) => u32::try_from(n).map_err(|_| {
                serde::de::Error::custom(format!("unix_mode {n} is not a permission mode"))
            })?,
            Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom)?,
        };
        check(mode).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        use super::super::GrpcConfig;

        fn load(v: serde_json::Value) -> Result<u32, String> {
            serde_json::from_value::<GrpcConfig>(serde_json::json!({ "unix_mode": v }))
                .map(|c| c.unix_mode)
                .map_err(|e| e.to_string())
        }

        #[test]
        fn octal_strings_and_numbers() {
            assert_eq!(load("0660".into()), Ok(0o660));
            assert_eq!(load("0o640".into()), Ok(0o640));
            assert_eq!(load("600".into()), Ok(0o600));
            assert_eq!(load(432.into()), Ok(0o660));
            let e = load(666.into()).unwrap_err();
            assert!(e.contains("quoted octal string"), "{e}");
            let e = load("0666".into()).unwrap_err();
            assert!(e.contains("gives access to others"), "{e}");
            let e = load("0o661".into()).unwrap_err();
            assert!(e.contains("gives access to others"), "{e}");
            let e = load("rw-rw----".into()).unwrap_err();
            assert!(e.contains("not an octal mode"), "{e}");
        }
    }
}
