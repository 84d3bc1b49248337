//! User names for numeric uids, from the passwd database the process sees.
//!
//! Falco rules test `user.name` (`user.name in (bin, daemon, ...)`), and a
//! name is only meaningful in the process's own filesystem: uid 33 is
//! `www-data` in a Debian image and may be nothing in an Alpine one. So the
//! table is read from `<proc>/<pid>/root/etc/passwd` (the process's root:
//! its container's image, or the host) and cached per mount namespace; host
//! processes whose root cannot be read fall back to the host's table
//! (`<proc>/1/root/etc/passwd`). A process that is already gone when its
//! first event is handled is looked up through an ancestor still in the same
//! mount namespace (checked with `<proc>/<pid>/ns/mnt`): a container's
//! entrypoint usually outlives its short-lived children. Failing that, the
//! caller names other live processes of the namespace (`kubectl exec`
//! sessions have their ancestors outside the container). A uid with no entry gets its decimal id as
//! its name (as `ls -l` shows it), so a name is never invented.
//!
//! Bounded: at most [`MAX_TABLES`] namespaces, [`MAX_PASSWD_BYTES`] read per
//! file and [`MAX_ENTRIES`] entries kept per table; tables are re-read after
//! [`TTL`] so users added later are found. Loads are counted by result
//! (`picket_passwd_loads_total{result}`): an unreadable or oversized file
//! leaves numeric names, and that is visible.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet, metrics::counter::Counter, metrics::family::Family,
};

use crate::model::{Ancestor, Process};

/// Mount namespaces whose table is kept.
pub const MAX_TABLES: usize = 4096;
/// Bytes read from one passwd file (larger files are cut, and counted).
pub const MAX_PASSWD_BYTES: u64 = 4 << 20;
/// Entries kept from one passwd file.
pub const MAX_ENTRIES: usize = 65_536;
/// Age after which a table is read again.
pub const TTL: Duration = Duration::from_secs(30);
/// Retry delay after a failed read (the process was gone, no passwd file).
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

static LOADS: LazyLock<Family<ResultLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "passwd_loads",
        "passwd files read to name users, by result (loaded; truncated: larger than 4 MiB or 65536 \
         entries, the rest ignored; unreadable: the process was gone or its root has no \
         /etc/passwd, so its users are named by number)",
        Family::default(),
    )
});

fn count(result: &'static str) {
    LOADS.get_or_create(&ResultLabel { result }).inc();
}

/// One passwd database: uid -> name.
#[derive(Debug)]
struct Table {
    names: HashMap<u32, Arc<str>>,
    loaded: Instant,
    /// The file could not be read: retry sooner.
    failed: bool,
}

impl Table {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = if self.failed { RETRY } else { TTL };
        now.saturating_duration_since(self.loaded) < ttl
    }
}

/// The result of parsing a passwd file.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub names: HashMap<u32, Arc<str>>,
    /// Entries beyond [`MAX_ENTRIES`] were dropped.
    pub truncated: bool,
}

/// Parses `name:x:uid:gid:gecos:home:shell` lines. The first entry of a uid
/// wins, as with `getpwuid`; malformed lines and comments are skipped.
pub fn parse_passwd(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for line in text.lines() {
        let mut parts = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with('#') || name.starts_with(['+', '-']) {
            continue;
        }
        let Ok(uid) = uid.trim().parse::<u32>() else {
            continue;
        };
        if out.names.len() >= MAX_ENTRIES {
            out.truncated = true;
            break;
        }
        out.names.entry(uid).or_insert_with(|| Arc::from(name));
    }
    out
}

/// The process a name is looked up for.
struct Lookup<'a> {
    pid: u32,
    ancestors: &'a [Arc<Ancestor>],
    mnt_ns: u32,
    in_container: bool,
}

/// Resolves and caches user names per mount namespace.
#[derive(Debug)]
pub struct UserNames {
    proc_root: PathBuf,
    tables: HashMap<u32, Table>,
}

impl UserNames {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            tables: HashMap::new(),
        }
    }

    /// Fills `process.user.name` and `process.login_user.name`.
    /// `in_container`: the process is in a container (no host fallback).
    pub fn fill(&mut self, p: &mut Process, in_container: bool) {
        self.fill_with(p, in_container, |_| Vec::new());
    }

    /// [`fill`](Self::fill); `live(mnt_ns)` names other live processes of
    /// the namespace (the process cache knows them), asked only when
    /// neither the process nor an ancestor in its namespace can be read.
    pub fn fill_with(
        &mut self,
        p: &mut Process,
        in_container: bool,
        mut live: impl FnMut(u32) -> Vec<u32>,
    ) {
        if p.pid == 0 {
            return;
        }
        let now = Instant::now();
        let (pid, mnt_ns) = (p.pid, p.linux.mnt_ns);
        let ctx = Lookup {
            pid,
            ancestors: &p.ancestors,
            mnt_ns,
            in_container,
        };
        let user = self.lookup(&ctx, p.user.id, now, &mut live);
        let login = p
            .login_user
            .as_ref()
            .map(|l| self.lookup(&ctx, l.id, now, &mut live));
        p.user.name = Some(user);
        if let (Some(l), Some(name)) = (p.login_user.as_mut(), login) {
            l.name = Some(name);
        }
    }

    /// The name of `uid` for process `pid` in mount namespace `mnt_ns`.
    pub fn name(
        &mut self,
        pid: u32,
        mnt_ns: u32,
        in_container: bool,
        uid: u32,
        now: Instant,
    ) -> Arc<str> {
        let ctx = Lookup {
            pid,
            ancestors: &[],
            mnt_ns,
            in_container,
        };
        self.lookup(&ctx, uid, now, &mut |_| Vec::new())
    }

    fn lookup(
        &mut self,
        ctx: &Lookup<'_>,
        uid: u32,
        now: Instant,
        live: &mut dyn FnMut(u32) -> Vec<u32>,
    ) -> Arc<str> {
        match self.table(ctx, now, live) {
            Some(t) => t.names.get(&uid).cloned().unwrap_or_else(|| numeric(uid)),
            None => numeric(uid),
        }
    }

    fn table(
        &mut self,
        ctx: &Lookup<'_>,
        now: Instant,
        live: &mut dyn FnMut(u32) -> Vec<u32>,
    ) -> Option<&Table> {
        let mnt_ns = ctx.mnt_ns;
        if mnt_ns == 0 && ctx.in_container {
            // Not identified: no key to cache under. Host processes still
            // get the host's table (cached under key 0).
            return None;
        }
        let stale = self.tables.get(&mnt_ns).is_none_or(|t| !t.fresh(now));
        if stale {
            let loaded = if mnt_ns == 0 {
                self.load_host()
            } else {
                self.load(ctx, live)
            };
            let table = match loaded {
                Some(names) => Table {
                    names,
                    loaded: now,
                    failed: false,
                },
                // Keep the last good table of the namespace if there is one.
                None => match self.tables.remove(&mnt_ns) {
                    Some(old) if !old.failed => Table { loaded: now, ..old },
                    _ => Table {
                        names: HashMap::new(),
                        loaded: now,
                        failed: true,
                    },
                },
            };
            if self.tables.len() >= MAX_TABLES && !self.tables.contains_key(&mnt_ns) {
                self.tables.retain(|_, t| t.fresh(now));
                if self.tables.len() >= MAX_TABLES {
                    self.tables.clear();
                }
            }
            self.tables.insert(mnt_ns, table);
        }
        self.tables.get(&mnt_ns)
    }

    /// Reads the namespace's passwd: through the process itself, else an
    /// ancestor in the same mount namespace, else another live process of
    /// it, else (host processes only) the host's.
    fn load(
        &self,
        ctx: &Lookup<'_>,
        live: &mut dyn FnMut(u32) -> Vec<u32>,
    ) -> Option<HashMap<u32, Arc<str>>> {
        let passwd = |p: u32| self.proc_root.join(p.to_string()).join("root/etc/passwd");
        if let Some(t) = read_table(&passwd(ctx.pid)) {
            return Some(t);
        }
        let ancestors = ctx.ancestors.iter().map(|a| a.pid);
        for o in ancestors.chain(live(ctx.mnt_ns)) {
            if o != ctx.pid
                && self.mnt_ns_of(o) == Some(ctx.mnt_ns)
                && let Some(t) = read_table(&passwd(o))
            {
                return Some(t);
            }
        }
        if ctx.in_container {
            count("unreadable");
            return None;
        }
        self.load_host()
    }

    /// The mount namespace inode of `pid` (`mnt:[4026531841]`).
    fn mnt_ns_of(&self, pid: u32) -> Option<u32> {
        let link = std::fs::read_link(self.proc_root.join(pid.to_string()).join("ns/mnt")).ok()?;
        link.to_str()?
            .strip_prefix("mnt:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    fn load_host(&self) -> Option<HashMap<u32, Arc<str>>> {
        let host = self.proc_root.join("1/root/etc/passwd");
        let t = read_table(&host);
        if t.is_none() {
            count("unreadable");
        }
        t
    }
}

/// Reads and parses one passwd file, bounded; `None` when unreadable.
fn read_table(path: &Path) -> Option<HashMap<u32, Arc<str>>> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_PASSWD_BYTES + 1).read_to_end(&mut buf).ok()?;
    let cut = buf.len() as u64 > MAX_PASSWD_BYTES;
    if cut {
        buf.truncate(MAX_PASSWD_BYTES as usize);
        // Drop the partial last line.
        let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(end);
    }
    let parsed = parse_passwd(&String::from_utf8_lossy(&buf));
    count(if cut || parsed.truncated {
        "truncated"
    } else {
        "loaded"
    });
    Some(parsed.names)
}

fn numeric(uid: u32) -> Arc<str> {
    Arc::from(uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::User;

    fn names(p: &Parsed) -> Vec<(u32, &str)> {
        let mut v: Vec<(u32, &str)> = p.names.iter().map(|(k, v)| (*k, &**v)).collect();
        v.sort();
        v
    }

    #[test]
    fn parses_entries_first_wins_and_skips_garbage() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n\
             # comment:x:5:5\n\
             daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             toor:x:0:0::/root:/bin/sh\n\
             broken line\n\
             bad:x:notanumber:0::/:/bin/sh\n\
             +nis:x:7:7::/:\n\
             :x:9:9::/:\n\
             www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
        );
        assert_eq!(names(&p), [(0, "root"), (1, "daemon"), (33, "www-data")]);
        assert!(!p.truncated);
    }

    #[test]
    fn entry_limit_is_reported() {
        let text: String = (0..MAX_ENTRIES as u32 + 3)
            .map(|i| format!("u{i}:x:{i}:0::/:/bin/sh\n"))
            .collect();
        let p = parse_passwd(&text);
        assert_eq!(p.names.len(), MAX_ENTRIES);
        assert!(p.truncated);
    }

    /// A fake `/proc`: `<root>/<pid>/root/etc/passwd`.
    fn fake_proc(entries: &[(u32, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (pid, passwd) in entries {
            let etc = d.path().join(pid.to_string()).join("root/etc");
            std::fs::create_dir_all(&etc).expect("mkdir");
            std::fs::write(etc.join("passwd"), passwd).expect("write");
        }
        d
    }

    #[test]
    fn container_root_host_fallback_and_numeric() {
        let d = fake_proc(&[
            (
                1,
                "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\n",
            ),
            (
                42,
                "root:x:0:0::/root:/bin/sh\nnginx:x:101:101::/:/sbin/nologin\n",
            ),
        ]);
        let mut u = UserNames::new(d.path());
        let now = Instant::now();
        // The container's own passwd.
        assert_eq!(&*u.name(42, 7, true, 101, now), "nginx");
        // Not in the container's passwd: numeric, never the host's name.
        assert_eq!(&*u.name(42, 7, true, 1000, now), "1000");
        // A host process that is gone: the host's table.
        assert_eq!(&*u.name(99, 5, false, 1000, now), "alice");
        // A container process that is gone, namespace never seen: numeric.
        assert_eq!(&*u.name(98, 8, true, 0, now), "0");
        // Unknown namespace on the host: the host table.
        assert_eq!(&*u.name(97, 0, false, 0, now), "root");
        // ...but never for a container.
        assert_eq!(&*u.name(97, 0, true, 0, now), "0");
    }

    #[test]
    fn cached_per_namespace_and_reread_after_ttl() {
        let d = fake_proc(&[(42, "root:x:0:0::/root:/bin/sh\n")]);
        let mut u = UserNames::new(d.path());
        let t0 = Instant::now();
        assert_eq!(&*u.name(42, 7, true, 1001, t0), "1001");
        std::fs::write(
            d.path().join("42/root/etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n",
        )
        .expect("write");
        // Cached: not re-read within the TTL.
        assert_eq!(&*u.name(42, 7, true, 1001, t0 + TTL / 2), "1001");
        // Another process of the same namespace shares the table.
        assert_eq!(&*u.name(43, 7, true, 0, t0 + TTL / 2), "root");
        assert_eq!(&*u.name(42, 7, true, 1001, t0 + TTL), "bob");
        // The process is gone at the next refresh: the last good table stays.
        std::fs::remove_dir_all(d.path().join("42")).expect("rm");
        assert_eq!(&*u.name(42, 7, true, 1001, t0 + TTL * 3), "bob");
    }

    #[test]
    fn fill_sets_user_and_login_names() {
        let d = fake_proc(&[(
            5,
            "root:x:0:0::/root:/bin/sh\ndaemon:x:1:1::/:/usr/sbin/nologin\n",
        )]);
        let mut u = UserNames::new(d.path());
        let mut p = Process {
            pid: 5,
            user: User { id: 1, name: None },
            login_user: Some(User { id: 0, name: None }),
            ..Default::default()
        };
        p.linux.mnt_ns = 9;
        u.fill(&mut p, false);
        assert_eq!(p.user.name.as_deref(), Some("daemon"));
        assert_eq!(p.login_user.and_then(|l| l.name).as_deref(), Some("root"));
        let mut unknown = Process::default();
        u.fill(&mut unknown, false);
        assert_eq!(unknown.user.name, None, "pid 0: not a process");
    }

    #[test]
    fn table_count_is_bounded() {
        let d = fake_proc(&[(1, "root:x:0:0::/root:/bin/sh\n")]);
        let mut u = UserNames::new(d.path());
        let now = Instant::now();
        for ns in 1..=(MAX_TABLES as u32 + 10) {
            assert_eq!(&*u.name(1, ns, false, 0, now), "root");
        }
        assert!(u.tables.len() <= MAX_TABLES);
    }
}

#[cfg(test)]
mod ancestor_tests {
    use super::*;
    use crate::model::User;

    #[test]
    fn a_gone_process_is_read_through_an_ancestor_in_its_namespace() {
        let d = tempfile::tempdir().expect("tempdir");
        // pid 10: the container's entrypoint (mount namespace 7); pid 20:
        // a runtime outside it (namespace 5) with another passwd.
        for (pid, ns, passwd) in [
            (10, 7, "app:x:1000:1000::/:/bin/sh\n"),
            (20, 5, "host-user:x:1000:1000::/:/bin/sh\n"),
        ] {
            let base = d.path().join(pid.to_string());
            std::fs::create_dir_all(base.join("root/etc")).expect("mkdir");
            std::fs::create_dir_all(base.join("ns")).expect("mkdir");
            std::fs::write(base.join("root/etc/passwd"), passwd).expect("write");
            std::os::unix::fs::symlink(format!("mnt:[{ns}]"), base.join("ns/mnt")).expect("link");
        }
        let anc = |pid| {
            Arc::new(Ancestor {
                pid,
                ..Default::default()
            })
        };
        let mut u = UserNames::new(d.path());
        // pid 30 is gone; its ancestors: the runtime (another namespace),
        // then the entrypoint (the same namespace).
        let mut p = Process {
            pid: 30,
            user: User {
                id: 1000,
                name: None,
            },
            ancestors: vec![anc(20), anc(10)],
            ..Default::default()
        };
        p.linux.mnt_ns = 7;
        u.fill(&mut p, true);
        assert_eq!(p.user.name.as_deref(), Some("app"));
        // Only ancestors outside the namespace: numeric, never their names.
        let mut q = Process {
            pid: 31,
            user: User {
                id: 1000,
                name: None,
            },
            ancestors: vec![anc(20)],
            ..Default::default()
        };
        q.linux.mnt_ns = 8;
        u.fill(&mut q, true);
        assert_eq!(q.user.name.as_deref(), Some("1000"));
    }

    #[test]
    fn a_live_process_of_the_namespace_is_the_last_way_in() {
        let d = tempfile::tempdir().expect("tempdir");
        let base = d.path().join("10");
        std::fs::create_dir_all(base.join("root/etc")).expect("mkdir");
        std::fs::create_dir_all(base.join("ns")).expect("mkdir");
        std::fs::write(base.join("root/etc/passwd"), "app:x:1000:1000::/:/bin/sh\n")
            .expect("write");
        std::os::unix::fs::symlink("mnt:[7]", base.join("ns/mnt")).expect("link");
        let mut u = UserNames::new(d.path());
        let mut p = Process {
            pid: 30,
            user: User {
                id: 1000,
                name: None,
            },
            ..Default::default()
        };
        p.linux.mnt_ns = 7;
        let mut asked = Vec::new();
        u.fill_with(&mut p, true, |ns| {
            asked.push(ns);
            vec![10]
        });
        assert_eq!(p.user.name.as_deref(), Some("app"));
        assert_eq!(asked, [7], "asked once, for the namespace");
    }
}
