//! Hot reload: recompile the rule files when they change (debounced file
//! watch) or on SIGHUP, and swap the new set into the engine atomically. A
//! set that fails to compile is rejected whole: the old one keeps running,
//! the failure is logged with its diagnostics and counted.
//!
//! The watcher reloads only when the *content* changed: file events also
//! come from reads (`cat rules.yaml`), from the reload's own reads and from
//! other files in the same directory (logs), and reloading on each of them
//! loops forever. A fingerprint of every rule file's path and bytes is
//! compared with the last one loaded; an unchanged set is counted as
//! `picket_rules_reloads_total{result="unchanged"}` and nothing else
//! happens. A rule file that is empty (or only whitespace) is treated as
//! broken, not as "no rules": it is what an interrupted write leaves behind.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use notify_debouncer_mini::{
    DebounceEventResult, Debouncer, new_debouncer,
    notify::{RecommendedWatcher, RecursiveMode},
};
use tracing::{error, info, warn};

use super::{
    compile::RuleSet,
    diagnostics::{Diagnostic, render},
    engine::Engine,
    metrics::ResultLabel,
};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new rules do not compile; keeping the running set:\n{}", render(.0))]
    Compile(Vec<Diagnostic>),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify_debouncer_mini::notify::Error,
    },
}

struct Inner {
    engine: Arc<Engine>,
    paths: Vec<PathBuf>,
    /// Serializes reloads from the watcher thread and SIGHUP; holds the
    /// fingerprint of the rule files last loaded (or last rejected).
    lock: Mutex<Option<u64>>,
}

/// A fingerprint of the rule files (paths and bytes), and the diagnostics
/// of files that cannot be used: unreadable, or empty.
fn fingerprint(paths: &[PathBuf]) -> (u64, Vec<Diagnostic>) {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    let mut diags = Vec::new();
    let files = super::compile::collect_files(paths).unwrap_or_else(|d| {
        d.len().hash(&mut h);
        Vec::new()
    });
    for f in files {
        f.hash(&mut h);
        match std::fs::read(&f) {
            Ok(bytes) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    diags.push(Diagnostic::error(
                        &f,
                        super::yaml::Pos::default(),
                        "the rules file is empty (an interrupted write?); keeping the running rules",
                    ));
                }
                bytes.hash(&mut h);
            }
            Err(e) => e.kind().hash(&mut h),
        }
    }
    (h.finish(), diags)
}

impl Inner {
    /// Reloads when the rule files' content differs from what was loaded
    /// last (file watch); returns `None` when nothing changed.
    fn reload_if_changed(&self) -> Option<Result<usize, ReloadError>> {
        let (fp, _) = fingerprint(&self.paths);
        let last = *self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if last == Some(fp) {
            self.engine
                .metrics()
                .reloads
                .get_or_create(&ResultLabel {
                    result: "unchanged",
                })
                .inc();
            return None;
        }
        Some(self.reload())
    }

    fn reload(&self) -> Result<usize, ReloadError> {
        let mut last = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.engine.metrics();
        let (fp, empty) = fingerprint(&self.paths);
        *last = Some(fp);
        let loaded = if empty.is_empty() {
            RuleSet::load(&self.paths)
        } else {
            Err(empty)
        };
        match loaded {
            Ok(set) => {
                let n = set.rules().len();
                for w in set.warnings() {
                    warn!("{w}");
                }
                self.engine.replace(set);
                m.reloads
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                info!(rules = n, "rules reloaded");
                Ok(n)
            }
            Err(diags) => {
                m.reloads
                    .get_or_create(&ResultLabel { result: "failure" })
                    .inc();
                let errors = diags.iter().filter(|d| d.is_error()).count();
                error!(errors, diagnostics = %render(&diags), "rule reload failed; keeping the running rules");
                Err(ReloadError::Compile(diags))
            }
        }
    }
}

/// Reloads an engine's rules from `paths`; see the module docs.
pub struct RuleWatcher {
    inner: Arc<Inner>,
    debouncer: Option<Debouncer<RecommendedWatcher>>,
}

impl RuleWatcher {
    /// Does not watch anything yet: call [`Self::watch`] for file changes and
    /// [`Self::reload`] (e.g. on SIGHUP) yourself or through [`Self::run_sighup`].
    pub fn new(engine: Arc<Engine>, paths: Vec<PathBuf>) -> Self {
        // The engine was just loaded from these files: remember them so the
        // first file event without a change does not reload.
        let (fp, _) = fingerprint(&paths);
        for result in ["success", "failure", "unchanged"] {
            let _ = engine
                .metrics()
                .reloads
                .get_or_create(&ResultLabel { result });
        }
        Self {
            inner: Arc::new(Inner {
                engine,
                paths,
                lock: Mutex::new(Some(fp)),
            }),
            debouncer: None,
        }
    }

    /// Recompiles and swaps the rules now. Returns the number of rules.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        self.inner.reload()
    }

    /// Starts watching the rule paths (directories themselves, and the
    /// directory of each file, so editors' and ConfigMaps' rename-into-place
    /// updates are seen). Changes within `debounce` are batched into one reload.
    pub fn watch(&mut self, debounce: Duration) -> Result<(), ReloadError> {
        let inner = self.inner.clone();
        let mut deb = new_debouncer(debounce, move |res: DebounceEventResult| match res {
            Ok(events) if !events.is_empty() => {
                let _ = inner.reload_if_changed();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "rule file watch error"),
        })
        .map_err(|source| ReloadError::Watch {
            path: PathBuf::new(),
            source,
        })?;
        for p in &self.inner.paths {
            let dir = if p.is_dir() {
                p.clone()
            } else {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
            };
            deb.watcher()
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| ReloadError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        self.debouncer = Some(deb);
        Ok(())
    }

    /// A cloneable handle that reloads the same rules (for SIGHUP handlers
    /// and other tasks); it does not keep the file watch alive.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle {
            inner: self.inner.clone(),
        }
    }
}

/// Reloads an engine's rules; see [`RuleWatcher::handle`].
#[derive(Clone)]
pub struct ReloadHandle {
    inner: Arc<Inner>,
}

impl ReloadHandle {
    /// Recompiles and swaps the rules now. Returns the number of rules.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        self.inner.reload()
    }

    /// Reloads on every SIGHUP until the process ends:
    /// `tokio::spawn(watcher.handle().run_sighup())`.
    pub async fn run_sighup(self) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install the SIGHUP handler; rules reload on file changes only");
                return;
            }
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading rules");
            let inner = self.inner.clone();
            let _ = tokio::task::spawn_blocking(move || inner.reload()).await;
        }
    }
}

impl std::fmt::Debug for ReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadHandle")
            .field("paths", &self.inner.paths)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::rules::{EngineOptions, RulesMetrics};

    const ONE: &str = "rules:\n  - id: a\n    name: A\n    severity: low\n    events: [exec]\n    condition: process.pid == 1\n    output: a\n    tags: [T1059]\n";
    const TWO: &str = "rules:\n  - id: a\n    name: A\n    severity: low\n    events: [exec]\n    condition: process.pid == 1\n    output: a\n    tags: [T1059]\n  - id: b\n    name: B\n    severity: low\n    events: [exec]\n    condition: process.pid == 2\n    output: b\n    tags: [T1059]\n";

    fn setup() -> (tempfile::TempDir, Arc<Engine>, RulesMetrics) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.yaml"), ONE).expect("write");
        let metrics = RulesMetrics::unregistered();
        let set = RuleSet::load(&[dir.path()]).expect("load");
        let opts = EngineOptions {
            metrics: metrics.clone(),
            ..Default::default()
        };
        let engine = Arc::new(Engine::with_options(set, opts).expect("engine"));
        (dir, engine, metrics)
    }

    fn count(m: &RulesMetrics, result: &'static str) -> u64 {
        m.reloads.get_or_create(&ResultLabel { result }).get()
    }

    #[test]
    fn bad_new_rules_keep_the_old_set_and_count_the_failure() {
        let (dir, engine, metrics) = setup();
        let w = RuleWatcher::new(engine.clone(), vec![dir.path().to_path_buf()]);
        std::fs::write(
            dir.path().join("r.yaml"),
            TWO.replace("process.pid == 2", "proces.pid == 2"),
        )
        .expect("write");
        let err = w.reload().unwrap_err();
        let ReloadError::Compile(diags) = &err else {
            panic!("{err}")
        };
        assert_eq!(diags[0].message, "unknown field `proces.pid`");
        assert_eq!(count(&metrics, "failure"), 1);
        assert_eq!(count(&metrics, "success"), 0);
        assert_eq!(engine.rules().rules().len(), 1);
        std::fs::write(dir.path().join("r.yaml"), TWO).expect("write");
        assert_eq!(w.reload().expect("reload"), 2);
        assert_eq!(count(&metrics, "success"), 1);
        assert_eq!(engine.rules().rules().len(), 2);
        assert_eq!(metrics.rules_loaded.get(), 2);
    }

    #[test]
    fn reads_and_unrelated_files_do_not_reload_and_an_emptied_file_is_rejected() {
        let (dir, engine, metrics) = setup();
        let rules = dir.path().join("r.yaml");
        let mut w = RuleWatcher::new(engine.clone(), vec![rules.clone()]);
        w.watch(Duration::from_millis(50)).expect("watch");
        // `cat` the file and write a log next to it, several times.
        for i in 0..5 {
            let _ = std::fs::read_to_string(&rules).expect("read");
            std::fs::write(dir.path().join("agent.log"), format!("line {i}\n")).expect("log");
            std::thread::sleep(Duration::from_millis(120));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(count(&metrics, "success"), 0);
        assert_eq!(count(&metrics, "failure"), 0);
        assert!(count(&metrics, "unchanged") >= 1);
        // An interrupted write: the file is truncated to 0 bytes.
        std::fs::write(&rules, "").expect("truncate");
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(&metrics, "failure") == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count(&metrics, "failure"), 1);
        assert_eq!(engine.rules().rules().len(), 1);
        // The rejected content is not retried on every event either.
        let _ = std::fs::read_to_string(&rules).expect("read");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(count(&metrics, "failure"), 1);
        let err = w.reload().unwrap_err();
        assert!(err.to_string().contains("the rules file is empty"), "{err}");
        assert_eq!(engine.rules().rules().len(), 1);
    }

    #[test]
    fn handle_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>(_: &T) {}
        let (dir, engine, metrics) = setup();
        let w = RuleWatcher::new(engine.clone(), vec![dir.path().to_path_buf()]);
        let h = w.handle();
        assert_send_sync(&h);
        std::fs::write(dir.path().join("r.yaml"), TWO).expect("write");
        let n = std::thread::spawn(move || h.reload())
            .join()
            .expect("join")
            .expect("reload");
        assert_eq!(n, 2);
        assert_eq!(count(&metrics, "success"), 1);
    }

    #[test]
    fn file_changes_trigger_a_reload() {
        let (dir, engine, metrics) = setup();
        let mut w = RuleWatcher::new(engine.clone(), vec![dir.path().join("r.yaml")]);
        w.watch(Duration::from_millis(50)).expect("watch");
        // Replace the file the way editors and ConfigMaps do: write + rename.
        let tmp = dir.path().join(".r.yaml.tmp");
        std::fs::write(&tmp, TWO).expect("write");
        std::fs::rename(&tmp, dir.path().join("r.yaml")).expect("rename");
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.rules().rules().len() != 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(engine.rules().rules().len(), 2);
        assert!(count(&metrics, "success") >= 1);
    }
}
