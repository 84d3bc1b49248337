//! A test Kubernetes API server on 127.0.0.1 that speaks the real REST
//! protocol, so the agent's real kube-rs client and kube-runtime watchers can
//! be tested without a cluster.
//!
//! What it implements (enough for Picket's enricher, and faithful where the
//! client's behaviour depends on it):
//! - `GET /api/v1/pods` and `GET /api/v1/namespaces`: lists with
//!   `resourceVersion`, `limit`/`continue` paging, `fieldSelector`
//!   (`spec.nodeName`, `metadata.name`, `metadata.namespace`) and
//!   `labelSelector` (`=`, `==`, `!=`, exists, `!key`, `in`, `notin`);
//! - the same paths with `?watch=true`: chunked streams of JSON WatchEvents
//!   (ADDED/MODIFIED/DELETED, BOOKMARK when `allowWatchBookmarks=true`),
//!   replayed from an event history after `resourceVersion`, ended after
//!   `timeoutSeconds`; a resourceVersion older than the compaction floor gets
//!   an ERROR event carrying a `410 Gone` Status (what a real API server does),
//!   or an HTTP 410 answer when [`TestApiServer::set_http_gone`] is on;
//! - `GET` and `PATCH` (JSON merge patch, RFC 7386, as `kubectl patch
//!   --type merge` and kube's `Patch::Merge` send it) of
//!   `/api/v1/namespaces/{ns}/pods/{name}`: a patch stores the pod with a new
//!   resourceVersion and sends MODIFIED to the watches;
//! - `GET /apis/apps/v1/namespaces/{ns}/replicasets/{name}` and
//!   `GET /apis/batch/v1/namespaces/{ns}/jobs/{name}` (404/403 Status answers);
//! - fault injection: outages (503 for every request, open watches aborted),
//!   cut watches, compaction; and a record of every request.
//!
//! Objects are k8s-openapi types serialized with serde, as a real server's
//! JSON. Use [`TestApiServer::client`] for an in-process kube `Client`, or
//! [`TestApiServer::write_kubeconfig`] for a `picket run --kubeconfig FILE`
//! subprocess.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        batch::v1::Job,
        core::v1::{Container, ContainerStatus, Namespace, Pod, PodSpec, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use picket::k8s::{K8sConfig, K8sEnricher, K8sMetrics};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// Kinds the server stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    ReplicaSet,
    Job,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Namespace => "v1",
            Kind::ReplicaSet => "apps/v1",
            Kind::Job => "batch/v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl RecordedRequest {
    /// A `?watch=true` request.
    pub fn is_watch(&self) -> bool {
        self.query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1")
    }
}

/// A change, as stored in the history and sent on watches.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: Kind,
    event: &'static str,
    object: Value,
}

type Key = (Kind, String, String);

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    floor: u64,
    outage: bool,
    http_gone: bool,
    forbid_owners: bool,
    requests: Vec<RecordedRequest>,
    /// Watch streams set up so far, per kind (subscribed to changes and cuts).
    watches_established: BTreeMap<Kind, usize>,
}

/// How open watches are told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// End the chunked body normally (like a server-side watch timeout).
    Close,
    /// Abort the connection mid-stream (like a crashed API server).
    Abort,
}

struct Shared {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    cuts: broadcast::Sender<Cut>,
    /// While true, watch requests are held (not answered) until released.
    hold: tokio::sync::watch::Sender<bool>,
    bookmark_interval: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Settings of the test server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Interval of BOOKMARK events on idle watches that asked for them.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_millis(500),
        }
    }
}

/// The running server. Dropping it stops serving.
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.shared.cuts.send(Cut::Abort);
    }
}

impl TestApiServer {
    /// Binds 127.0.0.1 on a free port and serves in a background task.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 100,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: 0,
                outage: false,
                http_gone: false,
                forbid_owners: false,
                requests: Vec::new(),
                watches_established: BTreeMap::new(),
            }),
            changes: broadcast::channel(1 << 16).0,
            cuts: broadcast::channel(16).0,
            hold: tokio::sync::watch::channel(false).0,
            bookmark_interval: options.bookmark_interval,
        });
        let app = Router::new()
            .route("/api/v1/pods", get(list_or_watch_pods))
            .route("/api/v1/namespaces", get(list_or_watch_namespaces))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).patch(patch_pod),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
                get(get_replicaset),
            )
            .route("/apis/batch/v1/namespaces/{ns}/jobs/{name}", get(get_job))
            .fallback(not_found)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "test API server stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client configuration for this server. The client's own retry
    /// layer is off so tests see every failure the watcher sees.
    pub fn kube_config(&self) -> kube::Config {
        let uri = self
            .url()
            .parse()
            .unwrap_or_else(|e| panic!("URL of the test server: {e}"));
        let mut config = kube::Config::new(uri);
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(2));
        config
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config())
            .unwrap_or_else(|e| panic!("kube client for the test server: {e}"))
    }

    /// Starts Picket's enricher against this server with private metrics
    /// (so parallel tests can assert exact counts). This is the way to run
    /// the enricher against the test server from any test.
    pub fn start_enricher(&self, config: K8sConfig) -> (K8sEnricher, K8sMetrics) {
        let metrics = K8sMetrics::unregistered();
        let enricher =
            K8sEnricher::start_with_kube_config(config, self.kube_config(), metrics.clone())
                .unwrap_or_else(|e| panic!("enricher for the test server: {e}"));
        (enricher, metrics)
    }

    /// Writes a kubeconfig pointing at this server (for `picket run --kubeconfig`).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    fn store<T: serde::Serialize>(&self, kind: Kind, obj: &T) -> Value {
        let mut value =
            serde_json::to_value(obj).unwrap_or_else(|e| panic!("serialize {}: {e}", kind.name()));
        let mut g = self.shared.lock();
        g.rv += 1;
        let rv = g.rv;
        let meta = &mut value["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        let ns = match kind {
            Kind::Namespace => String::new(),
            _ => {
                if meta.get("namespace").and_then(Value::as_str).is_none() {
                    meta["namespace"] = json!("default");
                }
                meta["namespace"].as_str().unwrap_or("default").to_string()
            }
        };
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let event = if g.objects.insert((kind, ns, name), value.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let change = Change {
            rv,
            kind,
            event,
            object: value.clone(),
        };
        g.history.push_back(change.clone());
        // Sent under the lock so watchers see changes in resourceVersion order.
        let _ = self.shared.changes.send(change);
        value
    }

    fn remove(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let mut g = self.shared.lock();
        let Some(mut value) = g.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            return false;
        };
        g.rv += 1;
        let rv = g.rv;
        value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change {
            rv,
            kind,
            event: "DELETED",
            object: value,
        };
        g.history.push_back(change.clone());
        let _ = self.shared.changes.send(change);
        true
    }

    /// Creates or updates a pod (ADDED / MODIFIED). Namespace defaults to `default`.
    pub fn apply_pod(&self, pod: &Pod) {
        self.store(Kind::Pod, pod);
    }

    /// Deletes a pod (DELETED); false when it did not exist.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        self.remove(Kind::Pod, namespace, name)
    }

    pub fn apply_namespace(&self, ns: &Namespace) {
        self.store(Kind::Namespace, ns);
    }

    pub fn apply_replicaset(&self, rs: &ReplicaSet) {
        self.store(Kind::ReplicaSet, rs);
    }

    pub fn apply_job(&self, job: &Job) {
        self.store(Kind::Job, job);
    }

    /// Forgets the event history: watches resuming from an older
    /// resourceVersion get `410 Gone` and must re-list.
    pub fn compact(&self) {
        let mut g = self.shared.lock();
        g.floor = g.rv;
        g.history.clear();
    }

    /// Answer watches from a too-old resourceVersion with HTTP 410 instead of
    /// an ERROR watch event.
    pub fn set_http_gone(&self, on: bool) {
        self.shared.lock().http_gone = on;
    }

    /// Answer ReplicaSet/Job GETs with 403 Forbidden (an RBAC without them).
    pub fn set_forbid_owners(&self, on: bool) {
        self.shared.lock().forbid_owners = on;
    }

    /// Starts an outage: open watches are aborted mid-stream and every request
    /// gets 503 until [`end_outage`](Self::end_outage).
    pub fn start_outage(&self) {
        self.shared.lock().outage = true;
        let _ = self.shared.cuts.send(Cut::Abort);
    }

    pub fn end_outage(&self) {
        self.shared.lock().outage = false;
    }

    /// Ends all open watch streams cleanly (clients resume from their
    /// last resourceVersion).
    pub fn close_watches(&self) {
        let _ = self.shared.cuts.send(Cut::Close);
    }

    /// Holds new watch requests unanswered until released (with
    /// [`close_watches`](Self::close_watches) and [`compact`](Self::compact),
    /// this makes a client fall behind the compaction without any error).
    pub fn hold_watches(&self, on: bool) {
        self.shared.hold.send_replace(on);
    }

    /// Watch streams of `kind` established so far: subscribed to changes
    /// and to [`close_watches`](Self::close_watches) cuts. A request counted by
    /// [`count`](Self::count) may still be on its way there; tests that cut
    /// watches wait for this instead.
    pub fn watches_established(&self, kind: Kind) -> usize {
        self.shared
            .lock()
            .watches_established
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// The stored pod as the server would serve it, if there is one.
    pub fn pod_json(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(Kind::Pod, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests for `path` (lists and watches separately).
    pub fn count(&self, path: &str, watch: bool) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path && r.is_watch() == watch)
            .count()
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn not_found(uri: Uri, State(s): State<Arc<Shared>>) -> Response {
    record(&s, &uri, &HashMap::new());
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            uri.path()
        ),
    )
}

fn record(s: &Shared, uri: &Uri, query: &HashMap<String, String>) -> bool {
    let mut g = s.lock();
    g.requests.push(RecordedRequest {
        method: "GET".into(),
        path: uri.path().to_string(),
        query: query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
    g.outage
}

async fn get_pod(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    get_one(&s, &uri, Kind::Pod, "pods", ns, name)
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else
/// replaces the target.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

async fn patch_pod(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let outage = {
        let mut g = s.lock();
        g.requests.push(RecordedRequest {
            method: "PATCH".into(),
            path: uri.path().to_string(),
            query: BTreeMap::new(),
        });
        g.outage
    };
    if outage {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the test server applies merge patches only, not {ctype:?}"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid JSON patch");
    };
    let mut g = s.lock();
    let key = (Kind::Pod, ns.clone(), name.clone());
    let Some(mut pod) = g.objects.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        );
    };
    merge_patch(&mut pod, &patch);
    g.rv += 1;
    let rv = g.rv;
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    g.objects.insert(key, pod.clone());
    let change = Change {
        rv,
        kind: Kind::Pod,
        event: "MODIFIED",
        object: pod.clone(),
    };
    g.history.push_back(change.clone());
    // Sent under the lock so watchers see changes in resourceVersion order.
    let _ = s.changes.send(change);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        pod.to_string(),
    )
        .into_response()
}

async fn get_replicaset(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    get_one(&s, &uri, Kind::ReplicaSet, "replicasets.apps", ns, name)
}

async fn get_job(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    get_one(&s, &uri, Kind::Job, "jobs.batch", ns, name)
}

fn get_one(
    s: &Shared,
    uri: &Uri,
    kind: Kind,
    resource: &str,
    ns: String,
    name: String,
) -> Response {
    if record(s, uri, &HashMap::new()) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let g = s.lock();
    if g.forbid_owners && kind != Kind::Pod {
        let msg = format!(
            "{resource} \"{name}\" is forbidden: User \"system:serviceaccount:picket:picket\" cannot get resource in the namespace \"{ns}\""
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &msg);
    }
    match g.objects.get(&(kind, ns, name.clone())) {
        Some(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{resource} \"{name}\" not found"),
        ),
    }
}

async fn list_or_watch_pods(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&s, &uri, Kind::Pod, q).await
}

async fn list_or_watch_namespaces(
    uri: Uri,
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&s, &uri, Kind::Namespace, q).await
}

/// Parsed `fieldSelector` + `labelSelector`.
struct Selectors {
    fields: Vec<(String, bool, String)>,
    labels: Vec<LabelReq>,
}

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

impl Selectors {
    fn parse(kind: Kind, q: &HashMap<String, String>) -> Result<Self, String> {
        let mut fields = Vec::new();
        for part in split_top(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            let (key, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid selector: '{part}'"));
            };
            let supported = match kind {
                Kind::Pod => {
                    ["metadata.name", "metadata.namespace", "spec.nodeName"].contains(&key)
                }
                _ => ["metadata.name"].contains(&key),
            };
            if !supported {
                return Err(format!("field label not supported: {key}"));
            }
            fields.push((key.to_string(), eq, value.to_string()));
        }
        let mut labels = Vec::new();
        for part in split_top(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
            let set = |v: &str| -> Vec<String> {
                v.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .collect()
            };
            let req = if let Some((k, v)) = part.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(v))
            } else if let Some((k, v)) = part.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(v))
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::Ne(k.into(), v.into())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(k.into(), v.into())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(k.into(), v.into())
            } else if let Some(k) = part.strip_prefix('!') {
                LabelReq::Absent(k.into())
            } else {
                LabelReq::Exists(part.into())
            };
            labels.push(req);
        }
        Ok(Self { fields, labels })
    }

    fn matches(&self, obj: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|(key, eq, want)| {
            let got = match key.as_str() {
                "metadata.name" => obj["metadata"]["name"].as_str(),
                "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
                "spec.nodeName" => obj["spec"]["nodeName"].as_str(),
                _ => None,
            }
            .unwrap_or("");
            (got == want) == *eq
        });
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::Absent(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        });
        fields_ok && labels_ok
    }
}

async fn list_or_watch(
    s: &Arc<Shared>,
    uri: &Uri,
    kind: Kind,
    q: HashMap<String, String>,
) -> Response {
    let is_watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    if is_watch {
        let mut hold = s.hold.subscribe();
        // Err only when the server is gone.
        let _ = hold.wait_for(|held| !*held).await;
    }
    if record(s, uri, &q) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let sel = match Selectors::parse(kind, &q) {
        Ok(sel) => sel,
        Err(msg) => return status(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    if is_watch {
        watch(s, kind, &q, sel)
    } else {
        list(s, kind, &q, &sel)
    }
}

fn list(s: &Shared, kind: Kind, q: &HashMap<String, String>, sel: &Selectors) -> Response {
    let g = s.lock();
    // continue token: "<list resourceVersion>:<offset>"
    let (rv, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            match parsed {
                Some(p) => p,
                None => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "invalid continue token",
                    );
                }
            }
        }
        None => (g.rv, 0),
    };
    let matching: Vec<&Value> = g
        .objects
        .iter()
        .filter(|((k, _, _), v)| *k == kind && sel.matches(v))
        .map(|(_, v)| v)
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(matching.len());
    let items: Vec<&Value> = matching
        .get(offset..end)
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if end < matching.len() {
        metadata["continue"] = json!(format!("{rv}:{end}"));
        metadata["remainingItemCount"] = json!(matching.len() - end);
    }
    let body = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(s: &Arc<Shared>, kind: Kind, q: &HashMap<String, String>, sel: Selectors) -> Response {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800),
    );
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    // Subscribe before reading the state so no change falls in between.
    let mut changes = s.changes.subscribe();
    let mut cuts = s.cuts.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
    let mut first: Vec<Bytes> = Vec::new();
    let start_rv;
    {
        let mut g = s.lock();
        // An outage that started after `record` but before the subscription
        // above would otherwise leave this watch open.
        if g.outage {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            );
        }
        match from {
            Some(rv) if rv < g.floor => {
                let msg = format!("too old resource version: {rv} ({})", g.floor);
                if g.http_gone {
                    return status(StatusCode::GONE, "Expired", &msg);
                }
                let err = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": msg, "reason": "Expired", "code": 410,
                });
                first.push(event_line("ERROR", &err));
                start_rv = u64::MAX;
            }
            Some(rv) => {
                *g.watches_established.entry(kind).or_default() += 1;
                for c in g
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && c.kind == kind && sel.matches(&c.object))
                {
                    first.push(event_line(c.event, &c.object));
                }
                start_rv = g.rv;
            }
            None => {
                *g.watches_established.entry(kind).or_default() += 1;
                for ((k, _, _), v) in &g.objects {
                    if *k == kind && sel.matches(v) {
                        first.push(event_line("ADDED", v));
                    }
                }
                start_rv = g.rv;
            }
        }
    }
    let interval = s.bookmark_interval;
    tokio::spawn(async move {
        for line in first {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if start_rv == u64::MAX {
            return;
        }
        let mut seen = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                // Cuts first: a cut sent before a change must end the stream
                // before that change is sent on it (a test that closes the
                // watches and then changes objects relies on it). Unbiased,
                // select! may pick the change when both are ready.
                biased;
                cut = cuts.recv() => {
                    if let Ok(Cut::Abort) = cut {
                        let _ = tx.send(Err(std::io::Error::other("connection aborted by the test"))).await;
                    }
                    return;
                }
                _ = &mut deadline => return,
                change = changes.recv() => match change {
                    Ok(c) => {
                        if c.rv <= seen { continue; }
                        seen = c.rv;
                        if c.kind != kind || !sel.matches(&c.object) { continue; }
                        event_line(c.event, &c.object)
                    }
                    // Too slow a reader: end the stream, the client resumes from its last version.
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    if !bookmarks { continue; }
                    let obj = json!({ "kind": kind.name(), "apiVersion": kind.api_version(), "metadata": { "resourceVersion": seen.to_string() } });
                    event_line("BOOKMARK", &obj)
                }
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        })
}

/// Enricher settings for tests: enabled, fast back-off (50 ms .. 400 ms).
pub fn enricher_config(node: &str) -> K8sConfig {
    K8sConfig {
        enabled: true,
        node_name: node.into(),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        owner_timeout: Duration::from_secs(2),
        ..K8sConfig::default()
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns
/// whether it held (tests wait for watch events to be applied).
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A 64-hex container id made from `n` (as the runtime would create).
pub fn container_id(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

// ---- object builders for tests ----

/// A running pod on `node` with no containers yet.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            service_account_name: Some("default".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

/// Adds a container to the spec and, with `container_id` (`containerd://<hex>`), a running status.
pub fn add_container(pod: &mut Pod, name: &str, image: &str, container_id: Option<&str>) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.containers.push(Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    });
    if let Some(id) = container_id {
        let status = pod.status.get_or_insert_with(Default::default);
        status
            .container_statuses
            .get_or_insert_with(Vec::new)
            .push(ContainerStatus {
                name: name.into(),
                image: image.into(),
                image_id: String::new(),
                container_id: Some(id.into()),
                ready: true,
                ..Default::default()
            });
    }
}

/// A controller owner reference.
pub fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A ReplicaSet, optionally owned by a Deployment `(name, uid)`.
pub fn replicaset(
    namespace: &str,
    name: &str,
    uid: &str,
    deployment: Option<(&str, &str)>,
) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            owner_references: deployment.map(|(n, u)| vec![owner("apps/v1", "Deployment", n, u)]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A Job, optionally owned by a CronJob `(name, uid)`.
pub fn job(namespace: &str, name: &str, uid: &str, cronjob: Option<(&str, &str)>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            owner_references: cronjob.map(|(n, u)| vec![owner("batch/v1", "CronJob", n, u)]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A namespace with labels.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("ns-{name}")),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}
