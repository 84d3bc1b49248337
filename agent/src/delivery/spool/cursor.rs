//! Persisted sink cursors: `cursors/<sink>` holds the acknowledged sequence
//! number in decimal.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::{SpoolError, io_err};

/// Sink names become file names: 1-64 characters of `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn valid_sink_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Cursor file names: sink names, and API subscriber cursors, which add
/// the caller's namespace (`api.<principal>.<name>`, see
/// `grpc::identity`): up to 200 characters of the same alphabet.
pub fn valid_cursor_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Loads every valid cursor file; unreadable ones are logged and skipped.
pub fn load_all(dir: &Path) -> Result<BTreeMap<String, u64>, SpoolError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !valid_cursor_name(&name) {
            continue;
        }
        let path = entry.path();
        match fs::read_to_string(&path).map(|s| s.trim().parse::<u64>()) {
            Ok(Ok(seq)) => {
                out.insert(name, seq);
            }
            Ok(Err(e)) => {
                tracing::warn!(cursor = %path.display(), error = %e, "ignoring invalid cursor file")
            }
            Err(e) => {
                tracing::warn!(cursor = %path.display(), error = %e, "ignoring unreadable cursor file")
            }
        }
    }
    Ok(out)
}

/// Atomically replaces the cursor of `name`.
pub fn store(dir: &Path, name: &str, seq: u64, fsync: bool) -> Result<(), SpoolError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(format!("{seq}\n").as_bytes())
        .map_err(io_err(&tmp))?;
    if fsync {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if fsync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}
