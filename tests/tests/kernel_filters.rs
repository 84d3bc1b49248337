//! Real-kernel tests of the in-kernel filters derived from the rules
//! (`picket::sensor::rule_filters`): opens no rule can match cost no
//! ring-buffer traffic, kinds no rule needs are off, a rule reload moves the
//! filter atomically, and an irreducible rule turns path filtering off.
//! Each test runs its actions in its own cgroup. Root only; they fail
//! (never skip) elsewhere.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

use picket::{
    agent::{Agent, AgentConfig},
    model::{Event, EventKindName},
    rules::{Engine, RuleSet, RuleWatcher},
    sensor::{
        filter_maps::FilterHandle,
        filters::{Rate, SensorFilters},
        rule_filters::{self, FilterConfig},
    },
};
use picket_tests::{
    cgroup::TestCgroup,
    kernel::{drain, start_agent, wait_for},
    kernel_test,
};

const WAIT: Duration = Duration::from_secs(10);
const PY: &str = "/usr/bin/python3";
/// Python's os.open adds O_CLOEXEC; masked out of the compared flags.
const O_CLOEXEC: u32 = 0o2000000;

fn run_in(cg: &TestCgroup, script: &str) -> Output {
    let mut cmd = Command::new(PY);
    cmd.args(["-c", script]);
    cg.enter(&mut cmd);
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn rule_yaml(id: &str, cond: &str) -> String {
    format!(
        "rules:\n  - id: {id}\n    name: {id}\n    severity: high\n    events: [file_open]\n    condition: '{cond}'\n    output: '{id} %file.path'\n    tags: [T1003.008]\n"
    )
}

fn compile(yaml: &str) -> RuleSet {
    RuleSet::from_sources(vec![(PathBuf::from("r.yaml"), yaml.to_string())])
        .unwrap_or_else(|d| panic!("{}", picket::rules::diagnostics::render(&d)))
}

/// No configured paths: only what the rules ask for is monitored.
fn bare_config() -> FilterConfig {
    let mut base = SensorFilters::default();
    base.file_prefixes.clear();
    base.file_suffixes.clear();
    FilterConfig {
        base,
        keep_all_kinds: false,
    }
}

async fn agent_in(cg: &TestCgroup) -> Agent {
    start_agent(std::slice::from_ref(&cg.path), |c: &mut AgentConfig| {
        c.loss_interval = Duration::from_millis(200)
    })
    .await
}

fn submitted(agent: &Agent, kind: &str) -> u64 {
    agent.sensor().submitted_counts().expect("counts")[kind]
}

fn file_opens(seen: &[Event]) -> Vec<&Event> {
    seen.iter()
        .filter(|e| e.kind() == EventKindName::FileOpen)
        .collect()
}

fn write(dir: &Path, rel: &str) -> String {
    let p = dir.join(rel);
    std::fs::write(&p, b"x").expect("write");
    p.display().to_string()
}

/// Waits until the kernel uses filters that satisfy `pred` (the rule-follow
/// task applies them asynchronously after a reload).
async fn wait_applied(h: &FilterHandle, what: &str, pred: impl Fn(&SensorFilters) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if h.current().as_ref().is_some_and(&pred) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "filters never became {what}: {:?}",
            h.current()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_paths_the_rules_name_reach_the_ring_buffer() {
    let t = kernel_test!(only_paths_the_rules_name_reach_the_ring_buffer);
    let cg = TestCgroup::unique("rfilter");
    let dir = tempfile::tempdir().expect("tempdir");
    let shadow = write(dir.path(), "shadow");
    let plain = write(dir.path(), "plain.txt");
    let engine = Engine::new(compile(&rule_yaml(
        "shadow-read",
        &format!("file.path == \"{shadow}\""),
    )));
    let mut agent = agent_in(&cg).await;
    let handle = agent.sensor().filter_handle();
    let derived =
        rule_filters::apply_rules(&handle, &engine.rules(), &bare_config()).expect("apply");
    assert_eq!(derived.warnings, vec![]);
    assert_eq!(derived.filters.file_prefixes, [shadow.clone()].into());
    assert!(derived.filters.file_suffixes.is_empty());
    assert!(derived.filters.disabled.contains(&EventKindName::Connect));
    assert!(!derived.filters.disabled.contains(&EventKindName::FileOpen));

    // 300 opens of an unmonitored file and a loopback connect (a kind no
    // rule needs): nothing is submitted to the ring buffer.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let (opens0, connects0) = (submitted(&agent, "file_open"), submitted(&agent, "connect"));
    run_in(
        &cg,
        &format!(
            "import os, socket\n\
             for i in range(300):\n  os.close(os.open('{plain}', os.O_RDONLY))\n\
             s = socket.create_connection(('127.0.0.1', {port})); s.close()\n"
        ),
    );
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(submitted(&agent, "file_open"), opens0, "unmatched opens");
    assert_eq!(submitted(&agent, "connect"), connects0, "disabled kind");
    assert_eq!(file_opens(&seen).len(), 0);
    assert!(!seen.iter().any(|e| e.kind() == EventKindName::Connect));

    // One open of the monitored path: exactly one record, exact fields.
    let out = run_in(
        &cg,
        &format!(
            "import os\nfd = os.open('{shadow}', os.O_RDONLY); print(os.getpid(), fd); os.close(fd)\n"
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<i64> = text
        .split_whitespace()
        .map(|s| s.parse().expect("number"))
        .collect();
    let (pid, fd) = (nums[0], nums[1]);
    let ev = wait_for(&mut agent, &mut seen, WAIT, "the monitored open", |e| {
        e.kind() == EventKindName::FileOpen
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(file_opens(&seen).len(), 1, "exactly one event");
    let f = ev.file.as_ref().expect("file section");
    let sc = ev.syscall.as_ref().expect("syscall section");
    assert_eq!(
        (
            f.path.as_str(),
            f.flags & !O_CLOEXEC,
            f.write,
            f.truncate,
            f.create,
            sc.name.as_str(),
            sc.result,
            i64::from(ev.process.pid),
            ev.process.linux.cgroup_id,
        ),
        (
            shadow.as_str(),
            libc::O_RDONLY as u32,
            false,
            false,
            false,
            "openat",
            fd,
            pid,
            cg.id(),
        )
    );
    assert_eq!(submitted(&agent, "file_open"), opens0 + 1);
    let alerts = engine.evaluate(&ev);
    assert_eq!(
        alerts
            .iter()
            .map(|a| a.rule.id.as_str())
            .collect::<Vec<_>>(),
        ["shadow-read"]
    );
    drop(listener);
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_reload_moves_the_kernel_filter() {
    let t = kernel_test!(a_rule_reload_moves_the_kernel_filter);
    let cg = TestCgroup::unique("rreload");
    let dir = tempfile::tempdir().expect("tempdir");
    let old = write(dir.path(), "old-secret");
    let new = write(dir.path(), "new-secret");
    let rules_dir = tempfile::tempdir().expect("rules dir");
    let rule_file = rules_dir.path().join("r.yaml");
    std::fs::write(
        &rule_file,
        rule_yaml("watched", &format!("file.path startswith \"{old}\"")),
    )
    .expect("write rules");
    let engine = Arc::new(Engine::new(
        RuleSet::load(&[rules_dir.path()]).expect("rules"),
    ));
    let watcher = RuleWatcher::new(engine.clone(), vec![rules_dir.path().to_path_buf()]);
    let mut agent = agent_in(&cg).await;
    let handle = agent.sensor().filter_handle();
    let follow = rule_filters::follow_rules(&engine, handle.clone(), bare_config());
    wait_applied(&handle, "the old rule's", |f| {
        f.file_prefixes == [old.clone()].into()
    })
    .await;
    let gen_before = handle.active_generation();

    let open_both =
        format!("import os\nfor p in ('{old}', '{new}'):\n  os.close(os.open(p, os.O_RDONLY))\n");
    let count0 = submitted(&agent, "file_open");
    run_in(&cg, &open_both);
    let mut seen = Vec::new();
    wait_for(&mut agent, &mut seen, WAIT, "the old path's open", |e| {
        e.kind() == EventKindName::FileOpen
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    let paths: Vec<&str> = file_opens(&seen)
        .iter()
        .map(|e| e.file.as_ref().expect("file").path.as_str())
        .collect();
    assert_eq!(paths, [old.as_str()], "before the reload");
    assert_eq!(submitted(&agent, "file_open"), count0 + 1);

    // Reload through the real path: new rule file, RuleWatcher::reload.
    std::fs::write(
        &rule_file,
        rule_yaml("watched", &format!("file.path startswith \"{new}\"")),
    )
    .expect("write rules");
    assert_eq!(watcher.reload().expect("reload"), 1);
    wait_applied(&handle, "the new rule's", |f| {
        f.file_prefixes == [new.clone()].into()
    })
    .await;
    assert_eq!(handle.active_generation(), gen_before ^ 1, "one flip");

    seen.clear();
    let count1 = submitted(&agent, "file_open");
    run_in(&cg, &open_both);
    wait_for(&mut agent, &mut seen, WAIT, "the new path's open", |e| {
        e.kind() == EventKindName::FileOpen
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    let paths: Vec<&str> = file_opens(&seen)
        .iter()
        .map(|e| e.file.as_ref().expect("file").path.as_str())
        .collect();
    assert_eq!(paths, [new.as_str()], "after the reload");
    assert_eq!(submitted(&agent, "file_open"), count1 + 1);
    follow.abort();
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irreducible_rule_reports_every_open() {
    let t = kernel_test!(an_irreducible_rule_reports_every_open);
    let cg = TestCgroup::unique("rcontains");
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = write(dir.path(), "plain.txt");
    let engine = Engine::new(compile(&rule_yaml(
        "contained",
        &format!("file.path contains \"{}/\"", dir.path().display()),
    )));
    let mut agent = agent_in(&cg).await;
    let handle = agent.sensor().filter_handle();
    let derived =
        rule_filters::apply_rules(&handle, &engine.rules(), &bare_config()).expect("apply");
    assert!(derived.filters.all_paths);
    assert_eq!(
        derived
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>(),
        [
            "rule `contained`: file opens are not filtered by path in the kernel: `file.path` is tested with `contains`, which the kernel cannot match"
        ]
    );
    run_in(
        &cg,
        &format!("import os\nos.close(os.open('{plain}', os.O_RDONLY))\n"),
    );
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "the unfiltered open", |e| {
        e.kind() == EventKindName::FileOpen && e.file.as_ref().is_some_and(|f| f.path == plain)
    })
    .await;
    assert_eq!(
        engine
            .evaluate(&ev)
            .iter()
            .map(|a| a.rule.id.as_str())
            .collect::<Vec<_>>(),
        ["contained"]
    );
    t.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_sends_the_summary_when_the_window_rolls_over() {
    let t = kernel_test!(the_kernel_sends_the_summary_when_the_window_rolls_over);
    let cg = TestCgroup::unique("rroll");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write(dir.path(), "secret");
    let mut filters = SensorFilters {
        file_prefixes: [secret.clone()].into(),
        file_suffixes: Default::default(),
        ..Default::default()
    };
    filters.rates.insert(
        EventKindName::FileOpen,
        Rate {
            max_events: 5,
            window: Duration::from_secs(1),
        },
    );
    // The agent's own flush waits 60 s after a window's end: any summary
    // seen here was sent by the kernel.
    let mut agent = start_agent(
        std::slice::from_ref(&cg.path),
        move |c: &mut AgentConfig| {
            c.sensor.filters = filters;
            c.loss_interval = Duration::from_secs(60);
        },
    )
    .await;
    let summaries0 = submitted(&agent, "rate_summary");
    // 20 opens in one window (5 sent, 15 suppressed), then one more after
    // the window ended: it rolls the window over.
    run_in(
        &cg,
        &format!(
            "import os, time\n\
             for i in range(20):\n  os.close(os.open('{secret}', os.O_RDONLY))\n\
             time.sleep(1.3)\n\
             os.close(os.open('{secret}', os.O_RDONLY))\n"
        ),
    );
    let mut seen = Vec::new();
    let s = wait_for(&mut agent, &mut seen, WAIT, "the kernel's summary", |e| {
        e.kind() == EventKindName::RateSummary
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    let sum = s.summary.as_ref().expect("summary section");
    assert_eq!(
        (
            sum.kind.as_str(),
            sum.count,
            sum.window_ms,
            s.process.linux.cgroup_id
        ),
        ("file_open", 15, 1_000, cg.id())
    );
    assert_eq!(
        submitted(&agent, "rate_summary"),
        summaries0 + 1,
        "one kernel record"
    );
    assert_eq!(
        seen.iter()
            .filter(|e| e.kind() == EventKindName::RateSummary)
            .count(),
        1
    );
    assert_eq!(file_opens(&seen).len(), 6, "5 in the first window, 1 after");
    t.done();
}

/// One pair of tries serves both `file_open` and `file_change`: each entry
/// is tagged with its kinds, and a longer entry inherits the tags of the
/// shorter ones it extends. An open rule on `<dir>/r/` and a change rule on
/// `<dir>/`: opens below `<dir>/` but outside `r/` are not sent, changes
/// anywhere below `<dir>/` are (including below `r/`, where the longest
/// entry is the open rule's), and nothing outside `<dir>/` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_change_literals_share_the_tries_by_tag() {
    let t = kernel_test!(open_and_change_literals_share_the_tries_by_tag);
    let cg = TestCgroup::unique("rtags");
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("r")).expect("mkdir");
    let d = dir.path().display().to_string();
    let ra = write(dir.path(), "r/a");
    let rb = write(dir.path(), "r/b");
    let x = write(dir.path(), "x");
    let y = format!("{d}/y");
    let z = write(other.path(), "z");
    let yaml = format!(
        "rules:\n  - id: opens\n    name: opens\n    severity: high\n    events: [file_open]\n    condition: 'file.path startswith \"{d}/r/\"'\n    output: x\n    tags: [T1003.008]\n  - id: changes\n    name: changes\n    severity: high\n    events: [file_change]\n    condition: 'file.path startswith \"{d}/\"'\n    output: x\n    tags: [T1070]\n"
    );
    let engine = Engine::new(compile(&yaml));
    let mut agent = agent_in(&cg).await;
    let handle = agent.sensor().filter_handle();
    let mut cfg = bare_config();
    cfg.base.change_prefixes.clear();
    cfg.base.change_suffixes.clear();
    let derived = rule_filters::apply_rules(&handle, &engine.rules(), &cfg).expect("apply");
    assert_eq!(derived.warnings, vec![]);
    assert_eq!(derived.filters.file_prefixes, [format!("{d}/r/")].into());
    assert_eq!(derived.filters.change_prefixes, [format!("{d}/")].into());

    let before = (
        submitted(&agent, "file_open"),
        submitted(&agent, "file_change"),
    );
    run_in(
        &cg,
        &format!(
            "import os\n\
             os.close(os.open('{ra}', os.O_RDONLY))\n\
             os.close(os.open('{x}', os.O_RDONLY))\n\
             os.unlink('{rb}')\n\
             os.rename('{x}', '{y}')\n\
             os.unlink('{z}')\n\
             os.close(os.open('{z}', os.O_WRONLY | os.O_CREAT, 0o600))\n"
        ),
    );
    let mut seen = Vec::new();
    drain(&mut agent, &mut seen, Duration::from_millis(1500)).await;
    let opens: Vec<String> = file_opens(&seen)
        .iter()
        .map(|e| e.file.as_ref().expect("file").path.clone())
        .collect();
    assert_eq!(opens, vec![ra.clone()], "only the open below r/");
    let changes: Vec<(String, String, Option<String>)> = seen
        .iter()
        .filter(|e| e.kind() == EventKindName::FileChange)
        .map(|e| {
            let c = e.file_change.as_ref().expect("file_change");
            (
                c.op.clone(),
                e.file.as_ref().expect("file").path.clone(),
                c.target.clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("unlink".to_string(), rb.clone(), None),
            ("rename".to_string(), x.clone(), Some(y.clone())),
        ],
        "the changes below {d}/, also below r/, and none outside"
    );
    let after = (
        submitted(&agent, "file_open"),
        submitted(&agent, "file_change"),
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 2),
        "exactly one open and two change records reached the ring buffer"
    );
    t.done();
}

/// A Falco rule's `fd.name = X` is lowered to kernel path filters
/// (docs/falco.md): a burst of 2,500 opens of unrelated files in the cgroup
/// (more than the default 2,000 per second `file_open` window) costs no
/// ring-buffer traffic, and the open the rule alerts on right after it is
/// delivered and alerted on, not counted in a rate summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_falco_fd_name_rule_alerts_after_a_burst_of_unrelated_opens() {
    let t = kernel_test!(a_falco_fd_name_rule_alerts_after_a_burst_of_unrelated_opens);
    let cg = TestCgroup::unique("ffdname");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_file = write(dir.path(), "release_agent");
    let plain = write(dir.path(), "plain.txt");
    let falco = format!(
        "- rule: Release agent open\n  desc: d\n  condition: evt.type in (open, openat) and fd.name = {agent_file}\n  output: 'opened %fd.name'\n  priority: CRITICAL\n"
    );
    let engine = Engine::new(compile(&falco));
    let mut agent = agent_in(&cg).await;
    let handle = agent.sensor().filter_handle();
    let derived =
        rule_filters::apply_rules(&handle, &engine.rules(), &bare_config()).expect("apply");
    assert_eq!(derived.warnings, vec![]);
    assert!(!derived.filters.all_paths);
    assert_eq!(derived.filters.file_exact, [agent_file.clone()].into());
    let summaries0 = submitted(&agent, "rate_summary");
    run_in(
        &cg,
        &format!(
            "import os\n\
             for i in range(2500):\n  os.close(os.open('{plain}', os.O_RDONLY))\n\
             os.close(os.open('{agent_file}', os.O_RDONLY))\n"
        ),
    );
    let mut seen = Vec::new();
    let ev = wait_for(&mut agent, &mut seen, WAIT, "the alerting open", |e| {
        e.kind() == EventKindName::FileOpen && e.file.as_ref().is_some_and(|f| f.path == agent_file)
    })
    .await;
    drain(&mut agent, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(
        engine
            .evaluate(&ev)
            .iter()
            .map(|a| a.rule.id.as_str())
            .collect::<Vec<_>>(),
        ["falco-release-agent-open"]
    );
    let count = |p: &str| {
        file_opens(&seen)
            .iter()
            .filter(|e| e.file.as_ref().is_some_and(|f| f.path == p))
            .count()
    };
    assert_eq!(
        (count(&plain), count(&agent_file)),
        (0, 1),
        "the burst is not sent"
    );
    assert_eq!(submitted(&agent, "rate_summary"), summaries0);
    t.done();
}
