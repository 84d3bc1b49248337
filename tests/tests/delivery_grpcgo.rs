//! A standard Go client (issue #17, item 9): grpc-go, as packaged by Debian
//! (`golang-google-grpc-dev`, grpc-go 1.33), with its default dial options
//! over the Unix socket. grpc-go of that age sends the socket path as the
//! HTTP/2 `:authority`; newer releases send `localhost`. The client
//! (`delivery_support/grpcgo_client/main.go`) is built at test time, offline,
//! in GOPATH mode (`cargo xtask setup` installs the Debian packages).

mod delivery_support;

use std::path::{Path, PathBuf};
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

/// Builds the Go client into `dir` with Debian's Go and grpc-go sources.
fn build_client(dir: &Path) -> PathBuf {
    let bin = dir.join("grpcgo_client");
    let src = root().join("tests/tests/delivery_support/grpcgo_client/main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", dir.display()))
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .expect("go (run `cargo xtask setup`: golang-go, golang-google-grpc-dev)");
    assert!(
        out.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_with_default_options_over_the_unix_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let client = {
        let dir = tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || build_client(&dir))
            .await
            .unwrap()
    };
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
    let out = tokio::task::spawn_blocking(move || Command::new(client).arg(sock).output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpc-go client failed: {stderr}");
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
    assert_eq!(d.spool().cursor(&format!("api.uid-{uid}.go")), Some(2));
    d.shutdown().await;
}
