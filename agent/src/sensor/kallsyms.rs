//! Kernel function address ranges from `/proc/kallsyms`.
//!
//! The `capability:cap_capable` tracepoint carries no `opts`, so a check made
//! without auditing (`CAP_OPT_NOAUDIT`) looks like any other. The memory
//! accounting on every mmap/brk/fork (`cap_vm_enough_memory` asks for
//! CAP_SYS_ADMIN, without auditing) then made ordinary root processes look
//! like they used CAP_SYS_ADMIN. The kernel program recognises those checks
//! by their caller on the kernel stack, inside the ranges resolved here: a
//! function spans from its address to the next symbol's.

use std::path::Path;

/// Functions whose capability checks are never audited: the LSM hook
/// `cap_vm_enough_memory` and its caller `security_vm_enough_memory_mm`
/// (the hook tail-calls `cap_capable`, so on 6.18 the stack shows
/// `cap_capable <- security_vm_enough_memory_mm <- dup_mmap`; every check
/// reached from there is memory accounting, made with `CAP_OPT_NOAUDIT`).
pub const NOAUDIT_FUNCTIONS: &[&str] = &["cap_vm_enough_memory", "security_vm_enough_memory_mm"];

/// `[start, end)` of each function in `wanted` found in `text` (the format
/// of /proc/kallsyms), in the order of `wanted`; `None` for a function that
/// is missing or whose address is hidden (zero: `kptr_restrict`).
pub fn ranges(text: &str, wanted: &[&str]) -> Vec<Option<(u64, u64)>> {
    let mut addrs: Vec<u64> = Vec::new();
    let mut found: Vec<Option<u64>> = vec![None; wanted.len()];
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(a), Some(_ty), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if addr == 0 {
            continue;
        }
        addrs.push(addr);
        // Module symbols carry a `[module]` fourth column: only the core
        // kernel's functions are wanted.
        if it.next().is_none()
            && let Some(i) = wanted.iter().position(|w| *w == name)
        {
            found[i] = Some(addr);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    found
        .into_iter()
        .map(|start| {
            let start = start?;
            let i = addrs.partition_point(|a| *a <= start);
            addrs.get(i).map(|end| (start, *end))
        })
        .collect()
}

/// The `NOAUDIT_RANGES` global of the kernel programs (two ranges, zero
/// when unknown) and the functions that could not be resolved.
pub fn noaudit_ranges(kallsyms: &Path) -> ([u64; 4], Vec<&'static str>) {
    let text = std::fs::read_to_string(kallsyms).unwrap_or_default();
    let r = ranges(&text, NOAUDIT_FUNCTIONS);
    let mut out = [0u64; 4];
    let mut missing = Vec::new();
    for (i, (name, range)) in NOAUDIT_FUNCTIONS.iter().zip(r).enumerate().take(2) {
        match range {
            Some((s, e)) => {
                out[2 * i] = s;
                out[2 * i + 1] = e;
            }
            None => missing.push(*name),
        }
    }
    (out, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff81abb670 T cap_capable\n\
                        ffffffff81abb880 T cap_vm_enough_memory\n\
                        ffffffff81abb8f0 t cap_inode_need_killpriv\n\
                        ffffffffc0001000 t cap_vm_enough_memory\t[fake_module]\n\
                        ffffffff81abb700 T cap_settime\n";

    #[test]
    fn a_function_spans_to_the_next_symbol() {
        assert_eq!(
            ranges(TEXT, &["cap_vm_enough_memory", "cap_capable"]),
            vec![
                Some((0xffffffff81abb880, 0xffffffff81abb8f0)),
                Some((0xffffffff81abb670, 0xffffffff81abb700)),
            ]
        );
    }

    #[test]
    fn hidden_or_missing_functions_resolve_to_none() {
        let hidden = "0000000000000000 T cap_vm_enough_memory\n0000000000000000 T x\n";
        assert_eq!(noaudit_ranges(Path::new("/nonexistent")).0, [0; 4]);
        assert_eq!(ranges(hidden, &["cap_vm_enough_memory"]), vec![None]);
        assert_eq!(ranges(TEXT, &["nope"]), vec![None]);
        // The last symbol has no end.
        assert_eq!(ranges("ffffffff81000000 T last\n", &["last"]), vec![None]);
        assert_eq!(ranges("garbage\n\n zz T y\n", &["y"]), vec![None]);
    }
}
