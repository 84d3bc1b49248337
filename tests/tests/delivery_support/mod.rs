//! Helpers shared by the delivery integration tests: alerts, certificates
//! generated at run time with rcgen, a delivery config on a temp dir.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picket::delivery::DeliveryConfig;
use picket::delivery::spool::{FsyncPolicy, SpoolConfig};
use picket::delivery::tls::{ClientTls, ServerTls};
use picket::model::{Alert, Event, EventKindName, K8s, K8sNamespace, Pod, RuleRef, Severity};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// An alert of `rule` at `severity` in pod `ns/pod` with `labels`.
pub fn alert(
    rule: &str,
    severity: Severity,
    ns: &str,
    labels: &[(&str, &str)],
    msg: &str,
) -> Alert {
    let t: jiff::Timestamp = "2026-03-04T05:06:07.000000123Z".parse().expect("time");
    let mut ev = Event::new(EventKindName::Exec, t);
    ev.host.name = "node-a".into();
    ev.process.pid = 4242;
    ev.process.executable.path = "/bin/sh".into();
    ev.process.executable.name = "sh".into();
    ev.process.command_line = "sh -c id".into();
    ev.process.command_args = vec!["sh".into(), "-c".into(), "id".into()];
    ev.k8s = Some(K8s {
        pod: Pod {
            name: format!("{ns}-pod"),
            uid: "0f1e2d3c-0000-4000-8000-000000000001".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            service_account: String::new(),
        },
        namespace: Some(K8sNamespace {
            name: ns.into(),
            labels: BTreeMap::new(),
        }),
        ..Default::default()
    });
    Alert {
        seq: 0,
        time: "2026-03-04T05:06:08Z".parse().expect("time"),
        severity,
        rule: RuleRef {
            id: rule.into(),
            name: format!("Rule {rule}"),
            tags: vec!["mitre:T1059".into()],
        },
        message: msg.into(),
        event: ev,
    }
}

/// A delivery config with only the spool, in `dir`.
pub fn config(dir: &Path) -> DeliveryConfig {
    DeliveryConfig {
        spool: SpoolConfig {
            dir: dir.join("spool"),
            max_total_bytes: 8 << 20,
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Never,
        },
        host_name: Some("node-a".into()),
        node_name: Some("node-a".into()),
        shutdown_timeout_ms: Some(2000),
        ..Default::default()
    }
}

/// PEM files of a test PKI.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by a different CA.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, cn);
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca1 = ca("picket test CA");
        let rogue = ca("rogue CA");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca1.pem()).expect("write ca");
        let (server_cert, server_key) = leaf(
            &ca1,
            "picket-agent",
            &["localhost", "127.0.0.1"],
            dir,
            "server",
        );
        let (client_cert, client_key) = leaf(
            &ca1,
            "soc-reader",
            &["soc-reader.example.test"],
            dir,
            "client",
        );
        let (rogue_cert, rogue_key) =
            leaf(&rogue, "intruder", &["intruder.example.test"], dir, "rogue");
        Self {
            dir: dir.to_owned(),
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            rogue_cert,
            rogue_key,
        }
    }

    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: self.ca.clone(),
        }
    }

    pub fn client(&self) -> ClientTls {
        ClientTls {
            ca: Some(self.ca.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
            domain: Some("localhost".into()),
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// An OTLP LogsService receiver on loopback that records every accepted
/// request; while `accept` is false it answers UNAVAILABLE (a collector that
/// is overloaded or restarting) and records nothing.
pub mod otlp_receiver {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use tokio::sync::oneshot;
    use tonic::{Request, Response, Status};

    #[derive(Clone, Default)]
    pub struct Receiver {
        pub requests: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
        pub accept: Arc<AtomicBool>,
        pub refused: Arc<Mutex<u64>>,
    }

    #[tonic::async_trait]
    impl LogsService for Receiver {
        async fn export(
            &self,
            req: Request<ExportLogsServiceRequest>,
        ) -> Result<Response<ExportLogsServiceResponse>, Status> {
            if !self.accept.load(Ordering::SeqCst) {
                *self.refused.lock().unwrap() += 1;
                return Err(Status::unavailable("collector restarting"));
            }
            self.requests.lock().unwrap().push(req.into_inner());
            Ok(Response::new(ExportLogsServiceResponse {
                partial_success: None,
            }))
        }
    }

    impl Receiver {
        /// Every log record received, in order.
        pub fn records(&self) -> Vec<LogRecord> {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .flat_map(|r| r.resource_logs.iter())
                .flat_map(|r| r.scope_logs.iter())
                .flat_map(|s| s.log_records.iter().cloned())
                .collect()
        }

        /// `picket.alert.seq` of every alert record, in order.
        pub fn seqs(&self) -> Vec<i64> {
            self.records()
                .iter()
                .filter_map(|r| int_attr(r, "picket.alert.seq"))
                .collect()
        }
    }

    pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    pub fn int_attr(r: &LogRecord, key: &str) -> Option<i64> {
        match attr(&r.attributes, key) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn str_value(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    pub fn any(v: any_value::Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    /// A running receiver; dropping the returned sender stops it.
    pub async fn start(addr: SocketAddr, rx: Receiver) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let local = listener.local_addr().unwrap();
        let (tx, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(rx))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stop.await;
                    },
                )
                .await
                .expect("receiver");
        });
        (local, tx)
    }

    /// A loopback port nothing listens on (yet).
    pub fn free_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }
}

/// The first sequence number the spool keeps after appending records of
/// `lens` bytes (header included), by the documented rules: a segment is
/// closed when the next record would exceed `segment_bytes`; whole oldest
/// segments are deleted while the total exceeds `max_total`.
pub fn expected_first_seq(lens: &[u64], segment_bytes: u64, max_total: u64) -> u64 {
    let mut segs: std::collections::VecDeque<(u64, u64)> = [(1, 0)].into(); // (first_seq, bytes)
    for (i, len) in lens.iter().enumerate() {
        let seq = i as u64 + 1;
        let back = segs.back().unwrap().1;
        if back > 0 && back + len > segment_bytes {
            segs.push_back((seq, 0));
        }
        segs.back_mut().unwrap().1 += len;
        while segs.iter().map(|s| s.1).sum::<u64>() > max_total && segs.len() > 1 {
            segs.pop_front();
        }
    }
    segs.front().unwrap().0
}

/// On-disk length of the record of `a` with sequence number `seq`.
pub fn record_len(a: &Alert, seq: u64) -> u64 {
    let mut a = a.clone();
    a.seq = seq;
    16 + serde_json::to_vec(&a).unwrap().len() as u64
}
