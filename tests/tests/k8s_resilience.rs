//! API server trouble: outages, expired resource versions (410 Gone).

use std::time::Duration;

use picket::{k8s::ApiState, model::MetadataStatus};
use picket_tests::kube_api::{Kind, TestApiServer, enricher_config, eventually, pod};

const NODE: &str = "node-a";
const SYNC: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_in_the_middle_is_counted_once_and_loses_no_update() {
    let server = TestApiServer::start().await.expect("server");
    server.apply_pod(&pod("default", "a", "uid-a", NODE));
    server.apply_pod(&pod("default", "c", "uid-c", NODE));
    let (enricher, metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await);
    assert_eq!(enricher.api_state(), ApiState::Connected);
    assert_eq!(metrics.api_connected.get(), 1);
    // Both watches established (so the outage below interrupts them, not their start).
    let watching = eventually(SYNC, || {
        server.count("/api/v1/pods", true) == 1 && server.count("/api/v1/namespaces", true) == 1
    })
    .await;
    assert!(watching);
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.start_outage();
    assert!(
        eventually(SYNC, || enricher.api_state() == ApiState::Outage).await,
        "outage noticed"
    );
    // The cluster changes while the agent cannot see it.
    server.apply_pod(&pod("default", "b", "uid-b", NODE));
    assert!(server.delete_pod("default", "a"));
    let mut c = pod("default", "c", "uid-c", NODE);
    c.metadata.labels = Some([("rev".to_string(), "2".to_string())].into());
    server.apply_pod(&c);

    // During the outage lookups answer from the cache at once (no 2 s wait).
    let t = tokio::time::Instant::now();
    let (k8s, _) = enricher.lookup(None, Some("uid-b")).await.expect("uid");
    assert_eq!(k8s.metadata, MetadataStatus::Unresolved);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        enricher
            .lookup(None, Some("uid-a"))
            .await
            .expect("cached")
            .0
            .pod
            .name,
        "a"
    );

    // Several retries, one outage.
    assert!(
        eventually(SYNC, || metrics.api_errors.get() >= 4).await,
        "retries: {}",
        metrics.api_errors.get()
    );
    assert_eq!(metrics.api_outages.get(), 1);
    assert_eq!(metrics.api_connected.get(), 0);

    server.end_outage();
    assert!(
        eventually(SYNC, || enricher.api_state() == ApiState::Connected).await,
        "recovered"
    );
    // Every change made during the outage arrives (the watch resumes from its
    // resourceVersion; the server replays the missed events).
    let caught_up = eventually(SYNC, || {
        enricher.lookup_cached(None, Some("uid-b")).is_some()
            && enricher.cache_stats().tombstones == 1
            && enricher
                .lookup_cached(None, Some("uid-c"))
                .is_some_and(|(k, _)| k.pod.labels.get("rev").map(String::as_str) == Some("2"))
    })
    .await;
    assert!(caught_up, "missed updates: {:?}", enricher.cache_stats());
    assert_eq!(metrics.api_outages.get(), 1);
    assert_eq!(metrics.api_connected.get(), 1);
    assert_eq!(
        server.count("/api/v1/pods", false),
        1,
        "resumed without a re-list"
    );
    // The pod looked up (unresolved) during the outage resolves now.
    assert_eq!(
        enricher
            .lookup(None, Some("uid-b"))
            .await
            .expect("b")
            .0
            .pod
            .name,
        "b"
    );

    // A second outage is a second count.
    server.start_outage();
    assert!(eventually(SYNC, || enricher.api_state() == ApiState::Outage).await);
    server.end_outage();
    assert!(eventually(SYNC, || enricher.api_state() == ApiState::Connected).await);
    assert_eq!(metrics.api_outages.get(), 2);
}

/// The watch falls behind the server's compaction without any error, then
/// resumes: the server answers with an ERROR watch event carrying 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_watch_event_triggers_a_relist() {
    relist_after_compaction(false).await;
}

/// Same with an HTTP 410 answer to the watch request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_http_answer_triggers_a_relist() {
    relist_after_compaction(true).await;
}

async fn relist_after_compaction(http_gone: bool) {
    let server = TestApiServer::start().await.expect("server");
    server.set_http_gone(http_gone);
    server.apply_pod(&pod("default", "a", "uid-a", NODE));
    server.apply_pod(&pod("default", "b", "uid-b", NODE));
    let (enricher, metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await);
    assert_eq!(server.count("/api/v1/pods", false), 1);
    // The pod watch must be established (subscribed to the cut below): one
    // still on its way would miss the cut and deliver the deletion itself,
    // and then no re-list is needed.
    assert!(
        eventually(SYNC, || server.watches_established(Kind::Pod) == 1).await,
        "pod watch established"
    );

    server.hold_watches(true);
    server.close_watches();
    assert!(server.delete_pod("default", "a"));
    server.apply_pod(&pod("default", "c", "uid-c", NODE));
    server.compact();
    server.hold_watches(false);

    // The deletion was compacted away: only the re-list can reveal it.
    let relisted = eventually(SYNC, || {
        enricher.cache_stats().tombstones == 1
            && enricher.lookup_cached(None, Some("uid-c")).is_some()
    })
    .await;
    assert!(relisted, "{:?}", enricher.cache_stats());
    assert!(
        enricher.lookup_cached(None, Some("uid-a")).is_some(),
        "a deleted pod stays resolvable"
    );
    assert_eq!(server.count("/api/v1/pods", false), 2, "one re-list");
    assert_eq!(metrics.relists.get(), 1);
    assert_eq!(metrics.api_outages.get(), 0, "410 is not an outage");
    assert_eq!(enricher.api_state(), ApiState::Connected);
}
