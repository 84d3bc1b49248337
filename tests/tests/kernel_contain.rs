//! Real-kernel tests of containment: in-kernel kill-process rules,
//! block-egress through `cgroup_sock_addr` programs, kill-container. Root
//! only; they fail (never skip) elsewhere.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::process::ExitEvent;
use picket::{
    btf::Btf,
    contain::{
        ActionKind, ActionRecord, ActionRequest, Containment, ContainmentConfig, Destination,
        EgressScope, ExeMatch, KernelEnforcer, KillRuleSpec, KillScope, Outcome, SafetyConfig,
        Target, Trigger,
    },
    sensor::{RawEvent, Sensor, SensorConfig, decode},
};
use picket_tests::{cgroup::TestCgroup, kernel_test};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// The real programs loaded into the kernel, the containment engine on top
/// of them, and the sensor's ring buffer (exit events), traced only for
/// `traced` cgroups.
struct Rig {
    /// Keeps the programs loaded.
    _sensor: Sensor,
    engine: Arc<Containment>,
    audit: mpsc::Receiver<ActionRecord>,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
}

async fn rig(traced: &[&TestCgroup], container_roots: Vec<u64>) -> Rig {
    let mut sensor = match Sensor::load(&SensorConfig::default()) {
        Ok(s) => s,
        Err(e) => panic!(
            "loading the programs: {}",
            picket::sensor::loader::error_chain(&e)
        ),
    };
    for p in [
        "contain_exec",
        "contain_connect4",
        "contain_connect6",
        "contain_sendmsg4",
        "contain_sendmsg6",
    ] {
        assert!(sensor.attached(p), "{p}: {:?}", sensor.status.get(p));
    }
    let ids: Vec<u64> = traced.iter().map(|c| c.id()).collect();
    sensor
        .set_cgroup_filter(agent_common::settings::cgroup_filter::ONLY_LISTED, &ids)
        .expect("cgroup filter");
    let btf = Btf::from_file("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let mut k = KernelEnforcer::take(sensor.ebpf_mut(), Some(&btf)).expect("containment maps");
    let records = k.take_records().expect("kill records ring");
    let cfg = ContainmentConfig {
        node_name: "test-node".into(),
        safety: SafetyConfig {
            per_rule: None,
            per_namespace: None,
            global: None,
            ..SafetyConfig::default()
        },
        ..Default::default()
    };
    let (tx, audit) = mpsc::channel(64);
    let engine = Containment::new(cfg)
        .with_kernel(k)
        .expect("kernel enforcer")
        .with_audit(tx);
    engine
        .set_kernel_cgroups(container_roots, vec![])
        .expect("container roots");
    let engine = Arc::new(engine);
    tokio::spawn(engine.clone().run_kernel_records(records));
    let ring = sensor.take_ring().expect("ring");
    Rig {
        _sensor: sensor,
        engine,
        audit,
        ring,
    }
}

impl Rig {
    /// Waits for the exit record of a process whose comm is `comm`.
    async fn exit_of(&mut self, comm: &str) -> ExitEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(item) = self.ring.next() {
                if let Ok(RawEvent::Exit(e)) = decode(&item)
                    && picket::sensor::decode::cstr(&e.comm) == comm
                {
                    return e;
                }
            }
            assert!(Instant::now() < deadline, "no exit event of {comm}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn record(&mut self, what: &str) -> ActionRecord {
        match tokio::time::timeout(WAIT, self.audit.recv()).await {
            Ok(Some(r)) => r,
            _ => panic!("no audit record for {what}"),
        }
    }
}

/// A kubelet-style container cgroup below a test-private `kubepods`.
fn container_cgroup(tag: &str) -> (TestCgroup, PathBuf) {
    let pod_uid = "7c1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f10";
    let ctr = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    let top = format!("picket-test-{tag}-{}", std::process::id());
    let cg = TestCgroup::create(&format!(
        "{top}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope"
    ));
    let kubepods = picket_tests::cgroup::v2_root().join(top).join("kubepods");
    (cg, kubepods)
}

fn cgroup_id(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("cgroup").ino()
}

/// A copy of `touch` named `name` in `dir`: if it ever runs, it creates its
/// argument.
fn marker_program(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy("/usr/bin/touch", &p).expect("copy touch");
    std::fs::canonicalize(p).expect("canonical")
}

/// Runs `program args` as pid 1 of new namespaces inside `cg` (a test
/// "container") and returns the wait status of `unshare`.
fn run_in_container(cg: &TestCgroup, program: &Path, args: &[&str]) -> std::process::ExitStatus {
    let mut cmd = Command::new("unshare");
    cmd.args(["--fork", "--pid", "--mount", "--uts", "--ipc"])
        .arg(program)
        .args(args)
        .stderr(Stdio::null());
    cg.enter(&mut cmd);
    cmd.status().expect("unshare")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_rule_stops_program_before_its_first_instruction() {
    let t = kernel_test!(kill_rule_stops_program_before_its_first_instruction);
    let (cg, kubepods) = container_cgroup("kill");
    let host = TestCgroup::unique("kill-host");
    let mut rig = rig(&[&cg, &host], vec![cgroup_id(&kubepods)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = marker_program(dir.path(), "evil");
    let good = marker_program(dir.path(), "good");
    rig.engine
        .install_kill_rules(&[KillRuleSpec {
            id: "kill-evil".into(),
            exe: Some(ExeMatch::Exact(evil.display().to_string())),
            argv_prefix: vec![],
            scope: KillScope::AnyContainer,
            dry_run: false,
        }])
        .expect("install rules");

    let marker = dir.path().join("evil-ran");
    let status = run_in_container(&cg, &evil, &[marker.to_str().expect("utf8")]);
    assert!(
        !status.success(),
        "unshare reports the killed child: {status:?}"
    );
    let exit = rig.exit_of("evil").await;
    assert_eq!(
        exit.exit_code & 0x7f,
        libc::SIGKILL as u32,
        "killed by SIGKILL: {:#x}",
        exit.exit_code
    );
    assert!(
        !marker.exists(),
        "the program never ran: its marker file does not exist"
    );
    let rec = rig.record("the kernel kill").await;
    assert_eq!(rec.action, ActionKind::KillProcess);
    assert_eq!(rec.outcome, Outcome::Succeeded);
    assert_eq!(
        rec.triggered_by,
        Trigger::Kernel {
            rule: "kill-evil".into()
        }
    );
    assert_eq!(
        rec.target.process.as_ref().map(|p| p.pid),
        Some(exit.header.pid)
    );
    assert_eq!(rec.reason, format!("executable {} (evil)", evil.display()));
    assert!(
        rec.message.starts_with(&format!(
            "killed pid {} at exec of {}",
            exit.header.pid,
            evil.display()
        )),
        "{}",
        rec.message
    );

    // Another program in the same container runs.
    let good_marker = dir.path().join("good-ran");
    assert!(run_in_container(&cg, &good, &[good_marker.to_str().expect("utf8")]).success());
    assert!(good_marker.exists());
    // The same program outside any container is out of the rule's scope.
    let mut cmd = Command::new(&evil);
    cmd.arg(&marker);
    host.enter(&mut cmd);
    assert!(cmd.status().expect("evil on the host").success());
    assert!(
        marker.exists(),
        "host processes are not in scope of an any-container rule"
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_rule_by_directory_and_argv_prefix_and_dry_run() {
    let t = kernel_test!(kill_rule_by_directory_and_argv_prefix_and_dry_run);
    let (cg, kubepods) = container_cgroup("argv");
    let mut rig = rig(&[&cg], vec![cgroup_id(&kubepods)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = marker_program(dir.path(), "tool");
    let watched = marker_program(dir.path(), "watched");
    let dir_path = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .display()
        .to_string();
    rig.engine
        .install_kill_rules(&[
            KillRuleSpec {
                id: "tool-bad-flag".into(),
                exe: Some(ExeMatch::Under(dir_path.clone())),
                argv_prefix: vec![prog.display().to_string(), "-a".into()],
                scope: KillScope::Cgroups(vec![cg.id()]),
                dry_run: false,
            },
            KillRuleSpec {
                id: "watch-only".into(),
                exe: Some(ExeMatch::Exact(watched.display().to_string())),
                argv_prefix: vec![],
                scope: KillScope::AnyContainer,
                dry_run: true,
            },
        ])
        .expect("install rules");

    // `touch -a FILE` creates FILE like plain `touch FILE` would.
    let killed_marker = dir.path().join("bad");
    let status = run_in_container(&cg, &prog, &["-a", killed_marker.to_str().expect("utf8")]);
    assert!(!status.success());
    let exit = rig.exit_of("tool").await;
    assert_eq!(exit.exit_code & 0x7f, libc::SIGKILL as u32);
    assert!(!killed_marker.exists());
    let rec = rig.record("argv kill").await;
    assert_eq!(
        (rec.outcome, rec.triggered_by.clone()),
        (
            Outcome::Succeeded,
            Trigger::Kernel {
                rule: "tool-bad-flag".into()
            }
        )
    );

    // Same program, other arguments: runs.
    let ok_marker = dir.path().join("ok");
    assert!(run_in_container(&cg, &prog, &[ok_marker.to_str().expect("utf8")]).success());
    assert!(ok_marker.exists());

    // The dry-run rule reports and lets the program run.
    let watched_marker = dir.path().join("watched-ran");
    assert!(run_in_container(&cg, &watched, &[watched_marker.to_str().expect("utf8")]).success());
    assert!(watched_marker.exists());
    let rec = rig.record("dry-run kill").await;
    assert_eq!(rec.outcome, Outcome::DryRun);
    assert!(rec.dry_run);
    assert_eq!(
        rec.triggered_by,
        Trigger::Kernel {
            rule: "watch-only".into()
        }
    );
    let exit = rig.exit_of("watched").await;
    assert_eq!(exit.exit_code, 0);
    t.done();
}

/// Spawns `/bin/true` in `cg` after a connect (or UDP send) from inside
/// the cgroup, before exec; returns the errno of that call (None = it
/// worked).
fn net_from(cg: &TestCgroup, dest: SocketAddr, udp: bool) -> Option<i32> {
    let mut cmd = Command::new("/bin/true");
    cg.enter(&mut cmd);
    let (family, sa, len) = sockaddr(dest);
    // SAFETY: socket/connect/sendto/close only, on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let kind = if udp {
                libc::SOCK_DGRAM
            } else {
                libc::SOCK_STREAM
            };
            let fd = libc::socket(family, kind, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let rc = if udp {
                libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, sa.as_ptr().cast(), len) as i32
            } else {
                libc::connect(fd, sa.as_ptr().cast(), len)
            };
            let err = io::Error::last_os_error();
            libc::close(fd);
            if rc < 0 { Err(err) } else { Ok(()) }
        });
    }
    match cmd.status() {
        Ok(s) => {
            assert!(s.success());
            None
        }
        Err(e) => Some(e.raw_os_error().expect("errno from the child")),
    }
}

/// A raw `sockaddr_in`/`sockaddr_in6` as bytes.
fn sockaddr(a: SocketAddr) -> (i32, [u8; 28], u32) {
    let mut buf = [0u8; 28];
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: copying a POD struct's bytes.
            let b = unsafe {
                std::slice::from_raw_parts(
                    (&sin as *const libc::sockaddr_in).cast::<u8>(),
                    size_of::<libc::sockaddr_in>(),
                )
            };
            buf[..b.len()].copy_from_slice(b);
            (libc::AF_INET, buf, b.len() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: copying a POD struct's bytes.
            let b = unsafe {
                std::slice::from_raw_parts(
                    (&sin6 as *const libc::sockaddr_in6).cast::<u8>(),
                    size_of::<libc::sockaddr_in6>(),
                )
            };
            buf[..b.len()].copy_from_slice(b);
            (libc::AF_INET6, buf, b.len() as u32)
        }
    }
}

fn egress_request(cg: &TestCgroup, scope: EgressScope) -> ActionRequest {
    let mut req = ActionRequest::new(
        ActionKind::BlockEgress,
        Target {
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            cgroup: Some(cg.path.clone()),
            ..Default::default()
        },
        Trigger::Client {
            identity: "CN=responder".into(),
        },
    );
    req.egress = scope;
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_egress_denies_the_contained_cgroup_only_until_released() {
    let t = kernel_test!(block_egress_denies_the_contained_cgroup_only_until_released);
    let contained = TestCgroup::unique("egress-in");
    let other = TestCgroup::unique("egress-out");
    let rig = rig(&[], vec![]).await;
    let l4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen v4");
    let l6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("listen v6");
    let (a4, a6) = (
        l4.local_addr().expect("addr"),
        l6.local_addr().expect("addr"),
    );
    let udp_dest: SocketAddr = (Ipv4Addr::LOCALHOST, 9).into();

    // Before: everything works.
    assert_eq!(net_from(&contained, a4, false), None);

    let rec = rig
        .engine
        .execute(egress_request(&contained, EgressScope::All))
        .await;
    assert_eq!(rec.outcome, Outcome::Succeeded, "{}", rec.message);
    assert_eq!(
        net_from(&contained, a4, false),
        Some(libc::EPERM),
        "connect4 from the contained cgroup"
    );
    assert_eq!(
        net_from(&contained, a6, false),
        Some(libc::EPERM),
        "connect6 from the contained cgroup"
    );
    assert_eq!(
        net_from(&contained, udp_dest, true),
        Some(libc::EPERM),
        "sendmsg4 from the contained cgroup"
    );
    assert_eq!(
        net_from(&other, a4, false),
        None,
        "the same connect from another cgroup"
    );
    assert_eq!(net_from(&other, a6, false), None);
    assert_eq!(net_from(&other, udp_dest, true), None);

    let released = rig
        .engine
        .release(
            Target {
                cgroup: Some(contained.path.clone()),
                ..Default::default()
            },
            Some(ActionKind::BlockEgress),
            Trigger::Client {
                identity: "CN=responder".into(),
            },
            "done".into(),
            false,
        )
        .await;
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].outcome, released[0].release),
        (Outcome::Succeeded, true)
    );
    assert_eq!(
        net_from(&contained, a4, false),
        None,
        "released: connect works again"
    );
    assert_eq!(net_from(&contained, a6, false), None);
    assert_eq!(net_from(&contained, udp_dest, true), None);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_egress_dns_only_and_listed_destinations() {
    let t = kernel_test!(block_egress_dns_only_and_listed_destinations);
    let cg = TestCgroup::unique("egress-dns");
    let rig = rig(&[], vec![]).await;
    let l4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let a4 = l4.local_addr().expect("addr");
    let dns: SocketAddr = (Ipv4Addr::LOCALHOST, 53).into();
    let other_udp: SocketAddr = (Ipv4Addr::LOCALHOST, 5353).into();

    let rec = rig
        .engine
        .execute(egress_request(
            &cg,
            EgressScope::AllExceptDns { resolvers: vec![] },
        ))
        .await;
    assert_eq!(rec.outcome, Outcome::Succeeded, "{}", rec.message);
    assert_eq!(net_from(&cg, dns, true), None, "DNS is allowed");
    assert_eq!(net_from(&cg, other_udp, true), Some(libc::EPERM));
    assert_eq!(net_from(&cg, a4, false), Some(libc::EPERM));

    // DNS only to a listed resolver (127.0.0.2 is not it).
    let rec = rig
        .engine
        .execute(egress_request(
            &cg,
            EgressScope::AllExceptDns {
                resolvers: vec![Ipv4Addr::new(127, 0, 0, 1).into()],
            },
        ))
        .await;
    assert_eq!(rec.outcome, Outcome::Succeeded);
    assert_eq!(net_from(&cg, dns, true), None);
    assert_eq!(
        net_from(&cg, (Ipv4Addr::new(127, 0, 0, 2), 53).into(), true),
        Some(libc::EPERM)
    );

    // Only listed destinations: this port on loopback, and 127.0.0.2/32 any port.
    let rec = rig
        .engine
        .execute(egress_request(
            &cg,
            EgressScope::Destinations(vec![
                Destination {
                    addr: Ipv4Addr::LOCALHOST.into(),
                    prefix_len: 32,
                    port: a4.port(),
                },
                Destination {
                    addr: Ipv4Addr::new(127, 0, 0, 2).into(),
                    prefix_len: 32,
                    port: 0,
                },
            ]),
        ))
        .await;
    assert_eq!(rec.outcome, Outcome::Succeeded);
    assert_eq!(
        net_from(&cg, a4, false),
        Some(libc::EPERM),
        "listed address and port"
    );
    assert_eq!(
        net_from(&cg, other_udp, true),
        None,
        "same address, other port"
    );
    assert_eq!(
        net_from(&cg, (Ipv4Addr::new(127, 0, 0, 2), 7).into(), true),
        Some(libc::EPERM),
        "listed address, any port"
    );
    let released = rig
        .engine
        .release(
            Target {
                cgroup: Some(cg.path.clone()),
                ..Default::default()
            },
            None,
            Trigger::Client {
                identity: "CN=responder".into(),
            },
            String::new(),
            false,
        )
        .await;
    assert_eq!(
        released
            .iter()
            .map(|r| (r.action, r.outcome))
            .collect::<Vec<_>>(),
        vec![(ActionKind::BlockEgress, Outcome::Succeeded)]
    );
    assert_eq!(net_from(&cg, a4, false), None);
    assert_eq!(
        net_from(&cg, (Ipv4Addr::new(127, 0, 0, 2), 7).into(), true),
        None
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_container_ends_every_process_of_the_cgroup() {
    let t = kernel_test!(kill_container_ends_every_process_of_the_cgroup);
    let (cg, _kubepods) = container_cgroup("killctr");
    let rig = rig(&[], vec![]).await;
    // A container whose init starts two background processes.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "/bin/sh",
        "-c",
        "sleep 100 & sleep 100 & wait",
    ]);
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().expect("spawn container");
    // unshare, sh and two sleeps.
    let deadline = Instant::now() + WAIT;
    while picket::contain::procs::cgroup_pids(&cg.path)
        .expect("procs")
        .len()
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "container processes did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut req = ActionRequest::new(
        ActionKind::KillContainer,
        Target {
            container_id: Some("9a8b7c6d5e4f".into()),
            cgroup: Some(cg.path.clone()),
            ..Default::default()
        },
        Trigger::Rule {
            rule: "crypto-miner".into(),
            alert_seq: 12,
        },
    );
    req.reason = "miner detected".into();
    let rec = rig.engine.execute(req).await;
    assert_eq!(rec.outcome, Outcome::Succeeded, "{}", rec.message);
    assert_eq!(
        rec.message,
        format!(
            "killed 4 processes of cgroup {} (CgroupKill)",
            cg.path.display()
        )
    );
    assert!(
        picket::contain::procs::cgroup_pids(&cg.path)
            .expect("procs")
            .is_empty()
    );
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    t.done();
}
