//! Sensitive-file sensor: open/openat/openat2 of paths that match a
//! configured prefix or suffix. Matching happens at syscall entry in the
//! kernel (two LPM tries: one over the path, one over the reversed path), so
//! unmatched opens are never stashed and never reach the ring buffer. The
//! record is written at exit with the result; opens are rate-limited per
//! cgroup.

use agent_common::{
    EventKind,
    file::{FILE_PATH_MAX, FileOpenEvent, PathKey, file_match, file_op, path_tag},
    settings::{FILTER_GENERATIONS, file_filter},
};
use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str,
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::TracePointContext,
};

use crate::{
    kernel::bound,
    maps::filter_gen,
    sys::{
        STR_MAX, arg, copy, enabled_in, header, rate_allowed, reserve, ret, stash_begin,
        stash_commit, stash_done, stash_get, submit, syscall_pair, user_bytes,
    },
};

// One trie per filter generation (see `agent_common::settings`): LPM keys
// have no room for a generation tag next to a 255-byte path.

/// Monitored path prefixes, generation 0 (value: `path_tag` bits).
#[map]
pub static FILE_PREFIXES_0: LpmTrie<[u8; FILE_PATH_MAX], u32> = LpmTrie::with_max_entries(1024, 0);

/// Monitored path prefixes, generation 1.
#[map]
pub static FILE_PREFIXES_1: LpmTrie<[u8; FILE_PATH_MAX], u32> = LpmTrie::with_max_entries(1024, 0);

/// Monitored path suffixes, stored reversed, generation 0.
#[map]
pub static FILE_SUFFIXES_0: LpmTrie<[u8; FILE_PATH_MAX], u32> = LpmTrie::with_max_entries(1024, 0);

/// Monitored path suffixes, stored reversed, generation 1.
#[map]
pub static FILE_SUFFIXES_1: LpmTrie<[u8; FILE_PATH_MAX], u32> = LpmTrie::with_max_entries(1024, 0);

/// Per generation: `settings::file_filter` bits.
#[map]
pub static FILE_FILTER: Array<u32> = Array::with_max_entries(FILTER_GENERATIONS, 0);

#[repr(C)]
pub struct FileScratch {
    key: PathKey,
    rev: PathKey,
}

/// Per-CPU lookup keys (two 260-byte keys do not fit the stack).
#[map]
static FILE_SCRATCH: PerCpuArray<FileScratch> = PerCpuArray::with_max_entries(1, 0);

const _: () = assert!(STR_MAX == FILE_PATH_MAX);
const MASK: usize = FILE_PATH_MAX - 1;

fn as_key(k: &PathKey) -> &Key<[u8; FILE_PATH_MAX]> {
    // SAFETY: same layout (u32 prefix length then the data bytes).
    unsafe { &*(k as *const PathKey as *const Key<[u8; FILE_PATH_MAX]>) }
}

/// A trie entry monitored for opens (the tries are shared with
/// `filechange.rs`; see `path_tag`).
#[inline(always)]
fn open_tag(t: &u32) -> bool {
    *t & path_tag::OPEN != 0
}

/// Entry: match the user path; stash only on a match.
#[inline(always)]
fn open_enter(op: u32, dirfd: u64, filename: u64, flags: u64, mode: u64) -> Option<()> {
    let g = filter_gen();
    if !enabled_in(g, EventKind::FileOpen) || filename == 0 {
        return None;
    }
    let all_paths = FILE_FILTER
        .get(g)
        .is_some_and(|f| *f & file_filter::ALL_PATHS != 0);
    let sc = unsafe { &mut *FILE_SCRATCH.get_ptr_mut(0)? };
    let n = unsafe {
        bpf_probe_read_user_str(
            sc.key.data.as_mut_ptr() as *mut _,
            FILE_PATH_MAX as u32,
            filename as *const _,
        )
    };
    if n <= 1 {
        return None;
    }
    let len = ((n - 1) as usize) & MASK;
    let mut matched = 0u32;
    if len + 1 >= FILE_PATH_MAX {
        matched |= file_match::TRUNCATED;
    }
    if all_paths {
        matched |= file_match::UNFILTERED;
    } else {
        sc.key.prefix_len = (len * 8) as u32;
        let prefix = if g == 0 {
            FILE_PREFIXES_0.get(as_key(&sc.key)).is_some_and(open_tag)
        } else {
            FILE_PREFIXES_1.get(as_key(&sc.key)).is_some_and(open_tag)
        };
        if prefix {
            matched |= file_match::PREFIX;
        }
        // A fixed count, no `i >= len` exit: an exit per length would give
        // the verifier one state per possible `len` (each then verified
        // through the rest of the program), which exceeded the 1M budget of
        // the 6.1 verifier. Bytes past `len` are garbage the LPM lookup
        // never reads (prefix_len = len * 8). Raw pointers: an index the
        // compiler cannot bound would bring a panic branch, and `bound` is
        // opaque to it.
        for i in 0..FILE_PATH_MAX {
            let from = bound::<{ MASK as u64 }>(len.wrapping_sub(1).wrapping_sub(i));
            let to = bound::<{ MASK as u64 }>(i);
            unsafe {
                *sc.rev.data.as_mut_ptr().wrapping_add(to) =
                    *sc.key.data.as_ptr().wrapping_add(from);
            }
        }
        sc.rev.prefix_len = (len * 8) as u32;
        let suffix = if g == 0 {
            FILE_SUFFIXES_0.get(as_key(&sc.rev)).is_some_and(open_tag)
        } else {
            FILE_SUFFIXES_1.get(as_key(&sc.rev)).is_some_and(open_tag)
        };
        if suffix {
            matched |= file_match::SUFFIX;
        }
        if matched & (file_match::PREFIX | file_match::SUFFIX) == 0 {
            return None;
        }
    }
    let s = stash_begin(op, EventKind::FileOpen)?;
    s.args[0] = dirfd;
    s.args[1] = flags;
    s.args[2] = mode;
    s.aux = matched;
    s.len[0] = len as u32;
    copy::<STR_MAX>(&mut s.s0, &sc.key.data);
    stash_commit(s);
    Some(())
}

#[inline(always)]
fn open_exit(ctx: &TracePointContext, op: u32) -> Option<()> {
    let kind = EventKind::FileOpen;
    let s = stash_get(op, kind)?;
    if !rate_allowed(kind) {
        stash_done();
        return None;
    }
    let Some(mut entry) = reserve::<FileOpenEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<FileOpenEvent>());
    ev.result = ret(ctx);
    ev.op = op;
    ev.dirfd = s.args[0] as i32;
    ev.flags = s.args[1] as u32;
    ev.mode = s.args[2] as u32;
    ev.matched = s.aux;
    ev.path_len = s.len[0];
    copy::<STR_MAX>(&mut ev.path, &s.s0);
    stash_done();
    submit(entry, kind);
    Some(())
}

/// openat2(dfd, filename, how, size): flags and mode from `struct open_how`.
#[inline(always)]
fn openat2_enter(ctx: &TracePointContext) -> Option<()> {
    let mut how = [0u64; 2];
    if !user_bytes(how.as_mut_ptr() as *mut u8, 16, arg(ctx, 2)) {
        how = [0; 2];
    }
    open_enter(file_op::OPENAT2, arg(ctx, 0), arg(ctx, 1), how[0], how[1])
}

syscall_pair!(
    sys_enter_openat,
    sys_exit_openat,
    |ctx| open_enter(
        file_op::OPENAT,
        arg(ctx, 0),
        arg(ctx, 1),
        arg(ctx, 2),
        arg(ctx, 3)
    ),
    |ctx| open_exit(ctx, file_op::OPENAT),
);

syscall_pair!(
    sys_enter_openat2,
    sys_exit_openat2,
    |ctx| openat2_enter(ctx),
    |ctx| open_exit(ctx, file_op::OPENAT2),
);

// open(2) exists on x86_64 (not on arm64, where the loader disables it).
syscall_pair!(
    sys_enter_open,
    sys_exit_open,
    |ctx| open_enter(file_op::OPEN, 0, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2)),
    |ctx| open_exit(ctx, file_op::OPEN),
);
