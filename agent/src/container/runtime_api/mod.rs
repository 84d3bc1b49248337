//! Container name and image from the container runtimes' own APIs, for
//! containers Kubernetes does not describe (Docker, podman, containerd on a
//! plain host; also pods when the API server is not used).
//!
//! The cgroup path gives a container's id and runtime (see
//! [`super::parse_cgroup_path`]); its name and image are only known to the
//! runtime. [`RuntimeApis::enrich`] is called on the event path and never
//! waits: a container seen for the first time gets a lookup started in the
//! background and its event goes out without name and image; later events
//! of that container carry them once the runtime answered. Lookups are
//! cached (bounded), at most [`RuntimeApiConfig::max_in_flight`] run at
//! once, each bounded by a timeout, and an answer "unknown" or a failure is
//! retried only after [`RuntimeApiConfig::retry_secs`]. An absent socket is
//! not an error: that runtime is simply not asked (`picket doctor` says so).

mod containerd;
mod docker;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use serde::Deserialize;
use tracing::{debug, info, warn};

pub use containerd::{ContainerdClient, meta_of};
pub use docker::{DockerClient, parse_inspect};

use crate::model::{Event, Image};

/// `runtimes:` in the configuration file. An empty socket path turns that
/// runtime's lookups off.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeApiConfig {
    /// containerd's gRPC socket.
    pub containerd_socket: PathBuf,
    /// containerd namespaces asked in order: the CRI plugin's (`k8s.io`),
    /// `ctr`'s and nerdctl's (`default`), Docker's (`moby`).
    pub containerd_namespaces: Vec<String>,
    /// Docker's API socket.
    pub docker_socket: PathBuf,
    /// podman's API socket (`podman system service`; rootful).
    pub podman_socket: PathBuf,
    /// Time allowed for one runtime's answer.
    pub timeout_ms: u64,
    /// Lookups running at once; a container seen while all are busy is
    /// looked up on one of its next events.
    pub max_in_flight: usize,
    /// Containers remembered (the oldest are forgotten first).
    pub cache_entries: usize,
    /// After an unknown or failed lookup, time before the next try.
    pub retry_secs: u64,
}

impl Default for RuntimeApiConfig {
    fn default() -> Self {
        Self {
            containerd_socket: "/run/containerd/containerd.sock".into(),
            containerd_namespaces: vec!["k8s.io".into(), "default".into(), "moby".into()],
            docker_socket: "/var/run/docker.sock".into(),
            podman_socket: "/run/podman/podman.sock".into(),
            timeout_ms: 1000,
            max_in_flight: 8,
            cache_entries: 4096,
            retry_secs: 30,
        }
    }
}

/// What the runtime says about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    /// Image reference as created (`docker.io/library/nginx:1.27`).
    pub image: String,
    /// The runtime that answered: fills `container.runtime` where the
    /// cgroup path does not say (kubelet's cgroupfs layout, `<ns>/<id>`).
    pub runtime: &'static str,
}

/// Why a lookup failed (an unknown container is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("runtime unreachable: {0}")]
    Unreachable(String),
    #[error("runtime API error: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

struct Metrics {
    lookups: Counter,
    found: Counter,
    not_found: Counter,
    failures: Counter,
    deferred: Counter,
    entries: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    lookups: crate::metrics::register(
        "runtime_api_lookups",
        "Container lookups started against the runtimes' APIs (one per container, retried after runtimes.retry_secs when unanswered)",
        Counter::default(),
    ),
    found: crate::metrics::register(
        "runtime_api_found",
        "Runtime API lookups that returned a container's name and image",
        Counter::default(),
    ),
    not_found: crate::metrics::register(
        "runtime_api_not_found",
        "Runtime API lookups no configured runtime knew the container of",
        Counter::default(),
    ),
    failures: crate::metrics::register(
        "runtime_api_failures",
        "Runtime API requests that failed (unreachable socket, timeout, protocol error)",
        Counter::default(),
    ),
    deferred: crate::metrics::register(
        "runtime_api_deferred",
        "Runtime API lookups put off because runtimes.max_in_flight were running (retried on a later event)",
        Counter::default(),
    ),
    entries: crate::metrics::register(
        "runtime_api_cache_entries",
        "Containers in the runtime API cache",
        Gauge::default(),
    ),
});

/// One cached container.
#[derive(Clone, Debug)]
enum Entry {
    Pending,
    Found(Arc<ContainerMeta>),
    /// Unknown or failed; asked again after the instant.
    Retry(Instant),
}

/// Bounded map of container id -> entry, oldest forgotten first.
#[derive(Debug, Default)]
struct Cache {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl Cache {
    fn set(&mut self, id: &str, e: Entry, cap: usize) {
        if let Some(old) = self.map.get_mut(id) {
            *old = e;
            return;
        }
        while self.map.len() >= cap.max(1) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.map.insert(id.to_owned(), e);
        self.order.push_back(id.to_owned());
        METRICS
            .entries
            .set(i64::try_from(self.map.len()).unwrap_or(i64::MAX));
    }
}

/// The runtimes asked for a container, from the runtime its cgroup path
/// names (`""`: a bare id under `kubepods`, written by containerd and
/// Docker alike).
fn backends_for(runtime: &str) -> &'static [Backend] {
    match runtime {
        "containerd" => &[Backend::Containerd],
        "docker" => &[Backend::Docker],
        "podman" => &[Backend::Podman],
        "" => &[Backend::Containerd, Backend::Docker],
        // CRI-O has no API here; its pods are described by Kubernetes.
        _ => &[],
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Containerd,
    Docker,
    Podman,
}

struct Inner {
    cfg: RuntimeApiConfig,
    /// Where lookups run; `None` (no tokio runtime at start) turns them off.
    runtime: Option<tokio::runtime::Handle>,
    cache: Mutex<Cache>,
    in_flight: AtomicUsize,
    containerd: Option<ContainerdClient>,
    docker: Option<DockerClient>,
    podman: Option<DockerClient>,
}

/// Container name and image from the runtimes' APIs, cached. Cheap to
/// clone (shared state).
#[derive(Clone)]
pub struct RuntimeApis {
    inner: Arc<Inner>,
}

impl RuntimeApis {
    /// Sets up the clients (nothing is connected yet) and logs which
    /// sockets are present. Lookups run on the calling tokio runtime;
    /// called outside one, lookups are off (logged), never a panic.
    pub fn start(cfg: RuntimeApiConfig) -> Self {
        // Registered now, so /metrics lists them at 0 before any lookup.
        LazyLock::force(&METRICS);
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let runtime = tokio::runtime::Handle::try_current().ok();
        if runtime.is_none() {
            warn!("no async runtime: container names and images are not looked up");
            return Self {
                inner: Arc::new(Inner {
                    cfg,
                    runtime: None,
                    cache: Mutex::new(Cache::default()),
                    in_flight: AtomicUsize::new(0),
                    containerd: None,
                    docker: None,
                    podman: None,
                }),
            };
        }
        for check in checks(&cfg) {
            if check.ok {
                info!(runtime = %check.runtime, detail = %check.detail, "runtime API available");
            } else {
                info!(runtime = %check.runtime, detail = %check.detail, "runtime API not available: names and images of its containers stay unknown (see `picket doctor`)");
            }
        }
        let some = |p: &Path| (!p.as_os_str().is_empty()).then(|| p.to_path_buf());
        let inner = Inner {
            containerd: some(&cfg.containerd_socket)
                .map(|s| ContainerdClient::new(s, cfg.containerd_namespaces.clone(), timeout)),
            docker: some(&cfg.docker_socket).map(|s| DockerClient::new("docker", s)),
            podman: some(&cfg.podman_socket).map(|s| DockerClient::new("podman", s)),
            cfg,
            runtime,
            cache: Mutex::new(Cache::default()),
            in_flight: AtomicUsize::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Fills `container.name` and `container.image.name` where they are
    /// empty and the runtime already answered; starts a lookup otherwise.
    /// Never waits.
    pub fn enrich(&self, ev: &mut Event) {
        let Some(c) = ev.container.as_mut() else {
            return;
        };
        if !c.name.is_empty() && c.image.as_ref().is_some_and(|i| !i.name.is_empty()) {
            return;
        }
        if let Some(meta) = self.lookup(&c.id, &c.runtime) {
            if c.name.is_empty() {
                c.name.clone_from(&meta.name);
            }
            if c.runtime.is_empty() {
                c.runtime = meta.runtime.to_owned();
            }
            if c.image.as_ref().is_none_or(|i| i.name.is_empty()) && !meta.image.is_empty() {
                c.image = Some(Image {
                    name: meta.image.clone(),
                });
            }
        }
    }

    /// The cached answer for container `id`, starting a background lookup
    /// when there is none (or its retry time came).
    pub fn lookup(&self, id: &str, runtime: &str) -> Option<Arc<ContainerMeta>> {
        if !valid_id(id) {
            return None;
        }
        let backends = backends_for(runtime);
        let inner = &self.inner;
        let handle = inner.runtime.as_ref()?;
        if backends.is_empty() {
            return None;
        }
        {
            let mut cache = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.map.get(id) {
                Some(Entry::Found(m)) => return Some(m.clone()),
                Some(Entry::Pending) => return None,
                Some(Entry::Retry(at)) if Instant::now() < *at => return None,
                _ => {}
            }
            // Claim a slot before marking it pending, so a full pool leaves
            // the id to be tried again on its next event.
            let claimed = inner
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < inner.cfg.max_in_flight).then_some(n + 1)
                })
                .is_ok();
            if !claimed {
                METRICS.deferred.inc();
                debug!(container = id, "runtime API lookups all busy; deferred");
                return None;
            }
            cache.set(id, Entry::Pending, inner.cfg.cache_entries);
        }
        METRICS.lookups.inc();
        let me = self.clone();
        let id = id.to_owned();
        handle.spawn(async move {
            let entry = match me.fetch(&id, backends).await {
                Some(meta) => {
                    METRICS.found.inc();
                    debug!(container = %id, name = %meta.name, image = %meta.image, "runtime API answered");
                    Entry::Found(Arc::new(meta))
                }
                None => Entry::Retry(Instant::now() + Duration::from_secs(me.inner.cfg.retry_secs)),
            };
            let inner = &me.inner;
            inner.cache.lock().unwrap_or_else(|p| p.into_inner()).set(
                &id,
                entry,
                inner.cfg.cache_entries,
            );
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        None
    }

    /// Asks each runtime in turn; the first that knows the container wins.
    async fn fetch(&self, id: &str, backends: &[Backend]) -> Option<ContainerMeta> {
        let timeout = Duration::from_millis(self.inner.cfg.timeout_ms.max(1));
        let mut unknown = false;
        for &b in backends {
            let (runtime, socket) = match b {
                Backend::Containerd => ("containerd", &self.inner.cfg.containerd_socket),
                Backend::Docker => ("docker", &self.inner.cfg.docker_socket),
                Backend::Podman => ("podman", &self.inner.cfg.podman_socket),
            };
            // An absent socket is a runtime that is not installed: not
            // asked, not a failure (the doctor reports it).
            if socket.as_os_str().is_empty() || !socket.exists() {
                continue;
            }
            let answer = match tokio::time::timeout(timeout, self.ask(b, id)).await {
                Ok(a) => a,
                Err(_) => Err(LookupError::Timeout(timeout)),
            };
            match answer {
                Ok(Some(meta)) => return Some(meta),
                Ok(None) => unknown = true,
                Err(e) => {
                    METRICS.failures.inc();
                    warn!(runtime, container = id, error = %e, "runtime API lookup failed");
                }
            }
        }
        if unknown {
            METRICS.not_found.inc();
            debug!(container = id, "no runtime knows the container");
        }
        None
    }

    async fn ask(&self, b: Backend, id: &str) -> Result<Option<ContainerMeta>, LookupError> {
        let docker = match b {
            Backend::Containerd => {
                return match &self.inner.containerd {
                    Some(c) => c.get(id).await,
                    None => Ok(None),
                };
            }
            Backend::Docker => &self.inner.docker,
            Backend::Podman => &self.inner.podman,
        };
        match docker {
            Some(c) => c.get(id).await,
            None => Ok(None),
        }
    }
}

/// Container ids go into a URL path and a gRPC field: only what runtimes
/// use for ids (hex, or names of `[A-Za-z0-9_.-]`), bounded.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One runtime's socket, for `picket doctor` and the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketCheck {
    pub runtime: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Whether each configured runtime socket is there and accepts a
/// connection (a quick, synchronous check).
pub fn checks(cfg: &RuntimeApiConfig) -> Vec<SocketCheck> {
    [
        ("containerd", &cfg.containerd_socket),
        ("docker", &cfg.docker_socket),
        ("podman", &cfg.podman_socket),
    ]
    .into_iter()
    .map(|(runtime, socket)| {
        let (ok, detail) = if socket.as_os_str().is_empty() {
            (false, "disabled in the configuration".to_owned())
        } else if !socket.exists() {
            (
                false,
                format!(
                    "{} absent: names and images of {runtime} containers come only from Kubernetes",
                    socket.display()
                ),
            )
        } else {
            match std::os::unix::net::UnixStream::connect(socket) {
                Ok(_) => (true, format!("{} accepts connections", socket.display())),
                Err(e) => (
                    false,
                    format!(
                        "{}: {e}: names and images of {runtime} containers come only from Kubernetes",
                        socket.display()
                    ),
                ),
            }
        };
        SocketCheck {
            runtime,
            ok,
            detail,
        }
    })
    .collect()
}
