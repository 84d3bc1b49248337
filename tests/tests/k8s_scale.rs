//! Memory stays bounded with thousands of pods on a node.

use std::time::Duration;

use picket_tests::kube_api::{
    TestApiServer, add_container, container_id, enricher_config, eventually, pod,
};

const NODE: &str = "node-a";
const PODS: u32 = 5_000;

fn big_pod(i: u32) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod(
        &format!("ns-{}", i % 50),
        &format!("app-{i}-7d4b9c8f6d-x2x4z"),
        &format!("uid-{i:08}"),
        NODE,
    );
    p.metadata.labels = Some(
        [
            ("app.kubernetes.io/name", format!("app-{i}")),
            ("app.kubernetes.io/part-of", "shop".to_string()),
            ("app.kubernetes.io/version", "1.2.3".to_string()),
            ("pod-template-hash", "7d4b9c8f6d".to_string()),
            ("team", "payments".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    add_container(
        &mut p,
        "app",
        "registry.example/shop/app:1.2.3",
        Some(&format!("containerd://{}", container_id(i * 2))),
    );
    add_container(
        &mut p,
        "proxy",
        "registry.example/mesh/proxy:1.31",
        Some(&format!("containerd://{}", container_id(i * 2 + 1))),
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_pods_stay_bounded_and_tombstones_are_purged() {
    let server = TestApiServer::start().await.expect("server");
    for i in 0..PODS {
        server.apply_pod(&big_pod(i));
    }
    let mut config = enricher_config(NODE);
    config.max_pods = 6_000;
    config.tombstone_ttl = Duration::from_secs(3);
    let (enricher, metrics) = server.start_enricher(config);
    assert!(
        enricher.wait_synced(Duration::from_secs(60)).await,
        "initial list"
    );

    let s = enricher.cache_stats();
    println!(
        "cache with {PODS} pods: {} live, {} tombstones, {} container ids, ~{} bytes ({} bytes/pod)",
        s.live_pods,
        s.tombstones,
        s.containers,
        s.approx_bytes,
        s.approx_bytes / s.live_pods.max(1)
    );
    assert_eq!(
        (s.live_pods, s.tombstones, s.containers),
        (5_000, 0, 10_000)
    );
    // About 1.6 KB per pod with two containers and five labels: well under
    // 2 KiB, so even 10,000 pods stay below 20 MiB.
    assert!(
        s.approx_bytes < 5_000 * 2048,
        "cache too large: {} bytes",
        s.approx_bytes
    );
    // The list was paged (500 per page, kube-runtime's default).
    assert_eq!(server.count("/api/v1/pods", false), 10);
    let resolved = enricher
        .lookup(Some(&container_id(2 * 4321 + 1)), None)
        .await
        .expect("pod 4321");
    assert_eq!(resolved.0.pod.name, "app-4321-7d4b9c8f6d-x2x4z");
    assert_eq!(
        resolved.0.container.map(|c| c.name).as_deref(),
        Some("proxy")
    );

    // Beyond max_pods new pods are dropped (counted), not cached.
    for i in PODS..PODS + 1_500 {
        server.apply_pod(&big_pod(i));
    }
    assert!(
        eventually(Duration::from_secs(30), || metrics.pods_dropped.get()
            == 500)
        .await,
        "dropped {}",
        metrics.pods_dropped.get()
    );
    assert_eq!(enricher.cache_stats().live_pods, 6_000);

    // Deleted pods become tombstones, then are purged after the TTL.
    for i in 0..PODS + 1_500 {
        server.delete_pod(
            &format!("ns-{}", i % 50),
            &format!("app-{i}-7d4b9c8f6d-x2x4z"),
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || enricher.cache_stats().live_pods
            == 0)
        .await
    );
    let s = enricher.cache_stats();
    println!(
        "after deleting all: {} live, {} tombstones, ~{} bytes",
        s.live_pods, s.tombstones, s.approx_bytes
    );
    // Purging runs in the background, so fewer may be left by now; the last
    // deleted pod is still resolvable.
    assert!(
        s.tombstones > 0 && s.tombstones <= 6_000,
        "{} tombstones",
        s.tombstones
    );
    let last = enricher
        .lookup_cached(None, Some(&format!("uid-{:08}", PODS - 1)))
        .expect("tombstone");
    assert_eq!(
        last.0.pod.name,
        format!("app-{}-7d4b9c8f6d-x2x4z", PODS - 1)
    );
    assert!(
        eventually(Duration::from_secs(10), || enricher
            .cache_stats()
            .tombstones
            == 0)
        .await,
        "tombstones purged"
    );
    let s = enricher.cache_stats();
    println!(
        "after the tombstone TTL: {} live, {} tombstones, {} container ids, ~{} bytes",
        s.live_pods, s.tombstones, s.containers, s.approx_bytes
    );
    assert_eq!((s.live_pods, s.tombstones, s.containers), (0, 0, 0));
    assert!(s.approx_bytes < 256 * 1024, "{} bytes left", s.approx_bytes);
    assert_eq!(metrics.cache_pods.get(), 0);
}
