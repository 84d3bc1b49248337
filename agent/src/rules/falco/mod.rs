//! Falco rule files, loaded unchanged next to Picket's own rules.
//!
//! A file whose top level is a sequence of `- rule:` / `- macro:` /
//! `- list:` / `- required_engine_version:` items is a Falco file. Its
//! lists, macros and rules (with `append`, `override` and `exceptions`) are
//! resolved with Falco's semantics, then every condition is translated onto
//! Picket's fields and compiled into the same [`Cond`] trees Picket's own
//! rules use: there is no second evaluator.
//!
//! Honesty over coverage: a rule that needs a field, operator or event type
//! Picket cannot evaluate faithfully is not approximated. It is loaded
//! disabled, and `picket rules lint` names the file, line and reason. With
//! [`Unsupported::Shadow`] such rules run in shadow mode instead (the
//! unsupported checks evaluate as false), to measure them without alerting.
//!
//! Field table, unsupported constructs and the exception/override mapping:
//! `docs/falco.md`.

pub mod cond;
pub mod errno;
pub mod fields;
pub mod output;
pub mod translate;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use self::translate::{Env, Finding, MacroDef, Text, Translated};
use super::{
    compile::{Exception, Rule},
    diagnostics::Diagnostic,
    expr::Cond,
    parse::{Action, Mode},
    source::{ExprSource, Loc, SourceFile},
    yaml::{Node, Value},
};
use crate::model::{EventKindName, RuleRef, Severity};

/// What to do with rules Picket cannot evaluate faithfully.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Unsupported {
    /// Load them disabled (the default).
    #[default]
    Disable,
    /// Run them in shadow mode (counted, never alerted), unsupported checks false.
    Shadow,
}

static UNSUPPORTED: OnceLock<Unsupported> = OnceLock::new();

/// Sets, once per process, how every later load (hot reloads included)
/// treats unsupported Falco rules. Returns false if it was already set.
pub fn set_unsupported_mode(mode: Unsupported) -> bool {
    UNSUPPORTED.set(mode).is_ok()
}

fn unsupported_mode() -> Unsupported {
    UNSUPPORTED.get().copied().unwrap_or_default()
}

/// How one Falco rule loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Active,
    /// `enabled: false` in the rules file itself.
    DisabledInFile,
    /// Not evaluable faithfully (or in error): disabled, with the reasons.
    Disabled(Vec<String>),
    /// Not evaluable faithfully, running in shadow mode by request.
    Shadow(Vec<String>),
}

/// One Falco rule in the loaded set, for `picket rules lint`.
#[derive(Clone, Debug)]
pub struct RuleReport {
    pub id: String,
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub status: Status,
    /// `evt.type` values of the rule that Picket has no sensor for.
    pub no_sensor: Vec<String>,
}

/// True when the YAML document is a Falco rules file.
pub fn is_falco(root: &Node) -> bool {
    let Value::Seq(items) = &root.value else {
        return false;
    };
    items.iter().any(|i| match &i.value {
        Value::Map(kv) => kv.iter().any(|(k, _)| {
            matches!(
                k.as_str(),
                Some("rule" | "macro" | "list" | "required_engine_version")
            )
        }),
        _ => false,
    })
}

/// The stable rule id of a Falco rule: `falco-` and its name in kebab case
/// (the prefix keeps Falco's ids apart from Picket's own).
pub fn slug(name: &str) -> String {
    let mut out = String::from("falco");
    let mut dash = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if dash {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
            dash = false;
        } else {
            dash = true;
        }
    }
    out
}

/// Falco priorities → Picket severities.
pub fn severity(priority: &str) -> Option<Severity> {
    Some(match priority.trim().to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => Severity::Critical,
        "error" => Severity::High,
        "warning" | "warn" => Severity::Medium,
        "notice" => Severity::Low,
        "informational" | "info" | "debug" => Severity::Info,
        _ => return None,
    })
}

/// One element of an exception's values tuple: (value, bare) items and
/// whether it was written as a list.
type ExcElem = (Vec<(String, bool)>, bool);

#[derive(Clone, Debug)]
struct ExcDef {
    name: String,
    fields: Vec<String>,
    comps: Vec<String>,
    /// `fields` was one name: `values` is one list of values.
    single: bool,
    /// One tuple per entry; each element: (values, is_list).
    values: Vec<Vec<ExcElem>>,
    loc: Loc,
}

#[derive(Clone, Debug)]
struct RuleDef {
    name: String,
    loc: Loc,
    line: usize,
    file: Arc<SourceFile>,
    desc: String,
    cond: Option<Text>,
    output: String,
    priority: Severity,
    tags: Vec<String>,
    enabled: bool,
    source: String,
    exceptions: Vec<ExcDef>,
}

struct Reader<'a> {
    env: Env,
    rules: Vec<RuleDef>,
    diags: &'a mut Vec<Diagnostic>,
}

fn s(n: &Node) -> String {
    n.as_str().unwrap_or_default().to_string()
}

fn get<'n>(kv: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    kv.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn strings(n: &Node) -> Vec<String> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(String::from)
            .collect(),
        Value::Scalar(..) if n.is_null() => Vec::new(),
        Value::Scalar(t, _) => vec![t.clone()],
        Value::Map(_) => Vec::new(),
    }
}

fn truthy(n: &Node) -> Option<bool> {
    match n.as_str()? {
        "true" | "True" | "TRUE" | "yes" => Some(true),
        "false" | "False" | "FALSE" | "no" => Some(false),
        _ => None,
    }
}

const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "tags",
    "enabled",
    "source",
    "exceptions",
    "append",
    "override",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
];

impl Reader<'_> {
    fn warn(&mut self, file: &Arc<SourceFile>, n: &Node, msg: String) {
        self.diags
            .push(Loc::Yaml(file.clone(), n.pos).warning(msg).field("falco"));
    }

    fn error(&mut self, file: &Arc<SourceFile>, n: &Node, msg: String) {
        self.diags
            .push(Loc::Yaml(file.clone(), n.pos).error(msg).field("falco"));
    }

    fn read(&mut self, file: &Arc<SourceFile>, root: &Node) {
        let Value::Seq(items) = &root.value else {
            return;
        };
        for item in items {
            let Value::Map(kv) = &item.value else {
                self.error(
                    file,
                    item,
                    "a Falco rules file is a list of mappings".into(),
                );
                continue;
            };
            if let Some(n) = get(kv, "list") {
                self.list(file, kv, n);
            } else if let Some(n) = get(kv, "macro") {
                self.macro_(file, kv, n);
            } else if let Some(n) = get(kv, "rule") {
                self.rule(file, kv, n);
            } else if get(kv, "required_engine_version").is_some()
                || get(kv, "required_plugin_versions").is_some()
            {
                // Accepted: Picket is its own engine.
            } else {
                let keys: Vec<String> = kv.iter().map(|(k, _)| s(k)).collect();
                self.warn(
                    file,
                    item,
                    format!("unknown Falco item ({}) ignored", keys.join(", ")),
                );
            }
        }
    }

    /// `override: {key: append|replace}` or `append: true` for `key`.
    fn mode_of(kv: &[(Node, Node)], key: &str) -> Option<&'static str> {
        if let Some(Value::Map(o)) = get(kv, "override").map(|n| &n.value) {
            return match get(o, key).and_then(Node::as_str) {
                Some("append") => Some("append"),
                Some("replace") => Some("replace"),
                _ => None,
            };
        }
        if get(kv, "append").and_then(truthy) == Some(true) && get(kv, key).is_some() {
            return Some("append");
        }
        None
    }

    fn is_update(kv: &[(Node, Node)]) -> bool {
        get(kv, "override").is_some() || get(kv, "append").and_then(truthy) == Some(true)
    }

    fn list(&mut self, file: &Arc<SourceFile>, kv: &[(Node, Node)], n: &Node) {
        let name = s(n);
        let items = get(kv, "items").map(strings).unwrap_or_default();
        if Self::is_update(kv) {
            match self.env.lists.get_mut(&name) {
                Some(l) if Self::mode_of(kv, "items") == Some("replace") => *l = items,
                Some(l) => l.extend(items),
                None => self.error(
                    file,
                    n,
                    format!("`append`/`override` of unknown list `{name}`"),
                ),
            }
        } else {
            self.env.lists.insert(name, items);
        }
    }

    fn macro_(&mut self, file: &Arc<SourceFile>, kv: &[(Node, Node)], n: &Node) {
        let name = s(n);
        let Some(c) = get(kv, "condition") else {
            self.error(file, n, format!("macro `{name}` has no `condition`"));
            return;
        };
        let src = Arc::new(ExprSource {
            file: file.clone(),
            node: c.clone(),
        });
        if Self::is_update(kv) {
            match self.env.macros.get_mut(&name) {
                Some(m) if Self::mode_of(kv, "condition") == Some("replace") => {
                    m.text = Text::new(src)
                }
                Some(m) => m.text.append(src),
                None => self.error(
                    file,
                    n,
                    format!("`append`/`override` of unknown macro `{name}`"),
                ),
            }
        } else {
            self.env.macros.insert(
                name,
                MacroDef {
                    text: Text::new(src),
                },
            );
        }
    }

    fn exceptions(&mut self, file: &Arc<SourceFile>, n: &Node) -> Vec<ExcDef> {
        let Value::Seq(items) = &n.value else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            let Value::Map(kv) = &it.value else {
                self.error(file, it, "an exception is a mapping".into());
                continue;
            };
            let name = get(kv, "name").map(s).unwrap_or_default();
            let fnode = get(kv, "fields");
            let single = fnode.is_some_and(|f| matches!(f.value, Value::Scalar(..)));
            let fields = fnode.map(strings).unwrap_or_default();
            let mut comps = get(kv, "comps").map(strings).unwrap_or_default();
            if comps.is_empty() {
                comps = vec![if single { "in" } else { "=" }.to_string(); fields.len()];
            }
            let values = get(kv, "values")
                .map(|v| self.exception_values(v, single))
                .unwrap_or_default();
            out.push(ExcDef {
                name,
                fields,
                comps,
                single,
                values,
                loc: Loc::Yaml(file.clone(), it.pos),
            });
        }
        out
    }

    fn exception_values(&mut self, n: &Node, single: bool) -> Vec<Vec<ExcElem>> {
        let elem = |e: &Node| -> ExcElem {
            match &e.value {
                Value::Seq(items) => (
                    items
                        .iter()
                        .filter_map(Node::as_str)
                        .map(translate::unquote_item)
                        .collect(),
                    true,
                ),
                _ => (vec![(s(e), true)], false),
            }
        };
        let Value::Seq(items) = &n.value else {
            return Vec::new();
        };
        if single {
            // `fields: proc.name`, `values: [a, b]`: one clause with all values.
            let vals: Vec<(String, bool)> = items
                .iter()
                .flat_map(|i| elem(i).0)
                .map(|(v, _)| (v, true))
                .collect();
            return vec![vec![(vals, true)]];
        }
        items
            .iter()
            .map(|t| match &t.value {
                Value::Seq(parts) => parts.iter().map(elem).collect(),
                _ => vec![elem(t)],
            })
            .collect()
    }

    fn rule(&mut self, file: &Arc<SourceFile>, kv: &[(Node, Node)], n: &Node) {
        let name = s(n);
        for (k, _) in kv {
            let key = s(k);
            if !RULE_KEYS.contains(&key.as_str()) {
                self.warn(
                    file,
                    k,
                    format!("unknown key `{key}` in Falco rule `{name}` ignored"),
                );
            }
        }
        let cond_src = get(kv, "condition").map(|c| {
            Arc::new(ExprSource {
                file: file.clone(),
                node: c.clone(),
            })
        });
        let existing = self.rules.iter().position(|r| r.name == name);
        let only_enabled = get(kv, "enabled").is_some()
            && kv
                .iter()
                .all(|(k, _)| matches!(k.as_str(), Some("rule" | "enabled")));
        if Self::is_update(kv) || (only_enabled && existing.is_some()) {
            let Some(i) = existing else {
                self.error(
                    file,
                    n,
                    format!("`append`/`override` of unknown rule `{name}`"),
                );
                return;
            };
            let exc = get(kv, "exceptions").map(|e| self.exceptions(file, e));
            let r = &mut self.rules[i];
            if let Some(src) = cond_src {
                match (Self::mode_of(kv, "condition"), &mut r.cond) {
                    (Some("replace"), c) => *c = Some(Text::new(src)),
                    (_, Some(t)) => t.append(src),
                    (_, c) => *c = Some(Text::new(src)),
                }
            }
            if let Some(o) = get(kv, "output") {
                match Self::mode_of(kv, "output") {
                    Some("append") => {
                        r.output.push(' ');
                        r.output.push_str(&s(o));
                    }
                    _ => r.output = s(o),
                }
            }
            if let Some(d) = get(kv, "desc") {
                r.desc = s(d);
            }
            if let Some(p) = get(kv, "priority").and_then(|p| severity(&s(p))) {
                r.priority = p;
            }
            if let Some(t) = get(kv, "tags") {
                if Self::mode_of(kv, "tags") == Some("replace") {
                    r.tags = strings(t);
                } else {
                    r.tags.extend(strings(t));
                }
            }
            if let Some(e) = get(kv, "enabled").and_then(truthy) {
                r.enabled = e;
            }
            if let Some(exc) = exc {
                if Self::mode_of(kv, "exceptions") == Some("replace") {
                    r.exceptions = exc;
                } else {
                    for e in exc {
                        match r.exceptions.iter_mut().find(|x| x.name == e.name) {
                            Some(x) => x.values.extend(e.values),
                            None => r.exceptions.push(e),
                        }
                    }
                }
            }
            return;
        }
        let priority_text = get(kv, "priority").map(s).unwrap_or_default();
        let priority = match severity(&priority_text) {
            Some(p) => p,
            None => {
                self.warn(
                    file,
                    n,
                    format!(
                        "Falco rule `{name}`: unknown priority `{priority_text}`, using medium"
                    ),
                );
                Severity::Medium
            }
        };
        let def = RuleDef {
            name: name.clone(),
            loc: Loc::Yaml(file.clone(), n.pos),
            line: n.pos.line,
            file: file.clone(),
            desc: get(kv, "desc").map(s).unwrap_or_default(),
            cond: cond_src.map(Text::new),
            output: get(kv, "output").map(s).unwrap_or_default(),
            priority,
            tags: get(kv, "tags").map(strings).unwrap_or_default(),
            enabled: get(kv, "enabled").and_then(truthy).unwrap_or(true),
            source: get(kv, "source").map(s).unwrap_or_else(|| "syscall".into()),
            exceptions: get(kv, "exceptions")
                .map(|e| self.exceptions(file, e))
                .unwrap_or_default(),
        };
        match existing {
            // A later full definition replaces the earlier one (Falco semantics).
            Some(i) => self.rules[i] = def,
            None => self.rules.push(def),
        }
    }
}

/// The compiled Falco rules of a rule set, and their load report.
pub struct Compiled {
    pub rules: Vec<Rule>,
    pub report: Vec<RuleReport>,
}

/// Compiles the Falco files (in load order). Problems go to `diags`:
/// errors for malformed files, warnings (file:line + reason) for every rule
/// Picket disables.
pub fn compile(files: &[(Arc<SourceFile>, Node)], diags: &mut Vec<Diagnostic>) -> Compiled {
    compile_with(files, diags, unsupported_mode())
}

/// [`compile`] with an explicit treatment of unsupported rules.
pub fn compile_with(
    files: &[(Arc<SourceFile>, Node)],
    diags: &mut Vec<Diagnostic>,
    mode: Unsupported,
) -> Compiled {
    let mut rd = Reader {
        env: Env::default(),
        rules: Vec::new(),
        diags,
    };
    for (file, root) in files {
        rd.read(file, root);
    }
    let Reader { env, rules, diags } = rd;
    let mut out = Compiled {
        rules: Vec::new(),
        report: Vec::new(),
    };
    for def in rules {
        let id = slug(&def.name);
        let (rule, status, no_sensor) = compile_rule(&env, &def, &id, mode, diags);
        out.report.push(RuleReport {
            id,
            name: def.name.clone(),
            file: def.file.path.clone(),
            line: def.line,
            status,
            no_sensor,
        });
        out.rules.push(rule);
    }
    out
}

fn compile_rule(
    env: &Env,
    def: &RuleDef,
    id: &str,
    mode: Unsupported,
    diags: &mut Vec<Diagnostic>,
) -> (Rule, Status, Vec<String>) {
    let mut findings: Vec<Finding> = Vec::new();
    let mut errors: Vec<Finding> = Vec::new();
    let mut no_sensor = BTreeSet::new();
    let mut events = Vec::new();
    let mut condition = Cond::Const(false);
    let mut exceptions = Vec::new();
    if def.source != "syscall" {
        findings.push(Finding {
            loc: def.loc.clone(),
            reason: format!(
                "source `{}`: Picket only evaluates syscall rules",
                def.source
            ),
        });
    } else if let Some(text) = &def.cond {
        let Translated {
            cond,
            kinds,
            unsupported,
            errors: errs,
            no_sensor: ns,
            needs_pod_spec,
        } = translate::translate(env, text);
        if let Some(loc) = needs_pod_spec {
            diags.push(
                loc.warning(format!(
                    "Falco rule `{}`: `container.privileged` comes from the pod spec \
                     (`securityContext.privileged`) through the Kubernetes API; without pod \
                     metadata (host mode, pod not resolved yet) it is unknown and the rule \
                     does not fire",
                    def.name
                ))
                .rule(Some(id))
                .field("condition"),
            );
        }
        condition = cond;
        findings.extend(unsupported);
        errors.extend(errs);
        no_sensor = ns;
        match &kinds {
            None => findings.push(Finding {
                loc: text.loc(0),
                reason: "the condition does not restrict `evt.type`: Picket rules are indexed by event kind".into(),
            }),
            Some(k) if k.is_empty() => findings.push(Finding {
                loc: text.loc(0),
                reason: if no_sensor.is_empty() {
                    "the condition can never match an event Picket reports".into()
                } else {
                    format!(
                        "no Picket sensor for evt.type {}",
                        no_sensor.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            }),
            Some(k) => events = k.iter().copied().collect(),
        }
        for e in &def.exceptions {
            if let Some(x) = compile_exception(env, &kinds, e, &mut findings, &mut errors) {
                exceptions.push(x);
            }
        }
    } else {
        errors.push(Finding {
            loc: def.loc.clone(),
            reason: "rule has no `condition`".into(),
        });
    }
    let template = output::compile(&def.output);
    let mut reasons: Vec<String> = Vec::new();
    for f in errors.iter().chain(&findings) {
        let pos = f.loc.pos();
        let r = format!("line {}: {}", pos.line, f.reason);
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }
    for f in &errors {
        diags.push(
            f.loc
                .warning(format!("Falco rule `{}` disabled: {}", def.name, f.reason))
                .rule(Some(id))
                .field("condition"),
        );
    }
    let shadow = errors.is_empty() && !findings.is_empty() && mode == Unsupported::Shadow;
    for f in &findings {
        diags.push(
            f.loc
                .warning(format!(
                    "Falco rule `{}` {}: {}",
                    def.name,
                    if shadow {
                        "runs in shadow mode"
                    } else {
                        "disabled"
                    },
                    f.reason
                ))
                .rule(Some(id))
                .field("condition"),
        );
    }
    let no_sensor: Vec<String> = no_sensor.into_iter().collect();
    if !no_sensor.is_empty() && !events.is_empty() {
        diags.push(
            def.loc
                .warning(format!(
                    "Falco rule `{}`: no Picket sensor for evt.type {}; those events are never seen",
                    def.name,
                    no_sensor.join(", ")
                ))
                .rule(Some(id))
                .field("condition"),
        );
    }
    if events.contains(&EventKindName::RawSocket) {
        // `evt.type = socket` maps to `raw_socket`, which the kernel sends
        // only for packet and raw sockets (docs/falco.md).
        diags.push(
            def.loc
                .warning(format!(
                    "Falco rule `{}`: Picket sees socket(2) only for AF_PACKET and raw IPv4/IPv6 \
                     sockets; other socket calls never match",
                    def.name
                ))
                .rule(Some(id))
                .field("condition"),
        );
    }
    let status = if !errors.is_empty() || (!findings.is_empty() && !shadow) {
        Status::Disabled(reasons)
    } else if shadow {
        Status::Shadow(reasons)
    } else if !def.enabled {
        Status::DisabledInFile
    } else {
        Status::Active
    };
    let enabled = matches!(status, Status::Active | Status::Shadow(_));
    let rule = Rule {
        id: Arc::from(id),
        name: def.name.clone(),
        description: def.desc.trim().to_string(),
        severity: def.priority,
        events,
        tags: def.tags.clone(),
        actions: vec![Action::Alert],
        enabled,
        mode: if matches!(status, Status::Shadow(_)) {
            Mode::Shadow
        } else {
            Mode::Enforce
        },
        dedup: None,
        rate_limit: None,
        baseline: None,
        stateful: Default::default(),
        file: def.file.path.clone(),
        line: def.line,
        condition,
        exceptions,
        output: template,
        rule_ref: RuleRef {
            id: id.to_string(),
            name: def.name.clone(),
            tags: def.tags.clone(),
        },
    };
    (rule, status, no_sensor)
}

/// A Falco exception: for each `values` tuple, all its field checks hold.
fn compile_exception(
    env: &Env,
    kinds: &Option<BTreeSet<EventKindName>>,
    e: &ExcDef,
    findings: &mut Vec<Finding>,
    errors: &mut Vec<Finding>,
) -> Option<Exception> {
    if e.values.is_empty() {
        // Declared for later `append`s: nothing to except yet.
        return None;
    }
    if e.comps.len() != e.fields.len() {
        errors.push(Finding {
            loc: e.loc.clone(),
            reason: format!(
                "exception `{}`: {} fields but {} comps",
                e.name,
                e.fields.len(),
                e.comps.len()
            ),
        });
        return None;
    }
    let mut tuples = Vec::new();
    for tuple in &e.values {
        if tuple.len() != e.fields.len() {
            errors.push(Finding {
                loc: e.loc.clone(),
                reason: format!(
                    "exception `{}`: a values entry has {} items for {} fields",
                    e.name,
                    tuple.len(),
                    e.fields.len()
                ),
            });
            return None;
        }
        let mut clauses = Vec::new();
        for ((field, comp), (vals, is_list)) in e.fields.iter().zip(&e.comps).zip(tuple) {
            let t = translate::translate_check(
                env,
                kinds,
                field,
                comp,
                vals.clone(),
                *is_list || e.single,
                &e.loc,
            );
            findings.extend(t.unsupported);
            errors.extend(t.errors);
            clauses.push(t.cond);
        }
        tuples.push(Cond::And(clauses.into()));
    }
    Some(Exception {
        name: e.name.clone(),
        cond: Cond::Or(tuples.into()),
    })
}

#[cfg(test)]
mod tests;
