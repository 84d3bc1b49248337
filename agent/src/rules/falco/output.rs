//! Falco output templates (`%proc.name`, `%proc.aname[2]`, `%(fd.name)`)
//! compiled to Picket templates: placeholders become accessors once.
//!
//! A field Picket does not have renders as `<NA>`, as Falco renders a
//! field it cannot extract; the rule still loads (outputs are messages,
//! not detection logic).

use super::{
    cond::FieldRef,
    fields::{self as ff, Mapping},
};
use crate::{
    model::{Event, EventKindName as K},
    rules::{
        fields::{Accessor, FieldValue},
        template::{Part, Template},
    },
};

/// `evt.type` in outputs: the syscall name, or the one Falco would show.
fn evt_type(e: &Event) -> FieldValue<'_> {
    if let Some(s) = &e.syscall {
        return FieldValue::Str(&s.name);
    }
    FieldValue::Str(match e.kind() {
        K::Exec => "execve",
        K::Fork => "clone",
        K::Exit => "procexit",
        other => other.as_str(),
    })
}

fn accessor(name: &str, arg: Option<String>) -> Option<Accessor> {
    let f = FieldRef {
        name: name.to_string(),
        arg,
        transformers: Vec::new(),
        offset: 0,
    };
    match ff::map(&f) {
        Mapping::Field(r) | Mapping::Net(r) => Some(r.accessor),
        Mapping::EvtType => Some(Accessor::Static("evt.type", evt_type)),
        Mapping::ProcCwd => {
            crate::rules::fields::resolve("process.working_directory").map(|r| r.accessor)
        }
        Mapping::OpenFlags => crate::rules::fields::resolve("file.flags").map(|r| r.accessor),
        Mapping::EvtDir => Some(Accessor::Static("evt.dir", |_| FieldValue::Str("<"))),
        _ => None,
    }
}

fn field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_')
}

pub fn compile(text: &str) -> Template {
    let text = text.trim_end();
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        // `%(field)` or `%field[arg]`.
        let (name, arg, consumed) = if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let body = &inner[..end];
                    let (n, a) = split_arg(body);
                    (n.to_string(), a, end + 2)
                }
                None => (String::new(), None, 0),
            }
        } else {
            let end = after.find(|c: char| !field_char(c)).unwrap_or(after.len());
            let mut n = &after[..end];
            let mut used = end;
            // A sentence's full stop is not part of the field.
            while n.ends_with('.') {
                n = &n[..n.len() - 1];
                used -= 1;
            }
            let mut arg = None;
            if used == end
                && after[end..].starts_with('[')
                && let Some(close) = after[end..].find(']')
            {
                arg = Some(after[end + 1..end + close].to_string());
                used = end + close + 1;
            }
            (n.to_string(), arg, used)
        };
        if name.is_empty() {
            lit.push('%');
            rest = after;
            continue;
        }
        if !lit.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut lit).into_boxed_str()));
        }
        match accessor(&name, arg) {
            Some(a) => parts.push(Part::Field(a)),
            None => parts.push(Part::Text("<NA>".into())),
        }
        rest = &after[consumed..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Text(lit.into_boxed_str()));
    }
    Template::from_parts(parts)
}

fn split_arg(body: &str) -> (&str, Option<String>) {
    match body.find('[') {
        Some(i) if body.ends_with(']') => {
            (&body[..i], Some(body[i + 1..body.len() - 1].to_string()))
        }
        _ => (body, None),
    }
}
