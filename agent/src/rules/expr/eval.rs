//! The compiled condition tree and its evaluation.
//!
//! A field that is absent from the event (its section is not set) makes
//! every comparison on it false, including negated ones (`!=`, `not in`):
//! "the port is not 22" should not match an event that has no port. Only
//! `exists` looks at absence itself.

use std::{collections::HashSet, net::IpAddr};

use ipnet::IpNet;

use super::ast::Op;
use crate::{
    model::Event,
    rules::fields::{Accessor, FieldValue},
};

#[derive(Debug)]
pub enum Cond {
    Const(bool),
    And(Box<[Cond]>),
    Or(Box<[Cond]>),
    Not(Box<Cond>),
    Pred(Box<Pred>),
}

impl Cond {
    #[inline]
    pub fn eval(&self, ev: &Event) -> bool {
        match self {
            Self::Const(b) => *b,
            Self::And(items) => items.iter().all(|c| c.eval(ev)),
            Self::Or(items) => items.iter().any(|c| c.eval(ev)),
            Self::Not(c) => !c.eval(ev),
            Self::Pred(p) => p.eval(ev),
        }
    }
}

/// One test of one field.
#[derive(Debug)]
pub struct Pred {
    /// The dotted field name, for analyses of a compiled rule (which
    /// conditions the kernel can decide on its own).
    pub field: Box<str>,
    pub accessor: Accessor,
    pub test: Test,
    /// `!=`, `not in`, `not contains`, ...: inverts the result when the field is present.
    pub negate: bool,
}

impl Pred {
    #[inline]
    pub fn eval(&self, ev: &Event) -> bool {
        let v = self.accessor.get(ev);
        if let Test::Exists = self.test {
            return v.exists();
        }
        if let FieldValue::Absent = v {
            return false;
        }
        self.test.matches(&v) != self.negate
    }
}

/// A set of strings: a linear scan beats hashing for the short lists rules use.
#[derive(Debug)]
pub enum StrSet {
    Small(Box<[Box<str>]>),
    Large(HashSet<Box<str>>),
}

impl StrSet {
    pub fn new(items: Vec<String>) -> Self {
        if items.len() <= 12 {
            Self::Small(items.into_iter().map(String::into_boxed_str).collect())
        } else {
            Self::Large(items.into_iter().map(String::into_boxed_str).collect())
        }
    }

    /// The members (order unspecified), for analyses of compiled rules.
    pub fn items(&self) -> Vec<&str> {
        match self {
            Self::Small(items) => items.iter().map(|i| &**i).collect(),
            Self::Large(set) => set.iter().map(|i| &**i).collect(),
        }
    }

    #[inline]
    pub fn contains(&self, s: &str) -> bool {
        match self {
            Self::Small(items) => items.iter().any(|i| &**i == s),
            Self::Large(set) => set.contains(s),
        }
    }
}

#[derive(Debug)]
pub enum Test {
    Exists,
    StrIn(StrSet),
    Prefix(Box<[Box<str>]>),
    Suffix(Box<[Box<str>]>),
    /// All needles in one automaton: one pass over the text, no per-call
    /// searcher setup (`str::contains` builds one per needle per call).
    Contains(aho_corasick::AhoCorasick),
    /// The compiled set and the patterns as written (analyses of compiled
    /// conditions read their literal parts: `sensor::rule_filters`).
    Glob(globset::GlobSet, Box<[Box<str>]>),
    Regex(Box<[regex::Regex]>),
    Cidr(Box<[IpNet]>),
    /// The address is a current address of one of the host names
    /// (Falco's `fd.sip.name = X`), resolved in the background.
    Resolved(crate::dns::HostSet),
    IntCmp(Op, i64),
    IntIn(Box<[i64]>),
    BoolEq(bool),
}

/// Parses an address as written in events; IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`, dual-stack sockets) compare as IPv4.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

impl Test {
    #[inline]
    fn matches(&self, v: &FieldValue<'_>) -> bool {
        match self {
            Self::Exists => v.exists(),
            Self::StrIn(set) => v.any_str(|s| set.contains(s)),
            Self::Prefix(ps) => v.any_str(|s| ps.iter().any(|p| s.starts_with(&**p))),
            Self::Suffix(ps) => v.any_str(|s| ps.iter().any(|p| s.ends_with(&**p))),
            Self::Contains(ac) => v.any_str(|s| ac.is_match(s)),
            Self::Glob(set, _) => v.any_str(|s| set.is_match(s)),
            Self::Regex(rs) => v.any_str(|s| rs.iter().any(|r| r.is_match(s))),
            Self::Cidr(nets) => {
                v.any_str(|s| parse_ip(s).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))))
            }
            Self::Resolved(hosts) => {
                v.any_str(|s| parse_ip(s).is_some_and(|ip| hosts.contains(&ip)))
            }
            Self::IntCmp(op, x) => v.any_int(|i| match op {
                Op::Eq => i == *x,
                Op::Ne => i != *x,
                Op::Lt => i < *x,
                Op::Le => i <= *x,
                Op::Gt => i > *x,
                Op::Ge => i >= *x,
                _ => false,
            }),
            Self::IntIn(set) => v.any_int(|i| set.contains(&i)),
            Self::BoolEq(b) => matches!(v, FieldValue::Bool(x) if x == b),
        }
    }
}
