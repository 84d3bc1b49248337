//! File-change sensor: unlink, rename, chmod, chown, link, symlink, mknod and
//! truncate of monitored paths, from their syscall tracepoints.
//!
//! Filtering happens at syscall entry, as for opens (`file.rs`): the path
//! (and the second path of rename/link/symlink) is looked up in the same
//! prefix/suffix tries, whose entries carry a tag per record kind
//! (`path_tag::CHANGE` here), so a change of an unmonitored path is never
//! stashed and never reaches the ring buffer. Two cases are reported
//! whatever the path, because what makes them suspicious is the operation
//! itself: a chmod that sets the setuid or setgid bit, and every mknod
//! (rare outside of container runtimes; block devices and FIFOs both matter).

use agent_common::{
    EventKind,
    file::{
        FILE_PATH_MAX, FileChangeEvent, PathKey, SETID_BITS, change_match, change_op, file_match,
        path_tag,
    },
    settings::file_filter,
};
use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str,
    macros::map,
    maps::{PerCpuArray, lpm_trie::Key},
    programs::TracePointContext,
};

use crate::{
    file::{FILE_FILTER, FILE_PREFIXES_0, FILE_PREFIXES_1, FILE_SUFFIXES_0, FILE_SUFFIXES_1},
    kernel::bound,
    maps::filter_gen,
    sys::{
        STR_MAX, arg, copy, enabled_in, header, rate_allowed, reserve, ret, stash_begin,
        stash_commit, stash_done, stash_get, submit, syscall_pair,
    },
};

/// Per-CPU lookup keys: the two paths as read, and the reversed one.
#[repr(C)]
pub struct ChangeScratch {
    keys: [PathKey; 2],
    rev: PathKey,
}

#[map]
static CHANGE_SCRATCH: PerCpuArray<ChangeScratch> = PerCpuArray::with_max_entries(1, 0);

const MASK: usize = FILE_PATH_MAX - 1;

fn as_key(k: &PathKey) -> &Key<[u8; FILE_PATH_MAX]> {
    // SAFETY: same layout (u32 prefix length then the data bytes).
    unsafe { &*(k as *const PathKey as *const Key<[u8; FILE_PATH_MAX]>) }
}

/// Matches `CHANGE_SCRATCH.keys[slot]` (its `prefix_len` set by the caller)
/// against the generation-`g` tries; returns `file_match::PREFIX` /
/// `file_match::SUFFIX` for entries tagged `path_tag::CHANGE`.
///
/// A global function (scalar arguments, never inlined) so the verifier
/// checks the 256-step reversal loop once per program, not once per caller
/// state and path (see `path::picket_walk_path` and docs/kernels.md).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_change_match(g: u32, slot: u32) -> u32 {
    let Some(sc) = CHANGE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let sc = unsafe { &mut *sc };
    let key = if slot == 0 { &sc.keys[0] } else { &sc.keys[1] };
    let len = bound::<{ MASK as u64 }>((key.prefix_len / 8) as usize);
    let tagged = |t: Option<&u32>| t.is_some_and(|t| *t & path_tag::CHANGE != 0);
    let mut matched = 0u32;
    let prefix = if g == 0 {
        tagged(FILE_PREFIXES_0.get(as_key(key)))
    } else {
        tagged(FILE_PREFIXES_1.get(as_key(key)))
    };
    if prefix {
        matched |= file_match::PREFIX;
    }
    // Fixed count, masked indexes: see `file::open_enter`.
    for i in 0..FILE_PATH_MAX {
        let from = bound::<{ MASK as u64 }>(len.wrapping_sub(1).wrapping_sub(i));
        let to = bound::<{ MASK as u64 }>(i);
        unsafe {
            *sc.rev.data.as_mut_ptr().wrapping_add(to) = *key.data.as_ptr().wrapping_add(from);
        }
    }
    sc.rev.prefix_len = (len * 8) as u32;
    let suffix = if g == 0 {
        tagged(FILE_SUFFIXES_0.get(as_key(&sc.rev)))
    } else {
        tagged(FILE_SUFFIXES_1.get(as_key(&sc.rev)))
    };
    if suffix {
        matched |= file_match::SUFFIX;
    }
    matched
}

/// The arguments of one file-change syscall, normalised.
#[derive(Default)]
struct Args {
    dirfd: u64,
    /// User pointers (0: none).
    path: u64,
    path2: u64,
    mode: u64,
    uid: u64,
    gid: u64,
    flags: u64,
    dev: u64,
    length: u64,
}

/// Reads a user path into `key.data`; returns its length (0: none) and
/// sets `prefix_len`.
#[inline(always)]
fn read_path(key: &mut PathKey, src: u64) -> (usize, bool) {
    if src == 0 {
        key.prefix_len = 0;
        return (0, false);
    }
    let n = unsafe {
        bpf_probe_read_user_str(
            key.data.as_mut_ptr() as *mut _,
            FILE_PATH_MAX as u32,
            src as *const _,
        )
    };
    if n <= 1 {
        key.prefix_len = 0;
        return (0, false);
    }
    let len = ((n - 1) as usize) & MASK;
    key.prefix_len = (len * 8) as u32;
    (len, len + 1 >= FILE_PATH_MAX)
}

#[inline(always)]
fn is_chmod(op: u32) -> bool {
    matches!(
        op,
        change_op::CHMOD | change_op::FCHMOD | change_op::FCHMODAT | change_op::FCHMODAT2
    )
}

/// Entry: match the paths (or the mode); stash only on a match.
#[inline(always)]
fn change_enter(op: u32, a: Args) -> Option<()> {
    let g = filter_gen();
    if !enabled_in(g, EventKind::FileChange) {
        return None;
    }
    let all_paths = FILE_FILTER
        .get(g)
        .is_some_and(|f| *f & file_filter::CHANGE_ALL_PATHS != 0);
    let sc = unsafe { &mut *CHANGE_SCRATCH.get_ptr_mut(0)? };
    let (len1, trunc1) = read_path(&mut sc.keys[0], a.path);
    let (len2, trunc2) = read_path(&mut sc.keys[1], a.path2);
    let mut matched = 0u32;
    if is_chmod(op) && a.mode as u32 & SETID_BITS != 0 {
        matched |= change_match::SETID_MODE;
    }
    if matches!(op, change_op::MKNOD | change_op::MKNODAT) {
        matched |= change_match::MKNOD;
    }
    if all_paths {
        matched |= file_match::UNFILTERED;
    } else {
        if len1 > 0 {
            matched |= picket_change_match(g, 0);
        }
        if len2 > 0 && picket_change_match(g, 1) != 0 {
            matched |= change_match::PATH2;
        }
        if matched == 0 {
            return None;
        }
    }
    if trunc1 {
        matched |= file_match::TRUNCATED;
    }
    if trunc2 {
        matched |= change_match::PATH2_TRUNCATED;
    }
    let s = stash_begin(op, EventKind::FileChange)?;
    s.args[0] = a.dirfd;
    s.args[1] = a.mode;
    s.args[2] = (a.uid & 0xffff_ffff) | (a.gid << 32);
    s.args[3] = a.flags;
    s.args[4] = a.dev;
    s.args[5] = a.length;
    s.aux = matched;
    s.len[0] = len1 as u32;
    s.len[1] = len2 as u32;
    copy::<STR_MAX>(&mut s.s0, &sc.keys[0].data);
    copy::<STR_MAX>(&mut s.s1, &sc.keys[1].data);
    stash_commit(s);
    Some(())
}

#[inline(always)]
fn change_exit(ctx: &TracePointContext, op: u32) -> Option<()> {
    let kind = EventKind::FileChange;
    let s = stash_get(op, kind)?;
    if !rate_allowed(kind) {
        stash_done();
        return None;
    }
    let Some(mut entry) = reserve::<FileChangeEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<FileChangeEvent>());
    ev.result = ret(ctx);
    ev.op = op;
    ev.dirfd = s.args[0] as i32;
    ev.mode = s.args[1] as u32;
    ev.uid = s.args[2] as u32;
    ev.gid = (s.args[2] >> 32) as u32;
    ev.flags = s.args[3] as u32;
    ev.dev = s.args[4];
    ev.length = s.args[5] as i64;
    ev.matched = s.aux;
    ev.path_len = s.len[0];
    ev.path2_len = s.len[1];
    ev._pad = 0;
    copy::<STR_MAX>(&mut ev.path, &s.s0);
    copy::<STR_MAX>(&mut ev.path2, &s.s1);
    stash_done();
    submit(entry, kind);
    Some(())
}

/// One enter/exit pair per syscall: `change_pair!(enter, exit, OP, |ctx| Args {...})`.
macro_rules! change_pair {
    ($enter:ident, $exit:ident, $op:expr, |$c:ident| $args:expr) => {
        syscall_pair!($enter, $exit, |$c| change_enter($op, $args), |ctx| {
            change_exit(ctx, $op)
        },);
    };
}

change_pair!(sys_enter_unlink, sys_exit_unlink, change_op::UNLINK, |c| {
    Args {
        path: arg(c, 0),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_unlinkat,
    sys_exit_unlinkat,
    change_op::UNLINKAT,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        flags: arg(c, 2),
        ..Args::default()
    }
);
change_pair!(sys_enter_rename, sys_exit_rename, change_op::RENAME, |c| {
    Args {
        path: arg(c, 0),
        path2: arg(c, 1),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_renameat,
    sys_exit_renameat,
    change_op::RENAMEAT,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        path2: arg(c, 3),
        ..Args::default()
    }
);
change_pair!(
    sys_enter_renameat2,
    sys_exit_renameat2,
    change_op::RENAMEAT2,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        path2: arg(c, 3),
        flags: arg(c, 4),
        ..Args::default()
    }
);
change_pair!(sys_enter_chmod, sys_exit_chmod, change_op::CHMOD, |c| {
    Args {
        path: arg(c, 0),
        mode: arg(c, 1),
        ..Args::default()
    }
});
change_pair!(sys_enter_fchmod, sys_exit_fchmod, change_op::FCHMOD, |c| {
    Args {
        dirfd: arg(c, 0),
        mode: arg(c, 1),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_fchmodat,
    sys_exit_fchmodat,
    change_op::FCHMODAT,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        mode: arg(c, 2),
        ..Args::default()
    }
);
change_pair!(
    sys_enter_fchmodat2,
    sys_exit_fchmodat2,
    change_op::FCHMODAT2,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        mode: arg(c, 2),
        flags: arg(c, 3),
        ..Args::default()
    }
);
change_pair!(sys_enter_chown, sys_exit_chown, change_op::CHOWN, |c| {
    Args {
        path: arg(c, 0),
        uid: arg(c, 1),
        gid: arg(c, 2),
        ..Args::default()
    }
});
change_pair!(sys_enter_lchown, sys_exit_lchown, change_op::LCHOWN, |c| {
    Args {
        path: arg(c, 0),
        uid: arg(c, 1),
        gid: arg(c, 2),
        ..Args::default()
    }
});
change_pair!(sys_enter_fchown, sys_exit_fchown, change_op::FCHOWN, |c| {
    Args {
        dirfd: arg(c, 0),
        uid: arg(c, 1),
        gid: arg(c, 2),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_fchownat,
    sys_exit_fchownat,
    change_op::FCHOWNAT,
    |c| Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        uid: arg(c, 2),
        gid: arg(c, 3),
        flags: arg(c, 4),
        ..Args::default()
    }
);
change_pair!(sys_enter_link, sys_exit_link, change_op::LINK, |c| Args {
    path: arg(c, 0),
    path2: arg(c, 1),
    ..Args::default()
});
change_pair!(sys_enter_linkat, sys_exit_linkat, change_op::LINKAT, |c| {
    Args {
        dirfd: arg(c, 0),
        path: arg(c, 1),
        path2: arg(c, 3),
        flags: arg(c, 4),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_symlink,
    sys_exit_symlink,
    change_op::SYMLINK,
    |c| {
        Args {
            path: arg(c, 0),
            path2: arg(c, 1),
            ..Args::default()
        }
    }
);
change_pair!(
    sys_enter_symlinkat,
    sys_exit_symlinkat,
    change_op::SYMLINKAT,
    |c| Args {
        path: arg(c, 0),
        dirfd: arg(c, 1),
        path2: arg(c, 2),
        ..Args::default()
    }
);
change_pair!(sys_enter_mknod, sys_exit_mknod, change_op::MKNOD, |c| {
    Args {
        path: arg(c, 0),
        mode: arg(c, 1),
        dev: arg(c, 2),
        ..Args::default()
    }
});
change_pair!(
    sys_enter_mknodat,
    sys_exit_mknodat,
    change_op::MKNODAT,
    |c| {
        Args {
            dirfd: arg(c, 0),
            path: arg(c, 1),
            mode: arg(c, 2),
            dev: arg(c, 3),
            ..Args::default()
        }
    }
);
change_pair!(
    sys_enter_truncate,
    sys_exit_truncate,
    change_op::TRUNCATE,
    |c| Args {
        path: arg(c, 0),
        length: arg(c, 1),
        ..Args::default()
    }
);
