//! The sections of an event (`process`, `container`, `k8s`, `network`, ...).
//!
//! Numbers that are ids (uids, pids, ports) are integers; capabilities and
//! flags are exported both raw and as names so rules can use either.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// `process.executable.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executable {
    /// Full path of the executable file (as seen in the process's mount namespace).
    #[serde(default)]
    pub path: String,
    /// Base name of `path`.
    #[serde(default)]
    pub name: String,
    /// In a container: the file was created or modified after the
    /// container started (its pid 1), i.e. it is not from the image. Absent
    /// for host processes and when unknown (the process was already gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_after_container_start: Option<bool>,
}

/// Directories of the system's own shared libraries: a library preloaded
/// from below them was installed with the system or image (writing there
/// needs root and is itself watched by the file rules).
pub const SYSTEM_LIBRARY_DIRS: &[&str] = &[
    "/lib/",
    "/lib64/",
    "/lib32/",
    "/usr/lib/",
    "/usr/lib64/",
    "/usr/lib32/",
];

impl ProcessEnv {
    /// The entries of `LD_PRELOAD` as the dynamic loader splits them
    /// (on spaces and colons).
    pub fn ld_preload_libs(&self) -> impl Iterator<Item = &str> {
        self.ld_preload
            .as_deref()
            .unwrap_or_default()
            .split([' ', ':'])
            .filter(|l| !l.is_empty())
    }

    /// Whether any `LD_PRELOAD` entry is not an absolute path below
    /// [`SYSTEM_LIBRARY_DIRS`] (a relative path, a bare name searched in
    /// `LD_LIBRARY_PATH`, or a path with `..` counts as outside); `None`
    /// when `LD_PRELOAD` is not set or empty.
    pub fn ld_preload_outside_system_dirs(&self) -> Option<bool> {
        let mut libs = self.ld_preload_libs().peekable();
        libs.peek()?;
        Some(libs.any(|l| {
            l.split('/').any(|c| c == "..") || !SYSTEM_LIBRARY_DIRS.iter().any(|d| l.starts_with(d))
        }))
    }
}

/// `process.env.*`: the environment variables of a new program that
/// matter to detection (exec events only), captured by the kernel at exec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessEnv {
    /// `LD_PRELOAD`; absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ld_preload: Option<String>,
    /// `LD_LIBRARY_PATH`; absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ld_library_path: Option<String>,
    /// The kernel's bounded scan could not see the whole environment (more
    /// than 128 variables, or a value longer than 255 bytes) and `/proc`
    /// could not complete it: an unset variable above may be set.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// `process.user`, `process.group`, ...: a numeric id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Id {
    pub id: u32,
}

/// `process.user`, `process.login_user`: a numeric user id and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: u32,
    /// The name of `id` in the passwd database the process sees (its
    /// container's `/etc/passwd`, the host's otherwise), or the id in decimal
    /// when that database has no entry for it. Absent when the agent did not
    /// resolve it (events replayed from files, processes not identified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Arc<str>>,
}

/// `process.capabilities.*`: capability names (`CAP_SYS_ADMIN`, ...).
///
/// The lists are shared (`Arc`): the same few masks recur on every event, and
/// copying them per event dominated the cost of building one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default)]
    pub effective: Arc<[String]>,
    #[serde(default)]
    pub permitted: Arc<[String]>,
}

/// What a standard fd of the process refers to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdType {
    #[default]
    Unknown,
    Closed,
    Tty,
    CharDevice,
    Socket,
    Pipe,
    File,
    Directory,
    Other,
}

/// `process.stdio.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stdio {
    #[serde(default)]
    pub stdin: FdType,
    #[serde(default)]
    pub stdout: FdType,
    #[serde(default)]
    pub stderr: FdType,
    /// Exec events whose stdin is a socket: which kind (a reverse shell's
    /// is `inet`/`inet6`; Node.js and sshd children get `unix` socketpairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_socket: Option<SocketInfo>,
    /// The same for stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_socket: Option<SocketInfo>,
}

/// What a socket fd is (`process.stdio.stdin_socket.*`, `fd.socket.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketInfo {
    /// `unix`, `inet`, `inet6`, `other` (netlink, packet, ...), or `unknown`
    /// when the process or fd was gone before the agent looked.
    pub family: String,
    /// The connected peer of an inet socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Endpoint>,
}

impl SocketInfo {
    /// The family could not be determined (process or fd gone).
    pub fn unknown() -> Self {
        Self {
            family: "unknown".into(),
            peer: None,
        }
    }
}

/// `process.linux.*`: kernel identifiers of the process's namespaces and cgroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxInfo {
    /// cgroup v2 path relative to the cgroup root (`/kubepods.slice/...`).
    #[serde(default)]
    pub cgroup: String,
    #[serde(default)]
    pub cgroup_id: u64,
    #[serde(default)]
    pub pid_ns: u32,
    #[serde(default)]
    pub pid_ns_level: u32,
    #[serde(default)]
    pub mnt_ns: u32,
}

/// `process.exit.*`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatus {
    /// Exit code passed to exit(2) (0 when killed by a signal).
    pub code: i32,
    /// Signal that killed the process (0 when it exited normally).
    #[serde(default)]
    pub signal: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub core_dumped: bool,
}

/// A short description of an ancestor (`process.ancestors[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ancestor {
    pub exec_id: String,
    pub pid: u32,
    #[serde(default)]
    pub executable: Executable,
    #[serde(default)]
    pub command_line: String,
}

/// `process.*`: the acting process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Unique id of this process (node, start time, pid), stable for its lifetime.
    #[serde(default)]
    pub exec_id: String,
    #[serde(default)]
    pub pid: u32,
    /// Pid inside the process's own pid namespace (1 = a container's init).
    #[serde(default)]
    pub vpid: u32,
    #[serde(default)]
    pub parent_pid: u32,
    /// The parent's pid as seen from the process's pid namespace: 0 when the
    /// parent lives outside it (how `kubectl exec` looks from inside).
    #[serde(default)]
    pub parent_vpid: u32,
    #[serde(default)]
    pub parent_exec_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(default)]
    pub executable: Executable,
    /// Arguments joined by spaces.
    #[serde(default)]
    pub command_line: String,
    #[serde(default)]
    pub command_args: Vec<String>,
    /// argv was longer than the kernel captures (16 args / 1 KiB) and
    /// `/proc/<pid>/cmdline` could not complete it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub args_truncated: bool,
    /// `executable.path` is only the deepest part of the path: the kernel's
    /// walk stopped below the root (more than 32 directories) and
    /// `/proc/<pid>/exe` could not complete it (the process was gone).
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable_truncated: bool,
    #[serde(default)]
    pub working_directory: String,
    /// exec events: the first operand of the command line (the script a
    /// shell or interpreter runs: `sh x`, `python3 ./x.py`), resolved
    /// against `working_directory` and normalized. Absent when the program
    /// is given inline (`-c`, `-e`, `-m`) or there is no operand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_path: Option<String>,
    /// exec events of curl and wget: the files the command line tells them
    /// to write (`-o`, `-O`, wget's default name, `-P`), resolved against
    /// `working_directory` (see `pipeline::argpaths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub download_outputs: Vec<String>,
    /// exec events: `LD_PRELOAD` and `LD_LIBRARY_PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<ProcessEnv>,
    /// Effective user.
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub real_user: Id,
    #[serde(default)]
    pub saved_user: Id,
    #[serde(default)]
    pub group: Id,
    #[serde(default)]
    pub real_group: Id,
    #[serde(default)]
    pub saved_group: Id,
    /// Audit login uid (u32::MAX when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_user: Option<User>,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// stdin is a terminal.
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub stdio: Stdio,
    /// In a container: whether the process descends from the container's init
    /// (pid 1 of its pid namespace). `false` for sessions entered from outside
    /// (`kubectl exec`); absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_init_tree: Option<bool>,
    /// In a container: the parent process is in another cgroup (the process
    /// is the container's init, or a session a runtime started in it from
    /// outside). Absent on the host and when the parent is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_outside_cgroup: Option<bool>,
    #[serde(default)]
    pub linux: LinuxInfo,
    /// `exit` events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Nearest first, bounded (configurable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Arc<Ancestor>>,
}

/// `thread.*`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thread {
    pub id: u32,
}

/// `child.*` (fork events).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildProcess {
    pub pid: u32,
    #[serde(default)]
    pub exec_id: String,
}

/// `container.image.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(default)]
    pub name: String,
}

/// `container.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// Full 64-hex container id.
    pub id: String,
    /// `containerd`, `cri-o`, `docker`, `podman`.
    #[serde(default)]
    pub runtime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The container runs privileged (`securityContext.privileged` in its
    /// pod spec). Absent when unknown: no pod metadata from the Kubernetes
    /// API (host mode, pod not resolved yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// A named Kubernetes object (`k8s.pod.name`, `k8s.deployment.name`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub name: String,
}

/// `k8s.pod.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// `k8s.namespace.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sNamespace {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Whether pod metadata was resolved from the Kubernetes API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataStatus {
    /// Name, namespace and workload come from the API server's pod object.
    Resolved,
    /// Only the pod UID (from the cgroup path) is known.
    #[default]
    Unresolved,
}

/// `k8s.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8s {
    pub pod: Pod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<K8sNamespace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicaset: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemonset: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cronjob: Option<Named>,
    #[serde(default)]
    pub metadata: MetadataStatus,
    /// Milliseconds the event was held back waiting for its pod's metadata
    /// (present only when it waited): the event was parked while later
    /// events of known pods went on, so it may arrive after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_wait_ms: Option<u64>,
}

/// `syscall.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Syscall {
    pub name: String,
    /// Return value (negative errno on failure).
    #[serde(default)]
    pub result: i64,
}

/// `capability.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityUse {
    /// `CAP_SYS_ADMIN`, ...
    pub name: String,
    pub id: u32,
    /// The check succeeded.
    pub allowed: bool,
    /// Checked against the initial user namespace (real host privilege).
    #[serde(default)]
    pub init_user_ns: bool,
}

/// A set of credential ids (`privilege.old.*`, `privilege.new.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredSet {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// `privilege.*`: credentials before and after a set*id/capset call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegeChange {
    pub old: CredSet,
    pub new: CredSet,
    /// Arguments as passed (e.g. `[0]` for setuid(0), `[-1, 0, -1]` for setresuid).
    #[serde(default)]
    pub args: Vec<i64>,
}

/// `mount.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountOp {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub fstype: String,
    #[serde(default)]
    pub flags: u64,
    /// `MS_BIND`, `MS_RDONLY`, ... (or `MNT_DETACH` for umount2).
    #[serde(default)]
    pub flag_names: Vec<String>,
}

/// `network.*`: follows OpenTelemetry's `network.*` attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `tcp`, `udp`, `unix`, `raw`, ...
    #[serde(default)]
    pub transport: String,
    /// `ipv4`, `ipv6`, `unix`.
    #[serde(default)]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Endpoint>,
}

/// An address and port (`network.peer.address`, `network.peer.port`).
/// For unix sockets `address` is the socket path and `port` is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: String,
    #[serde(default)]
    pub port: u16,
}

/// `namespace.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOp {
    /// Raw CLONE_NEW* flags (unshare) or nstype (setns).
    pub flags: u64,
    /// `mnt`, `pid`, `net`, `uts`, `ipc`, `user`, `cgroup`, `time`.
    #[serde(default)]
    pub types: Vec<String>,
    /// setns: the fd argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
}

/// `ptrace.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtraceOp {
    /// `PTRACE_ATTACH`, `PTRACE_SEIZE`, `PTRACE_POKETEXT`, ...
    pub request: String,
    pub request_id: i64,
    pub target_pid: u32,
}

/// `memfd.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemfdOp {
    pub name: String,
    #[serde(default)]
    pub flags: u32,
}

/// `module.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleOp {
    /// finit_module: the fd; init_module: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default)]
    pub params: String,
}

/// `bpf.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpfOp {
    /// `BPF_PROG_LOAD`, `BPF_MAP_CREATE`, ...
    pub command: String,
    pub command_id: u32,
}

/// `fd.*`: dup2/dup3 onto a standard fd.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdDup {
    pub old: i32,
    pub new: i32,
    /// What `old` refers to (a socket for a reverse shell).
    #[serde(default)]
    pub old_type: FdType,
    /// For a socket duplicated onto fd 0-2: its family and peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketInfo>,
}

/// `file.*`: an open of a monitored path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccess {
    /// The path as passed to open (absolute when the caller passed one).
    pub path: String,
    /// Raw open flags.
    #[serde(default)]
    pub flags: u32,
    /// Opened for writing (O_WRONLY or O_RDWR).
    #[serde(default)]
    pub write: bool,
    #[serde(default)]
    pub truncate: bool,
    #[serde(default)]
    pub create: bool,
    /// `path` with `.` and `..` segments and repeated `/` resolved
    /// lexically (symlinks are not followed), when that differs from
    /// `path`: `/var/www/../../etc/shadow` -> `/etc/shadow`. Absolute paths
    /// only. Falco's `fd.name` is this form; directory-traversal rules
    /// compare it with the raw `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
}

impl FileAccess {
    /// The lexical normal form of an absolute `path`, if it differs from it
    /// (`None` for relative paths and paths already normal). `..` at the
    /// root stays at the root, as the kernel resolves it.
    pub fn normalize(path: &str) -> Option<String> {
        if !path.starts_with('/') {
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        let mut out = String::with_capacity(path.len());
        for p in &parts {
            out.push('/');
            out.push_str(p);
        }
        if out.is_empty() {
            out.push('/');
        }
        (out != path).then_some(out)
    }

    /// The normalized path if there is one, else `path`.
    pub fn name(&self) -> &str {
        self.normalized_path.as_deref().unwrap_or(&self.path)
    }
}

/// `file.*` fields of a `file_change` event beyond the path: what was done
/// and with which arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChange {
    /// `unlink`, `rename`, `chmod`, `chown`, `link`, `symlink`, `mknod`,
    /// `truncate` (the syscall itself is in `syscall.name`).
    pub op: String,
    /// The second path: rename/link: the new name (`file.path` is the old
    /// name / the existing file); symlink: the link's target text
    /// (`file.path` is the link created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// chmod: the new mode; mknod: type and permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// chmod sets the setuid bit.
    #[serde(default)]
    pub setuid: bool,
    /// chmod sets the setgid bit.
    #[serde(default)]
    pub setgid: bool,
    /// chown: the new owner and group (absent: left unchanged, -1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// mknod: `block`, `char`, `fifo`, `socket` or `regular`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<String>,
    /// mknod of a device: major and minor number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceNumber>,
    /// truncate: the new length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<i64>,
    /// fchmod/fchown: the fd operated on (there is no path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// A path was longer than the kernel's 255-byte capture and is cut.
    #[serde(default)]
    pub truncated: bool,
}

/// A device number as `mknod(2)` takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

/// `socket.*`: a packet or raw socket created (`raw_socket`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketOp {
    /// `packet`, `inet`, `inet6`, or the `AF_*` number.
    pub family: String,
    /// `raw`, `dgram`, `stream`, or the `SOCK_*` number.
    #[serde(rename = "type")]
    pub socket_type: String,
    /// The protocol argument (`IPPROTO_*`, or for packet sockets the
    /// ethertype in network byte order as passed).
    pub protocol: i64,
}

/// `summary.*`: events of one kind that the kernel counted instead of sending.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSummary {
    pub kind: String,
    pub count: u64,
    pub window_ms: u64,
}

/// `lost.*`: events that never reached userspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsLost {
    /// Event kind that was lost (`exec`, ...).
    pub kind: String,
    /// Lost since the previous `events_lost` record for this kind and reason.
    pub count: u64,
    /// `ringbuf_full`, `decode_error`, ...
    pub reason: String,
}

/// `containment.*`: the audit record of one containment action (what was
/// done, to what, on whose request, and how it ended).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainmentAudit {
    /// Record id, unique per agent run (`<node>:<counter>`).
    pub id: String,
    /// `kill-process`, `kill-container`, `block-egress`, `isolate-pod`, `delete-pod`.
    pub action: String,
    /// `succeeded`, `dry_run`, `refused`, `failed`.
    pub outcome: String,
    #[serde(default)]
    pub dry_run: bool,
    /// This record lifts an earlier action (`picket release`).
    #[serde(default)]
    pub release: bool,
    /// What was (or would have been) done, or why not.
    pub message: String,
    /// Machine-readable refusal reason (`protected_namespace`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// `rule`, `kernel` or `client`.
    pub trigger: String,
    /// The rule that requested the action (rule and kernel triggers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// Sequence number of the alert that requested it (rule trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_seq: Option<u64>,
    /// Authenticated identity of the responder (client trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The responder's or rule's reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human description of the target (`pod ns/name container abc pid 42`).
    pub target: String,
}

#[cfg(test)]
mod env_tests {
    use super::ProcessEnv;

    fn outside(v: &str) -> Option<bool> {
        ProcessEnv {
            ld_preload: Some(v.into()),
            ..Default::default()
        }
        .ld_preload_outside_system_dirs()
    }

    #[test]
    fn ld_preload_entries_outside_the_system_library_dirs() {
        assert_eq!(outside(""), None);
        assert_eq!(outside(" : "), None);
        assert_eq!(
            outside("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            Some(false)
        );
        assert_eq!(
            outside("/lib/a.so /usr/lib64/b.so:/lib32/c.so"),
            Some(false)
        );
        assert_eq!(outside("/usr/lib/a.so:/tmp/evil.so"), Some(true));
        assert_eq!(outside("/usr/lib/../../tmp/x.so"), Some(true));
        assert_eq!(outside("libhook.so"), Some(true));
        assert_eq!(outside("/usr/libexec/x.so"), Some(true));
    }
}
