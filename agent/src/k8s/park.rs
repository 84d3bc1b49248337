//! The Kubernetes enrichment stage: events of a pod whose metadata is not
//! cached yet are parked, by pod, while every other event goes on.
//!
//! The pod watch usually delivers a new pod a few milliseconds after its
//! first process runs. Waiting for it inside the only event loop (as the
//! agent once did) stalled every later event and alert for up to
//! `--k8s-metadata-wait` whenever one pod was unknown. Here only that pod's
//! events wait: each is released, in its pod's order, when the pod arrives
//! (`k8s.metadata = resolved`), when its wait ends or the API server is
//! unreachable (`unresolved`), or early when a bound is reached (counted in
//! `k8s_park_overflow`). Nothing is dropped. Every event that waited carries
//! `k8s.metadata_wait_ms`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use tokio::time::Instant;

use super::{Answer, ApiState, K8sEnricher, enrich};
use crate::model::Event;

/// Bounds of the parking lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkConfig {
    /// Events parked per pod; the oldest goes on unenriched beyond it.
    pub per_pod: usize,
    /// Events parked in all; the oldest of the pod with the most parked
    /// events goes on unenriched beyond it.
    pub total: usize,
}

impl Default for ParkConfig {
    fn default() -> Self {
        Self {
            per_pod: 256,
            total: 4096,
        }
    }
}

/// The parked events of one pod, oldest first.
struct Parked {
    /// Order in which pods were parked: pods go on in this order, and the
    /// earliest of equally full pods gives up an event first.
    seq: u64,
    /// When this pod's wait ends.
    deadline: Instant,
    events: VecDeque<(Instant, Event)>,
}

/// Kubernetes enrichment as a pipeline stage: [`K8sStage::admit`] enriches
/// or parks, [`K8sStage::released`] hands back parked events when they can
/// go on. Not `Sync`: one event loop owns it.
pub struct K8sStage {
    enricher: Arc<K8sEnricher>,
    cfg: ParkConfig,
    parked: HashMap<String, Parked>,
    total: usize,
    next_seq: u64,
    /// Cache-change notifications (`None` in host mode: nothing parks).
    updates: Option<tokio::sync::watch::Receiver<u64>>,
}

impl K8sStage {
    pub fn new(enricher: Arc<K8sEnricher>, cfg: ParkConfig) -> Self {
        let updates = enricher.subscribe();
        Self {
            enricher,
            cfg: ParkConfig {
                per_pod: cfg.per_pod.max(1),
                total: cfg.total.max(1),
            },
            parked: HashMap::new(),
            total: 0,
            next_seq: 0,
            updates,
        }
    }

    /// Events parked now.
    pub fn parked(&self) -> usize {
        self.total
    }

    /// Enriches `ev` from the cache and appends it to `out`, or parks it
    /// when its pod is not known yet. Events released early by a bound are
    /// appended too, before `ev`.
    pub fn admit(&mut self, mut ev: Event, out: &mut Vec<Event>) {
        let cid = ev.container.as_ref().map(|c| c.id.as_str());
        let uid = ev.k8s.as_ref().map(|k| k.pod.uid.as_str());
        if cid.is_none() && uid.is_none() {
            out.push(ev);
            return;
        }
        // Events of a pod that already has parked events queue behind them,
        // unless the pod arrived meanwhile: its order is kept.
        let queued = uid
            .map(|u| u.replace('_', "-"))
            .filter(|u| self.parked.contains_key(u));
        if let Some(u) = queued {
            if self.enricher.lookup_cached(cid, Some(&u)).is_some() {
                self.release_pod(&u, Release::Resolved, out);
            } else {
                self.park(u, ev, out);
                return;
            }
        }
        match self.enricher.answer_now(cid, uid) {
            Answer::Found(k8s, container) => apply(&mut ev, k8s, container),
            Answer::Unresolved(k8s) => ev.k8s = Some(k8s),
            Answer::Wait(u) => return self.park(u, ev, out),
            Answer::NotPod => {}
        }
        out.push(ev);
    }

    fn park(&mut self, uid: String, ev: Event, out: &mut Vec<Event>) {
        let now = Instant::now();
        let wait = self
            .enricher
            .shared
            .as_ref()
            .map_or(std::time::Duration::ZERO, |s| s.config.metadata_wait);
        let seq = self.next_seq;
        let pod = self.parked.entry(uid.clone()).or_insert_with(|| Parked {
            seq,
            deadline: now + wait,
            events: VecDeque::new(),
        });
        if pod.seq == seq {
            self.next_seq += 1;
        }
        pod.events.push_back((now, ev));
        self.total += 1;
        if pod.events.len() > self.cfg.per_pod {
            self.overflow(&uid, out);
        }
        if self.total > self.cfg.total {
            // The pod holding the most events gives up its oldest.
            let fullest = self
                .parked
                .iter()
                .max_by_key(|(_, p)| (p.events.len(), std::cmp::Reverse(p.seq)))
                .map(|(u, _)| u.clone());
            if let Some(u) = fullest {
                self.overflow(&u, out);
            }
        }
        self.set_gauge();
    }

    /// Sends the oldest parked event of `uid` on unenriched.
    fn overflow(&mut self, uid: &str, out: &mut Vec<Event>) {
        let Some(pod) = self.parked.get_mut(uid) else {
            return;
        };
        let Some((since, mut ev)) = pod.events.pop_front() else {
            return;
        };
        self.total -= 1;
        if pod.events.is_empty() {
            self.parked.remove(uid);
        }
        if let Some(s) = &self.enricher.shared {
            s.metrics.park_overflow.inc();
            s.metrics.lookups_unresolved.inc();
        }
        tracing::debug!(
            pod_uid = uid,
            "parking bound reached: event goes on unenriched"
        );
        ev.k8s = Some(waited(
            enrich::unresolved(uid, &self.enricher.node_name),
            since,
        ));
        out.push(ev);
    }

    /// Waits until parked events can go on (their pod arrived, their wait
    /// ended, the API server became unreachable) and returns them, each
    /// pod's in order. Pending while nothing is parked. Cancel-safe: state
    /// changes only after the wait.
    pub async fn released(&mut self) -> Vec<Event> {
        loop {
            let Some(earliest) = self.parked.values().map(|p| p.deadline).min() else {
                std::future::pending::<()>().await;
                continue;
            };
            let Some(rx) = self.updates.as_mut() else {
                // Host mode never parks; nothing to wait for.
                std::future::pending::<()>().await;
                continue;
            };
            // A cache change since the last sweep marked the receiver: it
            // wakes at once. Marked seen just before each sweep, so nothing
            // in between is missed.
            let alive = tokio::select! {
                r = rx.changed() => r.is_ok(),
                () = tokio::time::sleep_until(earliest) => true,
            };
            if !alive {
                // The enricher stopped: nothing will arrive any more.
                self.updates = None;
            }
            if let Some(rx) = self.updates.as_mut() {
                rx.borrow_and_update();
            }
            let out = self.sweep(Instant::now());
            if !out.is_empty() {
                return out;
            }
        }
    }

    /// Releases the parked events that can go on at `now`.
    fn sweep(&mut self, now: Instant) -> Vec<Event> {
        let outage = self.enricher.api_state() == ApiState::Outage || self.updates.is_none();
        let mut out = Vec::new();
        for uid in self.uids_in_order() {
            let Some(pod) = self.parked.get(&uid) else {
                continue;
            };
            let expired = pod.deadline <= now;
            if self.enricher.lookup_cached(None, Some(&uid)).is_some() {
                self.release_pod(&uid, Release::Resolved, &mut out);
            } else if expired {
                self.release_pod(&uid, Release::TimedOut, &mut out);
            } else if outage {
                self.release_pod(&uid, Release::Outage, &mut out);
            }
        }
        out
    }

    /// Every parked event, unenriched, at once (shutdown: nothing is lost).
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for uid in self.uids_in_order() {
            self.release_pod(&uid, Release::Outage, &mut out);
        }
        out
    }

    /// The parked pods, the one parked first first.
    fn uids_in_order(&self) -> Vec<String> {
        let mut pods: Vec<(u64, &String)> = self.parked.iter().map(|(u, p)| (p.seq, u)).collect();
        pods.sort_unstable();
        pods.into_iter().map(|(_, u)| u.clone()).collect()
    }

    fn release_pod(&mut self, uid: &str, how: Release, out: &mut Vec<Event>) {
        let Some(pod) = self.parked.remove(uid) else {
            return;
        };
        self.total -= pod.events.len();
        let shared = self.enricher.shared.as_deref();
        if how == Release::TimedOut
            && let Some(s) = shared
        {
            s.metrics.lookup_wait_timeouts.inc();
            s.remember_unresolved(uid);
        }
        for (since, mut ev) in pod.events {
            let cid = ev.container.as_ref().map(|c| c.id.clone());
            let found = match how {
                Release::Resolved => self.enricher.lookup_cached(cid.as_deref(), Some(uid)),
                _ => None,
            };
            if let Some(s) = shared {
                match found {
                    Some(_) => s.metrics.lookups_resolved.inc(),
                    None => s.metrics.lookups_unresolved.inc(),
                };
            }
            match found {
                Some((k8s, container)) => apply(&mut ev, waited(k8s, since), container),
                None => {
                    ev.k8s = Some(waited(
                        enrich::unresolved(uid, &self.enricher.node_name),
                        since,
                    ))
                }
            }
            out.push(ev);
        }
        self.set_gauge();
    }

    fn set_gauge(&self) {
        if let Some(s) = &self.enricher.shared {
            s.metrics
                .events_parked
                .set(i64::try_from(self.total).unwrap_or(i64::MAX));
        }
    }
}

/// Why a pod's parked events go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// The pod is cached now.
    Resolved,
    /// Its wait ended.
    TimedOut,
    /// The API server is unreachable, or the agent stops.
    Outage,
}

/// `k8s` marked with the time the event waited.
fn waited(mut k8s: crate::model::K8s, since: Instant) -> crate::model::K8s {
    let ms = since.elapsed().as_millis();
    k8s.metadata_wait_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
    k8s
}

/// Puts the pod's metadata on the event; the container's name, image and
/// runtime (and whether it runs privileged) fill only what the cgroup did
/// not already tell.
fn apply(ev: &mut Event, k8s: crate::model::K8s, container: Option<crate::model::Container>) {
    ev.k8s = Some(k8s);
    if let (Some(found), Some(ours)) = (container, ev.container.as_mut()) {
        if ours.name.is_empty() {
            ours.name = found.name;
        }
        if ours.image.is_none() {
            ours.image = found.image;
        }
        if ours.runtime.is_empty() {
            ours.runtime = found.runtime;
        }
        if ours.privileged.is_none() {
            ours.privileged = found.privileged;
        }
    }
}
