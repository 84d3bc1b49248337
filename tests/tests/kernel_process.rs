//! Real-kernel tests of the process sensor: the real programs are loaded
//! into the running kernel and real processes are started. Root only; they
//! fail (never skip) elsewhere.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use picket::model::{EventKindName, FdType};
use picket_tests::{
    cgroup::TestCgroup,
    kernel::{drain, exec_id_of, start_agent, wait_for},
    kernel_test,
};

const WAIT: Duration = Duration::from_secs(10);

fn canonical(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .expect("canonicalize")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_known_argv_and_cwd() {
    let t = kernel_test!(exec_with_known_argv_and_cwd);
    let cg = TestCgroup::unique("exec");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("/bin/echo");
    cmd.args(["picket-test", "arg with space", "--flag=1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let child = cmd.spawn().expect("spawn echo");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.stdout, b"picket-test arg with space --flag=1\n");

    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of echo", |e| {
        e.kind() == EventKindName::Exec && e.process.pid == pid
    })
    .await;
    let p = &ev.process;
    assert_eq!(
        p.executable.path,
        canonical(std::path::Path::new("/bin/echo"))
    );
    assert_eq!(p.executable.name, "echo");
    assert_eq!(
        p.command_args,
        vec!["/bin/echo", "picket-test", "arg with space", "--flag=1"]
    );
    assert_eq!(
        p.command_line,
        "/bin/echo picket-test arg with space --flag=1"
    );
    assert!(!p.args_truncated);
    assert_eq!(p.working_directory, canonical(dir.path()));
    assert_eq!(p.parent_pid, std::process::id());
    assert_eq!(
        p.parent_exec_id,
        exec_id_of("test-node", std::process::id())
    );
    assert_eq!(
        (p.user.id, p.real_user.id, p.group.id, p.real_group.id),
        (0, 0, 0, 0)
    );
    assert_eq!(p.vpid, pid, "host pid namespace: vpid == pid");
    assert_eq!(p.linux.pid_ns_level, 0);
    assert_eq!(p.linux.cgroup_id, cg.id());
    assert_eq!(p.stdio.stdin, FdType::CharDevice, "stdin is /dev/null");
    assert_eq!(p.stdio.stdout, FdType::Pipe);
    assert!(!p.interactive);
    assert!(
        p.capabilities
            .effective
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"),
        "root has CAP_SYS_ADMIN: {:?}",
        p.capabilities.effective
    );
    assert!(
        ev.container.is_none(),
        "a plain test cgroup is not a container"
    );
    assert_eq!(ev.host.name, "test-node");
    // The echo exits with 0.
    let exit = wait_for(&mut agent, &mut seen, WAIT, "exit of echo", |e| {
        e.kind() == EventKindName::Exit && e.process.pid == pid
    })
    .await;
    let x = exit.process.exit.expect("exit status");
    assert_eq!((x.code, x.signal), (0, 0));
    assert_eq!(exit.process.exec_id, p.exec_id);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_without_exec_and_exit_code() {
    let t = kernel_test!(fork_without_exec_and_exit_code);
    let cg = TestCgroup::unique("fork");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    // The subshell is a fork of sh that never execs and exits with 3.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "( exit 3 ) & echo $!; wait $!; echo $?"])
        .stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let child = cmd.spawn().expect("spawn sh");
    let sh_pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut lines = text.lines();
    let sub_pid: u32 = lines.next().expect("pid line").parse().expect("pid");
    assert_eq!(lines.next(), Some("3"));

    let mut seen = Vec::new();
    let fork = wait_for(&mut agent, &mut seen, WAIT, "fork of the subshell", |e| {
        e.kind() == EventKindName::Fork && e.child.as_ref().is_some_and(|c| c.pid == sub_pid)
    })
    .await;
    assert_eq!(fork.process.pid, sh_pid);
    let sh_path = canonical(std::path::Path::new("/bin/sh"));
    assert_eq!(fork.process.executable.path, sh_path);
    let child_exec_id = fork.child.as_ref().expect("child").exec_id.clone();
    assert!(
        child_exec_id.starts_with("test-node:") && child_exec_id.ends_with(&format!(":{sub_pid}")),
        "{child_exec_id}"
    );

    let exit = wait_for(&mut agent, &mut seen, WAIT, "exit of the subshell", |e| {
        e.kind() == EventKindName::Exit && e.process.pid == sub_pid
    })
    .await;
    let x = exit.process.exit.expect("exit status");
    assert_eq!((x.code, x.signal), (3, 0));
    // Never exec'ed: it still runs sh's image, and its parent is sh.
    assert_eq!(exit.process.executable.path, sh_path);
    assert_eq!(exit.process.parent_pid, sh_pid);
    assert_eq!(exit.process.exec_id, child_exec_id);
    assert!(
        !seen
            .iter()
            .any(|e| e.kind() == EventKindName::Exec && e.process.pid == sub_pid),
        "the subshell never execs"
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_by_signal() {
    let t = kernel_test!(exit_by_signal);
    let cg = TestCgroup::unique("signal");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("30");
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().expect("spawn sleep");
    let pid = child.id();
    let mut seen = Vec::new();
    wait_for(&mut agent, &mut seen, WAIT, "exec of sleep", |e| {
        e.kind() == EventKindName::Exec && e.process.pid == pid
    })
    .await;
    child.kill().expect("kill");
    child.wait().expect("wait");
    let exit = wait_for(&mut agent, &mut seen, WAIT, "exit of sleep", |e| {
        e.kind() == EventKindName::Exit && e.process.pid == pid
    })
    .await;
    let x = exit.process.exit.expect("exit status");
    assert_eq!((x.code, x.signal, x.core_dumped), (0, libc::SIGKILL, false));
    assert_eq!(exit.process.command_args, vec!["/bin/sleep", "30"]);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_process_is_attributed() {
    let t = kernel_test!(container_process_is_attributed);
    let pod_uid = "3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a93";
    let ctr = "4b8e2c1d9f7a6e5d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
    let cg = TestCgroup::create(&format!(
        "picket-test-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ));
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    // A "container": own pid, mount, uts and ipc namespaces; its init execs
    // a marker program that therefore runs as pid 1 of the new namespace.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "/bin/sh",
        "-c",
        "exec /bin/echo in-container",
    ])
    .stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let out = cmd.output().expect("unshare");
    assert!(
        out.status.success(),
        "unshare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"in-container\n");
    let mut seen = Vec::new();
    let ev = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "exec of echo in the container",
        |e| {
            e.kind() == EventKindName::Exec
                && e.process.command_args == ["/bin/echo", "in-container"]
        },
    )
    .await;
    let c = ev.container.as_ref().expect("container section");
    assert_eq!(c.id, ctr);
    assert_eq!(c.runtime, "containerd");
    let k = ev.k8s.as_ref().expect("k8s section");
    assert_eq!(k.pod.uid, pod_uid);
    assert_eq!(k.metadata, picket::model::MetadataStatus::Unresolved);
    assert_eq!(ev.process.vpid, 1, "pid 1 of the new pid namespace");
    assert_eq!(ev.process.linux.pid_ns_level, 1);
    assert_ne!(ev.process.linux.pid_ns, host_pidns());
    assert_eq!(ev.process.in_init_tree, Some(true));
    assert!(
        ev.process
            .linux
            .cgroup
            .ends_with(&format!("/pod{pod_uid}/cri-containerd-{ctr}.scope")),
        "{}",
        ev.process.linux.cgroup
    );
    t.done();
}

fn host_pidns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").expect("ns").ino() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancestry_three_levels() {
    let t = kernel_test!(ancestry_three_levels);
    let cg = TestCgroup::unique("ancestry");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    // test -> sh (level 1) -> sh (level 2) -> echo. "; true" stops sh from
    // exec'ing the last command in place.
    let inner = "/bin/echo deep; true";
    let outer = format!("/bin/sh -c '{inner}'; true");
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &outer]).stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let child = cmd.spawn().expect("spawn");
    let l1 = child.id();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.stdout, b"deep\n");
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of echo", |e| {
        e.kind() == EventKindName::Exec && e.process.command_args == ["/bin/echo", "deep"]
    })
    .await;
    let a = &ev.process.ancestors;
    assert!(a.len() >= 3, "ancestors: {a:?}");
    let sh = canonical(std::path::Path::new("/bin/sh"));
    assert_eq!(a[0].executable.path, sh);
    assert_eq!(a[0].command_line, format!("/bin/sh -c {inner}"));
    assert_eq!(a[0].pid, ev.process.parent_pid);
    assert_eq!(a[1].pid, l1);
    assert_eq!(a[1].command_line, format!("/bin/sh -c {outer}"));
    assert_eq!(a[2].pid, std::process::id());
    assert_eq!(a[2].exec_id, exec_id_of("test-node", std::process::id()));
    assert_eq!(ev.process.parent_exec_id, a[0].exec_id);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_before_the_agent_have_ancestry() {
    let t = kernel_test!(processes_started_before_the_agent_have_ancestry);
    let cg = TestCgroup::unique("seed");
    // Started before the agent: sh -> sleep.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "/bin/sleep 30; true"]);
    cg.enter(&mut cmd);
    let mut sh = cmd.spawn().expect("spawn");
    let sh_pid = sh.id();
    let sleep_pid = wait_child(sh_pid);
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    // SAFETY: kill(2) of our own grandchild.
    unsafe { libc::kill(sleep_pid as i32, libc::SIGTERM) };
    let mut seen = Vec::new();
    let exit = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "exit of the pre-existing sleep",
        |e| e.kind() == EventKindName::Exit && e.process.pid == sleep_pid,
    )
    .await;
    sh.wait().expect("wait sh");
    let p = &exit.process;
    assert_eq!(
        p.executable.path,
        canonical(std::path::Path::new("/bin/sleep"))
    );
    assert_eq!(p.command_args, vec!["/bin/sleep", "30"]);
    assert_eq!(p.parent_pid, sh_pid);
    assert_eq!(
        p.exec_id,
        format!("test-node:{}:{sleep_pid}", start_ticks(&exit))
    );
    assert_eq!(p.ancestors[0].pid, sh_pid);
    assert_eq!(
        p.ancestors[0].command_line,
        "/bin/sh -c /bin/sleep 30; true"
    );
    assert_eq!(p.ancestors[1].pid, std::process::id());
    assert_eq!(p.exit.expect("status").signal, libc::SIGTERM);
    t.done();
}

/// The start-ticks part of the event's exec id (checked against its format).
fn start_ticks(ev: &picket::model::Event) -> u64 {
    ev.process
        .exec_id
        .split(':')
        .nth(1)
        .expect("ticks")
        .parse()
        .expect("number")
}

/// Waits until `pid` has exactly one child and returns it.
fn wait_child(pid: u32) -> u32 {
    for _ in 0..500 {
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            && let Some(first) = c.split_whitespace().next()
        {
            let child: u32 = first.parse().expect("pid");
            // Wait for the exec to have happened.
            if std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                .is_ok_and(|s| s.starts_with("/bin/sleep"))
            {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no child of {pid} appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_ring_buffer_reports_exact_losses() {
    let t = kernel_test!(small_ring_buffer_reports_exact_losses);
    let cg = TestCgroup::unique("loss");
    // One page of ring buffer and no slack in the channels: a burst of forks
    // must overflow while the test is not consuming.
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |c| {
        c.sensor.ring_buffer_bytes = 4096;
        c.channel_capacity = 1;
        c.loss_interval = Duration::from_millis(100);
    })
    .await;
    const N: usize = 300;
    // Exactly N forks, each child exiting at once (shells fork a
    // varying number of times for subshells, so the burst is perl).
    let mut cmd = Command::new("/usr/bin/perl");
    cmd.args(["-e", &format!("for (1..{N}) {{ my $p = fork(); if (defined $p && $p == 0) {{ exit 0 }} }} 1 while wait() != -1;")]);
    cg.enter(&mut cmd);
    let status = cmd.status().expect("burst");
    assert!(status.success());
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let delivered = |k: EventKindName| seen.iter().filter(|e| e.kind() == k).count() as u64;
    let lost = |k: &str| -> u64 {
        seen.iter()
            .filter_map(|e| e.lost.as_ref())
            .filter(|l| l.kind == k)
            .map(|l| l.count)
            .sum()
    };
    let forks = N as u64;
    assert!(
        lost("fork") > 0,
        "the burst should overflow a one-page ring buffer"
    );
    let pids: std::collections::BTreeSet<u32> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::Fork)
        .map(|e| e.process.pid)
        .collect();
    assert_eq!(
        delivered(EventKindName::Fork) + lost("fork"),
        forks,
        "every fork is delivered or counted as lost (delivered {}, lost {}, forking pids {pids:?})",
        delivered(EventKindName::Fork),
        lost("fork")
    );
    // Every forked child and perl itself exit.
    assert_eq!(delivered(EventKindName::Exit) + lost("exit"), forks + 1);
    // Only perl itself execs.
    assert_eq!(delivered(EventKindName::Exec) + lost("exec"), 1);
    t.done();
}

/// Wake-up batching (`--ring-wakeup-us`): with a long interval, a burst's
/// first record wakes the reader and the rest are submitted silently. Nothing
/// else happens in the test cgroup afterwards, so only the reader's re-poll
/// can deliver the tail: every record must still arrive, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_wakeups_deliver_the_tail_of_a_burst() {
    let t = kernel_test!(batched_wakeups_deliver_the_tail_of_a_burst);
    let cg = TestCgroup::unique("wakeup");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |c| {
        c.sensor.ring_wakeup_interval = Duration::from_millis(200);
    })
    .await;
    const N: usize = 200;
    let mut cmd = Command::new("/usr/bin/perl");
    cmd.args(["-e", &format!("for (1..{N}) {{ my $p = fork(); if (defined $p && $p == 0) {{ exit 0 }} }} 1 while wait() != -1;")]);
    cg.enter(&mut cmd);
    let status = cmd.status().expect("burst");
    assert!(status.success());
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let count = |k: EventKindName| seen.iter().filter(|e| e.kind() == k).count();
    let lost: u64 = seen
        .iter()
        .filter_map(|e| e.lost.as_ref())
        .map(|l| l.count)
        .sum();
    assert_eq!(lost, 0);
    assert_eq!(count(EventKindName::Exec), 1, "perl's exec");
    assert_eq!(count(EventKindName::Fork), N);
    assert_eq!(count(EventKindName::Exit), N + 1, "the children and perl");
    t.done();
}

/// `process.executable.written_after_container_start`: a binary copied into
/// a container after its init started is flagged, one from before is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_written_after_container_start_is_flagged() {
    let t = kernel_test!(binary_written_after_container_start_is_flagged);
    let pod_uid = "6a1d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a93";
    let ctr = "7c8e2c1d9f7a6e5d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
    let cg = TestCgroup::create(&format!(
        "picket-test-drop-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let dropped = dir.path().join("dropped");
    let mut agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    // The init (sh, pid 1) copies sleep after it started and runs the copy,
    // then the image's own sleep. Both sleep so /proc/<pid>/exe is there
    // when the agent looks.
    let script = format!(
        "cp /usr/bin/sleep {d} && {d} 0.5; /usr/bin/sleep 0.5",
        d = dropped.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--fork", "--pid", "--mount", "/bin/sh", "-c", &script]);
    cg.enter(&mut cmd);
    assert!(cmd.status().expect("unshare").success());
    let mut seen = Vec::new();
    let path = canonical(&dropped);
    let ev = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "exec of the dropped copy",
        |e| e.kind() == EventKindName::Exec && e.process.executable.path == path,
    )
    .await;
    assert_eq!(
        ev.process.executable.written_after_container_start,
        Some(true)
    );
    let ev = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "exec of the image's sleep",
        |e| e.kind() == EventKindName::Exec && e.process.executable.path == "/usr/bin/sleep",
    )
    .await;
    assert_eq!(
        ev.process.executable.written_after_container_start,
        Some(false)
    );
    // The init itself (sh) comes from before the container.
    let init = seen
        .iter()
        .find(|e| e.kind() == EventKindName::Exec && e.process.vpid == 1)
        .expect("exec of the init");
    assert_eq!(init.process.executable.path, "/usr/bin/dash");
    assert_eq!(
        init.process.executable.written_after_container_start,
        Some(false)
    );
    t.done();
}
