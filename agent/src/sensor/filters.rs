//! The userspace side of the in-kernel filters: which kinds are on, which
//! file paths are monitored, which address families and ports are reported,
//! and the per-cgroup rate limits. [`SensorFilters`] comes from configuration
//! and the loaded rules (`super::rule_filters::derive_filters`) and is written
//! to the kernel atomically by `super::filter_maps::FilterMaps::apply`.
//! Rate-limit summaries: `super::rate_summary`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use agent_common::{EventKind, file::FILE_PATH_MAX};
use aya::{
    Ebpf,
    maps::{MapError, PerCpuArray, lpm_trie::Key},
};

use crate::{model::EventKindName, pipeline::sensors::wire_kind};

/// Paths monitored by default: credentials, sudo, root's SSH keys, service
/// account tokens, cron, the dynamic linker preload list, and kernel knobs
/// abused for container escapes (`core_pattern`).
pub const DEFAULT_FILE_PREFIXES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/ld.so.preload",
    "/etc/crontab",
    "/etc/cron.d/",
    "/var/spool/cron/",
    "/root/.ssh/",
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
    "/etc/kubernetes/",
    "/var/lib/kubelet/pki/",
    "/proc/sys/kernel/core_pattern",
    "/proc/sysrq-trigger",
];

/// Path suffixes monitored by default: cgroup v1 escape knobs and SSH keys
/// anywhere.
pub const DEFAULT_FILE_SUFFIXES: &[&str] = &[
    "/release_agent",
    "/notify_on_release",
    "/.ssh/authorized_keys",
    "/.ssh/id_rsa",
    "/.ssh/id_ed25519",
];

/// Which ports are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PortFilter {
    #[default]
    All,
    Only(BTreeSet<u16>),
    Exclude(BTreeSet<u16>),
}

/// A per-cgroup limit: at most `max_events` records per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub max_events: u32,
    pub window: Duration,
}

/// Everything the kernel filters on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorFilters {
    /// Kinds switched off in the kernel (no record is built).
    pub disabled: BTreeSet<EventKindName>,
    /// Report every `file_open`, ignoring the path sets (a rule looks at
    /// opens in a way that cannot be reduced to prefixes/suffixes).
    pub all_paths: bool,
    /// Monitored path prefixes for `file_open` (absolute paths as passed to open).
    pub file_prefixes: BTreeSet<String>,
    /// Monitored path suffixes for `file_open`.
    pub file_suffixes: BTreeSet<String>,
    /// Exact paths (`==`, `in`) of enabled `file_open` rules, each also in
    /// `file_prefixes`: an open of exactly one of them is rate-limited in
    /// the priority lane (`agent_common::ratelimit::PRIORITY_LANE`), so a
    /// storm of opens of other monitored paths cannot turn it into a
    /// summary.
    pub file_exact: BTreeSet<String>,
    /// Report every `file_change` (unlink, rename, chmod, ...), ignoring the
    /// path sets. setuid/setgid chmods and mknods are reported whatever the
    /// path in any case.
    pub change_all_paths: bool,
    /// Monitored path prefixes for `file_change` (either path of a rename,
    /// link or symlink). They share the kernel's tries with the `file_open`
    /// sets (each entry tagged with the kinds it applies to).
    pub change_prefixes: BTreeSet<String>,
    /// Monitored path suffixes for `file_change`.
    pub change_suffixes: BTreeSet<String>,
    /// Address families reported (`AF_*` numbers); empty = all.
    pub families: BTreeSet<u16>,
    pub ports: PortFilter,
    /// Per-cgroup rate limits; only `connect` and `file_open` are limited
    /// by the kernel programs.
    pub rates: BTreeMap<EventKindName, Rate>,
}

impl Default for SensorFilters {
    fn default() -> Self {
        let per_second = Rate {
            max_events: 2000,
            window: Duration::from_secs(1),
        };
        Self {
            disabled: BTreeSet::new(),
            all_paths: false,
            file_prefixes: DEFAULT_FILE_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            file_suffixes: DEFAULT_FILE_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            file_exact: BTreeSet::new(),
            change_all_paths: false,
            change_prefixes: DEFAULT_FILE_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            change_suffixes: DEFAULT_FILE_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            families: BTreeSet::new(),
            ports: PortFilter::All,
            rates: [
                (EventKindName::Connect, per_second),
                (EventKindName::FileOpen, per_second),
            ]
            .into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("monitored path {path:?} must be 1 to {max} bytes", max = FILE_PATH_MAX - 1)]
    PathLength { path: String },
    #[error("{kind} cannot be filtered in the kernel (it is not a kernel record kind)")]
    NotAKernelKind { kind: EventKindName },
    #[error("rate limit for {kind}: the window must be at least 1 ms")]
    RateWindow { kind: EventKindName },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> FilterError {
    move |source| FilterError::Map { name, source }
}

/// A path as an LPM key (`prefix_len` in bits), optionally reversed.
pub fn path_key(path: &str, reversed: bool) -> Result<Key<[u8; FILE_PATH_MAX]>, FilterError> {
    let b = path.as_bytes();
    if b.is_empty() || b.len() >= FILE_PATH_MAX {
        return Err(FilterError::PathLength {
            path: path.to_string(),
        });
    }
    let mut data = [0u8; FILE_PATH_MAX];
    data[..b.len()].copy_from_slice(b);
    if reversed {
        data[..b.len()].reverse();
    }
    Ok(Key::new((b.len() * 8) as u32, data))
}

impl SensorFilters {
    /// Checks the configuration without touching the kernel.
    pub fn validate(&self) -> Result<(), FilterError> {
        for p in self
            .file_prefixes
            .iter()
            .chain(&self.file_suffixes)
            .chain(&self.change_prefixes)
            .chain(&self.change_suffixes)
        {
            path_key(p, false)?;
        }
        for kind in &self.disabled {
            wire_kind(*kind).ok_or(FilterError::NotAKernelKind { kind: *kind })?;
        }
        for (kind, rate) in &self.rates {
            wire_kind(*kind).ok_or(FilterError::NotAKernelKind { kind: *kind })?;
            if rate.max_events > 0 && rate.window < Duration::from_millis(1) {
                return Err(FilterError::RateWindow { kind: *kind });
            }
        }
        Ok(())
    }
}

pub use super::rate_summary::RateReport;

/// Records submitted to the ring buffer per wire kind by the syscall
/// sensors (summed over CPUs), by kind name: shows in-kernel filtering at
/// work.
pub fn submitted_counts(ebpf: &Ebpf) -> Result<BTreeMap<&'static str, u64>, FilterError> {
    let name = "SUBMITTED";
    let arr: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(name).ok_or(FilterError::MissingMap(name))?)
            .map_err(map_err(name))?;
    let mut out = BTreeMap::new();
    for slot in 1..EventKind::COUNT {
        if let Some(k) = EventKind::from_u16(slot as u16) {
            let v = arr.get(&slot, 0).map_err(map_err(name))?;
            out.insert(k.name(), v.iter().sum());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys() {
        let k = path_key("/etc/shadow", false).unwrap();
        assert_eq!(k.prefix_len(), 88);
        assert_eq!(&k.data()[..12], b"/etc/shadow\0");
        let r = path_key("/release_agent", true).unwrap();
        assert_eq!(&r.data()[..14], b"tnega_esaeler/");
        assert!(matches!(
            path_key("", false),
            Err(FilterError::PathLength { .. })
        ));
        assert!(path_key(&"a".repeat(255), false).is_ok());
        assert!(matches!(
            path_key(&"a".repeat(256), false),
            Err(FilterError::PathLength { .. })
        ));
    }

    #[test]
    fn validation() {
        assert!(SensorFilters::default().validate().is_ok());
        let mut f = SensorFilters::default();
        f.disabled.insert(EventKindName::EventsLost);
        assert!(matches!(
            f.validate(),
            Err(FilterError::NotAKernelKind { .. })
        ));
        let mut f = SensorFilters::default();
        f.rates.insert(
            EventKindName::Connect,
            Rate {
                max_events: 1,
                window: Duration::ZERO,
            },
        );
        assert!(matches!(f.validate(), Err(FilterError::RateWindow { .. })));
    }
}
