//! Mount sensor: mount, umount2 and the new mount API (fsopen, fsconfig,
//! fsmount, move_mount, open_tree, mount_setattr), with the path and type
//! strings read at entry and the result at exit.

use agent_common::{
    EventKind,
    control::{MOUNT_FSTYPE_MAX, MOUNT_PATH_MAX, MountEvent, mount_op},
};
use aya_ebpf::programs::TracePointContext;

use crate::sys::{
    STR_MAX, Stash, arg, copy, enabled, header, reserve, ret, stash_begin, stash_commit,
    stash_done, stash_get, submit, syscall_pair, user_bytes, user_str,
};

const _: () = assert!(MOUNT_PATH_MAX == STR_MAX);

/// fsconfig commands whose `value` is a string.
const FSCONFIG_SET_STRING: u64 = 1;
const FSCONFIG_SET_PATH: u64 = 3;
const FSCONFIG_SET_PATH_EMPTY: u64 = 4;

/// Strings: `source` -> s0, `target` -> s1, `fstype` -> s2 (first 64 bytes).
#[inline(always)]
fn mount_enter(
    op: u32,
    flags: u64,
    a: [u64; 3],
    source: u64,
    target: u64,
    fstype: u64,
) -> Option<()> {
    if !enabled(EventKind::Mount) {
        return None;
    }
    let s: &mut Stash = stash_begin(op, EventKind::Mount)?;
    s.args[0] = a[0];
    s.args[1] = a[1];
    s.args[2] = a[2];
    s.args[3] = flags;
    s.len[0] = user_str(&mut s.s0, source);
    s.len[1] = user_str(&mut s.s1, target);
    s.len[2] = user_str(&mut s.s2, fstype).min(MOUNT_FSTYPE_MAX as u32 - 1);
    stash_commit(s);
    Some(())
}

#[inline(always)]
fn mount_exit(ctx: &TracePointContext, op: u32) -> Option<()> {
    let kind = EventKind::Mount;
    let s = stash_get(op, kind)?;
    let Some(mut entry) = reserve::<MountEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<MountEvent>());
    ev.result = ret(ctx);
    ev.op = op;
    ev._pad = 0;
    ev.flags = s.args[3];
    ev.args = [s.args[0] as i64, s.args[1] as i64, s.args[2] as i64];
    ev.source_len = s.len[0];
    ev.target_len = s.len[1];
    copy::<MOUNT_PATH_MAX>(&mut ev.source, &s.s0);
    copy::<MOUNT_PATH_MAX>(&mut ev.target, &s.s1);
    // SAFETY: s2 is larger than fstype.
    copy::<MOUNT_FSTYPE_MAX>(&mut ev.fstype, unsafe {
        &*(s.s2.as_ptr() as *const [u8; MOUNT_FSTYPE_MAX])
    });
    ev.fstype[MOUNT_FSTYPE_MAX - 1] = 0;
    stash_done();
    submit(entry, kind);
    Some(())
}

/// fd arguments are 32-bit ints: sign-extend (AT_FDCWD = -100).
fn fd(v: u64) -> u64 {
    v as u32 as i32 as i64 as u64
}

#[inline(always)]
fn fsconfig_enter(ctx: &TracePointContext) -> Option<()> {
    let cmd = arg(ctx, 1);
    let value = match cmd {
        FSCONFIG_SET_STRING | FSCONFIG_SET_PATH | FSCONFIG_SET_PATH_EMPTY => arg(ctx, 3),
        _ => 0,
    };
    mount_enter(
        mount_op::FSCONFIG,
        0,
        [fd(arg(ctx, 0)), cmd, fd(arg(ctx, 4))],
        value,
        0,
        arg(ctx, 2),
    )
}

#[inline(always)]
fn mount_setattr_enter(ctx: &TracePointContext) -> Option<()> {
    // struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; }
    let mut attr = [0u64; 2];
    if !user_bytes(attr.as_mut_ptr() as *mut u8, 16, arg(ctx, 3)) {
        attr = [0; 2];
    }
    mount_enter(
        mount_op::MOUNT_SETATTR,
        arg(ctx, 2),
        [fd(arg(ctx, 0)), attr[0], attr[1]],
        0,
        arg(ctx, 1),
        0,
    )
}

syscall_pair!(
    sys_enter_mount,
    sys_exit_mount,
    |ctx| mount_enter(
        mount_op::MOUNT,
        arg(ctx, 3),
        [0; 3],
        arg(ctx, 0),
        arg(ctx, 1),
        arg(ctx, 2)
    ),
    |ctx| mount_exit(ctx, mount_op::MOUNT)
);
// umount2(2)'s tracepoint is named after its kernel entry point, umount.
syscall_pair!(
    sys_enter_umount,
    sys_exit_umount,
    |ctx| mount_enter(mount_op::UMOUNT, arg(ctx, 1), [0; 3], 0, arg(ctx, 0), 0),
    |ctx| mount_exit(ctx, mount_op::UMOUNT)
);
syscall_pair!(
    sys_enter_fsopen,
    sys_exit_fsopen,
    |ctx| mount_enter(mount_op::FSOPEN, arg(ctx, 1), [0; 3], 0, 0, arg(ctx, 0)),
    |ctx| mount_exit(ctx, mount_op::FSOPEN)
);
syscall_pair!(
    sys_enter_fsconfig,
    sys_exit_fsconfig,
    |ctx| fsconfig_enter(ctx),
    |ctx| mount_exit(ctx, mount_op::FSCONFIG)
);
syscall_pair!(
    sys_enter_fsmount,
    sys_exit_fsmount,
    |ctx| mount_enter(
        mount_op::FSMOUNT,
        arg(ctx, 1),
        [fd(arg(ctx, 0)), arg(ctx, 2), 0],
        0,
        0,
        0
    ),
    |ctx| mount_exit(ctx, mount_op::FSMOUNT)
);
syscall_pair!(
    sys_enter_move_mount,
    sys_exit_move_mount,
    |ctx| mount_enter(
        mount_op::MOVE_MOUNT,
        arg(ctx, 4),
        [fd(arg(ctx, 0)), fd(arg(ctx, 2)), 0],
        arg(ctx, 1),
        arg(ctx, 3),
        0
    ),
    |ctx| mount_exit(ctx, mount_op::MOVE_MOUNT)
);
syscall_pair!(
    sys_enter_open_tree,
    sys_exit_open_tree,
    |ctx| mount_enter(
        mount_op::OPEN_TREE,
        arg(ctx, 2),
        [fd(arg(ctx, 0)), 0, 0],
        0,
        arg(ctx, 1),
        0
    ),
    |ctx| mount_exit(ctx, mount_op::OPEN_TREE)
);
syscall_pair!(
    sys_enter_mount_setattr,
    sys_exit_mount_setattr,
    |ctx| mount_setattr_enter(ctx),
    |ctx| mount_exit(ctx, mount_op::MOUNT_SETATTR)
);
