use std::{collections::HashMap, path::Path, time::Duration};

use super::*;
use crate::model::{Container, Event, EventKindName};

#[test]
fn docker_inspect_name_and_image() {
    let body = br#"{"Id":"abc","Name":"/web-1","Image":"sha256:0123","Config":{"Image":"nginx:1.27","Env":["A=1"]},"State":{"Pid":7}}"#;
    assert_eq!(
        parse_inspect(body).expect("parse"),
        ContainerMeta {
            name: "web-1".into(),
            image: "nginx:1.27".into(),
            runtime: "",
        }
    );
    // podman's compat answer may carry the name without the slash.
    let body = br#"{"Name":"db","Config":{"Image":"docker.io/library/postgres:16"}}"#;
    assert_eq!(parse_inspect(body).expect("parse").name, "db");
    assert!(parse_inspect(b"{\"Name\": 5}").is_err());
    assert!(parse_inspect(b"not json").is_err());
    assert_eq!(
        parse_inspect(b"{}").expect("empty"),
        ContainerMeta::default()
    );
}

#[test]
fn containerd_name_from_labels_else_the_id() {
    let mut c = containerd::Container {
        id: "c1".into(),
        labels: HashMap::new(),
        image: "docker.io/picket/busybox:test".into(),
    };
    assert_eq!(meta_of(&c).name, "c1");
    c.labels.insert("nerdctl/name".into(), "web".into());
    assert_eq!(meta_of(&c).name, "web");
    c.labels
        .insert("io.kubernetes.container.name".into(), "app".into());
    assert_eq!(
        meta_of(&c),
        ContainerMeta {
            name: "app".into(),
            image: "docker.io/picket/busybox:test".into(),
            runtime: "containerd",
        }
    );
}

#[test]
fn containerd_messages_round_trip_and_skip_unknown_fields() {
    use prost::Message;
    let c = containerd::Container {
        id: "x".into(),
        labels: HashMap::from([("k".into(), "v".into())]),
        image: "img".into(),
    };
    let mut buf = Vec::new();
    containerd::GetContainerResponse {
        container: Some(c.clone()),
    }
    .encode(&mut buf)
    .expect("encode");
    // Field 7 (snapshot_key) inside the container, unknown to us.
    let mut inner = Vec::new();
    c.encode(&mut inner).expect("encode");
    inner.extend_from_slice(&[0x3a, 0x02, b's', b'k']);
    let mut outer = vec![0x0a, u8::try_from(inner.len()).expect("short")];
    outer.extend_from_slice(&inner);
    let got = containerd::GetContainerResponse::decode(outer.as_slice()).expect("decode");
    assert_eq!(got.container, Some(c));
    assert!(containerd::GetContainerResponse::decode(&[0x0a, 0x05, 0x01][..]).is_err());
}

#[test]
fn ids_that_could_escape_a_url_are_refused() {
    assert!(valid_id(&"a".repeat(64)));
    assert!(valid_id("my_ctr.1-2"));
    for bad in ["", "../x", "a/b", "a?b", "a b", "a%2f", &"a".repeat(129)] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn backends_follow_the_cgroup_runtime() {
    assert_eq!(backends_for("containerd"), &[Backend::Containerd]);
    assert_eq!(backends_for("docker"), &[Backend::Docker]);
    assert_eq!(backends_for("podman"), &[Backend::Podman]);
    assert_eq!(backends_for(""), &[Backend::Containerd, Backend::Docker]);
    assert!(backends_for("cri-o").is_empty());
}

#[test]
fn cache_forgets_the_oldest_when_full() {
    let mut c = Cache::default();
    for i in 0..5 {
        c.set(&format!("c{i}"), Entry::Pending, 3);
    }
    let mut keys: Vec<_> = c.map.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["c2", "c3", "c4"]);
    // Updating an entry does not evict.
    c.set("c3", Entry::Retry(Instant::now()), 3);
    assert_eq!(c.map.len(), 3);
}

#[test]
fn config_defaults_and_unknown_fields() {
    let d = RuntimeApiConfig::default();
    assert_eq!(
        d.containerd_socket,
        Path::new("/run/containerd/containerd.sock")
    );
    assert_eq!(d.containerd_namespaces, ["k8s.io", "default", "moby"]);
    assert_eq!(d.docker_socket, Path::new("/var/run/docker.sock"));
    assert_eq!(d.podman_socket, Path::new("/run/podman/podman.sock"));
    let c: RuntimeApiConfig = serde_json::from_value(
        serde_json::json!({"docker_socket": "/tmp/d.sock", "containerd_namespaces": ["t"]}),
    )
    .expect("config");
    assert_eq!(c.docker_socket, Path::new("/tmp/d.sock"));
    assert_eq!(c.containerd_namespaces, ["t"]);
    assert_eq!(c.podman_socket, d.podman_socket);
    let e = serde_json::from_value::<RuntimeApiConfig>(serde_json::json!({"docker": 1}))
        .expect_err("unknown field");
    assert!(e.to_string().contains("docker"), "{e}");
}

#[test]
fn absent_sockets_are_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = RuntimeApiConfig {
        containerd_socket: dir.path().join("none.sock"),
        docker_socket: PathBuf::new(),
        podman_socket: dir.path().join("p.sock"),
        ..Default::default()
    };
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("p.sock")).expect("bind"));
    let c = checks(&cfg);
    assert_eq!(c.len(), 3);
    assert!(!c[0].ok && c[0].detail.contains("absent"), "{:?}", c[0]);
    assert!(!c[1].ok && c[1].detail.contains("disabled"), "{:?}", c[1]);
    assert!(!c[2].ok && c[2].detail.contains("refused"), "{:?}", c[2]);
}

fn container_event(id: &str, runtime: &str) -> Event {
    let mut ev = Event::new(EventKindName::Exec, jiff::Timestamp::now());
    ev.container = Some(Container {
        id: id.into(),
        runtime: runtime.into(),
        ..Default::default()
    });
    ev
}

/// A real HTTP/1.1 server (axum on hyper) on a Unix socket, answering
/// Docker's inspect route for one container; `delay` holds every answer.
async fn docker_api(sock: &Path, id: &'static str, delay: Duration) {
    use axum::{Router, extract::Path as UrlPath, http::StatusCode, routing::get};
    let app = Router::new().route(
        "/containers/{id}/json",
        get(move |UrlPath(asked): UrlPath<String>| async move {
            tokio::time::sleep(delay).await;
            if asked == id {
                (
                    StatusCode::OK,
                    r#"{"Id":"x","Name":"/web","Config":{"Image":"nginx:1.27"}}"#.to_owned(),
                )
            } else {
                (
                    StatusCode::NOT_FOUND,
                    r#"{"message":"No such container"}"#.to_owned(),
                )
            }
        }),
    );
    let listener = tokio::net::UnixListener::bind(sock).expect("bind");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

async fn wait_found(apis: &RuntimeApis, ev: &mut Event) {
    for _ in 0..200 {
        apis.enrich(ev);
        if ev.container.as_ref().is_some_and(|c| !c.name.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no answer: {:?}", ev.container);
}

#[tokio::test]
async fn docker_lookup_is_async_cached_and_fills_later_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("docker.sock");
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    docker_api(&sock, id, Duration::from_millis(100)).await;
    let apis = RuntimeApis::start(RuntimeApiConfig {
        containerd_socket: PathBuf::new(),
        docker_socket: sock,
        podman_socket: PathBuf::new(),
        ..Default::default()
    });
    let (lookups, found, not_found) = (
        METRICS.lookups.get(),
        METRICS.found.get(),
        METRICS.not_found.get(),
    );
    // The first event goes out at once, without the name.
    let mut first = container_event(id, "docker");
    let t = Instant::now();
    apis.enrich(&mut first);
    assert!(t.elapsed() < Duration::from_millis(50), "enrich waited");
    assert_eq!(first.container.as_ref().map(|c| c.name.as_str()), Some(""));
    let mut later = container_event(id, "docker");
    wait_found(&apis, &mut later).await;
    let c = later.container.expect("container");
    assert_eq!(c.name, "web");
    assert_eq!(c.image.map(|i| i.name).as_deref(), Some("nginx:1.27"));
    assert_eq!(c.runtime, "docker");
    // A bare id (runtime unknown from the path) gets the runtime that
    // answered; a known one is kept.
    let mut bare = container_event(id, "");
    apis.enrich(&mut bare);
    let c = bare.container.expect("container");
    assert_eq!((c.name.as_str(), c.runtime.as_str()), ("web", "docker"));

    // Unknown container: asked once, then not again before retry_secs.
    let other = "f".repeat(64);
    let mut ev = container_event(&other, "docker");
    apis.enrich(&mut ev);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        apis.inner.cache.lock().expect("lock").map.get(&other),
        Some(Entry::Retry(_))
    ));
    apis.enrich(&mut ev);
    assert_eq!(ev.container.as_ref().map(|c| c.name.as_str()), Some(""));
    assert!(matches!(
        apis.inner.cache.lock().expect("lock").map.get(&other),
        Some(Entry::Retry(_))
    ));
    // Other tests share the process-wide counters: at least ours.
    assert!(METRICS.lookups.get() >= lookups + 2);
    assert!(METRICS.found.get() > found);
    assert!(METRICS.not_found.get() > not_found);
    let text = crate::metrics::encode_text();
    assert!(text.contains("picket_runtime_api_lookups_total"), "{text}");
}

#[tokio::test]
async fn slow_runtime_times_out_and_in_flight_is_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("docker.sock");
    docker_api(&sock, "a1", Duration::from_secs(30)).await;
    let apis = RuntimeApis::start(RuntimeApiConfig {
        containerd_socket: PathBuf::new(),
        docker_socket: sock,
        podman_socket: PathBuf::new(),
        timeout_ms: 200,
        max_in_flight: 1,
        ..Default::default()
    });
    let failures = METRICS.failures.get();
    let deferred = METRICS.deferred.get();
    apis.enrich(&mut container_event("a1", "docker"));
    // The only slot is taken: the second container waits for a later event.
    apis.enrich(&mut container_event("a2", "docker"));
    assert!(METRICS.deferred.get() > deferred);
    assert!(
        !apis
            .inner
            .cache
            .lock()
            .expect("lock")
            .map
            .contains_key("a2"),
        "a deferred id is not cached"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(METRICS.failures.get() > failures, "timeout counted");
    assert!(matches!(
        apis.inner.cache.lock().expect("lock").map.get("a1"),
        Some(Entry::Retry(_))
    ));
    assert_eq!(apis.inner.in_flight.load(Ordering::Acquire), 0);
}

#[test]
fn outside_an_async_runtime_lookups_are_off_not_a_panic() {
    let apis = RuntimeApis::start(RuntimeApiConfig::default());
    let mut ev = container_event(&"a".repeat(64), "docker");
    apis.enrich(&mut ev);
    assert_eq!(ev.container.map(|c| c.name), Some(String::new()));
    assert!(apis.inner.cache.lock().expect("lock").map.is_empty());
}
