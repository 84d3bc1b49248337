//! Pod metadata enrichment against the test Kubernetes API server: the real
//! kube-rs client and kube-runtime watchers of the agent talk HTTP to
//! 127.0.0.1.

use std::{collections::BTreeMap, time::Duration};

use picket::{
    k8s::K8sEnricher,
    model::{Container, Image, K8s, K8sNamespace, MetadataStatus, Named, Pod as PodSection},
};
use picket_tests::kube_api::{
    TestApiServer, add_container, container_id, enricher_config, eventually, job, namespace, owner,
    pod, replicaset,
};

const NODE: &str = "node-a";
const SYNC: Duration = Duration::from_secs(10);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn named(n: &str) -> Option<Named> {
    Some(Named { name: n.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_created_updated_deleted_while_lookups_flow() {
    let server = TestApiServer::start().await.expect("server");
    server.apply_namespace(&namespace("shop", &[("team", "payments")]));
    let (enricher, metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await, "first list");

    // A pod on another node is never watched.
    let mut other = pod("shop", "elsewhere", "uid-other", "node-b");
    add_container(
        &mut other,
        "app",
        "nginx:1.27",
        Some(&format!("containerd://{}", container_id(9))),
    );
    server.apply_pod(&other);

    let app_id = container_id(1);
    let mut web = pod("shop", "web-1", "uid-web-1", NODE);
    web.metadata.labels = Some(labels(&[("app", "web")]));
    web.spec.as_mut().expect("spec").service_account_name = Some("web-sa".into());
    add_container(
        &mut web,
        "app",
        "nginx:1.27",
        Some(&format!("containerd://{app_id}")),
    );
    server.apply_pod(&web);

    // The event may come before the watch delivers the pod: the lookup waits.
    let (k8s, container) = enricher
        .lookup(Some(&app_id), Some("uid-web-1"))
        .await
        .expect("a pod");
    let expected = K8s {
        pod: PodSection {
            name: "web-1".into(),
            uid: "uid-web-1".into(),
            labels: labels(&[("app", "web")]),
            service_account: "web-sa".into(),
        },
        namespace: Some(K8sNamespace {
            name: "shop".into(),
            labels: labels(&[("team", "payments")]),
        }),
        node: named(NODE),
        container: named("app"),
        metadata: MetadataStatus::Resolved,
        ..K8s::default()
    };
    assert_eq!(k8s, expected);
    assert_eq!(
        container,
        Some(Container {
            id: app_id.clone(),
            runtime: "containerd".into(),
            name: "app".into(),
            image: Some(Image {
                name: "nginx:1.27".into()
            }),
            privileged: Some(false),
        })
    );

    // Update: a label changes and a sidecar starts (cri-o id).
    let sidecar_id = container_id(2);
    web.metadata.labels = Some(labels(&[("app", "web"), ("version", "2")]));
    add_container(
        &mut web,
        "proxy",
        "envoy:1.31",
        Some(&format!("cri-o://{sidecar_id}")),
    );
    // A privileged sidecar: `container.privileged` comes from its spec.
    if let Some(c) = web
        .spec
        .as_mut()
        .and_then(|s| s.containers.iter_mut().find(|c| c.name == "proxy"))
    {
        c.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
    }
    server.apply_pod(&web);
    assert!(
        eventually(SYNC, || enricher
            .lookup_cached(Some(&sidecar_id), None)
            .is_some())
        .await,
        "sidecar indexed"
    );
    let (k8s, container) = enricher
        .lookup(Some(&format!("cri-o://{sidecar_id}")), None)
        .await
        .expect("sidecar");
    assert_eq!(k8s.pod.labels, labels(&[("app", "web"), ("version", "2")]));
    assert_eq!(k8s.container, named("proxy"));
    assert_eq!(
        container.map(|c| (c.runtime, c.name, c.privileged)),
        Some(("cri-o".to_string(), "proxy".to_string(), Some(true)))
    );

    // Delete: still resolvable (tombstone) with the last known metadata.
    assert!(server.delete_pod("shop", "web-1"));
    assert!(
        eventually(SYNC, || enricher.cache_stats().tombstones == 1).await,
        "tombstoned"
    );
    let (k8s, _) = enricher
        .lookup(Some(&app_id), None)
        .await
        .expect("tombstone");
    assert_eq!(k8s.pod.name, "web-1");
    assert_eq!(k8s.metadata, MetadataStatus::Resolved);

    // The other node's pod was filtered by the server (field selector).
    assert!(enricher.lookup_cached(None, Some("uid-other")).is_none());
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    assert!(
        lists
            .iter()
            .all(|r| r.query.get("fieldSelector").map(String::as_str)
                == Some("spec.nodeName=node-a"))
    );
    assert!(
        lists.iter().filter(|r| r.is_watch()).all(|r| r
            .query
            .get("allowWatchBookmarks")
            .map(String::as_str)
            == Some("true"))
    );
    assert_eq!(
        server.count("/api/v1/pods", false),
        1,
        "one list, then watches"
    );
    assert_eq!(metrics.api_outages.get(), 0);
    assert_eq!(metrics.lookups_unresolved.get(), 0);
    assert_eq!(metrics.lookups_resolved.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_by_container_id_and_by_pod_uid_only() {
    let server = TestApiServer::start().await.expect("server");
    let (enricher, _metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await);
    let id = container_id(3);
    let mut p = pod(
        "default",
        "api-0",
        "1f2e3d4c-0000-4000-8000-000000000001",
        NODE,
    );
    add_container(
        &mut p,
        "api",
        "ghcr.io/acme/api:3",
        Some(&format!("docker://{id}")),
    );
    // A container that runs before the pod status lists it: no id yet.
    add_container(&mut p, "late", "busybox:1.36", None);
    server.apply_pod(&p);
    assert!(eventually(SYNC, || enricher.cache_stats().live_pods == 1).await);

    // By container id alone.
    let (k8s, c) = enricher
        .lookup(Some(&id), None)
        .await
        .expect("by container id");
    assert_eq!(
        (k8s.pod.name.as_str(), k8s.container.clone()),
        ("api-0", named("api"))
    );
    assert_eq!(c.map(|c| c.runtime), Some("docker".into()));

    // By pod UID only (container id not listed yet): pod metadata, no container.
    let unknown = container_id(4);
    let (k8s, c) = enricher
        .lookup(Some(&unknown), Some("1f2e3d4c-0000-4000-8000-000000000001"))
        .await
        .expect("by uid");
    assert_eq!(k8s.pod.name, "api-0");
    assert_eq!(k8s.container, None);
    assert_eq!(k8s.metadata, MetadataStatus::Resolved);
    assert_eq!(c, None);

    // The systemd cgroup driver writes the UID with underscores.
    let (k8s, _) = enricher
        .lookup(None, Some("1f2e3d4c_0000_4000_8000_000000000001"))
        .await
        .expect("systemd form");
    assert_eq!(k8s.pod.name, "api-0");

    // Neither a pod UID nor a known container: not a pod.
    assert!(
        enricher
            .lookup(Some(&container_id(5)), None)
            .await
            .is_none()
    );
    assert!(enricher.lookup(None, None).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_pod_events_after_deletion_use_the_tombstone() {
    let server = TestApiServer::start().await.expect("server");
    let mut config = enricher_config(NODE);
    config.tombstone_ttl = Duration::from_millis(1500);
    config.metadata_wait = Duration::from_millis(200);
    let (enricher, metrics) = server.start_enricher(config);
    assert!(enricher.wait_synced(SYNC).await);
    let id = container_id(6);
    let mut p = pod("batch", "once", "uid-once", NODE);
    add_container(
        &mut p,
        "main",
        "alpine:3.20",
        Some(&format!("containerd://{id}")),
    );
    server.apply_pod(&p);
    assert!(server.delete_pod("batch", "once"));
    assert!(
        eventually(SYNC, || enricher.cache_stats().tombstones == 1).await,
        "deleted"
    );

    // The pod's events are processed after its DELETED event: still attributed.
    let (k8s, c) = enricher
        .lookup(Some(&id), Some("uid-once"))
        .await
        .expect("tombstone");
    assert_eq!(
        (k8s.pod.name.as_str(), k8s.metadata),
        ("once", MetadataStatus::Resolved)
    );
    assert_eq!(
        c.and_then(|c| c.image).map(|i| i.name),
        Some("alpine:3.20".into())
    );

    // After the TTL the tombstone is purged: the UID alone, unresolved.
    assert!(
        eventually(SYNC, || enricher.cache_stats().tombstones == 0).await,
        "purged by the background task"
    );
    assert!(enricher.lookup_cached(Some(&id), None).is_none());
    let (k8s, c) = enricher
        .lookup(Some(&id), Some("uid-once"))
        .await
        .expect("uid");
    assert_eq!(
        k8s,
        K8s {
            pod: PodSection {
                uid: "uid-once".into(),
                ..PodSection::default()
            },
            node: named(NODE),
            metadata: MetadataStatus::Unresolved,
            ..K8s::default()
        }
    );
    assert_eq!(c, None);
    assert_eq!(
        (
            metrics.lookups_resolved.get(),
            metrics.lookups_unresolved.get()
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_resolve_to_deployment_and_cronjob_with_one_get_each() {
    let server = TestApiServer::start().await.expect("server");
    server.apply_replicaset(&replicaset(
        "shop",
        "web-7d4b9c",
        "rs-uid",
        Some(("web", "deploy-uid")),
    ));
    server.apply_job(&job(
        "ops",
        "backup-29123456",
        "job-uid",
        Some(("backup", "cron-uid")),
    ));
    let (enricher, metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await);

    for (i, name) in ["web-7d4b9c-aaaaa", "web-7d4b9c-bbbbb"]
        .into_iter()
        .enumerate()
    {
        let mut p = pod("shop", name, &format!("uid-web-{i}"), NODE);
        p.metadata.owner_references =
            Some(vec![owner("apps/v1", "ReplicaSet", "web-7d4b9c", "rs-uid")]);
        server.apply_pod(&p);
    }
    let mut b = pod("ops", "backup-29123456-x1", "uid-backup", NODE);
    b.metadata.owner_references =
        Some(vec![owner("batch/v1", "Job", "backup-29123456", "job-uid")]);
    server.apply_pod(&b);
    let mut db = pod("data", "db-0", "uid-db", NODE);
    db.metadata.owner_references = Some(vec![owner("apps/v1", "StatefulSet", "db", "sts-uid")]);
    server.apply_pod(&db);
    let mut ds = pod("kube-system", "agent-x", "uid-ds", NODE);
    ds.metadata.owner_references = Some(vec![owner("apps/v1", "DaemonSet", "agent", "ds-uid")]);
    server.apply_pod(&ds);
    assert!(eventually(SYNC, || enricher.cache_stats().live_pods == 5).await);

    let get = |uid: &str| enricher.lookup_cached(None, Some(uid)).expect("cached").0;
    for uid in ["uid-web-0", "uid-web-1"] {
        let k = get(uid);
        assert_eq!(
            (k.deployment, k.replicaset),
            (named("web"), named("web-7d4b9c"))
        );
    }
    let k = get("uid-backup");
    assert_eq!(
        (k.cronjob, k.job, k.deployment),
        (named("backup"), named("backup-29123456"), None)
    );
    let k = get("uid-db");
    assert_eq!((k.statefulset, k.daemonset), (named("db"), None));
    let k = get("uid-ds");
    assert_eq!((k.daemonset, k.statefulset), (named("agent"), None));

    // One GET per ReplicaSet/Job, not per pod.
    assert_eq!(
        server.count(
            "/apis/apps/v1/namespaces/shop/replicasets/web-7d4b9c",
            false
        ),
        1
    );
    assert_eq!(
        server.count("/apis/batch/v1/namespaces/ops/jobs/backup-29123456", false),
        1
    );
    assert_eq!(
        (metrics.owner_requests.get(), metrics.owner_errors.get()),
        (2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_tolerate_forbidden_and_missing_objects() {
    let server = TestApiServer::start().await.expect("server");
    server.set_forbid_owners(true);
    let (enricher, metrics) = server.start_enricher(enricher_config(NODE));
    assert!(enricher.wait_synced(SYNC).await);

    // 403 on the ReplicaSet: the Deployment name comes from the naming
    // convention (`<deployment>-<pod-template-hash>`).
    let mut p = pod("shop", "api-5f6d7-zzz", "uid-api", NODE);
    p.metadata.labels = Some(labels(&[("pod-template-hash", "5f6d7")]));
    p.metadata.owner_references = Some(vec![owner("apps/v1", "ReplicaSet", "api-5f6d7", "rs-api")]);
    server.apply_pod(&p);
    // 403 on the Job: the Job only.
    let mut j = pod("ops", "report-1-abc", "uid-report", NODE);
    j.metadata.owner_references = Some(vec![owner("batch/v1", "Job", "report-1", "job-report")]);
    server.apply_pod(&j);
    assert!(eventually(SYNC, || enricher.cache_stats().live_pods == 2).await);
    let k = enricher
        .lookup_cached(None, Some("uid-api"))
        .expect("api")
        .0;
    assert_eq!(
        (k.deployment, k.replicaset),
        (named("api"), named("api-5f6d7"))
    );
    let k = enricher
        .lookup_cached(None, Some("uid-report"))
        .expect("report")
        .0;
    assert_eq!((k.job, k.cronjob), (named("report-1"), None));

    // 404 (ReplicaSet already gone): same convention; 403/404 are cached.
    server.set_forbid_owners(false);
    let mut q = pod("shop", "api-5f6d7-yyy", "uid-api-2", NODE);
    q.metadata.labels = Some(labels(&[("pod-template-hash", "5f6d7")]));
    q.metadata.owner_references = Some(vec![owner("apps/v1", "ReplicaSet", "api-5f6d7", "rs-api")]);
    server.apply_pod(&q);
    let mut r = pod("shop", "cache-9a8b7-xxx", "uid-cache", NODE);
    r.metadata.labels = Some(labels(&[("pod-template-hash", "9a8b7")]));
    r.metadata.owner_references = Some(vec![owner(
        "apps/v1",
        "ReplicaSet",
        "cache-9a8b7",
        "rs-cache",
    )]);
    server.apply_pod(&r);
    assert!(eventually(SYNC, || enricher.cache_stats().live_pods == 4).await);
    assert_eq!(
        enricher
            .lookup_cached(None, Some("uid-api-2"))
            .expect("api-2")
            .0
            .deployment,
        named("api")
    );
    assert_eq!(
        enricher
            .lookup_cached(None, Some("uid-cache"))
            .expect("cache")
            .0
            .deployment,
        named("cache")
    );
    assert_eq!(
        server.count("/apis/apps/v1/namespaces/shop/replicasets/api-5f6d7", false),
        1,
        "403 cached"
    );
    assert_eq!(
        (metrics.owner_requests.get(), metrics.owner_errors.get()),
        (3, 3)
    );
    // Forbidden owner GETs are not an API outage.
    assert_eq!(metrics.api_outages.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_wait_resolves_late_pods_and_times_out_unknown_ones() {
    let server = TestApiServer::start().await.expect("server");
    let mut config = enricher_config(NODE);
    config.metadata_wait = Duration::from_millis(1500);
    let (enricher, metrics) = server.start_enricher(config);
    assert!(enricher.wait_synced(SYNC).await);
    let enricher = std::sync::Arc::new(enricher);

    // The event comes first; the pod appears 300 ms later, within the window.
    let e = enricher.clone();
    let waiter = tokio::spawn(async move {
        let t = tokio::time::Instant::now();
        let r = e.lookup(None, Some("uid-late")).await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.apply_pod(&pod("default", "late", "uid-late", NODE));
    let (r, waited) = waiter.await.expect("join");
    let (k8s, _) = r.expect("resolved");
    assert_eq!(
        (k8s.pod.name.as_str(), k8s.metadata),
        ("late", MetadataStatus::Resolved)
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1400),
        "waited {waited:?}"
    );

    // Never appears: unresolved after the window, UID only.
    let t = tokio::time::Instant::now();
    let (k8s, _) = enricher.lookup(None, Some("uid-never")).await.expect("uid");
    let waited = t.elapsed();
    assert_eq!(k8s.metadata, MetadataStatus::Unresolved);
    assert_eq!(k8s.pod.uid, "uid-never");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(2500),
        "waited {waited:?}"
    );
    // The next event of that pod does not wait again.
    let t = tokio::time::Instant::now();
    let (k8s, _) = enricher.lookup(None, Some("uid-never")).await.expect("uid");
    assert_eq!(k8s.metadata, MetadataStatus::Unresolved);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    assert_eq!(metrics.lookups_waited.get(), 2);
    assert_eq!(metrics.lookup_wait_timeouts.get(), 1);
    assert_eq!(
        (
            metrics.lookups_resolved.get(),
            metrics.lookups_unresolved.get()
        ),
        (1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mode_answers_at_once_without_api() {
    let enricher = K8sEnricher::disabled(NODE);
    let t = tokio::time::Instant::now();
    let (k8s, c) = enricher
        .lookup(Some(&container_id(7)), Some("uid-x"))
        .await
        .expect("pod uid");
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(
        k8s,
        K8s {
            pod: PodSection {
                uid: "uid-x".into(),
                ..PodSection::default()
            },
            node: named(NODE),
            metadata: MetadataStatus::Unresolved,
            ..K8s::default()
        }
    );
    assert_eq!(c, None);
    assert!(
        enricher
            .lookup(Some(&container_id(7)), None)
            .await
            .is_none()
    );
    assert!(!enricher.enabled());
}
