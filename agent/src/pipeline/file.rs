//! File-open records -> `syscall` + `file` sections.

use agent_common::file::{FileOpenEvent, file_op};

use crate::model::{Event, FileAccess, Syscall};

const O_ACCMODE: u32 = 3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

pub fn syscall_name(op: u32) -> &'static str {
    match op {
        file_op::OPEN => "open",
        file_op::OPENAT => "openat",
        file_op::OPENAT2 => "openat2",
        _ => "unknown",
    }
}

pub fn fill(ev: &mut Event, e: &FileOpenEvent) {
    ev.syscall = Some(Syscall {
        name: syscall_name(e.op).into(),
        result: e.result,
    });
    let len = (e.path_len as usize).min(e.path.len());
    let acc = e.flags & O_ACCMODE;
    let path = String::from_utf8_lossy(&e.path[..len]).into_owned();
    ev.file = Some(FileAccess {
        normalized_path: FileAccess::normalize(&path),
        path,
        flags: e.flags,
        write: acc == 1 || acc == 2,
        truncate: e.flags & O_TRUNC != 0,
        create: e.flags & O_CREAT != 0,
    });
}
