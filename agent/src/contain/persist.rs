//! Containment state that outlives the agent process: egress blocks.
//!
//! A block is a set of BPF links (one per `cgroup_sock_addr` hook) on a
//! cgroup. A link lives as long as something references it; the agent's fd
//! alone would detach the programs when the agent exits (crash, upgrade,
//! SIGTERM). So every link is also **pinned** in a picket-owned bpffs
//! directory (`pin_dir`, default `/sys/fs/bpf/picket/containment`): the pin
//! keeps the program attached while no agent runs, and the old program
//! keeps its own maps (its policy) alive. No window opens at a restart.
//!
//! What the block was for (the request: pod, trigger, reason, scope) cannot
//! live in bpffs, so it is recorded in `state_dir/egress-blocks.json`
//! (written atomically) **before** the links are pinned, and removed
//! **before** they are unpinned. A crash between the two steps leaves a
//! record without pins (re-applied at start) or pins without a record
//! (removed at start as stale), so both orders converge on what the agent
//! last reported.
//!
//! Pin names: `egress-<cgroup id>-<hook>-<generation>` (bpffs rejects dots);
//! the generation is the start time of the agent that pinned them, so a new
//! agent can attach its own links before it unpins the old ones.

use std::{
    ffi::CString,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::action::{ActionRequest, EgressScope};

/// Where the persistent state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistConfig {
    /// bpffs directory for pinned links (picket-owned: everything in it that
    /// matches the pin naming is Picket's).
    pub pin_dir: PathBuf,
    /// Directory of `egress-blocks.json`.
    pub state_dir: PathBuf,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/picket/containment";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/picket/containment";
const STATE_FILE: &str = "egress-blocks.json";
const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` (uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not on a bpffs mount (pinned links need one)")]
    NotBpffs(PathBuf),
    #[error(
        "another running agent holds {0} (one agent per state directory; pins and records are left to it)"
    )]
    Busy(PathBuf),
    #[error("state file {path} is unreadable ({source}); pinned blocks are kept as they are")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One recorded block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// Inode of the cgroup directory (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub path: PathBuf,
    pub scope: EgressScope,
    /// The request that placed the block (absent for blocks placed
    /// directly through the enforcer, e.g. by tests).
    #[serde(default)]
    pub request: Option<ActionRequest>,
    pub placed_at: jiff::Timestamp,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    blocks: Vec<BlockRecord>,
}

/// A pinned link found in the pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub cgroup_id: u64,
    pub hook: String,
    pub generation: u64,
    pub path: PathBuf,
}

/// The pin directory and the state file.
#[derive(Debug)]
pub struct Store {
    cfg: PersistConfig,
    /// This agent's pin generation.
    generation: u64,
    /// `state_dir/lock`, flocked for the agent's lifetime: a second agent
    /// on the same directories (a surge during a rollout, a test) would
    /// otherwise take over or remove the first one's live blocks.
    _lock: Option<std::fs::File>,
}

/// Takes `dir/lock` exclusively, without waiting.
fn lock_dir(dir: &Path) -> Result<std::fs::File, PersistError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening", &path))?;
    // SAFETY: flock(2) on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(PersistError::Busy(dir.to_path_buf()));
        }
        return Err(io("locking", &path)(e));
    }
    Ok(f)
}

impl Store {
    /// Opens the store: mounts bpffs at `/sys/fs/bpf` when the pin
    /// directory is below it and nothing is mounted there, creates both
    /// directories, and checks that the pin directory is on bpffs.
    pub fn open(cfg: PersistConfig) -> Result<Self, PersistError> {
        if cfg.pin_dir.starts_with(BPFFS) && !is_bpffs(Path::new(BPFFS)) {
            mount_bpffs(Path::new(BPFFS))?;
            tracing::info!(path = BPFFS, "bpffs mounted (it was not)");
        }
        std::fs::create_dir_all(&cfg.pin_dir).map_err(io("creating", &cfg.pin_dir))?;
        if !is_bpffs(&cfg.pin_dir) {
            return Err(PersistError::NotBpffs(cfg.pin_dir));
        }
        std::fs::create_dir_all(&cfg.state_dir).map_err(io("creating", &cfg.state_dir))?;
        let lock = lock_dir(&cfg.state_dir)?;
        let generation = jiff::Timestamp::now().as_nanosecond().max(0) as u64;
        Ok(Self {
            cfg,
            generation,
            _lock: Some(lock),
        })
    }

    pub fn config(&self) -> &PersistConfig {
        &self.cfg
    }

    fn state_path(&self) -> PathBuf {
        self.cfg.state_dir.join(STATE_FILE)
    }

    /// The recorded blocks (none when the file does not exist).
    pub fn load(&self) -> Result<Vec<BlockRecord>, PersistError> {
        load(&self.state_path())
    }

    /// Replaces the recorded blocks (write to a temporary file, fsync,
    /// rename: a crash leaves the old or the new list, never half of one).
    pub fn save(&self, blocks: &[BlockRecord]) -> Result<(), PersistError> {
        use std::io::Write;
        let path = self.state_path();
        let tmp = self.cfg.state_dir.join(format!("{STATE_FILE}.tmp"));
        let body = serde_json::to_vec_pretty(&StateFile {
            version: 1,
            blocks: blocks.to_vec(),
        })
        .map_err(|e| PersistError::Io {
            what: "encoding",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io("writing", &tmp))?;
        f.write_all(&body).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
        if let Ok(d) = std::fs::File::open(&self.cfg.state_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Pins `link` as the `hook` link of cgroup `cgroup_id` (this agent's
    /// generation).
    pub fn pin(
        &self,
        link: &impl std::os::fd::AsRawFd,
        cgroup_id: u64,
        hook: &str,
    ) -> Result<PathBuf, PersistError> {
        let path = self
            .cfg
            .pin_dir
            .join(format!("egress-{cgroup_id}-{hook}-{}", self.generation));
        obj_pin(link.as_raw_fd(), &path).map_err(io("pinning", &path))?;
        Ok(path)
    }

    /// Every pin in the directory that follows the naming; other entries
    /// are left alone (and logged).
    pub fn pins(&self) -> Result<Vec<Pin>, PersistError> {
        pins(&self.cfg.pin_dir)
    }
}

fn load(path: &Path) -> Result<Vec<BlockRecord>, PersistError> {
    let body = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let f: StateFile = serde_json::from_slice(&body).map_err(|source| PersistError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(f.blocks)
}

/// Parses `egress-<cgroup id>-<hook>-<generation>`.
pub fn parse_pin_name(name: &str) -> Option<(u64, String, u64)> {
    let rest = name.strip_prefix("egress-")?;
    let (id, rest) = rest.split_once('-')?;
    let (hook, generation) = rest.rsplit_once('-')?;
    if hook.is_empty() || !hook.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((id.parse().ok()?, hook.to_string(), generation.parse().ok()?))
}

fn pins(dir: &Path) -> Result<Vec<Pin>, PersistError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io("listing", dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_pin_name) {
            Some((cgroup_id, hook, generation)) => out.push(Pin {
                cgroup_id,
                hook,
                generation,
                path: entry.path(),
            }),
            None => {
                tracing::warn!(path = %entry.path().display(), "unknown entry in the containment pin directory left alone")
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Removes a pin; the link detaches once nothing references it. The
/// kernel drops a pin's reference in a deferred work item, so the link is
/// opened first and its fd closed last: the final reference then goes
/// synchronously, and the block is lifted when this returns.
pub fn unpin(path: &Path) -> Result<(), PersistError> {
    let held = obj_get(path).ok();
    let r = match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("unpinning", path)(e)),
    };
    drop(held);
    r
}

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fd = bpf_obj(BPF_OBJ_GET, &c, 0)?;
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn obj_pin(fd: i32, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    bpf_obj(BPF_OBJ_PIN, &c, fd as u32).map(|_| ())
}

/// `bpf(BPF_OBJ_PIN | BPF_OBJ_GET)`.
fn bpf_obj(cmd: libc::c_long, path: &CString, fd: u32) -> std::io::Result<i32> {
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        /// path_fd and the rest of `union bpf_attr` the command may read.
        _rest: [u64; 4],
    }
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd,
        file_flags: 0,
        _rest: [0; 4],
    };
    // SAFETY: bpf(2) with a zero-padded attribute struct and a NUL-terminated
    // path, both alive across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ObjAttr,
            std::mem::size_of::<ObjAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as i32)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) into a zeroed struct that lives across the call.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs(at: &Path) -> Result<(), PersistError> {
    std::fs::create_dir_all(at).map_err(io("creating", at))?;
    let target = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| io("mounting bpffs at", at)(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: mount(2) with NUL-terminated strings alive across the call.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io("mounting bpffs at", at)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What [`purge`] removed.
#[derive(Debug, Default)]
pub struct Purged {
    pub pins: Vec<PathBuf>,
    pub records: usize,
}

/// Removes every Picket pin in `cfg.pin_dir` (lifting the blocks of agents
/// that are no longer running) and the state file: the uninstall step.
/// Entries that do not follow the pin naming are left alone.
pub fn purge(cfg: &PersistConfig) -> Result<Purged, PersistError> {
    let mut out = Purged::default();
    // Never under a running agent (it would re-pin nothing, but its blocks
    // would stay until it exits and its records would be rewritten).
    let lock = match lock_dir(&cfg.state_dir) {
        Ok(l) => Some(l),
        Err(PersistError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        Err(e) => return Err(e),
    };
    let state = cfg.state_dir.join(STATE_FILE);
    out.records = match load(&state) {
        Ok(r) => r.len(),
        Err(PersistError::Corrupt { .. }) => 0,
        Err(e) => return Err(e),
    };
    for p in pins(&cfg.pin_dir)? {
        unpin(&p.path)?;
        out.pins.push(p.path);
    }
    match std::fs::remove_file(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing", &state)(e)),
    }
    // Empty directories go too (a non-empty one keeps foreign entries).
    if lock.is_some() {
        let _ = std::fs::remove_file(cfg.state_dir.join("lock"));
    }
    drop(lock);
    let _ = std::fs::remove_dir(&cfg.pin_dir);
    let _ = std::fs::remove_dir(&cfg.state_dir);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip_and_reject_others() {
        assert_eq!(
            parse_pin_name("egress-4242-connect4-1733240000123"),
            Some((4242, "connect4".into(), 1733240000123))
        );
        assert_eq!(parse_pin_name("egress-x-connect4-1"), None);
        assert_eq!(parse_pin_name("egress-1--1"), None);
        assert_eq!(parse_pin_name("egress-1-con-nect-1"), None);
        assert_eq!(parse_pin_name("maps"), None);
        assert_eq!(parse_pin_name("egress-1-connect4-"), None);
    }

    #[test]
    fn state_file_round_trips_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            cfg: PersistConfig {
                pin_dir: dir.path().join("pins"),
                state_dir: dir.path().to_path_buf(),
            },
            generation: 1,
            _lock: None,
        };
        assert_eq!(store.load().unwrap(), Vec::new());
        let rec = BlockRecord {
            cgroup_id: 7,
            path: "/sys/fs/cgroup/a".into(),
            scope: EgressScope::AllExceptDns { resolvers: vec![] },
            request: None,
            placed_at: jiff::Timestamp::UNIX_EPOCH,
        };
        store.save(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(store.load().unwrap(), vec![rec]);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            store.load().unwrap_err(),
            PersistError::Corrupt { .. }
        ));
        // A running agent holds the lock: purge refuses.
        let held = lock_dir(dir.path()).unwrap();
        assert!(matches!(
            purge(store.config()).unwrap_err(),
            PersistError::Busy(_)
        ));
        drop(held);
        let purged = purge(store.config()).unwrap();
        assert_eq!((purged.pins.len(), purged.records), (0, 0));
        assert!(!dir.path().join(STATE_FILE).exists());
    }
}
