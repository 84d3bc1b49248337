//! Accepting the `:authority` that standard gRPC clients send over a Unix
//! socket.
//!
//! Python grpcio (gRPC C-core) sends the socket path, percent-encoded, as the
//! HTTP/2 `:authority` (`tmp%2Frun%2Fpicket.sock`). The `http` crate, which
//! the h2 server uses, rejects `%` in an authority, so h2 resets the stream
//! with PROTOCOL_ERROR before tonic sees the request: grpcio with default
//! options could not call the agent at all. The authority carries no meaning
//! on a Unix socket (the peer is identified by `SO_PEERCRED`).
//!
//! So the bytes coming from a Unix-socket client pass through a small
//! HTTP/2 frame reader that rewrites, in complete HEADERS frames, every `%`
//! in the value of an `:authority` header written as a plain (not Huffman)
//! HPACK literal into `_`. The length never changes, so the HPACK dynamic
//! table stays in step with the client's. What it does not cover (documented
//! in docs/delivery.md): a Huffman-coded authority, or a header block split
//! over CONTINUATION frames; those pass unchanged, as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The client connection preface (`PRI * HTTP/2.0...`).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames longer than this are passed on in pieces without inspection (the
/// server's SETTINGS keep real frames far smaller).
const MAX_BUFFERED_FRAME: usize = 1 << 20;

/// A client stream whose HEADERS frames get their `:authority` fixed.
pub struct AuthorityFix<S> {
    io: S,
    /// Bytes read from `io`, not yet handed up.
    pending: Vec<u8>,
    /// How many leading bytes of `pending` are checked and may go up.
    ready: usize,
    preface_left: usize,
    /// Bytes of an oversized frame still to pass without inspection.
    passthrough: usize,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            pending: Vec::new(),
            ready: 0,
            preface_left: PREFACE_LEN,
            passthrough: 0,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Advances `ready` over every complete unit in `pending`.
    fn scan(&mut self) {
        loop {
            let avail = self.pending.len() - self.ready;
            if avail == 0 {
                return;
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(avail);
                self.preface_left -= n;
                self.ready += n;
                continue;
            }
            if self.passthrough > 0 {
                let n = self.passthrough.min(avail);
                self.passthrough -= n;
                self.ready += n;
                continue;
            }
            if avail < FRAME_HEADER_LEN {
                return;
            }
            let h = &self.pending[self.ready..self.ready + FRAME_HEADER_LEN];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            if len > MAX_BUFFERED_FRAME {
                self.ready += FRAME_HEADER_LEN;
                self.passthrough = len;
                continue;
            }
            if avail < FRAME_HEADER_LEN + len {
                return;
            }
            let start = self.ready + FRAME_HEADER_LEN;
            if kind == FRAME_HEADERS && flags & FLAG_END_HEADERS != 0 {
                fix_headers_payload(&mut self.pending[start..start + len], flags);
            }
            self.ready = start + len;
        }
    }
}

/// The header block inside a HEADERS frame payload (padding and priority
/// fields removed), then the rewrite.
fn fix_headers_payload(payload: &mut [u8], flags: u8) {
    let mut from = 0;
    let mut to = payload.len();
    if flags & FLAG_PADDED != 0 {
        let Some(&pad) = payload.first() else { return };
        from = 1;
        match to.checked_sub(usize::from(pad)) {
            Some(t) if t >= from => to = t,
            _ => return,
        }
    }
    if flags & FLAG_PRIORITY != 0 {
        from += 5;
    }
    if from <= to {
        fix_header_block(&mut payload[from..to]);
    }
}

/// An HPACK integer with an `n`-bit prefix at `b[*i]`.
fn hpack_int(b: &[u8], i: &mut usize, n: u32) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = usize::from(*b.get(*i)?) & max;
    *i += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*i)?;
        *i += 1;
        v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// An HPACK string at `b[*i]`: `(huffman, start, end)`.
fn hpack_str(b: &[u8], i: &mut usize) -> Option<(bool, usize, usize)> {
    let huffman = *b.get(*i)? & 0x80 != 0;
    let len = hpack_int(b, i, 7)?;
    let start = *i;
    let end = start.checked_add(len).filter(|&e| e <= b.len())?;
    *i = end;
    Some((huffman, start, end))
}

/// Walks an HPACK header block; in each literal whose name is `:authority`
/// (static index 1, or the plain name) turns `%` into `_` in a plain value.
/// Stops quietly at anything malformed (h2 will report it).
pub fn fix_header_block(b: &mut [u8]) {
    let mut i = 0;
    while i < b.len() {
        let first = b[i];
        let prefix = if first & 0x80 != 0 {
            // Indexed header field: nothing to rewrite.
            if hpack_int(b, &mut i, 7).is_none() {
                return;
            }
            continue;
        } else if first & 0x40 != 0 {
            6
        } else if first & 0x20 != 0 {
            // Dynamic table size update.
            if hpack_int(b, &mut i, 5).is_none() {
                return;
            }
            continue;
        } else {
            4
        };
        let Some(index) = hpack_int(b, &mut i, prefix) else {
            return;
        };
        let is_authority = if index == 0 {
            let Some((huff, s, e)) = hpack_str(b, &mut i) else {
                return;
            };
            !huff && &b[s..e] == b":authority"
        } else {
            index == 1
        };
        let Some((huff, s, e)) = hpack_str(b, &mut i) else {
            return;
        };
        if is_authority && !huff {
            for c in &mut b[s..e] {
                if *c == b'%' {
                    *c = b'_';
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if me.ready > 0 {
                let n = me.ready.min(buf.remaining());
                buf.put_slice(&me.pending[..n]);
                me.pending.drain(..n);
                me.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                // A partial frame at EOF: hand it on as it is.
                let n = me.pending.len().min(buf.remaining());
                buf.put_slice(&me.pending[..n]);
                me.pending.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut me.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        me.eof = true;
                    } else {
                        me.pending.extend_from_slice(rb.filled());
                        me.scan();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

forward_async_write!(AuthorityFix);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_a_plain_authority_value() {
        // Bytes grpcio 1.85 sent: literal :path, literal :authority
        // (incremental indexing, literal name), then an indexed field.
        let mut block =
            b"@\x05:path\x07/a.B/Cx@\n:authority\x10tmp%2Frun%2Fsock\x83@\x02te\x08trai%ers"
                .to_vec();
        fix_header_block(&mut block);
        assert_eq!(
            block,
            b"@\x05:path\x07/a.B/Cx@\n:authority\x10tmp_2Frun_2Fsock\x83@\x02te\x08trai%ers"
                .to_vec()
        );
        // Static index 1 (`:authority`), without indexing.
        let mut block = b"\x01\x03a%b".to_vec();
        fix_header_block(&mut block);
        assert_eq!(block, b"\x01\x03a_b".to_vec());
        // Malformed input stops the walk without panicking.
        let mut block = b"\x41\xff\xff\xff\xff\xff\xff".to_vec();
        fix_header_block(&mut block);
    }
}
