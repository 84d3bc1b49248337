//! End-to-end, real kernel: a Falco-syntax rules file given to `picket run`
//! next to Picket's own rules fires on real actions, with the Falco rule
//! name in the alert. Root only; fails (never skips) elsewhere.
//!
//! The rules file is `tests/falco/stable-shaped.yaml`: written for these
//! tests in the shape of Falco's stable rules (lists, macros, exceptions).
//! Negative actions run first: the ring keeps event order, so once the
//! positive alerts are in, the agent has seen the negatives too.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use picket::model::{EventKindName, Severity};
use picket_tests::{
    cgroup::TestCgroup,
    kernel_test,
    run::{PicketRun, RunOptions, default_rules, output_within, workspace_root},
};

const WAIT: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(20);

fn run_in(cg: &TestCgroup, cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null());
    cg.enter(cmd);
    output_within(cmd, RUN)
}

#[test]
fn falco_rules_fire_with_their_falco_names() {
    let t = kernel_test!(falco_rules_fire_with_their_falco_names);
    let cg = TestCgroup::unique("e2e-falco");
    let falco = workspace_root().join("tests/falco/stable-shaped.yaml");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![default_rules(), falco],
        only_cgroups: vec![cg.path.clone()],
        ..Default::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-falco-")
        .tempdir()
        .expect("tempdir");
    let victim = dir.path().join("data.bin");
    std::fs::write(&victim, b"secret data").expect("write");
    let keyfile = dir.path().join("notes.txt");
    std::fs::write(&keyfile, b"nothing here\n").expect("write");

    // Negatives: benign look-alikes of the positives below.
    assert!(
        run_in(&cg, Command::new("/bin/cat").arg("/etc/hostname"))
            .status
            .success()
    );
    assert!(
        run_in(
            &cg,
            Command::new("/usr/bin/grep").args(["-c", "nothing", keyfile.to_str().expect("utf8")])
        )
        .status
        .success()
    );
    assert!(run_in(&cg, &mut Command::new("/bin/true")).status.success());
    let benign_link = dir.path().join("hostname-link");
    assert!(
        run_in(
            &cg,
            Command::new("/bin/ln").args([
                "-s",
                "/etc/hostname",
                benign_link.to_str().expect("utf8")
            ])
        )
        .status
        .success()
    );

    // Positives: `shred` (Data wiping tool), grep for private keys, cat of
    // /etc/shadow (Secret file read by untrusted program), a symlink to
    // /etc/shadow (Symlink to a secret file: a `file_change` event).
    let shred = run_in(
        &cg,
        Command::new("/usr/bin/shred").args(["-u", victim.to_str().expect("utf8")]),
    );
    assert!(shred.status.success(), "{shred:?}");
    assert!(!victim.exists(), "shred -u removed the file");
    // grep exits 1 (no match): the exec is what matters.
    let _ = run_in(
        &cg,
        Command::new("/usr/bin/grep").args([
            "-r",
            "BEGIN RSA PRIVATE",
            dir.path().to_str().expect("utf8"),
        ]),
    );
    assert!(
        run_in(&cg, Command::new("/bin/cat").arg("/etc/shadow"))
            .status
            .success()
    );

    let link = dir.path().join("shadow-link");
    assert!(
        run_in(
            &cg,
            Command::new("/bin/ln").args(["-s", "/etc/shadow", link.to_str().expect("utf8")])
        )
        .status
        .success()
    );

    let sym = picket.wait_alert("Falco `Symlink to a secret file`", WAIT, |a| {
        a.rule.id == "falco-symlink-to-a-secret-file"
    });
    assert_eq!(sym.event.event.kind, EventKindName::FileChange);
    assert_eq!(sym.message, "Symlink (target=/etc/shadow)");
    assert_eq!(
        sym.event.file.as_ref().map(|f| f.path.clone()),
        Some(link.display().to_string())
    );
    let wipe = picket.wait_alert("Falco `Data wiping tool`", WAIT, |a| {
        a.rule.id == "falco-data-wiping-tool"
    });
    assert_eq!(wipe.rule.name, "Data wiping tool");
    assert_eq!(wipe.severity, Severity::Medium);
    assert_eq!(wipe.event.event.kind, EventKindName::Exec);
    assert_eq!(
        wipe.message,
        format!("Data wipe (cmdline=/usr/bin/shred -u {})", victim.display())
    );
    let grep = picket.wait_alert("Falco `Grep for private keys`", WAIT, |a| {
        a.rule.id == "falco-grep-for-private-keys"
    });
    assert_eq!(grep.rule.name, "Grep for private keys");
    assert_eq!(grep.event.process.executable.name, "grep");
    let shadow = picket.wait_alert("Falco `Secret file read by untrusted program`", WAIT, |a| {
        a.rule.id == "falco-secret-file-read-by-untrusted-program"
    });
    assert_eq!(shadow.rule.name, "Secret file read by untrusted program");
    assert_eq!(shadow.event.event.kind, EventKindName::FileOpen);
    assert!(
        shadow
            .message
            .starts_with("Secret file read (file=/etc/shadow dir=/etc process=cat "),
        "{}",
        shadow.message
    );

    picket.drain(Duration::from_millis(500));
    let falco_alerts: Vec<_> = picket
        .alerts()
        .into_iter()
        .filter(|a| a.rule.id.starts_with("falco-"))
        .map(|a| (a.rule.id.clone(), a.event.process.executable.name.clone()))
        .collect();
    assert_eq!(
        falco_alerts,
        [
            ("falco-data-wiping-tool".to_string(), "shred".to_string()),
            (
                "falco-grep-for-private-keys".to_string(),
                "grep".to_string()
            ),
            (
                "falco-secret-file-read-by-untrusted-program".to_string(),
                "cat".to_string()
            ),
            (
                "falco-symlink-to-a-secret-file".to_string(),
                "ln".to_string()
            ),
        ],
        "exactly the four triggers, none of the benign look-alikes"
    );
    t.done();
}

/// The fields added for Falco's stable rules, on real actions: user names
/// from the passwd database (`user.name`), process age (`proc.duration`),
/// the raw and normalized path of an open (`fd.nameraw`, `fd.name`) and
/// failed opens (`fd.num = -1`, `evt.res`). The rules file
/// (`tests/falco/e2e/newly-active.yaml`) has the shape of Falco's "System
/// user interactive", "Read sensitive file trusted after startup" and
/// "Directory traversal monitored file read".
#[test]
fn newly_mapped_fields_fire_on_real_actions() {
    let t = kernel_test!(newly_mapped_fields_fire_on_real_actions);
    let cg = TestCgroup::unique("e2e-falco-fields");
    let falco = workspace_root().join("tests/falco/e2e/newly-active.yaml");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![falco],
        only_cgroups: vec![cg.path.clone()],
        ..Default::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-falco-")
        .tempdir()
        .expect("tempdir");
    // Programs named like an ssh daemon and a web server: copies of bash.
    let sshd = dir.path().join("sshd");
    let nginx = dir.path().join("nginx");
    for p in [&sshd, &nginx] {
        std::fs::copy("/usr/bin/bash", p).expect("copy bash");
    }
    let d = dir.path().to_str().expect("utf8");
    // Two `../` through the temp dir, back to /etc.
    let traversal = format!("{d}/../../etc/../etc/shadow");
    let missing = format!("{d}/../../etc/../etc/picket-no-such-file");
    let setpriv = "/usr/bin/setpriv --reuid=1 --regid=1 --clear-groups /bin/true";

    // Negatives: uid 1 outside a session, a web server reading /etc/shadow
    // in its first seconds, a direct read, a single `../`.
    assert!(
        run_in(&cg, Command::new("/bin/sh").args(["-c", setpriv]))
            .status
            .success()
    );
    let early = run_in(
        &cg,
        Command::new(&nginx).args(["-c", "read l < /etc/shadow; exit 0"]),
    );
    assert!(early.status.success(), "{early:?}");
    assert!(
        run_in(&cg, Command::new("/bin/cat").arg("/etc/shadow"))
            .status
            .success()
    );
    assert!(
        run_in(&cg, Command::new("/bin/cat").arg("/etc/../etc/hostname"))
            .status
            .success()
    );

    // Positives.
    let session = run_in(
        &cg,
        Command::new(&sshd).args(["-c", &format!("{setpriv}; exit 0")]),
    );
    assert!(session.status.success(), "{session:?}");
    let late = run_in(
        &cg,
        Command::new(&nginx).args(["-c", "sleep 6; read l < /etc/shadow; exit 0"]),
    );
    assert!(late.status.success(), "{late:?}");
    assert!(
        run_in(&cg, Command::new("/bin/cat").arg(&traversal))
            .status
            .success()
    );
    assert!(
        !run_in(&cg, Command::new("/bin/cat").arg(&missing))
            .status
            .success()
    );

    let a = picket.wait_alert("service account in a session", WAIT, |a| {
        a.rule.id == "falco-service-account-in-a-remote-session"
    });
    assert_eq!(a.rule.name, "Service account in a remote session");
    assert_eq!(a.severity, Severity::Info);
    assert_eq!(a.event.process.user.id, 1);
    assert_eq!(a.event.process.user.name.as_deref(), Some("daemon"));
    assert_eq!(
        a.message,
        "Service account ran a command (user=daemon uid=1 process=true parent=sshd command=/bin/true)"
    );
    let a = picket.wait_alert("credential file read after startup", WAIT, |a| {
        a.rule.id == "falco-credential-file-read-by-a-daemon-after-startup"
    });
    assert_eq!(a.event.event.kind, EventKindName::FileOpen);
    assert_eq!(
        a.message,
        "Credential file read after startup (file=/etc/shadow process=nginx user=root)"
    );
    let start = a.event.process.start_time.expect("start time");
    let age = a.event.time.duration_since(start);
    assert!(
        age >= jiff::SignedDuration::from_secs(5),
        "read {age:?} after start"
    );
    let a = picket.wait_alert("traversal read", WAIT, |a| {
        a.rule.id == "falco-traversal-to-a-system-file" && a.message.contains("res=SUCCESS")
    });
    assert_eq!(
        a.message,
        format!("Traversal (file=/etc/shadow raw={traversal} res=SUCCESS num=3 process=cat)")
    );
    let a = picket.wait_alert("failed traversal", WAIT, |a| {
        a.rule.id == "falco-traversal-to-a-system-file" && a.message.contains("res=ENOENT")
    });
    assert_eq!(
        a.message,
        format!(
            "Traversal (file=/etc/picket-no-such-file raw={missing} res=ENOENT num=-1 process=cat)"
        )
    );

    picket.drain(Duration::from_millis(500));
    let falco_alerts: Vec<_> = picket
        .alerts()
        .into_iter()
        .map(|a| (a.rule.id.clone(), a.event.process.executable.name.clone()))
        .collect();
    let want = [
        ("falco-service-account-in-a-remote-session", "true"),
        (
            "falco-credential-file-read-by-a-daemon-after-startup",
            "nginx",
        ),
        ("falco-traversal-to-a-system-file", "cat"),
        ("falco-traversal-to-a-system-file", "cat"),
    ];
    assert_eq!(
        falco_alerts,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "exactly the four triggers, none of the look-alikes"
    );
    t.done();
}

/// Removes a container started with `ctr run` directly, even on failure.
struct Removed<'a>(&'a picket_tests::containerd::Containerd, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Real containerd + runc: the `fd.type` of a socket busybox `nc -e`
/// duplicates onto stdin/stdout (Falco's "Redirect STDOUT/STDIN to Network
/// Connection in Container" shape) and user names from the container's own
/// `/etc/passwd` (uid 1 has no entry there, so it is `1`, although the
/// host names it `daemon`). The container shares the host network so the
/// connection stays on loopback.
#[test]
fn container_stdio_redirect_and_user_names() {
    use picket_tests::containerd::{CgroupTree, Containerd, Layout, new_container_id};
    let t = kernel_test!(container_stdio_redirect_and_user_names);
    let tree = CgroupTree::new("falco");
    let ctrd = Containerd::start();
    let pod_uid = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";
    let id = new_container_id();
    let rel = Layout::KubeSystemd.path(pod_uid, &id);
    let dir = tree.precreate(&rel);
    let rules = workspace_root().join("tests/falco/e2e/container.yaml");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![rules],
        only_cgroups: vec![dir],
        ..Default::default()
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // A listener that keeps the connection open for a few seconds, and a
    // client that runs a shell on it (retried until the listener is up).
    let script = format!(
        "sleep 5 | nc -l -p {port} & \
         for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 {port} -e /bin/sh && break; sleep 0.3; done; \
         exec sleep 1000"
    );
    let rootfs = ctrd.rootfs.display().to_string();
    let cgroup = tree.cgroup_path(&rel);
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--net-host",
        "--rootfs",
        "--cgroup",
        &cgroup,
        &rootfs,
        &id,
        "/bin/sh",
        "-c",
        &script,
    ]);
    let _removed = Removed(&ctrd, id.clone());

    let redirect = |fd: i64| {
        move |a: &picket::model::Alert| {
            a.rule.id == "falco-stdio-of-a-container-process-redirected-to-a-network-socket"
                && a.event.fd.as_ref().is_some_and(|d| i64::from(d.new) == fd)
        }
    };
    for fd in [0, 1] {
        let a = picket.wait_alert("nc -e redirect", WAIT, redirect(fd));
        assert_eq!(
            a.message,
            format!("Redirect (fd={fd} type=ipv4 typechar=4 process=busybox user=root)")
        );
        assert_eq!(
            a.event.syscall.as_ref().map(|s| s.name.as_str()),
            Some("dup2")
        );
        assert_eq!(
            a.event.container.as_ref().map(|c| c.id.as_str()),
            Some(id.as_str())
        );
    }

    for (exec_id, user, want) in [
        ("e1", "1:1", "id (user=1 uid=1)"),
        ("e2", "65534:65534", "id (user=nobody uid=65534)"),
    ] {
        ctrd.ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            exec_id,
            "--user",
            user,
            &id,
            "/bin/id",
            "-u",
        ]);
        let a = picket.wait_alert(want, WAIT, |a| {
            a.rule.id == "falco-identity-query-in-a-container" && a.message == want
        });
        assert_eq!(a.event.process.command_args, ["/bin/id", "-u"]);
    }
    picket.drain(Duration::from_millis(500));
    let mut got: Vec<String> = picket.alerts().iter().map(|a| a.message.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Redirect (fd=0 type=ipv4 typechar=4 process=busybox user=root)",
            "Redirect (fd=1 type=ipv4 typechar=4 process=busybox user=root)",
            "id (user=1 uid=1)",
            "id (user=nobody uid=65534)",
        ],
        "exactly the two dups onto stdio and the two id runs"
    );
    t.done();
}

/// `container.privileged` from the pod spec served by the test Kubernetes
/// API server, through `picket run --kubernetes on`: the rule in the shape
/// of Falco's "Debugfs Launched in Privileged Container" fires on a real
/// `debugfs` exec'd into the (fake) container of a privileged pod, and not
/// on another program there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debugfs_in_a_privileged_pod() {
    use picket_tests::{
        container::FakeContainer,
        kube_api::{TestApiServer, add_container, namespace, pod},
    };
    let t = kernel_test!(debugfs_in_a_privileged_pod);
    let server = TestApiServer::start().await.expect("test API server");
    server.apply_namespace(&namespace("ops", &[]));
    let pod_uid = "6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d9e";
    let id = "dec0de42".repeat(8);
    let mut p = pod("ops", "disk-tools", pod_uid, picket_tests::run::NODE);
    add_container(
        &mut p,
        "tools",
        "registry.example/ops/tools:1",
        Some(&format!("containerd://{id}")),
    );
    if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
    }
    server.apply_pod(&p);
    let ctr = FakeContainer::start("e2e-falco-priv", pod_uid, &id, "exec /bin/sleep 1000");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![workspace_root().join("tests/falco/e2e/privileged.yaml")],
        only_cgroups: vec![ctr.cgroup.path.clone()],
        extra_args: vec![
            "--kubernetes".into(),
            "on".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--k8s-metadata-wait".into(),
            "10s".into(),
        ],
        ..Default::default()
    });
    for (program, args) in [("/bin/true", &[][..]), ("/usr/sbin/debugfs", &["-V"][..])] {
        let mut cmd = ctr.exec(program, args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        assert!(cmd.status().expect("exec into the container").success());
    }
    let a = picket.wait_alert("debugfs in a privileged pod", WAIT, |a| {
        a.rule.id == "falco-disk-debugger-in-a-privileged-container"
    });
    assert_eq!(
        a.message,
        "Debugfs in a privileged container (privileged=true pod=disk-tools ns=ops process=debugfs command=/usr/sbin/debugfs -V)"
    );
    assert_eq!(
        a.event.container.as_ref().and_then(|c| c.privileged),
        Some(true)
    );
    // debugfs -V and its nsenter parent are gone when the event is
    // handled: the name comes through the container's live init.
    assert_eq!(a.event.process.user.name.as_deref(), Some("root"));
    picket.drain(Duration::from_millis(500));
    let names: Vec<_> = picket
        .alerts()
        .iter()
        .map(|a| a.event.process.executable.name.clone())
        .collect();
    assert_eq!(names, ["debugfs"], "only debugfs, not /bin/true");
    t.done();
}

/// One expected alert of [`every_active_stable_rule_fires_on_a_real_trigger`]:
/// the Falco rule name, its id, the severity its priority maps to, and a
/// `key=value` the rendered output must contain.
struct Expect {
    name: &'static str,
    id: &'static str,
    severity: Severity,
    needle: String,
}

fn expect(name: &'static str, id: &'static str, severity: Severity, needle: &str) -> Expect {
    Expect {
        name,
        id,
        severity,
        needle: needle.to_string(),
    }
}

/// Runs `cmd` with stdin, stdout and stderr on a new pseudo-terminal (as
/// `kubectl exec -it` gives a shell), types `input`, waits for the exit.
fn run_on_terminal(mut cmd: Command, input: &[u8]) {
    use std::io::Write;
    let (master, slave) = picket_tests::container::open_pty();
    cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    let mut child = picket_tests::run::ChildGuard::spawn(&mut cmd);
    drop(cmd);
    let mut term = std::fs::File::from(master);
    term.write_all(input).expect("type into the terminal");
    assert!(child.wait_timeout(RUN).success(), "shell on the terminal");
}

/// Copies `from` to `dir/name` (mode 0755) and returns the new path.
fn install(from: &str, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(name);
    std::fs::copy(from, &to).expect("copy program");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

const PY: &str = "/usr/bin/python3";
const MODULE_RULE: &str = "Linux Kernel Module Injection Detected";

/// Issue #20's "done when": every rule of Falco's stable rules file that
/// Picket runs fires, under its Falco name, on a real action of this test
/// (our own triggers, in the manner of Falco's event-generator), and
/// nothing fires on benign look-alikes in two other scopes (a host cgroup
/// and a second container).
///
/// The rules are `tests/falco/e2e/stable-triggers.yaml`: written for this
/// test with the names, priorities, macros, fields, operators and event
/// types of the stable rules. `PICKET_FALCO_RULES=/path/falco_rules.yaml`
/// runs the same triggers against the real file instead (a manual check:
/// the real file is not in this repository; docs/falco.md has the result).
///
/// One agent run for all triggers: a host cgroup, a fake container of a
/// privileged pod served by the test Kubernetes API (`container.privileged`),
/// and the two benign scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_active_stable_rule_fires_on_a_real_trigger() {
    use picket_tests::{
        container::FakeContainer,
        kube_api::{TestApiServer, add_container, namespace, pod},
        run::ChildGuard,
    };
    let t = kernel_test!(every_active_stable_rule_fires_on_a_real_trigger);
    let rules = std::env::var_os("PICKET_FALCO_RULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/falco/e2e/stable-triggers.yaml"));
    let server = TestApiServer::start().await.expect("test API server");
    server.apply_namespace(&namespace("shop", &[]));
    let (pod_uid, id) = ("8d9e0f1a-2b3c-4d4e-8f5a-6b7c8d9e0f1a", "feedface".repeat(8));
    let (quiet_uid, quiet_id) = ("9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b", "0ddba115".repeat(8));
    for (name, uid, cid, privileged) in [
        ("web", pod_uid, &id, true),
        ("quiet", quiet_uid, &quiet_id, false),
    ] {
        let mut p = pod("shop", name, uid, picket_tests::run::NODE);
        add_container(
            &mut p,
            "main",
            "registry.example/shop/web:1",
            Some(&format!("containerd://{cid}")),
        );
        if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
                privileged: Some(privileged),
                ..Default::default()
            });
        }
        server.apply_pod(&p);
    }
    let ctr = FakeContainer::start("e2e-falco-stable", pod_uid, &id, "exec /bin/sleep 1000");
    let quiet = FakeContainer::start(
        "e2e-falco-quiet",
        quiet_uid,
        &quiet_id,
        "exec /bin/sleep 1000",
    );
    let host = TestCgroup::unique("e2e-falco-stable-host");
    let benign = TestCgroup::unique("e2e-falco-stable-benign");
    let kdir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kdir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![rules],
        only_cgroups: vec![
            host.path.clone(),
            benign.path.clone(),
            ctr.cgroup.path.clone(),
            quiet.cgroup.path.clone(),
        ],
        extra_args: vec![
            "--kubernetes".into(),
            "on".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--k8s-metadata-wait".into(),
            "10s".into(),
        ],
        // The `kubernetes` Service's ClusterIP, as every pod gets it: a
        // loopback address here, so the connection stays on loopback.
        env: vec![("KUBERNETES_SERVICE_HOST".into(), "127.0.0.2".into())],
        ..Default::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("picket-e2e-falco-stable-")
        .tempdir()
        .expect("tempdir");
    let shm = tempfile::Builder::new()
        .prefix("picket-e2e-falco-")
        .tempdir_in("/dev/shm")
        .expect("tempdir in /dev/shm");
    let d = dir.path().to_str().expect("utf8").to_string();
    std::fs::write(dir.path().join("data.bin"), b"secret data").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"nothing here\n").expect("write");
    // Programs named like servers and a runtime: copies of real ones.
    let nginx = install("/usr/bin/bash", dir.path(), "nginx");
    let sshd = install("/usr/bin/bash", dir.path(), "sshd");
    let runc = install("/usr/bin/nsenter", dir.path(), "runc");
    let host_run = |cg: &TestCgroup, program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        run_in(cg, &mut cmd)
    };
    let ctr_run = |c: &FakeContainer, program: &str, args: &[&str]| {
        let mut cmd = c.exec(program, args);
        cmd.stdin(Stdio::null());
        output_within(&mut cmd, RUN)
    };

    // Benign look-alikes first, in their own scopes.
    let benign_host: [(&str, &[&str]); 8] = [
        ("/bin/cat", &["/etc/hostname"]),
        ("/bin/cat", &["/etc/../etc/hostname"]),
        (
            "/usr/bin/grep",
            &["-c", "nothing", &format!("{d}/notes.txt")],
        ),
        ("/bin/sh", &["-c", &format!(": > {d}/app.log")]),
        (
            "/bin/ln",
            &["-s", "/etc/hostname", &format!("{d}/hostname-link")],
        ),
        (
            PY,
            &[
                "-c",
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
            ],
        ),
        ("/bin/ls", &["/dev/shm"]),
        ("/usr/bin/find", &[&d, "-name", "notes.txt"]),
    ];
    for (program, args) in benign_host {
        let out = host_run(&benign, program, args);
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    }
    let connect = |addrs: &str| {
        format!(
            "import socket\n\
             l=socket.socket(); l.bind(('0.0.0.0', 0)); l.listen(4)\n\
             p=l.getsockname()[1]\n\
             for a in ({addrs}):\n  socket.create_connection((a, p)).close()\n\
             print(p)\n"
        )
    };
    let out = ctr_run(&quiet, "/usr/sbin/ip", &["link", "set", "lo", "up"]);
    assert!(out.status.success(), "{out:?}");
    let quiet_connect = connect("'127.0.0.3',");
    for (program, args) in [
        (PY, &["-c", quiet_connect.as_str()][..]),
        ("/bin/true", &[][..]),
        ("/bin/sh", &["-c", "exit 0"][..]),
        ("/usr/sbin/debugfs", &["-V"][..]),
        ("/bin/cat", &["/etc/hostname"][..]),
    ] {
        let out = ctr_run(&quiet, program, args);
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    }

    // Triggers on the host. The server reads /etc/shadow after 6 s: it
    // runs in the background while the rest goes on.
    let mut late = {
        let mut cmd = Command::new(&nginx);
        cmd.args([
            "-c",
            "/bin/sh -c 'exit 0'; sleep 6; read l < /etc/shadow; exit 0",
        ])
        .stdin(Stdio::null());
        host.enter(&mut cmd);
        ChildGuard::spawn(&mut cmd)
    };
    let setpriv = "/usr/bin/setpriv --reuid=1 --regid=1 --clear-groups /bin/true";
    let sshd = sshd.to_str().expect("utf8");
    let traversal = format!("{d}/../../etc/../etc/shadow");
    let payload = install("/bin/true", shm.path(), "payload");
    let payload = payload.to_str().expect("utf8");
    let ptrace_attach = "import ctypes,os,time,signal\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         libc.ptrace.argtypes=[ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n\
         pid=os.fork()\n\
         if pid==0:\n  time.sleep(30); os._exit(0)\n\
         assert libc.ptrace(16, pid, None, None) == 0\n\
         os.waitpid(pid, 0)\n\
         libc.ptrace(17, pid, None, None)\n\
         os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)\n";
    let ptrace_traceme = "import ctypes,os\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         libc.ptrace.argtypes=[ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n\
         pid=os.fork()\n\
         if pid==0:\n  os._exit(0 if libc.ptrace(0, 0, None, None) == 0 else 1)\n\
         assert os.waitpid(pid, 0)[1] == 0\n";
    let memfd = "import os\n\
         fd=os.memfd_create('picket-e2e', 0)\n\
         os.write(fd, open('/bin/true','rb').read())\n\
         os.execv('/proc/self/fd/%d' % fd, ['payload'])\n";
    let host_triggers: [(&str, &[&str]); 12] = [
        (sshd, &["-c", &format!("{setpriv}; exit 0")]),
        ("/bin/cat", &[&traversal]),
        ("/bin/cat", &["/etc/shadow"]),
        ("/usr/bin/grep", &["-r", "BEGIN RSA PRIVATE", &d]),
        ("/usr/bin/grep", &["-r", "aws_secret_access_key", &d]),
        ("/bin/sh", &["-c", &format!(": > {d}/syslog")]),
        ("/usr/bin/shred", &["-u", &format!("{d}/data.bin")]),
        (
            "/bin/ln",
            &["-s", "/etc/shadow", &format!("{d}/shadow-link")],
        ),
        (PY, &["-c", ptrace_attach]),
        (PY, &["-c", ptrace_traceme]),
        (payload, &[]),
        (PY, &["-c", memfd]),
    ];
    for (program, args) in host_triggers {
        // grep exits 1 when nothing matches: only the exec matters.
        let out = host_run(&host, program, args);
        assert!(
            out.status.success() || program.ends_with("grep"),
            "{program} {args:?}: {out:?}"
        );
    }
    // A hard link to /etc/shadow into a directory that does not exist:
    // linkat(2) fails with ENOENT, no link is made, and the call is seen
    // (Falco's rule does not look at the result either).
    let out = host_run(
        &host,
        "/bin/ln",
        &["/etc/shadow", &format!("{d}/missing/hardlink")],
    );
    assert!(!out.status.success(), "{out:?}");

    // Triggers in the container. Programs copied in after it started.
    let nc = install("/usr/bin/busybox", dir.path(), "nc");
    // Long enough alive for the agent to look at its executable.
    let dropped = install("/bin/sleep", dir.path(), "dropped");
    // The container's own network namespace: its loopback up, so a shell
    // can be redirected to a connected TCP socket there.
    let out = ctr_run(&ctr, "/usr/sbin/ip", &["link", "set", "lo", "up"]);
    assert!(out.status.success(), "{out:?}");
    let mut redirect = {
        let mut cmd = ctr.exec(
            PY,
            &[
                "-c",
                "import os,socket,time\n\
                 l=socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
                 s=socket.create_connection(l.getsockname())\n\
                 os.dup2(s.fileno(), 1)\n\
                 time.sleep(4)\n",
            ],
        );
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        ChildGuard::spawn(&mut cmd)
    };
    let mut shell = Command::new(&runc);
    shell.args([
        "-t",
        &ctr.init_pid.to_string(),
        "-p",
        "-m",
        "-u",
        "-i",
        "-n",
        "--",
        "/bin/sh",
    ]);
    ctr.cgroup.enter(&mut shell);
    run_on_terminal(shell, b"exit 0\n");
    let module = "import ctypes\n\
         libc=ctypes.CDLL(None, use_errno=True)\n\
         print(libc.syscall(313, -1, b'', 0), ctypes.get_errno())\n";
    // The API server's Service address (from the environment) and an
    // address of `localhost` (from the resolver).
    let out = ctr_run(&ctr, PY, &["-c", &connect("'127.0.0.2', '127.0.0.1'")]);
    assert!(out.status.success(), "{out:?}");
    let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // An ssh client to port 443 of a public-looking address (TEST-NET-2,
    // on the container's own loopback, so nothing leaves it): the listener
    // accepts, ssh gets no banner and gives up.
    let out = ctr_run(
        &ctr,
        "/usr/sbin/ip",
        &["addr", "add", "198.51.100.1/32", "dev", "lo"],
    );
    assert!(out.status.success(), "{out:?}");
    let mut listener = {
        let mut cmd = ctr.exec(
            PY,
            &[
                "-c",
                "import socket,sys,time\n\
                 l=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 l.bind(('198.51.100.1', 443)); l.listen(1)\n\
                 print('ready'); sys.stdout.flush()\n\
                 c,_=l.accept(); time.sleep(0.5); c.close()\n",
            ],
        );
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        ChildGuard::spawn(&mut cmd)
    };
    {
        use std::io::BufRead;
        let mut line = String::new();
        let stdout = listener.0.stdout.as_mut().expect("listener stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listener ready");
        assert_eq!(line, "ready\n");
    }
    let ssh = ctr_run(
        &ctr,
        "/usr/bin/ssh",
        &[
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-p",
            "443",
            "198.51.100.1",
            "true",
        ],
    );
    assert!(!ssh.status.success(), "no ssh server there: {ssh:?}");
    assert!(listener.wait_timeout(RUN).success(), "listener");
    let ctr_triggers: [(&str, &[&str]); 6] = [
        (
            nc.to_str().expect("utf8"),
            &["-e", "/bin/true", "127.0.0.1", "9"],
        ),
        (
            PY,
            &[
                "-c",
                "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)",
            ],
        ),
        (PY, &["-c", module]),
        ("/usr/sbin/debugfs", &["-V"]),
        ("/bin/sh", &["-c", &format!(": > {d}/release_agent")]),
        (dropped.to_str().expect("utf8"), &["2"]),
    ];
    for (program, args) in ctr_triggers {
        // Rules written with `fd.name` run without kernel path filtering
        // (docs/falco.md), so every open of the container is sent, and the
        // Python triggers' module imports alone fill the cgroup's file_open
        // window (2,000 per second): an open right after them is counted in
        // a rate summary, not alerted on (seen in CI: 986 opens summarized,
        // the release_agent open among them). Each trigger gets a fresh
        // window; the limit itself is tested in kernel_filters.
        std::thread::sleep(Duration::from_millis(1100));
        // nc cannot connect (the container's loopback is down).
        let out = ctr_run(&ctr, program, args);
        assert!(
            out.status.success() || program.ends_with("/nc"),
            "{program} {args:?}: {out:?}"
        );
    }
    assert!(redirect.wait_timeout(RUN).success(), "dup2 onto stdout");
    assert!(late.wait_timeout(RUN).success(), "late read of /etc/shadow");

    // The module syscalls have no tracepoint on kernels without module
    // support (CONFIG_MODULES=n, as on the project's machine): there the
    // rule cannot see anything, and that is asserted too.
    let module_tracepoint =
        std::path::Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_finit_module").exists()
            || std::path::Path::new(
                "/sys/kernel/debug/tracing/events/syscalls/sys_enter_finit_module",
            )
            .exists();
    let mut want = vec![
        expect(
            "Directory traversal monitored file read",
            "falco-directory-traversal-monitored-file-read",
            Severity::Medium,
            &format!("fileraw={traversal}"),
        ),
        expect(
            "Read sensitive file trusted after startup",
            "falco-read-sensitive-file-trusted-after-startup",
            Severity::Medium,
            "process=nginx",
        ),
        expect(
            "Read sensitive file untrusted",
            "falco-read-sensitive-file-untrusted",
            Severity::Medium,
            "file=/etc/shadow",
        ),
        expect(
            "Run shell untrusted",
            "falco-run-shell-untrusted",
            Severity::Low,
            "parent=nginx",
        ),
        expect(
            "System user interactive",
            "falco-system-user-interactive",
            Severity::Info,
            "user=daemon",
        ),
        expect(
            "Terminal shell in container",
            "falco-terminal-shell-in-container",
            Severity::Low,
            "parent=runc",
        ),
        expect(
            "Netcat Remote Code Execution in Container",
            "falco-netcat-remote-code-execution-in-container",
            Severity::Medium,
            "process=nc",
        ),
        expect(
            "Search Private Keys or Passwords",
            "falco-search-private-keys-or-passwords",
            Severity::Medium,
            "BEGIN RSA PRIVATE",
        ),
        expect(
            "Clear Log Activities",
            "falco-clear-log-activities",
            Severity::Medium,
            &format!("file={d}/syslog"),
        ),
        expect(
            "Remove Bulk Data from Disk",
            "falco-remove-bulk-data-from-disk",
            Severity::Medium,
            "process=shred",
        ),
        expect(
            "Create Symlink Over Sensitive Files",
            "falco-create-symlink-over-sensitive-files",
            Severity::Medium,
            &format!("target=/etc/shadow linkpath={d}/shadow-link"),
        ),
        expect(
            "Create Hardlink Over Sensitive Files",
            "falco-create-hardlink-over-sensitive-files",
            Severity::Medium,
            &format!("target=/etc/shadow linkpath={d}/missing/hardlink"),
        ),
        expect(
            "Packet socket created in container",
            "falco-packet-socket-created-in-container",
            Severity::Low,
            "evt_type=socket",
        ),
        expect(
            "Redirect STDOUT/STDIN to Network Connection in Container",
            "falco-redirect-stdout-stdin-to-network-connection-in-container",
            Severity::Low,
            "fd_type=ipv4",
        ),
        expect(
            "Debugfs Launched in Privileged Container",
            "falco-debugfs-launched-in-privileged-container",
            Severity::Medium,
            "process=debugfs",
        ),
        expect(
            "Detect release_agent File Container Escapes",
            "falco-detect-release-agent-file-container-escapes",
            Severity::Critical,
            &format!("file={d}/release_agent"),
        ),
        expect(
            "PTRACE attached to process",
            "falco-ptrace-attached-to-process",
            Severity::Medium,
            "evt_type=ptrace",
        ),
        expect(
            "PTRACE anti-debug attempt",
            "falco-ptrace-anti-debug-attempt",
            Severity::Low,
            "evt_type=ptrace",
        ),
        expect(
            "Find AWS Credentials",
            "falco-find-aws-credentials",
            Severity::Medium,
            &format!("proc_cwd={}", workspace_root().join("tests").display()),
        ),
        expect(
            "Execution from /dev/shm",
            "falco-execution-from-dev-shm",
            Severity::Medium,
            &format!("proc_exepath={payload}"),
        ),
        expect(
            "Drop and execute new binary in container",
            "falco-drop-and-execute-new-binary-in-container",
            Severity::Critical,
            &format!("proc_exe={}", dropped.display()),
        ),
        expect(
            "Fileless execution via memfd_create",
            "falco-fileless-execution-via-memfd-create",
            Severity::Critical,
            "proc_exepath=/memfd:picket-e2e",
        ),
    ];
    want.push(expect(
        "Contact K8S API Server From Container",
        "falco-contact-k8s-api-server-from-container",
        Severity::Low,
        &format!("rport={port}"),
    ));
    want.push(expect(
        "Disallowed SSH Connection Non Standard Port",
        "falco-disallowed-ssh-connection-non-standard-port",
        Severity::Low,
        "rport=443",
    ));
    let real_file = std::env::var_os("PICKET_FALCO_RULES").is_some();
    if !real_file {
        want.push(expect(
            "Contact loopback by name from container",
            "falco-contact-loopback-by-name-from-container",
            Severity::Info,
            &format!("rport={port}"),
        ));
    }
    let module_rule = expect(
        MODULE_RULE,
        "falco-linux-kernel-module-injection-detected",
        Severity::Medium,
        "evt_type=finit_module",
    );
    if module_tracepoint {
        want.push(module_rule);
    }
    let mut report = Vec::new();
    for w in &want {
        let a = picket.wait_alert(w.name, WAIT, |a| {
            a.rule.name == w.name && a.message.contains(&w.needle)
        });
        assert_eq!(a.rule.id, w.id, "{}", w.name);
        assert_eq!(a.severity, w.severity, "{}", w.name);
        report.push(format!("{}: {}", w.name, a.message));
    }
    picket.drain(Duration::from_millis(1500));
    eprintln!("fired:\n{}", report.join("\n"));
    let alerts = picket.alerts();
    let in_benign: Vec<_> = alerts
        .iter()
        .filter(|a| {
            let cg = a.event.process.linux.cgroup_id;
            cg == benign.id() || cg == quiet.cgroup.id()
        })
        .map(|a| format!("{}: {}", a.rule.name, a.message))
        .collect();
    assert!(in_benign.is_empty(), "benign actions raised {in_benign:#?}");
    let names: std::collections::BTreeSet<&str> =
        alerts.iter().map(|a| a.rule.name.as_str()).collect();
    let wanted: std::collections::BTreeSet<&str> = want.iter().map(|w| w.name).collect();
    assert_eq!(names, wanted, "every wanted rule fired, and no other");
    // Each name matched its own address only.
    let peers = |name: &str| -> Vec<String> {
        alerts
            .iter()
            .filter(|a| a.rule.name == name)
            .filter_map(|a| a.event.network.as_ref()?.peer.as_ref())
            .map(|p| format!("{}:{}", p.address, p.port))
            .collect()
    };
    assert_eq!(
        peers("Contact K8S API Server From Container"),
        [format!("127.0.0.2:{port}")]
    );
    if !real_file {
        // The connection of the redirect trigger (to its own listener on
        // 127.0.0.1, an ephemeral port) too; none to 127.0.0.2 or .3.
        let got = peers("Contact loopback by name from container");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&format!("127.0.0.1:{port}")), "{got:?}");
        assert!(got.iter().all(|p| p.starts_with("127.0.0.1:")), "{got:?}");
    }
    if !module_tracepoint {
        assert!(!names.contains(MODULE_RULE));
    }
    t.done();
}
