//! `ContainmentService` over real gRPC transports: unauthenticated callers
//! (plaintext TCP) are rejected; Unix-socket peers are authenticated by
//! their credentials, which end up in the audit record.

use std::sync::Arc;

use picket::{
    contain::{
        Containment, ContainmentConfig, SafetyConfig,
        grpc::{ContainApi, ContainmentServiceServer},
    },
    delivery::{
        grpc::client::connect,
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
