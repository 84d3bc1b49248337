//! Names of kernel constants used in event sections (capabilities, ptrace
//! requests, bpf commands, mount flags, namespace types). Unknown values are
//! rendered with their number so nothing is hidden.

/// `CAP_SYS_ADMIN` for 21; `CAP_<n>` for numbers the table does not know.
/// The table lives in [`crate::process::caps`], shared with the process cache.
pub fn capability(id: u32) -> String {
    crate::process::caps::name(id)
        .map(str::to_string)
        .unwrap_or_else(|| format!("CAP_{id}"))
}

/// Names of the bits set in a capability mask.
pub fn capability_set(mask: u64) -> std::sync::Arc<[String]> {
    crate::process::caps::names(mask)
}

/// `PTRACE_*` request names.
pub fn ptrace_request(req: i64) -> String {
    let name = match req {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        _ => return format!("PTRACE_{req}"),
    };
    name.to_string()
}

/// `BPF_*` command names (enum bpf_cmd).
pub fn bpf_command(cmd: u32) -> String {
    const CMDS: &[&str] = &[
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    CMDS.get(cmd as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("BPF_{cmd}"))
}

/// Namespace types in a `CLONE_NEW*` mask (unshare flags, setns nstype).
pub fn namespace_types(flags: u64) -> Vec<String> {
    const TYPES: &[(u64, &str)] = &[
        (0x0002_0000, "mnt"),
        (0x2000_0000, "pid"),
        (0x4000_0000, "net"),
        (0x0400_0000, "uts"),
        (0x0800_0000, "ipc"),
        (0x1000_0000, "user"),
        (0x0200_0000, "cgroup"),
        (0x0000_0080, "time"),
    ];
    TYPES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// `MS_*` flag names of mount(2).
pub fn mount_flags(flags: u64) -> Vec<String> {
    const FLAGS: &[(u64, &str)] = &[
        (1, "MS_RDONLY"),
        (2, "MS_NOSUID"),
        (4, "MS_NODEV"),
        (8, "MS_NOEXEC"),
        (16, "MS_SYNCHRONOUS"),
        (32, "MS_REMOUNT"),
        (64, "MS_MANDLOCK"),
        (128, "MS_DIRSYNC"),
        (256, "MS_NOSYMFOLLOW"),
        (1024, "MS_NOATIME"),
        (2048, "MS_NODIRATIME"),
        (4096, "MS_BIND"),
        (8192, "MS_MOVE"),
        (16384, "MS_REC"),
        (32768, "MS_SILENT"),
        (1 << 16, "MS_POSIXACL"),
        (1 << 17, "MS_UNBINDABLE"),
        (1 << 18, "MS_PRIVATE"),
        (1 << 19, "MS_SLAVE"),
        (1 << 20, "MS_SHARED"),
        (1 << 21, "MS_RELATIME"),
        (1 << 22, "MS_KERNMOUNT"),
        (1 << 23, "MS_I_VERSION"),
        (1 << 24, "MS_STRICTATIME"),
        (1 << 25, "MS_LAZYTIME"),
    ];
    // MS_MGC_VAL (0xC0ED in the top 16 bits of 32) is a legacy magic, not a flag.
    let flags = if flags & 0xffff_0000 == 0xc0ed_0000 {
        flags & 0xffff
    } else {
        flags
    };
    named_bits(flags, FLAGS)
}

/// `MNT_*` flag names of umount2(2).
pub fn umount_flags(flags: u64) -> Vec<String> {
    named_bits(
        flags,
        &[
            (1, "MNT_FORCE"),
            (2, "MNT_DETACH"),
            (4, "MNT_EXPIRE"),
            (8, "UMOUNT_NOFOLLOW"),
        ],
    )
}

fn named_bits(flags: u64, table: &[(u64, &str)]) -> Vec<String> {
    let mut out: Vec<String> = table
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known: u64 = table.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
    if flags & !known != 0 {
        out.push(format!("{:#x}", flags & !known));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(capability(21), "CAP_SYS_ADMIN");
        assert_eq!(capability(40), "CAP_CHECKPOINT_RESTORE");
        assert_eq!(capability(63), "CAP_63");
        assert_eq!(
            *capability_set((1 << 7) | (1 << 6)),
            ["CAP_SETGID", "CAP_SETUID"]
        );
        assert_eq!(ptrace_request(16), "PTRACE_ATTACH");
        assert_eq!(ptrace_request(0x4206), "PTRACE_SEIZE");
        assert_eq!(ptrace_request(-1), "PTRACE_-1");
        assert_eq!(bpf_command(5), "BPF_PROG_LOAD");
        assert_eq!(bpf_command(999), "BPF_999");
        assert_eq!(namespace_types(0x4002_0000), vec!["mnt", "net"]);
        assert_eq!(mount_flags(4096 | 16384), vec!["MS_BIND", "MS_REC"]);
        assert_eq!(mount_flags(0xc0ed_0000 | 1), vec!["MS_RDONLY"]);
        assert_eq!(mount_flags(1 << 40), vec!["0x10000000000"]);
        assert_eq!(umount_flags(2), vec!["MNT_DETACH"]);
    }
}
