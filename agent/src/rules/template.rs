//! Output templates: `"shell {process.executable.path} in {container.id}"`.
//!
//! Placeholders are resolved to accessors when the rule compiles (an unknown
//! field is a lint error); `{{` and `}}` write literal braces.

use std::sync::Arc;

use super::{
    diagnostics::{Diagnostic, did_you_mean},
    fields::{self, Accessor},
    source::{ExprSource, Loc},
};
use crate::model::Event;

/// Extra values a rule can show besides event fields (the learned rule's findings).
pub trait Extras {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Extras for () {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

#[derive(Debug)]
pub(crate) enum Part {
    Text(Box<str>),
    Field(Accessor),
    /// `{baseline.*}`: filled in by the engine.
    Extra(Box<str>),
}

#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// A template assembled by another front end (Falco's `%field` outputs).
    pub(crate) fn from_parts(parts: Vec<Part>) -> Template {
        Template { parts }
    }

    /// `extras` are the names besides fields this rule may use.
    pub fn compile(
        src: &Arc<ExprSource>,
        extras: &[&str],
        diags: &mut Vec<Diagnostic>,
    ) -> Template {
        let text = src.node.as_str().unwrap_or_default();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        diags.push(
                            Loc::Expr(src.clone(), i)
                                .error("unclosed `{` in output")
                                .hint(Some("write `{{` for a literal brace".into()))
                                .field("output"),
                        );
                        break;
                    };
                    let name = rest[..end].trim();
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit).into_boxed_str()));
                    }
                    if extras.contains(&name) {
                        parts.push(Part::Extra(name.into()));
                    } else if let Some(f) = fields::resolve(name) {
                        parts.push(Part::Field(f.accessor));
                    } else {
                        let mut candidates: Vec<&str> = extras.to_vec();
                        for n in fields::names() {
                            candidates.push(n);
                        }
                        let hint = did_you_mean(name, candidates);
                        diags.push(
                            Loc::Expr(src.clone(), i + 1)
                                .error(format!("unknown field `{name}` in output"))
                                .field("output")
                                .hint(hint),
                        );
                    }
                    for _ in 0..rest[..end].chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    diags.push(
                        Loc::Expr(src.clone(), i)
                            .error("unmatched `}` in output")
                            .field("output")
                            .hint(Some("write `}}` for a literal brace".into())),
                    );
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit.into_boxed_str()));
        }
        Template { parts }
    }

    pub fn render(&self, ev: &Event, extras: &dyn Extras) -> String {
        let mut out = String::with_capacity(128);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(a) => a.get(ev).render(&mut out),
                Part::Extra(name) => out.push_str(extras.get(name).unwrap_or("<none>")),
            }
        }
        // Folded YAML scalars (`output: >`) end with a newline.
        let len = out.trim_end().len();
        out.truncate(len);
        out
    }
}
