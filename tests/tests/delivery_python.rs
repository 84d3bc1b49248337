//! Standard clients and servers in Python (issue #17, item 9):
//! - grpcio with its default channel options over the Unix socket. grpcio
//!   sends the socket path as the HTTP/2 `:authority`; the server must accept
//!   it. Stubs are generated from `proto/` at test time
//!   (`grpc_tools.protoc`, installed by `cargo xtask setup`).
//! - The OTLP sink exporting to a grpcio server built from the official OTLP
//!   stubs (`opentelemetry-proto`), not to our own tonic receiver: the
//!   collector side shares no code with the exporter.

mod delivery_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use delivery_support::{alert, config};
use picket::delivery::grpc::GrpcConfig;
use picket::delivery::otlp::{OtlpConfig, SERVICE_VERSION};
use picket::delivery::sink::SinkPolicy;
use picket::delivery::{Delivery, DeliveryHooks};
use picket::model::Severity;

/// The tests of this binary run one at a time: one of them measures the
/// process's resident memory, which the others would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// Generates the Python stubs of `proto/` into `stubs` (grpc_tools.protoc).
fn gen_stubs(stubs: &Path) {
    std::fs::create_dir_all(stubs).unwrap();
    let proto = root().join("proto");
    let mut protoc = Command::new("python3");
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()));
    for f in [
        "agent",
        "alerts",
        "common",
        "events",
        "rules",
        "containment",
    ] {
        protoc.arg(proto.join(format!("picket/v1/{f}.proto")));
    }
    let st = protoc
        .status()
        .expect("python3 (run `cargo xtask setup` for grpcio-tools)");
    assert!(
        st.success(),
        "grpc_tools.protoc failed: pip install grpcio grpcio-tools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_default_options_over_the_unix_socket() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("run/picket.sock");
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: format!("unix:{}", sock.display()),
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    for m in ["one", "two"] {
        d.publish(alert("r1", Severity::High, "prod", &[], m))
            .await
            .unwrap();
    }
    let stubs = tmp.path().join("stubs");
    gen_stubs(&stubs);
    let script = root().join("tests/tests/delivery_support/grpcio_client.py");
    let target = format!("unix:{}", sock.display());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&stubs)
            .arg(target)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpcio client failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let uid = unsafe { libc::getuid() };
    assert!(
        v["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("uid={uid} ")),
        "{v}"
    );
    assert_eq!(v["seqs"], serde_json::json!([1, 2]));
    assert_eq!(v["acked"], serde_json::json!(2));
    assert_eq!(d.spool().cursor(&format!("api.uid-{uid}.py")), Some(2));
    d.shutdown().await;
}

/// A Python grpcio OTLP receiver (`delivery_support/otlp_receiver.py`).
/// Stdin is kept open: the receiver runs until it is dropped.
struct PyCollector {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl PyCollector {
    fn start(fail_first: u32) -> (Self, u16) {
        let script = root().join("tests/tests/delivery_support/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(fail_first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (run `cargo xtask setup` for opentelemetry-proto)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut c = Self { child, lines };
        let first = c.next_line();
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver did not start: {first:?}"));
        (c, port)
    }

    fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no line from the Python OTLP receiver within 30 s")
    }
}

impl Drop for PyCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key -> value` of an OTLP JSON attribute list (protobuf JSON mapping:
/// int64 values are strings).
fn attrs(list: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_to_a_python_grpcio_collector_with_retry() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    // The first export is refused with UNAVAILABLE, as by a collector that
    // is restarting: the batch must be retried and arrive once, in order.
    let (mut rx, port) = tokio::task::spawn_blocking(|| PyCollector::start(1))
        .await
        .unwrap();
    let mut cfg = config(tmp.path());
    cfg.otlp = Some(OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        timeout_ms: 5000,
        policy: SinkPolicy {
            max_batch: 8,
            max_delay_ms: 200,
            retry_initial_ms: 50,
            retry_max_ms: 200,
        },
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    for m in ["one", "two"] {
        d.publish(alert("r1", Severity::High, "prod", &[("app", "web")], m))
            .await
            .unwrap();
    }
    let (refused, exports) = tokio::task::spawn_blocking(move || {
        let mut refused = 0;
        let mut records = Vec::new();
        while records.len() < 2 {
            let l = rx.next_line();
            if l == "refused" {
                refused += 1;
                continue;
            }
            let doc: serde_json::Value =
                serde_json::from_str(l.strip_prefix("export ").expect("export line")).unwrap();
            for rl in doc["resource_logs"].as_array().unwrap() {
                for sl in rl["scope_logs"].as_array().unwrap() {
                    assert_eq!(sl["scope"]["name"], "picket");
                    for r in sl["log_records"].as_array().unwrap() {
                        records.push((rl["resource"].clone(), r.clone()));
                    }
                }
            }
        }
        (refused, records)
    })
    .await
    .unwrap();
    assert_eq!(refused, 1);
    assert_eq!(exports.len(), 2, "each alert exactly once: {exports:?}");
    for (i, (resource, r)) in exports.iter().enumerate() {
        let res = attrs(&resource["attributes"]);
        assert_eq!(
            res["service.name"],
            serde_json::json!({"string_value": "picket"})
        );
        assert_eq!(
            res["service.version"],
            serde_json::json!({"string_value": SERVICE_VERSION})
        );
        assert_eq!(
            res["host.name"],
            serde_json::json!({"string_value": "node-a"})
        );
        assert_eq!(r["severity_number"], "SEVERITY_NUMBER_ERROR");
        assert_eq!(r["severity_text"], "high");
        assert_eq!(r["event_name"], "picket.alert");
        assert_eq!(
            r["body"],
            serde_json::json!({"string_value": (["one", "two"][i])})
        );
        let a = attrs(&r["attributes"]);
        assert_eq!(
            a["picket.alert.seq"],
            serde_json::json!({"int_value": (i + 1).to_string()})
        );
        assert_eq!(
            a["picket.rule.id"],
            serde_json::json!({"string_value": "r1"})
        );
        assert_eq!(
            a["k8s.pod.label.app"],
            serde_json::json!({"string_value": "web"})
        );
        assert_eq!(a["process.pid"], serde_json::json!({"int_value": "4242"}));
        assert_eq!(
            a["process.command_args"],
            serde_json::json!({"array_value": {"values": [
                {"string_value": "sh"}, {"string_value": "-c"}, {"string_value": "id"}
            ]}})
        );
    }
    d.shutdown().await;
}

/// The agent's resident memory (VmRSS, bytes) — the test process is the
/// agent here: the clients run in a separate Python process.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Issue #17 item 1: subscribers that open `StreamAlerts(from_seq=1)` over a
/// full spool and never read used to cost ~2.6 MiB each (400 of them took
/// the agent past its 512 MiB limit). With the stream cap at its default
/// (64) and 64 standard-client streams on 16 connections, each stream now
/// lags on the spool, not in memory: the agent's RSS grows by a bounded
/// amount per stream (`PER_STREAM_BOUND`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grpcio_subscribers_cost_bounded_memory() {
    let _serial = SERIAL.lock().await;
    /// Measured on this design: the bound is the stream queue
    /// (`STREAM_QUEUE` x `READ_BATCH` alerts of ~1.2 KiB) plus the HTTP/2
    /// stream window; 512 KiB leaves headroom for allocator slack and is a
    /// fifth of what one stream cost before the fix.
    const PER_STREAM_BOUND: u64 = 512 * 1024;
    const CONNS: usize = 16;
    const PER_CONN: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("run/picket.sock");
    let mut cfg = config(tmp.path());
    cfg.grpc = Some(GrpcConfig {
        listen: format!("unix:{}", sock.display()),
        ..Default::default()
    });
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    let filler = "x".repeat(1024);
    for i in 0..1500 {
        d.publish(alert(
            "r1",
            Severity::High,
            "prod",
            &[],
            &format!("a{i} {filler}"),
        ))
        .await
        .unwrap();
    }
    let stubs = tmp.path().join("stubs");
    gen_stubs(&stubs);
    let before = rss_bytes();
    let script = root().join("tests/tests/delivery_support/grpcio_idle_streams.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&stubs)
        .arg(format!("unix:{}", sock.display()))
        .arg(CONNS.to_string())
        .arg(PER_CONN.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        BufReader::new(out).read_line(&mut l).unwrap();
        l
    })
    .await
    .unwrap();
    assert_eq!(line.trim(), format!("ready {}", CONNS * PER_CONN));
    // Let every server-side stream fill what it may buffer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "agent RSS {} KiB -> {} KiB: {} KiB for {} idle streams ({} KiB each)",
        before / 1024,
        after / 1024,
        growth / 1024,
        CONNS * PER_CONN,
        growth / 1024 / (CONNS * PER_CONN) as u64
    );
    assert!(
        growth <= PER_STREAM_BOUND * (CONNS * PER_CONN) as u64,
        "idle streams cost {} KiB (bound {} KiB)",
        growth / 1024,
        PER_STREAM_BOUND * (CONNS * PER_CONN) as u64 / 1024
    );
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    d.shutdown().await;
}
