//! Compiling kill-process rules into the kernel's condition maps.
//!
//! Pure functions (no kernel access) so every encoding is unit-tested; see
//! `agent_common::enforce` for the map layout and the executable key.

use std::collections::BTreeMap;

use agent_common::enforce::{
    ARGV_KEY_LEN, CgroupEntry, EXE_KEY_LEN, KillConfig, MAX_KILL_RULES, exe_key,
};
use serde::{Deserialize, Serialize};

/// Executable condition of a kill rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExeMatch {
    /// This exact absolute path.
    Exact(String),
    /// Any path under this directory (whole components: `/tmp` matches
    /// `/tmp/x` and `/tmp/a/b`, not `/tmpfoo/x`).
    Under(String),
}

/// Where a kill rule applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillScope {
    /// Processes below a container root cgroup (e.g. `kubepods`).
    #[default]
    AnyContainer,
    /// Processes in these cgroups (ids = directory inodes) or below them.
    Cgroups(Vec<u64>),
    /// Every process, host processes included. Refused unless the safety
    /// configuration allows acting on the host.
    Anywhere,
}

/// A kill-process rule the kernel can decide on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillRuleSpec {
    /// Rule id (reported in audit records).
    pub id: String,
    #[serde(default)]
    pub exe: Option<ExeMatch>,
    /// argv[0..n] must equal these, element by element.
    #[serde(default)]
    pub argv_prefix: Vec<String>,
    #[serde(default)]
    pub scope: KillScope,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("at most {MAX_KILL_RULES} in-kernel kill rules are supported, got {0}")]
    TooMany(usize),
    #[error(
        "rule {rule}: executable path {path:?} must be absolute, without empty, '.' or '..' components, and at most {EXE_KEY_LEN} bytes"
    )]
    BadPath { rule: String, path: String },
    #[error("rule {rule}: argv prefix is longer than {ARGV_KEY_LEN} bytes or contains a NUL")]
    BadArgv { rule: String },
    #[error(
        "rule {rule}: has no condition (no executable, no argv prefix): it would kill every process in its scope"
    )]
    NoCondition { rule: String },
    #[error("rule {rule}: scope lists no cgroup")]
    EmptyScope { rule: String },
}

/// The contents of the kernel maps for a rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledKill {
    /// Masks (`agent_tgid`, offsets are filled by the loader).
    pub config: KillConfig,
    pub exe: BTreeMap<[u8; EXE_KEY_LEN], u64>,
    /// `(prefix bits, key, mask of this and every shorter prefix's rules)`.
    pub exe_prefix: Vec<(u32, [u8; EXE_KEY_LEN], u64)>,
    pub argv: Vec<(u32, [u8; ARGV_KEY_LEN], u64)>,
    /// Rules scoped per cgroup (merged with container roots and protected
    /// cgroups by the caller).
    pub cgroup_rules: BTreeMap<u64, u64>,
    /// Rule index -> id.
    pub ids: Vec<String>,
}

/// NUL-joined argv prefix bytes.
pub fn argv_bytes(args: &[String]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for a in args {
        if a.as_bytes().contains(&0) {
            return None;
        }
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    (out.len() <= ARGV_KEY_LEN).then_some(out)
}

/// Compiles `rules` (index = bit).
pub fn compile(rules: &[KillRuleSpec]) -> Result<CompiledKill, CompileError> {
    if rules.len() > MAX_KILL_RULES as usize {
        return Err(CompileError::TooMany(rules.len()));
    }
    let mut c = CompiledKill::default();
    // (key bytes, mask) per distinct prefix before nesting.
    let mut exe_prefixes: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut argv_prefixes: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        let bit = 1u64 << i;
        c.config.active |= bit;
        if r.dry_run {
            c.config.dry_run |= bit;
        }
        if r.exe.is_none() && r.argv_prefix.is_empty() {
            return Err(CompileError::NoCondition { rule: r.id.clone() });
        }
        let bad_path = |p: &str| CompileError::BadPath {
            rule: r.id.clone(),
            path: p.to_string(),
        };
        match &r.exe {
            None => c.config.no_exe |= bit,
            Some(ExeMatch::Exact(p)) => {
                let mut key = [0u8; EXE_KEY_LEN];
                exe_key(p.as_bytes(), false, &mut key).ok_or_else(|| bad_path(p))?;
                *c.exe.entry(key).or_default() |= bit;
            }
            Some(ExeMatch::Under(p)) => {
                let mut key = [0u8; EXE_KEY_LEN];
                let n = exe_key(p.as_bytes(), true, &mut key).ok_or_else(|| bad_path(p))?;
                *exe_prefixes.entry(key[..n].to_vec()).or_default() |= bit;
            }
        }
        if r.argv_prefix.is_empty() {
            c.config.no_argv |= bit;
        } else {
            let b = argv_bytes(&r.argv_prefix)
                .ok_or_else(|| CompileError::BadArgv { rule: r.id.clone() })?;
            *argv_prefixes.entry(b).or_default() |= bit;
        }
        match &r.scope {
            KillScope::AnyContainer => c.config.scope_container |= bit,
            KillScope::Anywhere => c.config.scope_any |= bit,
            KillScope::Cgroups(ids) => {
                if ids.is_empty() {
                    return Err(CompileError::EmptyScope { rule: r.id.clone() });
                }
                for id in ids {
                    *c.cgroup_rules.entry(*id).or_default() |= bit;
                }
            }
        }
        c.ids.push(r.id.clone());
    }
    c.exe_prefix = nest::<EXE_KEY_LEN>(&exe_prefixes);
    c.argv = nest::<ARGV_KEY_LEN>(&argv_prefixes);
    Ok(c)
}

/// LPM entries whose masks include the rules of every shorter prefix, so the
/// longest match answers for all matching rules.
fn nest<const N: usize>(prefixes: &BTreeMap<Vec<u8>, u64>) -> Vec<(u32, [u8; N], u64)> {
    prefixes
        .keys()
        .map(|p| {
            let mask = prefixes
                .iter()
                .filter(|(q, _)| p.starts_with(q))
                .fold(0u64, |m, (_, bits)| m | bits);
            let mut key = [0u8; N];
            key[..p.len()].copy_from_slice(p);
            (p.len() as u32 * 8, key, mask)
        })
        .collect()
}

/// Merges per-cgroup rule masks with the container roots and protected
/// cgroups into the `ENFORCE_CGROUPS` map contents.
pub fn cgroup_entries(
    rules: &BTreeMap<u64, u64>,
    container_roots: &[u64],
    protected: &[u64],
) -> BTreeMap<u64, CgroupEntry> {
    use agent_common::enforce::cgroup_flags;
    let mut out: BTreeMap<u64, CgroupEntry> = BTreeMap::new();
    for (id, mask) in rules {
        out.entry(*id).or_default().rules |= mask;
    }
    for id in container_roots {
        out.entry(*id).or_default().flags |= cgroup_flags::CONTAINER_ROOT;
    }
    for id in protected {
        out.entry(*id).or_default().flags |= cgroup_flags::PROTECTED;
    }
    out
}

/// The path back from a kernel executable key (`\0rsu\0nib\0cn` -> `/usr/bin/nc`).
pub fn path_from_exe_key(key: &[u8]) -> String {
    let mut s = String::new();
    for comp in key.split(|&b| b == 0).filter(|c| !c.is_empty()) {
        let c: Vec<u8> = comp.iter().rev().copied().collect();
        s.push('/');
        s.push_str(&String::from_utf8_lossy(&c));
    }
    if s.is_empty() { "/".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, exe: Option<ExeMatch>, argv: &[&str], scope: KillScope) -> KillRuleSpec {
        KillRuleSpec {
            id: id.into(),
            exe,
            argv_prefix: argv.iter().map(|s| s.to_string()).collect(),
            scope,
            dry_run: false,
        }
    }

    #[test]
    fn exe_keys_are_reversed_leaf_first_walks() {
        let mut k = [0u8; EXE_KEY_LEN];
        assert_eq!(exe_key(b"/usr/bin/nc", false, &mut k), Some(11));
        assert_eq!(&k[..11], b"\0rsu\0nib\0cn");
        assert!(k[11..].iter().all(|&b| b == 0));
        // The kernel's leaf-first walk of /usr/bin/nc, reversed byte by byte.
        let walk = b"nc\0bin\0usr\0";
        let rev: Vec<u8> = walk.iter().rev().copied().collect();
        assert_eq!(&rev[..], &k[..11]);
        assert_eq!(exe_key(b"/usr/", true, &mut k), Some(5));
        assert_eq!(&k[..5], b"\0rsu\0");
        assert_eq!(exe_key(b"/usr", true, &mut k), Some(5));
        assert_eq!(exe_key(b"/", true, &mut k), Some(1));
        assert_eq!(exe_key(b"/", false, &mut k), None);
        assert_eq!(exe_key(b"usr/bin", false, &mut k), None);
        assert_eq!(exe_key(b"/usr//bin", false, &mut k), None);
        assert_eq!(exe_key(b"/usr/../bin", false, &mut k), None);
        let long = format!("/{}", "a".repeat(300));
        assert_eq!(exe_key(long.as_bytes(), false, &mut k), None);
        assert_eq!(path_from_exe_key(b"\0rsu\0nib\0cn\0\0\0"), "/usr/bin/nc");
    }

    #[test]
    fn directory_prefix_matches_whole_components_only() {
        let mut dir = [0u8; EXE_KEY_LEN];
        let n = exe_key(b"/usr", true, &mut dir).unwrap();
        // The kernel looks keys up with their own length as prefix length:
        // a match needs the whole directory prefix within the key.
        let under = |path: &[u8]| {
            let mut k = [0u8; EXE_KEY_LEN];
            let len = exe_key(path, false, &mut k).unwrap();
            k[..len].starts_with(&dir[..n])
        };
        assert!(under(b"/usr/bin/nc"));
        assert!(under(b"/usr/x"));
        assert!(!under(b"/usrx/bin"));
        assert!(!under(b"/xusr/bin"));
        assert!(!under(b"/usr"), "the directory itself is not under itself");
    }

    #[test]
    fn compiles_masks_and_nested_prefixes() {
        let rules = vec![
            rule(
                "nc",
                Some(ExeMatch::Exact("/usr/bin/nc".into())),
                &[],
                KillScope::AnyContainer,
            ),
            rule(
                "tmp",
                Some(ExeMatch::Under("/tmp".into())),
                &[],
                KillScope::Cgroups(vec![7, 9]),
            ),
            rule(
                "tmp-x",
                Some(ExeMatch::Under("/tmp/x/".into())),
                &["sh", "-c"],
                KillScope::Anywhere,
            ),
            rule("curl", None, &["curl"], KillScope::AnyContainer),
        ];
        let c = compile(&rules).unwrap();
        assert_eq!(c.config.active, 0b1111);
        assert_eq!(c.config.no_exe, 0b1000);
        assert_eq!(c.config.no_argv, 0b0011);
        assert_eq!(c.config.scope_container, 0b1001);
        assert_eq!(c.config.scope_any, 0b0100);
        assert_eq!(c.config.dry_run, 0);
        assert_eq!(c.cgroup_rules, BTreeMap::from([(7, 0b0010), (9, 0b0010)]));
        assert_eq!(c.exe.len(), 1);
        assert_eq!(c.exe.values().copied().collect::<Vec<_>>(), vec![0b0001]);
        let prefixes: Vec<(u32, Vec<u8>, u64)> = c
            .exe_prefix
            .iter()
            .map(|(b, k, m)| (*b, k[..(*b / 8) as usize].to_vec(), *m))
            .collect();
        assert_eq!(
            prefixes,
            vec![
                (5 * 8, b"\0pmt\0".to_vec(), 0b0010),
                (7 * 8, b"\0pmt\0x\0".to_vec(), 0b0110)
            ]
        );
        let argv: Vec<(u32, Vec<u8>, u64)> = c
            .argv
            .iter()
            .map(|(b, k, m)| (*b, k[..(*b / 8) as usize].to_vec(), *m))
            .collect();
        assert_eq!(
            argv,
            vec![
                (5 * 8, b"curl\0".to_vec(), 0b1000),
                (6 * 8, b"sh\0-c\0".to_vec(), 0b0100)
            ]
        );
        assert_eq!(c.ids, vec!["nc", "tmp", "tmp-x", "curl"]);
    }

    #[test]
    fn rejects_bad_rules() {
        let none = rule("x", None, &[], KillScope::AnyContainer);
        assert_eq!(
            compile(&[none]),
            Err(CompileError::NoCondition { rule: "x".into() })
        );
        let rel = rule(
            "r",
            Some(ExeMatch::Exact("bin/sh".into())),
            &[],
            KillScope::AnyContainer,
        );
        assert!(matches!(compile(&[rel]), Err(CompileError::BadPath { .. })));
        let long = rule("a", None, &[&"x".repeat(200)], KillScope::AnyContainer);
        assert_eq!(
            compile(&[long]),
            Err(CompileError::BadArgv { rule: "a".into() })
        );
        let empty = rule("e", None, &["a"], KillScope::Cgroups(vec![]));
        assert_eq!(
            compile(&[empty]),
            Err(CompileError::EmptyScope { rule: "e".into() })
        );
        let many: Vec<_> = (0..65)
            .map(|i| rule(&i.to_string(), None, &["a"], KillScope::AnyContainer))
            .collect();
        assert_eq!(compile(&many), Err(CompileError::TooMany(65)));
    }

    #[test]
    fn cgroup_entries_merge_flags() {
        use agent_common::enforce::cgroup_flags::*;
        let e = cgroup_entries(&BTreeMap::from([(5, 0b10)]), &[5, 6], &[8]);
        assert_eq!(
            e[&5],
            CgroupEntry {
                rules: 0b10,
                flags: CONTAINER_ROOT,
                _pad: 0
            }
        );
        assert_eq!(
            e[&6],
            CgroupEntry {
                rules: 0,
                flags: CONTAINER_ROOT,
                _pad: 0
            }
        );
        assert_eq!(
            e[&8],
            CgroupEntry {
                rules: 0,
                flags: PROTECTED,
                _pad: 0
            }
        );
    }
}
