//! End-to-end, real kernel: the real action on the host produces the
//! expected alert through the shipped `picket run` binary and the default
//! rules (reverse shell, setuid escalation, drop-and-execute). Root only;
//! they fail (never skip) elsewhere.
//!
//! Negative cases run before the positive one: the ring buffer keeps the
//! order of events, so once the positive alert has arrived the agent has
//! seen the negative actions too, and their absence is meaningful.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::{
        fd::OwnedFd,
        unix::{fs::PermissionsExt, net::UnixStream},
    },
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use picket::model::{Endpoint, EventKindName, FdType, Severity, SocketInfo};
use picket_tests::{
    cgroup::TestCgroup,
    container::FakeContainer,
    kernel_test,
    run::{ChildGuard, PicketRun, RunOptions, canonical, output_within},
};

const WAIT: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(20);
/// Python from Debian (the `python3` on PATH may be a pyenv shim script).
const PY: &str = "/usr/bin/python3";

fn picket_for(cg: &TestCgroup) -> PicketRun {
    PicketRun::start(RunOptions {
        only_cgroups: vec![cg.path.clone()],
        ..Default::default()
    })
}

/// Runs `cmd` in `cg` and expects success; returns stdout.
fn run_in(cg: &TestCgroup, cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null());
    cg.enter(cmd);
    let out = output_within(cmd, RUN);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

/// A connected loopback TCP pair: (the process's end, the listener's end).
fn loopback_pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let ours = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (theirs, _) = l.accept().expect("accept");
    (ours, theirs)
}

/// Spawns `cmd` in `cg` with stdin and stdout on `conn` (stderr /dev/null).
/// `cmd` and `conn` are consumed so that only the child keeps the socket
/// open: the peer sees EOF when the child exits.
fn spawn_on_socket(cg: &TestCgroup, mut cmd: Command, conn: impl Into<OwnedFd>) -> ChildGuard {
    let conn: OwnedFd = conn.into();
    let fd = |s: &OwnedFd| s.try_clone().expect("dup socket");
    cmd.stdin(Stdio::from(fd(&conn)))
        .stdout(Stdio::from(fd(&conn)))
        .stderr(Stdio::null());
    cg.enter(&mut cmd);
    ChildGuard::spawn(&mut cmd)
}

/// The pid a python child prints as its first line on stdout.
fn read_pid(child: &mut ChildGuard) -> u32 {
    let out = child.0.stdout.as_mut().expect("stdout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).expect("read pid") == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line)
        .trim()
        .parse()
        .expect("pid line")
}

/// Sends `cmd` to a shell on the other end of `peer` and reads one line back.
fn ask(peer: &mut (impl Read + Write), cmd: &str) -> String {
    peer.write_all(cmd.as_bytes()).expect("send command");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while peer.read(&mut b).expect("read answer") == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).expect("utf8 answer")
}

#[test]
fn reverse_shell_with_stdio_on_a_loopback_socket() {
    let t = kernel_test!(reverse_shell_with_stdio_on_a_loopback_socket);
    let cg = TestCgroup::unique("e2e-rsh");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![cg.path.clone()],
        events: true,
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");

    // Negative: a program that is not a shell, with its stdio on a socket.
    let (conn, mut peer) = loopback_pair(&listener);
    let mut cat = spawn_on_socket(&cg, Command::new("/bin/cat"), conn);
    let cat_pid = cat.id();
    peer.write_all(b"not a shell\n").expect("write");
    peer.shutdown(Shutdown::Write).expect("shutdown");
    let mut echoed = String::new();
    peer.read_to_string(&mut echoed).expect("read");
    assert_eq!(echoed, "not a shell\n");
    assert!(cat.wait_timeout(RUN).success());

    // Negative: a shell on pipes.
    let mut sh = Command::new("/bin/sh");
    sh.args(["-c", "exit 0"]);
    run_in(&cg, &mut sh);

    // Negative: a shell whose stdio is a Unix socketpair (what Node.js
    // `child_process` and sshd give their children). It stays alive until
    // the positive alert arrived, so its socket family was really looked up.
    let (ours, mut parent_end) = UnixStream::pair().expect("socketpair");
    let mut unix_shell = spawn_on_socket(&cg, Command::new("/bin/sh"), ours);
    let unix_shell_pid = unix_shell.id();
    assert_eq!(ask(&mut parent_end, "echo unix-$((6*7))\n"), "unix-42");

    // Positive: the shell reads commands from, and writes to, the listener's
    // peer; it lives on (as a real session does) until the alert arrived.
    let (conn, mut attacker) = loopback_pair(&listener);
    let attacker_port = attacker.local_addr().expect("addr").port();
    let mut shell = spawn_on_socket(&cg, Command::new("/bin/sh"), conn);
    let shell_pid = shell.id();
    assert_eq!(
        ask(&mut attacker, "echo owned-$((6*7))\n"),
        "owned-42",
        "the shell really ran over the socket"
    );

    let alert = picket.wait_alert("reverse-shell alert for the shell", WAIT, |a| {
        a.rule.id == "reverse-shell" && a.event.process.pid == shell_pid
    });
    attacker.write_all(b"exit\n").expect("exit");
    assert!(shell.wait_timeout(RUN).success());
    parent_end.write_all(b"exit\n").expect("exit");
    assert!(unix_shell.wait_timeout(RUN).success());
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(
        alert.rule.name,
        "Shell with its standard streams on a network socket"
    );
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Exec);
    let sh_path = canonical("/bin/sh");
    assert_eq!(ev.process.executable.path, sh_path);
    assert_eq!(ev.process.command_args, vec!["/bin/sh"]);
    assert_eq!(ev.process.parent_pid, std::process::id());
    assert_eq!(ev.process.stdio.stdin, FdType::Socket);
    assert_eq!(ev.process.stdio.stdout, FdType::Socket);
    assert_eq!(ev.process.stdio.stderr, FdType::CharDevice, "/dev/null");
    let inet = SocketInfo {
        family: "inet".into(),
        peer: Some(Endpoint {
            address: "127.0.0.1".into(),
            port: attacker_port,
        }),
    };
    assert_eq!(ev.process.stdio.stdin_socket.as_ref(), Some(&inet));
    assert_eq!(ev.process.stdio.stdout_socket.as_ref(), Some(&inet));
    assert_eq!(ev.process.linux.cgroup_id, cg.id());
    assert!(ev.container.is_none(), "a host process");
    assert!(
        alert.message.starts_with(&format!(
            "reverse shell: {sh_path} (/bin/sh) with stdin socket, stdout socket (exec)"
        )),
        "{}",
        alert.message
    );

    picket.drain(Duration::from_millis(500));
    let others: Vec<_> = picket
        .alerts_of("reverse-shell")
        .into_iter()
        .filter(|a| a.event.process.pid != shell_pid)
        .collect();
    assert!(
        others.is_empty(),
        "cat (pid {cat_pid}), the shell on pipes and the shell on a socketpair \
         (pid {unix_shell_pid}) must not match: {others:?}"
    );
    let unix_exec = picket.wait_event("exec of the socketpair shell", WAIT, |e| {
        e.event.kind == EventKindName::Exec && e.process.pid == unix_shell_pid
    });
    assert_eq!(
        unix_exec.process.stdio.stdin_socket,
        Some(SocketInfo {
            family: "unix".into(),
            peer: None
        })
    );
    t.done();
}

/// The python one-liner: an interpreter dup2()s a connected socket onto its
/// stdin and stdout (`fd_dup` events).
#[test]
fn reverse_shell_by_an_interpreter_duplicating_a_socket_onto_stdio() {
    let t = kernel_test!(reverse_shell_by_an_interpreter_duplicating_a_socket_onto_stdio);
    let cg = TestCgroup::unique("e2e-dup");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![cg.path.clone()],
        events: true,
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("addr").port();
    let script = |target: u32| {
        format!(
            "import socket,os,sys\n\
             s=socket.create_connection(('127.0.0.1',{port}))\n\
             print(os.getpid()); sys.stdout.flush()\n\
             os.dup2(s.fileno(),{target})\n\
             os.write({target}, b'hello from {target}\\n')\n\
             s.recv(1)\n"
        )
    };
    // Negative: an interpreter duplicating a Unix socketpair onto stdout (as
    // Node.js does before it execs a child). It waits for its stdin to close,
    // so it is alive when the agent looks the socket up.
    let mut node_like = Command::new(PY);
    node_like.args([
        "-c",
        "import socket,os,sys\n\
         a,b=socket.socketpair()\n\
         print(os.getpid()); sys.stdout.flush()\n\
         os.dup2(b.fileno(),1)\n\
         sys.stdin.read()\n",
    ]);
    cg.enter(&mut node_like);
    node_like.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut node_like = ChildGuard::spawn(&mut node_like);
    let socketpair_pid = read_pid(&mut node_like);

    // Negative: the socket duplicated onto fd 7, not onto stdio.
    // Then the one-liner, onto stdout. Both stay alive (blocked reading the
    // socket) until the alert arrived, as a real session would.
    let mut pids = Vec::new();
    let mut sessions = Vec::new();
    for target in [7u32, 1] {
        let mut py = Command::new(PY);
        py.args(["-c", &script(target)]);
        cg.enter(&mut py);
        py.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut py);
        let (mut conn, _) = listener.accept().expect("accept");
        pids.push(read_pid(&mut child));
        assert_eq!(ask(&mut conn, ""), format!("hello from {target}"));
        sessions.push((child, conn));
    }
    let (negative_pid, positive_pid) = (pids[0], pids[1]);
    let alert = picket.wait_alert("reverse-shell alert for the dup2", WAIT, |a| {
        a.rule.id == "reverse-shell" && a.event.process.pid == positive_pid
    });
    assert_eq!(alert.severity, Severity::Critical);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::FdDup);
    let fd = ev.fd.as_ref().expect("fd section");
    assert_eq!((fd.new, fd.old_type), (1, FdType::Socket));
    assert_eq!(
        fd.socket,
        Some(SocketInfo {
            family: "inet".into(),
            peer: Some(Endpoint {
                address: "127.0.0.1".into(),
                port
            })
        })
    );
    for (mut child, conn) in sessions {
        drop(conn);
        assert!(child.wait_timeout(RUN).success());
    }
    drop(node_like.0.stdin.take());
    assert!(node_like.wait_timeout(RUN).success());
    let dup = picket.wait_event("dup2 of the socketpair", WAIT, |e| {
        e.event.kind == EventKindName::FdDup && e.process.pid == socketpair_pid
    });
    assert_eq!(
        dup.fd.and_then(|f| f.socket),
        Some(SocketInfo {
            family: "unix".into(),
            peer: None
        })
    );
    assert_eq!(ev.process.executable.path, canonical(PY));
    assert_eq!(ev.process.command_args[..2], [PY, "-c"]);
    assert_eq!(ev.syscall.as_ref().map(|s| s.name.as_str()), Some("dup2"));

    picket.drain(Duration::from_millis(500));
    let wrong: Vec<_> = picket
        .alerts_of("reverse-shell")
        .into_iter()
        .filter(|a| [negative_pid, socketpair_pid].contains(&a.event.process.pid))
        .collect();
    assert!(
        wrong.is_empty(),
        "dup2 onto fd 7 and of a socketpair must not match: {wrong:?}"
    );
    t.done();
}

/// A copy of `src` in `dir` with `mode` (owned by root).
fn install(src: &str, dir: &Path, name: &str, mode: u32) -> String {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {src}: {e}"));
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).expect("chmod");
    dst.display().to_string()
}

/// Runs `program args` as nobody (uid/gid 65534, no supplementary groups).
fn as_nobody(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args);
    c
}

#[test]
fn setuid_root_binary_run_by_nobody() {
    let t = kernel_test!(setuid_root_binary_run_by_nobody);
    let cg = TestCgroup::unique("e2e-suid");
    let mut picket = picket_for(&cg);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-suid-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plain = install("/usr/bin/id", dir.path(), "id-plain", 0o755);
    let suid = install("/usr/bin/id", dir.path(), "id-suid", 0o4755);

    // Negatives: the same binary without the setuid bit; a setuid helper on
    // the host (excepted by the rule).
    assert_eq!(run_in(&cg, &mut as_nobody(&plain, &["-u"])), "65534\n");
    let su_version = run_in(&cg, &mut as_nobody("/usr/bin/su", &["--version"]));
    assert!(su_version.starts_with("su from util-linux"), "{su_version}");
    // Positive: nobody runs the setuid-root copy and really gets euid 0.
    let mut cmd = as_nobody(&suid, &["-u"]);
    cg.enter(&mut cmd);
    cmd.stdin(Stdio::null());
    let mut child = ChildGuard::spawn(cmd.stdout(Stdio::piped()));
    let pid = child.id();
    assert!(child.wait_timeout(RUN).success());
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out, "0\n", "nobody got euid 0");

    let alert = picket.wait_alert("setuid escalation alert", WAIT, |a| {
        a.rule.id == "privilege-escalation-setuid" && a.event.process.pid == pid
    });
    assert_eq!(alert.severity, Severity::High);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Exec);
    assert_eq!(ev.process.executable.path, canonical(&suid));
    assert_eq!(ev.process.command_args, vec![suid.as_str(), "-u"]);
    assert_eq!(ev.process.user.id, 0, "euid");
    assert_eq!(ev.process.real_user.id, 65534, "real uid");
    assert_eq!(ev.process.real_group.id, 65534);
    assert!(ev.container.is_none());

    picket.drain(Duration::from_millis(500));
    let others: Vec<_> = picket
        .alerts_of("privilege-escalation-setuid")
        .into_iter()
        .filter(|a| a.event.process.pid != pid)
        .collect();
    assert!(
        others.is_empty(),
        "setpriv, the plain copy and su must not match: {others:?}"
    );
    t.done();
}

#[test]
fn seteuid_back_to_root() {
    let t = kernel_test!(seteuid_back_to_root);
    let cg = TestCgroup::unique("e2e-seteuid");
    let mut picket = picket_for(&cg);
    // Negative: root dropping to nobody. Positive: a process running with
    // euid nobody (saved uid root) regaining euid 0.
    let drop_only = run_in(
        &cg,
        Command::new(PY).args([
            "-c",
            "import os\nprint(os.getpid())\nos.setresuid(65534,65534,65534)\n",
        ]),
    );
    let regain = run_in(
        &cg,
        Command::new(PY).args([
            "-c",
            "import os\nprint(os.getpid())\nos.seteuid(65534)\nos.seteuid(0)\nprint(os.geteuid())\n",
        ]),
    );
    let drop_pid: u32 = drop_only.trim().parse().expect("pid");
    let mut lines = regain.lines();
    let pid: u32 = lines.next().expect("pid").parse().expect("pid");
    assert_eq!(lines.next(), Some("0"), "euid regained");

    let alert = picket.wait_alert("seteuid(0) alert", WAIT, |a| {
        a.rule.id == "privilege-escalation-setuid" && a.event.process.pid == pid
    });
    assert_eq!(alert.severity, Severity::High);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::PrivilegeChange);
    let p = ev.privilege.as_ref().expect("privilege section");
    assert_eq!((p.old.euid, p.new.euid), (65534, 0));
    assert_eq!((p.old.uid, p.new.uid), (0, 0), "real uid stays root");
    assert_eq!(ev.syscall.as_ref().map(|s| s.result), Some(0));
    assert_eq!(ev.process.executable.path, canonical(PY));

    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("privilege-escalation-setuid");
    assert_eq!(
        all.len(),
        1,
        "only seteuid(0) matches (not the drop by pid {drop_pid}, not seteuid(65534)): {all:?}"
    );
    t.done();
}

#[test]
fn drop_and_execute_from_tmp_dev_shm_and_memfd() {
    let t = kernel_test!(drop_and_execute_from_tmp_dev_shm_and_memfd);
    let cg = TestCgroup::unique("e2e-drop");
    let mut picket = picket_for(&cg);
    let memfd_exec = |name: &str| {
        format!(
            "import os,sys\n\
             fd=os.memfd_create('{name}', 0)\n\
             os.write(fd, open('/bin/echo','rb').read())\n\
             print(os.getpid()); sys.stdout.flush()\n\
             os.execv('/proc/self/fd/%d' % fd, ['payload', 'from-memfd'])\n"
        )
    };
    // Negatives: a program from /usr/bin; runc's memfd re-exec (excepted).
    run_in(&cg, &mut Command::new("/bin/true"));
    let runc = run_in(
        &cg,
        Command::new(PY).args(["-c", &memfd_exec("runc_cloned:/proc/self/exe")]),
    );
    let runc_pid: u32 = runc.lines().next().expect("pid").parse().expect("pid");

    // Positives: droppers in /tmp and /dev/shm, and a fileless payload.
    let tmp = tempfile::Builder::new()
        .prefix("picket-e2e-drop-")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp");
    let shm = tempfile::Builder::new()
        .prefix("picket-e2e-drop-")
        .tempdir_in("/dev/shm")
        .expect("tempdir in /dev/shm");
    let mut expected = Vec::new();
    for dir in [tmp.path(), shm.path()] {
        let payload = install("/bin/true", dir, "payload", 0o755);
        let mut cmd = Command::new(&payload);
        cmd.stdin(Stdio::null());
        cg.enter(&mut cmd);
        let mut child = ChildGuard::spawn(&mut cmd);
        let pid = child.id();
        assert!(child.wait_timeout(RUN).success());
        expected.push((pid, canonical(&payload), vec![payload]));
    }
    let fileless = run_in(
        &cg,
        Command::new(PY).args(["-c", &memfd_exec("picket-e2e")]),
    );
    let mut lines = fileless.lines();
    let pid: u32 = lines.next().expect("pid").parse().expect("pid");
    assert_eq!(lines.next(), Some("from-memfd"), "the payload ran");
    expected.push((
        pid,
        "/memfd:picket-e2e".into(),
        vec!["payload".into(), "from-memfd".into()],
    ));

    for (pid, path, args) in &expected {
        let alert = picket.wait_alert(&format!("drop-and-execute of {path}"), WAIT, |a| {
            a.rule.id == "drop-and-execute" && a.event.process.pid == *pid
        });
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(alert.event.event.kind, EventKindName::Exec);
        assert_eq!(&alert.event.process.executable.path, path);
        assert_eq!(&alert.event.process.command_args, args);
        assert!(
            alert.message.starts_with(&format!("executed {path} (")),
            "{}",
            alert.message
        );
    }
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("drop-and-execute");
    assert_eq!(
        all.len(),
        3,
        "/bin/true and runc's memfd (pid {runc_pid}) must not match: {all:?}"
    );
    t.done();
}

/// `--only-cgroup` holds from the very start: a busy neighbour cgroup that
/// execs all the time while the agent attaches its programs never shows up
/// (the scope used to be set after attaching, and the events of those
/// seconds, from the whole machine, came out afterwards).
#[test]
fn only_cgroup_scope_holds_while_the_agent_starts() {
    let t = kernel_test!(only_cgroup_scope_holds_while_the_agent_starts);
    let cg = TestCgroup::unique("e2e-scope");
    let neighbour = TestCgroup::unique("e2e-neighbour");
    let mut busy = Command::new("/bin/sh");
    busy.args(["-c", "while :; do /bin/sleep 0.005; done"])
        .stdin(Stdio::null());
    neighbour.enter(&mut busy);
    let busy = ChildGuard::spawn(&mut busy);
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![cg.path.clone()],
        events: true,
        ..Default::default()
    });
    let marker = run_in(&cg, Command::new("/bin/echo").arg("in-scope"));
    assert_eq!(marker, "in-scope\n");
    picket.wait_event("exec of the in-scope echo", WAIT, |e| {
        e.kind() == EventKindName::Exec && e.process.command_args == ["/bin/echo", "in-scope"]
    });
    picket.drain(Duration::from_millis(500));
    drop(busy);
    let outside: Vec<String> = picket
        .records
        .iter()
        .filter_map(|r| match r {
            picket_tests::run::Record::Event(e) if e.process.linux.cgroup_id != cg.id() => {
                Some(format!(
                    "{} pid {} cgroup {} {:?}",
                    e.event.kind, e.process.pid, e.process.linux.cgroup, e.process.command_args
                ))
            }
            _ => None,
        })
        .collect();
    assert!(
        outside.is_empty(),
        "{} events from outside the scope, e.g. {:?}",
        outside.len(),
        &outside[..outside.len().min(5)]
    );
    t.done();
}

/// A bind shell: a python one-liner listening on loopback (`bind-shell`);
/// the same listener run from a script file (how servers run) does not match.
#[test]
fn bind_shell_one_liner_listening() {
    let t = kernel_test!(bind_shell_one_liner_listening);
    let cg = TestCgroup::unique("e2e-bind");
    let mut picket = picket_for(&cg);
    let code = "import socket,os\n\
                s=socket.socket()\n\
                s.bind(('127.0.0.1',0))\n\
                s.listen(1)\n\
                print(os.getpid(), s.getsockname()[1])\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("server.py");
    std::fs::write(&script, code).expect("script");
    let parse = |out: String| {
        let mut it = out
            .split_whitespace()
            .map(|v| v.parse::<u32>().expect("number"));
        (it.next().expect("pid"), it.next().expect("port"))
    };
    // Negative first: the script file.
    let (server_pid, _) = parse(run_in(&cg, Command::new(PY).arg(&script)));
    let (pid, port) = parse(run_in(&cg, Command::new(PY).args(["-c", code])));
    let alert = picket.wait_alert("bind-shell alert", WAIT, |a| {
        a.rule.id == "bind-shell" && a.event.process.pid == pid
    });
    assert_eq!(alert.severity, Severity::High);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::Listen);
    assert_eq!(ev.process.executable.path, canonical(PY));
    let local = ev
        .network
        .as_ref()
        .and_then(|n| n.local.as_ref())
        .expect("local endpoint");
    assert_eq!(
        (local.address.as_str(), u32::from(local.port)),
        ("127.0.0.1", port)
    );
    picket.drain(Duration::from_millis(500));
    let wrong: Vec<_> = picket
        .alerts_of("bind-shell")
        .into_iter()
        .filter(|a| a.event.process.pid == server_pid)
        .collect();
    assert!(
        wrong.is_empty(),
        "a server run from a file must not match: {wrong:?}"
    );
    t.done();
}

/// `link-to-sensitive-file` and `process-memory-access` through `picket
/// run` with the default rules: a symlink to /etc/shadow and a
/// process_vm_readv of a child alert; a symlink to /etc/hostname and a read
/// of the process's own /proc/self/mem do not.
#[test]
fn link_to_shadow_and_reading_another_process_memory() {
    let t = kernel_test!(link_to_shadow_and_reading_another_process_memory);
    let cg = TestCgroup::unique("e2e-fchange");
    let mut picket = picket_for(&cg);
    let dir = tempfile::tempdir().expect("tempdir");
    let benign = dir.path().join("hostname-link");
    let evil = dir.path().join("shadow-link");
    // Negatives first (see the module docs).
    run_in(
        &cg,
        Command::new("ln")
            .arg("-s")
            .arg("/etc/hostname")
            .arg(&benign),
    );
    let self_mem = "import os\nos.close(os.open('/proc/self/mem', os.O_RDONLY))\n";
    run_in(&cg, Command::new(PY).args(["-c", self_mem]));
    run_in(
        &cg,
        Command::new("ln").arg("-s").arg("/etc/shadow").arg(&evil),
    );
    let alert = picket.wait_alert("link-to-sensitive-file alert", WAIT, |a| {
        a.rule.id == "link-to-sensitive-file"
    });
    assert_eq!(alert.severity, Severity::High);
    let ev = &alert.event;
    assert_eq!(ev.event.kind, EventKindName::FileChange);
    let c = ev.file_change.as_ref().expect("file_change");
    assert_eq!(
        (
            ev.file.as_ref().expect("file").path.as_str(),
            c.op.as_str(),
            c.target.as_deref()
        ),
        (evil.to_str().expect("utf8"), "symlink", Some("/etc/shadow"))
    );
    let s = ev.syscall.as_ref().expect("syscall");
    assert_eq!((s.name.as_str(), s.result), ("symlinkat", 0));

    let reader = "import ctypes, os, time\n\
         L = ctypes.CDLL(None, use_errno=True)\n\
         L.process_vm_readv.restype = ctypes.c_ssize_t\n\
         buf = ctypes.create_string_buffer(b'secret!!', 8)\n\
         pid = os.fork()\n\
         if pid == 0:\n  time.sleep(5)\n  os._exit(0)\n\
         class iovec(ctypes.Structure):\n  _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n\
         dst = ctypes.create_string_buffer(8)\n\
         n = L.process_vm_readv(pid, ctypes.byref(iovec(ctypes.addressof(dst), 8)), 1, ctypes.byref(iovec(ctypes.addressof(buf), 8)), 1, 0)\n\
         os.kill(pid, 9)\n\
         os.waitpid(pid, 0)\n\
         print(pid, n)\n";
    let out = run_in(&cg, Command::new(PY).args(["-c", reader]));
    let mut it = out.split_whitespace();
    let child: u32 = it.next().expect("pid").parse().expect("pid");
    assert_eq!(it.next(), Some("8"), "8 bytes read from the child");
    let alert = picket.wait_alert("process-memory-access alert", WAIT, |a| {
        a.rule.id == "process-memory-access"
    });
    let p = alert.event.ptrace.as_ref().expect("ptrace");
    assert_eq!(
        (p.request.as_str(), p.target_pid),
        ("process_vm_readv", child)
    );
    assert_eq!(alert.event.process.executable.path, canonical(PY));
    picket.drain(Duration::from_millis(500));
    let links = picket.alerts_of("link-to-sensitive-file");
    assert_eq!(
        links.len(),
        1,
        "the hostname link must not match: {links:?}"
    );
    let mem = picket.alerts_of("process-memory-access");
    assert_eq!(mem.len(), 1, "/proc/self/mem must not match: {mem:?}");
    t.done();
}

/// Runs `program args` inside `ctr` the way `kubectl exec` does, stdin from
/// /dev/null; expects success and returns stdout.
fn exec_in(ctr: &FakeContainer, program: &str, args: &[&str]) -> String {
    let mut cmd = ctr.exec(program, args);
    cmd.stdin(Stdio::null());
    let out = output_within(&mut cmd, RUN);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

/// Waits until `path` exists (a marker a container's init writes once its
/// set-up is done, so the agent starts after it).
fn wait_for_file(path: &Path) {
    let deadline = std::time::Instant::now() + RUN;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fake container whose init runs `setup` (before the agent starts),
/// writes a marker, then sleeps; returns it once the marker exists.
fn container_after_setup(prefix: &str, setup: &str, marker_dir: &Path) -> FakeContainer {
    let ready = marker_dir.join("ready");
    let id = format!("{:0>64}", format!("{:x}", std::process::id()) + "e18b");
    let ctr = FakeContainer::start(
        prefix,
        "7b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
        &id,
        &format!("{setup} && : > {}; exec /bin/sleep 1000", ready.display()),
    );
    wait_for_file(&ready);
    ctr
}

/// The mv/ln evasions of the write rules (issue #18): renaming a staged
/// file into /etc/cron.d, planting a symlink there, renaming over
/// /etc/passwd. The container's /etc is a tmpfs of its own mount
/// namespace, so nothing on the host changes. Renames out of the cron
/// directory and symlinks elsewhere pointing into it do not match.
#[test]
fn renames_and_symlinks_into_persistence_and_account_files_in_a_container() {
    let t = kernel_test!(renames_and_symlinks_into_persistence_and_account_files_in_a_container);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctr = container_after_setup(
        "e2e-fchange-persist",
        "mount -t tmpfs picket-etc /etc && mkdir /etc/cron.d && echo old > /etc/cron.d/old",
        dir.path(),
    );
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let sh = |script: &str| exec_in(&ctr, "/bin/sh", &["-c", script]);
    // Negatives first (see the module docs).
    sh("mv /etc/cron.d/old /etc/old.bak");
    sh("ln -s /etc/cron.d/old2 /etc/pointer");
    sh("echo x > /etc/stage1 && mv /etc/stage1 /etc/stage2");
    // Positives.
    sh("echo '* * * * * root id' > /etc/stage3 && mv /etc/stage3 /etc/cron.d/job");
    sh("ln -s /etc/stage2 /etc/cron.d/job2");
    sh("echo 'x:0:0::/:/bin/sh' > /etc/pw && mv /etc/pw /etc/passwd");

    let change = |a: &picket::model::Alert| {
        let c = a.event.file_change.as_ref().expect("file_change");
        (
            a.event.file.as_ref().expect("file").path.clone(),
            c.op.clone(),
            c.target.clone(),
            a.event.syscall.as_ref().expect("syscall").result,
            a.event.process.executable.name.clone(),
        )
    };
    let renamed = picket.wait_alert("persistence rename", WAIT, |a| {
        a.rule.id == "persistence-file-write"
            && a.event.event.kind == EventKindName::FileChange
            && a.event
                .file_change
                .as_ref()
                .is_some_and(|c| c.op == "rename")
    });
    assert_eq!(renamed.severity, Severity::High);
    assert_eq!(
        change(&renamed),
        (
            "/etc/stage3".into(),
            "rename".into(),
            Some("/etc/cron.d/job".into()),
            0,
            "mv".into()
        )
    );
    assert_eq!(
        renamed.event.container.as_ref().expect("container").id,
        ctr.id
    );
    let linked = picket.wait_alert("persistence symlink", WAIT, |a| {
        a.rule.id == "persistence-file-write"
            && a.event
                .file_change
                .as_ref()
                .is_some_and(|c| c.op == "symlink")
    });
    assert_eq!(
        change(&linked),
        (
            "/etc/cron.d/job2".into(),
            "symlink".into(),
            Some("/etc/stage2".into()),
            0,
            "ln".into()
        )
    );
    let account = picket.wait_alert("account database rename", WAIT, |a| {
        a.rule.id == "modify-account-database" && a.event.event.kind == EventKindName::FileChange
    });
    assert_eq!(
        change(&account),
        (
            "/etc/pw".into(),
            "rename".into(),
            Some("/etc/passwd".into()),
            0,
            "mv".into()
        )
    );
    picket.drain(Duration::from_millis(500));
    let persist: Vec<_> = picket
        .alerts_of("persistence-file-write")
        .into_iter()
        .map(change)
        .collect();
    assert_eq!(
        persist.len(),
        2,
        "only the rename and the symlink into /etc/cron.d: {persist:?}"
    );
    assert_eq!(picket.alerts_of("modify-account-database").len(), 1);
    t.done();
}

/// `network-scan` (an `aggregate` rule): a connect scan of 30 closed
/// loopback ports inside the container's own network namespace alerts
/// once, at the 20th distinct port; a client opening 30 connections to one
/// port does not.
#[test]
fn network_scan_of_loopback_ports_in_a_container() {
    let t = kernel_test!(network_scan_of_loopback_ports_in_a_container);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctr = container_after_setup("e2e-scan", "/bin/ip link set lo up", dir.path());
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let client = "import socket, os\n\
                  srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(64)\n\
                  conns = [socket.create_connection(srv.getsockname()) for _ in range(30)]\n\
                  print(os.getpid())\n";
    let client_pid: u32 = exec_in(&ctr, PY, &["-c", client])
        .trim()
        .parse()
        .expect("pid");
    let scan = "import socket, os\n\
                refused = 0\n\
                for port in range(20000, 20030):\n    s = socket.socket(); s.settimeout(1)\n    refused += s.connect_ex(('127.0.0.1', port)) != 0\n    s.close()\n\
                print(os.getpid(), refused)\n";
    let out = exec_in(&ctr, PY, &["-c", scan]);
    let mut it = out.split_whitespace();
    let pid: u32 = it.next().expect("pid").parse().expect("pid");
    assert_eq!(it.next(), Some("30"), "every port was closed");
    // The pids printed are the ones inside the container's pid namespace.
    let alert = picket.wait_alert("network-scan alert", WAIT, |a| {
        a.rule.id == "network-scan" && a.event.process.vpid == pid
    });
    assert_eq!(alert.event.process.command_args, [PY, "-c", scan]);
    assert_eq!(alert.severity, Severity::Medium);
    assert_eq!(alert.event.event.kind, EventKindName::Connect);
    let peer = alert
        .event
        .network
        .as_ref()
        .and_then(|n| n.peer.as_ref())
        .expect("peer");
    assert_eq!((peer.address.as_str(), peer.port), ("127.0.0.1", 20019));
    assert!(
        alert
            .message
            .contains("reached 20 distinct network.peer.port values within 10s (20000, 20001,"),
        "{}",
        alert.message
    );
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("network-scan");
    assert_eq!(
        all.len(),
        1,
        "one alert for the scan, none for the client (vpid {client_pid}): {all:?}"
    );
    t.done();
}

/// `download-and-execute` (an `after` rule): curl writes a file, which is
/// then made executable and run. A program compiled by a build step (make,
/// gcc) and a copied binary run the same way do not match.
#[test]
fn download_and_execute_in_a_container() {
    let t = kernel_test!(download_and_execute_in_a_container);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-dl-")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp");
    let ctr = container_after_setup("e2e-dl", "true", dir.path());
    let build = dir.path().join("build");
    std::fs::create_dir(&build).expect("build dir");
    std::fs::write(build.join("main.c"), "int main(void) { return 0; }\n").expect("main.c");
    std::fs::write(
        build.join("Makefile"),
        "run: app\n\t./app\napp: main.c\n\t/usr/bin/gcc -o app main.c\n",
    )
    .expect("Makefile");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let d = dir.path().display();
    // Negatives: a build step's output, a copy.
    exec_in(
        &ctr,
        "/usr/bin/make",
        &["-s", "-C", build.to_str().expect("utf8"), "run"],
    );
    exec_in(
        &ctr,
        "/bin/sh",
        &["-c", &format!("cp /bin/true {d}/copied && {d}/copied")],
    );
    // Positive.
    let payload = dir.path().join("payload");
    exec_in(
        &ctr,
        "/bin/sh",
        &[
            "-c",
            &format!(
                "curl -sS -o {d}/payload file:///bin/true && chmod +x {d}/payload && {d}/payload"
            ),
        ],
    );
    let alert = picket.wait_alert("download-and-execute alert", WAIT, |a| {
        a.rule.id == "download-and-execute"
    });
    assert_eq!(alert.severity, Severity::High);
    assert_eq!(alert.event.event.kind, EventKindName::Exec);
    assert_eq!(alert.event.process.executable.path, canonical(&payload));
    assert!(
        alert.message.starts_with(&format!(
            "executed {} ({}), written by /usr/bin/curl (curl -sS -o {} file:///bin/true, pid ",
            canonical(&payload),
            payload.display(),
            payload.display()
        )),
        "{}",
        alert.message
    );
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("download-and-execute");
    assert_eq!(
        all.len(),
        1,
        "the build output and the copy must not match: {all:?}"
    );
    let dropped: Vec<_> = picket
        .alerts_of("drop-and-execute")
        .into_iter()
        .map(|a| a.event.process.executable.path.clone())
        .collect();
    assert!(
        !dropped.contains(&canonical(build.join("app"))),
        "the build step's program is excepted from drop-and-execute: {dropped:?}"
    );
    t.done();
}

/// `process-masquerading`: a copy of a binary named `sshd` run from /tmp,
/// and a program exec'd with a kernel-thread title as argv[0]; a program
/// given an ordinary custom argv[0] does not match.
#[test]
fn process_masquerading_in_a_container() {
    let t = kernel_test!(process_masquerading_in_a_container);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-masq-")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp");
    let ctr = container_after_setup("e2e-masq", "true", dir.path());
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let execv = |argv0: &str| format!("import os\nos.execv('/bin/true', ['{argv0}'])\n");
    exec_in(&ctr, PY, &["-c", &execv("my-worker")]);
    let sshd = dir.path().join("sshd");
    exec_in(
        &ctr,
        "/bin/sh",
        &["-c", &format!("cp /bin/true {0} && {0}", sshd.display())],
    );
    exec_in(&ctr, PY, &["-c", &execv("[kworker/0:1]")]);
    let fake = picket.wait_alert("masquerading sshd", WAIT, |a| {
        a.rule.id == "process-masquerading" && a.event.process.executable.name == "sshd"
    });
    assert_eq!(fake.severity, Severity::High);
    assert_eq!(fake.event.process.executable.path, canonical(&sshd));
    let kthread = picket.wait_alert("kernel thread title", WAIT, |a| {
        a.rule.id == "process-masquerading" && a.event.process.command_args == ["[kworker/0:1]"]
    });
    assert_eq!(
        kthread.event.process.executable.path,
        canonical("/bin/true")
    );
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("process-masquerading");
    assert_eq!(all.len(), 2, "`my-worker` must not match: {all:?}");
    t.done();
}

/// A benign workload of a pod raises no alert of severity high or
/// critical: a web app with its probes, a worker logging through Python's
/// RotatingFileHandler (renames and deletions below /var/log), cron-like
/// jobs appending to a log and querying packages, gzip of a rotated log,
/// a build step compiling and running a program, package queries and an
/// operator's `kubectl exec` debugging session.
#[test]
fn benign_workload_raises_no_high_or_critical_alert() {
    let t = kernel_test!(benign_workload_raises_no_high_or_critical_alert);
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path();
    let d = app.display();
    std::fs::write(
        app.join("web.py"),
        format!(
            "import http.server, socketserver\n\
             http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None\n\
             srv = socketserver.TCPServer(('127.0.0.1', 8080), http.server.SimpleHTTPRequestHandler)\n\
             open('{d}/web-ready', 'w').close()\n\
             srv.serve_forever()\n"
        ),
    )
    .expect("web.py");
    std::fs::write(
        app.join("worker.py"),
        format!(
            "import logging, logging.handlers\n\
             h = logging.handlers.RotatingFileHandler('/var/log/app/worker.log', maxBytes=2000, backupCount=3)\n\
             log = logging.getLogger('worker'); log.addHandler(h); log.setLevel(logging.INFO)\n\
             for i in range(400):\n    log.info('processed job %d of the queue', i)\n\
             open('{d}/worker-done', 'w').close()\n"
        ),
    )
    .expect("worker.py");
    std::fs::write(
        app.join("cron.sh"),
        format!(
            "for i in 1 2 3; do\n  date >> /var/log/app/cron.log\n  dpkg-query -W coreutils > /dev/null\n  find {d} -name '*.tmp' -delete\n  /bin/sleep 0.1\ndone\n: > {d}/cron-done\n"
        ),
    )
    .expect("cron.sh");
    let build = app.join("build");
    std::fs::create_dir(&build).expect("build dir");
    std::fs::write(
        build.join("main.c"),
        "#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n",
    )
    .expect("main.c");
    std::fs::write(
        build.join("Makefile"),
        "test: app\n\t./app\napp: main.c\n\t/usr/bin/gcc -O1 -o app main.c\n",
    )
    .expect("Makefile");
    let trigger = app.join("go");
    let ctr = container_after_setup(
        "e2e-benign",
        &format!(
            "/bin/ip link set lo up && mount -t tmpfs picket-log /var/log && mkdir /var/log/app \
             && {{ (while [ ! -e {trigger} ]; do /bin/sleep 0.02; done; cd {d}; \
                   {PY} {d}/web.py & {PY} {d}/worker.py & /bin/sh {d}/cron.sh & wait) & }}",
            trigger = trigger.display()
        ),
        app,
    );
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    std::fs::write(&trigger, b"").expect("trigger");
    for marker in ["web-ready", "worker-done", "cron-done"] {
        wait_for_file(&app.join(marker));
    }
    // Probes and an operator's debugging session (kubectl exec).
    for _ in 0..3 {
        exec_in(
            &ctr,
            "/usr/bin/curl",
            &["-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/"],
        );
    }
    exec_in(
        &ctr,
        "/bin/sh",
        &[
            "-c",
            "ps -ef > /dev/null; cat /proc/1/status > /dev/null; ls -l /var/log/app > /dev/null; tail -n 3 /var/log/app/worker.log > /dev/null",
        ],
    );
    // Package queries, a build step, compression of a rotated log.
    exec_in(&ctr, "/usr/bin/dpkg", &["-l"]);
    let out = exec_in(
        &ctr,
        "/usr/bin/make",
        &["-s", "-C", build.to_str().expect("utf8"), "test"],
    );
    assert_eq!(out, "ok\n");
    exec_in(
        &ctr,
        "/bin/sh",
        &["-c", "gzip -f /var/log/app/worker.log.2"],
    );
    // The worker rotated its log (renames, and deletion of the oldest).
    assert_eq!(
        exec_in(&ctr, "/bin/ls", &["/var/log/app"]),
        "cron.log\nworker.log\nworker.log.1\nworker.log.2.gz\nworker.log.3\n"
    );
    // The last action: once its (medium) alert is out, the agent has
    // processed everything before it.
    exec_in(&ctr, "/bin/echo", &["benign-done"]);
    picket.wait_alert("exec-into-pod of the last action", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/echo", "benign-done"]
    });
    picket.drain(Duration::from_millis(1000));
    // `nsenter` stands in for runc exec here (what `kubectl exec` runs):
    // runc's own setns calls and CAP_SYS_ADMIN use are excepted from
    // namespace-escape and dangerous-capability-in-container by name
    // (runtime_containerd.rs checks that with real runc), the stand-in's
    // are reported. Every alert of the workload's own processes counts.
    let nsenter = canonical("/usr/bin/nsenter");
    let loud: Vec<String> = picket
        .alerts()
        .into_iter()
        .filter(|a| a.severity >= Severity::High)
        .filter(|a| a.event.process.executable.path != nsenter)
        .map(|a| format!("{} {:?}: {}", a.rule.id, a.severity, a.message))
        .collect();
    assert!(loud.is_empty(), "benign activity raised: {loud:#?}");
    let seen: Vec<&str> = picket.alerts().iter().map(|a| a.rule.id.as_str()).collect();
    assert!(
        seen.contains(&"exec-into-pod"),
        "the agent saw the workload: {seen:?}"
    );
    t.done();
}

/// `decoded-payload-piped-to-shell` / `decoder-feeding-a-shell` (`after`
/// rules keyed by the parent process): `echo <base64> | base64 -d | sh`
/// alerts once; a decoder piping into `cat`, and a plain script piped into
/// `sh`, do not.
#[test]
fn decoded_payload_piped_into_a_shell_in_a_container() {
    let t = kernel_test!(decoded_payload_piped_into_a_shell_in_a_container);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctr = container_after_setup("e2e-decode", "true", dir.path());
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let sh = |script: &str| exec_in(&ctr, "/bin/sh", &["-c", script]);
    // Negatives first. "ZWNobyBkZWNvZGVkLXJhbgo=" is "echo decoded-ran\n".
    assert_eq!(
        sh("echo ZWNobyBkZWNvZGVkLXJhbgo= | base64 -d | cat"),
        "echo decoded-ran\n"
    );
    assert_eq!(sh("echo 'echo plain-ran' | sh"), "plain-ran\n");
    assert_eq!(
        sh("echo ZWNobyBkZWNvZGVkLXJhbgo= | base64 -d | sh"),
        "decoded-ran\n"
    );
    // The decoder and the shell start concurrently: whichever exec is
    // processed second raises the alert, under one of the two rules.
    let ids = ["decoded-payload-piped-to-shell", "decoder-feeding-a-shell"];
    let alert = picket.wait_alert("decoded payload alert", WAIT, |a| {
        ids.contains(&a.rule.id.as_str())
    });
    assert_eq!(alert.severity, Severity::High);
    let p = &alert.event.process;
    let (sh, base64) = (canonical("/bin/sh"), canonical("/usr/bin/base64"));
    if alert.rule.id == ids[0] {
        assert_eq!(p.executable.path, sh);
        assert_eq!(p.command_args, ["sh"]);
        assert_eq!(p.stdio.stdin, FdType::Pipe);
        let m = format!("reads a program from a pipe fed by {base64} (base64 -d, pid ");
        assert!(alert.message.contains(&m), "{}", alert.message);
    } else {
        assert_eq!(p.executable.path, base64);
        assert_eq!(p.command_args, ["base64", "-d"]);
        assert_eq!(p.stdio.stdout, FdType::Pipe);
        let m = format!("decodes into a pipe read by {sh} (sh, pid ");
        assert!(alert.message.contains(&m), "{}", alert.message);
    }
    picket.drain(Duration::from_millis(500));
    let all: Vec<_> = ids.iter().flat_map(|id| picket.alerts_of(id)).collect();
    assert_eq!(all.len(), 1, "only the decoded pipeline, once: {all:?}");
    t.done();
}

/// A copy of the running kernel's BTF in which `task_struct.real_parent` is
/// renamed (`real_parenX`, same length, so the blob stays valid): a kernel
/// on which the exec program's required field cannot be resolved, so
/// `sched_process_exec`, a core program, is not loaded.
fn btf_without_real_parent(dir: &Path) -> std::path::PathBuf {
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("read kernel BTF");
    let needle = b"\0real_parent\0";
    let at: Vec<usize> = btf
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    // BTF strings are de-duplicated: one entry, used by the member name.
    assert_eq!(at.len(), 1, "occurrences of the member name in the BTF");
    btf[at[0] + needle.len() - 2] = b'X';
    let path = dir.join("vmlinux-no-real-parent");
    std::fs::write(&path, &btf).expect("write BTF copy");
    path
}

/// One HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP endpoint");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// A core program that cannot load stops `picket run` with an error naming
/// it and the reason; with `--allow-degraded` the agent runs (the other
/// programs report) and `/readyz` says it is not ready.
#[test]
fn core_program_missing_refuses_to_run_unless_degraded_is_allowed() {
    let t = kernel_test!(core_program_missing_refuses_to_run_unless_degraded_is_allowed);
    let cg = TestCgroup::unique("e2e-degraded");
    let dir = tempfile::tempdir().expect("tempdir");
    let btf = btf_without_real_parent(dir.path());

    let mut refused = Command::new(picket_tests::run::picket_binary());
    refused
        .current_dir(picket_tests::run::workspace_root())
        .args(["run", "--format", "json", "--node-name", "e2e-node"])
        .arg("--btf")
        .arg(&btf)
        .arg("--only-cgroup")
        .arg(&cg.path)
        .arg("--rules")
        .arg(picket_tests::run::default_rules())
        .env("PICKET_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null());
    let out = output_within(&mut refused, Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; log:\n{log}");
    let expected = "core programs (process tree) could not load, so program starts would not be \
                    seen: sched_process_exec: kernel BTF lacks required fields [\"task_real_parent\"]. \
                    Run `picket doctor` for details, or pass --allow-degraded to run anyway";
    assert!(log.contains(expected), "no refusal in the log:\n{log}");
    assert!(
        !log.contains("sensors attached; watching"),
        "it ran anyway:\n{log}"
    );

    // A free loopback port for the metrics endpoint.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.path().join("picket.yaml");
    std::fs::write(
        &config,
        format!(
            "delivery:\n  spool: {{dir: {spool}}}\n  jsonl:\n    - {{name: file, path: {file}}}\n  http: {{listen: \"127.0.0.1:{port}\"}}\n",
            spool = dir.path().join("spool").display(),
            file = dir.path().join("alerts.jsonl").display(),
        ),
    )
    .expect("write config");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![cg.path.clone()],
        events: true,
        extra_args: vec![
            "--allow-degraded".into(),
            "--btf".into(),
            btf.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        ..Default::default()
    });
    let log = picket.stderr();
    assert!(
        log.contains(
            "core programs missing: running degraded (--allow-degraded); /readyz stays false \
             missing=sched_process_exec: kernel BTF lacks required fields [\"task_real_parent\"]"
        ),
        "no degraded warning:\n{log}"
    );
    // It runs: the programs that loaded report (a file open in scope, of a
    // path the rules' in-kernel filter keeps).
    run_in(&cg, Command::new("/bin/cat").arg("/etc/shadow"));
    picket.wait_event("the open of /etc/shadow", WAIT, |e| {
        e.kind() == EventKindName::FileOpen
            && e.file.as_ref().is_some_and(|f| f.path == "/etc/shadow")
    });
    // No exec event: its program is the one missing.
    picket.drain(Duration::from_millis(300));
    let execs = picket
        .records
        .iter()
        .filter(
            |r| matches!(r, picket_tests::run::Record::Event(e) if e.kind() == EventKindName::Exec),
        )
        .count();
    assert_eq!(execs, 0, "exec events without the exec program");
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(
        http_get(port, "/readyz"),
        (
            503,
            "not ready: programs_loaded=false sinks_started=true\n".to_string()
        )
    );
    t.done();
}

/// `ld-preload-injection`: a real library built here and preloaded into a
/// program in a container (the loader maps it: its constructor writes a
/// marker). The benign counterpart, the same program with
/// `LD_LIBRARY_PATH` set (no preload), does not match.
#[test]
fn ld_preload_injection_in_a_container() {
    let t = kernel_test!(ld_preload_injection_in_a_container);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-preload-")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp");
    let src = dir.path().join("hook.c");
    let lib = dir.path().join("libhook.so");
    let marker = dir.path().join("loaded");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void hook(void) {{\n\
             FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            marker.display()
        ),
    )
    .expect("hook.c");
    let out = output_within(
        Command::new("/usr/bin/gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src),
        RUN,
    );
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctr = container_after_setup("e2e-preload", "true", dir.path());
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let d = dir.path().display();
    // Negative first (see the module docs).
    exec_in(
        &ctr,
        "/usr/bin/env",
        &[&format!("LD_LIBRARY_PATH={d}"), "/bin/true"],
    );
    assert!(!marker.exists(), "LD_LIBRARY_PATH alone preloads nothing");
    // Positive.
    let preload = format!("LD_PRELOAD={}", lib.display());
    exec_in(&ctr, "/usr/bin/env", &[&preload, "/bin/true"]);
    assert!(marker.exists(), "the loader ran the preloaded library");
    let alert = picket.wait_alert("ld-preload-injection alert", WAIT, |a| {
        a.rule.id == "ld-preload-injection"
    });
    assert_eq!(alert.severity, Severity::High);
    assert_eq!(alert.event.event.kind, EventKindName::Exec);
    assert_eq!(alert.event.process.executable.path, "/usr/bin/true");
    assert_eq!(
        alert
            .event
            .process
            .env
            .as_ref()
            .and_then(|e| e.ld_preload.as_deref()),
        Some(lib.to_str().expect("utf8"))
    );
    picket.drain(Duration::from_millis(500));
    let all = picket.alerts_of("ld-preload-injection");
    assert_eq!(all.len(), 1, "only the preloaded exec: {all:?}");
    t.done();
}

/// `download-and-execute` for a relative download (`curl -o x` then `./x`
/// in the working directory, which no kernel path filter watches),
/// `downloaded-script-run` (`sh x.sh` of a curl download) and
/// `shell-upgrade-via-pty` (`script -qc /bin/sh /dev/null`). Benign: a
/// health check to /dev/null, `script` recording a transcript to a file.
#[test]
fn relative_download_script_run_and_pty_upgrade_in_a_container() {
    let t = kernel_test!(relative_download_script_run_and_pty_upgrade_in_a_container);
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-dl-rel-")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp");
    let work = dir.path().join("app");
    std::fs::create_dir(&work).expect("app dir");
    std::fs::write(dir.path().join("x.sh"), "exit 0\n").expect("x.sh");
    let ctr = container_after_setup("e2e-dl-rel", "true", dir.path());
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![ctr.cgroup.path.clone()],
        ..Default::default()
    });
    let d = dir.path().display();
    let w = work.display();
    let sh = |script: &str| exec_in(&ctr, "/bin/sh", &["-c", script]);
    // Negatives first.
    sh(&format!(
        "cd {w} && curl -sf -o /dev/null file:///bin/true && /bin/true"
    ));
    sh(&format!(
        "script -q -c /bin/true {d}/transcript < /dev/null"
    ));
    // Positives.
    sh(&format!(
        "cd {w} && curl -sS -o x file:///bin/true && chmod +x x && ./x"
    ));
    sh(&format!("cd {w} && curl -sS -O file://{d}/x.sh && sh x.sh"));
    sh("script -qc /bin/true /dev/null < /dev/null");
    let bin = picket.wait_alert("download-and-execute alert", WAIT, |a| {
        a.rule.id == "download-and-execute"
    });
    assert_eq!(bin.event.process.executable.path, canonical(work.join("x")));
    let script = picket.wait_alert("downloaded-script-run alert", WAIT, |a| {
        a.rule.id == "downloaded-script-run"
    });
    assert_eq!(
        script.event.process.script_path.as_deref(),
        Some(canonical(work.join("x.sh")).as_str())
    );
    assert_eq!(script.severity, Severity::High);
    let pty = picket.wait_alert("shell-upgrade-via-pty alert", WAIT, |a| {
        a.rule.id == "shell-upgrade-via-pty"
    });
    assert_eq!(
        pty.event.process.command_args,
        ["script", "-qc", "/bin/true", "/dev/null"]
    );
    picket.drain(Duration::from_millis(500));
    assert_eq!(picket.alerts_of("download-and-execute").len(), 1);
    assert_eq!(picket.alerts_of("downloaded-script-run").len(), 1);
    assert_eq!(
        picket.alerts_of("shell-upgrade-via-pty").len(),
        1,
        "the transcript to a file must not match"
    );
    t.done();
}
