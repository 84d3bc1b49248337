//! cgroup id -> cgroup v2 path.
//!
//! The kernel tags each event with `bpf_get_current_cgroup_id()`, which is
//! the inode number of the task's cgroup v2 directory. An unknown id is
//! looked up on the spot by file handle (see [`super::handle`]): the first
//! event of a brand-new or short-lived container is attributed without
//! waiting for a walk. Results are cached. Where the kernel refuses handle
//! lookups, a miss triggers a walk of the hierarchy at most once per
//! interval, so a flood of unknown ids cannot keep the agent walking
//! directories.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::{Duration, Instant},
};

// foldhash, not SipHash: keyed by cgroup inode numbers, which the kernel
// assigns; looked up for every event.
use foldhash::{HashMap, HashMapExt};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tracing::{debug, warn};

use super::handle::{HandleLookup, HandleOpener};

/// Errors of cgroup discovery and lookups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup2 filesystem is mounted (checked {0}); Picket needs the cgroup v2 hierarchy")]
    NoCgroup2(String),
    #[error("{0} has no usable cgroup line")]
    NoCgroupLine(String),
}

struct Metrics {
    misses: Counter,
    lookups: Counter,
    rescans: Counter,
    entries: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    misses: crate::metrics::register(
        "cgroup_resolver_misses",
        "cgroup ids that could not be mapped to a path (unknown even after a rescan, or rescan rate-limited)",
        Counter::default(),
    ),
    lookups: crate::metrics::register(
        "cgroup_resolver_handle_lookups",
        "Unknown cgroup ids resolved on the spot by kernfs file handle (no walk)",
        Counter::default(),
    ),
    rescans: crate::metrics::register(
        "cgroup_resolver_rescans",
        "Walks of the cgroup v2 hierarchy triggered by unknown cgroup ids",
        Counter::default(),
    ),
    entries: crate::metrics::register(
        "cgroup_resolver_entries",
        "cgroup ids currently cached by the resolver",
        Gauge::default(),
    ),
});

/// Bounds of one walk of the hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimits {
    /// Directory levels below the root (kubelet paths are 4-5 deep,
    /// rootless podman about 7).
    pub max_depth: usize,
    /// Cgroups recorded per walk, and entries kept in the cache.
    pub max_entries: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_entries: 100_000,
        }
    }
}

/// Counters of one resolver (the process-wide metrics sum all resolvers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub hits: u64,
    pub misses: u64,
    /// Unknown ids resolved on the spot by file handle.
    pub handle_lookups: u64,
    pub rescans: u64,
    /// Rescans that stopped at [`ScanLimits`] before the whole tree.
    pub truncated_scans: u64,
}

/// Maps cgroup ids to paths relative to the cgroup v2 root (`/` for the
/// root itself, `/kubepods.slice/...` below it).
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    cache: HashMap<u64, String>,
    limits: ScanLimits,
    min_rescan_interval: Duration,
    last_rescan: Option<Instant>,
    stats: ResolverStats,
    /// `None` when `root` is not a cgroup2 mount or the kernel refused a
    /// handle lookup (then only walks find new cgroups).
    opener: Option<HandleOpener>,
}

/// Default minimum time between two miss-triggered rescans.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

impl CgroupResolver {
    /// Finds the cgroup v2 mount from `/proc/self/mountinfo`
    /// (`/sys/fs/cgroup` on a v2-only node, `/sys/fs/cgroup/unified` on a
    /// hybrid host).
    pub fn detect() -> Result<Self, CgroupError> {
        Self::detect_from(Path::new("/proc/self/mountinfo"))
    }

    /// Like [`detect`](Self::detect), reading the given mountinfo file.
    pub fn detect_from(mountinfo: &Path) -> Result<Self, CgroupError> {
        let text = std::fs::read_to_string(mountinfo).map_err(|source| CgroupError::Io {
            path: mountinfo.display().to_string(),
            source,
        })?;
        let root = find_cgroup2_mount(&text)
            .ok_or_else(|| CgroupError::NoCgroup2(mountinfo.display().to_string()))?;
        Ok(Self::with_root(root))
    }

    /// A resolver for a known cgroup v2 root (tests, `--cgroup-root`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let opener = HandleOpener::open(&root);
        if opener.is_none() {
            debug!(root = %root.display(), "not a cgroup2 mount: unknown cgroup ids are found by walks only");
        }
        Self {
            root,
            opener,
            cache: HashMap::new(),
            limits: ScanLimits::default(),
            min_rescan_interval: DEFAULT_RESCAN_INTERVAL,
            last_rescan: None,
            stats: ResolverStats::default(),
        }
    }

    pub fn with_limits(mut self, limits: ScanLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Minimum time between two rescans triggered by misses.
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.min_rescan_interval = interval;
        self
    }

    /// The cgroup v2 mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// Number of cached ids.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Whether unknown ids are resolved on the spot (kernfs file handles).
    pub fn resolves_on_the_spot(&self) -> bool {
        self.opener.is_some()
    }

    /// The path of cgroup `id`: from the cache, else from the kernel by
    /// file handle, else (handles unavailable) by a walk when the last one
    /// is older than the rescan interval.
    pub fn resolve(&mut self, id: u64) -> Option<&str> {
        self.resolve_at(id, Instant::now())
    }

    /// [`resolve`](Self::resolve) returning an owned path (convenient when
    /// the path goes into an event).
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        self.resolve(id).map(str::to_owned)
    }

    /// [`resolve`](Self::resolve) with an injected clock (tests).
    pub fn resolve_at(&mut self, id: u64, now: Instant) -> Option<&str> {
        if self.cache.contains_key(&id) {
            self.stats.hits += 1;
            return self.cache.get(&id).map(String::as_str);
        }
        if let Some(opener) = &self.opener {
            match opener.lookup(id) {
                HandleLookup::Found(path) => {
                    self.stats.handle_lookups += 1;
                    METRICS.lookups.inc();
                    self.insert(id, path);
                    return self.cache.get(&id).map(String::as_str);
                }
                HandleLookup::Gone => {
                    // A walk cannot find a removed cgroup either.
                    self.stats.misses += 1;
                    METRICS.misses.inc();
                    debug!(cgroup_id = id, "cgroup id unknown to the kernel (removed?)");
                    return None;
                }
                HandleLookup::Unsupported(e) => {
                    warn!(
                        root = %self.root.display(),
                        error = %e,
                        "the kernel refused a cgroup lookup by file handle; new cgroups are found by walks of the hierarchy (at most one per interval) from now on"
                    );
                    self.opener = None;
                }
            }
        }
        let may_rescan = self
            .last_rescan
            .is_none_or(|t| now.saturating_duration_since(t) >= self.min_rescan_interval);
        if may_rescan {
            self.rescan_at(now);
            if self.cache.contains_key(&id) {
                self.stats.hits += 1;
                return self.cache.get(&id).map(String::as_str);
            }
        }
        self.stats.misses += 1;
        METRICS.misses.inc();
        debug!(cgroup_id = id, rescanned = may_rescan, "unknown cgroup id");
        None
    }

    /// Caches one entry, evicting an arbitrary one when full.
    fn insert(&mut self, id: u64, path: String) {
        if self.cache.len() >= self.limits.max_entries
            && let Some(old) = self.cache.keys().next().copied()
        {
            self.cache.remove(&old);
        }
        self.cache.insert(id, path);
        METRICS
            .entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
    }

    /// Walks the hierarchy now. Entries of cgroups that disappeared are kept
    /// while the cache has room, so late events of a removed container still
    /// resolve (cgroup v2 ids are not reused on 64-bit kernels).
    pub fn rescan(&mut self) -> usize {
        self.rescan_at(Instant::now())
    }

    fn rescan_at(&mut self, now: Instant) -> usize {
        self.last_rescan = Some(now);
        self.stats.rescans += 1;
        METRICS.rescans.inc();
        let (mut fresh, truncated) = scan(&self.root, self.limits);
        if truncated {
            self.stats.truncated_scans += 1;
            warn!(
                root = %self.root.display(),
                max_depth = self.limits.max_depth,
                max_entries = self.limits.max_entries,
                "cgroup hierarchy larger than the scan limits; some cgroups are not resolvable"
            );
        }
        let found = fresh.len();
        for (id, path) in self.cache.drain() {
            if fresh.len() >= self.limits.max_entries {
                break;
            }
            fresh.entry(id).or_insert(path);
        }
        self.cache = fresh;
        METRICS
            .entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        found
    }
}

/// Walks `root` breadth-first within `limits`. Directories vanishing during
/// the walk are skipped. Returns the map and whether a limit was hit.
fn scan(root: &Path, limits: ScanLimits) -> (HashMap<u64, String>, bool) {
    let mut out = HashMap::new();
    let mut truncated = false;
    let Ok(meta) = std::fs::metadata(root) else {
        warn!(root = %root.display(), "cgroup v2 root is not readable");
        return (out, false);
    };
    out.insert(meta.ino(), "/".to_owned());
    let mut queue = std::collections::VecDeque::from([(root.to_path_buf(), String::new(), 0usize)]);
    while let Some((dir, rel, depth)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if out.len() >= limits.max_entries {
                return (out, true);
            }
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name();
            let child_rel = format!("{rel}/{}", name.to_string_lossy());
            out.insert(meta.ino(), child_rel.clone());
            if depth + 1 < limits.max_depth {
                queue.push_back((entry.path(), child_rel, depth + 1));
            } else if std::fs::read_dir(entry.path())
                .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir()))))
                .unwrap_or(false)
            {
                truncated = true;
            }
        }
    }
    (out, truncated)
}

/// The mount point of the cgroup2 filesystem in a mountinfo text,
/// preferring a mount of the hierarchy's root.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in mountinfo.lines() {
        // id parent maj:min root mount_point options [optional...] - fstype source super
        let (pre, post) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        if post.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let mut f = pre.split_whitespace();
        let (Some(_), Some(_), Some(_), Some(root), Some(mnt)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let mnt = PathBuf::from(unescape_mountinfo(mnt));
        if root == "/" {
            return Some(mnt);
        }
        fallback.get_or_insert(mnt);
    }
    fallback
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup path of a process from `/proc/<pid>/cgroup`.
pub fn cgroup_path_of_pid(pid: u32) -> Result<String, CgroupError> {
    cgroup_path_of_pid_in(Path::new("/proc"), pid)
}

/// [`cgroup_path_of_pid`] under another proc root (tests, a host /proc
/// mounted elsewhere).
pub fn cgroup_path_of_pid_in(proc_root: &Path, pid: u32) -> Result<String, CgroupError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_proc_cgroup(&text).ok_or_else(|| CgroupError::NoCgroupLine(path.display().to_string()))
}

/// Picks the path from a `/proc/<pid>/cgroup` text: the cgroup v2 line
/// (`0::/path`); on a v1-only system the `name=systemd` line, else the
/// `pids` controller's, else the first line (container runtimes create
/// the same path in every v1 controller).
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut systemd = None;
    let mut pids = None;
    let mut first = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            return Some(path.to_owned());
        }
        if ctrls.split(',').any(|c| c == "name=systemd") {
            systemd.get_or_insert(path);
        } else if ctrls.split(',').any(|c| c == "pids") {
            pids.get_or_insert(path);
        }
        first.get_or_insert(path);
    }
    systemd.or(pids).or(first).map(str::to_owned)
}
