//! The on-disk record: `seq u64 LE | len u32 LE | crc32 u32 LE | payload`.
//!
//! The CRC (IEEE, `crc32fast`) covers the sequence number, the length and the
//! payload, so a torn write, a flipped bit or a record spliced from another
//! position is detected. The payload is the alert's JSON.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes before the payload.
pub const HEADER_LEN: u64 = 16;

/// Largest payload accepted (an alert is a few KiB; this bounds reads of a
/// corrupt length field).
pub const MAX_PAYLOAD: u32 = 4 << 20;

/// A record read back from a segment.
#[derive(Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl RawRecord {
    /// Size on disk.
    pub fn disk_len(&self) -> u64 {
        HEADER_LEN + self.payload.len() as u64
    }
}

/// Outcome of reading at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Record(RawRecord),
    /// Clean end of the data (or a record still being written / torn).
    End,
    /// A complete-looking record whose checksum or length is wrong.
    Corrupt,
}

fn checksum(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Encodes one record.
pub fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    // Callers bound payload sizes to MAX_PAYLOAD, which fits in u32.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut buf = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(seq, len, payload).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Reads the record at `offset` of `file` whose size is `file_len`.
///
/// A record that extends past `file_len` is reported as [`ReadOutcome::End`]:
/// it is either still being appended or the torn tail of a crash.
pub fn read_at(file: &File, offset: u64, file_len: u64) -> std::io::Result<ReadOutcome> {
    if offset + HEADER_LEN > file_len {
        return Ok(ReadOutcome::End);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, offset)?;
    let seq = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
    if len > MAX_PAYLOAD {
        return Ok(ReadOutcome::Corrupt);
    }
    if offset + HEADER_LEN + u64::from(len) > file_len {
        return Ok(ReadOutcome::End);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN)?;
    if checksum(seq, len, &payload) != crc {
        return Ok(ReadOutcome::Corrupt);
    }
    Ok(ReadOutcome::Record(RawRecord { seq, payload }))
}

/// Most bytes [`find_next`] scans for the next valid record.
const MAX_RESYNC_SCAN: u64 = 256 << 20;

/// After a corrupt record at `offset`, finds the next valid record: the
/// first later offset holding a record whose checksum matches and whose
/// sequence number is at least `min_seq` (and plausibly close to it).
/// Returns `(offset, seq)`, or `None` when nothing valid follows.
///
/// This is what lets one flipped byte cost exactly the records it hit
/// instead of the rest of the segment. A false match needs a 32-bit CRC
/// collision on top of a plausible sequence number and length.
pub fn find_next(
    file: &File,
    offset: u64,
    file_len: u64,
    min_seq: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    let start = offset + 1;
    if start + HEADER_LEN > file_len {
        return Ok(None);
    }
    let n = (file_len - start).min(MAX_RESYNC_SCAN);
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, start)?;
    let max_seq = min_seq.saturating_add(1 << 32);
    let hl = HEADER_LEN as usize;
    let mut p = 0usize;
    while p + hl <= buf.len() {
        let h = &buf[p..p + hl];
        let seq = u64::from_le_bytes(h[0..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
        if seq >= min_seq && seq < max_seq && len <= MAX_PAYLOAD {
            let end = p + hl + len as usize;
            if end <= buf.len() {
                let crc = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
                if checksum(seq, len, &buf[p + hl..end]) == crc {
                    return Ok(Some((start + p as u64, seq)));
                }
            }
        }
        p += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trip_torn_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut f = File::create(&path).unwrap();
        let a = encode(7, b"{\"a\":1}");
        let b = encode(8, b"{\"b\":2}");
        f.write_all(&a).unwrap();
        f.write_all(&b[..b.len() - 1]).unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        assert_eq!(
            read_at(&f, 0, len).unwrap(),
            ReadOutcome::Record(RawRecord {
                seq: 7,
                payload: b"{\"a\":1}".to_vec()
            })
        );
        assert_eq!(read_at(&f, a.len() as u64, len).unwrap(), ReadOutcome::End);

        let mut bad = encode(9, b"xyz");
        bad[17] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            read_at(&f, 0, bad.len() as u64).unwrap(),
            ReadOutcome::Corrupt
        );
    }

    #[test]
    fn find_next_skips_exactly_the_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let recs: Vec<Vec<u8>> = (1..=4)
            .map(|i| encode(i, format!("{{\"n\":{i}}}").as_bytes()))
            .collect();
        let mut all = recs.concat();
        let second = recs[0].len();
        all[second + HEADER_LEN as usize + 2] ^= 0x40;
        std::fs::write(&path, &all).unwrap();
        let f = File::open(&path).unwrap();
        let len = all.len() as u64;
        assert_eq!(
            read_at(&f, second as u64, len).unwrap(),
            ReadOutcome::Corrupt
        );
        let third = (second + recs[1].len()) as u64;
        assert_eq!(
            find_next(&f, second as u64, len, 2).unwrap(),
            Some((third, 3))
        );
        // Nothing valid after the last record.
        let last = third + recs[2].len() as u64;
        assert_eq!(find_next(&f, last, len, 4).unwrap(), None);
    }
}
