//! The Kubernetes enrichment stage parks the events of a pod the cache does
//! not know yet, and lets every other event go on: against the test API
//! server, with the real kube-rs client and watchers. No timing is asserted:
//! the order in which events come out and their fields are.

use std::{sync::Arc, time::Duration};

use picket::{
    k8s::{K8sStage, ParkConfig},
    model::{Container, Event, EventKindName, K8s, MetadataStatus, Pod as PodSection},
};
use picket_tests::kube_api::{
    TestApiServer, add_container, container_id, enricher_config, namespace, pod,
};

const NODE: &str = "node-a";
const SYNC: Duration = Duration::from_secs(10);
/// A guard against a hang, not a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

/// An exec event of `pid` as the pipeline builds it from a kubelet-style
/// cgroup path: the container id and the pod UID, nothing else.
fn pod_event(pid: u32, cid: &str, uid: &str) -> Event {
    let t: jiff::Timestamp = "2026-03-04T05:06:07Z".parse().expect("time");
    let mut ev = Event::new(EventKindName::Exec, t);
    ev.process.pid = pid;
    ev.container = Some(Container {
        id: cid.into(),
        runtime: "containerd".into(),
        ..Container::default()
    });
    ev.k8s = Some(K8s {
        pod: PodSection {
            uid: uid.into(),
            ..PodSection::default()
        },
        metadata: MetadataStatus::Unresolved,
        ..K8s::default()
    });
    ev
}

/// `(pid, metadata, pod name, waited)` of each event.
fn summary(evs: &[Event]) -> Vec<(u32, MetadataStatus, String, bool)> {
    evs.iter()
        .map(|e| {
            let k = e.k8s.as_ref().expect("k8s section");
            (
                e.process.pid,
                k.metadata,
                k.pod.name.clone(),
                k.metadata_wait_ms.is_some(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_pod_does_not_delay_a_known_pod() {
    let server = TestApiServer::start().await.expect("server");
    server.apply_namespace(&namespace("shop", &[]));
    let known_id = container_id(1);
    let mut known = pod("shop", "known-1", "uid-known", NODE);
    add_container(
        &mut known,
        "app",
        "nginx:1.27",
        Some(&format!("containerd://{known_id}")),
    );
    server.apply_pod(&known);
    let mut cfg = enricher_config(NODE);
    // Long: the late pod is released by its arrival, not by the clock.
    cfg.metadata_wait = Duration::from_secs(60);
    let (enricher, metrics) = server.start_enricher(cfg);
    assert!(enricher.wait_synced(SYNC).await, "first list");
    let mut stage = K8sStage::new(Arc::new(enricher), ParkConfig::default());

    let late_id = container_id(2);
    let mut out = Vec::new();
    // The late pod's first event parks; the known pod's goes on at once.
    stage.admit(pod_event(10, &late_id, "uid-late"), &mut out);
    assert_eq!(out.len(), 0);
    stage.admit(pod_event(20, &known_id, "uid-known"), &mut out);
    stage.admit(pod_event(11, &late_id, "uid-late"), &mut out);
    stage.admit(pod_event(21, &known_id, "uid-known"), &mut out);
    assert_eq!(
        summary(&out),
        vec![
            (20, MetadataStatus::Resolved, "known-1".to_string(), false),
            (21, MetadataStatus::Resolved, "known-1".to_string(), false),
        ]
    );
    assert_eq!(
        out[0].container.as_ref().map(|c| c.name.as_str()),
        Some("app")
    );
    assert_eq!(stage.parked(), 2);
    assert_eq!(metrics.events_parked.get(), 2);
    assert_eq!(
        metrics.lookups_waited.get(),
        1,
        "the second event queued behind the first"
    );

    // The kubelet creates the pod: the watch delivers it, the parked events
    // go on in their order, enriched, marked as having waited.
    let mut late = pod("shop", "late-1", "uid-late", NODE);
    add_container(
        &mut late,
        "worker",
        "busybox:1.36",
        Some(&format!("containerd://{late_id}")),
    );
    server.apply_pod(&late);
    let released = tokio::time::timeout(GUARD, stage.released())
        .await
        .expect("the late pod's events are released");
    assert_eq!(
        summary(&released),
        vec![
            (10, MetadataStatus::Resolved, "late-1".to_string(), true),
            (11, MetadataStatus::Resolved, "late-1".to_string(), true),
        ]
    );
    let c = released[1].container.as_ref().expect("container");
    assert_eq!(
        (c.name.as_str(), c.image.as_ref().map(|i| i.name.as_str())),
        ("worker", Some("busybox:1.36"))
    );
    assert_eq!(stage.parked(), 0);
    assert_eq!(metrics.events_parked.get(), 0);
    assert_eq!(metrics.lookups_resolved.get(), 4);
    assert_eq!(metrics.lookups_unresolved.get(), 0);
    assert_eq!(metrics.park_overflow.get(), 0);
    assert_eq!(metrics.lookup_wait_timeouts.get(), 0);

    // Now cached: the next event of that pod does not wait.
    stage.admit(pod_event(12, &late_id, "uid-late"), &mut out);
    assert_eq!(
        summary(&out[2..]),
        vec![(12, MetadataStatus::Resolved, "late-1".to_string(), false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_overflow_and_time_out_unenriched_never_dropped() {
    let server = TestApiServer::start().await.expect("server");
    let mut cfg = enricher_config(NODE);
    cfg.metadata_wait = Duration::from_millis(200);
    let (enricher, metrics) = server.start_enricher(cfg);
    assert!(enricher.wait_synced(SYNC).await, "first list");
    let mut stage = K8sStage::new(
        Arc::new(enricher),
        ParkConfig {
            per_pod: 2,
            total: 3,
        },
    );
    let (x, y) = (container_id(7), container_id(8));
    let mut out = Vec::new();
    // Three events of pod x: the per-pod bound (2) sends the oldest on.
    for pid in 1..=3 {
        stage.admit(pod_event(pid, &x, "uid-x"), &mut out);
    }
    assert_eq!(
        summary(&out),
        vec![(1, MetadataStatus::Unresolved, String::new(), true)]
    );
    assert_eq!(
        out[0].k8s.as_ref().map(|k| k.pod.uid.as_str()),
        Some("uid-x")
    );
    // Two of pod y: the total bound (3) makes the fuller pod parked first
    // (x, 2 events) give up its oldest.
    stage.admit(pod_event(4, &y, "uid-y"), &mut out);
    stage.admit(pod_event(5, &y, "uid-y"), &mut out);
    assert_eq!(
        summary(&out),
        vec![
            (1, MetadataStatus::Unresolved, String::new(), true),
            (2, MetadataStatus::Unresolved, String::new(), true),
        ]
    );
    assert_eq!(metrics.park_overflow.get(), 2);
    assert_eq!((stage.parked(), metrics.events_parked.get()), (3, 3));

    // Neither pod arrives: their waits end, x (parked first) before y.
    let mut released = Vec::new();
    while released.len() < 3 {
        released.extend(
            tokio::time::timeout(GUARD, stage.released())
                .await
                .expect("released at the end of the wait"),
        );
    }
    assert_eq!(
        summary(&released),
        vec![
            (3, MetadataStatus::Unresolved, String::new(), true),
            (4, MetadataStatus::Unresolved, String::new(), true),
            (5, MetadataStatus::Unresolved, String::new(), true),
        ]
    );
    assert_eq!(
        released
            .iter()
            .map(|e| e.k8s.as_ref().map(|k| (k.pod.uid.clone(), k.node.clone())))
            .collect::<Vec<_>>(),
        vec![
            Some((
                "uid-x".to_string(),
                Some(picket::model::Named { name: NODE.into() })
            )),
            Some((
                "uid-y".to_string(),
                Some(picket::model::Named { name: NODE.into() })
            )),
            Some((
                "uid-y".to_string(),
                Some(picket::model::Named { name: NODE.into() })
            )),
        ]
    );
    assert_eq!(metrics.lookup_wait_timeouts.get(), 2, "one per pod");
    assert_eq!(
        metrics.lookups_unresolved.get(),
        5,
        "every event, none dropped"
    );
    assert_eq!((stage.parked(), metrics.events_parked.get()), (0, 0));

    // A pod whose wait just timed out is not waited for again.
    let mut after = Vec::new();
    stage.admit(pod_event(6, &x, "uid-x"), &mut after);
    assert_eq!(
        summary(&after),
        vec![(6, MetadataStatus::Unresolved, String::new(), false)]
    );
    assert_eq!(stage.drain().len(), 0);
}
