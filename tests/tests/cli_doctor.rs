//! `picket doctor --config`: the runtime sockets it checks are the ones the
//! agent will use (the configuration's `runtimes:`), not the defaults, and a
//! configuration it cannot read is an error naming the file. Runs the shipped
//! binary with `--no-load` (nothing is loaded into the kernel).

use std::{os::unix::net::UnixListener, process::Command};

use picket_tests::run::picket_binary;

/// The table row of one check, e.g. `runtime API docker (optional)`.
fn row<'a>(table: &'a str, item: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(item))
        .unwrap_or_else(|| panic!("no row {item:?} in:\n{table}"))
}

#[test]
fn doctor_checks_the_configured_runtime_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker.sock");
    let _listener = UnixListener::bind(&docker).unwrap();
    let podman = dir.path().join("absent-podman.sock");
    let config = dir.path().join("picket.yaml");
    std::fs::write(
        &config,
        format!(
            "runtimes:\n  docker_socket: {}\n  podman_socket: {}\n  containerd_socket: ''\n",
            docker.display(),
            podman.display()
        ),
    )
    .unwrap();

    let out = Command::new(picket_binary())
        .args(["doctor", "--no-load", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let docker_row = row(&table, "runtime API docker (optional)");
    assert!(
        docker_row.contains(&docker.display().to_string()),
        "{docker_row}"
    );
    assert!(
        docker_row.contains(&format!("{} accepts connections", docker.display())),
        "{docker_row}"
    );
    let podman_row = row(&table, "runtime API podman (optional)");
    assert!(
        podman_row.contains(&format!("{} absent", podman.display())),
        "{podman_row}"
    );
    let containerd_row = row(&table, "runtime API containerd (optional)");
    assert!(
        containerd_row.contains("disabled in the configuration"),
        "{containerd_row}"
    );
}

#[test]
fn doctor_refuses_a_configuration_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("picket.yaml");
    std::fs::write(&config, "runtimes:\n  docker_sockett: /x\n").unwrap();
    let out = Command::new(picket_binary())
        .args(["doctor", "--no-load", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("doctor: configuration: {}: ", config.display())),
        "{err}"
    );
    assert!(err.contains("docker_sockett"), "{err}");
    assert!(out.stdout.is_empty());
}
