//! Falco condition trees → Picket's compiled [`Cond`] (the one engine).
//!
//! Three steps: expand macros and lists (Falco semantics: lists inline into
//! parenthesised value lists, list items may name lists), find the event
//! kinds the rule can match from its `evt.type` tests, then map every check
//! onto Picket predicates. A check that cannot be evaluated faithfully is
//! recorded as *unsupported* with its location and reason; the caller
//! disables the rule (or, when asked, runs it in shadow mode with those
//! checks false).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use globset::{GlobBuilder, GlobSetBuilder};

use super::{
    cond::{self, Ast, FieldRef, Rhs, Value},
    fields::{self as ff, Mapping},
};
use crate::{
    model::EventKindName as K,
    rules::{
        expr::{
            Cond, Op,
            compile::{Raw, build_pred},
            eval::{Pred, StrSet, Test},
        },
        fields::{self, FieldType, Resolved},
        source::{ExprSource, Loc},
    },
};

/// Condition text assembled from one or more YAML scalars (`append`).
#[derive(Clone, Debug)]
pub struct Text {
    pub text: String,
    /// (start offset in `text`, the scalar it came from).
    pub pieces: Vec<(usize, Arc<ExprSource>)>,
}

impl Text {
    pub fn new(src: Arc<ExprSource>) -> Self {
        Self {
            text: src.node.as_str().unwrap_or_default().to_string(),
            pieces: vec![(0, src)],
        }
    }

    pub fn append(&mut self, src: Arc<ExprSource>) {
        self.text.push(' ');
        let start = self.text.len();
        self.text.push_str(src.node.as_str().unwrap_or_default());
        self.pieces.push((start, src));
    }

    pub fn loc(&self, offset: usize) -> Loc {
        let (start, src) = self
            .pieces
            .iter()
            .rev()
            .find(|(s, _)| *s <= offset)
            .unwrap_or(&self.pieces[0]);
        Loc::Expr(src.clone(), offset.saturating_sub(*start))
    }
}

/// A macro: its text and, once parsed, its tree.
#[derive(Debug)]
pub struct MacroDef {
    pub text: Text,
}

/// Lists and macros of all Falco files (Falco's global namespace).
#[derive(Debug, Default)]
pub struct Env {
    pub lists: HashMap<String, Vec<String>>,
    pub macros: HashMap<String, MacroDef>,
}

/// A problem found while translating: where, and why.
#[derive(Clone, Debug)]
pub struct Finding {
    pub loc: Loc,
    pub reason: String,
}

/// The translation of one condition.
pub struct Translated {
    pub cond: Cond,
    pub kinds: Option<BTreeSet<K>>,
    /// Checks that cannot be evaluated faithfully (they evaluate as false).
    pub unsupported: Vec<Finding>,
    /// Errors in the rule text itself (syntax, unknown macro, bad value).
    pub errors: Vec<Finding>,
    /// `evt.type` values Picket has no sensor for.
    pub no_sensor: BTreeSet<String>,
    /// Where the condition uses a field only pod metadata from the
    /// Kubernetes API provides (`container.privileged`): absent in host
    /// mode, so the rule cannot fire there.
    pub needs_pod_spec: Option<Loc>,
}

/// The expanded tree: macros inlined, lists expanded, locations resolved.
enum X {
    And(Vec<X>),
    Or(Vec<X>),
    Not(Box<X>),
    Const(bool),
    Exists(FieldRef, Loc),
    Cmp {
        field: FieldRef,
        field_loc: Loc,
        op: String,
        op_loc: Loc,
        values: Vec<Val>,
        is_list: bool,
    },
}

enum Val {
    Lit(String, Loc),
    Field(FieldRef),
}

const MAX_MACRO_DEPTH: usize = 32;
const MAX_LIST_DEPTH: usize = 16;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

struct Cx<'a> {
    env: &'a Env,
    /// Parsed macros, memoised.
    parsed: HashMap<String, Result<Ast, cond::ParseError>>,
    stack: Vec<String>,
    kinds: Option<BTreeSet<K>>,
    unsupported: Vec<Finding>,
    errors: Vec<Finding>,
    no_sensor: BTreeSet<String>,
    needs_pod_spec: Option<Loc>,
}

/// Translates a condition; `extra` are additional (exception) checks that
/// share the rule's kinds, translated by [`translate_with_kinds`].
pub fn translate(env: &Env, text: &Text) -> Translated {
    let mut cx = Cx::new(env);
    let ast = match cond::parse(&text.text) {
        Ok(a) => a,
        Err(e) => {
            cx.errors.push(Finding {
                loc: text.loc(e.offset),
                reason: format!("syntax: {}", e.message),
            });
            return cx.finish(Cond::Const(false));
        }
    };
    let x = prune(cx.expand(&ast, text));
    cx.kinds = kinds(&x);
    let cond = cx.tr(&x);
    cx.finish(cond)
}

/// A plain `field = literal` test (no argument, no transformer).
fn fact(x: &X) -> Option<(&str, &str)> {
    match x {
        X::Cmp {
            field, op, values, ..
        } if field.arg.is_none()
            && field.transformers.is_empty()
            && matches!(op.as_str(), "=" | "==")
            && values.len() == 1 =>
        {
            match &values[0] {
                Val::Lit(v, _) => Some((field.name.as_str(), v.as_str())),
                Val::Field(_) => None,
            }
        }
        _ => None,
    }
}

fn flatten_and(x: X, out: &mut Vec<X>) {
    match x {
        X::And(items) => items.into_iter().for_each(|i| flatten_and(i, out)),
        other => out.push(other),
    }
}

/// Drops the parts of a condition that its own top-level conjuncts make
/// false, exactly: if the condition requires `f = v` (a conjunct at its
/// top), then wherever the condition can be true `f` is present and equals
/// `v`, so a nested `f != v` is false and a nested `f = v` true. The stable
/// "Disallowed SSH Connection" requires `fd.l4proto=tcp` and has a
/// `sendto` branch requiring `fd.l4proto != tcp` (with socket-state fields
/// Picket cannot evaluate): that branch can never hold, and dropping it
/// changes no result. Only the identical literal is used (no numeric or
/// case reasoning), and the conjuncts that state the facts stay as they are.
fn prune(x: X) -> X {
    let mut top = Vec::new();
    flatten_and(x, &mut top);
    let facts: Vec<(String, String)> = top
        .iter()
        .filter_map(fact)
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    // Leave conditions the facts do not decide anything in untouched
    // (constants standing for reported errors keep their place).
    if facts.is_empty() || !top.iter().any(|c| fact(c).is_none() && touches(c, &facts)) {
        return rebuild_and(top);
    }
    let top = top
        .into_iter()
        .map(|c| {
            if fact(&c).is_some() {
                c
            } else {
                simplify(c, &facts)
            }
        })
        .collect();
    rebuild_and(top)
}

fn rebuild_and(mut items: Vec<X>) -> X {
    if items.len() == 1 {
        return items.pop().unwrap_or(X::Const(true));
    }
    X::And(items)
}

/// The fact `(field, value)` decides `x` (a nested test of the same field
/// against the same literal).
fn decided<'x>(x: &'x X, facts: &[(String, String)]) -> Option<&'x str> {
    if let X::Cmp {
        field, op, values, ..
    } = x
        && field.arg.is_none()
        && field.transformers.is_empty()
        && values.len() == 1
        && let Val::Lit(v, _) = &values[0]
        && facts
            .iter()
            .any(|(f, known)| *f == field.name && known == v)
        && matches!(op.as_str(), "!=" | "=" | "==")
    {
        return Some(op.as_str());
    }
    None
}

fn touches(x: &X, facts: &[(String, String)]) -> bool {
    match x {
        X::And(items) | X::Or(items) => items.iter().any(|i| touches(i, facts)),
        X::Not(i) => touches(i, facts),
        other => decided(other, facts).is_some(),
    }
}

fn simplify(x: X, facts: &[(String, String)]) -> X {
    match x {
        X::And(items) => {
            let items: Vec<X> = items.into_iter().map(|i| simplify(i, facts)).collect();
            if items.iter().any(|i| matches!(i, X::Const(false))) {
                X::Const(false)
            } else {
                X::And(items)
            }
        }
        X::Or(items) => {
            let items: Vec<X> = items
                .into_iter()
                .map(|i| simplify(i, facts))
                .filter(|i| !matches!(i, X::Const(false)))
                .collect();
            if items.is_empty() {
                X::Const(false)
            } else {
                X::Or(items)
            }
        }
        X::Not(i) => match simplify(*i, facts) {
            X::Const(b) => X::Const(!b),
            other => X::Not(Box::new(other)),
        },
        cmp @ X::Cmp { .. } => match decided(&cmp, facts) {
            Some("!=") => X::Const(false),
            Some(_) => X::Const(true),
            None => cmp,
        },
        other => other,
    }
}

/// Translates one check (an exception clause) for a rule of known kinds.
pub fn translate_check(
    env: &Env,
    kinds: &Option<BTreeSet<K>>,
    field: &str,
    op: &str,
    values: Vec<(String, bool)>,
    is_list: bool,
    loc: &Loc,
) -> Translated {
    let mut cx = Cx::new(env);
    cx.kinds = kinds.clone();
    let Some(fref) = parse_field(field) else {
        cx.errors.push(Finding {
            loc: loc.clone(),
            reason: format!("`{field}` is not a field"),
        });
        return cx.finish(Cond::Const(false));
    };
    let mut vals = Vec::new();
    for (v, bare) in values {
        cx.push_value(&mut vals, v, bare, loc.clone(), 0);
    }
    let x = X::Cmp {
        field: fref,
        field_loc: loc.clone(),
        op: op.to_string(),
        op_loc: loc.clone(),
        values: vals,
        is_list,
    };
    let cond = cx.tr(&x);
    cx.finish(cond)
}

/// `name` or `name[arg]`.
fn parse_field(s: &str) -> Option<FieldRef> {
    let s = s.trim();
    let (name, arg) = match s.find('[') {
        Some(i) if s.ends_with(']') => (&s[..i], Some(s[i + 1..s.len() - 1].to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
    {
        return None;
    }
    Some(FieldRef {
        name: name.to_string(),
        arg,
        transformers: Vec::new(),
        offset: 0,
    })
}

/// `"(systemd)"` written as a list item keeps its quotes in YAML; Falco
/// reads it as a quoted string.
pub fn unquote_item(s: &str) -> (String, bool) {
    let t = s.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return (
                t[1..t.len() - 1].replace(&format!("\\{q}"), &q.to_string()),
                false,
            );
        }
    }
    (t.to_string(), true)
}

/// Event kinds a tree can match: `None` when unconstrained.
fn kinds(x: &X) -> Option<BTreeSet<K>> {
    match x {
        X::And(items) => {
            let mut acc: Option<BTreeSet<K>> = None;
            for i in items {
                if let Some(k) = kinds(i) {
                    acc = Some(match acc {
                        None => k,
                        Some(a) => a.intersection(&k).copied().collect(),
                    });
                }
            }
            acc
        }
        X::Or(items) => {
            let mut acc = BTreeSet::new();
            for i in items {
                acc.extend(kinds(i)?);
            }
            Some(acc)
        }
        X::Cmp {
            field, op, values, ..
        } if field.name == "evt.type"
            && field.arg.is_none()
            && field.transformers.is_empty()
            && matches!(op.as_str(), "=" | "==" | "in") =>
        {
            Some(
                values
                    .iter()
                    .filter_map(|v| match v {
                        Val::Lit(s, _) => ff::syscall(s).map(|s| s.kind),
                        Val::Field(_) => None,
                    })
                    .collect(),
            )
        }
        // Constants only stand in for errors (already reported).
        _ => None,
    }
}

impl<'a> Cx<'a> {
    fn new(env: &'a Env) -> Self {
        Self {
            env,
            parsed: HashMap::new(),
            stack: Vec::new(),
            kinds: None,
            unsupported: Vec::new(),
            errors: Vec::new(),
            no_sensor: BTreeSet::new(),
            needs_pod_spec: None,
        }
    }

    fn finish(self, cond: Cond) -> Translated {
        Translated {
            cond,
            kinds: self.kinds,
            unsupported: self.unsupported,
            errors: self.errors,
            no_sensor: self.no_sensor,
            needs_pod_spec: self.needs_pod_spec,
        }
    }

    fn unsupported(&mut self, loc: &Loc, reason: impl Into<String>) -> Cond {
        self.unsupported.push(Finding {
            loc: loc.clone(),
            reason: reason.into(),
        });
        Cond::Const(false)
    }

    fn push_value(&mut self, out: &mut Vec<Val>, text: String, bare: bool, loc: Loc, depth: usize) {
        if bare && let Some(items) = self.env.lists.get(&text) {
            if depth >= MAX_LIST_DEPTH {
                self.errors.push(Finding {
                    loc,
                    reason: format!("lists nested more than {MAX_LIST_DEPTH} deep at `{text}`"),
                });
                return;
            }
            for item in items {
                let (v, bare) = unquote_item(item);
                self.push_value(out, v, bare, loc.clone(), depth + 1);
            }
            return;
        }
        out.push(Val::Lit(text, loc));
    }

    fn expand(&mut self, ast: &Ast, text: &Text) -> X {
        match ast {
            Ast::And(items) => X::And(items.iter().map(|a| self.expand(a, text)).collect()),
            Ast::Or(items) => X::Or(items.iter().map(|a| self.expand(a, text)).collect()),
            Ast::Not(a) => X::Not(Box::new(self.expand(a, text))),
            Ast::Exists(f) => X::Exists(f.clone(), text.loc(f.offset)),
            Ast::Macro { name, offset } => self.macro_ref(name, text.loc(*offset)),
            Ast::Cmp {
                field,
                op,
                op_offset,
                rhs,
            } => {
                let mut values = Vec::new();
                let is_list = match rhs {
                    Rhs::One(v) => {
                        self.value(&mut values, v, text);
                        // `x in list_name` without parentheses names a list.
                        values.len() != 1 || matches!(op.as_str(), "in" | "intersects" | "pmatch")
                    }
                    Rhs::List(items) => {
                        for v in items {
                            self.value(&mut values, v, text);
                        }
                        true
                    }
                };
                X::Cmp {
                    field: field.clone(),
                    field_loc: text.loc(field.offset),
                    op: op.clone(),
                    op_loc: text.loc(*op_offset),
                    values,
                    is_list,
                }
            }
        }
    }

    fn value(&mut self, out: &mut Vec<Val>, v: &Value, text: &Text) {
        match v {
            Value::Lit { text: t, bare } => {
                // Locations of values are approximate (the check's start).
                let loc = text.loc(0);
                self.push_value(out, t.clone(), *bare, loc, 0);
            }
            Value::Field(f) => out.push(Val::Field(f.clone())),
        }
    }

    fn macro_ref(&mut self, name: &str, loc: Loc) -> X {
        let Some(def) = self.env.macros.get(name) else {
            self.errors.push(Finding {
                loc,
                reason: format!("unknown macro `{name}`"),
            });
            return X::Const(false);
        };
        if self.stack.iter().any(|n| n == name) || self.stack.len() >= MAX_MACRO_DEPTH {
            self.errors.push(Finding {
                loc,
                reason: format!(
                    "macro `{name}` uses itself or nests too deeply ({} -> {name})",
                    self.stack.join(" -> ")
                ),
            });
            return X::Const(false);
        }
        let parsed = self
            .parsed
            .entry(name.to_string())
            .or_insert_with(|| cond::parse(&def.text.text))
            .clone();
        match parsed {
            Ok(ast) => {
                self.stack.push(name.to_string());
                let x = self.expand(&ast, &def.text);
                self.stack.pop();
                x
            }
            Err(e) => {
                self.errors.push(Finding {
                    loc: def.text.loc(e.offset),
                    reason: format!("syntax in macro `{name}`: {}", e.message),
                });
                X::Const(false)
            }
        }
    }

    fn tr(&mut self, x: &X) -> Cond {
        match x {
            X::And(items) => Cond::And(items.iter().map(|i| self.tr(i)).collect()),
            X::Or(items) => Cond::Or(items.iter().map(|i| self.tr(i)).collect()),
            X::Not(i) => Cond::Not(Box::new(self.tr(i))),
            X::Const(b) => Cond::Const(*b),
            X::Exists(f, loc) => match self.resolve(f, loc) {
                Some(r) => pred(&r, Test::Exists, false),
                None => Cond::Const(false),
            },
            X::Cmp {
                field,
                field_loc,
                op,
                op_loc,
                values,
                is_list,
            } => self.cmp(field, field_loc, op, op_loc, values, *is_list),
        }
    }

    /// A plain accessor for `f`, checking it is faithful for the rule's kinds.
    fn resolve(&mut self, f: &FieldRef, loc: &Loc) -> Option<Resolved> {
        if let Some(t) = f.transformers.first() {
            return self.transformed(f, t, loc);
        }
        if f.name == "container.privileged" && self.needs_pod_spec.is_none() {
            self.needs_pod_spec = Some(loc.clone());
        }
        match ff::map(f) {
            Mapping::Field(r) => self.check_kinds(r, &f.display(), loc),
            Mapping::Unsupported(why) => {
                self.unsupported(loc, format!("field `{}`: {why}", f.display()));
                None
            }
            _ => {
                self.unsupported(
                    loc,
                    format!("field `{}` cannot be used this way", f.display()),
                );
                None
            }
        }
    }

    fn check_kinds(&mut self, r: Resolved, shown: &str, loc: &Loc) -> Option<Resolved> {
        if r.kinds.is_empty() {
            return Some(r);
        }
        let outside: Vec<&str> = match &self.kinds {
            Some(ks) => ks
                .iter()
                .filter(|k| !r.kinds.contains(k))
                .map(|k| k.as_str())
                .collect(),
            None => vec!["(any)"],
        };
        if outside.is_empty() {
            return Some(r);
        }
        let mapped: Vec<&str> = r.kinds.iter().map(|k| k.as_str()).collect();
        self.unsupported(
            loc,
            format!(
                "field `{shown}` is mapped for [{}] events only; this rule also matches [{}]",
                mapped.join(", "),
                outside.join(", ")
            ),
        );
        None
    }

    fn transformed(&mut self, f: &FieldRef, t: &str, loc: &Loc) -> Option<Resolved> {
        if t != "basename" || f.transformers.len() != 1 || f.arg.is_some() {
            self.unsupported(
                loc,
                format!(
                    "transformer `{t}` on `{}` has no Picket equivalent here",
                    f.display()
                ),
            );
            return None;
        }
        let target = match f.name.as_str() {
            "fd.name" => "fd.filename",
            "proc.exepath" => {
                return self.check_kinds(fields::resolve("process.executable.name")?, "", loc);
            }
            _ => {
                self.unsupported(loc, format!("`basename({})` is not mapped", f.name));
                return None;
            }
        };
        let inner = FieldRef {
            name: target.into(),
            arg: None,
            transformers: Vec::new(),
            offset: f.offset,
        };
        self.resolve(&inner, loc)
    }

    fn lits(&mut self, values: &[Val], loc: &Loc) -> Option<Vec<(String, Loc)>> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Val::Lit(s, l) => out.push((s.clone(), l.clone())),
                Val::Field(f) => {
                    self.unsupported(
                        loc,
                        format!(
                            "`{}({})`: comparing two fields of an event is not in Picket's engine",
                            f.transformers.first().map_or("val", String::as_str),
                            f.display()
                        ),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn cmp(
        &mut self,
        field: &FieldRef,
        field_loc: &Loc,
        op: &str,
        op_loc: &Loc,
        values: &[Val],
        is_list: bool,
    ) -> Cond {
        let Some(vals) = self.lits(values, op_loc) else {
            return Cond::Const(false);
        };
        if field.arg.is_none()
            && field.transformers.is_empty()
            && matches!(field.name.as_str(), "fd.ip" | "fd.net")
        {
            return self.either_end(field, field_loc, op, op_loc, vals, is_list);
        }
        if !cond::OPS.contains(&op) {
            return self.unsupported(op_loc, format!("operator `{op}` is not supported"));
        }
        let (negated, op) = match op {
            "!=" => (true, "="),
            "==" => (false, "="),
            o => (false, o),
        };
        let c = self.positive(field, field_loc, op, op_loc, vals, is_list);
        if negated {
            // `!=` on an absent field is false in Falco and in Picket:
            // negate the predicate, not the whole test.
            negate_pred(c)
        } else {
            c
        }
    }

    /// libsinsp's `fd.ip`/`fd.net` test both ends of the socket
    /// (`compare_ip`, `compare_net`): `=` (and `in`) holds when either end
    /// matches, `!=` when neither does. Mapped onto the local and the peer
    /// address (`fd.lip`/`fd.rip`, `fd.lnet`/`fd.rnet`).
    fn either_end(
        &mut self,
        field: &FieldRef,
        field_loc: &Loc,
        op: &str,
        op_loc: &Loc,
        vals: Vec<(String, Loc)>,
        is_list: bool,
    ) -> Cond {
        let (local, peer) = if field.name == "fd.ip" {
            ("fd.lip", "fd.rip")
        } else {
            ("fd.lnet", "fd.rnet")
        };
        let (negated, pos_op) = match op {
            "=" | "==" => (false, "="),
            "!=" => (true, "="),
            "in" => (false, "in"),
            other => {
                return self.unsupported(
                    op_loc,
                    format!(
                        "`{other}` on `{}` (libsinsp only compares it with `=`, `!=`, `in`)",
                        field.name
                    ),
                );
            }
        };
        let end = |name: &str, this: &mut Self| {
            let f = FieldRef {
                name: name.to_string(),
                arg: None,
                transformers: Vec::new(),
                offset: field.offset,
            };
            this.positive(&f, field_loc, pos_op, op_loc, vals.clone(), is_list)
        };
        let l = end(local, self);
        let r = end(peer, self);
        if negated {
            Cond::And(Box::new([negate_pred(l), negate_pred(r)]))
        } else {
            Cond::Or(Box::new([l, r]))
        }
    }

    fn positive(
        &mut self,
        field: &FieldRef,
        field_loc: &Loc,
        op: &str,
        op_loc: &Loc,
        vals: Vec<(String, Loc)>,
        is_list: bool,
    ) -> Cond {
        let special = if field.transformers.is_empty() {
            ff::map(field)
        } else {
            Mapping::Unsupported(String::new())
        };
        match special {
            Mapping::EvtType => return self.evt_type(op, op_loc, &vals),
            Mapping::EvtDir => {
                if op == "=" && vals.len() == 1 {
                    return Cond::Const(vals[0].0 == "<");
                }
                return self.unsupported(op_loc, "`evt.dir` is only compared with `=`/`!=`");
            }
            Mapping::EvtNum => {
                if op == "=" && vals.len() == 1 && vals[0].0 == "0" {
                    return Cond::Const(false);
                }
                return self.unsupported(op_loc, "`evt.num` (event sequence numbers) is not kept");
            }
            Mapping::ProcTty => {
                if op == "=" && vals.len() == 1 && vals[0].0 == "0" {
                    let Some(r) = fields::resolve("process.interactive") else {
                        return Cond::Const(false);
                    };
                    return pred(&r, Test::BoolEq(false), false);
                }
                return self.unsupported(
                    op_loc,
                    "`proc.tty` is only known as \"stdin is a terminal\": compare it with 0 (`= 0`, `!= 0`)",
                );
            }
            Mapping::OpenFlags => return self.open_flags(op, op_loc, &vals),
            Mapping::ProcCwd => return self.proc_cwd(op, op_loc, &vals),
            Mapping::HostName(r) => {
                let Some(r) = self.check_kinds(r, &field.display(), field_loc) else {
                    return Cond::Const(false);
                };
                if !matches!(op, "=" | "in") {
                    return self.unsupported(
                        op_loc,
                        format!(
                            "`{op}` on a host name field (only `=`, `!=`, `in` compare addresses)"
                        ),
                    );
                }
                if vals.is_empty() {
                    return Cond::Const(false);
                }
                let names: Vec<&str> = vals.iter().map(|(v, _)| v.as_str()).collect();
                return pred(&r, Test::Resolved(crate::dns::HostSet::new(&names)), false);
            }
            Mapping::Net(r) => {
                let Some(r) = self.check_kinds(r, &field.display(), field_loc) else {
                    return Cond::Const(false);
                };
                if !matches!(op, "=" | "in") {
                    return self.unsupported(op_loc, format!("`{op}` on a network prefix field"));
                }
                let values = vals.into_iter().map(|(v, l)| (Raw::Text(v), l)).collect();
                return self.build(&r, Op::Cidr, values, true, op_loc);
            }
            _ => {}
        }
        let Some(r) = self.resolve(field, field_loc) else {
            return Cond::Const(false);
        };
        // Falco's capability sets are one string ("CAP_CHOWN CAP_KILL ..."):
        // substring tests on it equal any-element tests on Picket's list
        // unless the needle spans two names.
        if matches!(
            field.name.as_str(),
            "thread.cap_effective" | "thread.cap_permitted"
        ) && !(matches!(op, "contains" | "icontains")
            && vals.iter().all(|(v, _)| !v.contains(' ')))
        {
            return self.unsupported(
                op_loc,
                format!(
                    "`{}` is only mapped for `contains`/`icontains` of one capability name",
                    field.name
                ),
            );
        }
        if vals.is_empty() {
            // `x in ()` (an empty list) never matches.
            return Cond::Const(false);
        }
        let texts = |vals: Vec<(String, Loc)>| -> Vec<(Raw, Loc)> {
            vals.into_iter().map(|(v, l)| (Raw::Text(v), l)).collect()
        };
        match op {
            "=" => {
                if vals.len() > 1 {
                    return self.unsupported(op_loc, "`=` with a list of values");
                }
                self.build(&r, Op::Eq, texts(vals), false, op_loc)
            }
            "in" | "intersects" => self.build(&r, Op::In, texts(vals), true, op_loc),
            "<" | "<=" | ">" | ">=" => {
                let o = Op::parse(op).unwrap_or(Op::Eq);
                self.build(&r, o, texts(vals), false, op_loc)
            }
            "contains" => self.build(&r, Op::Contains, texts(vals), is_list, op_loc),
            "startswith" => self.build(&r, Op::StartsWith, texts(vals), is_list, op_loc),
            "endswith" => self.build(&r, Op::EndsWith, texts(vals), is_list, op_loc),
            // libsinsp matches RE2 anchored at both ends.
            "regex" => {
                let pats = vals.iter().map(|(v, _)| format!("^(?:{v})$")).collect();
                self.regex(&r, pats, op_loc)
            }
            "icontains" => {
                let pats = vals
                    .iter()
                    .map(|(v, _)| format!("(?i){}", regex::escape(v)))
                    .collect();
                self.regex(&r, pats, op_loc)
            }
            "pmatch" => {
                let alts: Vec<String> = vals
                    .iter()
                    .map(|(v, _)| {
                        let t = v.trim_end_matches('/');
                        regex::escape(if t.is_empty() { "" } else { t })
                    })
                    .collect();
                self.regex(&r, vec![format!("^(?:{})(?:/|$)", alts.join("|"))], op_loc)
            }
            "glob" | "iglob" => self.glob(&r, &vals, op == "iglob", op_loc),
            other => self.unsupported(
                op_loc,
                format!("operator `{other}` (binary comparisons) has no Picket equivalent"),
            ),
        }
    }

    fn build(
        &mut self,
        r: &Resolved,
        op: Op,
        values: Vec<(Raw, Loc)>,
        is_list: bool,
        loc: &Loc,
    ) -> Cond {
        let is_list = is_list && values.len() > 1 || op == Op::In;
        let op = if op == Op::Eq && is_list { Op::In } else { op };
        match build_pred(r, op, false, values, is_list, loc) {
            Ok(p) => Cond::Pred(Box::new(p)),
            Err(d) => {
                self.errors.push(Finding {
                    loc: loc.clone(),
                    reason: d.message,
                });
                Cond::Const(false)
            }
        }
    }

    fn string_field(&mut self, r: &Resolved, loc: &Loc) -> bool {
        if matches!(r.ty, FieldType::Str | FieldType::StrList) {
            return true;
        }
        self.errors.push(Finding {
            loc: loc.clone(),
            reason: format!("`{}` is not a string field", r.name),
        });
        false
    }

    fn regex(&mut self, r: &Resolved, pats: Vec<String>, loc: &Loc) -> Cond {
        if !self.string_field(r, loc) {
            return Cond::Const(false);
        }
        let mut out = Vec::with_capacity(pats.len());
        for p in pats {
            match regex::RegexBuilder::new(&p)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => out.push(re),
                Err(e) => {
                    self.errors.push(Finding {
                        loc: loc.clone(),
                        reason: format!("cannot build a matcher: {e}"),
                    });
                    return Cond::Const(false);
                }
            }
        }
        pred(r, Test::Regex(out.into()), false)
    }

    /// Falco's `glob` is fnmatch(3) without flags: `*` crosses `/`, braces
    /// are literal.
    fn glob(&mut self, r: &Resolved, vals: &[(String, Loc)], ci: bool, loc: &Loc) -> Cond {
        if !self.string_field(r, loc) {
            return Cond::Const(false);
        }
        let mut set = GlobSetBuilder::new();
        for (v, _) in vals {
            let pat = v.replace('{', "[{]").replace('}', "[}]");
            match GlobBuilder::new(&pat)
                .literal_separator(false)
                .case_insensitive(ci)
                .backslash_escape(true)
                .build()
            {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => {
                    self.errors.push(Finding {
                        loc: loc.clone(),
                        reason: format!("invalid glob \"{v}\": {}", e.kind()),
                    });
                    return Cond::Const(false);
                }
            }
        }
        match set.build() {
            Ok(s) => pred(
                r,
                Test::Glob(s, vals.iter().map(|(v, _)| v.as_str().into()).collect()),
                false,
            ),
            Err(e) => {
                self.errors.push(Finding {
                    loc: loc.clone(),
                    reason: format!("invalid glob set: {e}"),
                });
                Cond::Const(false)
            }
        }
    }

    fn evt_type(&mut self, op: &str, loc: &Loc, vals: &[(String, Loc)]) -> Cond {
        if !matches!(op, "=" | "in") {
            return self.unsupported(loc, format!("`evt.type {op}`"));
        }
        let mut by_kind: Vec<(K, Vec<&str>)> = Vec::new();
        for (v, _) in vals {
            match ff::syscall(v) {
                Some(s) => match by_kind.iter_mut().find(|(k, _)| *k == s.kind) {
                    Some((_, names)) => names.push(v),
                    None => by_kind.push((s.kind, vec![v])),
                },
                None => {
                    self.no_sensor.insert(v.clone());
                }
            }
        }
        let (Some(kind_f), Some(sys_f)) = (
            fields::resolve("event.kind"),
            fields::resolve("syscall.name"),
        ) else {
            return Cond::Const(false);
        };
        let mut alts = Vec::new();
        for (kind, names) in by_kind {
            let kind_pred = pred(
                &kind_f,
                Test::StrIn(StrSet::new(vec![kind.as_str().to_string()])),
                false,
            );
            let group = ff::group(kind);
            if !group.is_empty() {
                if group.iter().all(|g| names.contains(g)) {
                    alts.push(kind_pred);
                } else {
                    let missing: Vec<&str> = group
                        .iter()
                        .filter(|g| !names.contains(g))
                        .copied()
                        .collect();
                    alts.push(self.unsupported(
                        loc,
                        format!(
                            "`evt.type` names {} but not {}: Picket reports them as one `{}` event",
                            names.join(", "),
                            missing.join(", "),
                            kind.as_str()
                        ),
                    ));
                }
                continue;
            }
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            alts.push(Cond::And(
                vec![
                    kind_pred,
                    pred(&sys_f, Test::StrIn(StrSet::new(names)), false),
                ]
                .into(),
            ));
        }
        match alts.len() {
            0 => Cond::Const(false),
            1 => alts.pop().unwrap_or(Cond::Const(false)),
            _ => Cond::Or(alts.into()),
        }
    }

    fn open_flags(&mut self, op: &str, loc: &Loc, vals: &[(String, Loc)]) -> Cond {
        let file_only = self
            .kinds
            .as_ref()
            .is_some_and(|k| !k.is_empty() && k.iter().all(|k| *k == K::FileOpen));
        if !file_only || op != "contains" || vals.len() != 1 {
            return self.unsupported(
                loc,
                "`evt.arg.flags` is only mapped for open events, as `contains O_TRUNC|O_CREAT`",
            );
        }
        let name = match vals[0].0.as_str() {
            "O_TRUNC" => "file.truncate",
            "O_CREAT" => "file.create",
            other => {
                return self.unsupported(loc, format!("open flag `{other}` is not decoded"));
            }
        };
        match fields::resolve(name) {
            Some(r) => pred(&r, Test::BoolEq(true), false),
            None => Cond::Const(false),
        }
    }

    /// Falco's `proc.cwd` ends with `/`; Picket's working directory does not
    /// (except `/`).
    fn proc_cwd(&mut self, op: &str, loc: &Loc, vals: &[(String, Loc)]) -> Cond {
        let Some(r) = fields::resolve("process.working_directory") else {
            return Cond::Const(false);
        };
        let mut alts = Vec::new();
        for (v, _) in vals {
            let exact = if v == "/" {
                "/".to_string()
            } else {
                v.strip_suffix('/').unwrap_or("").to_string()
            };
            match op {
                "startswith" => {
                    alts.push(pred(
                        &r,
                        Test::Prefix(vec![v.as_str().into()].into()),
                        false,
                    ));
                    if v.ends_with('/') && !exact.is_empty() {
                        alts.push(pred(&r, Test::StrIn(StrSet::new(vec![exact])), false));
                    }
                }
                "=" | "in" => {
                    // A value without the trailing `/` never equals Falco's cwd.
                    if !exact.is_empty() {
                        alts.push(pred(&r, Test::StrIn(StrSet::new(vec![exact])), false));
                    }
                }
                _ => {
                    return self.unsupported(
                        loc,
                        format!("`proc.cwd {op}`: only `=`, `in` and `startswith` are mapped"),
                    );
                }
            }
        }
        match alts.len() {
            0 => Cond::Const(false),
            1 => alts.pop().unwrap_or(Cond::Const(false)),
            _ => Cond::Or(alts.into()),
        }
    }
}

fn pred(r: &Resolved, test: Test, negate: bool) -> Cond {
    Cond::Pred(Box::new(Pred {
        field: r.name.as_str().into(),
        accessor: r.accessor.clone(),
        test,
        negate,
    }))
}

/// `!=`: absent stays false, present values are inverted. Composite
/// translations (`proc.cwd`, `evt.type`) are negated as a whole: their
/// parts are always present when the event kind matches.
fn negate_pred(c: Cond) -> Cond {
    match c {
        Cond::Pred(mut p) if !matches!(p.test, Test::Exists) => {
            p.negate = !p.negate;
            Cond::Pred(p)
        }
        Cond::Const(b) => Cond::Const(!b),
        other => Cond::Not(Box::new(other)),
    }
}
