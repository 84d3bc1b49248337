//! API server reachability, shared by the watches and the owner lookups.
//!
//! An outage starts when a request fails for a reason that means "the API
//! server cannot be reached" (connection errors, timeouts, 5xx, 429) and ends
//! with the next HTTP answer that shows it is back (any status below 500 but
//! 429, seen by a layer in the client stack, or any watch event). This counts
//! and logs each outage once, however many retries happen, and notices the
//! recovery even when no object changed meanwhile. Permission and request
//! errors (403, 400, ...) are not outages: they are logged once per watch
//! and counted in `k8s_api_errors`.

use std::{collections::HashSet, sync::Mutex, time::Instant};

use tracing::{debug, info, warn};

use super::metrics::K8sMetrics;

/// What lookups can expect from the API server right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiState {
    /// No answer yet (start-up): lookups may wait for the first list.
    Connecting,
    /// The API server answers.
    Connected,
    /// The API server cannot be reached: lookups answer from the cache without waiting.
    Outage,
}

#[derive(Debug)]
struct Inner {
    state: ApiState,
    outage_since: Option<Instant>,
    /// Watches whose non-outage error was already logged at warn level.
    warned: HashSet<&'static str>,
}

/// Reachability tracker.
pub struct Health {
    inner: Mutex<Inner>,
    metrics: K8sMetrics,
    /// Called on every state change (wakes waiting lookups).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Whether an HTTP status shows the API server is up and answering.
pub fn status_means_reachable(code: u16) -> bool {
    code < 500 && code != 429
}

/// Whether a kube client error means the API server is unreachable (an
/// outage) rather than a refusal (RBAC, bad request).
pub fn error_means_unreachable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => !status_means_reachable(status.code),
        _ => true,
    }
}

impl Health {
    pub fn new(metrics: K8sMetrics, on_change: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: ApiState::Connecting,
                outage_since: None,
                warned: HashSet::new(),
            }),
            metrics,
            on_change,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> ApiState {
        self.lock().state
    }

    /// A request of `watch` failed. Returns true when this starts an outage.
    pub fn error(
        &self,
        watch: &'static str,
        error: &dyn std::error::Error,
        unreachable: bool,
    ) -> bool {
        self.metrics.api_errors.inc();
        let mut g = self.lock();
        if !unreachable {
            if g.warned.insert(watch) {
                warn!(watch, %error, "Kubernetes API refused the request (check the RBAC rules); retrying with back-off");
            } else {
                debug!(watch, %error, "Kubernetes API still refuses the request");
            }
            return false;
        }
        if g.state == ApiState::Outage {
            debug!(watch, %error, "Kubernetes API still unreachable");
            return false;
        }
        g.state = ApiState::Outage;
        g.outage_since = Some(Instant::now());
        drop(g);
        self.metrics.api_outages.inc();
        self.metrics.api_connected.set(0);
        warn!(watch, %error, "Kubernetes API unreachable: answering from the metadata cache, retrying with back-off");
        (self.on_change)();
        true
    }

    /// The API server answered. Returns true when this ends an outage.
    pub fn reachable(&self) -> bool {
        let mut g = self.lock();
        let prev = g.state;
        if prev == ApiState::Connected {
            return false;
        }
        g.state = ApiState::Connected;
        let since = g.outage_since.take();
        g.warned.clear();
        drop(g);
        self.metrics.api_connected.set(1);
        let ends = prev == ApiState::Outage;
        if ends {
            let secs = since.map(|t| t.elapsed().as_secs_f64()).unwrap_or_default();
            info!(outage_seconds = secs, "Kubernetes API reachable again");
        }
        (self.on_change)();
        ends
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn one_outage_however_many_errors() {
        let m = K8sMetrics::unregistered();
        let changes = Arc::new(AtomicUsize::new(0));
        let c = changes.clone();
        let h = Health::new(
            m.clone(),
            Box::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let err = std::io::Error::other("refused");
        assert_eq!(h.state(), ApiState::Connecting);
        assert!(!h.error("namespaces", &err, false));
        assert_eq!(h.state(), ApiState::Connecting);
        assert!(h.error("pods", &err, true));
        assert!(!h.error("pods", &err, true));
        assert!(!h.error("namespaces", &err, true));
        assert_eq!(h.state(), ApiState::Outage);
        assert!(h.reachable());
        assert!(!h.reachable());
        assert_eq!(h.state(), ApiState::Connected);
        assert!(h.error("pods", &err, true));
        assert_eq!(
            (
                m.api_outages.get(),
                m.api_errors.get(),
                m.api_connected.get()
            ),
            (2, 5, 0)
        );
        assert_eq!(changes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn statuses() {
        assert!(status_means_reachable(200));
        assert!(status_means_reachable(403));
        assert!(status_means_reachable(410));
        assert!(!status_means_reachable(429));
        assert!(!status_means_reachable(503));
    }
}
