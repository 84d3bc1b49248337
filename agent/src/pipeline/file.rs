//! File-open records -> `syscall` + `file` sections; file-change records ->
//! `syscall` + `file` (the path) + `file_change`.

use agent_common::file::{
    FileChangeEvent, FileOpenEvent, change_match, change_op, file_match, file_op,
};

use crate::model::{DeviceNumber, Event, FileAccess, FileChange, Syscall};

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

/// The operation a file-change syscall performs.
pub fn change_op_name(op: u32) -> &'static str {
    match op {
        change_op::UNLINK | change_op::UNLINKAT => "unlink",
        change_op::RENAME | change_op::RENAMEAT | change_op::RENAMEAT2 => "rename",
        change_op::CHMOD | change_op::FCHMOD | change_op::FCHMODAT | change_op::FCHMODAT2 => {
            "chmod"
        }
        change_op::CHOWN | change_op::LCHOWN | change_op::FCHOWN | change_op::FCHOWNAT => "chown",
        change_op::LINK | change_op::LINKAT => "link",
        change_op::SYMLINK | change_op::SYMLINKAT => "symlink",
        change_op::MKNOD | change_op::MKNODAT => "mknod",
        change_op::TRUNCATE => "truncate",
        _ => "unknown",
    }
}

/// The syscall of a file-change record.
pub fn change_syscall_name(op: u32) -> &'static str {
    match op {
        change_op::UNLINK => "unlink",
        change_op::UNLINKAT => "unlinkat",
        change_op::RENAME => "rename",
        change_op::RENAMEAT => "renameat",
        change_op::RENAMEAT2 => "renameat2",
        change_op::CHMOD => "chmod",
        change_op::FCHMOD => "fchmod",
        change_op::FCHMODAT => "fchmodat",
        change_op::FCHMODAT2 => "fchmodat2",
        change_op::CHOWN => "chown",
        change_op::LCHOWN => "lchown",
        change_op::FCHOWN => "fchown",
        change_op::FCHOWNAT => "fchownat",
        change_op::LINK => "link",
        change_op::LINKAT => "linkat",
        change_op::SYMLINK => "symlink",
        change_op::SYMLINKAT => "symlinkat",
        change_op::MKNOD => "mknod",
        change_op::MKNODAT => "mknodat",
        change_op::TRUNCATE => "truncate",
        _ => "unknown",
    }
}

const S_IFMT: u32 = 0o170000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// mknod's file type (`S_IFMT` bits); 0 means a regular file.
pub fn node_type(mode: u32) -> &'static str {
    match mode & S_IFMT {
        0o060000 => "block",
        0o020000 => "char",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "regular",
    }
}

fn lossy(buf: &[u8], len: u32) -> String {
    let len = (len as usize).min(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Fills `syscall`, `file` (the path) and `file_change` from a record.
pub fn fill_change(ev: &mut Event, e: &FileChangeEvent) {
    ev.syscall = Some(Syscall {
        name: change_syscall_name(e.op).into(),
        result: e.result,
    });
    let op = change_op_name(e.op);
    let two_paths = matches!(op, "rename" | "link" | "symlink");
    let no_path = matches!(e.op, change_op::FCHMOD | change_op::FCHOWN);
    // symlink(target, linkpath): the file operated on is the link created;
    // the target is only the text it holds.
    let (path, target) = if op == "symlink" {
        (lossy(&e.path2, e.path2_len), lossy(&e.path, e.path_len))
    } else {
        (lossy(&e.path, e.path_len), lossy(&e.path2, e.path2_len))
    };
    ev.file = Some(FileAccess {
        path,
        write: true,
        truncate: op == "truncate",
        create: matches!(op, "link" | "symlink" | "mknod"),
        ..FileAccess::default()
    });
    let mut c = FileChange {
        op: op.into(),
        target: two_paths.then_some(target),
        fd: no_path.then_some(e.dirfd),
        truncated: e.matched & (file_match::TRUNCATED | change_match::PATH2_TRUNCATED) != 0,
        ..FileChange::default()
    };
    match op {
        "chmod" => {
            c.mode = Some(e.mode & 0o7777);
            c.setuid = e.mode & S_ISUID != 0;
            c.setgid = e.mode & S_ISGID != 0;
        }
        "chown" => {
            // -1 (as u32) leaves the owner or group unchanged.
            c.uid = (e.uid != u32::MAX).then_some(e.uid);
            c.gid = (e.gid != u32::MAX).then_some(e.gid);
        }
        "mknod" => {
            c.mode = Some(e.mode);
            let t = node_type(e.mode);
            c.node_type = Some(t.into());
            if matches!(t, "block" | "char") {
                // The syscall's `unsigned int dev` is the kernel's
                // old_decode_dev-compatible 32-bit form (new_encode_dev).
                let dev = e.dev as u32;
                c.device = Some(DeviceNumber {
                    major: (dev & 0xfff00) >> 8,
                    minor: (dev & 0xff) | ((dev >> 12) & 0xfff00),
                });
            }
        }
        "truncate" => c.length = Some(e.length),
        _ => {}
    }
    ev.file_change = Some(c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKindName;

    fn record(op: u32, path: &str, path2: &str) -> FileChangeEvent {
        // SAFETY: plain old data; all-zero is a valid value.
        let mut e: FileChangeEvent = unsafe { std::mem::zeroed() };
        e.op = op;
        e.path[..path.len()].copy_from_slice(path.as_bytes());
        e.path_len = path.len() as u32;
        e.path2[..path2.len()].copy_from_slice(path2.as_bytes());
        e.path2_len = path2.len() as u32;
        e
    }

    fn filled(e: &FileChangeEvent) -> Event {
        let mut ev = Event::new(
            EventKindName::FileChange,
            "2026-01-02T03:04:05Z".parse().unwrap(),
        );
        fill_change(&mut ev, e);
        ev
    }

    #[test]
    fn chmod_setuid() {
        let mut e = record(change_op::FCHMODAT, "/tmp/x", "");
        e.mode = 0o4755;
        let ev = filled(&e);
        let c = ev.file_change.unwrap();
        assert_eq!(ev.syscall.unwrap().name, "fchmodat");
        assert_eq!(ev.file.unwrap().path, "/tmp/x");
        assert_eq!(c.op, "chmod");
        assert_eq!(c.mode, Some(0o4755));
        assert!(c.setuid && !c.setgid);
        assert_eq!(c.target, None);
    }

    #[test]
    fn symlink_and_rename_keep_both_paths() {
        // symlink("/etc/shadow", "/tmp/s"): the path is the link created.
        let ev = filled(&record(change_op::SYMLINKAT, "/etc/shadow", "/tmp/s"));
        let c = ev.file_change.unwrap();
        assert_eq!(
            (ev.file.unwrap().path.as_str(), c.op.as_str(), c.target),
            ("/tmp/s", "symlink", Some("/etc/shadow".to_string()))
        );
        let ev = filled(&record(change_op::RENAMEAT2, "/var/log/a", "/tmp/b"));
        assert_eq!(ev.file_change.unwrap().target.as_deref(), Some("/tmp/b"));
    }

    #[test]
    fn mknod_block_device_numbers() {
        let mut e = record(change_op::MKNODAT, "/tmp/sda", "");
        e.mode = 0o060600;
        // makedev(8, 1) in the syscall's 32-bit encoding.
        e.dev = (8 << 8) | 1;
        let c = filled(&e).file_change.unwrap();
        assert_eq!(c.node_type.as_deref(), Some("block"));
        assert_eq!(c.device, Some(DeviceNumber { major: 8, minor: 1 }));
        let mut e = record(change_op::MKNOD, "/tmp/f", "");
        e.mode = 0o010644;
        let c = filled(&e).file_change.unwrap();
        assert_eq!((c.node_type.as_deref(), c.device), (Some("fifo"), None));
    }

    #[test]
    fn chown_unchanged_ids_are_absent() {
        let mut e = record(change_op::FCHOWN, "", "");
        e.uid = 0;
        e.gid = u32::MAX;
        e.dirfd = 3;
        let c = filled(&e).file_change.unwrap();
        assert_eq!((c.uid, c.gid, c.fd), (Some(0), None, Some(3)));
    }

    #[test]
    fn lengths_past_the_buffer_are_clamped() {
        let mut e = record(change_op::UNLINK, "/a", "");
        e.path_len = 10_000;
        e.path2_len = 10_000;
        let ev = filled(&e);
        assert_eq!(ev.file.unwrap().path.len(), 256);
    }
}
