//! The rule engine behind `picket.v1.RuleService`: list the running rules,
//! validate a document, reload the files (the same reload as SIGHUP).

use std::{path::PathBuf, sync::Arc};

use crate::delivery::{RuleControl, RuleProblem, RuleSummary, Validation};

use super::{
    compile::RuleSet,
    diagnostics::Diagnostic,
    engine::Engine,
    reload::{ReloadError, ReloadHandle},
};

/// Name given to a validated document in messages.
const DOCUMENT: &str = "<document>";

/// Serves the API from a running engine and its reload handle.
pub struct EngineControl {
    engine: Arc<Engine>,
    reload: ReloadHandle,
}

impl EngineControl {
    pub fn new(engine: Arc<Engine>, reload: ReloadHandle) -> Self {
        Self { engine, reload }
    }
}

fn problem(d: &Diagnostic) -> RuleProblem {
    let mut message = d.message.clone();
    if d.file != std::path::Path::new(DOCUMENT) {
        message = format!("{}: {message}", d.file.display());
    }
    if let Some(f) = &d.field {
        message = format!("{message} (field {f})");
    }
    if let Some(h) = &d.hint {
        message = format!("{message}; {h}");
    }
    RuleProblem {
        rule_id: d.rule.clone(),
        line: u32::try_from(d.line).ok().filter(|l| *l > 0),
        message,
    }
}

impl RuleControl for EngineControl {
    fn list(&self) -> Vec<RuleSummary> {
        self.engine
            .rules()
            .rules()
            .iter()
            .map(|r| RuleSummary {
                id: r.id.to_string(),
                name: r.name.clone(),
                severity: r.severity,
                tags: r.tags.clone(),
                events: r.events.clone(),
                enabled: r.enabled,
                source: r.file.display().to_string(),
            })
            .collect()
    }

    /// Compiles `yaml` together with the running rule files, as if it were
    /// added to the rules directory: it may use their lists and macros, and
    /// a rule id that is already loaded is reported as a duplicate. Only the
    /// document's own problems are reported.
    fn validate(&self, yaml: &str) -> Validation {
        let running = self.engine.rules();
        let mut sources: Vec<(PathBuf, String)> = Vec::new();
        for f in running.files() {
            if let Ok(text) = std::fs::read_to_string(f) {
                sources.push((f.clone(), text));
            }
        }
        let before = sources.clone();
        sources.push((PathBuf::from(DOCUMENT), yaml.to_string()));
        match RuleSet::from_sources(sources) {
            Ok(set) => {
                let others = RuleSet::from_sources(before).map_or(0, |s| s.rules().len());
                Validation {
                    rule_count: set.rules().len().saturating_sub(others),
                    problems: Vec::new(),
                }
            }
            Err(diags) => Validation {
                rule_count: 0,
                problems: diags
                    .iter()
                    .filter(|d| d.is_error())
                    .filter(|d| d.file == std::path::Path::new(DOCUMENT) || d.line == 0)
                    .map(problem)
                    .collect(),
            },
        }
    }

    fn reload(&self) -> Result<usize, Vec<RuleProblem>> {
        self.reload.reload().map_err(|e| match e {
            ReloadError::Compile(diags) => {
                diags.iter().filter(|d| d.is_error()).map(problem).collect()
            }
            other => vec![RuleProblem {
                rule_id: None,
                line: None,
                message: other.to_string(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{EngineOptions, RuleWatcher};

    const LIST: &str = "lists:\n  shells: [/bin/sh]\n";
    const RULE_A: &str = "rules:\n  - id: a\n    name: A\n    severity: low\n    events: [exec]\n    condition: process.executable.path in shells\n    output: a\n    tags: [T1059]\n";

    fn setup() -> (tempfile::TempDir, EngineControl) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lists.yaml"), LIST).unwrap();
        std::fs::write(dir.path().join("a.yaml"), RULE_A).unwrap();
        let set = RuleSet::load(&[dir.path()]).unwrap();
        let opts = EngineOptions {
            metrics: crate::rules::RulesMetrics::unregistered(),
            ..Default::default()
        };
        let engine = Arc::new(Engine::with_options(set, opts).unwrap());
        let w = RuleWatcher::new(engine.clone(), vec![dir.path().to_path_buf()]);
        (dir, EngineControl::new(engine, w.handle()))
    }

    #[test]
    fn lists_running_rules() {
        let (dir, c) = setup();
        let l = c.list();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, "a");
        assert_eq!(l[0].source, dir.path().join("a.yaml").display().to_string());
        assert_eq!(l[0].events, vec![crate::model::EventKindName::Exec]);
    }

    #[test]
    fn validates_in_the_context_of_the_running_files() {
        let (_dir, c) = setup();
        let ok = c.validate(&RULE_A.replace("id: a", "id: b"));
        assert_eq!(
            ok,
            Validation {
                rule_count: 1,
                problems: vec![]
            }
        );
        let bad = c.validate(
            &RULE_A
                .replace("id: a", "id: c")
                .replace("severity: low", "severity: loud"),
        );
        assert_eq!(bad.rule_count, 0);
        assert_eq!(bad.problems.len(), 1, "{:?}", bad.problems);
        assert_eq!(bad.problems[0].line, Some(4));
        assert!(
            bad.problems[0].message.contains("loud"),
            "{:?}",
            bad.problems
        );
        let dup = c.validate(RULE_A);
        assert_eq!(dup.problems.len(), 1, "{:?}", dup.problems);
        assert_eq!(dup.problems[0].rule_id.as_deref(), Some("a"));
    }

    #[test]
    fn reload_reports_problems_and_keeps_the_set() {
        let (dir, c) = setup();
        std::fs::write(dir.path().join("b.yaml"), RULE_A.replace("id: a", "id: b")).unwrap();
        assert_eq!(c.reload(), Ok(2));
        std::fs::write(
            dir.path().join("b.yaml"),
            "rules:\n  - id: b\n    name: B\n",
        )
        .unwrap();
        let problems = c.reload().unwrap_err();
        assert!(!problems.is_empty());
        assert_eq!(c.list().len(), 2);
    }
}
