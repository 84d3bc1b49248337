//! The listener side of the gRPC server: a bounded accept loop.
//!
//! Why not tonic's own `TcpIncoming`: an unauthenticated client can open
//! connections faster than anything closes them. Without a bound every idle
//! connection holds a file descriptor until the process runs out, and then
//! the sinks (which open segment and cursor files) and `/metrics` fail too.
//! So:
//! - at most `max_connections` connections are open at once; one more is
//!   accepted and closed at once (the client sees a reset, not a hang), and
//!   counted in `picket_grpc_connections_rejected_total`;
//! - an accept error (EMFILE, ENFILE, ENOBUFS, ...) never ends the server and
//!   never spins: it is counted, logged at most once per second, and the
//!   loop waits 100 ms before accepting again;
//! - the TLS handshake has a deadline (tonic's `ServerTlsConfig::timeout`,
//!   set by the caller), so a connection that never sends a ClientHello
//!   gives its slot back.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, UdsConnectInfo};

use super::authority::AuthorityFix;
use crate::delivery::telemetry::METRICS;

/// Pause after a failed `accept` (EMFILE and friends) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A connection that holds one slot of the connection cap until dropped.
pub struct Capped<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

forward_async_write!(Capped);

// The connect info types are tonic's own, so `Request::remote_addr`,
// `peer_certs` and the Unix peer credentials keep working.
impl Connected for Capped<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl Connected for Capped<AuthorityFix<UnixStream>> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.get_ref().connect_info()
    }
}

/// Something `accept` can be called on.
pub trait Accept: Send + 'static {
    type Io: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Unix-socket clients get their `:authority` fixed (see `authority`).
impl Accept for UnixListener {
    type Io = AuthorityFix<UnixStream>;
    async fn accept(&self) -> io::Result<AuthorityFix<UnixStream>> {
        UnixListener::accept(self)
            .await
            .map(|(s, _)| AuthorityFix::new(s))
    }
}

/// The stream of accepted, capped connections. It never yields an error
/// (tonic would end the server on one).
pub fn capped<L: Accept>(
    listener: L,
    max_connections: usize,
) -> impl Stream<Item = Result<Capped<L::Io>, io::Error>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let state = (listener, slots, None::<tokio::time::Instant>);
    futures_util::stream::unfold(state, |(listener, slots, mut last_log)| async move {
        loop {
            let io = match listener.accept().await {
                Ok(io) => io,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    METRICS.grpc_accept_errors.inc();
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_log = Some(tokio::time::Instant::now());
                        tracing::warn!(error = %e, "gRPC accept failed (file descriptors exhausted?); pausing");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let conn = Capped {
                        io,
                        _permit: permit,
                    };
                    return Some((Ok(conn), (listener, slots, last_log)));
                }
                Err(_) => {
                    METRICS.grpc_connections_rejected.inc();
                    drop(io);
                }
            }
        }
    })
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
