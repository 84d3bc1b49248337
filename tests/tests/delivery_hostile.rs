//! The delivery stack against hostile or careless clients (issue #17): a
//! stream cap with a clear error, slow readers that lag on disk, a
//! connection cap and TLS handshake deadline, subscriber cursors that cannot
//! reach a sink's, one corrupt record costing exactly one alert, counters
//! present at 0, bounded configuration values.

mod delivery_support;

use std::io::Write;
use std::time::Duration;

use delivery_support::{Pki, alert, config, eventually};
use pb::stream_alerts_response::Item;
use picket::delivery::grpc::GrpcConfig;
use picket::delivery::grpc::client::connect;
use picket::delivery::http::HttpConfig;
use picket::delivery::jsonl::JsonlConfig;
use picket::delivery::proto::pb;
use picket::delivery::spool::{Gap, Spool, SpoolItem};
use picket::delivery::tls::ClientTls;
use picket::delivery::{BoundAddr, Delivery, DeliveryError, DeliveryHooks};
use picket::model::Severity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

fn req(from_seq: Option<u64>, sub: &str) -> pb::StreamAlertsRequest {
    pb::StreamAlertsRequest {
        filter: None,
        from_seq,
        subscriber: sub.into(),
    }
}

/// The value of one sample in the agent's metrics text (`None` if absent).
fn sample(name_and_labels: &str) -> Option<f64> {
    picket::metrics::encode_text().lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name_and_labels).then(|| v.parse().ok())?
    })
}

async fn plaintext_agent(
    dir: &std::path::Path,
    f: impl FnOnce(&mut GrpcConfig),
) -> (Delivery, String) {
    let mut cfg = config(dir);
    let mut g = GrpcConfig {
        listen: "127.0.0.1:0".into(),
        insecure_plaintext: true,
        ..Default::default()
    };
    f(&mut g);
    cfg.grpc = Some(g);
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .expect("start");
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!("tcp addr")
    };
    (d, format!("http://127.0.0.1:{}", addr.port()))
}

#[tokio::test]
async fn stream_cap_refuses_clearly_and_slow_streams_lag_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, url) = plaintext_agent(tmp.path(), |g| g.max_streams = 3).await;
    for i in 0..1500 {
        d.publish(alert("r1", Severity::High, "prod", &[], &format!("a{i}")))
            .await
            .unwrap();
    }
    let rejected_before = sample("picket_grpc_streams_rejected_total").unwrap_or(0.0);
    let ch = connect(&url, &ClientTls::default(), true).await.unwrap();
    let mut client = pb::alert_service_client::AlertServiceClient::new(ch.clone());
    // Three streams that do not read.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            client
                .stream_alerts(req(Some(1), ""))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let err = client
        .stream_alerts(req(Some(1), ""))
        .await
        .expect_err("fourth stream refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "too many open streams on this agent (grpc.max_streams); retry later"
    );
    assert_eq!(
        sample("picket_grpc_streams_rejected_total"),
        Some(rejected_before + 1.0)
    );
    // Closing one stream frees its slot.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + STEP;
    let extra = loop {
        match client.stream_alerts(req(None, "")).await {
            Ok(s) => break s.into_inner(),
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot never released: {e}"),
        }
    };
    drop(extra);
    // A stream that waited reads every alert, in order, from the spool.
    let mut s = open.pop().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seqs = Vec::new();
    while seqs.len() < 1500 {
        let m = tokio::time::timeout(STEP, s.message())
            .await
            .expect("timely")
            .expect("ok")
            .expect("open");
        match m.item.expect("item") {
            Item::Alert(a) => seqs.push(a.seq),
            Item::Gap(g) => panic!("unexpected gap {g:?}"),
        }
    }
    assert_eq!(seqs, (1..=1500).collect::<Vec<u64>>());
    drop(open);
    drop(s);
    d.shutdown().await;
}

#[tokio::test]
async fn connection_cap_and_tls_handshake_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"));
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        tls: Some(pki.server()),
        max_connections: 2,
        handshake_timeout_ms: 500,
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!("tcp")
    };
    let rejected_before = sample("picket_grpc_connections_rejected_total").unwrap_or(0.0);
    // Two connections that never send a ClientHello take both slots...
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third is closed at once (EOF, not a hang) and counted.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed, not left hanging");
    assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
    assert_eq!(
        sample("picket_grpc_connections_rejected_total"),
        Some(rejected_before + 1.0)
    );
    // The handshake deadline closes the idle ones and frees the slots.
    for mut s in idle {
        let t = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed by the handshake deadline");
        assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    // A real mTLS client gets through.
    let ch = connect(
        &format!("https://localhost:{}", addr.port()),
        &pki.client(),
        false,
    )
    .await
    .expect("mTLS connect");
    let info = pb::agent_service_client::AgentServiceClient::new(ch)
        .info(pb::InfoRequest {})
        .await
        .expect("info");
    assert!(info.get_ref().peer_identity.starts_with("cn=soc-reader"));
    d.shutdown().await;
}

#[tokio::test]
async fn api_acks_cannot_move_a_sink_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("alerts.jsonl");
    // A file sink named like a well-known sink, and plaintext TCP.
    let mut cfg = config(tmp.path());
    cfg.jsonl = vec![JsonlConfig {
        name: "otlp".into(),
        path: out.display().to_string(),
        ..Default::default()
    }];
    cfg.grpc = Some(GrpcConfig {
        listen: "127.0.0.1:0".into(),
        insecure_plaintext: true,
        ..Default::default()
    });
    let d = Delivery::start(cfg.clone(), DeliveryHooks::default())
        .await
        .unwrap();
    let Some(BoundAddr::Tcp(addr)) = d.grpc_addr().cloned() else {
        panic!("tcp addr")
    };
    let url = format!("http://127.0.0.1:{}", addr.port());
    for i in 1..=5 {
        d.publish(alert("r1", Severity::High, "prod", &[], &format!("a{i}")))
            .await
            .unwrap();
    }
    assert!(eventually(STEP, || d.spool().cursor("otlp") == Some(5)).await);
    let ch = connect(&url, &ClientTls::default(), true).await.unwrap();
    let mut client = pb::alert_service_client::AlertServiceClient::new(ch);
    // An unauthenticated caller "acknowledges" for the sink: it only moves
    // its own cursor, in its own namespace.
    let r = client
        .ack(pb::AckRequest {
            subscriber: "otlp".into(),
            seq: 1,
        })
        .await
        .unwrap();
    assert_eq!(r.get_ref().acked_seq, 1);
    assert_eq!(d.spool().cursor("api.anon.otlp"), Some(1));
    assert_eq!(d.spool().cursor("otlp"), Some(5));
    // A subscriber resumes from its own namespaced cursor.
    let mut s = client
        .stream_alerts(req(None, "otlp"))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(STEP, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(Item::Alert(a)) = first.item else {
        panic!("alert")
    };
    assert_eq!(a.seq, 2);
    drop(s);
    d.shutdown().await;
    // Configured sinks cannot take the API namespace.
    cfg.jsonl[0].name = "api.anon.x".into();
    let e = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .err()
        .expect("reserved name refused");
    assert!(
        matches!(e, DeliveryError::SinkName(ref n) if n == "api.anon.x"),
        "{e}"
    );
}

#[test]
fn one_corrupt_record_costs_exactly_one_alert_and_numbers_are_never_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path()).spool;
    let spool = Spool::open(cfg.clone()).unwrap();
    let mut offsets = Vec::new();
    let seg = tmp.path().join("spool/segments/00000000000000000001.seg");
    for i in 1..=10 {
        offsets.push(std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0));
        let mut a = alert("r1", Severity::High, "ns", &[], &format!("a{i}"));
        assert_eq!(spool.append(&mut a).unwrap(), i);
    }
    spool.ack("file", 10).unwrap();
    spool.close();
    drop(spool);
    // Flip one payload byte of record 3 and one of record 10 (the tail).
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offsets[2] as usize + 40] ^= 0x20;
    bytes[offsets[9] as usize + 40] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let spool = Spool::open(cfg).unwrap();
    // Record 10 was the tail with nothing valid after it (truncated), but
    // the sink had read it: 11 is never handed out again... nor is 10.
    let mut a = alert("r1", Severity::High, "ns", &[], "new");
    assert_eq!(spool.append(&mut a).unwrap(), 11);
    let mut r = spool.reader(1);
    let items = r.read_available(100).unwrap();
    let summary: Vec<String> = items
        .iter()
        .map(|i| match i {
            SpoolItem::Alert(a) => format!("a{}", a.seq),
            SpoolItem::Gap(Gap {
                from_seq,
                to_seq,
                count,
            }) => format!("gap{from_seq}-{to_seq}x{count}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "a1",
            "a2",
            "gap3-3x1",
            "a4",
            "a5",
            "a6",
            "a7",
            "a8",
            "a9",
            "gap10-10x1",
            "a11"
        ]
    );
    spool.close();
}

#[tokio::test]
async fn labelled_counters_start_at_zero_and_limits_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.jsonl = vec![JsonlConfig {
        name: "zero-check".into(),
        path: tmp.path().join("z.jsonl").display().to_string(),
        ..Default::default()
    }];
    cfg.http = Some(HttpConfig {
        listen: "127.0.0.1:0".into(),
    });
    let d = Delivery::start(cfg.clone(), DeliveryHooks::default())
        .await
        .unwrap();
    let addr = d.http_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    for line in [
        "picket_sink_delivered_alerts_total{sink=\"zero-check\"} 0",
        "picket_sink_gap_alerts_total{sink=\"zero-check\"} 0",
        "picket_sink_failed_attempts_total{sink=\"zero-check\"} 0",
        "picket_sink_spool_errors_total{sink=\"zero-check\"} 0",
        "picket_otlp_batches_total{result=\"rejected\"} 0",
        "picket_otlp_events_total{result=\"dropped_lagged\"} 0",
        "picket_sink_gap_alerts_total{sink=\"grpc\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?}");
    }
    d.shutdown().await;

    cfg.event_buffer = Some(usize::MAX / 2);
    let e = Delivery::start(cfg.clone(), DeliveryHooks::default())
        .await
        .err()
        .expect("huge event_buffer refused");
    assert_eq!(
        e.to_string(),
        format!(
            "event_buffer {} is out of range (1..=1048576)",
            usize::MAX / 2
        )
    );
    let _ = std::io::stdout().flush();
}
