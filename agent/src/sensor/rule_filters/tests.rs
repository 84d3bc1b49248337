use std::{collections::BTreeSet, path::PathBuf};

use super::*;

/// A rule file with one rule per (id, events, condition).
fn rules(defs: &[(&str, &str, &str)]) -> RuleSet {
    rules_with(defs, "")
}

fn rules_with(defs: &[(&str, &str, &str)], extra: &str) -> RuleSet {
    let mut y = String::from(extra);
    y.push_str("rules:\n");
    for (id, events, cond) in defs {
        y.push_str(&format!(
            "  - id: {id}\n    name: {id}\n    severity: low\n    events: [{events}]\n    condition: '{cond}'\n    output: x\n    tags: [T1003]\n"
        ));
    }
    RuleSet::from_sources(vec![(PathBuf::from("r.yaml"), y)])
        .unwrap_or_else(|d| panic!("{}", crate::rules::diagnostics::render(&d)))
}

/// No configured paths, so the derived sets are exactly the rules' literals.
fn bare() -> FilterConfig {
    let mut base = SensorFilters::default();
    base.file_prefixes.clear();
    base.file_suffixes.clear();
    base.change_prefixes.clear();
    base.change_suffixes.clear();
    FilterConfig {
        base,
        keep_all_kinds: false,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn literals_of_eq_in_startswith_endswith_become_the_path_sets() {
    let r = rules_with(
        &[
            (
                "shadow",
                "file_open",
                r#"file.path == "/etc/shadow" and file.write"#,
            ),
            (
                "sudo",
                "file_open",
                r#"file.path in ["/etc/sudoers", "/etc/sudo.conf"] or file.path startswith "/etc/sudoers.d/""#,
            ),
            ("keys", "file_open", r#"file.path endswith ssh_keys"#),
            ("macro", "file_open", r#"kube_token and process.pid > 1"#),
        ],
        "lists:\n  ssh_keys: [/id_rsa, /authorized_keys]\nmacros:\n  kube_token: file.path startswith \"/var/run/secrets/\"\n",
    );
    let d = derive_filters(&r, &bare());
    assert_eq!(d.warnings, vec![]);
    assert!(!d.filters.all_paths);
    assert_eq!(
        d.filters.file_prefixes,
        set(&[
            "/etc/shadow",
            "/etc/sudo.conf",
            "/etc/sudoers",
            "/etc/sudoers.d/",
            "/var/run/secrets/"
        ])
    );
    assert_eq!(
        d.filters.file_suffixes,
        set(&["/authorized_keys", "/id_rsa"])
    );
    // Only `==` / `in` literals are exact (the priority lane).
    assert_eq!(
        d.filters.file_exact,
        set(&["/etc/shadow", "/etc/sudo.conf", "/etc/sudoers"])
    );
}

#[test]
fn configured_paths_are_kept_and_merged() {
    let r = rules(&[("shadow", "file_open", r#"file.path == "/etc/shadow""#)]);
    let mut cfg = bare();
    cfg.base.file_prefixes.insert("/etc/passwd".into());
    cfg.base.file_suffixes.insert("/release_agent".into());
    let d = derive_filters(&r, &cfg);
    assert_eq!(
        d.filters.file_prefixes,
        set(&["/etc/passwd", "/etc/shadow"])
    );
    assert_eq!(d.filters.file_suffixes, set(&["/release_agent"]));
}

#[test]
fn an_and_takes_its_tightest_path_part() {
    let r = rules(&[(
        "a",
        "file_open",
        r#"file.path startswith ["/etc/", "/root/"] and file.path endswith "/shadow" and not file.write"#,
    )]);
    let d = derive_filters(&r, &bare());
    assert_eq!(d.warnings, vec![]);
    assert_eq!(d.filters.file_prefixes, set(&[]));
    assert_eq!(d.filters.file_suffixes, set(&["/shadow"]));
}

#[test]
fn an_irreducible_rule_turns_path_filtering_off_and_names_itself() {
    let r = rules(&[
        ("shadow", "file_open", r#"file.path == "/etc/shadow""#),
        ("tmp", "file_open", r#"file.path contains "/tmp/""#),
        ("neg", "file_open", r#"file.path not startswith "/proc/""#),
        (
            "other",
            "file_open",
            r#"file.path == "/x" or process.pid == 1"#,
        ),
        ("notnot", "file_open", r#"not (file.path == "/etc/a")"#),
    ]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.all_paths);
    assert!(d.filters.file_prefixes.is_empty() && d.filters.file_suffixes.is_empty());
    let got: Vec<(Option<&str>, &str)> = d
        .warnings
        .iter()
        .map(|w| {
            assert_eq!(w.dimension, Dimension::FilePaths);
            (w.rule.as_deref(), w.reason.as_str())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Some("tmp"),
                "`file.path` is tested with `contains`, which the kernel cannot match"
            ),
            (
                Some("neg"),
                "`file.path` is tested with a negated operator (`!=`, `not ...`)"
            ),
            (
                Some("other"),
                "`process.pid` is tested without a `file.path` literal next to it"
            ),
            (
                Some("notnot"),
                "a negated test (`not ...`) can match any path"
            ),
        ]
    );
    assert_eq!(
        d.warnings[0].to_string(),
        "rule `tmp`: file opens are not filtered by path in the kernel: `file.path` is tested with `contains`, which the kernel cannot match"
    );
}

#[test]
fn disabled_rules_and_other_kinds_do_not_count() {
    let mut y = String::from("rules:\n");
    y.push_str("  - id: off\n    name: off\n    severity: low\n    enabled: false\n    events: [file_open]\n    condition: 'file.path contains \"x\"'\n    output: x\n    tags: [T1003]\n");
    y.push_str("  - id: exec\n    name: exec\n    severity: low\n    events: [exec]\n    condition: 'process.pid == 1'\n    output: x\n    tags: [T1059]\n");
    let r = RuleSet::from_sources(vec![(PathBuf::from("r.yaml"), y)]).expect("compile");
    let d = derive_filters(&r, &bare());
    assert_eq!(d.warnings, vec![]);
    assert!(!d.filters.all_paths);
    // Only exec is needed: every switchable kind is off, file_open included.
    assert_eq!(
        d.filters.disabled,
        SWITCHABLE_KINDS.iter().copied().collect::<BTreeSet<_>>()
    );
}

#[test]
fn kinds_follow_the_rules_unless_all_are_kept() {
    let r = rules(&[
        ("c", "connect, send", "network.peer.port == 4444"),
        ("m", "mount", r#"mount.fstype == "tmpfs""#),
    ]);
    let d = derive_filters(&r, &bare());
    let on: BTreeSet<EventKindName> = SWITCHABLE_KINDS
        .iter()
        .copied()
        .filter(|k| !d.filters.disabled.contains(k))
        .collect();
    assert_eq!(
        on,
        [
            EventKindName::Mount,
            EventKindName::Connect,
            EventKindName::Send
        ]
        .into()
    );
    let mut cfg = bare();
    cfg.keep_all_kinds = true;
    let d = derive_filters(&r, &cfg);
    assert!(d.filters.disabled.is_empty());
    d.filters.validate().expect("valid");
}

#[test]
fn a_kind_disabled_by_configuration_stays_off_with_a_warning() {
    let r = rules(&[("m", "mount", r#"mount.fstype == "tmpfs""#)]);
    let mut cfg = bare();
    cfg.keep_all_kinds = true;
    cfg.base.disabled.insert(EventKindName::Mount);
    let d = derive_filters(&r, &cfg);
    assert_eq!(d.filters.disabled, [EventKindName::Mount].into());
    assert_eq!(
        d.warnings,
        vec![FilterWarning {
            dimension: Dimension::Kinds,
            rule: Some("m".into()),
            reason: "`mount` events are disabled by configuration; the rule never sees them".into(),
        }]
    );
}

#[test]
fn literals_the_kernel_cannot_hold_fall_back() {
    let long = format!("/{}", "a".repeat(FILE_PATH_MAX));
    let r = rules(&[(
        "long",
        "file_open",
        &format!(r#"file.path startswith "{long}""#),
    )]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.all_paths);
    assert_eq!(
        d.warnings[0].reason,
        "a `file.path` literal is longer than 255 bytes (the kernel's key size)"
    );
    let r = rules(&[("empty", "file_open", r#"file.path startswith """#)]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.all_paths);
    assert_eq!(
        d.warnings[0].reason,
        "`file.path` is compared with an empty string, which matches every path"
    );
}

#[test]
fn too_many_paths_fall_back_without_a_rule_name() {
    let items: Vec<String> = (0..=MAX_PATHS).map(|i| format!("\"/p/{i}\"")).collect();
    let cond = format!("file.path in [{}]", items.join(", "));
    let r = rules(&[("many", "file_open", &cond)]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.all_paths);
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].rule, None);
    assert_eq!(
        d.warnings[0].reason,
        "1025 prefixes and 0 suffixes exceed the kernel's 1024 entries per set"
    );
}

#[test]
fn globs_give_their_literal_prefix_or_suffix() {
    let r = rules(&[(
        "g",
        "file_open",
        r#"file.path glob ["/etc/sudoers.d/*", "/home/*/.ssh/id_*", "**/authorized_keys", "/etc/ssh/ssh_host_?sa_key", "/etc/[ab]c"]"#,
    )]);
    let d = derive_filters(&r, &bare());
    assert_eq!(d.warnings, vec![]);
    assert_eq!(
        d.filters.file_prefixes,
        set(&["/etc/", "/etc/ssh/ssh_host_", "/etc/sudoers.d/", "/home/"])
    );
    assert_eq!(d.filters.file_suffixes, set(&["/authorized_keys"]));
    let r = rules(&[("g", "file_open", r#"file.path glob "{/a,/b}/*""#)]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.all_paths);
    assert_eq!(
        d.warnings[0].reason,
        "`file.path` is tested with the glob \"{/a,/b}/*\", which has no literal prefix or suffix"
    );
}

#[test]
fn the_shipped_rules_keep_path_filtering_on() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let r = RuleSet::load(&[dir]).expect("the shipped rules compile");
    let cfg = FilterConfig::default();
    let d = derive_filters(&r, &cfg);
    assert_eq!(
        d.warnings,
        vec![],
        "a shipped rule turned path filtering off"
    );
    assert!(!d.filters.all_paths);
    // The configured defaults stay, the rules add theirs.
    assert!(d.filters.file_prefixes.is_superset(&cfg.base.file_prefixes));
    for p in [
        "/etc/master.passwd",
        "/etc/security/opasswd",
        "/etc/kubernetes/pki/",
        // The file-write rules (rules/files.yaml).
        "/usr/local/bin/",
        "/etc/passwd",
        "/etc/sudoers.d/",
        "/etc/cron",
        "/etc/ld.so.preload",
        "/var/log/",
        "/root/.bash_history",
    ] {
        assert!(d.filters.file_prefixes.contains(p), "{p}");
    }
    assert!(d.filters.file_suffixes.contains("/core_pattern"));
    // file_change: the log/history, link and setuid/mknod rules keep the
    // change filter on, with exactly the rules' literals added to the
    // defaults (setuid chmods and mknods need none: the kernel reports them
    // whatever the path).
    assert!(!d.filters.change_all_paths);
    for p in [
        "/var/log/",
        "/root/.bash_history",
        "/home/",
        "/etc/passwd",
        "/root/.ssh/",
    ] {
        assert!(d.filters.change_prefixes.contains(p), "{p}");
    }
    assert!(d.filters.change_suffixes.contains("/.ssh/id_ecdsa"));
    // Only the change rules want these (no open of id_ecdsa is watched).
    assert!(!d.filters.file_suffixes.contains("/.ssh/id_ecdsa"));
}

#[test]
fn file_change_rules_reduce_over_both_paths_and_kernel_reported_ops() {
    let r = rules(&[
        (
            "links",
            "file_change",
            r#"file.op == "symlink" and file.target startswith "/etc/""#,
        ),
        ("suid", "file_change", "file.setuid or file.setgid"),
        (
            "blk",
            "file_change",
            r#"file.op == "mknod" and file.node_type == "block""#,
        ),
    ]);
    let d = derive_filters(&r, &bare());
    assert_eq!(d.warnings, vec![]);
    assert!(!d.filters.change_all_paths);
    assert_eq!(d.filters.change_prefixes, ["/etc/".to_string()].into());
    assert!(d.filters.change_suffixes.is_empty());
    // A chmod rule that is not about the setuid bits cannot be reduced.
    let r = rules(&[("any-chmod", "file_change", r#"file.op == "chmod""#)]);
    let d = derive_filters(&r, &bare());
    assert!(d.filters.change_all_paths);
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].dimension, Dimension::ChangePaths);
    // The open filter is not touched by a change rule.
    assert!(!d.filters.all_paths);
}

#[test]
fn alternatives_about_another_kind_do_not_widen_a_kind() {
    let r = rules(&[(
        "two-kinds",
        "file_open, file_change",
        r#"(event.kind == "file_open" and file.path startswith "/a/")
           or (event.kind == "file_change" and file.op == "chmod")"#,
    )]);
    let d = derive_filters(&r, &bare());
    assert!(!d.filters.all_paths, "{:?}", d.warnings);
    assert_eq!(d.filters.file_prefixes, ["/a/".to_string()].into());
    assert!(d.filters.change_all_paths);
}

/// Falco's `fd.name` is the normalized path: only tests pinning its last
/// segment are lowered, to suffixes plus the endings normalization drops.
#[test]
fn falco_fd_name_tests_lower_to_last_segment_suffixes() {
    let rs = crate::rules::RuleSet::from_sources(vec![(
        PathBuf::from("f.yaml"),
        "- rule: shadow\n  desc: d\n  condition: evt.type = openat and fd.name in (/etc/shadow, /etc/gshadow)\n  output: o\n  priority: WARNING\n\
         - rule: agent\n  desc: d\n  condition: evt.type = openat and fd.filename = release_agent\n  output: o\n  priority: WARNING\n\
         - rule: dir\n  desc: d\n  condition: evt.type = openat and fd.name startswith /etc/\n  output: o\n  priority: WARNING\n"
            .to_string(),
    )])
    .unwrap_or_else(|d| panic!("{}", crate::rules::diagnostics::render(&d)));
    let by_id = |id: &str| {
        let r = rs.rules().iter().find(|r| &*r.id == id).expect(id);
        reduce(&r.condition, Target::Open)
    };
    let shadow = by_id("falco-shadow").expect("reducible");
    assert_eq!(
        shadow.suffixes,
        set(&["/", "/.", "/..", "/shadow", "/gshadow"])
    );
    assert_eq!(shadow.prefixes, set(&["/etc/shadow", "/etc/gshadow"]));
    assert_eq!(shadow.exact, set(&["/etc/shadow", "/etc/gshadow"]));
    let agent = by_id("falco-agent").expect("reducible");
    assert_eq!(agent.suffixes, set(&["/", "/.", "/..", "release_agent"]));
    assert_eq!(agent.prefixes, set(&[]));
    let dir = by_id("falco-dir").expect_err("a prefix of the normal form");
    assert!(dir.contains("normalized path"), "{dir}");
}
