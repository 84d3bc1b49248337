//! `ContainmentService` over real gRPC transports: unauthenticated callers
//! (plaintext TCP) are rejected; Unix-socket peers are authenticated by
//! their credentials, which end up in the audit record.

mod delivery_support;

use std::sync::Arc;

use delivery_support::{Pki, config};

use picket::{
    contain::{
        Containment, ContainmentConfig, SafetyConfig,
        grpc::{ContainApi, ContainmentServiceServer},
    },
    delivery::{
        BoundAddr, Delivery, DeliveryHooks,
        grpc::{GrpcConfig, client::connect},
        proto::pb::{self, containment_service_client::ContainmentServiceClient},
        tls::ClientTls,
    },
};

fn engine() -> Arc<Containment> {
    let cfg = ContainmentConfig {
        node_name: "node-a".into(),
        safety: SafetyConfig {
            own_cgroup: None,
            ..SafetyConfig::default()
        },
        ..Default::default()
    };
    Arc::new(Containment::new(cfg))
}

fn isolate(dry_run: bool) -> pb::ContainRequest {
    pb::ContainRequest {
        pod: Some(pb::PodRef {
            namespace: "shop".into(),
            name: "web-1".into(),
        }),
        action: "isolate-pod".into(),
        reason: "incident 7".into(),
        dry_run,
        grace_period_seconds: 0,
        allow_dns: false,
    }
}

#[tokio::test]
async fn plaintext_tcp_contain_is_rejected_and_nothing_is_done() {
    let engine = engine();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = ContainmentServiceServer::new(ContainApi::new(engine.clone()));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let ch = connect(&addr.to_string(), &ClientTls::default(), true)
        .await
        .expect("connect");
    let mut c = ContainmentServiceClient::new(ch);
    let err = c
        .contain(isolate(false))
        .await
        .expect_err("must be rejected");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message()
            .starts_with("containment needs an authenticated caller"),
        "{}",
        err.message()
    );
    let err = c
        .list_actions(pb::ListActionsRequest { limit: 0 })
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        engine.list_actions(10).is_empty(),
        "no action was attempted"
    );
    server.abort();
}

#[tokio::test]
async fn unix_socket_peer_is_identified_in_the_record() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("picket.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
    let svc = ContainmentServiceServer::new(ContainApi::new(engine.clone()));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let ch = connect(
        &format!("unix:{}", sock.display()),
        &ClientTls::default(),
        false,
    )
    .await
    .expect("connect");
    let mut c = ContainmentServiceClient::new(ch);
    let r = c
        .contain(isolate(true))
        .await
        .expect("contain")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(
        (r.action.as_str(), r.outcome.as_str()),
        ("isolate-pod", "dry_run")
    );
    assert_eq!(r.message, "dry run: would isolate-pod pod shop/web-1");
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let expected = format!("uid={uid} gid={gid} pid={}", std::process::id());
    let rec = engine.list_actions(1);
    assert_eq!(
        rec[0].triggered_by,
        picket::contain::Trigger::Client {
            identity: expected.clone()
        }
    );
    assert_eq!(rec[0].reason, "incident 7");
    let record = r.record.expect("full record");
    let by = &record.fields["triggered_by"];
    let Some(prost_types::value::Kind::StructValue(s)) = &by.kind else {
        panic!("triggered_by is a struct")
    };
    assert_eq!(
        s.fields["identity"].kind,
        Some(prost_types::value::Kind::StringValue(expected))
    );
    // Without a kube client, a real isolate fails (host mode) and says why.
    let r = c
        .contain(isolate(false))
        .await
        .expect("contain")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(
        (r.outcome.as_str(), r.message.as_str()),
        (
            "failed",
            "no Kubernetes API access (host mode): isolate-pod is not possible"
        )
    );
    let listed = c
        .list_actions(pb::ListActionsRequest { limit: 0 })
        .await
        .expect("list")
        .into_inner()
        .results;
    assert_eq!(
        listed
            .iter()
            .map(|r| r.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["dry_run", "failed"]
    );
    server.abort();
}

/// The service as `picket run` serves it: mounted on the delivery gRPC
/// server (hooks), behind mutual TLS. The verified certificate is the
/// responder's identity in the audit record; a certificate from another CA
/// never reaches the service.
#[tokio::test]
async fn mtls_client_identity_through_the_delivery_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&tmp.path().join("pki"));
    let engine = engine();
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        tls: Some(pki.server()),
        ..Default::default()
    });
    let hooks = DeliveryHooks {
        contain: Some(engine.clone()),
        ..Default::default()
    };
    let d = Delivery::start(cfg, hooks).await.expect("delivery");
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!("tcp address")
    };
    let url = format!("https://localhost:{}", addr.port());
    let ch = connect(&url, &pki.client(), false).await.expect("connect");
    let mut c = ContainmentServiceClient::new(ch);
    let r = c
        .contain(isolate(true))
        .await
        .expect("contain")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(
        (r.action.as_str(), r.outcome.as_str()),
        ("isolate-pod", "dry_run")
    );
    let rec = engine.list_actions(10);
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].triggered_by,
        picket::contain::Trigger::Client {
            identity: "cn=soc-reader san=dns:soc-reader.example.test".into()
        }
    );

    let rogue = ClientTls {
        cert: Some(pki.rogue_cert.clone()),
        key: Some(pki.rogue_key.clone()),
        ..pki.client()
    };
    let refused = match connect(&url, &rogue, false).await {
        Err(_) => true,
        Ok(ch) => ContainmentServiceClient::new(ch)
            .contain(isolate(true))
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA must be refused");
    assert_eq!(engine.list_actions(10).len(), 1, "nothing more was done");
    d.shutdown().await;
}

/// Without containment the delivery server does not offer the service.
#[tokio::test]
async fn without_containment_the_service_is_unimplemented() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    let sock = tmp.path().join("api.sock");
    cfg.grpc = Some(GrpcConfig {
        listen: format!("unix:{}", sock.display()),
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .expect("delivery");
    let ch = connect(
        &format!("unix:{}", sock.display()),
        &ClientTls::default(),
        false,
    )
    .await
    .expect("connect");
    let err = ContainmentServiceClient::new(ch)
        .contain(isolate(true))
        .await
        .expect_err("not served");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    d.shutdown().await;
}
