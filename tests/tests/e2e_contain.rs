//! Real-kernel end-to-end tests of containment through the shipped binary:
//! `picket run` with a rule whose `actions:` include `kill-process`, a
//! configuration that enables containment, and the real actions of a test
//! "container". Root only; they fail (never skip) elsewhere.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use picket_tests::{cgroup::TestCgroup, kernel_test, picket_run::Picket, pins::PinDir};
use serde_json::Value;

fn audit_of<'a>(v: &'a Value, rule: &str) -> Option<&'a Value> {
    (v["rule"]["id"] == "containment-action" && v["event"]["containment"]["rule_id"] == rule)
        .then(|| &v["event"]["containment"])
}

/// A kubelet-style container cgroup below a test-private `kubepods`.
fn container_cgroup(tag: &str) -> TestCgroup {
    let pod_uid = "5d1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f10";
    let ctr = "1a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    TestCgroup::create(&format!(
        "picket-e2e-{tag}-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ))
}

/// A copy of `touch` at `dir/name`: if it ever runs, it creates its argument.
fn marker_program(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy("/usr/bin/touch", &p).expect("copy touch");
    std::fs::canonicalize(p).expect("canonical")
}

/// Runs `program args` as pid 1 of new namespaces inside `cg`.
fn in_container(cg: &TestCgroup, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "--kill-child",
    ])
    .arg(program)
    .args(args)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cg.enter(&mut cmd);
    cmd
}

/// unshare (util-linux) exits with status 1 when its child died of
/// SIGKILL; the kill itself is proven by the audit record and the marker.
fn killed(status: std::process::ExitStatus) -> bool {
    status.code() == Some(1)
}

/// Containment on, no rate limits, and this test's own pin and state
/// directories (never the host's default ones).
fn contain_config(pins: &PinDir, dir: &Path) -> String {
    format!(
        "containment:\n  enabled: true\n  rate_limits: {{per_rule: null, per_namespace: null, global: null}}\n  pin_dir: {}\n  state_dir: {}\n",
        pins.0.display(),
        dir.join("state").display()
    )
}

fn rule(id: &str, condition: &str) -> String {
    format!(
        "  - id: {id}\n    name: {id}\n    description: e2e\n    severity: critical\n    events: [exec]\n    condition: '{condition}'\n    output: 'ran {{process.executable.path}}'\n    tags: [T1059]\n    actions: [alert, kill-process]\n"
    )
}

#[test]
fn kernel_kill_rule_from_the_rule_file_stops_the_program_before_it_runs() {
    let t = kernel_test!(kernel_kill_rule_from_the_rule_file_stops_the_program_before_it_runs);
    let cg = container_cgroup("kkill");
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = marker_program(dir.path(), "evil");
    let good = marker_program(dir.path(), "good");
    let rules = format!(
        "rules:\n{}",
        rule(
            "e2e-kernel-kill",
            &format!(
                "container.id exists and process.executable.path == \"{}\"",
                evil.display()
            )
        )
    );
    let pins = PinDir::new("kernel-kill");
    let mut picket = Picket::start(
        dir.path(),
        &rules,
        &contain_config(&pins, dir.path()),
        &[&cg],
    );

    let evil_marker = dir.path().join("evil-ran");
    let status = in_container(&cg, &evil, &[evil_marker.to_str().expect("utf-8")])
        .status()
        .expect("run evil");
    assert!(
        !evil_marker.exists(),
        "the program ran although the kernel should have killed it at exec"
    );
    assert!(killed(status), "{status:?}");

    let audit = picket.wait_for("kernel kill audit record", |v| {
        audit_of(v, "e2e-kernel-kill").is_some()
    });
    let c = &audit["event"]["containment"];
    assert_eq!(c["action"], "kill-process");
    assert_eq!(c["outcome"], "succeeded");
    assert_eq!(c["trigger"], "kernel");
    assert_eq!(audit["severity"], "medium");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("at exec of {}", evil.display()))),
        "{c}"
    );

    // Another program in the same container is left alone.
    let good_marker = dir.path().join("good-ran");
    let status = in_container(&cg, &good, &[good_marker.to_str().expect("utf-8")])
        .status()
        .expect("run good");
    assert!(status.success(), "{status:?}");
    assert!(good_marker.exists());
    drop(picket);
    t.done();
}

#[test]
fn user_space_kill_rule_kills_the_matching_process_and_refuses_host_processes() {
    let t =
        kernel_test!(user_space_kill_rule_kills_the_matching_process_and_refuses_host_processes);
    let cg = container_cgroup("ukill");
    let host = TestCgroup::unique("e2e-ukill-host");
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = format!("picket-e2e-{}", std::process::id());
    // `contains` on the command line: not decidable in the kernel, so the
    // kill comes from user space (pidfd) after the alert.
    let rules = format!(
        "rules:\n{}",
        rule(
            "e2e-user-kill",
            &format!(
                "process.executable.path == \"/usr/bin/dash\" and process.command_line contains \"{tag}\""
            )
        )
    );
    let pins = PinDir::new("user-kill");
    let mut picket = Picket::start(
        dir.path(),
        &rules,
        &contain_config(&pins, dir.path()),
        &[&cg, &host],
    );

    let marker = dir.path().join("survived");
    let script = format!("sleep 5; touch {}", marker.display());
    let mut victim = in_container(&cg, Path::new("/bin/sh"), &["-c", &script, &tag])
        .spawn()
        .expect("spawn victim");
    let audit = picket.wait_for("user-space kill audit record", |v| {
        audit_of(v, "e2e-user-kill").is_some_and(|c| c["outcome"] == "succeeded")
    });
    let c = &audit["event"]["containment"];
    assert_eq!(c["action"], "kill-process");
    assert_eq!(c["trigger"], "rule");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("(SIGKILL through a pidfd)")),
        "{c}"
    );
    // The audit alert keeps the detection's attribution.
    assert_eq!(
        audit["event"]["process"]["executable"]["path"],
        "/usr/bin/dash"
    );
    assert_eq!(
        audit["event"]["container"]["id"],
        "1a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
    );
    let alert = picket.wait_for("the detection", |v| v["rule"]["id"] == "e2e-user-kill");
    assert_eq!(alert["severity"], "critical");
    let pid = alert["event"]["process"]["pid"].as_u64().expect("pid");
    assert_eq!(audit["event"]["process"]["pid"].as_u64(), Some(pid));
    let status = victim.wait().expect("wait victim");
    assert!(killed(status), "{status:?}");
    // The shell was pid 1 of its pid namespace: its death killed the rest
    // of the namespace (the `sleep`), so nothing is left that could still
    // create the marker; no waiting needed.
    assert!(!marker.exists(), "the shell ran on after its kill");

    // The same process on the host is refused: host processes are
    // protected unless allow_host.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "exit 0", &tag]);
    host.enter(&mut cmd);
    let status = cmd.status().expect("host sh");
    assert!(status.success());
    let audit = picket.wait_for("refusal", |v| {
        audit_of(v, "e2e-user-kill").is_some_and(|c| c["outcome"] == "refused")
    });
    assert_eq!(audit["event"]["containment"]["refusal"], "host");
    assert!(audit["event"].get("container").is_none());
    assert_eq!(status.signal(), None);
    drop(picket);
    t.done();
}

/// The flags the agent `pid` wrote for cgroup `id` in its own
/// `ENFORCE_CGROUPS` map (found through the map fds in /proc/PID/fdinfo:
/// other agents on the host have maps of the same name).
fn kernel_cgroup_flags(pid: u32, id: u64) -> Option<u32> {
    use agent_common::enforce::CgroupEntry;
    use aya::maps::{HashMap, Map, MapData};
    let fdinfo = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    for e in fdinfo.filter_map(Result::ok) {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Some(map_id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(data) = MapData::from_id(map_id) else {
            continue;
        };
        let named = data
            .info()
            .is_ok_and(|i| i.name_as_str() == Some("ENFORCE_CGROUPS"));
        if !named {
            continue;
        }
        let map: HashMap<MapData, u64, CgroupEntry> = HashMap::try_from(Map::HashMap(data)).ok()?;
        return map.get(&id, 0).ok().map(|e| e.flags);
    }
    None
}

/// Polls until the agent told the kernel that cgroup `id` has `flag`
/// (10 s deadline): the walk runs every 500 ms and on pod-cache changes.
fn wait_kernel_flag(picket: &Picket, id: u64, flag: u32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let flags = kernel_cgroup_flags(picket.pid(), id);
        if flags.is_some_and(|f| f & flag == flag) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the kernel's flags for cgroup {id} are {flags:?}, want {flag:#x}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A kubelet-style container cgroup of pod `uid` below a test-private
/// `kubepods`.
fn pod_container_cgroup(tag: &str, uid: &str, ctr: &str) -> TestCgroup {
    TestCgroup::create(&format!(
        "picket-e2e-{tag}-{}/kubepods/besteffort/pod{uid}/cri-containerd-{ctr}.scope",
        std::process::id()
    ))
}

/// `picket run` arguments that point the agent at the test API server.
fn kube_args(kubeconfig: &Path) -> Vec<String> {
    vec![
        "--kubernetes".into(),
        "on".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--k8s-metadata-wait".into(),
        "5s".into(),
    ]
}

/// Issue 16 items 1 and 5: an in-kernel kill rule spares a pod of a
/// protected namespace that appeared after the rule was installed (the
/// kernel learns its cgroup from the pod watch) and says so in a refused
/// record; in an unprotected pod the kernel kills, and the record names the
/// process, container and pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_kill_rules_spare_protected_pods_and_name_what_they_killed() {
    let t = kernel_test!(kernel_kill_rules_spare_protected_pods_and_name_what_they_killed);
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let server = TestApiServer::start().await.expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let (sys_uid, web_uid) = (
        "7a1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f11",
        "7b1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f12",
    );
    let (sys_ctr, web_ctr) = ("5a".repeat(32), "5b".repeat(32));
    let sys = pod_container_cgroup("prot-sys", sys_uid, &sys_ctr);
    let web = pod_container_cgroup("prot-web", web_uid, &web_ctr);
    let evil = marker_program(dir.path(), "evil");
    let rules = format!(
        "rules:\n{}",
        rule(
            "e2e-protected-kill",
            &format!(
                "container.id exists and process.executable.path == \"{}\"",
                evil.display()
            )
        )
    );
    let pins = PinDir::new("protected");
    let mut picket = Picket::start_with(
        dir.path(),
        &rules,
        &contain_config(&pins, dir.path()),
        &[&sys, &web],
        &kube_args(&kubeconfig),
    );
    // Both pods appear after the agent (and its kill rules) started.
    let mut p = pod("kube-system", "coredns-1", sys_uid, "e2e-node");
    add_container(
        &mut p,
        "coredns",
        "coredns:1",
        Some(&format!("containerd://{sys_ctr}")),
    );
    server.apply_pod(&p);
    let mut p = pod("shop", "web-1", web_uid, "e2e-node");
    add_container(
        &mut p,
        "web",
        "web:1",
        Some(&format!("containerd://{web_ctr}")),
    );
    server.apply_pod(&p);
    // The watch delivers the pods and the next walk marks the protected
    // pod's cgroup (pod-cache changes trigger a walk at once).
    let sys_pod = sys.path.parent().expect("pod cgroup");
    let sys_pod_id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(sys_pod).expect("pod cgroup").ino()
    };
    wait_kernel_flag(
        &picket,
        sys_pod_id,
        agent_common::enforce::cgroup_flags::PROTECTED,
        "protected pod",
    );
    let web_pod_id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(web.path.parent().expect("pod cgroup"))
            .expect("pod cgroup")
            .ino()
    };
    wait_kernel_flag(
        &picket,
        web_pod_id,
        agent_common::enforce::cgroup_flags::CLEARED,
        "unprotected pod",
    );

    let marker = dir.path().join("sys-ran");
    let status = in_container(&sys, &evil, &[marker.to_str().expect("utf-8")])
        .status()
        .expect("run in kube-system pod");
    assert!(status.success(), "killed in a protected pod: {status:?}");
    assert!(
        marker.exists(),
        "the program did not run in the protected pod"
    );
    let audit = picket.wait_for("kernel refusal record", |v| {
        audit_of(v, "e2e-protected-kill").is_some_and(|c| c["outcome"] == "refused")
    });
    let c = &audit["event"]["containment"];
    assert_eq!(c["trigger"], "kernel");
    assert_eq!(c["refusal"], "protected_namespace");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not killed in the kernel")
                && m.ends_with("namespace kube-system is protected")),
        "{c}"
    );
    assert_eq!(audit["event"]["k8s"]["pod"]["name"], "coredns-1");
    assert_eq!(audit["event"]["k8s"]["namespace"]["name"], "kube-system");
    assert_eq!(audit["event"]["container"]["id"], sys_ctr.as_str());

    let marker = dir.path().join("web-ran");
    let status = in_container(&web, &evil, &[marker.to_str().expect("utf-8")])
        .status()
        .expect("run in shop pod");
    assert!(killed(status), "{status:?}");
    assert!(!marker.exists(), "the program ran in an unprotected pod");
    let audit = picket.wait_for("kernel kill record", |v| {
        audit_of(v, "e2e-protected-kill").is_some_and(|c| c["outcome"] == "succeeded")
    });
    let alert = picket.wait_for("the detection", |v| {
        v["rule"]["id"] == "e2e-protected-kill" && v["event"]["k8s"]["pod"]["name"] == "web-1"
    });
    // The record carries the context of the alert of the same exec.
    assert_eq!(audit["event"]["process"], alert["event"]["process"]);
    assert_eq!(
        audit["event"]["process"]["executable"]["path"],
        evil.display().to_string()
    );
    assert_eq!(audit["event"]["container"]["id"], web_ctr.as_str());
    assert_eq!(audit["event"]["k8s"]["pod"]["name"], "web-1");
    assert_eq!(audit["event"]["k8s"]["namespace"]["name"], "shop");
    let pid = alert["event"]["process"]["pid"].as_u64().expect("pid");
    assert_eq!(
        audit["event"]["containment"]["target"],
        format!("pod shop/web-1 container {} pid {pid}", &web_ctr[..12])
    );
    drop(picket);
    drop(server);
    t.done();
}

/// `connect()` to `dest` (IPv4 TCP) from a child in `cg`: the errno, or
/// `None` when it connected.
fn connect_from(cg: &TestCgroup, dest: std::net::SocketAddrV4) -> Option<i32> {
    connect_from_dir(&cg.path, dest)
}

/// Polls [`connect_from`] until it gives `want` (5 s deadline): a link
/// whose last reference was a removed pin detaches in deferred kernel work.
fn wait_connect(cg: &TestCgroup, dest: std::net::SocketAddrV4, want: Option<i32>, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = connect_from(cg, dest);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: connect gave {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`connect_from`] a cgroup directory.
fn connect_from_dir(cg: &Path, dest: std::net::SocketAddrV4) -> Option<i32> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/bin/true");
    picket_tests::cgroup::enter_dir(&mut cmd, cg);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dest.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dest.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket/connect/close only, on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::connect(
                fd,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            let err = std::io::Error::last_os_error();
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

/// Issue 16 item 2: a block placed by a rule (on one container's cgroup)
/// is found and lifted by `picket release --pod ns/name`, which says what
/// it released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_lifts_a_rule_placed_block_and_says_what_it_released() {
    let t = kernel_test!(release_lifts_a_rule_placed_block_and_says_what_it_released);
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let server = TestApiServer::start().await.expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let uid = "7c1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f13";
    let ctr = "5c".repeat(32);
    let cg = pod_container_cgroup("release", uid, &ctr);
    let trigger = marker_program(dir.path(), "exfil");
    let rules = format!(
        "rules:\n  - id: e2e-block\n    name: e2e-block\n    description: e2e\n    severity: critical\n    events: [exec]\n    condition: 'container.id exists and process.executable.path == \"{}\"'\n    output: 'ran {{process.executable.path}}'\n    tags: [T1041]\n    actions: [alert, block-egress]\n",
        trigger.display()
    );
    let pins = PinDir::new("release");
    let sock = dir.path().join("picket.sock");
    let config = format!(
        "{}delivery:\n  spool: {{dir: {}}}\n  grpc: {{listen: \"unix:{}\", unix_mode: 384}}\n",
        contain_config(&pins, dir.path()),
        dir.path().join("spool").display(),
        sock.display()
    );
    let mut p = pod("shop", "web-2", uid, "e2e-node");
    add_container(&mut p, "web", "web:1", Some(&format!("containerd://{ctr}")));
    server.apply_pod(&p);
    let mut picket =
        Picket::start_with(dir.path(), &rules, &config, &[&cg], &kube_args(&kubeconfig));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let std::net::SocketAddr::V4(dest) = listener.local_addr().expect("addr") else {
        panic!("v4 listener");
    };
    assert_eq!(connect_from(&cg, dest), None, "before the block");

    let marker = dir.path().join("exfil-ran");
    let status = in_container(&cg, &trigger, &[marker.to_str().expect("utf-8")])
        .status()
        .expect("run trigger");
    assert!(status.success());
    let audit = picket.wait_for("block-egress record", |v| {
        audit_of(v, "e2e-block").is_some_and(|c| c["action"] == "block-egress")
    });
    assert_eq!(
        audit["event"]["containment"]["outcome"], "succeeded",
        "{audit}"
    );
    assert_eq!(
        connect_from(&cg, dest),
        Some(libc::EPERM),
        "blocked by the rule"
    );

    let out = Command::new(picket_tests::picket_run::picket_bin())
        .args(["release", "--server"])
        .arg(format!("unix:{}", sock.display()))
        .args([
            "--pod",
            "shop/web-2",
            "--action",
            "block-egress",
            "--reason",
            "INC-16",
        ])
        .output()
        .expect("picket release");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("nothing to release"), "{stdout}");
    assert!(
        stdout.contains(&format!("egress block lifted: {}", cg.path.display())),
        "{stdout}"
    );
    assert_eq!(connect_from(&cg, dest), None, "released");
    // Nothing is left: a second release says so.
    let out = Command::new(picket_tests::picket_run::picket_bin())
        .args(["release", "--server"])
        .arg(format!("unix:{}", sock.display()))
        .args(["--pod", "shop/web-2"])
        .output()
        .expect("picket release");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nothing to release on pod shop/web-2"),
        "{stdout}"
    );
    drop(picket);
    drop(listener);
    drop(server);
    t.done();
}

/// Issue 16 item 3: an in-kernel kill rule acts on a Docker-style
/// container outside `kubepods` and on a pod whose `kubepods` cgroup was
/// created after the agent started.
#[test]
fn kernel_kill_rules_reach_docker_scopes_and_late_kubepods() {
    let t = kernel_test!(kernel_kill_rules_reach_docker_scopes_and_late_kubepods);
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = marker_program(dir.path(), "evil");
    let rules = format!(
        "rules:\n{}",
        rule(
            "e2e-any-container",
            &format!(
                "container.id exists and process.executable.path == \"{}\"",
                evil.display()
            )
        )
    );
    // Scope the agent's telemetry to a parent created now; the containers
    // below it appear after the agent started.
    let parent = TestCgroup::create(&format!("picket-e2e-late-{}", std::process::id()));
    let pins = PinDir::new("late");
    let mut picket = Picket::start(
        dir.path(),
        &rules,
        &contain_config(&pins, dir.path()),
        &[&parent],
    );
    let docker = TestCgroup::create(&format!(
        "picket-e2e-late-{}/system.slice/docker-{}.scope",
        std::process::id(),
        "5d".repeat(32)
    ));
    let late = TestCgroup::create(&format!(
        "picket-e2e-late-{}/kubepods/besteffort/pod7d1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f14/cri-containerd-{}.scope",
        std::process::id(),
        "5e".repeat(32)
    ));
    // The next walk (every 500 ms) tells the kernel about both.
    for cg in [&docker, &late] {
        wait_kernel_flag(
            &picket,
            cg.id(),
            agent_common::enforce::cgroup_flags::CONTAINER_ROOT,
            "new container",
        );
    }
    for (cg, id) in [(&docker, "5d".repeat(32)), (&late, "5e".repeat(32))] {
        let marker = dir.path().join(format!("ran-{}", &id[..2]));
        let status = in_container(cg, &evil, &[marker.to_str().expect("utf-8")])
            .status()
            .expect("run evil");
        assert!(killed(status), "{}: {status:?}", cg.path.display());
        assert!(!marker.exists(), "{}: the program ran", cg.path.display());
        let audit = picket.wait_for("kernel kill record", |v| {
            audit_of(v, "e2e-any-container").is_some_and(|c| {
                c["outcome"] == "succeeded" && v["event"]["container"]["id"] == id.as_str()
            })
        });
        assert_eq!(audit["event"]["containment"]["trigger"], "kernel");
    }
    drop(picket);
    drop(late);
    drop(docker);
    drop(parent);
    t.done();
}

/// Runs `picket <args> --server unix:<sock>`; stdout, asserting exit 0.
fn picket_cli(sock: &Path, args: &[&str]) -> String {
    let out = Command::new(picket_tests::picket_run::picket_bin())
        .args(args)
        .arg("--server")
        .arg(format!("unix:{}", sock.display()))
        .output()
        .expect("picket cli");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "picket {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Connects from `cg` in a loop until stopped: (attempts, connects that
/// got through).
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u32, u32)>,
}

impl Prober {
    fn start(cg: &TestCgroup, dest: std::net::SocketAddrV4) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, path) = (stop.clone(), cg.path.clone());
        let handle = std::thread::spawn(move || {
            let (mut tries, mut through) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                tries += 1;
                if connect_from_dir(&path, dest) != Some(libc::EPERM) {
                    through += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (tries, through)
        });
        Self { stop, handle }
    }

    fn finish(self) -> (u32, u32) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().expect("prober")
    }
}

/// Issue 16 item 4: a block survives the agent's exit (clean with SIGTERM,
/// or a crash with SIGKILL) and its restart with no window: a connect
/// from the contained cgroup is refused before, while no agent runs
/// (probed in a loop) and after; the new agent lists the block as
/// restored, hands it over to its own programs, and `picket release`
/// lifts it.
fn block_survives_restart(tag: &str, crash: bool) {
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let server = rt
        .block_on(TestApiServer::start())
        .expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let uid = if crash {
        "7e1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f15"
    } else {
        "7f1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f16"
    };
    let ctr = if crash { "5f" } else { "6a" }.repeat(32);
    let cg = pod_container_cgroup(tag, uid, &ctr);
    let pins = PinDir::new(tag);
    let sock = dir.path().join("picket.sock");
    let config = format!(
        "containment:\n  enabled: true\n  rate_limits: {{per_rule: null, per_namespace: null, global: null}}\n  pin_dir: {}\n  state_dir: {}\ndelivery:\n  spool: {{dir: {}}}\n  grpc: {{listen: \"unix:{}\", unix_mode: 384}}\n",
        pins.0.display(),
        dir.path().join("state").display(),
        dir.path().join("spool").display(),
        sock.display()
    );
    let mut p = pod("shop", "web-3", uid, "e2e-node");
    add_container(&mut p, "web", "web:1", Some(&format!("containerd://{ctr}")));
    server.apply_pod(&p);
    let rules = "rules: []\n";
    let picket = Picket::start_with(dir.path(), rules, &config, &[&cg], &kube_args(&kubeconfig));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let std::net::SocketAddr::V4(dest) = listener.local_addr().expect("addr") else {
        panic!("v4 listener");
    };
    assert_eq!(connect_from(&cg, dest), None, "before the block");
    let out = picket_cli(
        &sock,
        &[
            "contain",
            "--pod",
            "shop/web-3",
            "--action",
            "block-egress",
            "--reason",
            "INC-4",
        ],
    );
    assert!(out.contains("block-egress succeeded"), "{out}");
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "blocked");
    let first = pins.names();
    assert_eq!(first.len(), 4, "one pin per hook: {first:?}");
    let cg_pod = cg.path.parent().expect("pod cgroup").to_path_buf();
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&cg_pod).expect("pod cgroup").ino()
    };
    for hook in ["connect4", "connect6", "sendmsg4", "sendmsg6"] {
        assert!(
            first
                .iter()
                .any(|n| n.starts_with(&format!("egress-{ino}-{hook}-"))),
            "{hook} pin missing: {first:?}"
        );
    }

    let prober = Prober::start(&cg, dest);
    if crash {
        picket.crash();
    } else {
        let status = picket.stop();
        assert!(status.success(), "clean exit: {status:?}");
    }
    // No agent runs: the pins hold the block.
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "agent down");
    let mut picket =
        Picket::start_with(dir.path(), rules, &config, &[&cg], &kube_args(&kubeconfig));
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "after restart");
    let (tries, through) = prober.finish();
    assert!(tries >= 10, "the prober ran {tries} times only");
    assert_eq!(through, 0, "{through} of {tries} connects got through");

    // Handed over: the same hooks, pinned by the new agent.
    let second = pins.names();
    assert_eq!(second.len(), 4, "{second:?}");
    assert!(
        second.iter().all(|n| !first.contains(n)),
        "old pins left: {first:?} -> {second:?}"
    );
    let audit = picket.wait_for("restored record", |v| {
        v["rule"]["id"] == "containment-action"
            && v["event"]["containment"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("restored after an agent restart"))
    });
    assert_eq!(audit["event"]["containment"]["action"], "block-egress");
    assert_eq!(audit["event"]["containment"]["trigger"], "client");
    assert_eq!(audit["event"]["containment"]["reason"], "INC-4");
    let out = picket_cli(&sock, &["actions"]);
    let line = out
        .lines()
        .find(|l| l.contains("block-egress succeeded (restored): restored after an agent restart"))
        .unwrap_or_else(|| panic!("no restored record: {out}"));
    assert!(
        line.contains(&format!(
            "egress of cgroup {} (id {ino}) blocked",
            cg_pod.display()
        )),
        "{line}"
    );

    let out = picket_cli(
        &sock,
        &["release", "--pod", "shop/web-3", "--reason", "INC-4 done"],
    );
    assert!(
        out.contains(&format!("egress block lifted: {}", cg_pod.display())),
        "{out}"
    );
    assert_eq!(connect_from(&cg, dest), None, "released");
    assert_eq!(
        pins.names(),
        Vec::<String>::new(),
        "pins left after release"
    );

    if !crash {
        // Uninstall: a block left by a stopped agent is lifted by
        // `picket purge-containment` (DaemonSet deletion does not lift it).
        picket_cli(
            &sock,
            &["contain", "--pod", "shop/web-3", "--action", "block-egress"],
        );
        assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "blocked again");
        assert!(picket.stop().success());
        assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "after stop");
        let cfg_file = dir.path().join("picket.yaml");
        let out = Command::new(picket_tests::picket_run::picket_bin())
            .arg("purge-containment")
            .arg("--config")
            .arg(&cfg_file)
            .output()
            .expect("purge");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "purged {}: 4 pinned links removed, 1 recorded blocks forgotten",
                pins.0.display()
            )),
            "{stdout}"
        );
        assert_eq!(connect_from(&cg, dest), None, "purged");
        assert!(!pins.0.exists(), "pin directory left");
    } else {
        drop(picket);
    }
    drop(listener);
    drop(pins);
    drop(cg);
    drop(server);
}

#[test]
fn egress_block_survives_a_clean_restart_and_is_released_after_it() {
    let t = kernel_test!(egress_block_survives_a_clean_restart_and_is_released_after_it);
    block_survives_restart("restart-term", false);
    t.done();
}

#[test]
fn egress_block_survives_an_agent_crash() {
    let t = kernel_test!(egress_block_survives_an_agent_crash);
    block_survives_restart("restart-kill", true);
    t.done();
}

/// Issue 16 item 4, reconciliation: a recorded block whose pins are gone
/// (a reboot clears bpffs) is re-applied at start; pins no record knows
/// (the state file was lost) are removed at start, which lifts their
/// block, and an audit record says so.
#[test]
fn restart_reapplies_recorded_blocks_and_removes_unknown_pins() {
    let t = kernel_test!(restart_reapplies_recorded_blocks_and_removes_unknown_pins);
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let server = rt
        .block_on(TestApiServer::start())
        .expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let uid = "6a1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f17";
    let ctr = "6b".repeat(32);
    let cg = pod_container_cgroup("reconcile", uid, &ctr);
    let pins = PinDir::new("reconcile");
    let sock = dir.path().join("picket.sock");
    let state = dir.path().join("state");
    let config = format!(
        "containment:\n  enabled: true\n  rate_limits: {{per_rule: null, per_namespace: null, global: null}}\n  pin_dir: {}\n  state_dir: {}\ndelivery:\n  spool: {{dir: {}}}\n  grpc: {{listen: \"unix:{}\", unix_mode: 384}}\n",
        pins.0.display(),
        state.display(),
        dir.path().join("spool").display(),
        sock.display()
    );
    let mut p = pod("shop", "web-4", uid, "e2e-node");
    add_container(&mut p, "web", "web:1", Some(&format!("containerd://{ctr}")));
    server.apply_pod(&p);
    let rules = "rules: []\n";
    let start = || Picket::start_with(dir.path(), rules, &config, &[&cg], &kube_args(&kubeconfig));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let std::net::SocketAddr::V4(dest) = listener.local_addr().expect("addr") else {
        panic!("v4 listener");
    };
    let cg_pod = cg.path.parent().expect("pod cgroup").to_path_buf();
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&cg_pod).expect("pod cgroup").ino()
    };

    let picket = start();
    picket_cli(
        &sock,
        &["contain", "--pod", "shop/web-4", "--action", "block-egress"],
    );
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "blocked");
    picket.crash();
    // A reboot: bpffs is empty, the record on disk remains.
    for n in pins.names() {
        std::fs::remove_file(pins.0.join(n)).expect("unpin");
    }
    wait_connect(&cg, dest, None, "no pins, no agent");
    let picket = start();
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "re-applied");
    assert_eq!(pins.names().len(), 4, "{:?}", pins.names());
    let out = picket_cli(&sock, &["actions"]);
    assert!(
        out.lines().any(|l| l.contains("block-egress succeeded (restored)")
            && l.contains(&format!("egress of cgroup {} (id {ino})", cg_pod.display()))
            && l.ends_with("re-applied from the record (its pinned links were gone: a reboot or a cleared bpffs)")),
        "{out}"
    );
    picket.crash();
    // The state file is lost: the pins are unknown to the next agent.
    std::fs::remove_file(state.join("egress-blocks.json")).expect("state file");
    assert_eq!(connect_from(&cg, dest), Some(libc::EPERM), "pins hold");
    let mut picket = start();
    assert_eq!(connect_from(&cg, dest), None, "stale pins removed");
    assert_eq!(pins.names(), Vec::<String>::new());
    let audit = picket.wait_for("stale record", |v| {
        v["event"]["containment"]["message"]
            .as_str()
            .is_some_and(|m| {
                m.starts_with(&format!(
                    "stale egress block on cgroup id {ino} lifted: no record of it"
                ))
            })
    });
    let c = &audit["event"]["containment"];
    assert_eq!(
        (&c["trigger"], &c["release"], &c["outcome"]),
        (&"agent".into(), &true.into(), &"succeeded".into())
    );
    drop(picket);
    drop(listener);
    drop(pins);
    drop(cg);
    drop(server);
    t.done();
}

/// Waits until a process running `exe` is in cgroup `cg` (it has exec'd).
fn wait_exec_in(cg: &TestCgroup, exe: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let procs = std::fs::read_to_string(cg.path.join("cgroup.procs")).unwrap_or_default();
        if procs
            .lines()
            .any(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == exe))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never ran in {}",
            exe.display(),
            cg.path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 16 (follow-up of item 1): a pod whose cgroup exists before the pod
/// watch delivered the pod is fail-closed in the kernel: the kernel does
/// not kill there (it cannot know whether the pod is protected); user space
/// decides once the pod arrives. A new kube-system pod is spared, a new
/// unprotected pod is killed from user space, and the record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pods_are_fail_closed_in_the_kernel_until_the_watch_delivers_them() {
    let t = kernel_test!(new_pods_are_fail_closed_in_the_kernel_until_the_watch_delivers_them);
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let server = TestApiServer::start().await.expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let (sys_uid, web_uid) = (
        "8a1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f18",
        "8b1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f19",
    );
    let (sys_ctr, web_ctr) = ("8a".repeat(32), "8b".repeat(32));
    let sys = pod_container_cgroup("gate-sys", sys_uid, &sys_ctr);
    let web = pod_container_cgroup("gate-web", web_uid, &web_ctr);
    let evil = dir.path().join("evil");
    std::fs::copy("/bin/sh", &evil).expect("copy sh");
    let evil = std::fs::canonicalize(evil).expect("canonical");
    let rules = format!(
        "rules:\n{}",
        rule(
            "e2e-gate-kill",
            &format!(
                "container.id exists and process.executable.path == \"{}\"",
                evil.display()
            )
        )
    );
    let pins = PinDir::new("gate");
    let mut picket = Picket::start_with(
        dir.path(),
        &rules,
        &contain_config(&pins, dir.path()),
        &[&sys, &web],
        &kube_args(&kubeconfig),
    );
    // The kernel knows the containers and the pod roots, not the pods.
    for cg in [&sys, &web] {
        wait_kernel_flag(
            &picket,
            cg.id(),
            agent_common::enforce::cgroup_flags::CONTAINER_ROOT,
            "container",
        );
        let kubepods = cg.path.ancestors().nth(3).expect("kubepods");
        assert!(kubepods.ends_with("kubepods"), "{}", kubepods.display());
        let id = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(kubepods).expect("kubepods").ino()
        };
        wait_kernel_flag(
            &picket,
            id,
            agent_common::enforce::cgroup_flags::POD_ROOT,
            "kubepods",
        );
    }
    let cases = [
        (&sys, "kube-system", "coredns-2", sys_uid, &sys_ctr, false),
        (&web, "shop", "web-5", web_uid, &web_ctr, true),
    ];
    for (cg, ns, name, uid, ctr, should_die) in cases {
        let marker = dir.path().join(format!("{name}-ran"));
        let script = format!("sleep 2; touch {}", marker.display());
        let mut child = in_container(cg, &evil, &["-c", &script])
            .spawn()
            .expect("spawn");
        // The program runs before its pod is known...
        wait_exec_in(cg, &evil);
        // ...then the watch delivers the pod.
        let mut p = pod(ns, name, uid, "e2e-node");
        add_container(&mut p, "app", "app:1", Some(&format!("containerd://{ctr}")));
        server.apply_pod(&p);
        let status = child.wait().expect("wait");
        let audit = picket.wait_for("the kill decision", |v| {
            audit_of(v, "e2e-gate-kill").is_some_and(|c| {
                c["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("pod {ns}/{name} ")))
            })
        });
        let c = &audit["event"]["containment"];
        assert_eq!(c["trigger"], "kernel", "{c}");
        if should_die {
            assert!(killed(status), "{name}: {status:?}");
            assert!(!marker.exists(), "{name}: the program ran on");
            assert_eq!(c["outcome"], "succeeded", "{c}");
            assert!(
                c["reason"].as_str().is_some_and(|r| r
                    .ends_with("(killed from user space: the kernel did not know the pod yet)")),
                "{c}"
            );
            assert!(
                c["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("(SIGKILL through a pidfd)")),
                "{c}"
            );
        } else {
            assert!(status.success(), "{name}: killed: {status:?}");
            assert!(marker.exists(), "{name}: the program did not finish");
            assert_eq!(c["outcome"], "refused", "{c}");
            assert_eq!(c["refusal"], "protected_namespace", "{c}");
        }
    }
    drop(picket);
    drop(pins);
    drop(web);
    drop(sys);
    drop(server);
    t.done();
}

/// Issue 16 item 4: an isolation lives in the API server (the quarantine
/// label); a (re)started agent reads it back from its pod cache and lists
/// it as restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolations_of_an_earlier_agent_are_listed_restored() {
    let t = kernel_test!(isolations_of_an_earlier_agent_are_listed_restored);
    use picket_tests::kube_api::{TestApiServer, add_container, pod};
    let server = TestApiServer::start().await.expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let uid = "9a1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f20";
    let ctr = "9a".repeat(32);
    let cg = pod_container_cgroup("isolated", uid, &ctr);
    let pins = PinDir::new("isolated");
    let sock = dir.path().join("picket.sock");
    let config = format!(
        "{}delivery:\n  spool: {{dir: {}}}\n  grpc: {{listen: \"unix:{}\", unix_mode: 384}}\n",
        contain_config(&pins, dir.path()),
        dir.path().join("spool").display(),
        sock.display()
    );
    // Isolated by an earlier agent; a neighbour that is not.
    let mut p = pod("shop", "web-6", uid, "e2e-node");
    add_container(&mut p, "web", "web:1", Some(&format!("containerd://{ctr}")));
    p.metadata.labels = Some(
        [("picket.io/quarantine".to_string(), "true".to_string())]
            .into_iter()
            .collect(),
    );
    server.apply_pod(&p);
    server.apply_pod(&pod(
        "shop",
        "web-7",
        "9b1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f21",
        "e2e-node",
    ));
    let mut picket = Picket::start_with(
        dir.path(),
        "rules: []\n",
        &config,
        &[&cg],
        &kube_args(&kubeconfig),
    );
    let audit = picket.wait_for("restored isolation", |v| {
        v["event"]["containment"]["action"] == "isolate-pod"
    });
    let c = &audit["event"]["containment"];
    assert_eq!(
        c["message"],
        "restored after an agent restart: pod shop/web-6 carries picket.io/quarantine=true (isolated)"
    );
    assert_eq!(
        (&c["trigger"], &c["outcome"]),
        (&"agent".into(), &"succeeded".into())
    );
    let out = picket_cli(&sock, &["actions"]);
    let restored: Vec<&str> = out.lines().filter(|l| l.contains("(restored)")).collect();
    assert_eq!(restored.len(), 1, "{out}");
    assert!(
        restored[0].contains(
            "isolate-pod succeeded (restored): restored after an agent restart: pod shop/web-6"
        ),
        "{out}"
    );
    // The restored isolation is released by this agent: the label goes
    // (one merge PATCH), the pod watch sees it, and nothing is left.
    let out = picket_cli(
        &sock,
        &[
            "release",
            "--pod",
            "shop/web-6",
            "--action",
            "isolate-pod",
            "--reason",
            "INC-6",
        ],
    );
    assert!(
        out.contains("pod shop/web-6: label picket.io/quarantine removed"),
        "{out}"
    );
    let patches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    assert_eq!(patches, vec!["/api/v1/namespaces/shop/pods/web-6"]);
    let labels = server
        .pod_json("shop", "web-6")
        .expect("pod")
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_default();
    assert_eq!(labels, serde_json::json!({}), "quarantine label left");
    assert_eq!(
        server
            .pod_json("shop", "web-7")
            .and_then(|p| p.pointer("/metadata/labels").cloned()),
        None,
        "the neighbour is untouched"
    );
    let out = picket_cli(&sock, &["release", "--pod", "shop/web-6"]);
    assert!(out.contains("nothing to release"), "{out}");
    drop(picket);
    drop(pins);
    drop(cg);
    drop(server);
    t.done();
}
