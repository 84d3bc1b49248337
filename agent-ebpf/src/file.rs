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
        STR_MAX, arg, copy, enabled_in, header, rate_allowed_lane, reserve, ret, stash_begin,
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

/// Matches the path in this CPU's `FILE_SCRATCH.key` (`len` bytes) against
/// generation `g`'s tries: `file_match::{PREFIX, SUFFIX, PRIORITY}` bits, 0
/// when nothing matched.
///
/// A *global* function (see `path::picket_walk_path` for why): both the
/// entry and, when the entry could not read the path, the exit of every
/// open syscall match, and the verifier checks the byte-reversal loop once
/// instead of once per program and caller state.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_match_open_path(g: u32, len: u32) -> u32 {
    let Some(sc) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let sc = unsafe { &mut *sc };
    let len = (len as usize) & MASK;
    let mut matched = 0u32;
    sc.key.prefix_len = (len * 8) as u32;
    let prefix = if g == 0 {
        FILE_PREFIXES_0.get(as_key(&sc.key)).copied()
    } else {
        FILE_PREFIXES_1.get(as_key(&sc.key)).copied()
    };
    if let Some(t) = prefix
        && open_tag(&t)
    {
        matched |= file_match::PREFIX;
        // The longest entry is the whole path, and a rule names it exactly.
        if t & path_tag::EXACT_OPEN != 0 && ((t >> path_tag::LEN_SHIFT) & 0xff) as usize == len {
            matched |= file_match::PRIORITY;
        }
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
            *sc.rev.data.as_mut_ptr().wrapping_add(to) = *sc.key.data.as_ptr().wrapping_add(from);
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
    matched
}

/// Reads the user path at `filename` into this CPU's `FILE_SCRATCH.key`
/// and matches it (generation `g`): `Some((len, matched))` when it is
/// reported, `None` when no filter matched. `Err(())` when it could not be
/// read.
#[inline(always)]
fn read_and_match(g: u32, filename: u64) -> Result<Option<(usize, u32)>, ()> {
    let all_paths = FILE_FILTER
        .get(g)
        .is_some_and(|f| *f & file_filter::ALL_PATHS != 0);
    let sc = unsafe { &mut *FILE_SCRATCH.get_ptr_mut(0).ok_or(())? };
    let n = unsafe {
        bpf_probe_read_user_str(
            sc.key.data.as_mut_ptr() as *mut _,
            FILE_PATH_MAX as u32,
            filename as *const _,
        )
    };
    if n < 0 {
        return Err(());
    }
    if n <= 1 {
        return Ok(None);
    }
    let len = ((n - 1) as usize) & MASK;
    let mut matched = 0u32;
    if len + 1 >= FILE_PATH_MAX {
        matched |= file_match::TRUNCATED;
    }
    if all_paths {
        matched |= file_match::UNFILTERED;
    } else {
        let m = picket_match_open_path(g, len as u32);
        if m & (file_match::PREFIX | file_match::SUFFIX) == 0 {
            return Ok(None);
        }
        matched |= m;
    }
    Ok(Some((len, matched)))
}

/// Entry: match the user path; stash only on a match, or when the path
/// could not be read: its page may not be faulted in yet (a string literal
/// in a never-touched page of the binary). The kernel faults it in while
/// copying the path, so the exit reads it again (`file_match::REREAD`).
#[inline(always)]
fn open_enter(op: u32, dirfd: u64, filename: u64, flags: u64, mode: u64) -> Option<()> {
    let g = filter_gen();
    if !enabled_in(g, EventKind::FileOpen) || filename == 0 {
        return None;
    }
    let (len, matched) = match read_and_match(g, filename) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(()) => (0, file_match::REREAD),
    };
    let s = stash_begin(op, EventKind::FileOpen)?;
    s.args[0] = dirfd;
    s.args[1] = flags;
    s.args[2] = mode;
    s.args[3] = filename;
    s.aux = matched;
    s.len[0] = len as u32;
    if matched & file_match::REREAD == 0 {
        let sc = unsafe { &*FILE_SCRATCH.get_ptr(0)? };
        copy::<STR_MAX>(&mut s.s0, &sc.key.data);
    }
    stash_commit(s);
    Some(())
}

#[inline(always)]
fn open_exit(ctx: &TracePointContext, op: u32) -> Option<()> {
    let kind = EventKind::FileOpen;
    let s = stash_get(op, kind)?;
    let mut matched = s.aux;
    let mut len = s.len[0];
    if matched & file_match::REREAD != 0 {
        // Second chance: the kernel has faulted the path's page in.
        match read_and_match(filter_gen(), s.args[3]) {
            Ok(Some((l, m))) => {
                len = l as u32;
                matched |= m;
            }
            _ => {
                stash_done();
                return None;
            }
        }
    }
    if !rate_allowed_lane(kind, matched & file_match::PRIORITY != 0) {
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
    ev.matched = matched;
    ev.path_len = len;
    if matched & file_match::REREAD != 0 {
        match FILE_SCRATCH.get_ptr(0) {
            Some(sc) => copy::<STR_MAX>(&mut ev.path, unsafe { &(*sc).key.data }),
            None => ev.path_len = 0,
        }
    } else {
        copy::<STR_MAX>(&mut ev.path, &s.s0);
    }
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
