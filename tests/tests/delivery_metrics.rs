//! `/metrics`, `/healthz` and `/readyz` scraped over HTTP; the Prometheus
//! text is parsed and the delivery metrics checked for exact values.
//! (One test in this binary: the registry is process-wide.)

mod delivery_support;

use std::collections::BTreeMap;
use std::time::Duration;

use delivery_support::{alert, config, eventually, expected_first_seq, record_len};
use picket::delivery::http::HttpConfig;
use picket::delivery::jsonl::JsonlConfig;
use picket::delivery::spool::SpoolConfig;
use picket::delivery::{Delivery, DeliveryHooks, Readiness};
use picket::model::Severity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `(status, body)` of `GET path`.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// Prometheus/OpenMetrics text: `name{labels}` → value (comments skipped).
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse::<f64>().expect("sample value"))
        })
        .collect()
}

#[tokio::test]
async fn metrics_health_and_readiness_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, total) = (2048u64, 4096u64);
    let mut cfg = config(tmp.path());
    cfg.spool = SpoolConfig {
        segment_bytes: seg,
        max_total_bytes: total,
        ..cfg.spool
    };
    let a = alert("r", Severity::Low, "ns", &[], "x");
    // 30 alerts overflow the spool while no sink runs.
    let d = Delivery::start(cfg.clone(), DeliveryHooks::default())
        .await
        .unwrap();
    for _ in 0..30 {
        d.publish(a.clone()).await.unwrap();
    }
    d.shutdown().await;
    let lens: Vec<u64> = (1..=30).map(|s| record_len(&a, s)).collect();
    let first = expected_first_seq(&lens, seg, total);
    assert!(first > 1);

    let out = tmp.path().join("out.jsonl");
    cfg.jsonl = vec![JsonlConfig {
        name: "file".into(),
        path: out.display().to_string(),
        ..Default::default()
    }];
    cfg.http = Some(HttpConfig {
        listen: "127.0.0.1:0".into(),
    });
    let readiness = Readiness::new();
    let d = Delivery::start(
        cfg,
        DeliveryHooks {
            rules: None,
            readiness: readiness.clone(),
            contain: None,
        },
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || d.spool().cursor("file")
            == Some(30))
        .await
    );
    let http = d.http_addr().unwrap();

    let (status, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    let m = parse(&body);
    let kept = 30 - first + 1;
    let bytes: u64 = lens[(first - 1) as usize..].iter().sum();
    let expect: &[(&str, f64)] = &[
        ("picket_spool_last_seq", 30.0),
        ("picket_spool_records", kept as f64),
        ("picket_spool_bytes", bytes as f64),
        ("picket_spool_dropped_alerts_total", (first - 1) as f64),
        ("picket_spool_corrupt_records_total", 0.0),
        (
            "picket_sink_delivered_alerts_total{sink=\"file\"}",
            kept as f64,
        ),
        ("picket_sink_lag_alerts{sink=\"file\"}", 0.0),
        ("picket_grpc_subscribers", 0.0),
    ];
    for (k, v) in expect {
        assert_eq!(m.get(*k), Some(v), "{k} in\n{body}");
    }
    // Present at 0 from the start (issue #17 item 7), not absent until the
    // first failure.
    assert_eq!(
        m.get("picket_sink_failed_attempts_total{sink=\"file\"}"),
        Some(&0.0)
    );

    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: programs_loaded=false sinks_started=true\n")
    );
    readiness.set_programs_loaded(true);
    assert_eq!(get(http, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(http, "/nope").await.0, 404);
    d.shutdown().await;
}
