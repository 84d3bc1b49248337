//! Type-checks a parsed condition against the field table and compiles it to
//! a [`Cond`] tree: fields resolved to accessors, literals converted to the
//! field's type, regexes, globs and CIDRs compiled once.

// Diagnostics are this module's product, built once per rule at load time:
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::{collections::HashMap, sync::Arc};

use globset::{GlobBuilder, GlobSetBuilder};
use ipnet::IpNet;

use super::{
    ast::{Expr, Lit, Op, Operand, Span},
    eval::{Cond, Pred, StrSet, Test},
};
use crate::{
    model::EventKindName,
    rules::{
        diagnostics::{Diagnostic, did_you_mean},
        fields::{self, FieldType, Resolved},
        source::{ExprSource, Loc},
    },
};

/// A named list (`lists:`): items as written, interpreted by the field they
/// are compared with.
#[derive(Debug)]
pub struct ListDef {
    pub items: Vec<(String, Loc)>,
}

/// A named condition (`macros:`), parsed once, type-checked where it is used.
#[derive(Debug)]
pub struct MacroDef {
    /// `None` when it failed to parse (already reported).
    pub expr: Option<Expr>,
    pub src: Arc<ExprSource>,
}

/// Lists and macros visible to conditions.
#[derive(Debug, Default)]
pub struct Env {
    pub lists: HashMap<String, ListDef>,
    pub macros: HashMap<String, MacroDef>,
}

/// A value to compare with: a typed literal from a condition, or text from a
/// list or a structured exception (typed by the field).
#[derive(Clone, Debug)]
pub enum Raw {
    Lit(Lit),
    Text(String),
}

/// Compiles conditions for one rule (its event kinds decide which fields make sense).
pub struct Compiler<'a> {
    pub env: &'a Env,
    pub kinds: &'a [EventKindName],
    pub diags: Vec<Diagnostic>,
    stack: Vec<String>,
}

/// Macros using macros: deeper chains are surely a mistake (and would
/// recurse without bound on hostile input).
const MAX_MACRO_DEPTH: usize = 32;

/// Max regex program size: keeps a hostile rule from eating memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl<'a> Compiler<'a> {
    pub fn new(env: &'a Env, kinds: &'a [EventKindName]) -> Self {
        Self {
            env,
            kinds,
            diags: Vec::new(),
            stack: Vec::new(),
        }
    }

    pub fn compile(&mut self, expr: &Expr, src: &Arc<ExprSource>) -> Cond {
        let at = |span: Span| Loc::Expr(src.clone(), span.start);
        match expr {
            Expr::Const(b) => Cond::Const(*b),
            Expr::And(items) => Cond::And(items.iter().map(|e| self.compile(e, src)).collect()),
            Expr::Or(items) => Cond::Or(items.iter().map(|e| self.compile(e, src)).collect()),
            Expr::Not(e) => Cond::Not(Box::new(self.compile(e, src))),
            Expr::Name(name, span) => self.name(name, at(*span)),
            Expr::Exists { field, span } => match self.field(field, &at(*span)) {
                Some(f) => Cond::Pred(Box::new(Pred {
                    field: f.name.into(),
                    accessor: f.accessor,
                    test: Test::Exists,
                    negate: false,
                })),
                None => Cond::Const(false),
            },
            Expr::Cmp {
                field,
                field_span,
                op,
                op_span,
                negated,
                operand,
            } => {
                let Some(f) = self.field(field, &at(*field_span)) else {
                    return Cond::Const(false);
                };
                let (values, is_list) = match operand {
                    Operand::One(l, s) => (vec![(Raw::Lit(l.clone()), at(*s))], false),
                    Operand::List(items, _) => (
                        items
                            .iter()
                            .map(|(l, s)| (Raw::Lit(l.clone()), at(*s)))
                            .collect(),
                        true,
                    ),
                    Operand::Named(name, s) => {
                        match self.env.lists.get(name) {
                            Some(list) => (
                                list.items
                                    .iter()
                                    .map(|(t, l)| (Raw::Text(t.clone()), l.clone()))
                                    .collect(),
                                true,
                            ),
                            None => {
                                let hint = did_you_mean(name, self.env.lists.keys().map(String::as_str))
                                .unwrap_or_else(|| format!("quote strings: \"{name}\"; lists are defined under `lists:`"));
                                self.diags.push(
                                    at(*s)
                                        .error(format!("unknown list `{name}`"))
                                        .hint(Some(hint)),
                                );
                                return Cond::Const(false);
                            }
                        }
                    }
                };
                match build_pred(&f, *op, *negated, values, is_list, &at(*op_span)) {
                    Ok(p) => Cond::Pred(Box::new(p)),
                    Err(d) => {
                        self.diags.push(d);
                        Cond::Const(false)
                    }
                }
            }
        }
    }

    /// Resolves a field, reporting unknown names and fields the rule's event
    /// kinds never set.
    pub fn field(&mut self, name: &str, loc: &Loc) -> Option<Resolved> {
        let Some(f) = fields::resolve(name) else {
            let hint = if self.env.macros.contains_key(name) {
                Some(format!(
                    "`{name}` is a macro; use it on its own, e.g. `{name} and ...`"
                ))
            } else {
                did_you_mean(name, fields::names())
            };
            self.diags.push(
                loc.error(format!("unknown field `{name}`"))
                    .field("condition")
                    .hint(hint),
            );
            return None;
        };
        if !f.kinds.is_empty()
            && !self.kinds.is_empty()
            && !self.kinds.iter().any(|k| f.kinds.contains(k))
        {
            let set_by: Vec<&str> = f.kinds.iter().map(|k| k.as_str()).collect();
            let rule: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            self.diags.push(
                loc.error(format!(
                    "field `{name}` is never set for events [{}]",
                    rule.join(", ")
                ))
                .hint(Some(format!("it is set for: {}", set_by.join(", ")))),
            );
            return None;
        }
        Some(f)
    }

    fn name(&mut self, name: &str, loc: Loc) -> Cond {
        if let Some(m) = self.env.macros.get(name) {
            if self.stack.iter().any(|n| n == name) {
                let chain = format!("{} -> {name}", self.stack.join(" -> "));
                self.diags
                    .push(loc.error(format!("macro `{name}` uses itself ({chain})")));
                return Cond::Const(false);
            }
            if self.stack.len() >= MAX_MACRO_DEPTH {
                self.diags
                    .push(loc.error(format!("macros nested more than {MAX_MACRO_DEPTH} deep")));
                return Cond::Const(false);
            }
            let Some(expr) = &m.expr else {
                return Cond::Const(false);
            };
            self.stack.push(name.to_string());
            let c = self.compile(expr, &m.src);
            self.stack.pop();
            return c;
        }
        match fields::resolve(name) {
            Some(f) if f.ty == FieldType::Bool => match self.field(name, &loc) {
                Some(f) => Cond::Pred(Box::new(Pred {
                    field: f.name.into(),
                    accessor: f.accessor,
                    test: Test::BoolEq(true),
                    negate: false,
                })),
                None => Cond::Const(false),
            },
            Some(f) => {
                self.diags.push(
                    loc.error(format!("`{name}` is {} field, not a condition", a(f.ty)))
                        .hint(Some(format!(
                            "compare it, e.g. `{name} exists` or `{name} == ...`"
                        ))),
                );
                Cond::Const(false)
            }
            None => {
                let mut candidates: Vec<&str> =
                    self.env.macros.keys().map(String::as_str).collect();
                for n in fields::names() {
                    candidates.push(n);
                }
                self.diags.push(
                    loc.error(format!("unknown macro or field `{name}`"))
                        .hint(did_you_mean(name, candidates)),
                );
                Cond::Const(false)
            }
        }
    }
}

/// "an integer", "a string", ...
fn a(t: FieldType) -> String {
    let n = t.name();
    if n.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {n}")
    } else {
        format!("a {n}")
    }
}

fn mismatch(f: &Resolved, raw: &Raw, loc: &Loc) -> Diagnostic {
    let (shown, ty, hint) = match raw {
        Raw::Lit(Lit::Str(s)) => (
            format!("\"{s}\""),
            "a string",
            (matches!(f.ty, FieldType::Int | FieldType::IntList) && s.parse::<i64>().is_ok())
                .then(|| format!("remove the quotes: {s}")),
        ),
        Raw::Lit(Lit::Int(i)) => (
            i.to_string(),
            "an integer",
            f.ty.is_stringy().then(|| format!("quote it: \"{i}\"")),
        ),
        Raw::Lit(Lit::Bool(b)) => (
            b.to_string(),
            "a boolean",
            f.ty.is_stringy().then(|| format!("quote it: \"{b}\"")),
        ),
        Raw::Text(t) => (format!("`{t}`"), "not valid here", None),
    };
    loc.error(format!(
        "type mismatch: `{}` is {} field, but {shown} is {ty}",
        f.name,
        a(f.ty)
    ))
    .hint(hint)
}

fn want_str(f: &Resolved, raw: Raw, loc: &Loc) -> Result<String, Diagnostic> {
    let s = match raw {
        Raw::Lit(Lit::Str(s)) | Raw::Text(s) => s,
        other => return Err(mismatch(f, &other, loc)),
    };
    if let FieldType::Enum(values) = f.ty
        && !values.contains(&s.as_str())
    {
        return Err(loc
            .error(format!("`{}` has no value \"{s}\"", f.name))
            .hint(Some(
                did_you_mean(&s, values.iter().copied())
                    .unwrap_or_else(|| format!("one of: {}", values.join(", "))),
            )));
    }
    Ok(s)
}

fn want_int(f: &Resolved, raw: Raw, loc: &Loc) -> Result<i64, Diagnostic> {
    match raw {
        Raw::Lit(Lit::Int(i)) => Ok(i),
        Raw::Text(t) => t.parse().map_err(|_| {
            loc.error(format!(
                "type mismatch: `{}` is an integer field, but `{t}` is not an integer",
                f.name
            ))
        }),
        other => Err(mismatch(f, &other, loc)),
    }
}

fn want_bool(f: &Resolved, raw: Raw, loc: &Loc) -> Result<bool, Diagnostic> {
    match raw {
        Raw::Lit(Lit::Bool(b)) => Ok(b),
        Raw::Text(t) if t == "true" => Ok(true),
        Raw::Text(t) if t == "false" => Ok(false),
        other => Err(mismatch(f, &other, loc)),
    }
}

/// Builds one predicate: `field [not] op values`. Shared by conditions and
/// structured exceptions, so both get the same checks.
pub fn build_pred(
    f: &Resolved,
    op: Op,
    negated: bool,
    values: Vec<(Raw, Loc)>,
    is_list: bool,
    op_loc: &Loc,
) -> Result<Pred, Diagnostic> {
    let negate = negated != (op == Op::Ne);
    match op {
        Op::Eq | Op::Ne if is_list => {
            return Err(op_loc
                .error(format!(
                    "`{}` compares with one value, not a list",
                    op.name()
                ))
                .hint(Some(format!(
                    "use `{}in` for a list",
                    if op == Op::Ne { "not " } else { "" }
                ))));
        }
        Op::In if !is_list => {
            return Err(op_loc
                .error("`in` needs a list")
                .hint(Some("write `in [\"a\", \"b\"]` or name a list".into())));
        }
        _ => {}
    }
    let type_err = |what: &str| {
        op_loc
            .error(format!(
                "operator `{}` does not apply to `{}` ({} field)",
                op.name(),
                f.name,
                f.ty.name()
            ))
            .hint(Some(what.into()))
    };
    let test = match op {
        Op::Eq | Op::Ne | Op::In => match f.ty {
            FieldType::Str | FieldType::StrList | FieldType::Enum(_) => {
                let items = values
                    .into_iter()
                    .map(|(r, l)| want_str(f, r, &l))
                    .collect::<Result<Vec<_>, _>>()?;
                Test::StrIn(StrSet::new(items))
            }
            FieldType::Int | FieldType::IntList => {
                let items = values
                    .into_iter()
                    .map(|(r, l)| want_int(f, r, &l))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.len() == 1 {
                    Test::IntCmp(Op::Eq, items[0])
                } else {
                    Test::IntIn(items.into())
                }
            }
            FieldType::Bool => {
                let mut items = values
                    .into_iter()
                    .map(|(r, l)| want_bool(f, r, &l))
                    .collect::<Result<Vec<_>, _>>()?;
                items.dedup();
                match items.as_slice() {
                    [b] => Test::BoolEq(*b),
                    _ => Test::Exists,
                }
            }
        },
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            if !matches!(f.ty, FieldType::Int | FieldType::IntList) {
                return Err(type_err("ordering comparisons need an integer field"));
            }
            let Some((r, l)) = values.into_iter().next().filter(|_| !is_list) else {
                return Err(op_loc.error(format!("`{}` compares with one value", op.name())));
            };
            Test::IntCmp(op, want_int(f, r, &l)?)
        }
        Op::StartsWith | Op::EndsWith | Op::Contains | Op::Glob | Op::Matches | Op::Cidr => {
            if !matches!(f.ty, FieldType::Str | FieldType::StrList) {
                return Err(type_err(
                    "string operators need a string field; use `==`/`in` for enums and numbers",
                ));
            }
            let mut items = Vec::with_capacity(values.len());
            for (r, l) in values {
                let s = want_str(f, r, &l)?;
                items.push((s, l));
            }
            match op {
                Op::StartsWith => {
                    Test::Prefix(items.into_iter().map(|(s, _)| s.into_boxed_str()).collect())
                }
                Op::EndsWith => {
                    Test::Suffix(items.into_iter().map(|(s, _)| s.into_boxed_str()).collect())
                }
                Op::Contains => Test::Contains(
                    aho_corasick::AhoCorasick::new(items.iter().map(|(s, _)| s.as_str())).map_err(
                        |e| op_loc.error(format!("cannot build the `contains` matcher: {e}")),
                    )?,
                ),
                Op::Glob => {
                    let mut set = GlobSetBuilder::new();
                    for (s, l) in &items {
                        let g = GlobBuilder::new(s)
                            .literal_separator(true)
                            .build()
                            .map_err(|e| l.error(format!("invalid glob \"{s}\": {}", e.kind())))?;
                        set.add(g);
                    }
                    Test::Glob(
                        set.build()
                            .map_err(|e| op_loc.error(format!("invalid glob set: {e}")))?,
                        items.into_iter().map(|(s, _)| s.into_boxed_str()).collect(),
                    )
                }
                Op::Matches => {
                    let mut rs = Vec::with_capacity(items.len());
                    for (s, l) in &items {
                        let r = regex::RegexBuilder::new(s)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .build()
                            .map_err(|e| {
                                l.error(format!(
                                    "invalid regular expression \"{s}\": {}",
                                    first_line(&e.to_string())
                                ))
                            })?;
                        rs.push(r);
                    }
                    Test::Regex(rs.into())
                }
                _ => {
                    let mut nets = Vec::with_capacity(items.len());
                    for (s, l) in &items {
                        nets.push(parse_net(s).ok_or_else(|| {
                            l.error(format!("invalid CIDR \"{s}\""))
                                .hint(Some("write an address or a prefix: \"10.0.0.0/8\", \"fd00::/8\", \"169.254.169.254\"".into()))
                        })?);
                    }
                    Test::Cidr(nets.into())
                }
            }
        }
    };
    Ok(Pred {
        field: f.name.as_str().into(),
        accessor: f.accessor.clone(),
        test,
        negate,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// A prefix, or a single address as a /32 or /128.
pub fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}
