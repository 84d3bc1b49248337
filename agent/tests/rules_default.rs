//! The default rule set in `rules/`: it lints cleanly, every required rule
//! exists with a MITRE tag, and every rule's fixtures pass through the same
//! code path as `picket rules test rules/`.

use std::path::PathBuf;

use picket::rules::{RuleSet, cli};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

const REQUIRED: &[&str] = &[
    "exec-into-pod",
    "terminal-shell-in-container",
    "reverse-shell",
    "privilege-escalation-setuid",
    "dangerous-capability-in-container",
    "sensitive-mount",
    "namespace-escape",
    "release-agent-write",
    "read-sensitive-file",
    "drop-and-execute",
    "package-manager-in-container",
    "ptrace-attach",
    "kernel-module-load",
    "bpf-load-by-unexpected-process",
    "network-tool-in-container",
    "egress-to-metadata-service",
    "egress-to-mining-pool",
    "k8s-api-from-unexpected-pod",
    "anomalous-egress",
];

#[test]
fn default_rules_lint_without_errors_or_warnings() {
    let set = RuleSet::load(&[rules_dir()])
        .unwrap_or_else(|d| panic!("{}", picket::rules::diagnostics::render(&d)));
    assert!(
        set.warnings().is_empty(),
        "{}",
        picket::rules::diagnostics::render(set.warnings())
    );
    for id in REQUIRED {
        let r = set.get(id).unwrap_or_else(|| panic!("missing rule {id}"));
        assert!(r.enabled, "{id} disabled");
        assert!(
            r.tags.iter().any(|t| picket::rules::parse::is_mitre(t)),
            "{id} has no MITRE tag"
        );
    }
    let mut out = Vec::new();
    assert!(cli::lint(
        &cli::LintArgs {
            paths: vec![rules_dir()],
            deny_warnings: true,
            falco_unsupported: Default::default(),
        },
        &mut out
    ));
}

#[test]
fn every_default_rule_passes_its_fixtures() {
    let args = cli::TestArgs {
        paths: vec![rules_dir()],
        fixtures: Vec::new(),
        rules: Vec::new(),
        require_fixtures: true,
        update: false,
    };
    let mut out = Vec::new();
    let ok = cli::test(&args, &mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(ok, "{text}");
    let set = RuleSet::load(&[rules_dir()]).expect("load");
    let passed = text.lines().filter(|l| l.starts_with("PASS ")).count();
    assert_eq!(passed, set.rules().len(), "{text}");
    assert!(
        text.ends_with(&format!("{passed} passed, 0 failed, 0 without fixtures\n")),
        "{text}"
    );
}
