//! The fields rules can address, resolved once at compile time.
//!
//! Every field has a dotted name (the same as in the event JSON), a type and
//! a plain `fn(&Event) -> FieldValue` accessor, so evaluating a condition
//! never looks a name up, never allocates and never converts to JSON. The
//! table also records which event kinds set the field, so a rule that asks
//! for `network.peer.port` on `exec` events is a lint error instead of a rule
//! that silently never fires.

use std::sync::Arc;

use crate::model::{Ancestor, Event, EventKindName as K, FdType, MetadataStatus};

/// The type of a field, checked against the operators and literals used on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int,
    Bool,
    /// A string with a closed set of values (checked at compile time).
    Enum(&'static [&'static str]),
    /// A list of strings: operators match when any element matches.
    StrList,
    /// A list of integers: operators match when any element matches.
    IntList,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Str => "string",
            Self::Int => "integer",
            Self::Bool => "boolean",
            Self::Enum(_) => "enum",
            Self::StrList => "list of strings",
            Self::IntList => "list of integers",
        }
    }

    pub fn is_list(self) -> bool {
        matches!(self, Self::StrList | Self::IntList)
    }

    /// Strings, enums and string lists compare with string literals.
    pub fn is_stringy(self) -> bool {
        matches!(self, Self::Str | Self::Enum(_) | Self::StrList)
    }
}

/// A field's value in one event, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub enum FieldValue<'a> {
    /// The section holding the field is not set in this event.
    Absent,
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Strs(&'a [String]),
    Ints(&'a [i64]),
    AncestorStrs(&'a [Arc<Ancestor>], fn(&Ancestor) -> &str),
    AncestorInts(&'a [Arc<Ancestor>], fn(&Ancestor) -> i64),
}

impl<'a> FieldValue<'a> {
    /// Calls `f` on each string (one for scalars, each element for lists)
    /// until it returns true.
    #[inline]
    pub fn any_str(&self, mut f: impl FnMut(&str) -> bool) -> bool {
        match *self {
            Self::Str(s) => f(s),
            Self::Strs(list) => list.iter().any(|s| f(s)),
            Self::AncestorStrs(list, proj) => list.iter().any(|a| f(proj(a))),
            _ => false,
        }
    }

    #[inline]
    pub fn any_int(&self, mut f: impl FnMut(i64) -> bool) -> bool {
        match *self {
            Self::Int(i) => f(i),
            Self::Ints(list) => list.iter().any(|i| f(*i)),
            Self::AncestorInts(list, proj) => list.iter().any(|a| f(proj(a))),
            _ => false,
        }
    }

    /// Present and not empty (the `exists` operator).
    pub fn exists(&self) -> bool {
        match *self {
            Self::Absent => false,
            Self::Str(s) => !s.is_empty(),
            Self::Strs(l) => !l.is_empty(),
            Self::Ints(l) => !l.is_empty(),
            Self::AncestorStrs(l, _) | Self::AncestorInts(l, _) => !l.is_empty(),
            Self::Int(_) | Self::Bool(_) => true,
        }
    }

    /// Text for output templates and de-duplication keys.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        match *self {
            Self::Absent => out.push_str("<none>"),
            Self::Str(s) => out.push_str(s),
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Self::Strs(_) | Self::AncestorStrs(..) => {
                let mut first = true;
                self.any_str(|s| {
                    if !first {
                        out.push(' ');
                    }
                    first = false;
                    out.push_str(s);
                    false
                });
            }
            Self::Ints(_) | Self::AncestorInts(..) => {
                let mut first = true;
                self.any_int(|i| {
                    if !first {
                        out.push(' ');
                    }
                    first = false;
                    let _ = write!(out, "{i}");
                    false
                });
            }
        }
    }
}

/// One entry of the field table.
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    /// Event kinds that set this field; empty means every kind.
    pub kinds: &'static [K],
    pub get: for<'a> fn(&'a Event) -> FieldValue<'a>,
}

/// How a compiled predicate reads its field.
#[derive(Clone, Debug)]
pub enum Accessor {
    /// A table field: its name (so analyses of compiled conditions, such as
    /// the in-kernel filter derivation, can tell fields apart) and getter.
    Static(&'static str, for<'a> fn(&'a Event) -> FieldValue<'a>),
    /// `k8s.pod.labels.<key>`
    PodLabel(Box<str>),
    /// `k8s.namespace.labels.<key>`
    NamespaceLabel(Box<str>),
    /// A computed field with an index argument (Falco's `proc.aname[2]`).
    Indexed(
        &'static str,
        usize,
        for<'a> fn(&'a Event, usize) -> FieldValue<'a>,
    ),
}

impl Accessor {
    /// The field's name for table fields (`None` for label lookups).
    pub fn field_name(&self) -> Option<&'static str> {
        match self {
            Self::Static(name, _) | Self::Indexed(name, ..) => Some(name),
            _ => None,
        }
    }

    #[inline]
    pub fn get<'a>(&self, ev: &'a Event) -> FieldValue<'a> {
        match self {
            Self::Static(_, f) => f(ev),
            Self::Indexed(_, i, f) => f(ev, *i),
            Self::PodLabel(key) => ev
                .k8s
                .as_ref()
                .and_then(|k| k.pod.labels.get(&**key))
                .map_or(FieldValue::Absent, |v| FieldValue::Str(v)),
            Self::NamespaceLabel(key) => ev
                .k8s
                .as_ref()
                .and_then(|k| k.namespace.as_ref())
                .and_then(|n| n.labels.get(&**key))
                .map_or(FieldValue::Absent, |v| FieldValue::Str(v)),
        }
    }
}

/// A resolved field: what the compiler needs to type-check and evaluate it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    pub ty: FieldType,
    pub kinds: &'static [K],
    pub accessor: Accessor,
}

const POD_LABELS: &str = "k8s.pod.labels.";
const NS_LABELS: &str = "k8s.namespace.labels.";

/// Resolves a dotted name, or `None` when no such field exists.
pub fn resolve(name: &str) -> Option<Resolved> {
    if let Some(key) = name.strip_prefix(POD_LABELS).filter(|k| !k.is_empty()) {
        return Some(Resolved {
            name: name.into(),
            ty: FieldType::Str,
            kinds: &[],
            accessor: Accessor::PodLabel(key.into()),
        });
    }
    if let Some(key) = name.strip_prefix(NS_LABELS).filter(|k| !k.is_empty()) {
        return Some(Resolved {
            name: name.into(),
            ty: FieldType::Str,
            kinds: &[],
            accessor: Accessor::NamespaceLabel(key.into()),
        });
    }
    FIELDS.iter().find(|f| f.name == name).map(|f| Resolved {
        name: f.name.into(),
        ty: f.ty,
        kinds: f.kinds,
        accessor: Accessor::Static(f.name, f.get),
    })
}

/// All field names (for "did you mean" hints and `picket rules fields`).
pub fn names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|f| f.name)
}

pub fn fd_type_str(t: FdType) -> &'static str {
    match t {
        FdType::Unknown => "unknown",
        FdType::Closed => "closed",
        FdType::Tty => "tty",
        FdType::CharDevice => "char_device",
        FdType::Socket => "socket",
        FdType::Pipe => "pipe",
        FdType::File => "file",
        FdType::Directory => "directory",
        FdType::Other => "other",
    }
}

const FD_TYPES: &[&str] = &[
    "unknown",
    "closed",
    "tty",
    "char_device",
    "socket",
    "pipe",
    "file",
    "directory",
    "other",
];

/// `process.stdio.*_socket.family`, `fd.socket.family`.
/// Kinds whose events carry `file.path` (and write/truncate/create).
const FILE_KINDS: &[K] = &[K::FileOpen, K::FileChange];

/// `file.op` values (`file_change`).
const CHANGE_OPS: &[&str] = &[
    "unlink", "rename", "chmod", "chown", "link", "symlink", "mknod", "truncate",
];

/// `file.node_type` values (`file_change` of a mknod).
const NODE_TYPES: &[&str] = &["block", "char", "fifo", "socket", "regular"];

const SOCKET_FAMILIES: &[&str] = &["unix", "inet", "inet6", "other", "unknown"];

fn sock_family(s: &Option<crate::model::SocketInfo>) -> FieldValue<'_> {
    s.as_ref()
        .map_or(FieldValue::Absent, |s| FieldValue::Str(&s.family))
}

fn sock_peer(s: &Option<crate::model::SocketInfo>) -> Option<&crate::model::Endpoint> {
    s.as_ref().and_then(|s| s.peer.as_ref())
}

/// The `event.kind` values, in the order of `EventKindName::ALL`.
pub const KIND_NAMES: &[&str] = &[
    "exec",
    "fork",
    "exit",
    "capability",
    "privilege_change",
    "mount",
    "connect",
    "send",
    "bind",
    "listen",
    "accept",
    "namespace",
    "ptrace",
    "memfd",
    "module_load",
    "bpf",
    "fd_dup",
    "file_open",
    "rate_summary",
    "events_lost",
    "containment",
    "file_change",
    "raw_socket",
];

const ALL: &[K] = &[];
const NET: &[K] = &[K::Connect, K::Send, K::Bind, K::Listen, K::Accept];

use FieldType::{Bool, Int, IntList, Str, StrList};
use FieldValue::{Absent, Bool as B, Int as I, Str as S, Strs as SL};

fn u64i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

macro_rules! field {
    ($name:literal, $ty:expr, $kinds:expr, |$e:ident| $body:expr) => {
        FieldDef {
            name: $name,
            ty: $ty,
            kinds: $kinds,
            get: {
                fn get($e: &Event) -> FieldValue<'_> {
                    $body
                }
                get
            },
        }
    };
}

/// `$opt` is an `Option<section>`; `$s` binds it.
macro_rules! opt {
    ($e:ident . $sec:ident, |$s:ident| $body:expr) => {
        $e.$sec.as_ref().map_or(Absent, |$s| $body)
    };
}

macro_rules! creds {
    ($($name:literal, $side:ident, $f:ident;)*) => {
        [$(field!($name, Int, &[K::PrivilegeChange], |e| opt!(e.privilege, |p| I(i64::from(p.$side.$f)))),)*]
    };
}

const CRED_FIELDS: [FieldDef; 16] = creds! {
    "privilege.old.uid", old, uid; "privilege.old.euid", old, euid;
    "privilege.old.suid", old, suid; "privilege.old.fsuid", old, fsuid;
    "privilege.old.gid", old, gid; "privilege.old.egid", old, egid;
    "privilege.old.sgid", old, sgid; "privilege.old.fsgid", old, fsgid;
    "privilege.new.uid", new, uid; "privilege.new.euid", new, euid;
    "privilege.new.suid", new, suid; "privilege.new.fsuid", new, fsuid;
    "privilege.new.gid", new, gid; "privilege.new.egid", new, egid;
    "privilege.new.sgid", new, sgid; "privilege.new.fsgid", new, fsgid;
};

/// Base name of `argv[0]`: the name a program was invoked under (a
/// symlink `nc` to busybox or to `nc.openbsd`, or a renamed copy keeps the
/// name the caller chose here, while `process.executable.name` is the name
/// of the resolved file). Empty when argv is empty.
pub fn argv0_name(p: &crate::model::Process) -> &str {
    let a0 = p.command_args.first().map_or("", String::as_str);
    a0.rsplit('/').next().unwrap_or(a0)
}

/// The busybox applet a process runs: for the busybox binary itself, the
/// name it was invoked under (`nc` for a symlink `nc -> busybox`), or its
/// first argument when invoked as `busybox nc ...`. `None` for other
/// binaries, and for busybox without an applet.
pub fn busybox_applet(p: &crate::model::Process) -> Option<&str> {
    let exe = &p.executable.name;
    if !(exe == "busybox" || exe.starts_with("busybox.")) {
        return None;
    }
    let a0 = argv0_name(p);
    if a0.is_empty() || a0 == "busybox" || a0.starts_with("busybox.") {
        p.command_args
            .get(1)
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .filter(|a| !a.is_empty() && !a.starts_with('-'))
    } else {
        Some(a0)
    }
}

fn kind_str(e: &Event) -> FieldValue<'_> {
    S(e.kind().as_str())
}

fn owner<'a>(named: &'a Option<crate::model::Named>) -> FieldValue<'a> {
    named.as_ref().map_or(Absent, |n| S(&n.name))
}

static FIELDS: std::sync::LazyLock<Vec<FieldDef>> = std::sync::LazyLock::new(|| {
    let mut v = vec![
        FieldDef {
            name: "event.kind",
            ty: FieldType::Enum(KIND_NAMES),
            kinds: ALL,
            get: kind_str,
        },
        field!("event.ktime_ns", Int, ALL, |e| I(u64i(e.event.ktime_ns))),
        field!("host.name", Str, ALL, |e| S(&e.host.name)),
        field!("process.exec_id", Str, ALL, |e| S(&e.process.exec_id)),
        field!("process.pid", Int, ALL, |e| I(i64::from(e.process.pid))),
        field!("process.vpid", Int, ALL, |e| I(i64::from(e.process.vpid))),
        field!("process.parent_pid", Int, ALL, |e| I(i64::from(
            e.process.parent_pid
        ))),
        field!("process.parent_vpid", Int, ALL, |e| I(i64::from(
            e.process.parent_vpid
        ))),
        field!("process.parent_exec_id", Str, ALL, |e| S(&e
            .process
            .parent_exec_id)),
        field!("process.executable.path", Str, ALL, |e| S(&e
            .process
            .executable
            .path)),
        field!("process.executable.name", Str, ALL, |e| S(&e
            .process
            .executable
            .name)),
        field!("process.argv0", Str, ALL, |e| S(e
            .process
            .command_args
            .first()
            .map_or("", String::as_str))),
        field!("process.argv0_name", Str, ALL, |e| S(argv0_name(
            &e.process
        ))),
        field!("process.busybox_applet", Str, ALL, |e| busybox_applet(
            &e.process
        )
        .map_or(Absent, S)),
        field!("process.command_line", Str, ALL, |e| S(&e
            .process
            .command_line)),
        field!("process.command_args", StrList, ALL, |e| SL(&e
            .process
            .command_args)),
        field!("process.args_truncated", Bool, ALL, |e| B(e
            .process
            .args_truncated)),
        field!("process.executable_truncated", Bool, ALL, |e| B(e
            .process
            .executable_truncated)),
        field!("process.env.ld_preload", Str, &[K::Exec], |e| e
            .process
            .env
            .as_ref()
            .and_then(|v| v.ld_preload.as_deref())
            .map_or(Absent, S)),
        field!("process.env.ld_library_path", Str, &[K::Exec], |e| e
            .process
            .env
            .as_ref()
            .and_then(|v| v.ld_library_path.as_deref())
            .map_or(Absent, S)),
        field!(
            "process.env.ld_preload_outside_system_dirs",
            Bool,
            &[K::Exec],
            |e| e
                .process
                .env
                .as_ref()
                .and_then(|v| v.ld_preload_outside_system_dirs())
                .map_or(Absent, B)
        ),
        field!("process.env.truncated", Bool, &[K::Exec], |e| e
            .process
            .env
            .as_ref()
            .map_or(Absent, |v| B(v.truncated))),
        field!("process.working_directory", Str, ALL, |e| S(&e
            .process
            .working_directory)),
        field!("process.script_path", Str, &[K::Exec], |e| e
            .process
            .script_path
            .as_deref()
            .map_or(Absent, S)),
        field!("process.download_outputs", StrList, &[K::Exec], |e| SL(&e
            .process
            .download_outputs)),
        field!("process.user.id", Int, ALL, |e| I(i64::from(
            e.process.user.id
        ))),
        field!("process.real_user.id", Int, ALL, |e| I(i64::from(
            e.process.real_user.id
        ))),
        field!("process.saved_user.id", Int, ALL, |e| I(i64::from(
            e.process.saved_user.id
        ))),
        field!("process.group.id", Int, ALL, |e| I(i64::from(
            e.process.group.id
        ))),
        field!("process.real_group.id", Int, ALL, |e| I(i64::from(
            e.process.real_group.id
        ))),
        field!("process.saved_group.id", Int, ALL, |e| I(i64::from(
            e.process.saved_group.id
        ))),
        field!("process.login_user.id", Int, ALL, |e| e
            .process
            .login_user
            .as_ref()
            .map_or(Absent, |u| I(i64::from(u.id)))),
        field!("process.user.name", Str, ALL, |e| e
            .process
            .user
            .name
            .as_deref()
            .map_or(Absent, S)),
        field!("process.login_user.name", Str, ALL, |e| e
            .process
            .login_user
            .as_ref()
            .and_then(|u| u.name.as_deref())
            .map_or(Absent, S)),
        field!("process.capabilities.effective", StrList, ALL, |e| SL(&e
            .process
            .capabilities
            .effective)),
        field!("process.capabilities.permitted", StrList, ALL, |e| SL(&e
            .process
            .capabilities
            .permitted)),
        field!("process.interactive", Bool, ALL, |e| B(e
            .process
            .interactive)),
        FieldDef {
            name: "process.stdio.stdin",
            ty: FieldType::Enum(FD_TYPES),
            kinds: ALL,
            get: |e| S(fd_type_str(e.process.stdio.stdin)),
        },
        FieldDef {
            name: "process.stdio.stdout",
            ty: FieldType::Enum(FD_TYPES),
            kinds: ALL,
            get: |e| S(fd_type_str(e.process.stdio.stdout)),
        },
        FieldDef {
            name: "process.stdio.stderr",
            ty: FieldType::Enum(FD_TYPES),
            kinds: ALL,
            get: |e| S(fd_type_str(e.process.stdio.stderr)),
        },
        FieldDef {
            name: "process.stdio.stdin_socket.family",
            ty: FieldType::Enum(SOCKET_FAMILIES),
            kinds: ALL,
            get: |e| sock_family(&e.process.stdio.stdin_socket),
        },
        FieldDef {
            name: "process.stdio.stdout_socket.family",
            ty: FieldType::Enum(SOCKET_FAMILIES),
            kinds: ALL,
            get: |e| sock_family(&e.process.stdio.stdout_socket),
        },
        field!("process.stdio.stdin_socket.peer.address", Str, ALL, |e| {
            sock_peer(&e.process.stdio.stdin_socket).map_or(Absent, |p| S(&p.address))
        }),
        field!("process.stdio.stdin_socket.peer.port", Int, ALL, |e| {
            sock_peer(&e.process.stdio.stdin_socket).map_or(Absent, |p| I(i64::from(p.port)))
        }),
        field!("process.stdio.stdout_socket.peer.address", Str, ALL, |e| {
            sock_peer(&e.process.stdio.stdout_socket).map_or(Absent, |p| S(&p.address))
        }),
        field!("process.stdio.stdout_socket.peer.port", Int, ALL, |e| {
            sock_peer(&e.process.stdio.stdout_socket).map_or(Absent, |p| I(i64::from(p.port)))
        }),
        field!(
            "process.executable.written_after_container_start",
            Bool,
            ALL,
            |e| e
                .process
                .executable
                .written_after_container_start
                .map_or(Absent, B)
        ),
        field!("process.in_init_tree", Bool, ALL, |e| e
            .process
            .in_init_tree
            .map_or(Absent, B)),
        field!("process.parent_outside_cgroup", Bool, ALL, |e| e
            .process
            .parent_outside_cgroup
            .map_or(Absent, B)),
        field!("process.linux.cgroup", Str, ALL, |e| S(&e
            .process
            .linux
            .cgroup)),
        field!("process.linux.cgroup_id", Int, ALL, |e| I(u64i(
            e.process.linux.cgroup_id
        ))),
        field!("process.linux.pid_ns", Int, ALL, |e| I(i64::from(
            e.process.linux.pid_ns
        ))),
        field!("process.linux.pid_ns_level", Int, ALL, |e| I(i64::from(
            e.process.linux.pid_ns_level
        ))),
        field!("process.linux.mnt_ns", Int, ALL, |e| I(i64::from(
            e.process.linux.mnt_ns
        ))),
        field!("process.exit.code", Int, &[K::Exit], |e| e
            .process
            .exit
            .map_or(Absent, |x| I(i64::from(x.code)))),
        field!("process.exit.signal", Int, &[K::Exit], |e| e
            .process
            .exit
            .map_or(Absent, |x| I(i64::from(x.signal)))),
        field!("process.exit.core_dumped", Bool, &[K::Exit], |e| e
            .process
            .exit
            .map_or(Absent, |x| B(x.core_dumped))),
        field!("process.ancestors.pid", IntList, ALL, |e| {
            FieldValue::AncestorInts(&e.process.ancestors, |a| i64::from(a.pid))
        }),
        field!("process.ancestors.exec_id", StrList, ALL, |e| {
            FieldValue::AncestorStrs(&e.process.ancestors, |a| &a.exec_id)
        }),
        field!("process.ancestors.executable.path", StrList, ALL, |e| {
            FieldValue::AncestorStrs(&e.process.ancestors, |a| &a.executable.path)
        }),
        field!("process.ancestors.executable.name", StrList, ALL, |e| {
            FieldValue::AncestorStrs(&e.process.ancestors, |a| &a.executable.name)
        }),
        field!("process.ancestors.command_line", StrList, ALL, |e| {
            FieldValue::AncestorStrs(&e.process.ancestors, |a| &a.command_line)
        }),
        field!("thread.id", Int, ALL, |e| e
            .thread
            .map_or(Absent, |t| I(i64::from(t.id)))),
        field!("container.id", Str, ALL, |e| opt!(
            e.container,
            |c| S(&c.id)
        )),
        field!("container.runtime", Str, ALL, |e| opt!(e.container, |c| S(
            &c.runtime
        ))),
        field!("container.name", Str, ALL, |e| opt!(e.container, |c| S(
            &c.name
        ))),
        field!("container.privileged", Bool, ALL, |e| e
            .container
            .as_ref()
            .and_then(|c| c.privileged)
            .map_or(Absent, B)),
        field!("container.image.name", Str, ALL, |e| e
            .container
            .as_ref()
            .and_then(|c| c.image.as_ref())
            .map_or(Absent, |i| S(&i.name))),
        field!("k8s.pod.name", Str, ALL, |e| opt!(e.k8s, |k| S(&k
            .pod
            .name))),
        field!("k8s.pod.uid", Str, ALL, |e| opt!(e.k8s, |k| S(&k.pod.uid))),
        field!("k8s.pod.service_account", Str, ALL, |e| opt!(e.k8s, |k| S(
            &k.pod.service_account
        ))),
        field!("k8s.namespace.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .and_then(|k| k.namespace.as_ref())
            .map_or(Absent, |n| S(&n.name))),
        field!("k8s.node.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.node))),
        field!("k8s.container.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.container))),
        field!("k8s.deployment.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.deployment))),
        field!("k8s.replicaset.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.replicaset))),
        field!("k8s.statefulset.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.statefulset))),
        field!("k8s.daemonset.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.daemonset))),
        field!("k8s.job.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.job))),
        field!("k8s.cronjob.name", Str, ALL, |e| e
            .k8s
            .as_ref()
            .map_or(Absent, |k| owner(&k.cronjob))),
        FieldDef {
            name: "k8s.metadata",
            ty: FieldType::Enum(&["resolved", "unresolved"]),
            kinds: ALL,
            get: |e| {
                e.k8s.as_ref().map_or(Absent, |k| {
                    S(match k.metadata {
                        MetadataStatus::Resolved => "resolved",
                        MetadataStatus::Unresolved => "unresolved",
                    })
                })
            },
        },
        field!("syscall.name", Str, ALL, |e| opt!(
            e.syscall,
            |s| S(&s.name)
        )),
        field!("syscall.result", Int, ALL, |e| opt!(e.syscall, |s| I(
            s.result
        ))),
        field!("child.pid", Int, &[K::Fork], |e| opt!(e.child, |c| I(
            i64::from(c.pid)
        ))),
        field!("child.exec_id", Str, &[K::Fork], |e| opt!(e.child, |c| S(
            &c.exec_id
        ))),
        field!("capability.name", Str, &[K::Capability], |e| opt!(
            e.capability,
            |c| S(&c.name)
        )),
        field!("capability.id", Int, &[K::Capability], |e| opt!(
            e.capability,
            |c| I(i64::from(c.id))
        )),
        field!("capability.allowed", Bool, &[K::Capability], |e| opt!(
            e.capability,
            |c| B(c.allowed)
        )),
        field!("capability.init_user_ns", Bool, &[K::Capability], |e| opt!(
            e.capability,
            |c| B(c.init_user_ns)
        )),
        field!(
            "privilege.old.capabilities.effective",
            StrList,
            &[K::PrivilegeChange],
            |e| e
                .privilege
                .as_ref()
                .and_then(|p| p.old.capabilities.as_ref())
                .map_or(Absent, |c| SL(&c.effective))
        ),
        field!(
            "privilege.old.capabilities.permitted",
            StrList,
            &[K::PrivilegeChange],
            |e| e
                .privilege
                .as_ref()
                .and_then(|p| p.old.capabilities.as_ref())
                .map_or(Absent, |c| SL(&c.permitted))
        ),
        field!(
            "privilege.new.capabilities.effective",
            StrList,
            &[K::PrivilegeChange],
            |e| e
                .privilege
                .as_ref()
                .and_then(|p| p.new.capabilities.as_ref())
                .map_or(Absent, |c| SL(&c.effective))
        ),
        field!(
            "privilege.new.capabilities.permitted",
            StrList,
            &[K::PrivilegeChange],
            |e| e
                .privilege
                .as_ref()
                .and_then(|p| p.new.capabilities.as_ref())
                .map_or(Absent, |c| SL(&c.permitted))
        ),
        field!("privilege.args", IntList, &[K::PrivilegeChange], |e| opt!(
            e.privilege,
            |p| FieldValue::Ints(&p.args)
        )),
        field!("mount.source", Str, &[K::Mount], |e| opt!(e.mount, |m| S(
            &m.source
        ))),
        field!("mount.target", Str, &[K::Mount], |e| opt!(e.mount, |m| S(
            &m.target
        ))),
        field!("mount.fstype", Str, &[K::Mount], |e| opt!(e.mount, |m| S(
            &m.fstype
        ))),
        field!("mount.flags", Int, &[K::Mount], |e| opt!(e.mount, |m| I(
            u64i(m.flags)
        ))),
        field!("mount.flag_names", StrList, &[K::Mount], |e| opt!(
            e.mount,
            |m| SL(&m.flag_names)
        )),
        field!("network.transport", Str, NET, |e| opt!(e.network, |n| S(
            &n.transport
        ))),
        field!("network.type", Str, NET, |e| opt!(e.network, |n| S(
            &n.r#type
        ))),
        field!("network.peer.address", Str, NET, |e| e
            .network
            .as_ref()
            .and_then(|n| n.peer.as_ref())
            .map_or(Absent, |p| S(&p.address))),
        field!("network.peer.port", Int, NET, |e| e
            .network
            .as_ref()
            .and_then(|n| n.peer.as_ref())
            .map_or(Absent, |p| I(i64::from(p.port)))),
        field!("network.local.address", Str, NET, |e| e
            .network
            .as_ref()
            .and_then(|n| n.local.as_ref())
            .map_or(Absent, |p| S(&p.address))),
        field!("network.local.port", Int, NET, |e| e
            .network
            .as_ref()
            .and_then(|n| n.local.as_ref())
            .map_or(Absent, |p| I(i64::from(p.port)))),
        field!("namespace.flags", Int, &[K::Namespace], |e| opt!(
            e.namespace,
            |n| I(u64i(n.flags))
        )),
        field!("namespace.types", StrList, &[K::Namespace], |e| opt!(
            e.namespace,
            |n| SL(&n.types)
        )),
        field!("namespace.fd", Int, &[K::Namespace], |e| e
            .namespace
            .as_ref()
            .and_then(|n| n.fd)
            .map_or(Absent, |fd| I(i64::from(fd)))),
        field!("ptrace.request", Str, &[K::Ptrace], |e| opt!(
            e.ptrace,
            |p| S(&p.request)
        )),
        field!("ptrace.request_id", Int, &[K::Ptrace], |e| opt!(
            e.ptrace,
            |p| I(p.request_id)
        )),
        field!("ptrace.target_pid", Int, &[K::Ptrace], |e| opt!(
            e.ptrace,
            |p| I(i64::from(p.target_pid))
        )),
        field!("memfd.name", Str, &[K::Memfd], |e| opt!(e.memfd, |m| S(
            &m.name
        ))),
        field!("memfd.flags", Int, &[K::Memfd], |e| opt!(e.memfd, |m| I(
            i64::from(m.flags)
        ))),
        field!("module.fd", Int, &[K::ModuleLoad], |e| e
            .module
            .as_ref()
            .and_then(|m| m.fd)
            .map_or(Absent, |fd| I(i64::from(fd)))),
        field!("module.params", Str, &[K::ModuleLoad], |e| opt!(
            e.module,
            |m| S(&m.params)
        )),
        field!("bpf.command", Str, &[K::Bpf], |e| opt!(e.bpf, |b| S(
            &b.command
        ))),
        field!("bpf.command_id", Int, &[K::Bpf], |e| opt!(e.bpf, |b| I(
            i64::from(b.command_id)
        ))),
        field!("fd.old", Int, &[K::FdDup], |e| opt!(e.fd, |f| I(
            i64::from(f.old)
        ))),
        field!("fd.new", Int, &[K::FdDup], |e| opt!(e.fd, |f| I(
            i64::from(f.new)
        ))),
        FieldDef {
            name: "fd.old_type",
            ty: FieldType::Enum(FD_TYPES),
            kinds: &[K::FdDup],
            get: |e| opt!(e.fd, |f| S(fd_type_str(f.old_type))),
        },
        FieldDef {
            name: "fd.socket.family",
            ty: FieldType::Enum(SOCKET_FAMILIES),
            kinds: &[K::FdDup],
            get: |e| e.fd.as_ref().map_or(Absent, |f| sock_family(&f.socket)),
        },
        field!("fd.socket.peer.address", Str, &[K::FdDup], |e| e
            .fd
            .as_ref()
            .and_then(|f| sock_peer(&f.socket))
            .map_or(Absent, |p| S(&p.address))),
        field!("fd.socket.peer.port", Int, &[K::FdDup], |e| e
            .fd
            .as_ref()
            .and_then(|f| sock_peer(&f.socket))
            .map_or(Absent, |p| I(i64::from(p.port)))),
        field!("file.path", Str, FILE_KINDS, |e| opt!(e.file, |f| S(
            &f.path
        ))),
        field!("file.flags", Int, &[K::FileOpen], |e| opt!(e.file, |f| I(
            i64::from(f.flags)
        ))),
        field!("file.write", Bool, FILE_KINDS, |e| opt!(e.file, |f| B(
            f.write
        ))),
        field!("file.truncate", Bool, FILE_KINDS, |e| opt!(e.file, |f| B(
            f.truncate
        ))),
        field!("file.create", Bool, FILE_KINDS, |e| opt!(e.file, |f| B(
            f.create
        ))),
        FieldDef {
            name: "file.op",
            ty: FieldType::Enum(CHANGE_OPS),
            kinds: &[K::FileChange],
            get: |e| opt!(e.file_change, |c| S(&c.op)),
        },
        field!("file.target", Str, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.target.as_deref())
            .map_or(Absent, S)),
        field!("file.mode", Int, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.mode)
            .map_or(Absent, |m| I(i64::from(m)))),
        field!("file.setuid", Bool, &[K::FileChange], |e| opt!(
            e.file_change,
            |c| B(c.setuid)
        )),
        field!("file.setgid", Bool, &[K::FileChange], |e| opt!(
            e.file_change,
            |c| B(c.setgid)
        )),
        field!("file.uid", Int, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.uid)
            .map_or(Absent, |v| I(i64::from(v)))),
        field!("file.gid", Int, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.gid)
            .map_or(Absent, |v| I(i64::from(v)))),
        FieldDef {
            name: "file.node_type",
            ty: FieldType::Enum(NODE_TYPES),
            kinds: &[K::FileChange],
            get: |e| {
                e.file_change
                    .as_ref()
                    .and_then(|c| c.node_type.as_deref())
                    .map_or(Absent, S)
            },
        },
        field!("file.device.major", Int, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.device.as_ref())
            .map_or(Absent, |d| I(i64::from(d.major)))),
        field!("file.device.minor", Int, &[K::FileChange], |e| e
            .file_change
            .as_ref()
            .and_then(|c| c.device.as_ref())
            .map_or(Absent, |d| I(i64::from(d.minor)))),
        field!("file.path_truncated", Bool, &[K::FileChange], |e| opt!(
            e.file_change,
            |c| B(c.truncated)
        )),
        field!("socket.family", Str, &[K::RawSocket], |e| opt!(
            e.socket,
            |s| S(&s.family)
        )),
        field!("socket.type", Str, &[K::RawSocket], |e| opt!(
            e.socket,
            |s| S(&s.socket_type)
        )),
        field!("socket.protocol", Int, &[K::RawSocket], |e| opt!(
            e.socket,
            |s| I(s.protocol)
        )),
        field!("summary.kind", Str, &[K::RateSummary], |e| opt!(
            e.summary,
            |s| S(&s.kind)
        )),
        field!("summary.count", Int, &[K::RateSummary], |e| opt!(
            e.summary,
            |s| I(u64i(s.count))
        )),
        field!("summary.window_ms", Int, &[K::RateSummary], |e| opt!(
            e.summary,
            |s| I(u64i(s.window_ms))
        )),
        field!("lost.kind", Str, &[K::EventsLost], |e| opt!(e.lost, |l| S(
            &l.kind
        ))),
        field!("lost.count", Int, &[K::EventsLost], |e| opt!(
            e.lost,
            |l| I(u64i(l.count))
        )),
        field!("lost.reason", Str, &[K::EventsLost], |e| opt!(
            e.lost,
            |l| S(&l.reason)
        )),
        field!("containment.action", Str, &[K::Containment], |e| opt!(
            e.containment,
            |c| S(&c.action)
        )),
        field!("containment.outcome", Str, &[K::Containment], |e| opt!(
            e.containment,
            |c| S(&c.outcome)
        )),
        field!("containment.trigger", Str, &[K::Containment], |e| opt!(
            e.containment,
            |c| S(&c.trigger)
        )),
    ];
    v.extend(CRED_FIELDS);
    v
});

/// The table, for `picket rules fields` and documentation.
pub fn table() -> &'static [FieldDef] {
    &FIELDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Event, EventKindName};

    #[test]
    fn every_name_is_unique_and_resolves() {
        let mut names: Vec<_> = names().collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(resolve("process.pid").is_some());
        assert!(resolve("proces.pid").is_none());
        assert!(resolve("k8s.pod.labels.app").is_some());
        assert!(resolve("k8s.pod.labels.").is_none());
    }

    #[test]
    fn kind_names_match_the_model() {
        let model: Vec<&str> = EventKindName::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(model, KIND_NAMES);
    }

    #[test]
    fn accessors_read_the_event() {
        let mut ev = Event::new(EventKindName::Exec, jiff::Timestamp::UNIX_EPOCH);
        let get = |ev: &Event, name: &str| {
            let mut s = String::new();
            resolve(name).expect(name).accessor.get(ev).render(&mut s);
            s
        };
        assert_eq!(get(&ev, "container.id"), "<none>");
        ev.container = Some(Container {
            id: "abc".into(),
            ..Default::default()
        });
        ev.process.command_args = vec!["a".into(), "b".into()];
        ev.process.pid = 42;
        assert_eq!(get(&ev, "container.id"), "abc");
        assert_eq!(get(&ev, "process.command_args"), "a b");
        assert_eq!(get(&ev, "process.pid"), "42");
        assert_eq!(get(&ev, "event.kind"), "exec");
        assert_eq!(get(&ev, "process.stdio.stdin"), "unknown");
    }

    #[test]
    fn tool_identity_from_argv0_and_busybox() {
        let mut ev = Event::new(EventKindName::Exec, jiff::Timestamp::UNIX_EPOCH);
        let get = |ev: &Event, name: &str| {
            let mut s = String::new();
            resolve(name).expect(name).accessor.get(ev).render(&mut s);
            s
        };
        let set = |ev: &mut Event, exe: &str, args: &[&str]| {
            ev.process.executable.name = exe.into();
            ev.process.command_args = args.iter().map(|a| a.to_string()).collect();
        };
        set(&mut ev, "nc.openbsd", &["/usr/bin/nc", "-l", "4444"]);
        assert_eq!(get(&ev, "process.argv0_name"), "nc");
        assert_eq!(get(&ev, "process.busybox_applet"), "<none>");
        set(&mut ev, "busybox", &["busybox", "nc", "-l", "-p", "1"]);
        assert_eq!(get(&ev, "process.busybox_applet"), "nc");
        set(&mut ev, "busybox", &["/bin/nc", "-l"]);
        assert_eq!(get(&ev, "process.busybox_applet"), "nc");
        set(&mut ev, "busybox", &["busybox", "--help"]);
        assert_eq!(get(&ev, "process.busybox_applet"), "<none>");
        set(&mut ev, "busybox", &[]);
        assert_eq!(get(&ev, "process.argv0_name"), "");
        assert_eq!(get(&ev, "process.busybox_applet"), "<none>");
    }
}
