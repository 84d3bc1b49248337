//! JSON lines output to stdout or to a size-rotated file.
//!
//! Alerts are written as `{"alert": {...}}` (the same wrapper as
//! `picket run`), gaps as `{"gap": {"from_seq":..,"to_seq":..,"count":..}}`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sink::{Sink, SinkError};
use super::spool::SpoolItem;

/// Where JSON lines go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonlConfig {
    /// Sink (cursor) name.
    pub name: String,
    /// `-` for stdout, else a file path.
    pub path: String,
    /// Rotate the file past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.N` oldest).
    pub keep: u32,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        Self {
            name: "jsonl".into(),
            path: "-".into(),
            max_bytes: 64 << 20,
            keep: 5,
        }
    }
}

/// Error opening the output.
#[derive(Debug, thiserror::Error)]
#[error("JSON output {path}: {source}")]
pub struct JsonlError {
    pub path: String,
    pub source: io::Error,
}

enum Target {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        size: u64,
        max_bytes: u64,
        keep: u32,
    },
}

/// The JSON lines sink.
pub struct JsonlSink {
    target: Target,
}

/// One output line (without the newline).
pub fn line(item: &SpoolItem) -> Result<Vec<u8>, serde_json::Error> {
    match item {
        SpoolItem::Alert(a) => serde_json::to_vec(&serde_json::json!({ "alert": a })),
        SpoolItem::Gap(g) => serde_json::to_vec(&serde_json::json!({ "gap": g })),
    }
}

impl JsonlSink {
    pub fn open(cfg: &JsonlConfig) -> Result<Self, JsonlError> {
        if cfg.path == "-" {
            return Ok(Self {
                target: Target::Stdout,
            });
        }
        let path = PathBuf::from(&cfg.path);
        let err = |source| JsonlError {
            path: cfg.path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Self {
            target: Target::File {
                path,
                file,
                size,
                max_bytes: cfg.max_bytes.max(1),
                keep: cfg.keep,
            },
        })
    }

    fn write_items(&mut self, items: &[SpoolItem]) -> io::Result<()> {
        let mut buf = Vec::new();
        for it in items {
            buf.clear();
            buf.extend(line(it).map_err(io::Error::other)?);
            buf.push(b'\n');
            match &mut self.target {
                Target::Stdout => io::stdout().lock().write_all(&buf)?,
                Target::File {
                    path,
                    file,
                    size,
                    max_bytes,
                    keep,
                } => {
                    if *size > 0 && *size + buf.len() as u64 > *max_bytes {
                        file.sync_all()?;
                        rotate(path, *keep)?;
                        *file = OpenOptions::new().create(true).append(true).open(&*path)?;
                        *size = 0;
                    }
                    file.write_all(&buf)?;
                    *size += buf.len() as u64;
                }
            }
        }
        match &mut self.target {
            Target::Stdout => io::stdout().lock().flush(),
            // The cursor advances after this returns: make the lines durable first.
            Target::File { file, .. } => file.sync_data(),
        }
    }
}

/// `path` → `path.1` → ... → `path.keep` (the oldest is deleted).
fn rotate(path: &std::path::Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return fs::remove_file(path);
    }
    match fs::remove_file(numbered(keep)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}

impl Sink for JsonlSink {
    async fn deliver(&mut self, items: &[SpoolItem]) -> Result<(), SinkError> {
        // Small synchronous writes: not worth a blocking-pool hop.
        self.write_items(items)
            .map_err(|e| SinkError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Gap;

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let cfg = JsonlConfig {
            name: "f".into(),
            path: path.display().to_string(),
            max_bytes: 60,
            keep: 2,
        };
        let mut sink = JsonlSink::open(&cfg).unwrap();
        let gap = |n: u64| {
            SpoolItem::Gap(Gap {
                from_seq: n,
                to_seq: n,
                count: 1,
            })
        };
        // Each line is 48 bytes: every line after the first rotates.
        for n in 1..=4 {
            sink.write_items(&[gap(n)]).unwrap();
        }
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(
            read(path.clone()),
            "{\"gap\":{\"count\":1,\"from_seq\":4,\"to_seq\":4}}\n"
        );
        assert_eq!(
            read(dir.path().join("out.jsonl.1")),
            "{\"gap\":{\"count\":1,\"from_seq\":3,\"to_seq\":3}}\n"
        );
        assert_eq!(
            read(dir.path().join("out.jsonl.2")),
            "{\"gap\":{\"count\":1,\"from_seq\":2,\"to_seq\":2}}\n"
        );
        assert!(!dir.path().join("out.jsonl.3").exists());
    }
}
