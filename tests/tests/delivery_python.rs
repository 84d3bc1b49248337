//! A standard client: Python grpcio with its default channel options over
//! the Unix socket (issue #17, item 9). grpcio sends the socket path as the
//! HTTP/2 `:authority`; the server must accept it. Stubs are generated from
//! `proto/` at test time (`grpc_tools.protoc`, installed by
//! `cargo xtask setup`).

mod delivery_support;

use std::path::Path;
use std::process::Command;

use delivery_support::{alert, config};
use picket::delivery::grpc::GrpcConfig;
use picket::delivery::{Delivery, DeliveryHooks};
use picket::model::Severity;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_default_options_over_the_unix_socket() {
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
    std::fs::create_dir_all(&stubs).unwrap();
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
