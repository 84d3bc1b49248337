//! A tonic connector that dials one Unix socket for every request: the
//! agent's own API client (`picket release`, `picket actions`, ...) and the
//! containerd API client both talk gRPC over a socket path, not TCP.

use std::path::PathBuf;

use http::Uri;
use hyper_util::rt::TokioIo;

/// Connects every request of the channel to one Unix socket.
#[derive(Clone)]
pub(crate) struct UnixConnector {
    pub(crate) path: PathBuf,
}

impl tonic::codegen::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}
