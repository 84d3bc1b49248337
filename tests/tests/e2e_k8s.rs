//! End-to-end, real kernel: a process in a (fake) container whose cgroup
//! path carries a pod UID gets its pod, namespace, workload and container
//! metadata in `picket run --events` output, from the test Kubernetes API
//! server (`--kubernetes on --kubeconfig FILE --node-name NODE`). Root only.

use std::{collections::BTreeMap, time::Duration};

use picket::model::{EventKindName, MetadataStatus, Named};
use picket_tests::{
    container::FakeContainer,
    kernel_test,
    kube_api::{TestApiServer, add_container, namespace, owner, pod, replicaset},
    run::{NODE, PicketRun, RunOptions},
};

const WAIT: Duration = Duration::from_secs(20);

fn named(n: &str) -> Option<Named> {
    Some(Named { name: n.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_workload_metadata_in_picket_run_events() {
    let t = kernel_test!(pod_and_workload_metadata_in_picket_run_events);
    let server = TestApiServer::start().await.expect("test API server");
    server.apply_namespace(&namespace("shop", &[("team", "payments")]));
    server.apply_replicaset(&replicaset(
        "shop",
        "web-7d9f8",
        "uid-rs-web",
        Some(("web", "uid-deploy-web")),
    ));
    let pod_uid = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
    let id = "feed5eed".repeat(8);
    let ctr = FakeContainer::start("e2e-k8s", pod_uid, &id, "exec /bin/sleep 1000");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    // The blocking waits below run on the test's own thread; the API server
    // is served by the runtime's worker threads meanwhile.
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        events: true,
        extra_args: vec![
            "--kubernetes".into(),
            "on".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            // Generous: the pod arrives through the watch while the event waits.
            "--k8s-metadata-wait".into(),
            "10s".into(),
        ],
        ..Default::default()
    });

    // The kubelet creates the pod after the agent started: it reaches the
    // agent through the watch, not the initial list.
    let mut web = pod("shop", "web-7d9f8-x2k4q", pod_uid, NODE);
    web.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    web.metadata.owner_references = Some(vec![owner(
        "apps/v1",
        "ReplicaSet",
        "web-7d9f8",
        "uid-rs-web",
    )]);
    web.spec.as_mut().expect("spec").service_account_name = Some("web-sa".into());
    add_container(
        &mut web,
        "app",
        "registry.example/shop/web:1.4.2",
        Some(&format!("containerd://{id}")),
    );
    server.apply_pod(&web);

    let mut exec = ctr.exec("/bin/echo", &["picket-k8s-e2e"]);
    exec.stdout(std::process::Stdio::null());
    let status = exec.status().expect("kubectl-exec-like nsenter");
    assert!(status.success());

    let ev = picket.wait_event("exec of echo in the pod", WAIT, |e| {
        e.kind() == EventKindName::Exec && e.process.command_args == ["/bin/echo", "picket-k8s-e2e"]
    });
    let k = ev.k8s.as_ref().expect("k8s section");
    assert_eq!(k.metadata, MetadataStatus::Resolved, "{k:?}");
    assert_eq!(k.pod.name, "web-7d9f8-x2k4q");
    assert_eq!(k.pod.uid, pod_uid);
    assert_eq!(k.pod.service_account, "web-sa");
    assert_eq!(
        k.pod.labels,
        BTreeMap::from([("app".to_string(), "web".to_string())])
    );
    let ns = k.namespace.as_ref().expect("namespace");
    assert_eq!(ns.name, "shop");
    assert_eq!(
        ns.labels,
        BTreeMap::from([("team".to_string(), "payments".to_string())])
    );
    assert_eq!(k.node, named(NODE));
    assert_eq!(
        k.deployment,
        named("web"),
        "workload via the ReplicaSet owner"
    );
    assert_eq!(k.replicaset, named("web-7d9f8"));
    assert_eq!(k.container, named("app"));
    assert_eq!((k.statefulset.as_ref(), k.job.as_ref()), (None, None));
    let c = ev.container.as_ref().expect("container");
    assert_eq!(c.id, id);
    assert_eq!(c.name, "app");
    assert_eq!(
        c.image.as_ref().map(|i| i.name.as_str()),
        Some("registry.example/shop/web:1.4.2")
    );
    // From the pod spec (no securityContext): not privileged, and known.
    assert_eq!(c.privileged, Some(false));

    // Alerts carry the same metadata: the exec is a session from outside.
    let alert = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod"
            && a.event.process.command_args == ["/bin/echo", "picket-k8s-e2e"]
    });
    assert_eq!(alert.event.k8s, ev.k8s);
    assert!(
        alert
            .message
            .contains("(pod shop/web-7d9f8-x2k4q): /bin/echo picket-k8s-e2e"),
        "{}",
        alert.message
    );
    drop(picket);
    drop(server);
    t.done();
}
