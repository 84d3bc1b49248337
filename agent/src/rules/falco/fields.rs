//! Falco's field names mapped onto Picket's event model.
//!
//! Every entry is either a Picket field with the same meaning, a small
//! computed accessor over the event (still allocation-free: slices of
//! strings the event already holds), a field the translator handles
//! specially (`evt.type`, `evt.dir`, ...), or unsupported with the reason.
//! The table is written down in `docs/falco.md`; keep both in sync.

use crate::{
    model::{Ancestor, Event, EventKindName as K},
    rules::fields::{self, Accessor, FieldType, FieldValue, Resolved},
};

use super::{cond::FieldRef, errno};

/// How one Falco field is evaluated.
pub enum Mapping {
    /// An accessor, faithful for the given event kinds (empty: all kinds).
    Field(Resolved),
    /// `evt.type`: event kind plus syscall name.
    EvtType,
    /// `evt.dir`: Picket only reports completed syscalls (exit side).
    EvtDir,
    /// `evt.num`: event sequence numbers start at 1, so only `= 0` maps.
    EvtNum,
    /// `evt.arg.flags` of an open: flag names map to the decoded flag fields.
    OpenFlags,
    /// `proc.tty`: only "has a terminal" (`!= 0`) / "has none" (`= 0`).
    ProcTty,
    /// `proc.cwd`: Falco's value ends with `/`, Picket's does not.
    ProcCwd,
    /// `fd.snet`, `fd.rnet`, ...: CIDR membership of an endpoint address.
    Net(Resolved),
    /// `fd.sip.name`, ...: the endpoint address is one of a host name's
    /// current addresses (`crate::dns`). The field resolved is the address.
    HostName(Resolved),
    Unsupported(String),
}

const FILE: &[K] = &[K::FileOpen];
/// unlink, rename, chmod, chown, link, symlink, mknod, truncate.
const CHANGE: &[K] = &[K::FileChange];
/// Kinds with an fd Picket knows the type of: opened files, sockets, and
/// the fd a `dup2`/`dup3` duplicated.
const FD: &[K] = &[
    K::FileOpen,
    K::Connect,
    K::Send,
    K::Bind,
    K::Listen,
    K::Accept,
    K::FdDup,
];
const NET: &[K] = &[K::Connect, K::Send, K::Bind, K::Listen, K::Accept];

/// Falco's `proc.name` is the kernel's `comm`: at most 15 bytes.
pub fn comm(s: &str) -> &str {
    if s.len() <= 15 {
        return s;
    }
    let mut end = 15;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn custom(
    name: &'static str,
    ty: FieldType,
    kinds: &'static [K],
    get: for<'a> fn(&'a Event) -> FieldValue<'a>,
) -> Mapping {
    Mapping::Field(Resolved {
        name: name.into(),
        ty,
        kinds,
        accessor: Accessor::Static(name, get),
    })
}

fn picket(name: &str) -> Mapping {
    match fields::resolve(name) {
        Some(r) => Mapping::Field(r),
        None => Mapping::Unsupported(format!("internal: Picket field `{name}` missing")),
    }
}

fn unsupported(why: &str) -> Mapping {
    Mapping::Unsupported(why.to_string())
}

use FieldValue::{Absent, Bool as B, Int as I, Str as S};

fn parent(e: &Event) -> Option<&Ancestor> {
    e.process.ancestors.first().map(|a| &**a)
}

fn first_word(s: &str) -> &str {
    s.split(' ').next().unwrap_or(s)
}

/// `proc.args`: the command line after argv[0].
fn proc_args(e: &Event) -> FieldValue<'_> {
    let p = &e.process;
    let Some(a0) = p.command_args.first() else {
        return S("");
    };
    S(p.command_line
        .strip_prefix(a0.as_str())
        .and_then(|r| r.strip_prefix(' '))
        .unwrap_or(""))
}

/// Falco's `fd.name` of an open: the normalized absolute path (the path as
/// passed when it was relative).
fn fd_name(f: &crate::model::FileAccess) -> &str {
    f.name()
}

fn file_dir(path: &str) -> Option<&str> {
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

const O_DIRECTORY: u32 = 0o200000;

/// Falco's `fd.type` of a duplicated fd: from its inode type and, for a
/// socket, the family the agent read from `/proc/<pid>/fd` (absent when the
/// process was gone: `unknown`, or an `other` family Falco would name
/// `netlink`, `packet`, ...).
fn dup_type(e: &Event) -> Option<&'static str> {
    use crate::model::FdType as T;
    let d = e.fd.as_ref()?;
    match d.old_type {
        T::File | T::Tty | T::CharDevice => Some("file"),
        T::Directory => Some("directory"),
        T::Pipe => Some("pipe"),
        T::Socket => match d.socket.as_ref()?.family.as_str() {
            "inet" => Some("ipv4"),
            "inet6" => Some("ipv6"),
            "unix" => Some("unix"),
            _ => None,
        },
        T::Unknown | T::Closed | T::Other => None,
    }
}

fn typechar(e: &Event) -> FieldValue<'_> {
    if let Some(f) = &e.file {
        return S(if f.flags & O_DIRECTORY != 0 { "d" } else { "f" });
    }
    if e.kind() == K::FdDup {
        return dup_type(e).map_or(Absent, |t| {
            S(match t {
                "file" => "f",
                "directory" => "d",
                "pipe" => "p",
                "ipv4" => "4",
                "ipv6" => "6",
                _ => "u",
            })
        });
    }
    if let Some(n) = &e.network {
        return match n.r#type.as_str() {
            "ipv4" => S("4"),
            "ipv6" => S("6"),
            "unix" => S("u"),
            _ => Absent,
        };
    }
    Absent
}

fn fd_type(e: &Event) -> FieldValue<'_> {
    if let Some(f) = &e.file {
        return S(if f.flags & O_DIRECTORY != 0 {
            "directory"
        } else {
            "file"
        });
    }
    if e.kind() == K::FdDup {
        return dup_type(e).map_or(Absent, S);
    }
    if let Some(n) = &e.network {
        return match n.r#type.as_str() {
            t @ ("ipv4" | "ipv6" | "unix") => S(t),
            _ => Absent,
        };
    }
    Absent
}

/// Falco's server side: the local end for accepted/bound/listening
/// sockets, the peer for connect/send.
fn server_is_local(e: &Event) -> bool {
    matches!(e.kind(), K::Accept | K::Bind | K::Listen)
}

fn endpoint(e: &Event, local: bool) -> Option<&crate::model::Endpoint> {
    let n = e.network.as_ref()?;
    if local {
        n.local.as_ref()
    } else {
        n.peer.as_ref()
    }
}

fn addr(e: &Event, local: bool) -> FieldValue<'_> {
    endpoint(e, local).map_or(Absent, |p| S(&p.address))
}

fn port(e: &Event, local: bool) -> FieldValue<'_> {
    endpoint(e, local).map_or(Absent, |p| I(i64::from(p.port)))
}

fn image_repo(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(c) => &name[..slash + c],
        None => name,
    }
}

fn image_tag(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(c) => &name[slash + c + 1..],
        None => "",
    }
}

fn ancestor_at(e: &Event, n: usize) -> Option<&Ancestor> {
    n.checked_sub(1)
        .and_then(|i| e.process.ancestors.get(i))
        .map(|a| &**a)
}

fn aname_at(e: &Event, n: usize) -> FieldValue<'_> {
    if n == 0 {
        return S(comm(&e.process.executable.name));
    }
    ancestor_at(e, n).map_or(Absent, |a| S(comm(&a.executable.name)))
}

fn apid_at(e: &Event, n: usize) -> FieldValue<'_> {
    if n == 0 {
        return I(i64::from(e.process.pid));
    }
    ancestor_at(e, n).map_or(Absent, |a| I(i64::from(a.pid)))
}

fn aexepath_at(e: &Event, n: usize) -> FieldValue<'_> {
    if n == 0 {
        return S(&e.process.executable.path);
    }
    ancestor_at(e, n).map_or(Absent, |a| S(&a.executable.path))
}

fn acmdline_at(e: &Event, n: usize) -> FieldValue<'_> {
    if n == 0 {
        return S(&e.process.command_line);
    }
    ancestor_at(e, n).map_or(Absent, |a| S(&a.command_line))
}

fn indexed(
    name: &'static str,
    ty: FieldType,
    arg: &str,
    get: for<'a> fn(&'a Event, usize) -> FieldValue<'a>,
) -> Mapping {
    match arg.parse::<usize>() {
        Ok(n) if n <= 64 => Mapping::Field(Resolved {
            name: name.into(),
            ty,
            kinds: &[],
            accessor: Accessor::Indexed(name, n, get),
        }),
        _ => Mapping::Unsupported(format!("`{name}[{arg}]`: the index must be 0..64")),
    }
}

/// The mapping of one field reference (its `[arg]` included; transformers
/// are handled by the translator).
pub fn map(f: &FieldRef) -> Mapping {
    use FieldType::{Bool, Int, IntList, Str, StrList};
    if let Some(arg) = &f.arg {
        return match f.name.as_str() {
            "proc.aname" => indexed("proc.aname", Str, arg, aname_at),
            "proc.apid" => indexed("proc.apid", Int, arg, apid_at),
            "proc.aexepath" => indexed("proc.aexepath", Str, arg, aexepath_at),
            "proc.acmdline" => indexed("proc.acmdline", Str, arg, acmdline_at),
            "k8s.pod.label" | "k8s.pod.labels" => picket(&format!("k8s.pod.labels.{arg}")),
            "k8s.ns.label" => picket(&format!("k8s.namespace.labels.{arg}")),
            "evt.arg" | "evt.rawarg" => unsupported(
                "positional syscall arguments: Picket decodes arguments into named fields",
            ),
            other => Mapping::Unsupported(format!("`{other}[{arg}]` is not mapped")),
        };
    }
    match f.name.as_str() {
        "evt.type" => Mapping::EvtType,
        "evt.dir" => Mapping::EvtDir,
        "evt.num" => Mapping::EvtNum,
        "evt.rawres" | "evt.arg.res" | "evt.rawarg.res" => custom("evt.rawres", Int, &[], |e| {
            if e.kind() == K::Exec {
                return I(0);
            }
            e.syscall.as_ref().map_or(Absent, |s| I(s.result))
        }),
        "evt.res" => custom("evt.res", Str, &[], |e| {
            if e.kind() == K::Exec {
                return S("SUCCESS");
            }
            e.syscall
                .as_ref()
                .map_or(Absent, |s| S(errno::res(s.result)))
        }),
        "evt.is_open_write" => picket("file.write"),
        "evt.is_open_read" => custom("evt.is_open_read", Bool, FILE, |e| {
            e.file
                .as_ref()
                .map_or(Absent, |f| B(matches!(f.flags & 3, 0 | 2)))
        }),
        "evt.arg.flags" | "evt.rawarg.flags" => Mapping::OpenFlags,
        // File-change arguments, as Falco names them per syscall: rename and
        // link (oldpath, newpath), symlink (target, linkpath), unlink,
        // chmod, ... (path). Only `file_change` events carry them.
        "evt.arg.oldpath" | "evt.arg.linkpath" | "evt.arg.path" | "fs.path.name"
        | "fs.path.source" => custom("evt.arg.path", Str, CHANGE, |e| {
            if e.file_change.is_none() {
                return Absent;
            }
            e.file.as_ref().map_or(Absent, |f| S(&f.path))
        }),
        "evt.arg.newpath" | "evt.arg.target" | "fs.path.target" => {
            custom("evt.arg.target", Str, CHANGE, |e| {
                e.file_change
                    .as_ref()
                    .and_then(|c| c.target.as_deref())
                    .map_or(Absent, S)
            })
        }
        // socket(2)'s domain as Falco prints it (`AF_PACKET`, ...), for the
        // packet and raw sockets Picket reports.
        "evt.arg.domain" => custom("evt.arg.domain", Str, &[K::RawSocket], |e| {
            let Some(s) = e.socket.as_ref() else {
                return Absent;
            };
            S(match s.family.as_str() {
                "packet" => "AF_PACKET",
                "inet" => "AF_INET",
                "inet6" => "AF_INET6",
                "unix" => "AF_UNIX",
                "netlink" => "AF_NETLINK",
                other => other,
            })
        }),
        "evt.arg.request" => picket("ptrace.request"),
        "evt.arg.pid" => picket("ptrace.target_pid"),
        "evt.arg.name" => picket("memfd.name"),
        "proc.name" => custom("proc.name", Str, &[], |e| {
            S(comm(&e.process.executable.name))
        }),
        "proc.exe" => custom("proc.exe", Str, &[], |e| {
            e.process
                .command_args
                .first()
                .map_or(Absent, |a| S(a.as_str()))
        }),
        "proc.exepath" => picket("process.executable.path"),
        "proc.cmdline" => picket("process.command_line"),
        "proc.args" => custom("proc.args", Str, &[], proc_args),
        "proc.pid" => picket("process.pid"),
        "proc.vpid" => picket("process.vpid"),
        "proc.ppid" => picket("process.parent_pid"),
        "proc.pvpid" => picket("process.parent_vpid"),
        "proc.cwd" => Mapping::ProcCwd,
        "proc.tty" => Mapping::ProcTty,
        "proc.pname" => custom("proc.pname", Str, &[], |e| {
            parent(e).map_or(Absent, |a| S(comm(&a.executable.name)))
        }),
        "proc.pexepath" => custom("proc.pexepath", Str, &[], |e| {
            parent(e).map_or(Absent, |a| S(&a.executable.path))
        }),
        "proc.pexe" => custom("proc.pexe", Str, &[], |e| {
            parent(e).map_or(Absent, |a| S(first_word(&a.command_line)))
        }),
        "proc.pcmdline" => custom("proc.pcmdline", Str, &[], |e| {
            parent(e).map_or(Absent, |a| S(&a.command_line))
        }),
        "proc.aname" => custom("proc.aname", StrList, &[], |e| {
            FieldValue::AncestorStrs(&e.process.ancestors, |a| comm(&a.executable.name))
        }),
        "proc.aexepath" => picket("process.ancestors.executable.path"),
        "proc.apid" => custom("proc.apid", IntList, &[], |e| {
            FieldValue::AncestorInts(&e.process.ancestors, |a| i64::from(a.pid))
        }),
        "proc.is_exe_upper_layer" => picket("process.executable.written_after_container_start"),
        "proc.is_exe_from_memfd" => custom("proc.is_exe_from_memfd", Bool, &[], |e| {
            B(e.process.executable.path.starts_with("/memfd:"))
        }),
        "thread.tid" => picket("thread.id"),
        "thread.cap_effective" => picket("process.capabilities.effective"),
        "thread.cap_permitted" => picket("process.capabilities.permitted"),
        "user.uid" => picket("process.user.id"),
        "user.name" => picket("process.user.name"),
        "user.loginname" => picket("process.login_user.name"),
        "user.loginuid" => custom("user.loginuid", Int, &[], |e| {
            I(e.process
                .login_user
                .as_ref()
                .map_or(-1, |u| i64::from(u.id)))
        }),
        "group.gid" => picket("process.group.id"),
        "fd.name" => custom("fd.name", Str, FILE, |e| {
            e.file.as_ref().map_or(Absent, |f| S(fd_name(f)))
        }),
        "fd.nameraw" => picket("file.path"),
        "fd.directory" => custom("fd.directory", Str, FILE, |e| {
            e.file
                .as_ref()
                .and_then(|f| file_dir(fd_name(f)))
                .map_or(Absent, S)
        }),
        "fd.filename" => custom("fd.filename", Str, FILE, |e| {
            e.file.as_ref().map_or(Absent, |f| {
                let n = fd_name(f);
                S(n.rsplit('/').next().unwrap_or(n))
            })
        }),
        // Falco's fd.num of a failed open is -1 (the errno is in evt.res).
        "fd.num" => custom("fd.num", Int, FILE, |e| match (&e.file, &e.syscall) {
            (Some(_), Some(s)) => I(s.result.max(-1)),
            _ => Absent,
        }),
        "fd.typechar" => custom("fd.typechar", Str, FD, typechar),
        "fd.type" => custom("fd.type", Str, FD, fd_type),
        "fd.l4proto" => picket("network.transport"),
        "fd.sip" => custom("fd.sip", Str, NET, |e| addr(e, server_is_local(e))),
        "fd.sport" => custom("fd.sport", Int, NET, |e| port(e, server_is_local(e))),
        "fd.cip" => custom("fd.cip", Str, NET, |e| addr(e, !server_is_local(e))),
        "fd.cport" => custom("fd.cport", Int, NET, |e| port(e, !server_is_local(e))),
        "fd.rip" => picket("network.peer.address"),
        "fd.rport" => picket("network.peer.port"),
        "fd.lip" => picket("network.local.address"),
        "fd.lport" => picket("network.local.port"),
        "fd.snet" => Mapping::Net(Resolved {
            name: "fd.sip".into(),
            ty: Str,
            kinds: NET,
            accessor: Accessor::Static("fd.sip", |e| addr(e, server_is_local(e))),
        }),
        "fd.cnet" => Mapping::Net(Resolved {
            name: "fd.cip".into(),
            ty: Str,
            kinds: NET,
            accessor: Accessor::Static("fd.cip", |e| addr(e, !server_is_local(e))),
        }),
        "fd.rnet" => match fields::resolve("network.peer.address") {
            Some(r) => Mapping::Net(r),
            None => unsupported("internal"),
        },
        "fd.lnet" => match fields::resolve("network.local.address") {
            Some(r) => Mapping::Net(r),
            None => unsupported("internal"),
        },
        "container.id" => custom("container.id", Str, &[], |e| {
            // Falco's `container.id` is "host" outside containers (its
            // `container` macro is `container.id != host`).
            S(e.container.as_ref().map_or("host", |c| c.id.as_str()))
        }),
        "container.name" => custom("container.name", Str, &[], |e| {
            S(e.container.as_ref().map_or("host", |c| c.name.as_str()))
        }),
        "container.image" => picket("container.image.name"),
        "container.image.repository" => custom("container.image.repository", Str, &[], |e| {
            e.container
                .as_ref()
                .and_then(|c| c.image.as_ref())
                .map_or(Absent, |i| S(image_repo(&i.name)))
        }),
        "container.image.tag" => custom("container.image.tag", Str, &[], |e| {
            e.container
                .as_ref()
                .and_then(|c| c.image.as_ref())
                .map_or(Absent, |i| S(image_tag(&i.name)))
        }),
        "k8s.ns.name" => picket("k8s.namespace.name"),
        "k8s.pod.name" => picket("k8s.pod.name"),
        "k8s.pod.uid" => picket("k8s.pod.uid"),
        "container.privileged" => picket("container.privileged"),
        "group.name" => unsupported("Picket does not resolve group names (numeric ids only)"),
        "proc.duration" => custom("proc.duration", Int, &[], |e| {
            e.process.start_time.map_or(Absent, |st| {
                let ns = e.time.as_nanosecond() - st.as_nanosecond();
                I(i64::try_from(ns.max(0)).unwrap_or(i64::MAX))
            })
        }),
        "proc.pid.ts" => custom("proc.pid.ts", Int, &[], |e| {
            e.process.start_time.map_or(Absent, |st| {
                I(i64::try_from(st.as_nanosecond()).unwrap_or(i64::MAX))
            })
        }),
        "proc.ppid.duration" => unsupported(
            "ancestors carry no start time in Picket's events (only the process itself does)",
        ),
        "proc.sid"
        | "proc.vpgid"
        | "proc.sname"
        | "proc.is_vpgid_leader"
        | "proc.is_sid_leader" => unsupported("sessions and process groups are not captured"),
        "proc.env" => unsupported("the environment is not captured"),
        "fd.sip.name" => Mapping::HostName(Resolved {
            name: "fd.sip".into(),
            ty: Str,
            kinds: NET,
            accessor: Accessor::Static("fd.sip", |e| addr(e, server_is_local(e))),
        }),
        "fd.cip.name" => Mapping::HostName(Resolved {
            name: "fd.cip".into(),
            ty: Str,
            kinds: NET,
            accessor: Accessor::Static("fd.cip", |e| addr(e, !server_is_local(e))),
        }),
        "fd.rip.name" | "fd.lip.name" => {
            let picket_name = if f.name == "fd.rip.name" {
                "network.peer.address"
            } else {
                "network.local.address"
            };
            match fields::resolve(picket_name) {
                Some(mut r) => {
                    r.kinds = NET;
                    Mapping::HostName(r)
                }
                None => Mapping::Unsupported(format!("`{picket_name}` is not a Picket field")),
            }
        }
        "fd.connected" | "fd.name_changed" => unsupported("socket state is not tracked"),
        // `fd.ip` and `fd.net` are translated onto both ends
        // (`translate::Cx::either_end`), never through this table.
        "fd.port" | "fd.ip" | "fd.net" => unsupported(
            "either-end port fields are not mapped; use fd.sport/fd.cport/fd.rport/fd.lport",
        ),
        "fd.uid" | "fd.ino" | "fd.dev" => unsupported("not captured"),
        other if other.starts_with("k8s.") => Mapping::Unsupported(format!(
            "`{other}`: only k8s.ns.name, k8s.pod.name, k8s.pod.uid and k8s.pod.label[...] are mapped"
        )),
        other if other.starts_with("evt.arg.") || other.starts_with("evt.rawarg.") => {
            Mapping::Unsupported(format!(
                "`{other}`: syscall argument not decoded by Picket's sensors"
            ))
        }
        other => Mapping::Unsupported(format!("`{other}` has no Picket equivalent")),
    }
}

/// Syscalls (Falco `evt.type` values) and the Picket event kind reporting
/// them. `grouped`: the kind does not say which of its syscalls it was, so
/// a condition must name all of them to be evaluated faithfully.
pub struct Syscall {
    pub kind: K,
    pub grouped: bool,
}

pub fn syscall(name: &str) -> Option<Syscall> {
    let (kind, grouped) = match name {
        "execve" | "execveat" => (K::Exec, true),
        "clone" | "clone3" | "fork" | "vfork" => (K::Fork, true),
        "procexit" => (K::Exit, false),
        "open" | "openat" | "openat2" => (K::FileOpen, false),
        "connect" => (K::Connect, false),
        "sendto" | "sendmsg" => (K::Send, false),
        "bind" => (K::Bind, false),
        "listen" => (K::Listen, false),
        "accept" | "accept4" => (K::Accept, false),
        "ptrace" => (K::Ptrace, false),
        "memfd_create" => (K::Memfd, false),
        "init_module" | "finit_module" => (K::ModuleLoad, false),
        "bpf" => (K::Bpf, false),
        "dup2" | "dup3" => (K::FdDup, false),
        "unlink" | "unlinkat" | "rename" | "renameat" | "renameat2" | "chmod" | "fchmod"
        | "fchmodat" | "fchmodat2" | "chown" | "lchown" | "fchown" | "fchownat" | "link"
        | "linkat" | "symlink" | "symlinkat" | "mknod" | "mknodat" | "truncate" => {
            (K::FileChange, false)
        }
        // Only packet and raw sockets are reported (a warning says so).
        "socket" => (K::RawSocket, false),
        "unshare" | "setns" => (K::Namespace, false),
        "setuid" | "setgid" | "setreuid" | "setregid" | "setresuid" | "setresgid" | "setfsuid"
        | "setfsgid" | "capset" => (K::PrivilegeChange, false),
        "mount" | "umount" | "umount2" => (K::Mount, true),
        _ => return None,
    };
    Some(Syscall { kind, grouped })
}

/// Every syscall name of a grouped kind.
pub fn group(kind: K) -> &'static [&'static str] {
    match kind {
        K::Exec => &["execve", "execveat"],
        K::Fork => &["clone", "clone3", "fork", "vfork"],
        K::Mount => &["mount", "umount", "umount2"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parts_and_comm() {
        assert_eq!(
            image_repo("docker.io/library/nginx:1.25"),
            "docker.io/library/nginx"
        );
        assert_eq!(image_repo("registry:5000/app"), "registry:5000/app");
        assert_eq!(
            image_repo("registry:5000/app:v1@sha256:ab"),
            "registry:5000/app"
        );
        assert_eq!(image_tag("registry:5000/app:v1"), "v1");
        assert_eq!(image_tag("app"), "");
        assert_eq!(comm("dpkg-preconfigure"), "dpkg-preconfigu");
        assert_eq!(comm("bash"), "bash");
        assert_eq!(file_dir("/etc/shadow"), Some("/etc"));
        assert_eq!(file_dir("/etc"), Some("/"));
        assert_eq!(file_dir("shadow"), None);
    }
}
