//! Real-kernel tests of the syscall sensors (network, files, credentials,
//! capabilities, namespaces, process control, mounts) and of the in-kernel
//! filters and rate limits. Each test runs its actions in its own cgroup and
//! asserts the exact fields of the events. Network traffic stays on loopback.
//! Root only; they fail (never skip) elsewhere.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    time::Duration,
};

use picket::{
    agent::{Agent, AgentConfig},
    model::{Endpoint, Event, EventKindName, FdType},
    sensor::filters::{Rate, SensorFilters},
};
use picket_tests::{
    cgroup::TestCgroup,
    kernel::{drain, start_agent, wait_for},
    kernel_test,
};

const WAIT: Duration = Duration::from_secs(10);
/// The system Python (not a pyenv shim: shims run extra programs and live
/// under /root, where an unprivileged user cannot reach them).
const PY: &str = "/usr/bin/python3";

/// Runs `cmd` inside `cg` and returns its output; panics on failure.
fn run_in(cg: &TestCgroup, cmd: &mut Command) -> Output {
    cg.enter(cmd);
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn py(script: &str) -> Command {
    let mut c = Command::new(PY);
    c.args(["-c", script]);
    c
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn ep(address: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint {
        address: address.into(),
        port,
    })
}

fn syscall(e: &Event) -> (&str, i64) {
    let s = e.syscall.as_ref().expect("syscall section");
    (s.name.as_str(), s.result)
}

async fn agent_with(cg: &TestCgroup, filters: SensorFilters) -> Agent {
    start_agent(
        std::slice::from_ref(&cg.path),
        move |c: &mut AgentConfig| {
            c.sensor.filters = filters;
            c.loss_interval = Duration::from_millis(200);
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connects_ipv4_ipv6_success_and_refused() {
    let t = kernel_test!(tcp_connects_ipv4_ipv6_success_and_refused);
    let cg = TestCgroup::unique("connect");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let l4 = TcpListener::bind("127.0.0.1:0").expect("listen v4");
    let l6 = TcpListener::bind("[::1]:0").expect("listen v6");
    let p4 = l4.local_addr().expect("addr").port();
    let p6 = l6.local_addr().expect("addr").port();
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let script = format!(
        "import socket,os\n\
         s=socket.socket(); s.connect(('127.0.0.1',{p4})); print(os.getpid(), s.fileno(), s.getsockname()[1]); s.close()\n\
         s=socket.socket(socket.AF_INET6); s.connect(('::1',{p6})); print(s.fileno(), s.getsockname()[1]); s.close()\n\
         s=socket.socket()\n\
         try:\n  s.connect(('127.0.0.1',{closed}))\nexcept ConnectionRefusedError:\n  print('refused')\n"
    );
    let out = run_in(&cg, &mut py(&script));
    let lines = stdout_lines(&out);
    let first: Vec<u32> = lines[0]
        .split(' ')
        .map(|v| v.parse().expect("num"))
        .collect();
    let (pid, fd4, local4) = (first[0], first[1] as i32, first[2] as u16);
    let second: Vec<u32> = lines[1]
        .split(' ')
        .map(|v| v.parse().expect("num"))
        .collect();
    let local6 = second[1] as u16;
    assert_eq!(lines[2], "refused");

    let mut seen = Vec::new();
    let is_connect_to = |port: u16| {
        move |e: &Event| {
            e.kind() == EventKindName::Connect
                && e.network
                    .as_ref()
                    .and_then(|n| n.peer.as_ref())
                    .is_some_and(|p| p.port == port)
        }
    };
    let v4 = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "IPv4 connect",
        is_connect_to(p4),
    )
    .await;
    assert_eq!(syscall(&v4), ("connect", 0));
    assert_eq!(v4.process.pid, pid);
    let n = v4.network.as_ref().expect("network");
    assert_eq!((n.transport.as_str(), n.r#type.as_str()), ("tcp", "ipv4"));
    assert_eq!(n.peer, ep("127.0.0.1", p4));
    assert_eq!(
        n.local,
        ep("127.0.0.1", local4),
        "local address from the socket after connect"
    );
    assert_eq!(v4.process.linux.cgroup_id, cg.id());
    let _ = fd4;

    let v6 = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "IPv6 connect",
        is_connect_to(p6),
    )
    .await;
    assert_eq!(syscall(&v6), ("connect", 0));
    let n = v6.network.as_ref().expect("network");
    assert_eq!((n.transport.as_str(), n.r#type.as_str()), ("tcp", "ipv6"));
    assert_eq!(n.peer, ep("::1", p6));
    assert_eq!(n.local, ep("::1", local6));

    let refused = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "refused connect",
        is_connect_to(closed),
    )
    .await;
    assert_eq!(syscall(&refused), ("connect", -(libc::ECONNREFUSED as i64)));
    assert_eq!(refused.network.as_ref().expect("network").transport, "tcp");
    drop((l4, l6));
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sendto_and_sendmsg_on_loopback() {
    let t = kernel_test!(udp_sendto_and_sendmsg_on_loopback);
    let cg = TestCgroup::unique("udp");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = sink.local_addr().expect("addr").port();
    let script = format!(
        "import socket\n\
         u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         print(u.sendto(b'dns?', ('127.0.0.1',{port})))\n\
         print(u.sendmsg([b'hello', b'!'], [], 0, ('127.0.0.1',{port})))\n\
         print(u.fileno())\n"
    );
    let out = run_in(&cg, &mut py(&script));
    assert_eq!(&stdout_lines(&out)[..2], ["4", "6"]);
    let mut seen = Vec::new();
    let sendto = wait_for(&mut agent, &mut seen, WAIT, "sendto", |e| {
        e.kind() == EventKindName::Send && syscall(e).0 == "sendto"
    })
    .await;
    assert_eq!(syscall(&sendto), ("sendto", 4));
    let n = sendto.network.as_ref().expect("network");
    assert_eq!((n.transport.as_str(), n.r#type.as_str()), ("udp", "ipv4"));
    assert_eq!(n.peer, ep("127.0.0.1", port));
    let sendmsg = wait_for(&mut agent, &mut seen, WAIT, "sendmsg", |e| {
        e.kind() == EventKindName::Send && syscall(e).0 == "sendmsg"
    })
    .await;
    assert_eq!(syscall(&sendmsg), ("sendmsg", 6));
    assert_eq!(
        sendmsg.network.as_ref().expect("network").peer,
        ep("127.0.0.1", port)
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_listen_accept() {
    let t = kernel_test!(bind_listen_accept);
    let cg = TestCgroup::unique("accept");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let script = "import socket,sys\n\
         s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(7)\n\
         print(s.getsockname()[1]); sys.stdout.flush()\n\
         c,peer=s.accept(); print(peer[1], c.fileno()); sys.stdout.flush()\n";
    let mut cmd = py(script);
    cmd.stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().expect("spawn server");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("port line");
    let port: u16 = line.trim().parse().expect("port");
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    let client_port = client.local_addr().expect("addr").port();
    line.clear();
    reader.read_line(&mut line).expect("peer line");
    let parts: Vec<i64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("num"))
        .collect();
    assert_eq!(parts[0], client_port as i64);
    let new_fd = parts[1];
    assert!(child.wait().expect("wait").success());

    let mut seen = Vec::new();
    let bind = wait_for(&mut agent, &mut seen, WAIT, "bind", |e| {
        e.kind() == EventKindName::Bind
    })
    .await;
    assert_eq!(syscall(&bind), ("bind", 0));
    let n = bind.network.as_ref().expect("network");
    assert_eq!((n.transport.as_str(), n.r#type.as_str()), ("tcp", "ipv4"));
    assert_eq!(
        (n.peer.clone(), n.local.clone()),
        (None, ep("127.0.0.1", 0)),
        "bind: the requested address"
    );
    let listen = wait_for(&mut agent, &mut seen, WAIT, "listen", |e| {
        e.kind() == EventKindName::Listen
    })
    .await;
    assert_eq!(syscall(&listen), ("listen", 0));
    let n = listen.network.as_ref().expect("network");
    assert_eq!(n.local, ep("127.0.0.1", port));
    assert_eq!(n.transport, "tcp");
    let accept = wait_for(&mut agent, &mut seen, WAIT, "accept", |e| {
        e.kind() == EventKindName::Accept
    })
    .await;
    assert_eq!(
        syscall(&accept),
        ("accept4", new_fd),
        "python accepts with accept4(SOCK_CLOEXEC)"
    );
    let n = accept.network.as_ref().expect("network");
    assert_eq!(n.peer, ep("127.0.0.1", client_port));
    assert_eq!(n.local, ep("127.0.0.1", port));
    t.done();
}

/// A directory tree for file tests: `secret/` is a monitored prefix,
/// `id_picket_key` a monitored suffix, `plain.txt` unmonitored.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("secret")).expect("mkdir");
        std::fs::create_dir(dir.path().join("other")).expect("mkdir");
        std::fs::write(dir.path().join("secret/a"), b"top secret").expect("write");
        std::fs::write(dir.path().join("other/id_picket_key"), b"key").expect("write");
        std::fs::write(dir.path().join("plain.txt"), b"plain").expect("write");
        Self { dir }
    }
    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
    fn filters(&self, defaults: bool) -> SensorFilters {
        let mut f = SensorFilters::default();
        if !defaults {
            f.file_prefixes.clear();
            f.file_suffixes.clear();
        }
        f.file_prefixes.insert(self.path("secret/"));
        f.file_suffixes.insert("/id_picket_key".into());
        f
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitored_file_reads_and_writes() {
    let t = kernel_test!(monitored_file_reads_and_writes);
    let cg = TestCgroup::unique("files");
    let files = Files::new();
    let mut agent = agent_with(&cg, files.filters(true)).await;
    let script = format!(
        "import os\n\
         fd=os.open('{a}', os.O_RDONLY); print(fd); os.close(fd)\n\
         fd=os.open('{b}', os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o600); print(fd); os.write(fd, b'x'); os.close(fd)\n\
         fd=os.open('{k}', os.O_RDWR); print(fd); os.close(fd)\n\
         fd=os.open('{p}', os.O_RDWR); os.close(fd)\n\
         try:\n  os.open('{missing}', os.O_RDONLY)\nexcept FileNotFoundError:\n  print('enoent')\n\
         fd=os.open('/etc/shadow', os.O_RDONLY); print(fd); os.close(fd)\n",
        a = files.path("secret/a"),
        b = files.path("secret/b"),
        k = files.path("other/id_picket_key"),
        p = files.path("plain.txt"),
        missing = files.path("secret/missing"),
    );
    let out = run_in(&cg, &mut py(&script));
    let lines = stdout_lines(&out);
    let fd: Vec<i64> = [0, 1, 2, 4]
        .iter()
        .map(|i| lines[*i].parse().expect("fd"))
        .collect();
    assert_eq!(lines[3], "enoent");

    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let opens: Vec<&Event> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::FileOpen)
        .collect();
    let got: Vec<(String, i64, u32, bool, bool, bool)> = opens
        .iter()
        .map(|e| {
            let f = e.file.as_ref().expect("file");
            (
                f.path.clone(),
                syscall(e).1,
                f.flags & !0o2000000,
                f.write,
                f.truncate,
                f.create,
            )
        })
        .collect();
    // Python adds O_CLOEXEC, masked out above.
    let o = |f: i32| f as u32;
    assert_eq!(
        got,
        vec![
            (
                files.path("secret/a"),
                fd[0],
                o(libc::O_RDONLY),
                false,
                false,
                false
            ),
            (
                files.path("secret/b"),
                fd[1],
                o(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
                true,
                true,
                true
            ),
            (
                files.path("other/id_picket_key"),
                fd[2],
                o(libc::O_RDWR),
                true,
                false,
                false
            ),
            (
                files.path("secret/missing"),
                -(libc::ENOENT as i64),
                o(libc::O_RDONLY),
                false,
                false,
                false
            ),
            (
                "/etc/shadow".to_string(),
                fd[3],
                o(libc::O_RDONLY),
                false,
                false,
                false
            ),
        ],
        "exactly the monitored opens, in order (plain.txt is not monitored)"
    );
    assert!(opens.iter().all(|e| syscall(e).0 == "openat"));
    t.done();
}

/// What a test compares of a `file_change` event.
#[derive(Debug, PartialEq)]
struct Change {
    syscall: String,
    result: i64,
    op: String,
    path: String,
    target: Option<String>,
    mode: Option<u32>,
    setid: (bool, bool),
    owner: (Option<u32>, Option<u32>),
    node: Option<(String, Option<(u32, u32)>)>,
    length: Option<i64>,
    fd: Option<i32>,
}

impl Change {
    fn of(e: &Event) -> Self {
        let c = e.file_change.as_ref().expect("file_change section");
        let (syscall, result) = syscall(e);
        Self {
            syscall: syscall.into(),
            result,
            op: c.op.clone(),
            path: e.file.as_ref().expect("file section").path.clone(),
            target: c.target.clone(),
            mode: c.mode,
            setid: (c.setuid, c.setgid),
            owner: (c.uid, c.gid),
            node: c
                .node_type
                .clone()
                .map(|t| (t, c.device.as_ref().map(|d| (d.major, d.minor)))),
            length: c.length,
            fd: c.fd,
        }
    }

    fn new(syscall: &str, result: i64, op: &str, path: &str) -> Self {
        Self {
            syscall: syscall.into(),
            result,
            op: op.into(),
            path: path.into(),
            target: None,
            mode: None,
            setid: (false, false),
            owner: (None, None),
            node: None,
            length: None,
            fd: None,
        }
    }
}

/// Every file-change syscall, on monitored and unmonitored paths, through
/// raw x86_64 syscall numbers (so the syscall each event names is exact,
/// whatever libc prefers): exactly the monitored changes, the setuid/setgid
/// chmods and the mknods are reported, with their arguments and results.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_unlink_rename_chmod_chown_link_mknod_truncate() {
    let t = kernel_test!(file_changes_unlink_rename_chmod_chown_link_mknod_truncate);
    let cg = TestCgroup::unique("fchange");
    let files = Files::new();
    let mut filters = files.filters(false);
    filters.change_prefixes = [files.path("secret/")].into();
    filters.change_suffixes = ["/id_picket_key".to_string()].into();
    let mut agent = agent_with(&cg, filters).await;
    std::fs::write(files.path("plain2.txt"), b"p").expect("write");
    let script = format!(
        "import ctypes, os\n\
         L = ctypes.CDLL(None, use_errno=True)\n\
         L.syscall.restype = ctypes.c_long\n\
         def sc(*a):\n  r = L.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a])\n  print(r if r >= 0 else -ctypes.get_errno())\n\
         AT = -100\n\
         sc(90, b'{a}', 0o4750)\n\
         sc(268, AT, b'{plain}', 0o2755)\n\
         sc(268, AT, b'{plain}', 0o644)\n\
         sc(92, b'{a}', 0, -1)\n\
         sc(88, b'/etc/shadow', b'{link}')\n\
         sc(86, b'{a}', b'{hard}')\n\
         sc(82, b'{a}', b'{moved}')\n\
         sc(264, AT, b'{moved}', AT, b'{a}')\n\
         sc(76, b'{a}', 3)\n\
         sc(133, b'{fifo}', 0o10644, 0)\n\
         sc(259, AT, b'{blk}', 0o60600, (7 << 8) | 200)\n\
         sc(87, b'{plain}')\n\
         sc(263, AT, b'{link}', 0)\n\
         sc(87, b'{missing}')\n\
         fd = os.open('{plain2}', os.O_RDONLY)\n\
         print(fd)\n\
         sc(91, fd, 0o4755)\n\
         sc(94, b'{key}', -1, 0)\n",
        a = files.path("secret/a"),
        plain = files.path("plain.txt"),
        plain2 = files.path("plain2.txt"),
        link = files.path("secret/link"),
        hard = files.path("other/hard"),
        moved = files.path("other/moved"),
        fifo = files.path("other/fifo"),
        blk = files.path("other/blk"),
        missing = files.path("secret/missing"),
        key = files.path("other/id_picket_key"),
    );
    let out = run_in(&cg, &mut py(&script));
    let lines = stdout_lines(&out);
    let enoent = (-libc::ENOENT).to_string();
    let want_out = [
        "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", &enoent,
    ];
    assert_eq!(
        &lines[..14],
        want_out,
        "every call but the last unlink succeeded"
    );
    let fd: i32 = lines[14].parse().expect("fd");
    assert_eq!(&lines[15..], ["0", "0"]);

    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let got: Vec<Change> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::FileChange)
        .map(Change::of)
        .collect();
    let a = files.path("secret/a");
    let with = |mut c: Change, f: &dyn Fn(&mut Change)| {
        f(&mut c);
        c
    };
    let want = vec![
        with(Change::new("chmod", 0, "chmod", &a), &|c| {
            c.mode = Some(0o4750);
            c.setid = (true, false);
        }),
        // Not monitored, reported for its setgid bit.
        with(
            Change::new("fchmodat", 0, "chmod", &files.path("plain.txt")),
            &|c| {
                c.mode = Some(0o2755);
                c.setid = (false, true);
            },
        ),
        with(Change::new("chown", 0, "chown", &a), &|c| {
            c.owner = (Some(0), None)
        }),
        // symlink(target, linkpath): the link created is the path.
        with(
            Change::new("symlink", 0, "symlink", &files.path("secret/link")),
            &|c| c.target = Some("/etc/shadow".into()),
        ),
        with(Change::new("link", 0, "link", &a), &|c| {
            c.target = Some(files.path("other/hard"))
        }),
        with(Change::new("rename", 0, "rename", &a), &|c| {
            c.target = Some(files.path("other/moved"))
        }),
        // Matched by its new name only.
        with(
            Change::new("renameat", 0, "rename", &files.path("other/moved")),
            &|c| c.target = Some(a.clone()),
        ),
        with(Change::new("truncate", 0, "truncate", &a), &|c| {
            c.length = Some(3)
        }),
        // Every mknod is reported, monitored or not.
        with(
            Change::new("mknod", 0, "mknod", &files.path("other/fifo")),
            &|c| {
                c.mode = Some(0o10644);
                c.node = Some(("fifo".into(), None));
            },
        ),
        with(
            Change::new("mknodat", 0, "mknod", &files.path("other/blk")),
            &|c| {
                c.mode = Some(0o60600);
                c.node = Some(("block".into(), Some((7, 200))));
            },
        ),
        Change::new("unlinkat", 0, "unlink", &files.path("secret/link")),
        Change::new(
            "unlink",
            -(libc::ENOENT as i64),
            "unlink",
            &files.path("secret/missing"),
        ),
        // fchmod has no path: reported for its setuid bit, with the fd.
        with(Change::new("fchmod", 0, "chmod", ""), &|c| {
            c.mode = Some(0o4755);
            c.setid = (true, false);
            c.fd = Some(fd);
        }),
        // A monitored suffix.
        with(
            Change::new("lchown", 0, "chown", &files.path("other/id_picket_key")),
            &|c| c.owner = (None, Some(0)),
        ),
    ];
    assert_eq!(
        got, want,
        "exactly the monitored changes, setid chmods and mknods, in order"
    );
    let e = seen
        .iter()
        .find(|e| e.kind() == EventKindName::FileChange)
        .expect("one change");
    assert_eq!(e.process.linux.cgroup_id, cg.id());
    t.done();
}

/// Another process's memory through process_vm_readv/writev and
/// /proc/<pid>/mem, and packet/raw sockets: exactly these are reported
/// (ordinary sockets never leave the kernel).
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_memory_access_and_raw_sockets() {
    let t = kernel_test!(process_memory_access_and_raw_sockets);
    let cg = TestCgroup::unique("procmem");
    let files = Files::new();
    let mut filters = files.filters(false);
    filters.file_suffixes.insert("/mem".into());
    let mut agent = agent_with(&cg, filters).await;
    let script = "import ctypes, os, socket, time\n\
         L = ctypes.CDLL(None, use_errno=True)\n\
         L.syscall.restype = ctypes.c_long\n\
         buf = ctypes.create_string_buffer(b'picket!!', 8)\n\
         pid = os.fork()\n\
         if pid == 0:\n  time.sleep(5)\n  os._exit(0)\n\
         class iovec(ctypes.Structure):\n  _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n\
         dst = ctypes.create_string_buffer(8)\n\
         local = iovec(ctypes.addressof(dst), 8)\n\
         remote = iovec(ctypes.addressof(buf), 8)\n\
         print(pid)\n\
         print(L.syscall(ctypes.c_long(310), ctypes.c_long(pid), ctypes.byref(local), ctypes.c_long(1), ctypes.byref(remote), ctypes.c_long(1), ctypes.c_long(0)))\n\
         print(dst.raw.decode())\n\
         print(L.syscall(ctypes.c_long(311), ctypes.c_long(pid), ctypes.byref(local), ctypes.c_long(1), ctypes.byref(remote), ctypes.c_long(1), ctypes.c_long(0)))\n\
         fd = os.open('/proc/%d/mem' % pid, os.O_RDONLY)\n\
         print(fd)\n\
         os.close(fd)\n\
         os.kill(pid, 9)\n\
         os.waitpid(pid, 0)\n\
         for fam, ty, proto in [(socket.AF_PACKET, socket.SOCK_RAW, 0x0300), (socket.AF_INET, socket.SOCK_RAW, 6), (socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET6, socket.SOCK_DGRAM, 0), (socket.AF_NETLINK, socket.SOCK_RAW, 0)]:\n  s = socket.socket(fam, ty, proto)\n  print(s.fileno())\n  s.close()\n";
    let out = run_in(&cg, &mut py(script));
    let lines = stdout_lines(&out);
    let child: u32 = lines[0].parse().expect("child pid");
    assert_eq!(
        &lines[1..3],
        ["8", "picket!!"],
        "process_vm_readv read 8 bytes"
    );
    assert_eq!(lines[3], "8", "process_vm_writev wrote 8 bytes");
    let mem_fd: i64 = lines[4].parse().expect("fd");
    let sock_fd: Vec<i64> = lines[5..7].iter().map(|l| l.parse().expect("fd")).collect();

    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let vm: Vec<(String, i64, String, i64, u32)> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::Ptrace)
        .map(|e| {
            let p = e.ptrace.as_ref().expect("ptrace");
            let (name, result) = syscall(e);
            (
                name.into(),
                result,
                p.request.clone(),
                p.request_id,
                p.target_pid,
            )
        })
        .collect();
    assert_eq!(
        vm,
        vec![
            (
                "process_vm_readv".into(),
                8,
                "process_vm_readv".into(),
                -1,
                child
            ),
            (
                "process_vm_writev".into(),
                8,
                "process_vm_writev".into(),
                -2,
                child
            ),
        ]
    );
    let mem: Vec<(String, i64)> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::FileOpen)
        .map(|e| (e.file.as_ref().expect("file").path.clone(), syscall(e).1))
        .collect();
    assert_eq!(mem, vec![(format!("/proc/{child}/mem"), mem_fd)]);
    let socks: Vec<(String, i64, String, String, i64)> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::RawSocket)
        .map(|e| {
            let s = e.socket.as_ref().expect("socket section");
            let (name, result) = syscall(e);
            (
                name.into(),
                result,
                s.family.clone(),
                s.socket_type.clone(),
                s.protocol,
            )
        })
        .collect();
    assert_eq!(
        socks,
        vec![
            (
                "socket".into(),
                sock_fd[0],
                "packet".into(),
                "raw".into(),
                0x0300
            ),
            ("socket".into(), sock_fd[1], "inet".into(), "raw".into(), 6),
        ],
        "only the packet and raw IP sockets, not the stream, datagram and netlink ones"
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_opens_never_reach_the_ring_buffer() {
    let t = kernel_test!(unmatched_opens_never_reach_the_ring_buffer);
    let cg = TestCgroup::unique("filter");
    let files = Files::new();
    let mut agent = agent_with(&cg, files.filters(false)).await;
    let before = agent.sensor().submitted_counts().expect("counts")["file_open"];
    let script = format!(
        "import os\nfor i in range(500):\n  os.close(os.open('{p}', os.O_RDONLY))\n",
        p = files.path("plain.txt")
    );
    run_in(&cg, &mut py(&script));
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    let mid = agent.sensor().submitted_counts().expect("counts")["file_open"];
    assert_eq!(mid - before, 0, "500 unmatched opens submitted nothing");
    assert!(!seen.iter().any(|e| e.kind() == EventKindName::FileOpen));
    let script = format!(
        "import os\nos.close(os.open('{a}', os.O_RDONLY))\n",
        a = files.path("secret/a")
    );
    run_in(&cg, &mut py(&script));
    wait_for(&mut agent, &mut seen, WAIT, "the matched open", |e| {
        e.kind() == EventKindName::FileOpen
    })
    .await;
    let after = agent.sensor().submitted_counts().expect("counts")["file_open"];
    assert_eq!(after - mid, 1, "exactly one record for one matched open");
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_summarizes_the_excess() {
    let t = kernel_test!(rate_limit_summarizes_the_excess);
    let cg = TestCgroup::unique("rate");
    let files = Files::new();
    let mut filters = files.filters(false);
    // The burst's window never rolls over (no later open): the agent's
    // flush reports it (the kernel-sent summary: kernel_filters.rs).
    filters.rates.insert(
        EventKindName::FileOpen,
        Rate {
            max_events: 5,
            window: Duration::from_secs(1),
        },
    );
    let mut agent = agent_with(&cg, filters).await;
    let script = format!(
        "import os\nfor i in range(20):\n  os.close(os.open('{a}', os.O_RDONLY))\n",
        a = files.path("secret/a")
    );
    run_in(&cg, &mut py(&script));
    let mut seen = Vec::new();
    let summary = wait_for(&mut agent, &mut seen, WAIT, "rate summary", |e| {
        e.kind() == EventKindName::RateSummary
    })
    .await;
    let s = summary.summary.as_ref().expect("summary");
    assert_eq!(
        (s.kind.as_str(), s.count, s.window_ms),
        ("file_open", 15, 1_000)
    );
    assert_eq!(summary.process.linux.cgroup_id, cg.id());
    drain(&mut agent, &mut seen, Duration::from_millis(800)).await;
    assert_eq!(
        seen.iter()
            .filter(|e| e.kind() == EventKindName::FileOpen)
            .count(),
        5,
        "the first 5 opens are sent"
    );
    let total: u64 = seen
        .iter()
        .filter_map(|e| e.summary.as_ref())
        .map(|s| s.count)
        .sum();
    assert_eq!(total, 15, "one summary, nothing counted twice");
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_success_failure_and_capability_check() {
    let t = kernel_test!(setuid_success_failure_and_capability_check);
    let cg = TestCgroup::unique("setuid");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    // Root drops to nobody (succeeds), then tries to get root back (EPERM:
    // a failed CAP_SETUID check).
    let script = "import os\n\
         os.setgid(65534); os.setuid(65534)\n\
         try:\n  os.setuid(0)\nexcept PermissionError:\n  print('eperm')\n";
    let out = run_in(&cg, &mut py(script));
    assert_eq!(stdout_lines(&out), ["eperm"]);
    let mut seen = Vec::new();
    let ok = wait_for(&mut agent, &mut seen, WAIT, "setuid(65534)", |e| {
        e.kind() == EventKindName::PrivilegeChange && syscall(e) == ("setuid", 0)
    })
    .await;
    let p = ok.privilege.as_ref().expect("privilege");
    assert_eq!(p.args, vec![65534]);
    assert_eq!(
        (p.old.uid, p.old.euid, p.old.suid, p.old.fsuid),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (p.new.uid, p.new.euid, p.new.suid, p.new.fsuid),
        (65534, 65534, 65534, 65534)
    );
    assert_eq!((p.old.gid, p.new.gid), (65534, 65534), "setgid came first");
    let gid = wait_for(&mut agent, &mut seen, WAIT, "setgid", |e| {
        e.kind() == EventKindName::PrivilegeChange && syscall(e).0 == "setgid"
    })
    .await;
    let g = gid.privilege.as_ref().expect("privilege");
    assert_eq!(
        (g.old.gid, g.new.gid, g.new.egid, g.args.clone()),
        (0, 65534, 65534, vec![65534])
    );
    let failed = wait_for(&mut agent, &mut seen, WAIT, "setuid(0)", |e| {
        e.kind() == EventKindName::PrivilegeChange
            && syscall(e) == ("setuid", -(libc::EPERM as i64))
    })
    .await;
    let p = failed.privilege.as_ref().expect("privilege");
    assert_eq!(p.args, vec![0]);
    assert_eq!(
        (p.old.uid, p.new.uid, p.new.euid),
        (65534, 65534, 65534),
        "nothing changed"
    );
    let cap = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "failed CAP_SETUID check",
        |e| {
            e.capability
                .as_ref()
                .is_some_and(|c| c.name == "CAP_SETUID" && !c.allowed)
        },
    )
    .await;
    let c = cap.capability.as_ref().expect("capability");
    assert_eq!((c.id, c.init_user_ns), (7, true));
    assert_eq!(cap.process.pid, failed.process.pid);
    t.done();
}

/// An overlay mount of the test's own, unmounted on drop (also when the
/// test fails).
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(dir.path().join("lower/f"), "hi\n").expect("write");
        let p = |d: &str| dir.path().join(d).display().to_string();
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                p("lower"),
                p("upper"),
                p("work")
            ))
            .arg(p("merged"))
            .status()
            .expect("mount");
        assert!(st.success(), "mount -t overlay failed");
        Self { dir }
    }

    fn merged(&self) -> std::path::PathBuf {
        self.dir.path().join("merged")
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.merged()).status();
    }
}

/// overlayfs looks files up with its mounter's credentials and reads its
/// `trusted.*` xattrs with them, which checks CAP_SYS_ADMIN: on Debian's 6.1
/// every lookup in a container on an overlay root looked like the container
/// using CAP_SYS_ADMIN (`dangerous-capability-in-container` on every
/// container). Checks made under overridden credentials are not reported;
/// the process's own use (unshare) still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_checks_under_overridden_credentials_are_not_reported() {
    let t = kernel_test!(capability_checks_under_overridden_credentials_are_not_reported);
    let ovl = Overlay::mount();
    let cg = TestCgroup::unique("ovlcap");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let f = ovl.merged().join("f");
    let f2 = ovl.merged().join("new");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "cat {f} >/dev/null && stat {f} >/dev/null && ls {m} >/dev/null && touch {f2} \
         && unshare -u true",
        f = f.display(),
        f2 = f2.display(),
        m = ovl.merged().display()
    ));
    run_in(&cg, &mut cmd);
    let mut seen = Vec::new();
    let own = wait_for(
        &mut agent,
        &mut seen,
        WAIT,
        "unshare's CAP_SYS_ADMIN",
        |e| {
            e.capability
                .as_ref()
                .is_some_and(|c| c.name == "CAP_SYS_ADMIN")
                && e.process.executable.name == "unshare"
        },
    )
    .await;
    let c = own.capability.as_ref().expect("capability");
    assert_eq!((c.id, c.allowed, c.init_user_ns), (21, true, true));
    // Records arrive in order: every check of cat/stat/ls/touch came before.
    let others: Vec<(String, String)> = seen
        .iter()
        .filter(|e| {
            e.capability
                .as_ref()
                .is_some_and(|c| c.name == "CAP_SYS_ADMIN")
        })
        .map(|e| {
            (
                e.process.executable.name.clone(),
                e.process.command_line.clone(),
            )
        })
        .filter(|(name, _)| name != "unshare")
        .collect();
    assert_eq!(others, Vec::<(String, String)>::new());
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_as_non_root_user() {
    let t = kernel_test!(setuid_as_non_root_user);
    let cg = TestCgroup::unique("nonroot");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c"]).arg(
        "import os\nos.setuid(65534)\nfor i in range(50):\n  try:\n    os.setuid(0)\n  except PermissionError:\n    pass\nprint('done')\n",
    );
    let out = run_in(&cg, &mut cmd);
    assert_eq!(stdout_lines(&out), ["done"]);
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let privs: Vec<(String, i64, Vec<i64>, u32, u32)> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::PrivilegeChange && e.process.user.id == 65534)
        .map(|e| {
            let p = e.privilege.as_ref().expect("privilege");
            (
                syscall(e).0.to_string(),
                syscall(e).1,
                p.args.clone(),
                p.old.uid,
                p.new.uid,
            )
        })
        .collect();
    let mut expected = vec![("setuid".to_string(), 0, vec![65534], 65534, 65534)];
    expected.extend((0..50).map(|_| {
        (
            "setuid".to_string(),
            -(libc::EPERM as i64),
            vec![0],
            65534,
            65534,
        )
    }));
    assert_eq!(privs, expected);
    // 50 failed CAP_SETUID checks in a loop: one capability event (setpriv,
    // still root in the same process before its exec, passed one check).
    let caps: Vec<_> = seen
        .iter()
        .filter_map(|e| {
            e.capability
                .as_ref()
                .filter(|c| c.name == "CAP_SETUID")
                .map(|c| (c.allowed, e.process.pid))
        })
        .collect();
    assert_eq!(
        caps.iter().filter(|(allowed, _)| !allowed).count(),
        1,
        "de-duplicated per process, capability and result: {caps:?}"
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capset_drops_capabilities() {
    let t = kernel_test!(capset_drops_capabilities);
    let cg = TestCgroup::unique("capset");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let script = "import ctypes\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         hdr=(ctypes.c_uint32*2)(0x20080522, 0)\n\
         data=(ctypes.c_uint32*6)(0, 1<<21, 0, 0, 0, 0)\n\
         print(libc.capset(hdr, data))\n\
         print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n";
    let out = run_in(&cg, &mut py(script));
    assert_eq!(stdout_lines(&out), ["0", "0000000000000000"]);
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "capset", |e| {
        e.kind() == EventKindName::PrivilegeChange && syscall(e).0 == "capset"
    })
    .await;
    assert_eq!(syscall(&ev), ("capset", 0));
    let p = ev.privilege.as_ref().expect("privilege");
    assert_eq!(
        p.args,
        vec![0, 1 << 21, 0],
        "requested effective, permitted, inheritable"
    );
    let old = p.old.capabilities.as_ref().expect("old caps");
    assert!(
        old.effective.iter().any(|c| c == "CAP_SYS_ADMIN") && old.effective.len() >= 38,
        "{old:?}"
    );
    let new = p.new.capabilities.as_ref().expect("new caps");
    assert!(new.effective.is_empty(), "{new:?}");
    assert_eq!(*new.permitted, ["CAP_SYS_ADMIN"]);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshare_and_setns() {
    let t = kernel_test!(unshare_and_setns);
    let cg = TestCgroup::unique("ns");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    // A process in a new UTS namespace to join.
    let mut holder = Command::new("unshare");
    holder.args(["--uts", "/bin/sleep", "30"]);
    cg.enter(&mut holder);
    let mut holder = holder.spawn().expect("holder");
    let hpid = holder.id();
    let mut seen = Vec::new();
    let un = wait_for(&mut agent, &mut seen, WAIT, "unshare", |e| {
        e.kind() == EventKindName::Namespace && syscall(e).0 == "unshare"
    })
    .await;
    assert_eq!(syscall(&un), ("unshare", 0));
    assert_eq!(un.process.pid, hpid);
    let ns = un.namespace.as_ref().expect("namespace");
    assert_eq!(
        (ns.flags, ns.types.clone(), ns.fd),
        (libc::CLONE_NEWUTS as u64, vec!["uts".to_string()], None)
    );
    let out = run_in(
        &cg,
        Command::new("nsenter").args(["-t", &hpid.to_string(), "-u", "/bin/true"]),
    );
    assert!(out.status.success());
    let set = wait_for(&mut agent, &mut seen, WAIT, "setns", |e| {
        e.kind() == EventKindName::Namespace && syscall(e).0 == "setns"
    })
    .await;
    assert_eq!(syscall(&set), ("setns", 0));
    let ns = set.namespace.as_ref().expect("namespace");
    assert_eq!(
        (ns.flags, ns.types.clone()),
        (libc::CLONE_NEWUTS as u64, vec!["uts".to_string()])
    );
    assert!(ns.fd.is_some_and(|fd| fd >= 3));
    let _ = holder.kill();
    let _ = holder.wait();
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptrace_attach_to_a_child() {
    let t = kernel_test!(ptrace_attach_to_a_child);
    let cg = TestCgroup::unique("ptrace");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let script = "import ctypes,os,time,signal\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         libc.ptrace.argtypes=[ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n\
         pid=os.fork()\n\
         if pid==0:\n  time.sleep(30); os._exit(0)\n\
         print(pid, libc.ptrace(16, pid, None, None))\n\
         os.waitpid(pid, 0)\n\
         libc.ptrace(17, pid, None, None)\n\
         os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)\n";
    let out = run_in(&cg, &mut py(script));
    let line = stdout_lines(&out)[0].clone();
    let (child, rc) = line.split_once(' ').expect("two numbers");
    assert_eq!(rc, "0");
    let child: u32 = child.parse().expect("pid");
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "PTRACE_ATTACH", |e| {
        e.ptrace.as_ref().is_some_and(|p| p.request_id == 16)
    })
    .await;
    assert_eq!(syscall(&ev), ("ptrace", 0));
    let p = ev.ptrace.as_ref().expect("ptrace");
    assert_eq!((p.request.as_str(), p.target_pid), ("PTRACE_ATTACH", child));
    let det = wait_for(&mut agent, &mut seen, WAIT, "PTRACE_DETACH", |e| {
        e.ptrace.as_ref().is_some_and(|p| p.request_id == 17)
    })
    .await;
    assert_eq!(
        det.ptrace.as_ref().expect("ptrace").request,
        "PTRACE_DETACH"
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memfd_create_then_exec_from_it() {
    let t = kernel_test!(memfd_create_then_exec_from_it);
    let cg = TestCgroup::unique("memfd");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let script = "import os,sys\n\
         fd=os.memfd_create('picket-test', 0)\n\
         os.write(fd, open('/bin/echo','rb').read())\n\
         print(os.getpid(), fd); sys.stdout.flush()\n\
         os.execv('/proc/self/fd/%d' % fd, ['fileless', 'from-memfd'])\n";
    let out = run_in(&cg, &mut py(script));
    let lines = stdout_lines(&out);
    let (pid, fd) = lines[0].split_once(' ').expect("pid fd");
    let pid: u32 = pid.parse().expect("pid");
    assert_eq!(lines[1], "from-memfd");
    let mut seen = Vec::new();
    let m = wait_for(&mut agent, &mut seen, WAIT, "memfd_create", |e| {
        e.kind() == EventKindName::Memfd
    })
    .await;
    assert_eq!(
        syscall(&m),
        ("memfd_create", fd.parse::<i64>().expect("fd"))
    );
    let mf = m.memfd.as_ref().expect("memfd");
    assert_eq!((mf.name.as_str(), mf.flags), ("picket-test", 0));
    assert_eq!(m.process.pid, pid);
    let exec = wait_for(&mut agent, &mut seen, WAIT, "exec from the memfd", |e| {
        e.kind() == EventKindName::Exec
            && e.process.pid == pid
            && e.process
                .command_args
                .first()
                .is_some_and(|a| a == "fileless")
    })
    .await;
    assert_eq!(exec.process.command_args, vec!["fileless", "from-memfd"]);
    assert_eq!(exec.process.executable.path, "/memfd:picket-test");
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup2_of_a_connected_socket_onto_stdio() {
    let t = kernel_test!(dup2_of_a_connected_socket_onto_stdio);
    let cg = TestCgroup::unique("dup2");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let script = format!(
        "import socket,os,sys\n\
         s=socket.create_connection(('127.0.0.1',{port}))\n\
         sys.stderr.write('%d\\n' % s.fileno()); sys.stderr.flush()\n\
         os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1)\n\
         os.write(1, b'shell> ')\n"
    );
    let mut cmd = py(&script);
    cmd.stdin(Stdio::null());
    let out = run_in(&cg, &mut cmd);
    let sfd: i32 = String::from_utf8_lossy(&out.stderr)
        .trim()
        .parse()
        .expect("fd");
    let (mut conn, _) = l.accept().expect("accept");
    let mut got = String::new();
    use std::io::Read;
    conn.read_to_string(&mut got).expect("read");
    assert_eq!(got, "shell> ");
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let dups: Vec<(String, i64, i32, i32, FdType)> = seen
        .iter()
        .filter_map(|e| {
            e.fd.as_ref().map(|f| {
                (
                    syscall(e).0.to_string(),
                    syscall(e).1,
                    f.old,
                    f.new,
                    f.old_type,
                )
            })
        })
        .collect();
    assert_eq!(
        dups,
        vec![
            ("dup2".into(), 0, sfd, 0, FdType::Socket),
            ("dup2".into(), 1, sfd, 1, FdType::Socket)
        ]
    );
    t.done();
}

/// (syscall, result, source, target, fstype, flags, flag names)
type MountRow = (String, i64, String, String, String, u64, Vec<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_mount_and_umount_in_a_mount_namespace() {
    let t = kernel_test!(tmpfs_mount_and_umount_in_a_mount_namespace);
    let cg = TestCgroup::unique("mount");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().display().to_string();
    let script = format!(
        "import ctypes\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         print(libc.mount(b'picket-tmpfs', b'{target}', b'tmpfs', 6, b'size=1m'))\n\
         print(libc.umount2(b'{target}', 2))\n\
         print(libc.umount2(b'{target}', 0), ctypes.get_errno())\n"
    );
    let out = run_in(
        &cg,
        Command::new("unshare").args(["-m", "--propagation", "private", PY, "-c", &script]),
    );
    assert_eq!(
        stdout_lines(&out),
        ["0", "0", &format!("-1 {}", libc::EINVAL)]
    );
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let mounts: Vec<MountRow> = seen
        .iter()
        .filter_map(|e| {
            e.mount.as_ref().map(|m| {
                let (n, r) = syscall(e);
                (
                    n.to_string(),
                    r,
                    m.source.clone(),
                    m.target.clone(),
                    m.fstype.clone(),
                    m.flags,
                    m.flag_names.clone(),
                )
            })
        })
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        mounts,
        vec![
            // unshare(1) makes the new namespace private.
            (
                s("mount"),
                0,
                s("none"),
                s("/"),
                s(""),
                libc::MS_REC | libc::MS_PRIVATE,
                vec![s("MS_REC"), s("MS_PRIVATE")]
            ),
            (
                s("mount"),
                0,
                s("picket-tmpfs"),
                target.clone(),
                s("tmpfs"),
                6,
                vec![s("MS_NOSUID"), s("MS_NODEV")]
            ),
            (
                s("umount2"),
                0,
                s(""),
                target.clone(),
                s(""),
                2,
                vec![s("MNT_DETACH")]
            ),
            (
                s("umount2"),
                -(libc::EINVAL as i64),
                s(""),
                target,
                s(""),
                0,
                vec![]
            ),
        ]
    );
    let ns: Vec<_> = seen
        .iter()
        .filter_map(|e| e.namespace.as_ref().map(|n| n.types.clone()))
        .collect();
    assert_eq!(ns, vec![vec![s("mnt")]]);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mount_of_a_host_path_into_a_container() {
    let t = kernel_test!(bind_mount_of_a_host_path_into_a_container);
    let pod_uid = "5c1e7a2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d";
    let ctr = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    let cg = TestCgroup::create(&format!(
        "picket-test-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ));
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let host = tempfile::tempdir().expect("host dir");
    let inside = tempfile::tempdir().expect("container dir");
    let (h, i) = (
        host.path().display().to_string(),
        inside.path().display().to_string(),
    );
    let script = format!(
        "import ctypes\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         print(libc.mount(b'{h}', b'{i}', None, 4096, None))\n"
    );
    let out = run_in(
        &cg,
        Command::new("unshare").args([
            "--fork",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--propagation",
            "private",
            PY,
            "-c",
            &script,
        ]),
    );
    assert_eq!(stdout_lines(&out), ["0"]);
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "bind mount", |e| {
        e.mount
            .as_ref()
            .is_some_and(|m| m.flags & libc::MS_BIND != 0)
    })
    .await;
    assert_eq!(syscall(&ev), ("mount", 0));
    let m = ev.mount.as_ref().expect("mount");
    assert_eq!(
        (m.source.as_str(), m.target.as_str(), m.fstype.as_str()),
        (h.as_str(), i.as_str(), "")
    );
    assert_eq!(m.flag_names, vec!["MS_BIND"]);
    assert_eq!(ev.container.as_ref().expect("container").id, ctr);
    assert_eq!(ev.process.vpid, 1, "the container's init did the mount");
    let kinds: BTreeSet<_> = seen.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&EventKindName::Namespace), "{kinds:?}");
    t.done();
}

/// A child that is killed and reaped when dropped (also on test failure).
struct Running(std::process::Child);

impl Running {
    fn spawn_in(cg: &TestCgroup, cmd: &mut Command) -> Self {
        cg.enter(cmd);
        Self(cmd.spawn().expect("spawn"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Capture limit: a path passed to open(2) from a page that was never
/// touched cannot be read by the probe at syscall entry (probes do not
/// fault pages in). The kernel's own copy of the path faults it in, so the
/// exit reads it again: the open is reported with its path. The script
/// proves the page was absent at the open (`/proc/self/pagemap`, bit 63)
/// and present after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_path_page_was_never_touched_is_reported() {
    let t = kernel_test!(an_open_whose_path_page_was_never_touched_is_reported);
    let cg = TestCgroup::unique("fault");
    let files = Files::new();
    let target = files.path("secret/a");
    // The path literal sits at the start of a file mapped privately and
    // never read before the open.
    let lit = files.path("literal.bin");
    let mut page = target.clone().into_bytes();
    page.resize(8192, 0);
    std::fs::write(&lit, &page).expect("write literal");
    let mut agent = agent_with(&cg, files.filters(false)).await;
    let script = format!(
        "import ctypes, mmap, os, struct\n\
         def present(addr):\n\
         \x20 with open('/proc/self/pagemap', 'rb') as f:\n\
         \x20   f.seek(addr // 4096 * 8)\n\
         \x20   return struct.unpack('<Q', f.read(8))[0] >> 63\n\
         fd = os.open('{lit}', os.O_RDONLY)\n\
         m = mmap.mmap(fd, 8192, access=mmap.ACCESS_COPY)\n\
         addr = ctypes.addressof(ctypes.c_char.from_buffer(m))\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.open.argtypes = [ctypes.c_void_p, ctypes.c_int]\n\
         before = present(addr)\n\
         r = libc.open(addr, os.O_RDONLY)\n\
         print(before, present(addr), r >= 0)\n"
    );
    let out = run_in(&cg, &mut py(&script));
    assert_eq!(
        stdout_lines(&out),
        ["0 1 True"],
        "absent before, present after"
    );
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "the open", |e| {
        e.kind() == EventKindName::FileOpen
    })
    .await;
    let f = ev.file.as_ref().expect("file");
    assert_eq!((f.path.as_str(), f.write), (target.as_str(), false));
    assert!(syscall(&ev).1 >= 0, "opened: {:?}", ev.syscall);
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(
        seen.iter()
            .filter(|e| e.kind() == EventKindName::FileOpen)
            .count(),
        1
    );
    t.done();
}

/// Capture limit: a storm of opens of a merely monitored path exhausts the
/// per-cgroup limit, but the open of an exact path a rule names (derived
/// from the rule, as `picket run` does) takes the priority lane and is
/// delivered; the decoys beyond the limit are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoy_storm_cannot_push_a_rule_path_into_the_summary() {
    let t = kernel_test!(a_decoy_storm_cannot_push_a_rule_path_into_the_summary);
    let cg = TestCgroup::unique("decoy");
    let files = Files::new();
    let shadow = files.path("secret/shadow");
    let decoy = files.path("secret/shadow-");
    std::fs::write(&shadow, b"root:*:").expect("write");
    std::fs::write(&decoy, b"root:*:").expect("write");
    let yaml = format!(
        "rules:\n  - id: shadow-read\n    name: shadow-read\n    severity: high\n    events: [file_open]\n    condition: 'file.path in [\"{shadow}\"]'\n    output: 'read %file.path'\n    tags: [T1003.008]\n"
    );
    let rules = picket::rules::RuleSet::from_sources(vec![("r.yaml".into(), yaml)])
        .unwrap_or_else(|d| panic!("{}", picket::rules::diagnostics::render(&d)));
    let mut base = files.filters(false);
    base.rates.insert(
        EventKindName::FileOpen,
        Rate {
            max_events: 20,
            window: Duration::from_secs(5),
        },
    );
    let derived = picket::sensor::rule_filters::derive_filters(
        &rules,
        &picket::sensor::rule_filters::FilterConfig {
            base,
            keep_all_kinds: true,
        },
    );
    assert_eq!(
        derived.filters.file_exact,
        [shadow.clone()].into(),
        "the rule's exact path"
    );
    let mut agent = agent_with(&cg, derived.filters).await;
    // 300 decoys (prefix `secret/` and the prefix entry `secret/shadow`
    // both match them), then the real read.
    let script = format!(
        "import os\n\
         for i in range(300):\n  os.close(os.open('{decoy}', os.O_RDONLY))\n\
         os.close(os.open('{shadow}', os.O_RDONLY))\n"
    );
    run_in(&cg, &mut py(&script));
    let mut seen = Vec::new();
    wait_for(&mut agent, &mut seen, WAIT, "the rule path's open", |e| {
        e.file.as_ref().is_some_and(|f| f.path == shadow)
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(800)).await;
    let count = |p: &str| {
        seen.iter()
            .filter(|e| e.kind() == EventKindName::FileOpen)
            .filter(|e| e.file.as_ref().is_some_and(|f| f.path == p))
            .count()
    };
    assert_eq!((count(&decoy), count(&shadow)), (20, 1));
    t.done();
}

/// Capture limit: argv is captured to 16 arguments in the kernel; the
/// agent completes it from /proc/<pid>/cmdline while the process runs, so
/// an option after 20 padding arguments is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_beyond_sixteen_arguments_is_completed() {
    let t = kernel_test!(argv_beyond_sixteen_arguments_is_completed);
    let cg = TestCgroup::unique("argv");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let mut args: Vec<String> = vec!["-c".into(), "import time; time.sleep(30)".into()];
    args.extend((1..=20).map(|i| format!("pad{i}")));
    args.push("--evil".into());
    let mut cmd = Command::new(PY);
    cmd.args(&args);
    let child = Running::spawn_in(&cg, &mut cmd);
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of python", |e| {
        e.kind() == EventKindName::Exec && e.process.pid == child.0.id()
    })
    .await;
    drop(child);
    let mut want = vec![PY.to_string()];
    want.extend(args);
    assert_eq!(ev.process.command_args, want);
    assert_eq!(ev.process.command_args.len(), 24);
    assert!(!ev.process.args_truncated);
    t.done();
}

/// Capture limit: the kernel walks at most 32 directories of the
/// executable's path; the agent completes a deeper one from
/// /proc/<pid>/exe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executable_forty_directories_deep_has_its_whole_path() {
    let t = kernel_test!(an_executable_forty_directories_deep_has_its_whole_path);
    let cg = TestCgroup::unique("deep");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut deep = std::fs::canonicalize(dir.path()).expect("canonicalize");
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).expect("mkdir");
    let exe = deep.join("sleepy");
    std::fs::copy("/usr/bin/sleep", &exe).expect("copy");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let mut cmd = Command::new(&exe);
    cmd.arg("30");
    let child = Running::spawn_in(&cg, &mut cmd);
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of the deep copy", |e| {
        e.kind() == EventKindName::Exec && e.process.pid == child.0.id()
    })
    .await;
    drop(child);
    assert_eq!(ev.process.executable.path, exe.display().to_string());
    assert!(!ev.process.executable_truncated);
    t.done();
}

/// LD_PRELOAD and LD_LIBRARY_PATH are captured from the new program's
/// stack at exec; one set after 300 other variables (past the kernel's
/// bounded scan) is completed from /proc/<pid>/environ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ld_preload_and_library_path_at_exec() {
    let t = kernel_test!(ld_preload_and_library_path_at_exec);
    let cg = TestCgroup::unique("ldenv");
    let dir = tempfile::tempdir().expect("tempdir");
    // A copy of sleep per case, to tell the execs apart by name.
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy("/usr/bin/sleep", &p).expect("copy");
        p
    };
    let (plain, preload, crowded) = (copy("plain"), copy("preload"), copy("crowded"));
    let lib = dir.path().join("evil.so").display().to_string();
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    let mut cmd = Command::new(&plain);
    cmd.arg("0")
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH");
    run_in(&cg, &mut cmd);
    // ld.so warns about a preload it cannot load and runs the program.
    let mut cmd = Command::new(&preload);
    cmd.arg("0")
        .env("LD_PRELOAD", &lib)
        .env("LD_LIBRARY_PATH", "/opt/x/lib:/tmp");
    run_in(&cg, &mut cmd);
    // Command sorts the environment: A_PAD_* come before LD_PRELOAD.
    let mut cmd = Command::new(&crowded);
    cmd.arg("30")
        .env("LD_PRELOAD", &lib)
        .env_remove("LD_LIBRARY_PATH");
    for i in 0..300 {
        cmd.env(format!("A_PAD_{i:03}"), "x");
    }
    let running = Running::spawn_in(&cg, &mut cmd);
    let mut seen = Vec::new();
    let mut env_of = async |name: &str| {
        wait_for(&mut agent, &mut seen, WAIT, name, |e| {
            e.kind() == EventKindName::Exec && e.process.executable.name == name
        })
        .await
        .process
        .env
        .expect("env section")
    };
    let plain = env_of("plain").await;
    assert_eq!(
        (plain.ld_preload, plain.ld_library_path, plain.truncated),
        (None, None, false)
    );
    let preload = env_of("preload").await;
    assert_eq!(
        (
            preload.ld_preload.as_deref(),
            preload.ld_library_path.as_deref(),
            preload.truncated
        ),
        (Some(lib.as_str()), Some("/opt/x/lib:/tmp"), false)
    );
    let crowded = env_of("crowded").await;
    assert_eq!(
        (
            crowded.ld_preload.as_deref(),
            crowded.ld_library_path,
            crowded.truncated
        ),
        (Some(lib.as_str()), None, false)
    );
    drop(running);
    t.done();
}

/// Drift is decided at exec from the executed file's change time: a binary
/// dropped into a container that immediately execs a system binary is
/// still flagged on its own exec (its /proc/<pid>/exe already shows the
/// system binary when the agent looks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_binary_that_execs_at_once_is_flagged() {
    let t = kernel_test!(a_dropped_binary_that_execs_at_once_is_flagged);
    let pod_uid = "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d";
    let ctr = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d7c8e2c1d9f7a6e5d3c2b1a0f";
    let cg = TestCgroup::create(&format!(
        "picket-test-drift-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let dropped = dir.path().join("dropper");
    let mut agent = agent_with(&cg, SensorFilters::default()).await;
    // The container's init copies dash after it started and runs the copy,
    // which replaces itself with /bin/true at once.
    let script = format!(
        "sleep 0.1; cp /usr/bin/dash {d} && {d} -c 'exec /usr/bin/true'",
        d = dropped.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--fork", "--pid", "--mount", "/bin/sh", "-c", &script]);
    run_in(&cg, &mut cmd);
    let path = std::fs::canonicalize(&dropped)
        .expect("canonicalize")
        .display()
        .to_string();
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of the dropper", |e| {
        e.kind() == EventKindName::Exec && e.process.executable.path == path
    })
    .await;
    assert_eq!(
        ev.process.executable.written_after_container_start,
        Some(true)
    );
    let ev = wait_for(&mut agent, &mut seen, WAIT, "exec of true", |e| {
        e.kind() == EventKindName::Exec && e.process.executable.path == "/usr/bin/true"
    })
    .await;
    assert_eq!(
        ev.process.executable.written_after_container_start,
        Some(false)
    );
    t.done();
}
