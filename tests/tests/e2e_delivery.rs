//! Durable delivery across a real agent crash: `picket run` (the shipped
//! binary, real kernel) raises alerts into its spool, is killed with
//! SIGKILL, and a new agent on the same spool resumes numbering and
//! delivery where the old one stopped. Root only; fails (never skips)
//! elsewhere.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use picket_tests::{cgroup::TestCgroup, kernel_test, picket_run::Picket};
use serde_json::Value;

const RULES: &str = "rules:\n  - id: e2e-restart\n    name: e2e-restart\n    description: e2e\n    severity: low\n    events: [exec]\n    condition: 'process.executable.path == \"/usr/bin/true\"'\n    output: 'ran {process.executable.path}'\n    tags: [T1059]\n";

fn config(dir: &Path) -> String {
    format!(
        "delivery:\n  spool: {{dir: {spool}, fsync: always}}\n  jsonl:\n    - {{name: file, path: {file}}}\n  grpc: {{listen: \"unix:{sock}\", unix_mode: 384}}\n",
        spool = dir.join("spool").display(),
        file = dir.join("alerts.jsonl").display(),
        sock = dir.join("api.sock").display()
    )
}

/// The agent's RuleService, through its Unix socket: the running rules, a
/// document validated against them, a reload.
fn check_rule_service(sock: &Path) {
    use picket::delivery::{
        grpc::client::connect,
        proto::pb::{self, rule_service_client::RuleServiceClient},
        tls::ClientTls,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ch = connect(
            &format!("unix:{}", sock.display()),
            &ClientTls::default(),
            false,
        )
        .await
        .expect("connect");
        let mut c = RuleServiceClient::new(ch);
        let rules = c
            .list_rules(pb::ListRulesRequest {})
            .await
            .expect("list")
            .into_inner()
            .rules;
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["e2e-restart"]);
        assert_eq!(rules[0].events, ["exec"]);
        let v = c
            .validate_rules(pb::ValidateRulesRequest {
                yaml: RULES.replace("e2e-restart", "e2e-other"),
            })
            .await
            .expect("validate")
            .into_inner();
        assert!(v.valid, "{:?}", v.problems);
        assert_eq!(v.rule_count, 1);
        let v = c
            .validate_rules(pb::ValidateRulesRequest {
                yaml: RULES.replace("severity: low", "severity: loud"),
            })
            .await
            .expect("validate")
            .into_inner();
        assert!(!v.valid);
        let r = c
            .reload_rules(pb::ReloadRulesRequest {})
            .await
            .expect("reload")
            .into_inner();
        assert_eq!(r.rule_count, 1);
        assert!(r.problems.is_empty());
    });
}

/// `seq` of every alert in the JSON-lines file, in file order.
fn file_seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["alert"]["seq"].as_u64())
        .collect()
}

fn wait_file(path: &Path, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while file_seqs(path) != want {
        assert!(
            Instant::now() < deadline,
            "file sink has {:?}, want {want:?}",
            file_seqs(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_true(cg: &TestCgroup, times: usize) {
    for _ in 0..times {
        let mut cmd = Command::new("/usr/bin/true");
        cg.enter(&mut cmd);
        assert!(cmd.status().expect("true").success());
    }
}

/// Waits for the stdout alerts with these sequence numbers.
fn wait_alerts(p: &mut Picket, seqs: &[u64]) {
    for s in seqs {
        let a = p.wait_for(&format!("alert seq {s}"), |v| {
            v["rule"]["id"] == "e2e-restart" && v["seq"].as_u64() == Some(*s)
        });
        assert_eq!(a["message"], "ran /usr/bin/true");
    }
}

#[test]
fn crash_and_restart_resume_numbering_and_delivery_without_loss_or_duplicates() {
    let t =
        kernel_test!(crash_and_restart_resume_numbering_and_delivery_without_loss_or_duplicates);
    let cg = TestCgroup::unique("e2e-restart");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alerts.jsonl");
    let cfg = config(dir.path());

    let mut first = Picket::start(dir.path(), RULES, &cfg, &[&cg]);
    run_true(&cg, 3);
    wait_alerts(&mut first, &[1, 2, 3]);
    wait_file(&file, &[1, 2, 3]);
    // Let the sink's acknowledgement reach the disk, then crash.
    std::thread::sleep(Duration::from_millis(500));
    first.crash();

    // While no agent runs, nothing is raised (and nothing is lost: the
    // process was not traced). The new agent continues the numbering.
    let mut second = Picket::start(dir.path(), RULES, &cfg, &[&cg]);
    run_true(&cg, 2);
    wait_alerts(&mut second, &[4, 5]);
    wait_file(&file, &[1, 2, 3, 4, 5]);
    check_rule_service(&dir.path().join("api.sock"));
    let status = second.stop();
    assert!(status.success(), "clean shutdown: {status:?}");

    // A third start with nothing new delivers nothing twice.
    let third = Picket::start(dir.path(), RULES, &cfg, &[&cg]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(file_seqs(&file), vec![1, 2, 3, 4, 5]);
    assert!(third.stop().success());
    t.done();
}
