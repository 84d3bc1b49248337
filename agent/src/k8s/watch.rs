//! The pod and namespace watches (kube-runtime `watcher`) feeding the index.
//!
//! kube-runtime's watcher lists, then watches from the list's resourceVersion
//! with bookmarks, resumes from the last seen version after a dropped
//! connection, and starts over with a full list when the server answers a
//! watch with `410 Gone` (an ERROR event). We add what it leaves to callers:
//! back-off with jitter between failed attempts, outage tracking, a re-list
//! when the *watch request itself* is answered with HTTP 410, and deletion of
//! pods that vanished while the watch was down (diffing each re-list).

use std::{collections::HashSet, sync::Arc, time::Instant};

use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    runtime::watcher::{self, Event},
};
use tracing::{info, warn};

use crate::backoff::Backoff;

use super::{
    Shared,
    convert::pod_meta,
    health::{error_means_unreachable, status_means_reachable},
    index::ApplyOutcome,
    owners::OwnerResolver,
};

const PODS: &str = "pods";
const NAMESPACES: &str = "namespaces";

/// What to do with a watcher error.
enum ErrorAction {
    /// The server expired our resourceVersion: the watcher re-lists by itself.
    Relisting,
    /// HTTP 410 on the watch request: drop the watcher and start a new one (full list).
    Restart,
    /// Anything else: an outage (or its continuation); back off.
    Retry,
}

fn classify(err: &watcher::Error) -> ErrorAction {
    match err {
        watcher::Error::WatchError(status) if status.code == 410 => ErrorAction::Relisting,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410 => {
            ErrorAction::Restart
        }
        _ => ErrorAction::Retry,
    }
}

/// Whether a watcher error means the API server cannot be reached.
fn unreachable(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => error_means_unreachable(e),
        watcher::Error::WatchError(status) => !status_means_reachable(status.code),
        watcher::Error::NoResourceVersion => false,
    }
}

/// One kube-runtime watcher with error handling: yields only events.
struct Watch<K: 'static> {
    name: &'static str,
    stream: BoxStream<'static, watcher::Result<Event<K>>>,
}

impl<K: 'static> Watch<K> {
    /// The next event; `None` when the watch must be recreated (HTTP 410 at
    /// watch start). Errors are counted, logged (once per outage) and
    /// retried after a jittered back-off.
    async fn next(&mut self, shared: &Shared, backoff: &mut Backoff) -> Option<Event<K>> {
        loop {
            match self.stream.next().await? {
                // `Init` is emitted before the list request: it proves nothing.
                Ok(Event::Init) => return Some(Event::Init),
                Ok(ev) => {
                    shared.health.reachable();
                    backoff.reset();
                    return Some(ev);
                }
                Err(err) => match classify(&err) {
                    ErrorAction::Relisting => {
                        info!(
                            watch = self.name,
                            "resourceVersion expired (410 Gone): re-listing"
                        );
                    }
                    ErrorAction::Restart => {
                        info!(
                            watch = self.name,
                            "watch answered 410 Gone: restarting with a full list"
                        );
                        return None;
                    }
                    ErrorAction::Retry => {
                        shared.health.error(self.name, &err, unreachable(&err));
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                },
            }
        }
    }
}

/// Watches the pods of this node (field selector `spec.nodeName`) forever.
pub(super) async fn pods(shared: Arc<Shared>, client: Client, mut owners: OwnerResolver) {
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut backoff = Backoff::new(shared.config.backoff_min, shared.config.backoff_max);
    let mut lists = 0u64;
    loop {
        let api: Api<Pod> = Api::all(client.clone());
        let stream = watcher::watcher(api, watcher::Config::default().fields(&selector)).boxed();
        let mut watch = Watch { name: PODS, stream };
        let mut listed: Option<HashSet<String>> = None;
        while let Some(ev) = watch.next(&shared, &mut backoff).await {
            match ev {
                Event::Init => listed = Some(HashSet::new()),
                Event::InitApply(pod) => {
                    if let Some(uid) = apply_pod(&shared, &mut owners, &pod).await
                        && let Some(l) = listed.as_mut()
                    {
                        l.insert(uid);
                    }
                }
                Event::InitDone => {
                    let seen = listed.take().unwrap_or_default();
                    let gone = shared.index_mut().retain_listed(&seen, Instant::now());
                    lists += 1;
                    if lists > 1 {
                        shared.metrics.relists.inc();
                    }
                    shared
                        .synced
                        .store(true, std::sync::atomic::Ordering::Release);
                    info!(
                        pods = seen.len(),
                        deleted_while_disconnected = gone,
                        "pod list synced"
                    );
                }
                Event::Apply(pod) => {
                    apply_pod(&shared, &mut owners, &pod).await;
                }
                Event::Delete(pod) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        shared.index_mut().delete(uid, Instant::now());
                    }
                }
            }
            shared.notify();
        }
    }
}

/// Resolves the pod's workload and caches it. Returns its UID when cached.
async fn apply_pod(shared: &Shared, owners: &mut OwnerResolver, pod: &Pod) -> Option<String> {
    let mut meta = pod_meta(pod)?;
    meta.workload = owners.resolve(pod).await;
    let uid = meta.uid.clone();
    let name = format!("{}/{}", meta.namespace, meta.name);
    match shared.index_mut().apply(meta, Instant::now()) {
        ApplyOutcome::Dropped => {
            shared.metrics.pods_dropped.inc();
            warn!(pod = %name, max_pods = shared.config.max_pods, "pod metadata cache full: pod not cached (raise --k8s-max-pods)");
            None
        }
        ApplyOutcome::Inserted | ApplyOutcome::Updated => Some(uid),
    }
}

/// Watches all namespaces (for their labels) forever.
pub(super) async fn namespaces(shared: Arc<Shared>, client: Client) {
    let mut backoff = Backoff::new(shared.config.backoff_min, shared.config.backoff_max);
    loop {
        let api: Api<Namespace> = Api::all(client.clone());
        let stream = watcher::watcher(api, watcher::Config::default()).boxed();
        let mut watch = Watch {
            name: NAMESPACES,
            stream,
        };
        let mut listed: Option<HashSet<String>> = None;
        while let Some(ev) = watch.next(&shared, &mut backoff).await {
            match ev {
                Event::Init => listed = Some(HashSet::new()),
                Event::InitApply(ns) | Event::Apply(ns) => {
                    if let Some(name) = ns.metadata.name {
                        if let Some(l) = listed.as_mut() {
                            l.insert(name.clone());
                        }
                        shared
                            .index_mut()
                            .apply_namespace(name, ns.metadata.labels.unwrap_or_default());
                    }
                }
                Event::InitDone => {
                    let seen = listed.take().unwrap_or_default();
                    shared.index_mut().retain_namespaces(&seen);
                }
                Event::Delete(ns) => {
                    if let Some(name) = ns.metadata.name.as_deref() {
                        shared.index_mut().delete_namespace(name);
                    }
                }
            }
            shared.notify();
        }
    }
}
