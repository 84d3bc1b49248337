//! Reading the spool at a sink's own pace.

use std::fs::File;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::{self, ReadOutcome};
use super::{Spool, SpoolError, io_err};
use crate::delivery::telemetry::METRICS;
use crate::model::Alert;

/// Alerts `from_seq..=to_seq` were dropped before this reader got to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from_seq: u64,
    pub to_seq: u64,
    pub count: u64,
}

impl Gap {
    fn new(from_seq: u64, next_kept: u64) -> Self {
        Self {
            from_seq,
            to_seq: next_kept - 1,
            count: next_kept - from_seq,
        }
    }
}

/// One item read from the spool.
#[derive(Clone, Debug, PartialEq)]
pub enum SpoolItem {
    /// Boxed: alerts are large next to gaps.
    Alert(Box<Alert>),
    Gap(Gap),
}

impl SpoolItem {
    /// The highest sequence number this item covers.
    pub fn last_seq(&self) -> u64 {
        match self {
            Self::Alert(a) => a.seq,
            Self::Gap(g) => g.to_seq,
        }
    }
}

struct OpenSegment {
    first_seq: u64,
    file: File,
    offset: u64,
}

/// A cursor over the spool. Reading never blocks the appender beyond a
/// short lock to look up segment bounds.
pub struct SpoolReader {
    spool: Spool,
    next: u64,
    seg: Option<OpenSegment>,
    rx: watch::Receiver<u64>,
}

impl SpoolReader {
    pub(super) fn new(spool: Spool, next: u64) -> Self {
        let rx = spool.subscribe();
        Self {
            spool,
            next,
            seg: None,
            rx,
        }
    }

    /// The next sequence number this reader will return.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The spool this reader reads.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Waits until an alert at or after [`position`](Self::position) is
    /// committed (or the spool is closed).
    pub async fn wait(&mut self) -> Result<(), SpoolError> {
        loop {
            if self.spool.is_closed() {
                return Err(SpoolError::Closed);
            }
            if *self.rx.borrow_and_update() >= self.next {
                return Ok(());
            }
            if self.rx.changed().await.is_err() {
                return Err(SpoolError::Closed);
            }
        }
    }

    /// Waits for and returns at least one item (at most `max`).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<SpoolItem>, SpoolError> {
        loop {
            self.wait().await?;
            let items = self.read_available(max)?;
            if !items.is_empty() {
                return Ok(items);
            }
        }
    }

    /// Returns up to `max` items that are available now (possibly none).
    pub fn read_available(&mut self, max: usize) -> Result<Vec<SpoolItem>, SpoolError> {
        let mut out = Vec::new();
        while out.len() < max {
            let (first, last) = self.spool.bounds();
            if self.next < first {
                out.push(SpoolItem::Gap(Gap::new(self.next, first)));
                self.next = first;
                self.seg = None;
                continue;
            }
            if self.next > last {
                break;
            }
            if !self.step(&mut out)? {
                break;
            }
        }
        Ok(out)
    }

    /// Reads the record at `self.next` into `out`. Returns false when nothing
    /// more can be read now.
    fn step(&mut self, out: &mut Vec<SpoolItem>) -> Result<bool, SpoolError> {
        let Some((first_seq, path, end)) = self.spool.segment_for(self.next) else {
            return Ok(false);
        };
        if self.seg.as_ref().is_none_or(|s| s.first_seq != first_seq) {
            let file = match File::open(&path) {
                Ok(f) => f,
                // Deleted by the appender since we looked: the next bounds()
                // turns it into a gap.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(SpoolError::Io { path, source: e }),
            };
            self.seg = Some(OpenSegment {
                first_seq,
                file,
                offset: 0,
            });
        }
        let Some(seg) = self.seg.as_mut() else {
            return Ok(false);
        };
        let len = seg.file.metadata().map_err(io_err(&path))?.len();
        loop {
            match record::read_at(&seg.file, seg.offset, len).map_err(io_err(&path))? {
                ReadOutcome::Record(r) if r.seq < self.next => seg.offset += r.disk_len(),
                ReadOutcome::Record(r) if r.seq == self.next => {
                    seg.offset += r.disk_len();
                    match serde_json::from_slice::<Alert>(&r.payload) {
                        Ok(mut a) => {
                            a.seq = r.seq;
                            out.push(SpoolItem::Alert(Box::new(a)));
                        }
                        Err(e) => {
                            METRICS.spool_corrupt.inc();
                            tracing::warn!(seq = r.seq, error = %e, "spool record is not a valid alert; skipped");
                            out.push(SpoolItem::Gap(Gap::new(r.seq, r.seq + 1)));
                        }
                    }
                    self.next += 1;
                    return Ok(true);
                }
                ReadOutcome::Record(r) => {
                    // Records missing inside a segment: report them.
                    out.push(SpoolItem::Gap(Gap::new(self.next, r.seq)));
                    self.next = r.seq;
                    return Ok(true);
                }
                ReadOutcome::End if end > self.next && self.spool.last_seq() >= end => {
                    // The segment ended early (cut by a crash before rotation):
                    // what it should have held is lost.
                    out.push(SpoolItem::Gap(Gap::new(self.next, end)));
                    self.next = end;
                    self.seg = None;
                    return Ok(true);
                }
                ReadOutcome::End => return Ok(false),
                ReadOutcome::Corrupt => {
                    METRICS.spool_corrupt.inc();
                    match record::find_next(&seg.file, seg.offset, len, self.next)
                        .map_err(io_err(&path))?
                    {
                        // The next valid record; the branch above turns the
                        // skipped sequence numbers into an exact gap.
                        Some((offset, seq)) => {
                            tracing::warn!(
                                segment = %path.display(),
                                offset = seg.offset,
                                from_seq = self.next,
                                to_seq = seq.saturating_sub(1),
                                "corrupt spool record skipped"
                            );
                            seg.offset = offset;
                        }
                        None => {
                            let resume = end.max(self.next + 1);
                            tracing::warn!(
                                segment = %path.display(),
                                offset = seg.offset,
                                from_seq = self.next,
                                to_seq = resume - 1,
                                "corrupt spool record with nothing valid after it; skipping the rest of the segment"
                            );
                            out.push(SpoolItem::Gap(Gap::new(self.next, resume)));
                            self.next = resume;
                            self.seg = None;
                            return Ok(true);
                        }
                    }
                }
            }
        }
    }
}
