//! OTLP log export: attribute names and values, a collector that is down
//! and comes back, exactly-once in-order delivery.

mod delivery_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use delivery_support::otlp_receiver::{self, Receiver, any, attr, str_value};
use delivery_support::{alert, config, eventually};
use opentelemetry_proto::tonic::common::v1::{ArrayValue, any_value::Value};
use picket::delivery::otlp::{OtlpConfig, SERVICE_VERSION};
use picket::delivery::sink::SinkPolicy;
use picket::delivery::{Delivery, DeliveryHooks};
use picket::model::Severity;

fn otlp(endpoint: std::net::SocketAddr) -> OtlpConfig {
    OtlpConfig {
        endpoint: format!("http://{endpoint}"),
        timeout_ms: 2000,
        policy: SinkPolicy {
            max_batch: 4,
            max_delay_ms: 20,
            retry_initial_ms: 20,
            retry_max_ms: 200,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn alert_records_carry_semantic_convention_attributes() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::default();
    rx.accept.store(true, Ordering::SeqCst);
    let (addr, _stop) = otlp_receiver::start("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let mut cfg = config(tmp.path());
    cfg.otlp = Some(otlp(addr));
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    let a = alert(
        "r1",
        Severity::High,
        "prod",
        &[("app", "web")],
        "shell in prod/prod-pod",
    );
    assert_eq!(d.publish(a.clone()).await.unwrap(), 1);
    assert!(
        eventually(Duration::from_secs(10), || rx.seqs() == [1]).await,
        "got {:?}",
        rx.seqs()
    );

    let reqs = rx.requests.lock().unwrap().clone();
    let res = reqs[0].resource_logs[0].resource.as_ref().unwrap();
    assert_eq!(
        attr(&res.attributes, "service.name"),
        Some(&str_value("picket"))
    );
    assert_eq!(
        attr(&res.attributes, "service.version"),
        Some(&str_value(SERVICE_VERSION))
    );
    assert_eq!(
        attr(&res.attributes, "host.name"),
        Some(&str_value("node-a"))
    );
    assert_eq!(
        attr(&res.attributes, "k8s.node.name"),
        Some(&str_value("node-a"))
    );
    let scope = &reqs[0].resource_logs[0].scope_logs[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "picket");

    let r = &scope.log_records[0];
    assert_eq!(r.severity_number, 17);
    assert_eq!(r.severity_text, "high");
    assert_eq!(r.event_name, "picket.alert");
    assert_eq!(r.body, Some(any(str_value("shell in prod/prod-pod"))));
    assert_eq!(r.time_unix_nano, a.event.time.as_nanosecond() as u64);
    assert_eq!(r.observed_time_unix_nano, a.time.as_nanosecond() as u64);
    let expect: &[(&str, Value)] = &[
        ("picket.alert.seq", Value::IntValue(1)),
        ("picket.rule.id", str_value("r1")),
        ("picket.rule.name", str_value("Rule r1")),
        (
            "picket.rule.tags",
            Value::ArrayValue(ArrayValue {
                values: vec![any(str_value("mitre:T1059"))],
            }),
        ),
        ("event.kind", str_value("exec")),
        ("event.ktime_ns", Value::IntValue(0)),
        ("host.name", str_value("node-a")),
        ("process.pid", Value::IntValue(4242)),
        ("process.executable.path", str_value("/bin/sh")),
        ("process.executable.name", str_value("sh")),
        ("process.command_line", str_value("sh -c id")),
        (
            "process.command_args",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    any(str_value("sh")),
                    any(str_value("-c")),
                    any(str_value("id")),
                ],
            }),
        ),
        ("process.user.id", Value::IntValue(0)),
        ("process.interactive", Value::BoolValue(false)),
        ("process.stdio.stdin", str_value("unknown")),
        ("k8s.pod.name", str_value("prod-pod")),
        (
            "k8s.pod.uid",
            str_value("0f1e2d3c-0000-4000-8000-000000000001"),
        ),
        ("k8s.pod.label.app", str_value("web")),
        ("k8s.namespace.name", str_value("prod")),
        ("k8s.metadata", str_value("unresolved")),
    ];
    for (k, v) in expect {
        assert_eq!(attr(&r.attributes, k), Some(v), "attribute {k}");
    }
    // Nested objects are flattened; the event time is the timestamp, not an attribute.
    assert!(attr(&r.attributes, "time").is_none());
    assert!(attr(&r.attributes, "k8s.pod.labels").is_none());
    assert!(
        r.attributes
            .iter()
            .all(|kv| !kv.key.starts_with('.') && !kv.key.is_empty())
    );
    // Keys are unique.
    let mut keys: Vec<_> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
    d.shutdown().await;
}

#[tokio::test]
async fn collector_down_then_up_gets_every_alert_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let port = otlp_receiver::free_port();
    let mut cfg = config(tmp.path());
    cfg.otlp = Some(otlp(port));
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    // Nothing listens: exports fail and are retried with back-off.
    for i in 1..=10 {
        d.publish(alert("r1", Severity::Medium, "ns", &[], &format!("a{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        d.spool().cursor("otlp").unwrap_or(0) == 0,
        "nothing may be acknowledged while the collector is down"
    );

    let rx = Receiver::default();
    rx.accept.store(true, Ordering::SeqCst);
    let (_addr, stop) = otlp_receiver::start(port, rx.clone()).await;
    for i in 11..=15 {
        d.publish(alert("r1", Severity::Medium, "ns", &[], &format!("a{i}")))
            .await
            .unwrap();
    }
    let want: Vec<i64> = (1..=15).collect();
    assert!(
        eventually(Duration::from_secs(15), || rx.seqs() == want).await,
        "got {:?}",
        rx.seqs()
    );

    // The collector refuses for a while (UNAVAILABLE), then accepts again.
    rx.accept.store(false, Ordering::SeqCst);
    for i in 16..=20 {
        d.publish(alert("r1", Severity::Medium, "ns", &[], &format!("a{i}")))
            .await
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || *rx.refused.lock().unwrap() >= 2).await);
    rx.accept.store(true, Ordering::SeqCst);
    let want: Vec<i64> = (1..=20).collect();
    assert!(
        eventually(Duration::from_secs(15), || rx.seqs() == want).await,
        "got {:?}",
        rx.seqs()
    );
    assert!(
        eventually(Duration::from_secs(5), || d.spool().cursor("otlp")
            == Some(20))
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.seqs(), want, "no duplicates afterwards");
    let messages: Vec<_> = rx.records().iter().map(|r| r.body.clone()).collect();
    assert_eq!(messages[0], Some(any(str_value("a1"))));
    assert_eq!(messages[19], Some(any(str_value("a20"))));
    d.shutdown().await;
    drop(stop);
}

/// `otlp.events`: enriched raw events of the selected kinds reach the
/// collector as `picket.event` log records with the event's attributes.
#[tokio::test]
async fn raw_events_are_exported_when_enabled() {
    use picket::delivery::otlp::events::EventExportConfig;
    use picket::model::EventKindName;

    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::default();
    rx.accept.store(true, Ordering::SeqCst);
    let (addr, _stop) = otlp_receiver::start("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let mut cfg = config(tmp.path());
    let mut o = otlp(addr);
    o.events = Some(EventExportConfig {
        kinds: vec![EventKindName::Exec],
        max_batch: 2,
        max_delay_ms: 50,
        ..Default::default()
    });
    cfg.otlp = Some(o);
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    let base = alert("r", Severity::Low, "prod", &[], "m").event;
    for pid in [10u32, 11, 12] {
        let mut ev = base.clone();
        ev.process.pid = pid;
        d.publish_event(&ev);
    }
    let mut fork = base.clone();
    fork.event.kind = EventKindName::Fork;
    d.publish_event(&fork);
    let events = |rx: &Receiver| -> Vec<i64> {
        rx.records()
            .iter()
            .filter(|r| r.event_name == "picket.event")
            .filter_map(|r| delivery_support::otlp_receiver::int_attr(r, "process.pid"))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || events(&rx) == [10, 11, 12]).await,
        "got {:?}",
        events(&rx)
    );
    let recs = rx.records();
    let r = recs
        .iter()
        .find(|r| r.event_name == "picket.event")
        .unwrap();
    assert_eq!(r.severity_text, "info");
    assert_eq!(r.severity_number, 9);
    assert_eq!(attr(&r.attributes, "event.kind"), Some(&str_value("exec")));
    assert_eq!(
        attr(&r.attributes, "k8s.namespace.name"),
        Some(&str_value("prod"))
    );
    assert_eq!(
        r.body.as_ref().and_then(|b| b.value.clone()),
        Some(str_value("exec /bin/sh"))
    );
    // No alert was published: the alert path is untouched.
    assert!(rx.seqs().is_empty());
    d.shutdown().await;
}

/// An unreachable collector makes the event exporter drop whole batches
/// after its attempts, counted by result, instead of blocking.
#[tokio::test]
async fn unreachable_collector_drops_and_counts_events() {
    use picket::delivery::otlp::events::EventExportConfig;
    use picket::delivery::telemetry::{METRICS, ResultLabel};

    let dropped = || {
        METRICS
            .otlp_events
            .get_or_create(&ResultLabel {
                result: "dropped_export_failed".into(),
            })
            .get()
    };
    let before = dropped();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    let mut o = otlp(otlp_receiver::free_port());
    o.timeout_ms = 200;
    o.events = Some(EventExportConfig {
        max_batch: 3,
        max_delay_ms: 20,
        max_attempts: 2,
        retry_initial_ms: 10,
        ..Default::default()
    });
    cfg.otlp = Some(o);
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    let ev = alert("r", Severity::Low, "prod", &[], "m").event;
    for _ in 0..3 {
        d.publish_event(&ev);
    }
    assert!(
        eventually(Duration::from_secs(10), || dropped() == before + 3).await,
        "dropped {}",
        dropped() - before
    );
    d.shutdown().await;
}
