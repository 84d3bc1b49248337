//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz`
//! (the process serves requests) and `/readyz` (programs loaded and sinks
//! started).
//!
//! axum: tonic 0.14 already depends on axum 0.8 (its router), so this adds
//! no new crates, and it is less code than hand-driving hyper connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Readiness flags shared by the agent (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    programs_loaded: Arc<AtomicBool>,
    sinks_started: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set by the agent once the kernel programs are loaded and attached.
    pub fn set_programs_loaded(&self, v: bool) {
        self.programs_loaded.store(v, Ordering::Release);
    }

    /// Set by [`Delivery`](super::Delivery) once its sinks run.
    pub fn set_sinks_started(&self, v: bool) {
        self.sinks_started.store(v, Ordering::Release);
    }

    pub fn programs_loaded(&self) -> bool {
        self.programs_loaded.load(Ordering::Acquire)
    }

    pub fn sinks_started(&self) -> bool {
        self.sinks_started.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.programs_loaded() && self.sinks_started()
    }
}

/// HTTP endpoint settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// HTTP start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP listen address {0:?} is not host:port")]
    Address(String),
    #[error("HTTP listen {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode_text(),
    )
}

fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = readiness.clone();
                async move {
                    if r.is_ready() {
                        (StatusCode::OK, "ready\n".to_owned())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "not ready: programs_loaded={} sinks_started={}\n",
                                r.programs_loaded(),
                                r.sinks_started()
                            ),
                        )
                    }
                }
            }),
        )
}

/// Binds and serves until `shutdown` turns true.
pub async fn serve(
    cfg: &HttpConfig,
    readiness: Readiness,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), HttpError> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| HttpError::Address(cfg.listen.clone()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: cfg.listen.clone(),
        source,
    })?;
    tracing::info!(addr = %local, "HTTP endpoint listening (/metrics, /healthz, /readyz)");
    let app = router(readiness);
    let task = tokio::spawn(async move {
        let signal = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    Ok((local, task))
}
