//! Containment against an API server: the requests isolate-pod, delete-pod,
//! release and the Kubernetes Events produce, and what the safety layer
//! prevents (dry-run, protected namespaces, rate limits).
//!
//! The shared test API server (`picket_tests::kube_api`) serves reads and
//! watches only; these tests need the write verbs (PATCH, DELETE, POST) with
//! their bodies, so a small recording server for exactly those paths lives
//! here.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use picket::contain::{
    ActionKind, ActionRequest, Containment, ContainmentConfig, KubeActions, Outcome, Rate,
    SafetyConfig, Target, Trigger,
};
use serde_json::{Value, json};

/// One write (or read) as the server saw it.
#[derive(Clone, Debug, PartialEq)]
struct Req {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

#[derive(Default)]
struct Store {
    pods: BTreeMap<(String, String), Value>,
    policies: BTreeMap<(String, String), Value>,
    requests: Vec<Req>,
}

type Shared = Arc<Mutex<Store>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(s: &Shared, method: &Method, path: String, headers: &HeaderMap, body: &Bytes) {
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    lock(s).requests.push(Req {
        method: method.to_string(),
        path,
        content_type,
        body,
    });
}

fn json_resp(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

fn not_found(what: &str) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404});
    json_resp(StatusCode::NOT_FOUND, &status)
}

async fn pod(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    record(
        &s,
        &method,
        format!("/api/v1/namespaces/{ns}/pods/{name}"),
        &headers,
        &body,
    );
    let mut st = lock(&s);
    let key = (ns, name.clone());
    match method.as_str() {
        "GET" => match st.pods.get(&key) {
            Some(p) => json_resp(StatusCode::OK, p),
            None => not_found(&name),
        },
        "PATCH" => {
            let Some(p) = st.pods.get_mut(&key) else {
                return not_found(&name);
            };
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(labels) = patch.pointer("/metadata/labels").and_then(Value::as_object) {
                for (k, v) in labels {
                    match v {
                        Value::Null => {
                            p["metadata"]["labels"].as_object_mut().map(|m| m.remove(k));
                        }
                        v => p["metadata"]["labels"][k] = v.clone(),
                    }
                }
            }
            json_resp(StatusCode::OK, p)
        }
        "DELETE" => match st.pods.remove(&key) {
            Some(p) => json_resp(StatusCode::OK, &p),
            None => not_found(&name),
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn policy(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    record(
        &s,
        &method,
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}"),
        &headers,
        &body,
    );
    match lock(&s).policies.get(&(ns, name.clone())) {
        Some(p) => json_resp(StatusCode::OK, p),
        None => not_found(&name),
    }
}

async fn create_policy(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    record(
        &s,
        &method,
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
        &headers,
        &body,
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
    lock(&s).policies.insert((ns, name), v.clone());
    json_resp(StatusCode::CREATED, &v)
}

async fn create_event(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    record(
        &s,
        &method,
        format!("/api/v1/namespaces/{ns}/events"),
        &headers,
        &body,
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    json_resp(StatusCode::CREATED, &v)
}

struct Server {
    store: Shared,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start() -> Self {
        let store: Shared = Arc::default();
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(pod).patch(pod).delete(pod),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
                get(policy),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                post(create_policy),
            )
            .route("/api/v1/namespaces/{ns}/events", post(create_event))
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { store, url, task }
    }

    fn add_pod(&self, ns: &str, name: &str, uid: &str, labels: Value) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        });
        lock(&self.store).pods.insert((ns.into(), name.into()), pod);
    }

    fn client(&self) -> kube::Client {
        let cfg = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(cfg).expect("client")
    }

    fn requests(&self) -> Vec<Req> {
        lock(&self.store).requests.clone()
    }

    /// Requests that change something.
    fn writes(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }
}

fn engine(server: &Server, tweak: impl FnOnce(&mut SafetyConfig)) -> Containment {
    let mut safety = SafetyConfig {
        own_cgroup: None,
        ..SafetyConfig::default()
    };
    tweak(&mut safety);
    let cfg = ContainmentConfig {
        node_name: "node-a".into(),
        safety,
        ..Default::default()
    };
    Containment::new(cfg).with_kube(KubeActions::new(server.client(), "node-a"))
}

fn request(action: ActionKind, ns: &str, pod: &str) -> ActionRequest {
    let mut r = ActionRequest::new(
        action,
        Target {
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            ..Default::default()
        },
        Trigger::Rule {
            rule: "reverse-shell".into(),
            alert_seq: 41,
        },
    );
    r.reason = "reverse shell".into();
    r
}

#[tokio::test]
async fn isolate_labels_the_pod_and_creates_the_deny_all_policy_once() {
    let server = Server::start().await;
    server.add_pod("shop", "web-1", "uid-1", json!({"app": "web"}));
    server.add_pod("shop", "web-2", "uid-2", json!({"app": "web"}));
    let engine = engine(&server, |_| {});

    let rec = engine
        .execute(request(ActionKind::IsolatePod, "shop", "web-1"))
        .await;
    assert_eq!(rec.outcome, Outcome::Succeeded, "{}", rec.message);
    assert_eq!(
        rec.message,
        "pod shop/web-1 labeled picket.io/quarantine=true; NetworkPolicy picket-quarantine created"
    );
    assert_eq!(rec.target.pod_uid.as_deref(), Some("uid-1"));
    assert_eq!(
        rec.triggered_by,
        Trigger::Rule {
            rule: "reverse-shell".into(),
            alert_seq: 41
        }
    );
    let reqs = server.requests();
    let summary: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("GET", "/api/v1/namespaces/shop/pods/web-1"),
            ("PATCH", "/api/v1/namespaces/shop/pods/web-1"),
            (
                "GET",
                "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/picket-quarantine"
            ),
            (
                "POST",
                "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies"
            ),
            ("POST", "/api/v1/namespaces/shop/events"),
        ]
    );
    assert_eq!(reqs[1].content_type, "application/merge-patch+json");
    assert_eq!(
        reqs[1].body,
        json!({"metadata": {"labels": {"picket.io/quarantine": "true"}}})
    );
    assert_eq!(
        reqs[3].body,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "picket-quarantine", "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "picket"}},
            "spec": {"podSelector": {"matchLabels": {"picket.io/quarantine": "true"}}, "policyTypes": ["Ingress", "Egress"]}
        })
    );
    let ev = &reqs[4].body;
    assert_eq!(
        ev["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "uid-1"})
    );
    assert_eq!(
        (
            ev["reason"].as_str(),
            ev["type"].as_str(),
            ev["action"].as_str()
        ),
        (
            Some("PicketContainment"),
            Some("Warning"),
            Some("isolate-pod")
        )
    );
    assert_eq!(
        ev["message"].as_str(),
        Some(
            "succeeded by rule reverse-shell (alert 41): pod shop/web-1 labeled picket.io/quarantine=true; NetworkPolicy picket-quarantine created (reason: reverse shell)"
        )
    );

    // A second pod of the namespace: the policy exists, only the label is added.
    let rec = engine
        .execute(request(ActionKind::IsolatePod, "shop", "web-2"))
        .await;
    assert_eq!(
        rec.message,
        "pod shop/web-2 labeled picket.io/quarantine=true; NetworkPolicy picket-quarantine already present"
    );
    let writes: Vec<(String, String)> = server
        .writes()
        .into_iter()
        .skip(3)
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("PATCH".into(), "/api/v1/namespaces/shop/pods/web-2".into()),
            ("POST".into(), "/api/v1/namespaces/shop/events".into()),
        ]
    );

    // Release removes the label and says so on the pod.
    let recs = engine
        .release(
            Target {
                namespace: Some("shop".into()),
                pod: Some("web-1".into()),
                ..Default::default()
            },
            None,
            Trigger::Client {
                identity: "CN=alice".into(),
            },
            "false positive".into(),
            false,
        )
        .await;
    assert_eq!(
        recs.iter()
            .map(|r| (r.action, r.outcome, r.release))
            .collect::<Vec<_>>(),
        vec![(ActionKind::IsolatePod, Outcome::Succeeded, true)]
    );
    let writes = server.writes();
    let n = writes.len();
    assert_eq!(
        (writes[n - 2].method.as_str(), writes[n - 2].path.as_str()),
        ("PATCH", "/api/v1/namespaces/shop/pods/web-1")
    );
    assert_eq!(
        writes[n - 2].body,
        json!({"metadata": {"labels": {"picket.io/quarantine": null}}})
    );
    assert_eq!(writes[n - 1].body["action"], "release-isolate-pod");
    assert_eq!(writes[n - 1].body["type"], "Normal");
    assert_eq!(engine.list_actions(10).len(), 3);
}

#[tokio::test]
async fn delete_sends_a_conditional_delete_with_the_grace_period() {
    let server = Server::start().await;
    server.add_pod("shop", "web-1", "uid-1", json!({}));
    let engine = engine(&server, |_| {});
    let mut req = request(ActionKind::DeletePod, "shop", "web-1");
    req.grace_period_seconds = Some(5);
    let rec = engine.execute(req).await;
    assert_eq!(rec.outcome, Outcome::Succeeded, "{}", rec.message);
    assert_eq!(rec.message, "pod shop/web-1 deleted (grace period 5s)");
    let writes = server.writes();
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("DELETE", "/api/v1/namespaces/shop/pods/web-1")
    );
    assert_eq!(
        writes[0].body,
        json!({"gracePeriodSeconds": 5, "preconditions": {"uid": "uid-1"}})
    );
    assert_eq!(
        (writes[1].method.as_str(), writes[1].body["action"].as_str()),
        ("POST", Some("delete-pod"))
    );
    assert_eq!(writes.len(), 2);

    // The default grace period applies when the request has none; a missing
    // pod fails without any write.
    let rec = engine
        .execute(request(ActionKind::DeletePod, "shop", "web-1"))
        .await;
    assert_eq!(
        (rec.outcome, rec.message.as_str()),
        (Outcome::Failed, "pod shop/web-1 not found")
    );
    assert_eq!(server.writes().len(), 2);
}

#[tokio::test]
async fn dry_run_produces_no_write() {
    let server = Server::start().await;
    server.add_pod("shop", "web-1", "uid-1", json!({}));
    // Per request.
    let engine1 = engine(&server, |_| {});
    let mut req = request(ActionKind::DeletePod, "shop", "web-1");
    req.dry_run = true;
    let rec = engine1.execute(req).await;
    assert_eq!((rec.outcome, rec.dry_run), (Outcome::DryRun, true));
    assert_eq!(rec.message, "dry run: would delete-pod pod shop/web-1");
    // Global.
    let engine2 = engine(&server, |s| s.dry_run = true);
    let rec = engine2
        .execute(request(ActionKind::IsolatePod, "shop", "web-1"))
        .await;
    assert_eq!(rec.outcome, Outcome::DryRun);
    assert_eq!(server.writes(), vec![], "dry runs only read");
    assert!(server.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn protected_namespaces_and_labels_are_refused() {
    let server = Server::start().await;
    server.add_pod(
        "kube-system",
        "coredns-1",
        "uid-k",
        json!({"k8s-app": "kube-dns"}),
    );
    server.add_pod("payments", "db-0", "uid-d", json!({"tier": "db"}));
    let engine = engine(&server, |s| {
        s.protected_namespaces.insert("payments-prod".into());
        s.protected_labels.push(("tier".into(), Some("db".into())));
    });
    let rec = engine
        .execute(request(ActionKind::DeletePod, "kube-system", "coredns-1"))
        .await;
    assert_eq!(
        (rec.outcome, rec.refusal.as_deref()),
        (Outcome::Refused, Some("protected_namespace"))
    );
    assert_eq!(rec.message, "namespace kube-system is protected");
    let rec = engine
        .execute(request(ActionKind::IsolatePod, "payments", "db-0"))
        .await;
    assert_eq!(
        (rec.outcome, rec.refusal.as_deref()),
        (Outcome::Refused, Some("protected_label"))
    );
    assert_eq!(rec.message, "pod label tier=db is protected");
    assert_eq!(server.writes(), vec![], "refusals write nothing");
}

#[tokio::test]
async fn rate_limit_stops_the_n_plus_first_action() {
    let server = Server::start().await;
    for i in 0..4 {
        server.add_pod("shop", &format!("web-{i}"), &format!("uid-{i}"), json!({}));
    }
    let engine = engine(&server, |s| {
        s.per_rule = Some(Rate::new(3, Duration::from_secs(3600)))
    });
    for i in 0..3 {
        let rec = engine
            .execute(request(ActionKind::DeletePod, "shop", &format!("web-{i}")))
            .await;
        assert_eq!(rec.outcome, Outcome::Succeeded, "{i}: {}", rec.message);
    }
    let rec = engine
        .execute(request(ActionKind::DeletePod, "shop", "web-3"))
        .await;
    assert_eq!(
        (rec.outcome, rec.refusal.as_deref()),
        (Outcome::Refused, Some("rate_limited_rule"))
    );
    assert_eq!(rec.message, "rate limit of rule reverse-shell reached");
    let deletes = server
        .writes()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 3);
    // An on-demand request (no rule) is not bound by the rule's bucket.
    let mut req = request(ActionKind::DeletePod, "shop", "web-3");
    req.trigger = Trigger::Client {
        identity: "CN=alice".into(),
    };
    assert_eq!(engine.execute(req).await.outcome, Outcome::Succeeded);
    let text = picket::metrics::encode_text();
    assert!(
        text.contains(
            "picket_containment_refusals_total{action=\"delete-pod\",reason=\"rate_limited_rule\"}"
        ),
        "{text}"
    );
}

/// Issue 16 item 4: after an agent restart the isolations of this node's
/// pods are read back from the API server (the quarantine label the agent
/// placed), listed as restored, and `release` lifts them.
#[tokio::test]
async fn isolations_are_restored_from_the_api_server_and_releasable() {
    use picket::contain::scopes::PodFacts;
    let server = Server::start().await;
    let quarantined = json!({"app": "web", "picket.io/quarantine": "true"});
    server.add_pod("shop", "web-9", "uid-9", quarantined);
    server.add_pod("shop", "web-8", "uid-8", json!({"app": "web"}));
    let engine = engine(&server, |_| {});
    let facts = |name: &str, uid: &str, quarantined: bool| PodFacts {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        labels: [("app".to_string(), "web".to_string())]
            .into_iter()
            .chain(quarantined.then(|| ("picket.io/quarantine".to_string(), "true".to_string())))
            .collect(),
    };
    let pods = vec![
        facts("web-9", "uid-9", true),
        facts("web-8", "uid-8", false),
    ];
    let recs = engine.restore_isolations(&pods).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(
        (r.action, r.outcome, r.restored, r.release),
        (ActionKind::IsolatePod, Outcome::Succeeded, true, false)
    );
    assert_eq!(
        r.message,
        "restored after an agent restart: pod shop/web-9 carries picket.io/quarantine=true (isolated)"
    );
    assert_eq!(r.target.pod_uid.as_deref(), Some("uid-9"));
    assert_eq!(r.triggered_by, Trigger::Agent);
    // Restoring is no write, and a second pass finds nothing new.
    assert_eq!(server.writes(), vec![]);
    assert_eq!(engine.restore_isolations(&pods).await, vec![]);
    let listed = engine.list_actions(10);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].restored);
    let json = serde_json::to_value(&listed[0]).expect("json");
    assert_eq!(json["restored"], true);

    let recs = engine
        .release(
            Target {
                namespace: Some("shop".into()),
                pod: Some("web-9".into()),
                ..Default::default()
            },
            Some(ActionKind::IsolatePod),
            Trigger::Client {
                identity: "cn=alice".into(),
            },
            "INC-4 done".into(),
            false,
        )
        .await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].outcome, Outcome::Succeeded, "{}", recs[0].message);
    assert_eq!(
        recs[0].message,
        "pod shop/web-9: label picket.io/quarantine removed"
    );
    let patches: Vec<Req> = server
        .writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, "/api/v1/namespaces/shop/pods/web-9");
    assert_eq!(
        patches[0].body,
        json!({"metadata": {"labels": {"picket.io/quarantine": null}}})
    );
}
