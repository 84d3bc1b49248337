//! Per-test bpffs pin directories for the containment tests (egress blocks
//! are pinned so they survive agent restarts; a test must never use, or
//! leave behind, the host's default pin directory).

use std::path::PathBuf;

/// A per-test bpffs pin directory, removed (its entries, then itself) when
/// dropped, even when the test fails: a leaked pin would keep a test
/// cgroup blocked. Only this test's directory is touched.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/picket/test-{tag}-{}",
            std::process::id()
        )))
    }

    /// Names of the pins in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.filter_map(Result::ok) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
        // The shared parent goes only when empty (other tests' pins stay).
        let _ = std::fs::remove_dir("/sys/fs/bpf/picket");
    }
}
