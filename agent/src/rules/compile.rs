//! Turns rule files into a [`RuleSet`]: reads and checks every file, builds
//! the shared lists and macros, applies override files, type-checks every
//! condition, exception and output template, and indexes rules by event kind.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    correlate::{AFTER_EXTRAS, AGGREGATE_EXTRAS, After, Aggregate, Feed, Stateful},
    diagnostics::{Diagnostic, Level, did_you_mean},
    expr::{
        self, Cond, Op,
        compile::{Compiler, Env, ListDef, MacroDef, Raw, build_pred},
        eval::{Pred, StrSet, Test},
    },
    fields::{self, Accessor},
    parse::{self, Action, BaselineSpec, Mode, RateLimitSpec, RawException, RawOverride, RawRule},
    source::{ExprSource, Loc, SourceFile},
    template::Template,
    yaml,
};
use crate::model::{EventKindName, RuleRef, Severity};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub events: Vec<EventKindName>,
    pub tags: Vec<String>,
    pub actions: Vec<Action>,
    pub enabled: bool,
    pub mode: Mode,
    pub dedup: Option<Dedup>,
    pub rate_limit: Option<RateLimitSpec>,
    pub baseline: Option<BaselineSpec>,
    /// `aggregate` / `after` and the `after` rules this rule feeds
    /// (`rules::correlate`).
    pub stateful: Stateful,
    /// Where the rule is defined (for messages).
    pub file: PathBuf,
    pub line: usize,
    pub(crate) condition: Cond,
    pub(crate) exceptions: Vec<Exception>,
    pub(crate) output: Template,
    pub(crate) rule_ref: RuleRef,
}

/// A compiled exception: when it matches, the rule does not fire.
#[derive(Debug)]
pub struct Exception {
    pub name: String,
    pub(crate) cond: Cond,
}

/// `dedup:` one alert per key per window.
#[derive(Debug)]
pub struct Dedup {
    pub(crate) key: Vec<Accessor>,
    pub window: Duration,
}

/// A compiled, immutable rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Indexes of enabled rules, per event kind (`EventKindName as usize`).
    by_kind: Vec<Vec<usize>>,
    warnings: Vec<Diagnostic>,
    files: Vec<PathBuf>,
    /// How each rule from a Falco rules file loaded (`rules::falco`).
    falco: Vec<super::falco::RuleReport>,
}

/// Names an output template of a learned rule may use besides event fields.
pub const BASELINE_EXTRAS: &[&str] = &[
    "baseline.reason",
    "baseline.workload",
    "baseline.destination",
];

impl Rule {
    /// The compiled condition (macros and lists expanded), for analyses
    /// such as which rules the kernel can decide on its own.
    pub fn condition(&self) -> &Cond {
        &self.condition
    }

    /// The compiled exceptions.
    pub fn exceptions(&self) -> &[Exception] {
        &self.exceptions
    }
}

impl Exception {
    pub fn condition(&self) -> &Cond {
        &self.cond
    }
}

impl RuleSet {
    /// Loads rule files and directories (`*.yaml`/`*.yml` directly inside a
    /// directory, sorted; hidden entries such as ConfigMap `..data` skipped).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<RuleSet, Vec<Diagnostic>> {
        let files = collect_files(paths)?;
        let mut sources = Vec::with_capacity(files.len());
        let mut diags = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => sources.push((f, text)),
                Err(e) => diags.push(Diagnostic::error(
                    f,
                    yaml::Pos::default(),
                    format!("cannot read: {e}"),
                )),
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Self::from_sources(sources)
    }

    /// Compiles rule files given as (path, text); the path is only used in messages.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<RuleSet, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let set = compile(sources, &mut diags);
        // A macro used by several rules reports its problem once.
        let mut seen = HashSet::new();
        diags.retain(|d| seen.insert((d.file.clone(), d.line, d.column, d.message.clone())));
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        Ok(RuleSet {
            warnings: diags,
            ..set
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }

    /// Enabled rules that apply to `kind`, as indexes into [`Self::rules`].
    #[inline]
    pub fn for_kind(&self, kind: EventKindName) -> &[usize] {
        self.by_kind.get(kind as usize).map_or(&[], Vec::as_slice)
    }

    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The rules that came from Falco rules files, with how each loaded.
    pub fn falco_report(&self) -> &[super::falco::RuleReport] {
        &self.falco
    }
}

/// The rule files named by `paths` (files as given, directories scanned).
pub fn collect_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| {
                            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                            !name.starts_with('.')
                                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                                && f.is_file()
                        })
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => diags.push(Diagnostic::error(
                    p,
                    yaml::Pos::default(),
                    format!("cannot read directory: {e}"),
                )),
            }
        } else if p.is_file() {
            files.push(p.to_path_buf());
        } else {
            diags.push(Diagnostic::error(
                p,
                yaml::Pos::default(),
                "no such rule file or directory",
            ));
        }
    }
    if diags.is_empty() {
        Ok(files)
    } else {
        Err(diags)
    }
}

fn compile(sources: Vec<(PathBuf, String)>, diags: &mut Vec<Diagnostic>) -> RuleSet {
    let mut raws = Vec::new();
    let mut falco_files = Vec::new();
    let mut files = Vec::new();
    for (path, text) in sources {
        files.push(path.clone());
        let file = Arc::new(SourceFile { path, text });
        match yaml::parse(&file.text) {
            // Falco rule files are recognised by their shape and compiled
            // into the same rule set (see `rules::falco`).
            Ok(root) if super::falco::is_falco(&root) => falco_files.push((file.clone(), root)),
            Ok(root) => raws.push((file.clone(), parse::read_file(&file, &root, diags))),
            Err(e) => {
                let mut d = Diagnostic::error(
                    file.path.clone(),
                    e.pos,
                    format!("invalid YAML: {}", e.message),
                );
                d.source_line = yaml::source_line(&file.text, e.pos.line);
                diags.push(d);
            }
        }
    }

    // Lists and macros are global: names are unique across files.
    let mut env = Env::default();
    let mut defined_at: HashMap<String, Loc> = HashMap::new();
    for (_, raw) in &raws {
        for (name, items) in &raw.lists {
            if let Some(prev) = defined_at.get(&name.value) {
                diags.push(name.loc.error(format!("`{}` is already defined at line {}", name.value, prev.pos().line)).field("lists")
                    .hint(Some("extend a list from another file with an override: `- list: NAME` + `append: [...]`".into())));
                continue;
            }
            defined_at.insert(name.value.clone(), name.loc.clone());
            let items = items
                .iter()
                .map(|i| (i.value.clone(), i.loc.clone()))
                .collect();
            env.lists.insert(name.value.clone(), ListDef { items });
        }
        for (name, node) in &raw.macros {
            if let Some(prev) = defined_at.get(&name.value) {
                diags.push(
                    name.loc
                        .error(format!(
                            "`{}` is already defined at line {}",
                            name.value,
                            prev.pos().line
                        ))
                        .field("macros"),
                );
                continue;
            }
            defined_at.insert(name.value.clone(), name.loc.clone());
            let Loc::Yaml(file, _) = &name.loc else {
                continue;
            };
            let src = Arc::new(ExprSource {
                file: file.clone(),
                node: node.clone(),
            });
            let expr = match expr::parse(node.as_str().unwrap_or_default()) {
                Ok(e) => Some(e),
                Err(e) => {
                    diags.push(
                        Loc::Expr(src.clone(), e.offset)
                            .error(e.message)
                            .field(format!("macros.{}", name.value))
                            .hint(e.hint),
                    );
                    None
                }
            };
            env.macros
                .insert(name.value.clone(), MacroDef { expr, src });
        }
    }
    // List overrides, from any file.
    for (_, raw) in &raws {
        for o in &raw.overrides {
            if let RawOverride::List { list, append, .. } = o {
                match env.lists.get_mut(&list.value) {
                    Some(l) => l
                        .items
                        .extend(append.iter().map(|i| (i.value.clone(), i.loc.clone()))),
                    None => diags.push(
                        list.loc
                            .error(format!("override of unknown list `{}`", list.value))
                            .field("overrides")
                            .hint(did_you_mean(
                                &list.value,
                                env.lists.keys().map(String::as_str),
                            )),
                    ),
                }
            }
        }
    }

    let mut rules: Vec<Rule> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (_, raw) in &raws {
        for r in &raw.rules {
            if let Some(&prev) = ids.get(&r.id.value) {
                diags.push(
                    r.id.loc
                        .error(format!(
                            "duplicate rule id `{}` (first defined in {}:{})",
                            r.id.value,
                            rules[prev].file.display(),
                            rules[prev].line
                        ))
                        .rule(Some(&r.id.value))
                        .field("id"),
                );
                continue;
            }
            if let Some(rule) = compile_rule(r, &env, diags) {
                ids.insert(r.id.value.clone(), rules.len());
                rules.push(rule);
            }
        }
    }
    // Rule overrides: extra exceptions, possibly scoped to namespaces.
    for (_, raw) in &raws {
        for o in &raw.overrides {
            let RawOverride::Rule {
                rule, exceptions, ..
            } = o
            else {
                continue;
            };
            let Some(&idx) = ids.get(&rule.value) else {
                // A rule that failed to compile has already been reported.
                let defined = raws
                    .iter()
                    .any(|(_, r)| r.rules.iter().any(|x| x.id.value == rule.value));
                if !defined {
                    diags.push(
                        rule.loc
                            .error(format!("override of unknown rule `{}`", rule.value))
                            .field("overrides")
                            .hint(did_you_mean(&rule.value, ids.keys().map(String::as_str))),
                    );
                }
                continue;
            };
            let events = rules[idx].events.clone();
            let mut c = Compiler::new(&env, &events);
            for e in exceptions {
                if let Some(x) = compile_exception(&mut c, e) {
                    rules[idx].exceptions.push(x);
                }
            }
            diags.extend(
                c.diags
                    .into_iter()
                    .map(|d| with_rule(d, &rule.value, "overrides")),
            );
        }
    }
    link_after(&raws, &env, &ids, &mut rules, diags);
    let falco = super::falco::compile(&falco_files, diags);
    for r in falco.rules {
        if let Some(&prev) = ids.get(&*r.id) {
            diags.push(
                Diagnostic::error(
                    r.file.clone(),
                    yaml::Pos {
                        line: r.line,
                        column: 1,
                    },
                    format!(
                        "duplicate rule id `{}` (first defined in {}:{})",
                        r.id,
                        rules[prev].file.display(),
                        rules[prev].line
                    ),
                )
                .rule(Some(&r.id)),
            );
            continue;
        }
        ids.insert(r.id.to_string(), rules.len());
        rules.push(r);
    }
    // Unused lists and macros are probably typos of a used name.
    let used = used_names(&raws);
    for (name, loc) in &defined_at {
        if !used.contains(name.as_str()) {
            diags.push(loc.warning(format!("`{name}` is defined but never used")));
        }
    }
    let mut by_kind = vec![Vec::new(); EventKindName::ALL.len()];
    for (i, r) in rules.iter().enumerate() {
        if r.enabled {
            for k in &r.events {
                by_kind[*k as usize].push(i);
            }
        }
    }
    RuleSet {
        rules,
        by_kind,
        warnings: Vec::new(),
        files,
        falco: falco.report,
    }
}

/// Connects each `after` rule to the rule it follows: the producer gets a
/// [`Feed`] whose key fields are type-checked against the producer's own
/// event kinds.
fn link_after(
    raws: &[(Arc<SourceFile>, parse::RawFile)],
    env: &Env,
    ids: &HashMap<String, usize>,
    rules: &mut [Rule],
    diags: &mut Vec<Diagnostic>,
) {
    for (_, raw) in raws {
        for r in &raw.rules {
            let Some(a) = &r.after else { continue };
            let id = r.id.value.as_str();
            if !ids.contains_key(id) {
                continue; // failed to compile: reported already
            }
            let Some(&producer) = ids.get(&a.rule.value) else {
                diags.push(
                    a.rule
                        .loc
                        .error(format!("`after` names an unknown rule `{}`", a.rule.value))
                        .rule(Some(id))
                        .field("after.rule")
                        .hint(did_you_mean(&a.rule.value, ids.keys().map(String::as_str))),
                );
                continue;
            };
            if a.rule.value == id {
                diags.push(
                    a.rule
                        .loc
                        .error("`after` names the rule itself")
                        .rule(Some(id))
                        .field("after.rule"),
                );
                continue;
            }
            let events = rules[producer].events.clone();
            let mut c = Compiler::new(env, &events);
            let key: Vec<Accessor> = a
                .key
                .iter()
                .filter_map(|k| c.field(&k.value, &k.loc).map(|f| f.accessor))
                .collect();
            let ok = c.diags.is_empty();
            diags.extend(c.diags.into_iter().map(|d| with_rule(d, id, "after.key")));
            if ok {
                rules[producer].stateful.feeds.push(Feed {
                    consumer: Arc::from(id),
                    key,
                    within: a.within,
                    max_entries: a.max_entries,
                });
            }
        }
    }
}

fn with_rule(mut d: Diagnostic, rule: &str, field: &str) -> Diagnostic {
    if d.rule.is_none() {
        d.rule = Some(rule.to_string());
    }
    if d.field.is_none() {
        d.field = Some(field.to_string());
    }
    d
}

/// Names referenced anywhere (conservatively: every identifier-like word in
/// conditions and macros, plus list overrides).
fn used_names(raws: &[(Arc<SourceFile>, parse::RawFile)]) -> HashSet<String> {
    let mut used = HashSet::new();
    let mut add_words = |s: &str| {
        for w in s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            used.insert(w.to_string());
        }
    };
    for (_, raw) in raws {
        for r in &raw.rules {
            add_words(r.condition.as_str().unwrap_or_default());
            for cl in r
                .exceptions
                .iter()
                .flat_map(|e| &e.clauses)
                .filter(|c| c.values_scalar)
            {
                add_words(&cl.values[0].value);
            }
        }
        for (_, m) in &raw.macros {
            add_words(m.as_str().unwrap_or_default());
        }
    }
    for (_, raw) in raws {
        for o in &raw.overrides {
            match o {
                RawOverride::List { list, .. } => {
                    used.insert(list.value.clone());
                }
                RawOverride::Rule { exceptions, .. } => {
                    for cl in exceptions
                        .iter()
                        .flat_map(|e| &e.clauses)
                        .filter(|c| c.values_scalar)
                    {
                        used.insert(cl.values[0].value.clone());
                    }
                }
            }
        }
    }
    used
}

fn compile_rule(r: &RawRule, env: &Env, diags: &mut Vec<Diagnostic>) -> Option<Rule> {
    let id = r.id.value.as_str();
    let before = diags.iter().filter(|d| d.is_error()).count();
    let cond_src = Arc::new(ExprSource {
        file: r.file.clone(),
        node: r.condition.clone(),
    });
    let mut c = Compiler::new(env, &r.events);
    let condition = match expr::parse(r.condition.as_str().unwrap_or_default()) {
        Ok(e) => c.compile(&e, &cond_src),
        Err(e) => {
            c.diags.push(
                Loc::Expr(cond_src.clone(), e.offset)
                    .error(e.message)
                    .hint(e.hint),
            );
            Cond::Const(false)
        }
    };
    let exceptions: Vec<Exception> = r
        .exceptions
        .iter()
        .filter_map(|e| compile_exception(&mut c, e))
        .collect();
    let dedup = r.dedup.as_ref().map(|d| Dedup {
        key: d
            .key
            .iter()
            .filter_map(|k| c.field(&k.value, &k.loc).map(|f| f.accessor))
            .collect(),
        window: d.window,
    });
    let aggregate = r.aggregate.as_ref().map(|a| Aggregate {
        by: a
            .by
            .iter()
            .filter_map(|k| c.field(&k.value, &k.loc).map(|f| f.accessor))
            .collect(),
        distinct: a
            .distinct
            .iter()
            .filter_map(|k| {
                c.field(&k.value, &k.loc)
                    .map(|f| (k.value.clone(), f.accessor))
            })
            .collect(),
        threshold: a.threshold,
        window: a.window,
        max_groups: a.max_groups,
    });
    let after = r.after.as_ref().and_then(|a| {
        c.field(&a.matching.value, &a.matching.loc).map(|f| After {
            rule: Arc::from(a.rule.value.as_str()),
            matching: f.accessor,
            within: a.within,
        })
    });
    let mut rule_diags: Vec<Diagnostic> = c
        .diags
        .into_iter()
        .map(|d| with_rule(d, id, "condition"))
        .collect();
    let out_src = Arc::new(ExprSource {
        file: r.file.clone(),
        node: r.output.clone(),
    });
    let extras: &[&str] = if r.baseline.is_some() {
        BASELINE_EXTRAS
    } else if r.aggregate.is_some() {
        AGGREGATE_EXTRAS
    } else if r.after.is_some() {
        AFTER_EXTRAS
    } else {
        &[]
    };
    let mut out_diags = Vec::new();
    let output = Template::compile(&out_src, extras, &mut out_diags);
    rule_diags.extend(out_diags.into_iter().map(|d| with_rule(d, id, "output")));
    if r.baseline.is_some()
        && r.events
            .iter()
            .any(|k| !matches!(k, EventKindName::Connect | EventKindName::Send))
    {
        rule_diags.push(
            r.id.loc
                .error(
                    "a `baseline` rule learns egress: its events must be `connect` and/or `send`",
                )
                .rule(Some(id))
                .field("events"),
        );
    }
    if r.mode == Mode::Shadow && r.actions.iter().any(|a| *a != Action::Alert) {
        rule_diags.push(
            r.id.loc
                .warning("containment actions never run in shadow mode")
                .rule(Some(id))
                .field("actions"),
        );
    }
    if !r.tags.iter().any(|t| parse::is_mitre(t)) {
        rule_diags.push(
            r.id.loc
                .warning("rule has no MITRE ATT&CK tag")
                .rule(Some(id))
                .field("tags")
                .hint(Some("add a technique id such as `T1059.004`".into())),
        );
    }
    diags.extend(rule_diags);
    if diags.iter().filter(|d| d.is_error()).count() > before {
        return None;
    }
    Some(Rule {
        id: Arc::from(id),
        name: r.name.clone(),
        description: r.description.clone(),
        severity: r.severity,
        events: r.events.clone(),
        tags: r.tags.clone(),
        actions: r.actions.clone(),
        enabled: r.enabled,
        mode: r.mode,
        dedup,
        rate_limit: r.rate_limit,
        baseline: r.baseline.clone(),
        stateful: Stateful {
            aggregate,
            after,
            feeds: Vec::new(),
        },
        file: r.file.path.clone(),
        line: r.id.loc.pos().line,
        condition,
        exceptions,
        output,
        rule_ref: RuleRef {
            id: id.to_string(),
            name: r.name.clone(),
            tags: r.tags.clone(),
        },
    })
}

/// `operator` as written in a structured exception: a condition operator,
/// optionally prefixed by `not `, or `exists` / `not exists`.
fn compile_exception(c: &mut Compiler<'_>, e: &RawException) -> Option<Exception> {
    let mut preds = Vec::new();
    let mut ok = true;
    for cl in &e.clauses {
        let Some(f) = c.field(&cl.field.value, &cl.field.loc) else {
            ok = false;
            continue;
        };
        let op_text = cl.operator.value.trim();
        let (negated, op_word) = match op_text.strip_prefix("not ") {
            Some(rest) => (true, rest.trim()),
            None => (false, op_text),
        };
        if op_word == "exists" {
            if !cl.values.is_empty() {
                c.diags
                    .push(cl.operator.loc.error("`exists` takes no `values`"));
                ok = false;
                continue;
            }
            let p = Pred {
                field: f.name.into(),
                accessor: f.accessor,
                test: Test::Exists,
                negate: false,
            };
            let cond = Cond::Pred(Box::new(p));
            preds.push(if negated {
                Cond::Not(Box::new(cond))
            } else {
                cond
            });
            continue;
        }
        let Some(mut op) = Op::parse(op_word) else {
            let names = [
                "==",
                "!=",
                "<",
                "<=",
                ">",
                ">=",
                "in",
                "startswith",
                "endswith",
                "contains",
                "glob",
                "matches",
                "cidr",
                "exists",
            ];
            let hint = did_you_mean(op_word, names).unwrap_or_else(|| {
                format!(
                    "one of: {} (optionally prefixed by `not `)",
                    names.join(", ")
                )
            });
            c.diags.push(
                cl.operator
                    .loc
                    .error(format!("unknown operator `{op_text}`"))
                    .hint(Some(hint)),
            );
            ok = false;
            continue;
        };
        // `values: some_list` names a list.
        let expanded: Vec<(String, Loc)> = match cl.values.first() {
            Some(v) if cl.values_scalar && c.env.lists.contains_key(&v.value) => {
                c.env.lists[&v.value].items.clone()
            }
            _ => cl
                .values
                .iter()
                .map(|v| (v.value.clone(), v.loc.clone()))
                .collect(),
        };
        if expanded.is_empty() {
            c.diags
                .push(cl.operator.loc.error("exception clause has no `values`"));
            ok = false;
            continue;
        }
        // `==` with several values means any of them.
        let mut negated = negated;
        if expanded.len() > 1 && matches!(op, Op::Eq | Op::Ne) {
            negated ^= op == Op::Ne;
            op = Op::In;
        }
        let is_list = op == Op::In || expanded.len() > 1;
        let values = expanded
            .into_iter()
            .map(|(v, l)| (Raw::Text(v), l))
            .collect();
        match build_pred(&f, op, negated, values, is_list, &cl.operator.loc) {
            Ok(p) => preds.push(Cond::Pred(Box::new(p))),
            Err(d) => {
                c.diags.push(d);
                ok = false;
            }
        }
    }
    if !e.namespaces.is_empty() {
        let ns = fields::resolve("k8s.namespace.name")?;
        let names = e.namespaces.iter().map(|n| n.value.clone()).collect();
        preds.insert(
            0,
            Cond::Pred(Box::new(Pred {
                field: ns.name.into(),
                accessor: ns.accessor,
                test: Test::StrIn(StrSet::new(names)),
                negate: false,
            })),
        );
    }
    ok.then(|| Exception {
        name: e.name.clone(),
        cond: Cond::And(preds.into()),
    })
}

/// Levels present, for callers that only want to know whether it loaded cleanly.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.level == Level::Error)
}
