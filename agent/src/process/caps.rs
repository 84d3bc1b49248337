//! Linux capability names.
//!
//! Every event carries its process's effective and permitted sets as name
//! lists. Building those lists was the largest single cost of the event path
//! (two `Vec`s of up to 41 `String`s per event: one sixth of the agent's CPU
//! in the exec-storm profile), and almost every process on a node has one of
//! a handful of masks. So the lists are built once per mask and shared.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `id` (`CAP_SYS_ADMIN` for 21).
pub fn name(id: u32) -> Option<&'static str> {
    NAMES.get(id as usize).copied()
}

/// Masks whose name lists are kept. Real nodes use a few dozen; the bound
/// only stops a process that cycles through masks (`capset` in a loop) from
/// growing the table: past it, lists are built per call as before.
const INTERNED_MAX: usize = 1024;

/// Names of the bits set in a capability mask (unknown bits as `CAP_<n>`),
/// shared between all callers asking for the same mask.
pub fn names(mask: u64) -> Arc<[String]> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Arc<[String]>>>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked mid-insert; the map
    // itself is still consistent, so keep using it.
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = t.get(&mask) {
        return n.clone();
    }
    let n: Arc<[String]> = build(mask).into();
    if t.len() < INTERNED_MAX {
        t.insert(mask, n.clone());
    }
    n
}

fn build(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            name(b)
                .map(str::to_string)
                .unwrap_or_else(|| format!("CAP_{b}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_bits() {
        assert_eq!(name(21), Some("CAP_SYS_ADMIN"));
        assert_eq!(name(39), Some("CAP_BPF"));
        assert_eq!(name(41), None);
        assert_eq!(
            *names((1 << 0) | (1 << 21) | (1 << 45)),
            ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_45"]
        );
        assert!(names(0).is_empty());
    }

    #[test]
    fn lists_are_shared_per_mask() {
        let a = names(1 << 12);
        let b = names(1 << 12);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, ["CAP_NET_ADMIN"]);
        assert!(!Arc::ptr_eq(&a, &names(1 << 13)));
    }
}
