//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz`
//! (the process serves requests) and `/readyz` (programs loaded and sinks
//! started).
//!
//! axum: tonic 0.14 already depends on axum 0.8 (its router), so this adds
//! no new crates, and it is less code than hand-driving hyper connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Readiness shared by the agent (cheap to clone): two start-up flags plus
/// a set of named problems (`sink otlp` -> "cursor write failed: ...").
/// Ready means both flags set and no problem. Other parts of the agent add
/// their own named conditions with [`set_problem`](Self::set_problem).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    programs_loaded: Arc<AtomicBool>,
    sinks_started: Arc<AtomicBool>,
    problems: Arc<Mutex<BTreeMap<String, String>>>,
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

    fn problems_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks condition `name` as failing with `reason` (not ready until
    /// cleared).
    pub fn set_problem(&self, name: &str, reason: impl Into<String>) {
        self.problems_map().insert(name.to_owned(), reason.into());
    }

    /// Condition `name` holds again.
    pub fn clear_problem(&self, name: &str) {
        self.problems_map().remove(name);
    }

    /// The failing conditions, by name.
    pub fn problems(&self) -> BTreeMap<String, String> {
        self.problems_map().clone()
    }

    pub fn is_ready(&self) -> bool {
        self.programs_loaded() && self.sinks_started() && self.problems_map().is_empty()
    }

    /// The `/readyz` body when not ready.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "not ready: programs_loaded={} sinks_started={}\n",
            self.programs_loaded(),
            self.sinks_started()
        );
        for (name, reason) in self.problems_map().iter() {
            out.push_str(&format!("{name}: {reason}\n"));
        }
        out
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
                        (StatusCode::SERVICE_UNAVAILABLE, r.explain())
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
