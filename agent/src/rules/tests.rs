//! Unit tests of the compiler (diagnostics with exact positions), every
//! operator, exceptions and overrides, dedup, rate limits and shadow mode.

use std::{path::PathBuf, sync::Arc};

use jiff::Timestamp;

use super::{
    Diagnostic, Engine, EngineOptions, RuleSet, RulesMetrics, Suppression,
    metrics::{ExceptionLabel, RuleLabel, SuppressedLabel},
};
use crate::model::*;

fn compile(files: &[(&str, &str)]) -> Result<RuleSet, Vec<Diagnostic>> {
    RuleSet::from_sources(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    )
}

fn errors(src: &str) -> Vec<String> {
    match compile(&[("r.yaml", src)]) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect(),
    }
}

/// One rule with the given events and condition.
fn rule(events: &str, cond: &str) -> String {
    format!(
        "rules:\n  - id: t\n    name: T\n    severity: high\n    events: [{events}]\n    condition: {cond}\n    output: \"hit {{process.executable.name}}\"\n    tags: [T1059]\n"
    )
}

fn engine(src: &str) -> (Engine, RulesMetrics) {
    let set = compile(&[("r.yaml", src)])
        .unwrap_or_else(|d| panic!("{}", super::diagnostics::render(&d)));
    let m = RulesMetrics::unregistered();
    let e = Engine::with_shared(
        Arc::new(set),
        EngineOptions {
            metrics: m.clone(),
            ..Default::default()
        },
    );
    (e, m)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("ts")
}

fn exec(name: &str) -> Event {
    let mut ev = Event::new(EventKindName::Exec, at(0));
    ev.process.executable = Executable {
        path: format!("/usr/bin/{name}"),
        name: name.into(),
        ..Default::default()
    };
    ev.process.command_args = vec![name.into(), "--flag".into(), "/etc/passwd".into()];
    ev.process.pid = 100;
    ev.process.user.id = 1000;
    ev.container = Some(Container {
        id: "c1".into(),
        ..Default::default()
    });
    ev.k8s = Some(K8s {
        namespace: Some(K8sNamespace {
            name: "shop".into(),
            ..Default::default()
        }),
        pod: Pod {
            uid: "u1".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        },
        ..Default::default()
    });
    ev
}

fn connect(addr: &str, port: u16) -> Event {
    let mut ev = exec("curl");
    ev.event.kind = EventKindName::Connect;
    ev.network = Some(Network {
        transport: "tcp".into(),
        r#type: "ipv4".into(),
        peer: Some(Endpoint {
            address: addr.into(),
            port,
        }),
        local: None,
    });
    ev
}

fn fires(cond: &str, ev: &Event) -> bool {
    let kind = ev.kind().as_str();
    let (e, _) = engine(&rule(kind, cond));
    !e.evaluate(ev).is_empty()
}

#[test]
fn every_operator() {
    let ev = exec("bash");
    let cases: &[(&str, bool)] = &[
        (r#"process.executable.name == "bash""#, true),
        (r#"process.executable.name != "bash""#, false),
        (r#"process.executable.name in ["sh", "bash"]"#, true),
        (r#"process.executable.name not in ["sh", "zsh"]"#, true),
        (r#"process.executable.path startswith "/usr/""#, true),
        (r#"process.executable.path endswith ["/sh", "/bash"]"#, true),
        (r#"process.executable.path contains "bin/ba""#, true),
        (r#"process.executable.path not contains "sbin""#, true),
        (r#"process.executable.path glob "/usr/*/bash""#, true),
        (r#"process.executable.path glob "/*/bash""#, false),
        (r#"process.executable.path glob "/**/bash""#, true),
        (
            r#"process.executable.path matches "^/usr/bin/(ba|z)sh$""#,
            true,
        ),
        (r#"process.executable.path matches "^/bin/""#, false),
        ("process.pid == 100", true),
        ("process.pid != 100", false),
        (
            "process.pid < 101 and process.pid <= 100 and process.pid > 99 and process.pid >= 100",
            true,
        ),
        ("process.pid > 100", false),
        ("process.pid in [1, 2, 100]", true),
        ("process.user.id == 0x3e8", true),
        ("container.id exists", true),
        ("not thread.id exists", true),
        ("process.in_init_tree == false", false),
        ("not process.in_init_tree == true", true),
        ("process.interactive", false),
        ("not process.interactive", true),
        (r#"process.stdio.stdin == "unknown""#, true),
        (r#"process.command_args == "/etc/passwd""#, true),
        (r#"process.command_args contains "flag""#, true),
        (r#"process.command_args startswith "--""#, true),
        (r#"process.command_args != "x""#, true),
        (r#"process.command_args not contains "flag""#, false),
        (r#"k8s.pod.labels.app == "web""#, true),
        (r#"k8s.pod.labels.tier == "web""#, false),
        (r#"k8s.namespace.name == "shop" and (false or true)"#, true),
        (r#"event.kind == "exec""#, true),
        ("true and not false", true),
    ];
    for (cond, want) in cases {
        assert_eq!(fires(cond, &ev), *want, "{cond}");
    }
}

#[test]
fn cidr_and_absent_fields() {
    let ev = connect("10.1.2.3", 443);
    assert!(fires(r#"network.peer.address cidr "10.0.0.0/8""#, &ev));
    assert!(fires(
        r#"network.peer.address cidr ["192.168.0.0/16", "10.1.2.3"]"#,
        &ev
    ));
    assert!(!fires(r#"network.peer.address cidr "10.1.3.0/24""#, &ev));
    assert!(fires(
        r#"network.peer.address cidr "10.1.2.0/24""#,
        &connect("::ffff:10.1.2.9", 1)
    ));
    assert!(fires(
        r#"network.peer.address cidr "fd00:ec2::/64""#,
        &connect("fd00:ec2::254", 80)
    ));
    assert!(!fires(
        r#"network.peer.address cidr "0.0.0.0/0""#,
        &connect("not-an-ip", 80)
    ));
    // Absent sections: every comparison is false, negated ones too.
    let mut ev = exec("bash");
    ev.container = None;
    assert!(!fires(r#"container.id == "c1""#, &ev));
    assert!(!fires(r#"container.id != "c1""#, &ev));
    assert!(!fires(r#"container.id not in ["x"]"#, &ev));
    assert!(fires(r#"not container.id == "c1""#, &ev));
    assert!(!fires("container.id exists", &ev));
}

#[test]
fn ancestors_are_a_list_field() {
    let mut ev = exec("sh");
    ev.process.ancestors = vec![
        std::sync::Arc::new(Ancestor {
            exec_id: "a".into(),
            pid: 10,
            executable: Executable {
                path: "/usr/sbin/sshd".into(),
                name: "sshd".into(),
                ..Default::default()
            },
            command_line: String::new(),
        }),
        std::sync::Arc::new(Ancestor {
            exec_id: "b".into(),
            pid: 1,
            executable: Executable {
                path: "/sbin/init".into(),
                name: "init".into(),
                ..Default::default()
            },
            command_line: String::new(),
        }),
    ];
    assert!(fires(r#"process.ancestors.executable.name == "sshd""#, &ev));
    assert!(fires("process.ancestors.pid == 1", &ev));
    assert!(fires("process.ancestors.pid > 5", &ev));
    assert!(!fires(
        r#"process.ancestors.executable.path startswith "/opt/""#,
        &ev
    ));
}

#[test]
fn lists_and_macros() {
    let src = format!(
        "lists:\n  shells: [bash, sh]\n  ports: [22, 443]\nmacros:\n  shell: process.executable.name in shells\n  both: shell and container.id exists\n{}",
        rule("exec", "both and process.pid not in ports")
    );
    let (e, _) = engine(&src);
    assert_eq!(e.evaluate(&exec("bash")).len(), 1);
    assert_eq!(e.evaluate(&exec("zsh")).len(), 0);
}

#[test]
fn alert_contents() {
    let (e, _) = engine(&rule("exec", r#"process.executable.name == "bash""#));
    let ev = exec("bash");
    let alerts = e.evaluate(&ev);
    assert_eq!(
        alerts,
        vec![Alert {
            seq: 0,
            time: ev.time,
            severity: Severity::High,
            rule: RuleRef {
                id: "t".into(),
                name: "T".into(),
                tags: vec!["T1059".into()]
            },
            message: "hit bash".into(),
            event: ev.clone(),
        }]
    );
}

#[test]
fn every_matching_rule_fires_and_rules_are_indexed_by_kind() {
    let src = "rules:\n\
  - {id: a, name: A, severity: low, events: [exec], condition: container.id exists, output: a, tags: [T1059]}\n\
  - {id: b, name: B, severity: low, events: [exec, connect], condition: container.id exists, output: b, tags: [T1059]}\n\
  - {id: c, name: C, severity: low, events: [connect], condition: container.id exists, output: c, tags: [T1059]}\n\
  - {id: d, name: D, severity: low, events: [exec], condition: container.id exists, output: d, tags: [T1059], enabled: false}\n";
    let (e, _) = engine(src);
    let ids = |ev: &Event| {
        e.evaluate(ev)
            .into_iter()
            .map(|a| a.rule.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&exec("x")), vec!["a", "b"]);
    assert_eq!(ids(&connect("1.1.1.1", 1)), vec!["b", "c"]);
}

#[test]
fn exceptions_cancel_matches_and_are_counted() {
    let src = format!(
        "{}    exceptions:\n      - name: ci-shells\n        when:\n          - {{field: k8s.namespace.name, operator: in, values: [ci]}}\n          - {{field: process.executable.name, operator: \"==\", values: [bash]}}\n      - name: not-root\n        field: process.user.id\n        operator: \">\"\n        values: [5000]\n      - name: no-container\n        field: container.id\n        operator: not exists\n",
        rule("exec", "true")
    );
    let (e, m) = engine(&src);
    let mut ev = exec("bash");
    assert_eq!(e.evaluate(&ev).len(), 1);
    ev.k8s
        .as_mut()
        .and_then(|k| k.namespace.as_mut())
        .expect("ns")
        .name = "ci".into();
    let d = e.evaluate_detailed(&ev);
    assert!(d.alerts.is_empty());
    assert_eq!(d.excepted, vec![(Arc::from("t"), "ci-shells".to_string())]);
    ev.process.user.id = 6000;
    ev.k8s = None;
    assert!(e.evaluate(&ev).is_empty());
    ev.process.user.id = 0;
    ev.container = None;
    assert!(e.evaluate(&ev).is_empty());
    let hits = |x: &str| {
        m.exceptions
            .get_or_create(&ExceptionLabel {
                rule: "t".into(),
                exception: x.into(),
            })
            .get()
    };
    assert_eq!(
        (hits("ci-shells"), hits("not-root"), hits("no-container")),
        (1, 1, 1)
    );
    assert_eq!(
        m.matches
            .get_or_create(&RuleLabel { rule: "t".into() })
            .get(),
        1
    );
}

#[test]
fn override_files_add_scoped_exceptions_and_extend_lists() {
    let base = format!(
        "lists:\n  shells: [bash]\n{}",
        rule("exec", "process.executable.name in shells")
    );
    let team = "overrides:\n  - rule: t\n    owner: team-ci\n    namespaces: [ci]\n    exceptions:\n      - {name: ci-builds, field: process.executable.name, operator: in, values: [bash, sh]}\n  - list: shells\n    append: [sh]\n";
    let set = compile(&[("base.yaml", &base), ("team.yaml", team)]).expect("compile");
    let e = Engine::with_shared(
        Arc::new(set),
        EngineOptions {
            metrics: RulesMetrics::unregistered(),
            ..Default::default()
        },
    );
    assert_eq!(e.evaluate(&exec("sh")).len(), 1, "appended list item");
    let mut ci = exec("sh");
    ci.k8s
        .as_mut()
        .and_then(|k| k.namespace.as_mut())
        .expect("ns")
        .name = "ci".into();
    assert!(e.evaluate(&ci).is_empty(), "scoped exception");
    // Unknown rule in an override: error with a hint.
    let bad = "overrides:\n  - rule: tt\n    exceptions:\n      - {name: x, field: process.pid, operator: \"==\", values: [1]}\n";
    let err = compile(&[("base.yaml", &base), ("bad.yaml", bad)]).unwrap_err();
    assert_eq!(err[0].message, "override of unknown rule `tt`");
    assert_eq!((err[0].line, err[0].column), (2, 11));
    assert_eq!(err[0].hint.as_deref(), Some("did you mean `t`?"));
}

#[test]
fn dedup_by_key_within_window() {
    let src = format!(
        "{}    dedup: {{key: [container.id], window: 60s}}\n",
        rule("exec", "true")
    );
    let (e, m) = engine(&src);
    let mut ev = exec("a");
    assert_eq!(e.evaluate(&ev).len(), 1);
    ev.time = at(30);
    let d = e.evaluate_detailed(&ev);
    assert_eq!(d.suppressed, vec![(Arc::from("t"), Suppression::Dedup)]);
    ev.container.as_mut().expect("c").id = "c2".into();
    assert_eq!(e.evaluate(&ev).len(), 1, "other key");
    ev.container.as_mut().expect("c").id = "c1".into();
    ev.time = at(60);
    assert_eq!(e.evaluate(&ev).len(), 1, "window over");
    let sup = m
        .suppressed
        .get_or_create(&SuppressedLabel {
            rule: "t".into(),
            reason: "dedup",
        })
        .get();
    assert_eq!(sup, 1);
}

#[test]
fn rate_limit_per_window() {
    let src = format!(
        "{}    rate_limit: {{max: 2, per: 1m}}\n",
        rule("exec", "true")
    );
    let (e, m) = engine(&src);
    let mut ev = exec("a");
    let mut fired = Vec::new();
    for s in [0, 1, 2, 3, 59, 60, 61, 62] {
        ev.time = at(s);
        fired.push(e.evaluate(&ev).len());
    }
    assert_eq!(fired, vec![1, 1, 0, 0, 0, 1, 1, 0]);
    let sup = m
        .suppressed
        .get_or_create(&SuppressedLabel {
            rule: "t".into(),
            reason: "rate_limit",
        })
        .get();
    assert_eq!(sup, 4);
}

#[test]
fn shadow_mode_counts_but_never_alerts() {
    let src = format!("{}    mode: shadow\n", rule("exec", "true"));
    let (e, m) = engine(&src);
    let d = e.evaluate_detailed(&exec("a"));
    assert!(d.alerts.is_empty());
    assert_eq!(d.shadow, vec![Arc::from("t")]);
    assert_eq!(
        m.shadow_matches
            .get_or_create(&RuleLabel { rule: "t".into() })
            .get(),
        1
    );
    assert_eq!(
        m.matches
            .get_or_create(&RuleLabel { rule: "t".into() })
            .get(),
        0
    );
}

#[test]
fn unknown_field_error_has_position_and_hint() {
    let src = rule("exec", "container.id exists and proces.pid == 1");
    let d = compile(&[("r.yaml", &src)]).unwrap_err();
    let e = &d[0];
    let want = concat!(
        "r.yaml:6:40: error [rule t, condition]: unknown field `proces.pid`\n",
        "        condition: container.id exists and proces.pid == 1\n",
        "                                           ^\n",
        "  hint: did you mean `process.pid`?"
    );
    assert_eq!(e.to_string(), want);
    assert_eq!(
        (e.line, e.column, e.rule.as_deref(), e.field.as_deref()),
        (6, 40, Some("t"), Some("condition"))
    );
}

#[test]
fn errors_inside_block_scalars_point_at_the_right_line() {
    let src = "rules:\n  - id: t\n    name: T\n    severity: high\n    events: [exec]\n    condition: |\n      container.id exists\n        and process.pid == \"1\"\n    output: x\n";
    assert_eq!(
        errors(src),
        vec!["8:28: type mismatch: `process.pid` is an integer field, but \"1\" is a string"]
    );
}

#[test]
fn schema_errors() {
    let src = "rules:\n  - id: Bad_Id\n    name: T\n    sevrity: high\n    severity: urgent\n    events: [exec, exce]\n    condition: \"true\"\n    output: x\n    tags: [T12]\n    actions: [alert, kill-proces]\n    mode: dry\n    dedup: {key: [container.id], window: 10}\n";
    assert_eq!(
        errors(src),
        vec![
            "2:9: rule id `Bad_Id` is not kebab-case",
            "4:5: unknown key `sevrity`",
            "5:15: unknown severity `urgent`",
            "6:20: unknown event kind `exce`",
            "9:12: malformed MITRE ATT&CK id `T12`",
            "10:22: unknown action `kill-proces`",
            "11:11: unknown mode `dry`",
            "12:42: expected a duration such as `30s`, `5m`, `1h` or `500ms`",
        ]
    );
    let d = compile(&[("r.yaml", src)]).unwrap_err();
    let hint = |m: &str| {
        d.iter()
            .find(|x| x.message.starts_with(m))
            .and_then(|x| x.hint.clone())
    };
    assert_eq!(
        hint("unknown key").as_deref(),
        Some("did you mean `severity`?")
    );
    assert_eq!(
        hint("unknown event kind").as_deref(),
        Some("did you mean `exec`?")
    );
    assert_eq!(
        hint("unknown action").as_deref(),
        Some("did you mean `kill-process`?")
    );
}

#[test]
fn type_and_name_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "exec",
            r#"process.pid == "1""#,
            "6:31: type mismatch: `process.pid` is an integer field, but \"1\" is a string",
        ),
        (
            "exec",
            "process.executable.name == 1",
            "6:43: type mismatch: `process.executable.name` is a string field, but 1 is an integer",
        ),
        (
            "exec",
            r#"process.stdio.stdin == "sockt""#,
            "6:39: `process.stdio.stdin` has no value \"sockt\"",
        ),
        (
            "exec",
            "process.executable.name > 3",
            "6:40: operator `>` does not apply to `process.executable.name` (string field)",
        ),
        (
            "exec",
            "network.peer.port == 22",
            "6:16: field `network.peer.port` is never set for events [exec]",
        ),
        (
            "exec",
            "process.pid in shellz",
            "6:31: unknown list `shellz`",
        ),
        (
            "exec",
            "in_containr",
            "6:16: unknown macro or field `in_containr`",
        ),
        (
            "exec",
            "process.pid",
            "6:16: `process.pid` is an integer field, not a condition",
        ),
        (
            "exec",
            r#"process.executable.path matches "(""#,
            "6:48: invalid regular expression \"(\": error: unclosed group",
        ),
        (
            "connect",
            r#"network.peer.address cidr "10.0.0.0/33""#,
            "6:42: invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            "exec",
            "process.pid == 1 and",
            "6:36: unexpected end of condition; expected a condition",
        ),
        ("exec", "process.pid = 1", "6:28: `=` is not an operator"),
        ("exec", r#"process.pid in "1""#, "6:28: `in` needs a list"),
        (
            "exec",
            "process.executable.name == [1]",
            "6:40: `==` compares with one value, not a list",
        ),
    ];
    for (kind, cond, want) in cases {
        let got = errors(&rule(kind, cond));
        assert_eq!(got, vec![want.to_string()], "{cond}");
    }
}

#[test]
fn template_placeholders_are_checked() {
    let src = "rules:\n  - id: t\n    name: T\n    severity: high\n    events: [exec]\n    condition: \"true\"\n    output: \"{process.pid} {{literal}} {proces.name}\"\n    tags: [T1059]\n";
    let d = compile(&[("r.yaml", src)]).unwrap_err();
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (7, 41, "unknown field `proces.name` in output")
    );
    let ok = src.replace(" {proces.name}", "");
    let (e, _) = engine(&ok);
    assert_eq!(e.evaluate(&exec("a"))[0].message, "100 {literal}");
}

#[test]
fn duplicates_and_cycles() {
    let src = format!(
        "{}{}",
        rule("exec", "true"),
        rule("exec", "true").replace("rules:\n", "")
    );
    assert_eq!(
        errors(&src),
        vec!["9:9: duplicate rule id `t` (first defined in r.yaml:2)"]
    );
    let cyc = format!("macros:\n  a: b\n  b: a\n{}", rule("exec", "a"));
    let got = errors(&cyc);
    assert_eq!(got, vec!["3:6: macro `a` uses itself (a -> b -> a)"]);
}

#[test]
fn unused_lists_warn_and_yaml_errors_are_located() {
    let set = compile(&[(
        "r.yaml",
        &format!("lists:\n  unused: [a]\n{}", rule("exec", "true")),
    )])
    .expect("ok");
    assert_eq!(set.warnings().len(), 1);
    assert_eq!(
        set.warnings()[0].message,
        "`unused` is defined but never used"
    );
    let e = errors("rules: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("2:1: invalid YAML"), "{e:?}");
}

#[test]
fn fixture_runner_reports_differences() {
    use super::{cli, fixtures};
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yaml"),
        rule("exec", r#"process.executable.name == "bash""#),
    )
    .expect("write");
    let fx = dir.path().join("fixtures/t");
    std::fs::create_dir_all(&fx).expect("mkdir");
    let line = |name: &str| serde_json::to_string(&exec(name)).expect("json") + "\n";
    std::fs::write(fx.join("positive.jsonl"), line("bash") + &line("zsh")).expect("write");
    std::fs::write(fx.join("negative.jsonl"), line("bash")).expect("write");
    std::fs::write(
        fx.join("expected.jsonl"),
        "{\"severity\":\"high\",\"message\":\"hit sh\"}\n",
    )
    .expect("write");
    let args = cli::TestArgs {
        paths: vec![dir.path().to_path_buf()],
        fixtures: Vec::new(),
        rules: Vec::new(),
        require_fixtures: true,
        update: false,
    };
    let mut out = Vec::new();
    assert!(!cli::test(&args, &mut out));
    let text = String::from_utf8(out).expect("utf8");
    assert_eq!(
        text,
        concat!(
            "FAIL t\n",
            "  positive.jsonl:1: alert differs\n",
            "    expected: high \"hit sh\"\n",
            "    actual:   high \"hit bash\"\n",
            "  positive.jsonl:2: expected an alert from `t`, got none\n",
            "  expected.jsonl has 1 lines for 2 positive events\n",
            "  negative.jsonl:1: unexpected alert from `t`: hit bash\n",
            "0 passed, 1 failed, 0 without fixtures\n"
        )
    );
    // Fixtures must be events in the `picket run --events` schema.
    std::fs::write(
        fx.join("negative.jsonl"),
        "{\"time\":\"2026-01-01T00:00:00Z\",\"event\":{\"kind\":\"exec\"},\"bogus\":1}\n",
    )
    .expect("write");
    let set = std::sync::Arc::new(RuleSet::load(&[dir.path()]).expect("load"));
    let report = fixtures::run(set, &fixtures::fixture_dirs(&[dir.path()]), &[], false);
    assert!(
        report.rules[0].failures[0]
            .contains("negative.jsonl:1: invalid event: unknown field `bogus`"),
        "{:?}",
        report.rules[0].failures
    );
}

#[test]
fn lint_cli_fails_on_errors() {
    use super::cli;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("r.yaml"), rule("exec", "proces.pid == 1")).expect("write");
    let mut out = Vec::new();
    assert!(!cli::lint(
        &cli::LintArgs {
            paths: vec![dir.path().to_path_buf()],
            deny_warnings: false,
            falco_unsupported: Default::default(),
        },
        &mut out
    ));
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains("r.yaml:6:16: error [rule t, condition]: unknown field `proces.pid`"),
        "{text}"
    );
    assert!(text.ends_with("1 error(s), 0 warning(s)\n"), "{text}");
}

#[test]
fn deep_macro_chains_are_rejected() {
    let mut src = String::from("macros:\n  m0: container.id exists\n");
    for i in 1..40 {
        src.push_str(&format!("  m{i}: m{}\n", i - 1));
    }
    src.push_str(&rule("exec", "m39"));
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].ends_with("macros nested more than 32 deep"), "{e:?}");
}

const SCAN: &str = r#"
rules:
  - id: scan
    name: Scan
    severity: medium
    events: [connect]
    condition: network.peer.port exists
    aggregate:
      by: [process.pid]
      distinct: [network.peer.port, network.peer.address]
      threshold: 3
      window: 10s
      max_groups: 2
    output: "{aggregate.count} {aggregate.field}: {aggregate.values}"
    tags: [T1046]
"#;

fn connect_from(pid: u32, addr: &str, port: u16, secs: i64) -> Event {
    let mut ev = connect(addr, port);
    ev.process.pid = pid;
    ev.time = at(secs);
    ev
}

#[test]
fn aggregate_fires_on_distinct_values_within_the_window() {
    let (e, m) = engine(SCAN);
    let hits =
        |ev: Event| -> Vec<String> { e.evaluate(&ev).into_iter().map(|a| a.message).collect() };
    // Repeated connections to one port and host never count twice.
    for _ in 0..5 {
        assert!(hits(connect_from(1, "10.0.0.1", 80, 0)).is_empty());
    }
    assert!(hits(connect_from(1, "10.0.0.1", 81, 1)).is_empty());
    // Another process is another group.
    assert!(hits(connect_from(2, "10.0.0.1", 82, 1)).is_empty());
    assert_eq!(
        hits(connect_from(1, "10.0.0.1", 82, 2)),
        ["3 network.peer.port: 80, 81, 82"]
    );
    // The group starts over after a hit.
    assert!(hits(connect_from(1, "10.0.0.1", 83, 3)).is_empty());
    // Values older than the window are forgotten: 83 (t=3) has expired
    // at t=14, so 84, 85, 86 are the next three.
    assert!(hits(connect_from(1, "10.0.0.1", 84, 14)).is_empty());
    assert!(hits(connect_from(1, "10.0.0.1", 85, 15)).is_empty());
    assert_eq!(
        hits(connect_from(1, "10.0.0.1", 86, 16)),
        ["3 network.peer.port: 84, 85, 86"]
    );
    // Distinct hosts count on their own.
    assert!(hits(connect_from(3, "10.0.0.1", 443, 20)).is_empty());
    assert!(hits(connect_from(3, "10.0.0.2", 443, 20)).is_empty());
    assert_eq!(
        hits(connect_from(3, "10.0.0.3", 443, 20)),
        ["3 network.peer.address: 10.0.0.1, 10.0.0.2, 10.0.0.3"]
    );
    let l = RuleLabel {
        rule: "scan".into(),
    };
    // Three groups in two slots, but pid 2's group (last seen at t=1) had
    // expired when pid 3 arrived at t=20: dropping it is not an eviction.
    assert_eq!(m.state_evictions.get_or_create(&l).get(), 0);
}

#[test]
fn aggregate_evicts_the_oldest_live_group_and_counts_it() {
    let (e, m) = engine(SCAN);
    let l = RuleLabel {
        rule: "scan".into(),
    };
    e.evaluate(&connect_from(1, "10.0.0.1", 80, 0));
    e.evaluate(&connect_from(1, "10.0.0.1", 81, 0));
    e.evaluate(&connect_from(2, "10.0.0.1", 80, 1));
    // A third live group: pid 1's (the least recently updated) goes.
    e.evaluate(&connect_from(3, "10.0.0.1", 80, 2));
    assert_eq!(m.state_evictions.get_or_create(&l).get(), 1);
    // pid 1 starts from nothing: two more ports do not reach 3.
    assert!(e.evaluate(&connect_from(1, "10.0.0.1", 82, 3)).is_empty());
    assert_eq!(m.state_evictions.get_or_create(&l).get(), 2);
    assert!(e.evaluate(&connect_from(1, "10.0.0.1", 83, 3)).is_empty());
    assert_eq!(e.evaluate(&connect_from(1, "10.0.0.1", 84, 3)).len(), 1);
}

const SEQUENCE: &str = r#"
rules:
  - id: written
    name: Written by a downloader
    severity: info
    mode: shadow
    events: [file_open]
    condition: file.write and process.executable.name == "curl" and file.path startswith "/tmp/"
    output: "{file.path}"
    tags: [T1105]
  - id: run
    name: Downloaded file run
    severity: high
    events: [exec]
    condition: process.executable.path exists
    after:
      rule: written
      key: [file.path]
      match: process.executable.path
      within: 1m
      max_entries: 2
    output: "{process.executable.path} written by {after.process} ({after.command_line}, {after.kind}, rule {after.rule}, key {after.key})"
    tags: [T1105]
"#;

fn write_by(exe: &str, path: &str, secs: i64) -> Event {
    let mut ev = exec(exe);
    ev.event.kind = EventKindName::FileOpen;
    ev.time = at(secs);
    ev.process.command_line = format!("{exe} -o {path}");
    ev.file = Some(FileAccess {
        path: path.into(),
        write: true,
        create: true,
        ..Default::default()
    });
    ev
}

fn run_path(path: &str, secs: i64) -> Event {
    let mut ev = exec("x");
    ev.process.executable.path = path.into();
    ev.time = at(secs);
    ev
}

#[test]
fn after_matches_the_key_of_an_earlier_match_within_the_window() {
    let (e, m) = engine(SEQUENCE);
    // Executing before anything was written, or a file curl did not write.
    assert!(e.evaluate(&run_path("/tmp/a", 0)).is_empty());
    let shadow = e.evaluate_detailed(&write_by("curl", "/tmp/a", 1));
    assert!(shadow.alerts.is_empty());
    assert_eq!(shadow.shadow.len(), 1, "the producer is in shadow mode");
    assert!(e.evaluate(&write_by("cp", "/tmp/b", 1)).is_empty());
    assert!(e.evaluate(&run_path("/tmp/b", 2)).is_empty());
    // An exec stamped before the write does not follow it.
    assert!(e.evaluate(&run_path("/tmp/a", 0)).is_empty());
    let a = e.evaluate(&run_path("/tmp/a", 2));
    assert_eq!(
        a.iter().map(|a| a.message.as_str()).collect::<Vec<_>>(),
        ["/tmp/a written by /usr/bin/curl (curl -o /tmp/a, file_open, rule written, key /tmp/a)"]
    );
    // Out of the window.
    assert!(e.evaluate(&run_path("/tmp/a", 62)).is_empty());
    // The table holds two keys: a third live one evicts the oldest (counted).
    e.evaluate(&write_by("curl", "/tmp/c", 70));
    e.evaluate(&write_by("curl", "/tmp/d", 71));
    let l = RuleLabel {
        rule: "written".into(),
    };
    assert_eq!(
        m.state_evictions.get_or_create(&l).get(),
        0,
        "/tmp/a had expired"
    );
    e.evaluate(&write_by("curl", "/tmp/e", 72));
    assert_eq!(m.state_evictions.get_or_create(&l).get(), 1);
    assert!(e.evaluate(&run_path("/tmp/c", 73)).is_empty(), "evicted");
    assert_eq!(e.evaluate(&run_path("/tmp/d", 73)).len(), 1);
    assert_eq!(e.evaluate(&run_path("/tmp/e", 73)).len(), 1);
}

#[test]
fn stateful_blocks_are_checked() {
    let base = "rules:\n  - id: t\n    name: T\n    severity: high\n    events: [exec]\n    condition: \"true\"\n    output: x\n    tags: [T1059]\n";
    assert_eq!(
        errors(&format!(
            "{base}    after: {{rule: nope, key: [file.path], match: process.executable.path, within: 1m}}\n"
        )),
        ["9:19: `after` names an unknown rule `nope`"]
    );
    assert_eq!(
        errors(&format!(
            "{base}    aggregate: {{distinct: [network.peer.port], threshold: 5, window: 10s}}\n"
        )),
        ["9:28: field `network.peer.port` is never set for events [exec]"]
    );
    assert_eq!(
        errors(&format!(
            "{base}    aggregate: {{distinct: [process.pid], threshold: 1, window: 10s}}\n"
        ))
        .len(),
        1,
        "threshold below 2"
    );
    assert_eq!(
        errors(&format!("{base}    output2: x\n")).len(),
        1,
        "unknown keys are still errors"
    );
    assert!(
        errors(&rule("exec", "\"true\"").replace(
            "output: \"hit {process.executable.name}\"",
            "output: \"{aggregate.count}\""
        ))
        .len()
            == 1,
        "aggregate extras only in aggregate rules"
    );
}
