//! The durable alert spool: append-only segment files plus one persisted
//! cursor per sink.
//!
//! - The appender assigns strictly increasing sequence numbers (continuing
//!   after a restart: recovered from the segments) and never waits for sinks:
//!   it writes, then publishes the new last sequence number on a
//!   `tokio::sync::watch` channel that wakes the readers.
//! - Segments are named after their first sequence number
//!   (`segments/00000000000000000042.seg`) and rotated at `segment_bytes`.
//!   When the total exceeds `max_total_bytes` the oldest segments are deleted
//!   even if some sink has not read them; the loss is counted
//!   (`picket_spool_dropped_alerts`) and readers behind it get a
//!   [`Gap`](reader::Gap).
//! - Recovery: the last segment is scanned and truncated at the first torn or
//!   corrupt record (a crash mid-append).
//! - `fsync` policy ([`FsyncPolicy`]): `always` (default) fsyncs the segment
//!   after every append and cursor files after every write, so an alert
//!   `publish` returned for survives a power loss; `never` leaves it to the
//!   kernel (survives an agent crash, not a power loss).
//! - Cursors are small text files (`cursors/<sink>`), replaced atomically
//!   (write, fsync, rename).

mod cursor;
mod reader;
mod record;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::telemetry::{self, METRICS};
use crate::model::Alert;

pub use cursor::{valid_cursor_name, valid_sink_name};
pub use reader::{Gap, SpoolItem, SpoolReader};

/// When spool writes are forced to stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync after every append and cursor update.
    #[default]
    Always,
    /// Never fsync explicitly (the page cache survives an agent crash).
    Never,
}

/// Spool settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory holding `segments/`, `cursors/` and the lock file.
    pub dir: PathBuf,
    /// Upper bound of all segment files together.
    pub max_total_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/picket/spool"),
            max_total_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool {0} is locked by another process")]
    Locked(PathBuf),
    #[error("invalid spool configuration: {0}")]
    Config(String),
    #[error("alert too large for the spool: {0} bytes")]
    TooLarge(usize),
    #[error("cannot encode alert: {0}")]
    Encode(serde_json::Error),
    #[error("invalid sink name {0:?} (1-64 of [A-Za-z0-9._-])")]
    SinkName(String),
    #[error("the spool was closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

struct State {
    segments: VecDeque<Segment>,
    /// Append handle of the last segment.
    active: Option<File>,
    next_seq: u64,
    total_bytes: u64,
    /// The lock file (flock); dropped on close.
    lock: Option<File>,
}

struct Inner {
    dir: PathBuf,
    cfg: SpoolConfig,
    state: Mutex<State>,
    committed: watch::Sender<u64>,
    cursors: Mutex<BTreeMap<String, u64>>,
}

/// A handle to the spool (cheap to clone).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn try_lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // A previous instance in this process may still be releasing the lock
    // (its tasks end asynchronously): wait a little before giving up.
    for _ in 0..250 {
        // SAFETY: flock on a valid fd owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(SpoolError::Locked(dir.to_owned()))
}

impl Spool {
    /// Opens (creating if needed) the spool, recovering the sequence number
    /// and truncating a torn last record.
    pub fn open(cfg: SpoolConfig) -> Result<Self, SpoolError> {
        if cfg.segment_bytes < 1024 || cfg.max_total_bytes < cfg.segment_bytes.saturating_mul(2) {
            return Err(SpoolError::Config(format!(
                "need segment_bytes >= 1024 and max_total_bytes >= 2 * segment_bytes (got {} and {})",
                cfg.segment_bytes, cfg.max_total_bytes
            )));
        }
        let dir = cfg.dir.clone();
        let seg_dir = dir.join("segments");
        fs::create_dir_all(&seg_dir).map_err(io_err(&seg_dir))?;
        fs::create_dir_all(dir.join("cursors")).map_err(io_err(&dir))?;
        let lock = try_lock(&dir)?;
        let cursors = cursor::load_all(&dir.join("cursors"))?;

        let mut segments = list_segments(&seg_dir)?;
        let mut next_seq = 1;
        if let Some(last) = segments.back_mut() {
            next_seq = recover_last(last, cfg.fsync)?;
        }
        // Continue after the highest acknowledged position too, so sequence
        // numbers never repeat even if segments were removed or a truncated
        // tail held records a sink had already read.
        next_seq = next_seq.max(cursors.values().copied().max().map_or(1, |m| m + 1));
        let active_path = match segments.back() {
            Some(s) => s.path.clone(),
            None => {
                let path = seg_dir.join(segment_name(next_seq));
                segments.push_back(Segment {
                    first_seq: next_seq,
                    path: path.clone(),
                    bytes: 0,
                });
                path
            }
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_err(&active_path))?;
        if cfg.fsync == FsyncPolicy::Always {
            sync_dir(&seg_dir)?;
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let (committed, _) = watch::channel(next_seq - 1);
        let spool = Self {
            inner: Arc::new(Inner {
                dir,
                cfg,
                state: Mutex::new(State {
                    segments,
                    active: Some(active),
                    next_seq,
                    total_bytes,
                    lock: Some(lock),
                }),
                committed,
                cursors: Mutex::new(cursors),
            }),
        };
        {
            let mut st = spool.state();
            spool.enforce_limit(&mut st)?;
            spool.update_gauges(&st);
        }
        tracing::info!(dir = %spool.inner.dir.display(), next_seq, "spool opened");
        Ok(spool)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursors(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of this spool.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends `alert`, setting `alert.seq`, and returns the sequence number.
    /// Synchronous file I/O: call from a blocking context (see
    /// `Delivery::publish`).
    pub fn append(&self, alert: &mut Alert) -> Result<u64, SpoolError> {
        let mut st = self.state();
        if st.lock.is_none() {
            return Err(SpoolError::Closed);
        }
        let seq = st.next_seq;
        alert.seq = seq;
        let payload = serde_json::to_vec(alert).map_err(SpoolError::Encode)?;
        if payload.len() > record::MAX_PAYLOAD as usize {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let rec = record::encode(seq, &payload);
        let rec_len = rec.len() as u64;
        let active_bytes = st.segments.back().map_or(0, |s| s.bytes);
        if active_bytes > 0 && active_bytes + rec_len > self.inner.cfg.segment_bytes {
            self.rotate(&mut st, seq)?;
        }
        let Some(seg) = st.segments.back().cloned() else {
            return Err(SpoolError::Closed);
        };
        let Some(file) = st.active.as_mut() else {
            return Err(SpoolError::Closed);
        };
        if let Err(e) = file.write_all(&rec) {
            // Drop whatever part was written so the segment stays parseable.
            let _ = file.set_len(seg.bytes);
            return Err(SpoolError::Io {
                path: seg.path,
                source: e,
            });
        }
        if self.inner.cfg.fsync == FsyncPolicy::Always
            && let Err(e) = file.sync_data()
        {
            // Not durable: take the record back out so this sequence number
            // is never written twice (the retry appends it again).
            let _ = file.set_len(seg.bytes);
            return Err(SpoolError::Io {
                path: seg.path,
                source: e,
            });
        }
        if let Some(s) = st.segments.back_mut() {
            s.bytes += rec_len;
        }
        st.total_bytes += rec_len;
        st.next_seq = seq + 1;
        self.enforce_limit(&mut st)?;
        self.update_gauges(&st);
        drop(st);
        self.inner.committed.send_replace(seq);
        self.update_lags(seq);
        Ok(seq)
    }

    fn rotate(&self, st: &mut State, first_seq: u64) -> Result<(), SpoolError> {
        if let (Some(f), Some(s)) = (st.active.as_ref(), st.segments.back())
            && self.inner.cfg.fsync == FsyncPolicy::Always
        {
            f.sync_all().map_err(io_err(&s.path))?;
        }
        let seg_dir = self.inner.dir.join("segments");
        let path = seg_dir.join(segment_name(first_seq));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if self.inner.cfg.fsync == FsyncPolicy::Always {
            sync_dir(&seg_dir)?;
        }
        st.active = Some(file);
        st.segments.push_back(Segment {
            first_seq,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments while the spool is over its size bound.
    fn enforce_limit(&self, st: &mut State) -> Result<(), SpoolError> {
        while st.total_bytes > self.inner.cfg.max_total_bytes && st.segments.len() > 1 {
            let Some(old) = st.segments.pop_front() else {
                break;
            };
            let next_first = st.segments.front().map_or(st.next_seq, |s| s.first_seq);
            let dropped = next_first - old.first_seq;
            fs::remove_file(&old.path).map_err(io_err(&old.path))?;
            st.total_bytes -= old.bytes;
            let unread = self.unread_by_some_sink(old.first_seq, next_first);
            METRICS.spool_dropped.inc_by(dropped);
            tracing::warn!(
                segment = %old.path.display(),
                from_seq = old.first_seq,
                to_seq = next_first - 1,
                dropped,
                unread_by_some_sink = unread,
                "spool full: deleted the oldest segment"
            );
        }
        Ok(())
    }

    fn unread_by_some_sink(&self, _from: u64, to: u64) -> bool {
        self.cursors().values().any(|&acked| acked + 1 < to)
    }

    fn update_gauges(&self, st: &State) {
        let first = st.segments.front().map_or(st.next_seq, |s| s.first_seq);
        METRICS
            .spool_records
            .set(telemetry::gauge_value(st.next_seq - first));
        METRICS
            .spool_bytes
            .set(telemetry::gauge_value(st.total_bytes));
        METRICS
            .spool_last_seq
            .set(telemetry::gauge_value(st.next_seq - 1));
    }

    fn update_lags(&self, last: u64) {
        for (name, acked) in self.cursors().iter() {
            let lag = last.saturating_sub(*acked);
            METRICS
                .sink_lag
                .get_or_create(&telemetry::sink(name))
                .set(telemetry::gauge_value(lag));
        }
    }

    /// `(oldest kept, newest committed)` sequence numbers; `oldest > newest`
    /// when the spool is empty.
    pub fn bounds(&self) -> (u64, u64) {
        let st = self.state();
        let first = st.segments.front().map_or(st.next_seq, |s| s.first_seq);
        (first, st.next_seq - 1)
    }

    /// The newest committed sequence number (0 before the first alert).
    pub fn last_seq(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// A receiver that changes whenever an alert is committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// The segment that holds `seq`: `(first_seq, path, next segment's first_seq)`.
    fn segment_for(&self, seq: u64) -> Option<(u64, PathBuf, u64)> {
        let st = self.state();
        let idx = st.segments.partition_point(|s| s.first_seq <= seq);
        let seg = st.segments.get(idx.checked_sub(1)?)?;
        let end = st.segments.get(idx).map_or(st.next_seq, |s| s.first_seq);
        Some((seg.first_seq, seg.path.clone(), end))
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state().lock.is_none()
    }

    /// The acknowledged position of sink `name` (0 = nothing acknowledged).
    pub fn cursor(&self, name: &str) -> Option<u64> {
        self.cursors().get(name).copied()
    }

    /// Records that sink `name` processed everything up to `seq` (clamped to
    /// the newest committed alert; never moves back). Returns the position.
    pub fn ack(&self, name: &str, seq: u64) -> Result<u64, SpoolError> {
        if !valid_cursor_name(name) {
            return Err(SpoolError::SinkName(name.to_owned()));
        }
        let last = self.last_seq();
        let mut cursors = self.cursors();
        let old = cursors.get(name).copied().unwrap_or(0);
        let new = seq.min(last).max(old);
        if new != old || !cursors.contains_key(name) {
            cursor::store(
                &self.inner.dir.join("cursors"),
                name,
                new,
                self.inner.cfg.fsync == FsyncPolicy::Always,
            )?;
            cursors.insert(name.to_owned(), new);
        }
        METRICS
            .sink_lag
            .get_or_create(&telemetry::sink(name))
            .set(telemetry::gauge_value(last.saturating_sub(new)));
        Ok(new)
    }

    /// A reader starting at `next_seq` (clamped to at least 1).
    pub fn reader(&self, next_seq: u64) -> SpoolReader {
        SpoolReader::new(self.clone(), next_seq.max(1))
    }

    /// A reader for sink `name`, positioned after its acknowledged cursor; a
    /// sink seen for the first time starts at `default_start`.
    pub fn reader_for_sink(
        &self,
        name: &str,
        default_start: u64,
    ) -> Result<SpoolReader, SpoolError> {
        if !valid_cursor_name(name) {
            return Err(SpoolError::SinkName(name.to_owned()));
        }
        let start = self.cursor(name).map_or(default_start, |c| c + 1);
        Ok(self.reader(start))
    }

    /// Flushes the active segment to disk.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let st = self.state();
        if let (Some(f), Some(s)) = (st.active.as_ref(), st.segments.back()) {
            f.sync_all().map_err(io_err(&s.path))?;
        }
        Ok(())
    }

    /// Syncs, closes the segment and releases the directory lock; appends
    /// fail and readers end afterwards. Idempotent.
    pub fn close(&self) {
        let mut st = self.state();
        if let (Some(f), Some(s)) = (st.active.as_ref(), st.segments.back())
            && let Err(e) = f.sync_all()
        {
            tracing::warn!(segment = %s.path.display(), error = %e, "spool sync on close failed");
        }
        st.active = None;
        st.lock = None;
        drop(st);
        // Wake readers so they notice.
        self.inner.committed.send_modify(|_| {});
    }
}

fn list_segments(seg_dir: &Path) -> Result<VecDeque<Segment>, SpoolError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(seg_dir).map_err(io_err(seg_dir))? {
        let entry = entry.map_err(io_err(seg_dir))?;
        let name = entry.file_name();
        let Some(first_seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let bytes = entry.metadata().map_err(io_err(&path))?.len();
        segs.push(Segment {
            first_seq,
            path,
            bytes,
        });
    }
    segs.sort_by_key(|s| s.first_seq);
    Ok(segs.into())
}

/// Scans the last segment and returns the next sequence number. A corrupt
/// record in the middle is skipped (the readers report exactly its sequence
/// numbers as a gap) and everything valid after it is kept; only a torn or
/// corrupt tail with nothing valid behind it is truncated.
fn recover_last(seg: &mut Segment, fsync: FsyncPolicy) -> Result<u64, SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg.path)
        .map_err(io_err(&seg.path))?;
    let len = file.metadata().map_err(io_err(&seg.path))?.len();
    let mut offset = 0;
    let mut expect = seg.first_seq;
    loop {
        match record::read_at(&file, offset, len).map_err(io_err(&seg.path))? {
            record::ReadOutcome::Record(r) if r.seq >= expect => {
                offset += r.disk_len();
                expect = r.seq + 1;
            }
            record::ReadOutcome::End => break,
            // A bad checksum, or a valid record out of order (spliced).
            _ => match record::find_next(&file, offset, len, expect).map_err(io_err(&seg.path))? {
                Some((next, seq)) => {
                    tracing::warn!(
                        segment = %seg.path.display(),
                        offset,
                        from_seq = expect,
                        to_seq = seq - 1,
                        "spool recovery: skipping a corrupt record; later records kept"
                    );
                    METRICS.spool_corrupt.inc();
                    offset = next;
                }
                None => break,
            },
        }
    }
    if offset < len {
        tracing::warn!(
            segment = %seg.path.display(),
            kept_bytes = offset,
            dropped_bytes = len - offset,
            "spool recovery: truncated a torn or corrupt tail"
        );
        METRICS.spool_corrupt.inc();
        file.set_len(offset).map_err(io_err(&seg.path))?;
        if fsync == FsyncPolicy::Always {
            file.sync_all().map_err(io_err(&seg.path))?;
        }
    }
    seg.bytes = offset;
    Ok(expect)
}

#[cfg(test)]
mod tests;
