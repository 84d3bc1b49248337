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

    // Positives: `shred` (Data wiping tool), grep for private keys, cat of
    // /etc/shadow (Secret file read by untrusted program).
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
        ],
        "exactly the three triggers, none of the benign look-alikes"
    );
    t.done();
}
