//! End-to-end, real kernel: `kubectl exec` into a (fake) pod container, with
//! and without a terminal, through the shipped `picket run` binary and the
//! default rules. Root only; they fail (never skip) elsewhere.
//!
//! Negative cases happen before the positive one, so once the positive
//! alert arrived the agent has processed them too (ring buffer order).

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use picket::model::{EventKindName, FdType, Severity};
use picket_tests::{
    cgroup::TestCgroup,
    container::{FakeContainer, open_pty},
    kernel_test,
    run::{ChildGuard, PicketRun, RunOptions, canonical},
};

const WAIT: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(20);

/// Runs a `kubectl exec`-like command with stdin from /dev/null; returns
/// (nsenter's pid, stdout).
fn exec_noninteractive(mut cmd: Command) -> (u32, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd);
    let pid = child.id();
    let status = child.wait_timeout(RUN);
    let mut out = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success(), "{cmd:?}: {status}");
    (pid, out)
}

/// Runs `cmd` with stdin, stdout and stderr on a new terminal, types
/// `input` and waits for the exit; returns the pid of `cmd`.
fn run_on_terminal(mut cmd: Command, input: &[u8]) -> u32 {
    let (master, slave) = open_pty();
    cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    let mut child = ChildGuard::spawn(&mut cmd);
    // The child holds the only slave fds now.
    drop(cmd);
    let mut term = std::fs::File::from(master);
    term.write_all(input).expect("type into the terminal");
    let pid = child.id();
    assert!(child.wait_timeout(RUN).success(), "{pid} on the terminal");
    pid
}

#[test]
fn exec_into_pod_from_outside_the_init_tree() {
    let t = kernel_test!(exec_into_pod_from_outside_the_init_tree);
    let pod_uid = "6a1b7c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let id = "c0ffee00".repeat(8);
    let go = tempfile::Builder::new()
        .prefix("picket-e2e-exec-")
        .tempdir()
        .expect("tempdir");
    let trigger = go.path().join("go");
    // The container's entrypoint waits for the agent, then starts programs
    // of its own: its init tree (negative cases).
    let ctr = FakeContainer::start(
        "e2e-exec",
        pod_uid,
        &id,
        &format!(
            "while [ ! -e {} ]; do /bin/sleep 0.02; done; /bin/echo from-init >/dev/null; exec /bin/sleep 1000",
            trigger.display()
        ),
    );
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    std::fs::write(&trigger, b"").expect("trigger");
    ctr.wait_until_sleeping();
    // `kubectl exec <pod> -- /bin/sh -c ...` without a terminal. The
    // session's own child (echo) has its parent inside the namespace: not
    // a new session (negative).
    let script = "/bin/echo inner >/dev/null; echo vpid=$$; exit 0";
    let (nsenter_pid, out) = exec_noninteractive(ctr.exec("/bin/sh", &["-c", script]));
    let vpid: u32 = out
        .trim()
        .strip_prefix("vpid=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(vpid > 1, "a new pid inside the container: {vpid}");

    let alert = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.parent_pid == nsenter_pid
    });
    assert_eq!(alert.severity, Severity::Medium);
    assert_eq!(
        alert.rule.name,
        "Session started in a running container from outside"
    );
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Exec);
    let p = &ev.process;
    assert_eq!(p.executable.path, canonical("/bin/sh"));
    assert_eq!(p.command_args, vec!["/bin/sh", "-c", script]);
    assert_eq!(p.vpid, vpid, "pid inside the container");
    assert_eq!(p.parent_vpid, 0, "the parent is outside the pid namespace");
    assert_eq!(p.in_init_tree, Some(false));
    assert_eq!(p.linux.pid_ns_level, 1);
    assert_eq!(p.linux.cgroup_id, ctr.cgroup.id());
    assert!(!p.interactive);
    let c = ev.container.as_ref().expect("container section");
    assert_eq!(
        (c.id.as_str(), c.runtime.as_str()),
        (id.as_str(), "containerd")
    );
    assert_eq!(ev.k8s.as_ref().map(|k| k.pod.uid.as_str()), Some(pod_uid));
    assert!(
        alert
            .message
            .starts_with(&format!("exec into container {id} (pod ")),
        "{}",
        alert.message
    );

    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("exec-into-pod");
    assert_eq!(
        all.len(),
        1,
        "only the session, not the init tree nor the session's child: {all:?}"
    );
    assert!(
        picket.alerts_of("terminal-shell-in-container").is_empty(),
        "no terminal: {:?}",
        picket.alerts_of("terminal-shell-in-container")
    );
    t.done();
}

#[test]
fn interactive_shell_in_a_container() {
    let t = kernel_test!(interactive_shell_in_a_container);
    let pod_uid = "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f";
    let id = "d00dfeed".repeat(8);
    let ctr = FakeContainer::start("e2e-tty", pod_uid, &id, "exec /bin/sleep 1000");
    let host = TestCgroup::unique("e2e-tty-host");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone(), host.path.clone()],
        ..Default::default()
    });
    // Negative: an interactive shell on the host (not in a container).
    let mut host_sh = Command::new("/bin/sh");
    host.enter(&mut host_sh);
    let host_pid = run_on_terminal(host_sh, b"exit 0\n");
    // Positive: `kubectl exec -it <pod> -- /bin/sh`.
    let nsenter_pid = run_on_terminal(ctr.exec("/bin/sh", &[]), b"echo hi\nexit 0\n");

    let alert = picket.wait_alert("terminal-shell-in-container alert", WAIT, |a| {
        a.rule.id == "terminal-shell-in-container" && a.event.process.parent_pid == nsenter_pid
    });
    assert_eq!(alert.severity, Severity::Medium);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Exec);
    assert_eq!(ev.process.executable.path, canonical("/bin/sh"));
    assert_eq!(ev.process.command_args, vec!["/bin/sh"]);
    assert!(ev.process.interactive);
    assert_eq!(ev.process.stdio.stdin, FdType::Tty);
    assert_eq!(ev.process.parent_vpid, 0);
    assert_eq!(
        ev.container.as_ref().map(|c| c.id.as_str()),
        Some(id.as_str())
    );
    assert_eq!(ev.k8s.as_ref().map(|k| k.pod.uid.as_str()), Some(pod_uid));
    // The same session is an exec into the pod, interactive.
    let exec = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.parent_pid == nsenter_pid
    });
    assert_eq!(exec.event.process.pid, ev.process.pid);
    assert!(
        exec.message.contains("interactive true"),
        "{}",
        exec.message
    );

    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("terminal-shell-in-container");
    assert_eq!(all.len(), 1, "not the host shell (pid {host_pid}): {all:?}");
    t.done();
}

/// A process in a container talks to a container runtime's API socket
/// (`container-runtime-socket-access`). The sockets are real Unix listeners
/// in a private temporary directory (named like the runtimes' sockets), so
/// nothing on the host is touched; pathname sockets are reachable from the
/// container's network namespace as a mounted runtime socket would be.
#[test]
fn runtime_socket_connect_from_a_container() {
    let t = kernel_test!(runtime_socket_connect_from_a_container);
    let pod_uid = "7b2c8d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e";
    let id = "50c4e700".repeat(8);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-sock-")
        .tempdir()
        .expect("tempdir");
    let docker = dir.path().join("docker.sock");
    let app = dir.path().join("app.sock");
    let _docker_l = std::os::unix::net::UnixListener::bind(&docker).expect("bind docker.sock");
    let _app_l = std::os::unix::net::UnixListener::bind(&app).expect("bind app.sock");
    let ctr = FakeContainer::start("e2e-sock", pod_uid, &id, "exec /bin/sleep 1000");
    ctr.wait_until_sleeping();
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let connect = |path: &std::path::Path| {
        let script = format!(
            "import socket,os\n\
             s=socket.socket(socket.AF_UNIX)\n\
             s.connect({:?})\n\
             print(os.getpid())\n",
            path.display().to_string()
        );
        let (_, out) = exec_noninteractive(ctr.exec("/usr/bin/python3", &["-c", &script]));
        out.trim().parse::<u32>().expect("vpid line")
    };
    // Negative first (ring order): the application's own socket.
    let app_vpid = connect(&app);
    let docker_vpid = connect(&docker);
    let docker_path = docker.display().to_string();
    let alert = picket.wait_alert("runtime socket alert", WAIT, |a| {
        a.rule.id == "container-runtime-socket-access"
    });
    assert_eq!(alert.severity, Severity::High);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Connect);
    assert_eq!(ev.process.vpid, docker_vpid);
    assert_eq!(ev.process.executable.path, canonical("/usr/bin/python3"));
    let net = ev.network.as_ref().expect("network section");
    assert_eq!(net.r#type, "unix");
    assert_eq!(
        net.peer.as_ref().map(|p| p.address.as_str()),
        Some(docker_path.as_str())
    );
    assert_eq!(
        ev.container.as_ref().map(|c| c.id.as_str()),
        Some(id.as_str())
    );
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("container-runtime-socket-access");
    assert_eq!(
        all.len(),
        1,
        "only the docker.sock connect (not app.sock, vpid {app_vpid}): {all:?}"
    );
    t.done();
}

/// `credential-search`: searches for key material by name (`find -name
/// id_rsa`) and by content (`grep -r "PRIVATE KEY"`) in a container alert;
/// ordinary searches (`find -name '*.log'`, `grep -r ERROR`) do not.
#[test]
fn credential_search_in_a_container() {
    let t = kernel_test!(credential_search_in_a_container);
    let pod_uid = "8c3d9e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    let id = "c7ed5ea7".repeat(8);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-creds-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("app.log"), "ERROR nothing\n").expect("log");
    let d = dir.path().display().to_string();
    let ctr = FakeContainer::start("e2e-creds", pod_uid, &id, "exec /bin/sleep 1000");
    ctr.wait_until_sleeping();
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    // Negative first (ring order).
    exec_noninteractive(ctr.exec("/usr/bin/find", &[&d, "-name", "*.log"]));
    exec_noninteractive(ctr.exec("/usr/bin/grep", &["-r", "ERROR", &d]));
    let (_, out) = exec_noninteractive(ctr.exec("/usr/bin/find", &[&d, "-name", "id_rsa*"]));
    assert_eq!(out, "");
    // grep finds nothing: exit 1, so not through exec_noninteractive.
    let mut cmd = ctr.exec("/usr/bin/grep", &["-rl", "BEGIN OPENSSH PRIVATE KEY", &d]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let st = ChildGuard::spawn(&mut cmd).wait_timeout(RUN);
    assert_eq!(st.code(), Some(1), "grep found nothing");
    let want: [&[&str]; 2] = [
        &["/usr/bin/find", &d, "-name", "id_rsa*"],
        &["/usr/bin/grep", "-rl", "BEGIN OPENSSH PRIVATE KEY", &d],
    ];
    for args in want {
        let alert = picket.wait_alert("credential-search alert", WAIT, |a| {
            a.rule.id == "credential-search" && a.event.process.command_args == args
        });
        assert_eq!(alert.severity, Severity::Medium);
        assert_eq!(alert.event.event.kind, EventKindName::Exec);
        assert_eq!(
            alert.event.container.as_ref().map(|c| c.id.as_str()),
            Some(id.as_str())
        );
    }
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("credential-search");
    assert_eq!(all.len(), 2, "only the two searches for keys: {all:?}");
    t.done();
}
