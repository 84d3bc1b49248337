//! Reads rule files (YAML trees) into raw, located definitions.
//!
//! Every key is checked here: unknown keys, wrong value shapes, bad ids,
//! severities, event kinds, tags, actions, durations. Conditions and output
//! templates are only located here; `compile` type-checks them.

use std::{sync::Arc, time::Duration};

use super::{
    diagnostics::{Diagnostic, did_you_mean},
    source::{Loc, SourceFile},
    yaml::{Node, Value},
};
use crate::model::{EventKindName, Severity};

/// What a rule does when it fires. Containment actions are validated now and
/// carried out by the response module (a later issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Alert,
    KillProcess,
    BlockEgress,
    IsolatePod,
    DeletePod,
    KillContainer,
}

impl Action {
    pub const NAMES: &'static [&'static str] = &[
        "alert",
        "kill-process",
        "block-egress",
        "isolate-pod",
        "delete-pod",
        "kill-container",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "alert" => Self::Alert,
            "kill-process" => Self::KillProcess,
            "block-egress" => Self::BlockEgress,
            "isolate-pod" => Self::IsolatePod,
            "delete-pod" => Self::DeletePod,
            "kill-container" => Self::KillContainer,
            _ => return None,
        })
    }
}

/// `mode: shadow` evaluates and counts but never alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

/// One clause of a structured exception: `field operator values`.
#[derive(Clone, Debug)]
pub struct RawClause {
    pub field: Located<String>,
    pub operator: Located<String>,
    pub values: Vec<Located<String>>,
    /// `values` was one scalar (it may name a list).
    pub values_scalar: bool,
}

#[derive(Clone, Debug)]
pub struct RawException {
    pub name: String,
    pub clauses: Vec<RawClause>,
    /// Set for exceptions from override files scoped to namespaces.
    pub namespaces: Vec<Located<String>>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct RawDedup {
    pub key: Vec<Located<String>>,
    pub window: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitSpec {
    pub max: u32,
    pub per: Duration,
}

/// Settings of a learned rule (`baseline:`), see `rules::baseline`.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineSpec {
    pub learning: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Alert when a minute's connections exceed `rate_factor` x the learned maximum...
    pub rate_factor: u32,
    /// ...and at least this many.
    pub min_rate_per_minute: u32,
    /// Destinations kept per workload; a workload with more stops alerting on new ones.
    pub max_destinations: usize,
    pub max_workloads: usize,
}

impl Default for BaselineSpec {
    fn default() -> Self {
        Self {
            learning: Duration::from_secs(24 * 3600),
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            rate_factor: 10,
            min_rate_per_minute: 60,
            max_destinations: 512,
            max_workloads: 10_000,
        }
    }
}

/// `aggregate:` as written (see `rules::correlate`): the rule fires when one
/// group (`by`) has shown `threshold` distinct values of a `distinct` field
/// within `window`.
#[derive(Clone, Debug)]
pub struct RawAggregate {
    pub by: Vec<Located<String>>,
    pub distinct: Vec<Located<String>>,
    pub threshold: u32,
    pub window: Duration,
    pub max_groups: usize,
    pub loc: Loc,
}

/// `after:` as written (see `rules::correlate`): the rule fires only when
/// the rule `rule` matched an earlier event whose `key` value equals this
/// event's `match` value, within `within`.
#[derive(Clone, Debug)]
pub struct RawAfter {
    pub rule: Located<String>,
    pub key: Vec<Located<String>>,
    pub matching: Located<String>,
    pub within: Duration,
    pub max_entries: usize,
}

/// Default cap on the groups of an `aggregate` and the entries of an `after`.
pub const DEFAULT_MAX_STATE: usize = 4096;

#[derive(Debug)]
pub struct RawRule {
    pub id: Located<String>,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub events: Vec<EventKindName>,
    pub condition: Node,
    pub exceptions: Vec<RawException>,
    pub tags: Vec<String>,
    pub output: Node,
    pub actions: Vec<Action>,
    pub enabled: bool,
    pub mode: Mode,
    pub dedup: Option<RawDedup>,
    pub rate_limit: Option<RateLimitSpec>,
    pub baseline: Option<BaselineSpec>,
    pub aggregate: Option<RawAggregate>,
    pub after: Option<RawAfter>,
    pub file: Arc<SourceFile>,
}

#[derive(Debug)]
pub enum RawOverride {
    /// Adds exceptions to a rule defined elsewhere.
    Rule {
        rule: Located<String>,
        owner: Option<String>,
        exceptions: Vec<RawException>,
    },
    /// Appends items to a list defined elsewhere.
    List {
        list: Located<String>,
        owner: Option<String>,
        append: Vec<Located<String>>,
    },
}

#[derive(Debug, Default)]
pub struct RawFile {
    pub rules: Vec<RawRule>,
    pub lists: Vec<(Located<String>, Vec<Located<String>>)>,
    pub macros: Vec<(Located<String>, Node)>,
    pub overrides: Vec<RawOverride>,
}

/// Reads one parsed file; problems go to `diags`.
pub fn read_file(file: &Arc<SourceFile>, root: &Node, diags: &mut Vec<Diagnostic>) -> RawFile {
    let mut cx = Cx {
        file: file.clone(),
        rule: None,
        diags,
    };
    let mut out = RawFile::default();
    let Some(top) = cx.map(root, "file", &["rules", "lists", "macros", "overrides"]) else {
        return out;
    };
    if let Some(n) = top.get("rules") {
        for (i, r) in cx.seq(n, "rules").iter().enumerate() {
            if let Some(rule) = read_rule(&mut cx, r, i) {
                out.rules.push(rule);
            }
            cx.rule = None;
        }
    }
    if let Some(n) = top.get("lists") {
        for (k, v) in cx.entries(n, "lists") {
            let Some(name) = cx.name(k, "lists") else {
                continue;
            };
            let items = cx.strings(v, &format!("lists.{}", name.value));
            out.lists.push((name, items));
        }
    }
    if let Some(n) = top.get("macros") {
        for (k, v) in cx.entries(n, "macros") {
            let Some(name) = cx.name(k, "macros") else {
                continue;
            };
            if cx.string(v, &format!("macros.{}", name.value)).is_some() {
                out.macros.push((name, v.clone()));
            }
        }
    }
    if let Some(n) = top.get("overrides") {
        for (i, o) in cx.seq(n, "overrides").iter().enumerate() {
            if let Some(o) = read_override(&mut cx, o, i) {
                out.overrides.push(o);
            }
        }
    }
    out
}

const RULE_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "severity",
    "events",
    "condition",
    "exceptions",
    "tags",
    "output",
    "actions",
    "enabled",
    "mode",
    "dedup",
    "rate_limit",
    "baseline",
    "aggregate",
    "after",
];

fn read_rule(cx: &mut Cx<'_>, node: &Node, index: usize) -> Option<RawRule> {
    // Find the id first so every later diagnostic names the rule.
    let id_node = match &node.value {
        Value::Map(e) => e
            .iter()
            .find(|(k, _)| k.as_str() == Some("id"))
            .map(|(_, v)| v),
        _ => None,
    };
    if let Some(id) = id_node.and_then(Node::as_str) {
        cx.rule = Some(id.to_string());
    }
    let m = cx.map(node, &format!("rules[{index}]"), RULE_KEYS)?;
    let errors_before = cx.diags.len();
    let id = match m.get("id") {
        Some(n) => {
            let id = cx.string(n, "id")?;
            if !is_kebab(&id) {
                cx.err(
                    n,
                    "id",
                    format!("rule id `{id}` is not kebab-case"),
                    Some("use lowercase words joined by `-`, e.g. `reverse-shell`".into()),
                );
            }
            Located {
                value: id,
                loc: cx.loc(n),
            }
        }
        None => {
            cx.err(node, "id", "rule has no `id`".into(), None);
            return None;
        }
    };
    let name = cx.required_string(&m, node, "name");
    let description = m
        .get("description")
        .and_then(|n| cx.string(n, "description"))
        .unwrap_or_default();
    let severity = cx.required(&m, node, "severity").and_then(|n| {
        let s = cx.string(n, "severity")?;
        let sev = Severity::parse(&s);
        if sev.is_none() {
            let names = ["info", "low", "medium", "high", "critical"];
            let hint =
                did_you_mean(&s, names).unwrap_or_else(|| format!("one of: {}", names.join(", ")));
            cx.err(n, "severity", format!("unknown severity `{s}`"), Some(hint));
        }
        sev
    });
    let events = cx.required(&m, node, "events").map(|n| {
        let items = cx.strings(n, "events");
        if items.is_empty() {
            cx.err(
                n,
                "events",
                "`events` is empty".into(),
                Some("list the event kinds the rule applies to, e.g. [exec]".into()),
            );
        }
        let mut kinds = Vec::new();
        for it in items {
            match EventKindName::parse(&it.value) {
                Some(k) if kinds.contains(&k) => cx.err_at(
                    &it.loc,
                    "events",
                    format!("event kind `{}` listed twice", it.value),
                    None,
                ),
                Some(k) => kinds.push(k),
                None => {
                    let hint =
                        did_you_mean(&it.value, EventKindName::ALL.iter().map(|k| k.as_str()));
                    cx.err_at(
                        &it.loc,
                        "events",
                        format!("unknown event kind `{}`", it.value),
                        hint,
                    );
                }
            }
        }
        kinds
    });
    let condition = cx
        .required(&m, node, "condition")
        .filter(|n| cx.string(n, "condition").is_some())
        .cloned();
    let output = cx
        .required(&m, node, "output")
        .filter(|n| cx.string(n, "output").is_some())
        .cloned();
    let exceptions = m
        .get("exceptions")
        .map(|n| read_exceptions(cx, n, "exceptions"))
        .unwrap_or_default();
    let tags = m
        .get("tags")
        .map(|n| cx.strings(n, "tags"))
        .unwrap_or_default();
    for t in &tags {
        if let Some(msg) = tag_problem(&t.value) {
            cx.err_at(&t.loc, "tags", msg, Some("MITRE ATT&CK ids look like `T1059` or `T1059.004`; other tags are lowercase words".into()));
        }
    }
    let actions = match m.get("actions") {
        None => vec![Action::Alert],
        Some(n) => {
            let mut acts = Vec::new();
            for a in cx.strings(n, "actions") {
                match Action::parse(&a.value) {
                    Some(x) if acts.contains(&x) => cx.err_at(
                        &a.loc,
                        "actions",
                        format!("action `{}` listed twice", a.value),
                        None,
                    ),
                    Some(x) => acts.push(x),
                    None => {
                        let hint = did_you_mean(&a.value, Action::NAMES.iter().copied())
                            .unwrap_or_else(|| format!("one of: {}", Action::NAMES.join(", ")));
                        cx.err_at(
                            &a.loc,
                            "actions",
                            format!("unknown action `{}`", a.value),
                            Some(hint),
                        );
                    }
                }
            }
            acts
        }
    };
    let enabled = m
        .get("enabled")
        .map(|n| cx.bool(n, "enabled"))
        .unwrap_or(Some(true));
    let mode = match m.get("mode") {
        None => Some(Mode::Enforce),
        Some(n) => match cx.string(n, "mode").as_deref() {
            Some("enforce") => Some(Mode::Enforce),
            Some("shadow") => Some(Mode::Shadow),
            Some(other) => {
                cx.err(
                    n,
                    "mode",
                    format!("unknown mode `{other}`"),
                    Some("one of: enforce, shadow".into()),
                );
                None
            }
            None => None,
        },
    };
    let dedup = m.get("dedup").and_then(|n| {
        let d = cx.map(n, "dedup", &["key", "window"])?;
        let key = d
            .get("key")
            .map(|k| cx.strings(k, "dedup.key"))
            .unwrap_or_default();
        let window = cx
            .required(&d, n, "window")
            .and_then(|w| cx.duration(w, "dedup.window"))?;
        Some(RawDedup { key, window })
    });
    let rate_limit = m.get("rate_limit").and_then(|n| {
        let r = cx.map(n, "rate_limit", &["max", "per"])?;
        let max = cx
            .required(&r, n, "max")
            .and_then(|x| cx.uint(x, "rate_limit.max", 1, u64::from(u32::MAX)))?;
        let per = cx
            .required(&r, n, "per")
            .and_then(|x| cx.duration(x, "rate_limit.per"))?;
        Some(RateLimitSpec {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            per,
        })
    });
    let baseline = m.get("baseline").and_then(|n| read_baseline(cx, n));
    let aggregate = m.get("aggregate").and_then(|n| read_aggregate(cx, n));
    let after = m.get("after").and_then(|n| read_after(cx, n));
    if let (Some(n), true) = (
        m.get("aggregate"),
        m.get("after").is_some() || baseline.is_some(),
    ) {
        cx.err(
            n,
            "aggregate",
            "a rule has at most one of `baseline`, `aggregate` and `after`".into(),
            Some("split the logic into two rules".into()),
        );
    } else if let (Some(n), true) = (m.get("after"), baseline.is_some()) {
        cx.err(
            n,
            "after",
            "a rule has at most one of `baseline`, `aggregate` and `after`".into(),
            None,
        );
    }
    if cx.diags[errors_before..].iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(RawRule {
        id,
        name: name?,
        description,
        severity: severity?,
        events: events?,
        condition: condition?,
        exceptions,
        tags: tags.into_iter().map(|t| t.value).collect(),
        output: output?,
        actions,
        enabled: enabled?,
        mode: mode?,
        dedup,
        rate_limit,
        baseline,
        aggregate,
        after,
        file: cx.file.clone(),
    })
}

fn read_aggregate(cx: &mut Cx<'_>, n: &Node) -> Option<RawAggregate> {
    let keys = ["by", "distinct", "threshold", "window", "max_groups"];
    let m = cx.map(n, "aggregate", &keys)?;
    let by = m
        .get("by")
        .map(|k| cx.strings(k, "aggregate.by"))
        .unwrap_or_default();
    let distinct = cx
        .required(&m, n, "distinct")
        .map(|d| cx.strings(d, "aggregate.distinct"))?;
    if distinct.is_empty() {
        cx.err(
            n,
            "aggregate.distinct",
            "`distinct` is empty".into(),
            Some(
                "name the field(s) whose distinct values are counted, e.g. [network.peer.port]"
                    .into(),
            ),
        );
        return None;
    }
    let threshold = cx
        .required(&m, n, "threshold")
        .and_then(|x| cx.uint(x, "aggregate.threshold", 2, 10_000))?;
    let window = cx
        .required(&m, n, "window")
        .and_then(|w| cx.duration(w, "aggregate.window"))?;
    let max_groups = match m.get("max_groups") {
        Some(x) => usize::try_from(cx.uint(x, "aggregate.max_groups", 1, 1_000_000)?).ok()?,
        None => DEFAULT_MAX_STATE,
    };
    Some(RawAggregate {
        by,
        distinct,
        threshold: u32::try_from(threshold).ok()?,
        window,
        max_groups,
        loc: cx.loc(n),
    })
}

fn read_after(cx: &mut Cx<'_>, n: &Node) -> Option<RawAfter> {
    let keys = ["rule", "key", "match", "within", "max_entries"];
    let m = cx.map(n, "after", &keys)?;
    let rule_n = cx.required(&m, n, "rule")?;
    let rule = Located {
        value: cx.string(rule_n, "after.rule")?,
        loc: cx.loc(rule_n),
    };
    let key = cx
        .required(&m, n, "key")
        .map(|k| cx.strings(k, "after.key"))?;
    if key.is_empty() {
        cx.err(n, "after.key", "`key` is empty".into(), None);
        return None;
    }
    let match_n = cx.required(&m, n, "match")?;
    let matching = Located {
        value: cx.string(match_n, "after.match")?,
        loc: cx.loc(match_n),
    };
    let within = cx
        .required(&m, n, "within")
        .and_then(|w| cx.duration(w, "after.within"))?;
    let max_entries = match m.get("max_entries") {
        Some(x) => usize::try_from(cx.uint(x, "after.max_entries", 1, 1_000_000)?).ok()?,
        None => DEFAULT_MAX_STATE,
    };
    Some(RawAfter {
        rule,
        key,
        matching,
        within,
        max_entries,
    })
}

fn read_baseline(cx: &mut Cx<'_>, n: &Node) -> Option<BaselineSpec> {
    let keys = [
        "learning",
        "ipv4_prefix",
        "ipv6_prefix",
        "rate_factor",
        "min_rate_per_minute",
        "max_destinations",
        "max_workloads",
    ];
    let b = cx.map(n, "baseline", &keys)?;
    let mut spec = BaselineSpec::default();
    if let Some(x) = b.get("learning") {
        spec.learning = cx.duration(x, "baseline.learning")?;
    }
    if let Some(x) = b.get("ipv4_prefix") {
        spec.ipv4_prefix = u8::try_from(cx.uint(x, "baseline.ipv4_prefix", 0, 32)?).ok()?;
    }
    if let Some(x) = b.get("ipv6_prefix") {
        spec.ipv6_prefix = u8::try_from(cx.uint(x, "baseline.ipv6_prefix", 0, 128)?).ok()?;
    }
    if let Some(x) = b.get("rate_factor") {
        spec.rate_factor = u32::try_from(cx.uint(x, "baseline.rate_factor", 1, 1_000_000)?).ok()?;
    }
    if let Some(x) = b.get("min_rate_per_minute") {
        spec.min_rate_per_minute =
            u32::try_from(cx.uint(x, "baseline.min_rate_per_minute", 1, 10_000_000)?).ok()?;
    }
    if let Some(x) = b.get("max_destinations") {
        spec.max_destinations =
            usize::try_from(cx.uint(x, "baseline.max_destinations", 1, 1_000_000)?).ok()?;
    }
    if let Some(x) = b.get("max_workloads") {
        spec.max_workloads =
            usize::try_from(cx.uint(x, "baseline.max_workloads", 1, 10_000_000)?).ok()?;
    }
    Some(spec)
}

fn read_exceptions(cx: &mut Cx<'_>, n: &Node, path: &str) -> Vec<RawException> {
    let mut out = Vec::new();
    for (i, e) in cx.seq(n, path).iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(m) = cx.map(
            e,
            &p,
            &["name", "reason", "field", "operator", "values", "when"],
        ) else {
            continue;
        };
        let Some(name) = cx.required_string(&m, e, "name") else {
            continue;
        };
        let mut clauses = Vec::new();
        let shorthand =
            m.get("field").is_some() || m.get("operator").is_some() || m.get("values").is_some();
        match (m.get("when"), shorthand) {
            (Some(w), true) => cx.err(
                w,
                &p,
                "use either `when` or `field`/`operator`/`values`, not both".into(),
                None,
            ),
            (Some(w), false) => {
                for (j, c) in cx.seq(w, &format!("{p}.when")).iter().enumerate() {
                    let cp = format!("{p}.when[{j}]");
                    if let Some(cm) = cx.map(c, &cp, &["field", "operator", "values"])
                        && let Some(cl) = read_clause(cx, &cm, c, &cp)
                    {
                        clauses.push(cl);
                    }
                }
                if clauses.is_empty() {
                    cx.err(w, &p, "exception has no clauses".into(), None);
                    continue;
                }
            }
            (None, true) => match read_clause(cx, &m, e, &p) {
                Some(cl) => clauses.push(cl),
                None => continue,
            },
            (None, false) => {
                cx.err(
                    e,
                    &p,
                    format!("exception `{name}` has no clauses"),
                    Some("add `field`, `operator` and `values`, or a `when` list of them".into()),
                );
                continue;
            }
        }
        out.push(RawException {
            name,
            clauses,
            namespaces: Vec::new(),
            loc: cx.loc(e),
        });
    }
    out
}

fn read_clause(cx: &mut Cx<'_>, m: &Obj<'_>, node: &Node, path: &str) -> Option<RawClause> {
    let field_n = cx.required(m, node, "field")?;
    let field = Located {
        value: cx.string(field_n, &format!("{path}.field"))?,
        loc: cx.loc(field_n),
    };
    let op_n = cx.required(m, node, "operator")?;
    let operator = Located {
        value: cx.string(op_n, &format!("{path}.operator"))?,
        loc: cx.loc(op_n),
    };
    let values_scalar = matches!(m.get("values").map(|v| &v.value), Some(Value::Scalar(..)));
    let values = match m.get("values") {
        Some(v) if values_scalar => vec![Located {
            value: cx.string(v, &format!("{path}.values"))?,
            loc: cx.loc(v),
        }],
        Some(v) => cx.strings(v, &format!("{path}.values")),
        None => Vec::new(),
    };
    Some(RawClause {
        field,
        operator,
        values,
        values_scalar,
    })
}

fn read_override(cx: &mut Cx<'_>, node: &Node, index: usize) -> Option<RawOverride> {
    let p = format!("overrides[{index}]");
    let m = cx.map(
        node,
        &p,
        &[
            "rule",
            "list",
            "owner",
            "namespaces",
            "exceptions",
            "append",
        ],
    )?;
    let owner = m
        .get("owner")
        .and_then(|n| cx.string(n, &format!("{p}.owner")));
    match (m.get("rule"), m.get("list")) {
        (Some(r), None) => {
            let rule = Located {
                value: cx.string(r, &format!("{p}.rule"))?,
                loc: cx.loc(r),
            };
            cx.rule = Some(rule.value.clone());
            if let Some(a) = m.get("append") {
                cx.err(
                    a,
                    &p,
                    "`append` belongs to list overrides".into(),
                    Some("rule overrides add `exceptions`".into()),
                );
            }
            let namespaces = m
                .get("namespaces")
                .map(|n| cx.strings(n, &format!("{p}.namespaces")))
                .unwrap_or_default();
            let mut exceptions = match m.get("exceptions") {
                Some(e) => read_exceptions(cx, e, &format!("{p}.exceptions")),
                None => {
                    cx.err(node, &p, "rule override has no `exceptions`".into(), None);
                    Vec::new()
                }
            };
            for e in &mut exceptions {
                e.namespaces = namespaces.clone();
            }
            cx.rule = None;
            Some(RawOverride::Rule {
                rule,
                owner,
                exceptions,
            })
        }
        (None, Some(l)) => {
            let list = Located {
                value: cx.string(l, &format!("{p}.list"))?,
                loc: cx.loc(l),
            };
            for bad in ["exceptions", "namespaces"] {
                if let Some(b) = m.get(bad) {
                    cx.err(b, &p, format!("`{bad}` belongs to rule overrides"), None);
                }
            }
            let append = match m.get("append") {
                Some(a) => cx.strings(a, &format!("{p}.append")),
                None => {
                    cx.err(node, &p, "list override has no `append`".into(), None);
                    Vec::new()
                }
            };
            Some(RawOverride::List {
                list,
                owner,
                append,
            })
        }
        _ => {
            cx.err(
                node,
                &p,
                "an override names exactly one `rule` or `list`".into(),
                None,
            );
            None
        }
    }
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && s.as_bytes()[0].is_ascii_lowercase()
}

/// MITRE ATT&CK ids (`T1059`, `T1059.004`), or lowercase words (`container`, `mitre:execution`).
fn tag_problem(t: &str) -> Option<String> {
    let b = t.as_bytes();
    if b.first() == Some(&b'T') && b.get(1).is_some_and(u8::is_ascii_digit) {
        let ok = (t.len() == 5
            || (t.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
            && b[1..5].iter().all(u8::is_ascii_digit);
        return (!ok).then(|| format!("malformed MITRE ATT&CK id `{t}`"));
    }
    let ok = !t.is_empty()
        && t.bytes().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'-' | b'_' | b'.' | b':' | b'/')
        });
    (!ok).then(|| format!("invalid tag `{t}`"))
}

pub fn is_mitre(t: &str) -> bool {
    t.starts_with('T') && tag_problem(t).is_none()
}

/// `500ms`, `30s`, `5m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86400)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// A mapping's entries, after the unknown-key check.
pub struct Obj<'a> {
    entries: &'a [(Node, Node)],
}

impl<'a> Obj<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// Reading context: the file, the rule being read, the diagnostics sink.
struct Cx<'d> {
    file: Arc<SourceFile>,
    rule: Option<String>,
    diags: &'d mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn loc(&self, n: &Node) -> Loc {
        Loc::Yaml(self.file.clone(), n.pos)
    }

    fn err(&mut self, n: &Node, field: &str, msg: String, hint: Option<String>) {
        let loc = self.loc(n);
        self.err_at(&loc, field, msg, hint);
    }

    fn err_at(&mut self, loc: &Loc, field: &str, msg: String, hint: Option<String>) {
        self.diags.push(
            loc.error(msg)
                .rule(self.rule.as_deref())
                .field(field)
                .hint(hint),
        );
    }

    fn map<'n>(&mut self, n: &'n Node, field: &str, allowed: &[&str]) -> Option<Obj<'n>> {
        let Value::Map(entries) = &n.value else {
            if n.is_null() {
                return Some(Obj { entries: &[] });
            }
            self.err(
                n,
                field,
                format!("expected a mapping, found {}", n.kind_name()),
                None,
            );
            return None;
        };
        for (k, _) in entries {
            let key = k.as_str().unwrap_or_default();
            if !allowed.contains(&key) {
                let hint = did_you_mean(key, allowed.iter().copied())
                    .or_else(|| Some(format!("allowed keys: {}", allowed.join(", "))));
                self.err(k, field, format!("unknown key `{key}`"), hint);
            }
        }
        Some(Obj { entries })
    }

    fn entries<'n>(&mut self, n: &'n Node, field: &str) -> &'n [(Node, Node)] {
        match &n.value {
            Value::Map(e) => e,
            _ if n.is_null() => &[],
            _ => {
                self.err(
                    n,
                    field,
                    format!("expected a mapping of names, found {}", n.kind_name()),
                    None,
                );
                &[]
            }
        }
    }

    fn seq<'n>(&mut self, n: &'n Node, field: &str) -> &'n [Node] {
        match &n.value {
            Value::Seq(items) => items,
            _ if n.is_null() => &[],
            _ => {
                self.err(
                    n,
                    field,
                    format!("expected a list, found {}", n.kind_name()),
                    None,
                );
                &[]
            }
        }
    }

    fn required<'n>(&mut self, m: &Obj<'n>, parent: &Node, key: &str) -> Option<&'n Node> {
        let v = m.get(key);
        if v.is_none() {
            self.err(parent, key, format!("missing required key `{key}`"), None);
        }
        v
    }

    fn required_string(&mut self, m: &Obj<'_>, parent: &Node, key: &str) -> Option<String> {
        let n = self.required(m, parent, key)?;
        self.string(n, key)
    }

    fn string(&mut self, n: &Node, field: &str) -> Option<String> {
        match &n.value {
            Value::Scalar(s, _) if !n.is_null() => Some(s.clone()),
            _ => {
                self.err(
                    n,
                    field,
                    format!(
                        "expected a string, found {}",
                        if n.is_null() {
                            "nothing"
                        } else {
                            n.kind_name()
                        }
                    ),
                    None,
                );
                None
            }
        }
    }

    fn name(&mut self, n: &Node, field: &str) -> Option<Located<String>> {
        let s = self.string(n, field)?;
        let ok = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            self.err(
                n,
                field,
                format!("invalid name `{s}`"),
                Some("names use letters, digits, `_` and `-`".into()),
            );
            return None;
        }
        Some(Located {
            value: s,
            loc: self.loc(n),
        })
    }

    /// A list of strings (a single scalar is not accepted: lists stay lists).
    fn strings(&mut self, n: &Node, field: &str) -> Vec<Located<String>> {
        let mut out = Vec::new();
        for it in self.seq(n, field) {
            if let Some(s) = self.string(it, field) {
                out.push(Located {
                    value: s,
                    loc: self.loc(it),
                });
            }
        }
        out
    }

    fn bool(&mut self, n: &Node, field: &str) -> Option<bool> {
        match n.as_str() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.err(n, field, "expected `true` or `false`".into(), None);
                None
            }
        }
    }

    fn uint(&mut self, n: &Node, field: &str, min: u64, max: u64) -> Option<u64> {
        match n.as_str().and_then(|s| s.parse::<u64>().ok()) {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.err(
                    n,
                    field,
                    format!("expected an integer from {min} to {max}"),
                    None,
                );
                None
            }
        }
    }

    fn duration(&mut self, n: &Node, field: &str) -> Option<Duration> {
        let d = n.as_str().and_then(parse_duration);
        if d.is_none() {
            self.err(
                n,
                field,
                "expected a duration such as `30s`, `5m`, `1h` or `500ms`".into(),
                None,
            );
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_ids() {
        assert_eq!(tag_problem("T1059.004"), None);
        assert_eq!(tag_problem("T1611"), None);
        assert_eq!(
            tag_problem("T159"),
            Some("malformed MITRE ATT&CK id `T159`".into())
        );
        assert_eq!(
            tag_problem("T1059.04"),
            Some("malformed MITRE ATT&CK id `T1059.04`".into())
        );
        assert_eq!(tag_problem("container"), None);
        assert_eq!(
            tag_problem("Container"),
            Some("invalid tag `Container`".into())
        );
        assert!(is_kebab("exec-into-pod"));
        assert!(!is_kebab("Exec_into"));
        assert!(!is_kebab("a--b"));
        assert!(!is_kebab("-a"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5w"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }
}
