//! The in-kernel filters computed from the loaded rules.
//!
//! A busy node should not pay ring-buffer traffic for events no rule can
//! match. From a compiled [`RuleSet`] this module derives:
//!
//! - **kinds**: a syscall-sensor kind that no enabled rule lists in its
//!   `events` is switched off in the kernel (unless every kind must stay on,
//!   e.g. `picket run --events` prints them all);
//! - **file paths**: for `file_open`, the union of the literals the rules
//!   compare `file.path` with (`==`, `in`, `startswith` become prefixes,
//!   `endswith` suffixes, a `glob` gives the literal text before its first
//!   wildcard, or else after its last), merged with the configured
//!   prefixes/suffixes. A rule whose condition cannot be reduced to such
//!   literals (`contains`, `matches`, a negation, a test of another field
//!   that does not also restrict the path, ...) turns path filtering off,
//!   with a warning that names the rule: dropping opens that rule could match
//!   would be a silent detection gap.
//! - **file-change paths**: the same for `file_change`, from `file.path` and
//!   `file.target`; tests only the kernel's unconditional reports can pass
//!   (`file.setuid`, `file.setgid`, `file.op == "mknod"`, `file.node_type`)
//!   need no literal, and an `event.kind` test naming another kind makes its
//!   alternative restrict nothing for this one. An irreducible rule turns
//!   change-path filtering off on its own (`change_all_paths`).
//!
//! Network families and ports stay as configured: the kernel's network
//! filter is one family/port set shared by connect, send, bind, listen and
//! accept, and it reads the caller's address at entry for connect/send/bind
//! but the socket's *local* address at exit for listen/accept, so a rule's
//! `network.peer.port == 22` on `connect` would have to drop listen/accept
//! events other rules need. Per-kind port sets would make it derivable.
//!
//! Why this is sound: the kernel matches the path exactly as passed to
//! open(2), and the event's `file.path` is that same string, so "the path
//! starts with one of the literals" is a necessary condition of every
//! reducible rule. Exceptions only remove matches and are ignored.
//!
//! [`follow_rules`] re-derives and re-applies on every rule reload; the
//! kernel switches to the new set atomically (`filter_maps`).

use std::{collections::BTreeSet, fmt, sync::Arc};

use agent_common::file::FILE_PATH_MAX;
use tracing::{info, warn};

use super::{
    filter_maps::FilterHandle,
    filters::{FilterError, SensorFilters},
};
use crate::{
    model::EventKindName,
    rules::{
        Engine, RuleSet,
        expr::{Cond, Pred, Test, eval::StrSet},
    },
};

/// Kinds the kernel can switch off (the syscall sensors). Process events
/// (exec/fork/exit) always run: the process tree needs them.
pub const SWITCHABLE_KINDS: &[EventKindName] = &[
    EventKindName::Capability,
    EventKindName::PrivilegeChange,
    EventKindName::Mount,
    EventKindName::Connect,
    EventKindName::Send,
    EventKindName::Bind,
    EventKindName::Listen,
    EventKindName::Accept,
    EventKindName::Namespace,
    EventKindName::Ptrace,
    EventKindName::Memfd,
    EventKindName::ModuleLoad,
    EventKindName::Bpf,
    EventKindName::FdDup,
    EventKindName::FileOpen,
    EventKindName::FileChange,
    EventKindName::RawSocket,
];

/// Entries of each path trie in the kernel (`agent-ebpf/src/file.rs`).
pub const MAX_PATHS: usize = 1024;

/// What the derivation starts from.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    /// Configured filters: kinds disabled here stay off, these paths stay
    /// monitored, network and rate limits are used as they are.
    pub base: SensorFilters,
    /// Keep every kind on whatever the rules need (`--events` prints every
    /// event; event-stream subscribers may want them too).
    pub keep_all_kinds: bool,
}

/// The filter dimension a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Kinds,
    FilePaths,
    /// The path sets of `file_change`.
    ChangePaths,
}

/// Why a dimension is filtered less than the rules alone would allow, or a
/// rule will see fewer events than it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterWarning {
    pub dimension: Dimension,
    /// The rule that caused it (`None`: a limit of the kernel maps).
    pub rule: Option<String>,
    pub reason: String,
}

impl fmt::Display for FilterWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rule, self.dimension) {
            (Some(r), Dimension::FilePaths) => write!(
                f,
                "rule `{r}`: file opens are not filtered by path in the kernel: {}",
                self.reason
            ),
            (None, Dimension::FilePaths) => write!(
                f,
                "file opens are not filtered by path in the kernel: {}",
                self.reason
            ),
            (Some(r), Dimension::ChangePaths) => write!(
                f,
                "rule `{r}`: file changes are not filtered by path in the kernel: {}",
                self.reason
            ),
            (None, Dimension::ChangePaths) => write!(
                f,
                "file changes are not filtered by path in the kernel: {}",
                self.reason
            ),
            (Some(r), Dimension::Kinds) => write!(f, "rule `{r}`: {}", self.reason),
            (None, Dimension::Kinds) => write!(f, "{}", self.reason),
        }
    }
}

/// The result of [`derive_filters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedFilters {
    pub filters: SensorFilters,
    pub warnings: Vec<FilterWarning>,
}

impl DerivedFilters {
    /// Logs the warnings and a summary.
    pub fn log(&self) {
        for w in &self.warnings {
            warn!("{w}");
        }
        info!(
            disabled = ?self.filters.disabled,
            all_paths = self.filters.all_paths,
            file_prefixes = self.filters.file_prefixes.len(),
            file_suffixes = self.filters.file_suffixes.len(),
            change_all_paths = self.filters.change_all_paths,
            change_prefixes = self.filters.change_prefixes.len(),
            change_suffixes = self.filters.change_suffixes.len(),
            "in-kernel filters derived from the rules"
        );
    }
}

/// Computes the in-kernel filters for `rules` on top of `cfg` (see the
/// module docs).
pub fn derive_filters(rules: &RuleSet, cfg: &FilterConfig) -> DerivedFilters {
    let mut f = cfg.base.clone();
    let mut warnings = Vec::new();
    let enabled = || rules.rules().iter().filter(|r| r.enabled);

    for r in enabled() {
        for k in r.events.iter().filter(|k| cfg.base.disabled.contains(k)) {
            warnings.push(FilterWarning {
                dimension: Dimension::Kinds,
                rule: Some(r.id.to_string()),
                reason: format!(
                    "`{}` events are disabled by configuration; the rule never sees them",
                    k.as_str()
                ),
            });
        }
    }
    if !cfg.keep_all_kinds {
        let needed: BTreeSet<EventKindName> =
            enabled().flat_map(|r| r.events.iter().copied()).collect();
        f.disabled.extend(
            SWITCHABLE_KINDS
                .iter()
                .filter(|k| !needed.contains(k))
                .copied(),
        );
    }

    for &i in rules.for_kind(EventKindName::FileOpen) {
        let r = &rules.rules()[i];
        match reduce(&r.condition, Target::Open) {
            Ok(p) => {
                f.file_prefixes.extend(p.prefixes);
                f.file_suffixes.extend(p.suffixes);
                f.file_exact.extend(p.exact);
            }
            Err(reason) => {
                f.all_paths = true;
                warnings.push(FilterWarning {
                    dimension: Dimension::FilePaths,
                    rule: Some(r.id.to_string()),
                    reason,
                });
            }
        }
    }
    for &i in rules.for_kind(EventKindName::FileChange) {
        let r = &rules.rules()[i];
        match reduce(&r.condition, Target::Change) {
            Ok(p) => {
                f.change_prefixes.extend(p.prefixes);
                f.change_suffixes.extend(p.suffixes);
            }
            Err(reason) => {
                f.change_all_paths = true;
                warnings.push(FilterWarning {
                    dimension: Dimension::ChangePaths,
                    rule: Some(r.id.to_string()),
                    reason,
                });
            }
        }
    }
    if f.change_all_paths {
        f.change_prefixes.clear();
        f.change_suffixes.clear();
    }
    if !f.all_paths && (f.file_prefixes.len() > MAX_PATHS || f.file_suffixes.len() > MAX_PATHS) {
        f.all_paths = true;
        warnings.push(FilterWarning {
            dimension: Dimension::FilePaths,
            rule: None,
            reason: format!(
                "{} prefixes and {} suffixes exceed the kernel's {MAX_PATHS} entries per set",
                f.file_prefixes.len(),
                f.file_suffixes.len()
            ),
        });
    }
    if f.all_paths {
        // Not consulted by the kernel; keeping them would only hide that.
        f.file_prefixes.clear();
        f.file_suffixes.clear();
        f.file_exact.clear();
    }
    // The kernel holds both kinds' literals in one pair of tries.
    let prefixes = f.file_prefixes.union(&f.change_prefixes).count();
    let suffixes = f.file_suffixes.union(&f.change_suffixes).count();
    if !f.change_all_paths && (prefixes > MAX_PATHS || suffixes > MAX_PATHS) {
        f.change_all_paths = true;
        f.change_prefixes.clear();
        f.change_suffixes.clear();
        warnings.push(FilterWarning {
            dimension: Dimension::ChangePaths,
            rule: None,
            reason: format!(
                "{prefixes} prefixes and {suffixes} suffixes exceed the kernel's {MAX_PATHS} entries per set"
            ),
        });
    }
    DerivedFilters {
        filters: f,
        warnings,
    }
}

/// Literals a condition needs `file.path` to start or end with.
#[derive(Debug, Default, PartialEq, Eq)]
struct PathSets {
    prefixes: BTreeSet<String>,
    suffixes: BTreeSet<String>,
    /// The prefixes that are whole paths (`==`, `in`).
    exact: BTreeSet<String>,
}

impl PathSets {
    fn len(&self) -> usize {
        self.prefixes.len() + self.suffixes.len()
    }
}

/// Which kind's path filter a rule is reduced for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `file_open`: `file.path` is the path the kernel matched.
    Open,
    /// `file_change`: the kernel matches `file.path` and `file.target`
    /// (either one matching reports the change), and reports setuid/setgid
    /// chmods and every mknod whatever the path.
    Change,
}

/// Path literals such that `cond` can only be true for paths that start
/// with one of `prefixes` or end with one of `suffixes`; `Err` says why no
/// such set exists.
fn reduce(cond: &Cond, t: Target) -> Result<PathSets, String> {
    let reduce = |c: &Cond| reduce(c, t);
    match cond {
        Cond::Const(false) => Ok(PathSets::default()),
        Cond::Const(true) => Err("the condition is always true".into()),
        Cond::Pred(p) => reduce_pred(p, t),
        // Any restricting part restricts the whole: take the tightest.
        Cond::And(items) => {
            let mut best: Option<PathSets> = None;
            let mut first_err = None;
            for c in items.iter() {
                match reduce(c) {
                    Ok(p) if best.as_ref().is_none_or(|b| p.len() < b.len()) => best = Some(p),
                    Ok(_) => {}
                    // A reason about the path test says more than one
                    // about a test next to it (a Falco rule's `evt.type`).
                    Err(e) => {
                        if first_err
                            .as_ref()
                            .is_none_or(|f: &String| !about_path(f) && about_path(&e))
                        {
                            first_err = Some(e);
                        }
                    }
                }
            }
            best.ok_or_else(|| first_err.unwrap_or_else(|| "the condition is always true".into()))
        }
        // Every alternative must restrict the path.
        Cond::Or(items) => {
            let mut all = PathSets::default();
            for c in items.iter() {
                let p = reduce(c)?;
                all.prefixes.extend(p.prefixes);
                all.suffixes.extend(p.suffixes);
                all.exact.extend(p.exact);
            }
            Ok(all)
        }
        Cond::Not(inner) => match &**inner {
            Cond::Not(c) => reduce(c),
            Cond::Const(b) => reduce(&Cond::Const(!b)),
            _ => Err("a negated test (`not ...`) can match any path".into()),
        },
    }
}

/// Whether a reason of [`reduce`] is about a test of the path itself.
fn about_path(reason: &str) -> bool {
    reason.contains("normalized path") || reason.starts_with("`file.path` is")
}

/// For `file_change`: a test that only events the kernel reports whatever
/// the path can pass (an empty literal set then restricts enough).
fn always_reported(p: &Pred) -> bool {
    if p.negate {
        return false;
    }
    match p.accessor.field_name() {
        Some("file.setuid" | "file.setgid") => matches!(p.test, Test::BoolEq(true)),
        // Present only on mknod events, all of which are reported.
        Some("file.node_type" | "file.device.major" | "file.device.minor") => true,
        Some("file.op") => match &p.test {
            Test::StrIn(StrSet::Small(items)) => items.iter().all(|s| &**s == "mknod"),
            Test::StrIn(StrSet::Large(items)) => items.iter().all(|s| &**s == "mknod"),
            _ => false,
        },
        _ => false,
    }
}

/// Whether `p` is an `event.kind` test that no event of `t`'s kind passes
/// (the alternative of a multi-kind rule that is about another kind: it
/// restricts this kind's paths to nothing).
fn other_kind(p: &Pred, t: Target) -> bool {
    if p.negate || p.accessor.field_name() != Some("event.kind") {
        return false;
    }
    let own = match t {
        Target::Open => EventKindName::FileOpen.as_str(),
        Target::Change => EventKindName::FileChange.as_str(),
    };
    match &p.test {
        Test::StrIn(StrSet::Small(items)) => !items.iter().any(|s| &**s == own),
        Test::StrIn(StrSet::Large(items)) => !items.iter().any(|s| &**s == own),
        _ => false,
    }
}

fn reduce_pred(p: &Pred, t: Target) -> Result<PathSets, String> {
    if (t == Target::Change && always_reported(p)) || other_kind(p, t) {
        return Ok(PathSets::default());
    }
    if t == Target::Open
        && let Some(f @ ("fd.name" | "fd.filename" | "fd.directory")) = p.accessor.field_name()
    {
        return reduce_falco_name(f, p);
    }
    match p.accessor.field_name() {
        Some("file.path") => {}
        Some("file.target") if t == Target::Change => {}
        Some(other) => {
            return Err(format!(
                "`{other}` is tested without a `file.path` literal next to it"
            ));
        }
        None => return Err("a label is tested without a `file.path` literal next to it".into()),
    }
    if p.negate && !matches!(p.test, Test::Exists) {
        return Err("`file.path` is tested with a negated operator (`!=`, `not ...`)".into());
    }
    let mut out = PathSets::default();
    if let Test::Glob(_, patterns) = &p.test {
        for pat in patterns.iter() {
            match glob_literal(pat) {
                GlobLiteral::Prefix(l) => out.prefixes.insert(checked(l)?.to_string()),
                GlobLiteral::Suffix(l) => out.suffixes.insert(checked(l)?.to_string()),
                GlobLiteral::None => {
                    return Err(format!(
                        "`file.path` is tested with the glob \"{pat}\", which has no literal prefix or suffix"
                    ));
                }
            };
        }
        return Ok(out);
    }
    let (literals, suffix, exact): (Vec<&str>, bool, bool) = match &p.test {
        Test::StrIn(StrSet::Small(items)) => (items.iter().map(|s| &**s).collect(), false, true),
        Test::StrIn(StrSet::Large(items)) => (items.iter().map(|s| &**s).collect(), false, true),
        Test::Prefix(items) => (items.iter().map(|s| &**s).collect(), false, false),
        Test::Suffix(items) => (items.iter().map(|s| &**s).collect(), true, false),
        other => {
            return Err(format!(
                "`file.path` is tested with `{}`, which the kernel cannot match",
                test_name(other)
            ));
        }
    };
    for lit in literals {
        checked(lit)?;
        if suffix {
            out.suffixes.insert(lit.to_string());
        } else {
            out.prefixes.insert(lit.to_string());
            if exact && p.accessor.field_name() == Some("file.path") {
                out.exact.insert(lit.to_string());
            }
        }
    }
    Ok(out)
}

/// Raw path endings whose lexical normal form drops or rewrites the last
/// segment (`/etc/shadow/.`, `/etc/shadow/x/..`, `/etc/shadow/`): with
/// these, "the normal form's last segment is S" implies "the raw path ends
/// with S or with one of these".
const NON_NORMAL_ENDINGS: &[&str] = &["/", "/.", "/.."];

/// Falco's `fd.name` is the *normalized* path (`FileAccess::name`), while
/// the kernel matches the raw one. A raw path can reach any normal form
/// through `..` anywhere in it (`/var/../etc/shadow`), so a prefix of the
/// normal form is not a prefix of the raw path: `startswith`, `pmatch`,
/// `glob` and `fd.directory` stay irreducible. The *last* segment survives
/// normalization unless the raw path ends in one of [`NON_NORMAL_ENDINGS`],
/// so tests that pin the last segment lower soundly to suffixes:
/// `fd.name = /a/b` and `in` give the suffix `/b` (and `/a/b` as an exact
/// prefix, for the priority lane when the raw path is exactly that);
/// `fd.filename = b` / `in` and `endswith` of either field without a `/`
/// give the suffix itself. Relative paths are not normalized
/// (`fd.name` is the raw path), so the same suffixes hold for them.
fn reduce_falco_name(field: &str, p: &Pred) -> Result<PathSets, String> {
    let irreducible = |why: &str| {
        Err(format!(
            "`{field}` is {why}; Falco's `{field}` is the normalized path and the kernel sees the raw one (`/var/../etc/x`), so only tests that fix the last path segment (`fd.name =`/`in`, `fd.filename =`/`in`, `endswith` without `/`) are lowered"
        ))
    };
    if p.negate {
        return irreducible("tested with a negated operator");
    }
    if field == "fd.directory" {
        return irreducible("tested");
    }
    let mut out = PathSets::default();
    let items: Vec<&str> = match &p.test {
        Test::StrIn(StrSet::Small(items)) => items.iter().map(|s| &**s).collect(),
        Test::StrIn(StrSet::Large(items)) => items.iter().map(|s| &**s).collect(),
        Test::Suffix(items) => {
            for lit in items.iter() {
                let seg = lit.strip_prefix('/').unwrap_or(lit);
                if seg.is_empty() || seg.contains('/') || seg == "." || seg == ".." {
                    return irreducible(&format!("compared with the ending \"{lit}\""));
                }
                out.suffixes.insert(checked(lit)?.to_string());
            }
            out.suffixes
                .extend(NON_NORMAL_ENDINGS.iter().map(|s| s.to_string()));
            return Ok(out);
        }
        other => return irreducible(&format!("tested with `{}`", test_name(other))),
    };
    for lit in items {
        if field == "fd.filename" {
            if lit.is_empty() || lit.contains('/') || lit == "." || lit == ".." {
                return irreducible(&format!("compared with \"{lit}\""));
            }
            out.suffixes.insert(checked(lit)?.to_string());
            continue;
        }
        // `fd.name = lit`: an absolute normal path (a literal that is not
        // in normal form can only equal a relative raw path, which is the
        // literal itself: covered by its last segment too).
        let Some(i) = lit.rfind('/') else {
            if lit.is_empty() || lit == "." || lit == ".." {
                return irreducible(&format!("compared with \"{lit}\""));
            }
            out.suffixes.insert(checked(lit)?.to_string());
            continue;
        };
        let last = &lit[i..];
        if last.len() < 2 || last == "/." || last == "/.." {
            return irreducible(&format!("compared with \"{lit}\""));
        }
        out.suffixes.insert(checked(last)?.to_string());
        if lit.starts_with('/') && crate::model::FileAccess::normalize(lit).is_none() {
            out.prefixes.insert(checked(lit)?.to_string());
            out.exact.insert(lit.to_string());
        }
    }
    out.suffixes
        .extend(NON_NORMAL_ENDINGS.iter().map(|s| s.to_string()));
    Ok(out)
}

/// A literal the kernel can hold (1 to 255 bytes).
fn checked(lit: &str) -> Result<&str, String> {
    if lit.is_empty() {
        return Err(
            "`file.path` is compared with an empty string, which matches every path".into(),
        );
    }
    if lit.len() >= FILE_PATH_MAX {
        return Err(format!(
            "a `file.path` literal is longer than {} bytes (the kernel's key size)",
            FILE_PATH_MAX - 1
        ));
    }
    Ok(lit)
}

/// The literal part of a glob that every match starts (or ends) with.
#[derive(Debug, PartialEq, Eq)]
enum GlobLiteral<'a> {
    Prefix(&'a str),
    Suffix(&'a str),
    None,
}

/// Glob syntax characters (globset: wildcards, classes, alternations,
/// escapes). Text before the first one is matched literally at the start of
/// the path (globs match the whole path), text after the last one at its end.
const GLOB_SPECIAL: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

fn glob_literal(pat: &str) -> GlobLiteral<'_> {
    let first = pat.find(GLOB_SPECIAL).unwrap_or(pat.len());
    if first > 0 {
        return GlobLiteral::Prefix(&pat[..first]);
    }
    let last = pat.rfind(GLOB_SPECIAL).map_or(0, |i| i + 1);
    if last < pat.len() {
        return GlobLiteral::Suffix(&pat[last..]);
    }
    GlobLiteral::None
}

fn test_name(t: &Test) -> &'static str {
    match t {
        Test::Exists => "exists",
        Test::StrIn(_) => "in",
        Test::Prefix(_) => "startswith",
        Test::Suffix(_) => "endswith",
        Test::Contains(_) => "contains",
        Test::Glob(..) => "glob",
        Test::Regex(_) => "matches",
        Test::Cidr(_) => "cidr",
        Test::Resolved(_) => "a resolved host name",
        Test::IntCmp(..) | Test::IntIn(_) => "an integer comparison",
        Test::BoolEq(_) => "a boolean test",
    }
}

/// Derives the filters for `rules` and writes them to the kernel (blocks up
/// to `filter_maps::GRACE`); logs the warnings.
pub fn apply_rules(
    handle: &FilterHandle,
    rules: &RuleSet,
    cfg: &FilterConfig,
) -> Result<DerivedFilters, FilterError> {
    let derived = derive_filters(rules, cfg);
    derived.log();
    handle.apply(&derived.filters)?;
    Ok(derived)
}

/// Applies the filters for the engine's current rules now, then again after
/// every reload, until the engine is dropped. Failures are logged and the
/// kernel keeps the previous filters. Call inside a tokio runtime; `picket
/// run` calls it right after `Agent::start`.
pub fn follow_rules(
    engine: &Engine,
    handle: FilterHandle,
    cfg: FilterConfig,
) -> tokio::task::JoinHandle<()> {
    let mut rx = engine.subscribe();
    let cfg = Arc::new(cfg);
    tokio::spawn(async move {
        loop {
            let set = rx.borrow_and_update().clone();
            let (h, c) = (handle.clone(), cfg.clone());
            match tokio::task::spawn_blocking(move || apply_rules(&h, &set, &c)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "in-kernel filters not updated; the previous ones stay")
                }
                Err(e) => tracing::error!(error = %e, "filter update task failed"),
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests;
