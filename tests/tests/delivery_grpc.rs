//! The gRPC API over mutual TLS and a Unix socket: filters, resume by
//! sequence number, acknowledgements, rejected clients.

mod delivery_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use clap::Parser;
use delivery_support::{Pki, alert, config};
use pb::stream_alerts_response::Item;
use picket::delivery::grpc::GrpcConfig;
use picket::delivery::grpc::client::{AlertsArgs, connect};
use picket::delivery::proto::pb;
use picket::delivery::tls::ClientTls;
use picket::delivery::{BoundAddr, Delivery, DeliveryHooks};
use picket::model::Severity;

const STEP: Duration = Duration::from_secs(10);

type Stream = tonic::Streaming<pb::StreamAlertsResponse>;

async fn next(s: &mut Stream) -> Item {
    tokio::time::timeout(STEP, s.message())
        .await
        .expect("timely message")
        .expect("stream ok")
        .expect("stream open")
        .item
        .expect("item")
}

fn seq_of(i: &Item) -> u64 {
    match i {
        Item::Alert(a) => a.seq,
        Item::Gap(g) => panic!("unexpected gap {g:?}"),
    }
}

/// No further message arrives within a short time.
async fn quiet(s: &mut Stream) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.message())
            .await
            .is_err()
    );
}

async fn tls_agent(dir: &std::path::Path, pki: &Pki) -> (Delivery, String) {
    let mut cfg = config(dir);
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        tls: Some(pki.server()),
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .expect("start");
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!("tcp addr")
    };
    (d, format!("https://localhost:{}", addr.port()))
}

fn req(
    filter: Option<pb::AlertFilter>,
    from_seq: Option<u64>,
    sub: &str,
) -> pb::StreamAlertsRequest {
    pb::StreamAlertsRequest {
        filter,
        from_seq,
        subscriber: sub.into(),
    }
}

#[tokio::test]
async fn mtls_stream_filters_resume_and_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"));
    let (d, url) = tls_agent(tmp.path(), &pki).await;
    let web = [("app", "web")];
    for a in [
        alert("r1", Severity::High, "prod", &web, "1 match"),
        alert("r2", Severity::Critical, "prod", &web, "2 other rule"),
        alert("r1", Severity::Critical, "dev", &web, "3 other namespace"),
        alert("r1", Severity::Medium, "prod", &web, "4 too low"),
        alert(
            "r1",
            Severity::Critical,
            "prod",
            &[("app", "db")],
            "5 other label",
        ),
        alert(
            "r1",
            Severity::Critical,
            "prod",
            &[("app", "web"), ("tier", "x")],
            "6 match",
        ),
    ] {
        d.publish(a).await.unwrap();
    }
    let ch = connect(&url, &pki.client(), false)
        .await
        .expect("mTLS connect");
    let mut client = pb::alert_service_client::AlertServiceClient::new(ch.clone());
    let filter = pb::AlertFilter {
        min_severity: pb::Severity::High as i32,
        namespaces: vec!["prod".into()],
        rule_ids: vec!["r1".into()],
        pod_labels: [("app".to_string(), "web".to_string())].into(),
    };
    let mut s = client
        .stream_alerts(req(Some(filter.clone()), Some(1), ""))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut s).await;
    let Item::Alert(a1) = &first else {
        panic!("alert")
    };
    assert_eq!((a1.seq, a1.message.as_str()), (1, "1 match"));
    assert_eq!(a1.severity, pb::Severity::High as i32);
    assert_eq!(a1.rule.as_ref().unwrap().id, "r1");
    let summary = a1.event.as_ref().unwrap().summary.as_ref().unwrap();
    assert_eq!(
        (
            summary.kind.as_str(),
            summary.namespace.as_str(),
            summary.pod.as_str()
        ),
        ("exec", "prod", "prod-pod")
    );
    // The full event round-trips into the model type.
    let back = picket::delivery::proto::alert_from_pb(a1).unwrap();
    assert_eq!(
        back,
        alert("r1", Severity::High, "prod", &web, "1 match").with_seq(1)
    );
    assert_eq!(seq_of(&next(&mut s).await), 6);
    quiet(&mut s).await;
    // Live: a new matching alert arrives on the open stream.
    d.publish(alert("r1", Severity::High, "prod", &web, "7 live"))
        .await
        .unwrap();
    assert_eq!(seq_of(&next(&mut s).await), 7);
    drop(s);

    // A durable subscriber: registered at the current end on first use.
    let mut s = client
        .stream_alerts(req(None, None, "soc"))
        .await
        .unwrap()
        .into_inner();
    for m in ["8", "9"] {
        d.publish(alert("r9", Severity::Low, "prod", &[], m))
            .await
            .unwrap();
    }
    assert_eq!(seq_of(&next(&mut s).await), 8);
    assert_eq!(seq_of(&next(&mut s).await), 9);
    let ack = client
        .ack(pb::AckRequest {
            subscriber: "soc".into(),
            seq: 8,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.acked_seq, 8);
    drop(s);
    d.publish(alert("r9", Severity::Low, "prod", &[], "10"))
        .await
        .unwrap();
    let mut s = client
        .stream_alerts(req(None, None, "soc"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seq_of(&next(&mut s).await), 9);
    assert_eq!(seq_of(&next(&mut s).await), 10);
    quiet(&mut s).await;

    // Hostile input is refused, not trusted.
    let err = client
        .stream_alerts(req(None, None, "../../etc/passwd"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .stream_alerts(req(
            Some(pb::AlertFilter {
                min_severity: 99,
                ..Default::default()
            }),
            None,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The authenticated identity is the client certificate's.
    let mut agent = pb::agent_service_client::AgentServiceClient::new(ch);
    let info = agent.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        info.peer_identity,
        "cn=soc-reader san=dns:soc-reader.example.test"
    );
    assert_eq!((info.spool_first_seq, info.spool_last_seq), (1, 10));
    assert_eq!(info.node_name, "node-a");
    let health = agent
        .health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (health.sinks_started, health.programs_loaded, health.ready),
        (true, false, false)
    );
    d.shutdown().await;
}

trait WithSeq {
    fn with_seq(self, seq: u64) -> Self;
}

impl WithSeq for picket::model::Alert {
    fn with_seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }
}

async fn rpc_fails(url: &str, tls: ClientTls) -> bool {
    let Ok(ch) = connect(url, &tls, false).await else {
        return true;
    };
    let mut c = pb::agent_service_client::AgentServiceClient::new(ch);
    c.info(pb::InfoRequest {}).await.is_err()
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"));
    let (d, url) = tls_agent(tmp.path(), &pki).await;
    let no_cert = ClientTls {
        ca: Some(pki.ca.clone()),
        domain: Some("localhost".into()),
        ..Default::default()
    };
    assert!(
        rpc_fails(&url, no_cert).await,
        "a client without a certificate got through"
    );
    let rogue = ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.rogue_cert.clone()),
        key: Some(pki.rogue_key.clone()),
        domain: Some("localhost".into()),
    };
    assert!(
        rpc_fails(&url, rogue).await,
        "a certificate from another CA got through"
    );
    // Plaintext to a TLS port fails too.
    let plain = url.replace("https://localhost", "http://127.0.0.1");
    assert!(
        rpc_fails(&plain, ClientTls::default()).await
            || connect(&plain, &ClientTls::default(), true).await.is_err()
    );
    // The valid client still works.
    assert!(!rpc_fails(&url, pki.client()).await);
    d.shutdown().await;
}

#[tokio::test]
async fn plaintext_tcp_needs_the_explicit_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    });
    let err = Delivery::start(cfg.clone(), DeliveryHooks::default())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("needs `tls`"), "{err}");
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        insecure_plaintext: true,
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .expect("plaintext with flag");
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!()
    };
    // The client refuses plaintext unless asked, too.
    assert!(
        connect(&addr.to_string(), &ClientTls::default(), false)
            .await
            .is_err()
    );
    let ch = connect(&addr.to_string(), &ClientTls::default(), true)
        .await
        .unwrap();
    let info = pb::agent_service_client::AgentServiceClient::new(ch)
        .info(pb::InfoRequest {})
        .await
        .unwrap();
    assert!(
        info.get_ref()
            .peer_identity
            .starts_with("unauthenticated 127.0.0.1:")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn unix_socket_with_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("run/picket.sock");
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: format!("unix:{}", sock.display()),
        unix_mode: 0o600,
        unix_group: Some("0".into()),
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    d.publish(alert("r1", Severity::Low, "ns", &[], "one"))
        .await
        .unwrap();
    d.publish(alert("r2", Severity::High, "ns", &[], "two"))
        .await
        .unwrap();
    let server = format!("unix:{}", sock.display());
    let ch = connect(&server, &ClientTls::default(), false)
        .await
        .unwrap();
    let mut client = pb::alert_service_client::AlertServiceClient::new(ch.clone());
    let f = pb::AlertFilter {
        min_severity: pb::Severity::Medium as i32,
        ..Default::default()
    };
    let mut s = client
        .stream_alerts(req(Some(f), Some(1), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seq_of(&next(&mut s).await), 2);
    let info = pb::agent_service_client::AgentServiceClient::new(ch)
        .info(pb::InfoRequest {})
        .await
        .unwrap();
    let uid = unsafe { libc::getuid() };
    assert!(
        info.get_ref()
            .peer_identity
            .starts_with(&format!("uid={uid} ")),
        "{}",
        info.get_ref().peer_identity
    );

    // `picket alerts` arguments map onto the same request.
    let cli = picket::cli::Cli::try_parse_from([
        "picket",
        "alerts",
        "--server",
        &server,
        "--min-severity",
        "high",
        "--namespace",
        "prod",
        "--rule",
        "r1",
        "--label",
        "app=web",
        "--from-seq",
        "5",
        "--json",
    ])
    .unwrap();
    let picket::cli::Command::Alerts(args) = cli.command else {
        panic!("alerts subcommand")
    };
    let r: pb::StreamAlertsRequest = picket::delivery::grpc::client::request(&args);
    assert_eq!(r.from_seq, Some(5));
    let f = r.filter.unwrap();
    assert_eq!(f.min_severity, pb::Severity::High as i32);
    assert_eq!(
        (f.namespaces, f.rule_ids),
        (vec!["prod".to_string()], vec!["r1".to_string()])
    );
    assert_eq!(f.pod_labels.get("app").map(String::as_str), Some("web"));
    let _: &AlertsArgs = &args;
    d.shutdown().await;
    assert!(!sock.exists() || std::fs::symlink_metadata(&sock).is_ok());
}
