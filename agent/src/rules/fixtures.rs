//! `picket rules test`: replays fixture events through the engine and
//! compares the alerts with what the fixtures expect.
//!
//! Layout, next to the rule files: `fixtures/<rule-id>/`
//! - `positive.jsonl`: events that must raise an alert from the rule;
//! - `negative.jsonl`: events that must not;
//! - `setup.jsonl` (optional): events replayed before each of the above, with
//!   their alerts ignored (state for learned or de-duplicated rules);
//! - `expected.jsonl` (optional): for each positive event, in order, the
//!   expected alert `{"severity": ..., "message": ...}`.
//!
//! Events are JSON lines exactly as `picket run --events` prints them, so a
//! recorded capture can become a fixture. Each event is evaluated by a fresh
//! engine (after `setup.jsonl`), so fixtures do not influence each other.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{
    compile::RuleSet,
    engine::{Engine, EngineOptions, Evaluation},
    metrics::RulesMetrics,
};
use crate::model::{Event, Severity};

/// The expected alert of one positive fixture event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub severity: Severity,
    pub message: String,
}

/// The outcome for one rule.
#[derive(Debug, Default)]
pub struct RuleReport {
    pub rule: String,
    pub positives: usize,
    pub negatives: usize,
    pub failures: Vec<String>,
    /// The rule has no fixtures directory.
    pub missing: bool,
    /// Not run (the rule is disabled).
    pub skipped: Option<String>,
}

#[derive(Debug, Default)]
pub struct TestReport {
    pub rules: Vec<RuleReport>,
    /// Problems not tied to one rule (fixtures for unknown rules, unreadable dirs).
    pub errors: Vec<String>,
}

impl TestReport {
    /// True when nothing failed (and, with `require_fixtures`, every rule has fixtures).
    pub fn passed(&self, require_fixtures: bool) -> bool {
        self.errors.is_empty()
            && self
                .rules
                .iter()
                .all(|r| r.failures.is_empty() && !(require_fixtures && r.missing))
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let (mut pass, mut fail, mut missing) = (0, 0, 0);
        for r in &self.rules {
            if let Some(why) = &r.skipped {
                let _ = writeln!(out, "SKIP {} ({why})", r.rule);
            } else if r.missing {
                missing += 1;
                let _ = writeln!(out, "MISS {} (no fixtures)", r.rule);
            } else if r.failures.is_empty() {
                pass += 1;
                let _ = writeln!(
                    out,
                    "PASS {} ({} positive, {} negative)",
                    r.rule, r.positives, r.negatives
                );
            } else {
                fail += 1;
                let _ = writeln!(out, "FAIL {}", r.rule);
                for f in &r.failures {
                    let _ = writeln!(out, "  {f}");
                }
            }
        }
        for e in &self.errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        let _ = writeln!(
            out,
            "{pass} passed, {fail} failed, {missing} without fixtures"
        );
        out
    }
}

/// Where fixtures live for the given rule paths: `<dir>/fixtures` for each
/// directory, `<parent>/fixtures` for each file.
pub fn fixture_dirs<P: AsRef<Path>>(paths: &[P]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let base = if p.is_dir() {
            p.to_path_buf()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let d = base.join("fixtures");
        if d.is_dir() && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

fn read_events(path: &Path) -> Result<Vec<(usize, Event)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: invalid event: {e}", path.display(), i + 1))?;
        out.push((i + 1, ev));
    }
    Ok(out)
}

fn read_expected(path: &Path) -> Result<Option<Vec<Expected>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Runs the fixtures in `dirs` against `set`. With `update`, writes
/// `expected.jsonl` from the actual alerts instead of comparing messages.
pub fn run(set: Arc<RuleSet>, dirs: &[PathBuf], only: &[String], update: bool) -> TestReport {
    let mut report = TestReport::default();
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in dirs {
        let rd = match std::fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e) => {
                report.errors.push(format!("{}: {e}", d.display()));
                continue;
            }
        };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if !p.is_dir() || name.starts_with('.') {
                continue;
            }
            if set.get(&name).is_none() {
                report.errors.push(format!(
                    "{}: fixtures for unknown rule `{name}`",
                    p.display()
                ));
                continue;
            }
            found.insert(name, p);
        }
    }
    for rule in set.rules() {
        if !only.is_empty() && !only.iter().any(|o| **o == *rule.id) {
            continue;
        }
        let mut r = RuleReport {
            rule: rule.id.to_string(),
            ..Default::default()
        };
        match found.get(&*rule.id) {
            None => r.missing = true,
            Some(_) if !rule.enabled => r.skipped = Some("disabled".into()),
            Some(dir) => run_rule(&set, &rule.id, dir, update, &mut r),
        }
        report.rules.push(r);
    }
    report
}

fn describe(ev: &Evaluation, rule: &str) -> String {
    let others: Vec<&str> = ev
        .alerts
        .iter()
        .map(|a| a.rule.id.as_str())
        .filter(|id| *id != rule)
        .collect();
    let mut s = String::new();
    if let Some((_, x)) = ev.excepted.iter().find(|(r, _)| &**r == rule) {
        let _ = write!(s, "; exception `{x}` matched");
    }
    if !others.is_empty() {
        let _ = write!(s, "; other alerts: {}", others.join(", "));
    }
    s
}

fn run_rule(set: &Arc<RuleSet>, rule: &str, dir: &Path, update: bool, r: &mut RuleReport) {
    let load = |name: &str| read_events(&dir.join(name));
    let (setup, positive, negative) = match (
        load("setup.jsonl"),
        load("positive.jsonl"),
        load("negative.jsonl"),
    ) {
        (Ok(s), Ok(p), Ok(n)) => (s, p, n),
        (s, p, n) => {
            r.failures
                .extend([s.err(), p.err(), n.err()].into_iter().flatten());
            return;
        }
    };
    let expected = match read_expected(&dir.join("expected.jsonl")) {
        Ok(e) => e,
        Err(e) => {
            r.failures.push(e);
            return;
        }
    };
    if positive.is_empty() {
        r.failures.push("positive.jsonl is missing or empty".into());
    }
    if negative.is_empty() {
        r.failures.push("negative.jsonl is missing or empty".into());
    }
    let eval = |ev: &Event| {
        let opts = EngineOptions {
            metrics: RulesMetrics::unregistered(),
            ..Default::default()
        };
        let engine = Engine::with_shared(set.clone(), opts);
        for (_, s) in &setup {
            engine.evaluate(s);
        }
        engine.evaluate_detailed(ev)
    };
    let mut actual = Vec::new();
    for (i, (line, ev)) in positive.iter().enumerate() {
        r.positives += 1;
        let out = eval(ev);
        let alert = out.alerts.iter().find(|a| a.rule.id == rule);
        let shadow = out.shadow.iter().any(|s| &**s == rule);
        match alert {
            Some(a) => {
                let got = Expected {
                    severity: a.severity,
                    message: a.message.clone(),
                };
                if let Some(want) = expected.as_ref().and_then(|e| e.get(i))
                    && !update
                    && *want != got
                {
                    r.failures.push(format!(
                        "positive.jsonl:{line}: alert differs\n    expected: {} {:?}\n    actual:   {} {:?}",
                        want.severity, want.message, got.severity, got.message
                    ));
                }
                actual.push(got);
            }
            None if shadow => actual.push(Expected {
                severity: Severity::Info,
                message: "<shadow match>".into(),
            }),
            None => {
                r.failures.push(format!(
                    "positive.jsonl:{line}: expected an alert from `{rule}`, got none{}",
                    describe(&out, rule)
                ));
            }
        }
    }
    if let Some(e) = &expected
        && !update
        && e.len() != positive.len()
    {
        r.failures.push(format!(
            "expected.jsonl has {} lines for {} positive events",
            e.len(),
            positive.len()
        ));
    }
    if update && r.failures.is_empty() {
        let text: String = actual
            .iter()
            .filter_map(|a| serde_json::to_string(a).ok())
            .map(|l| l + "\n")
            .collect();
        if let Err(e) = std::fs::write(dir.join("expected.jsonl"), text) {
            r.failures.push(format!("cannot write expected.jsonl: {e}"));
        }
    }
    for (line, ev) in &negative {
        r.negatives += 1;
        let out = eval(ev);
        if let Some(a) = out.alerts.iter().find(|a| a.rule.id == rule) {
            r.failures.push(format!(
                "negative.jsonl:{line}: unexpected alert from `{rule}`: {}",
                a.message
            ));
        } else if out.shadow.iter().any(|s| &**s == rule) {
            r.failures.push(format!(
                "negative.jsonl:{line}: unexpected shadow match of `{rule}`"
            ));
        }
    }
}
