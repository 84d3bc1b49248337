//! Docker's and podman's HTTP API over their Unix sockets:
//! `GET /containers/<id>/json` (podman serves Docker's API on its socket
//! too), one HTTP/1.1 connection per lookup with hyper's client.
//!
//! Lookups are rare (once per container, then cached), so a connection
//! per lookup costs nothing worth a pool and never holds a stale one.

use std::path::PathBuf;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::debug;

use super::{ContainerMeta, LookupError};

/// Largest inspect document read (Docker's are a few KiB; a container
/// with thousands of env entries or mounts stays far below).
const MAX_BODY: usize = 1 << 20;

/// The fields of `GET /containers/<id>/json` the agent reads.
#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<InspectConfig>,
}

#[derive(Debug, Deserialize)]
struct InspectConfig {
    /// The image as the user named it (`nginx:1.27`), not its digest.
    #[serde(rename = "Image", default)]
    image: String,
}

/// A client of one Docker-API socket (`docker` or `podman`).
#[derive(Clone, Debug)]
pub struct DockerClient {
    /// `docker` or `podman`: names the runtime in errors.
    pub runtime: &'static str,
    socket: PathBuf,
}

impl DockerClient {
    pub fn new(runtime: &'static str, socket: PathBuf) -> Self {
        Self { runtime, socket }
    }

    /// The container `id` (`Ok(None)`: the daemon does not know it).
    /// The caller bounds the time taken.
    pub async fn get(&self, id: &str) -> Result<Option<ContainerMeta>, LookupError> {
        let rt = self.runtime;
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                LookupError::Unreachable(format!("{rt}: {}: {e}", self.socket.display()))
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| LookupError::Protocol(format!("{rt}: handshake: {e}")))?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "runtime API connection ended");
            }
        });
        let req = http::Request::get(format!("/containers/{id}/json"))
            .header(http::header::HOST, rt)
            .header(http::header::USER_AGENT, "picket")
            .body(Empty::<Bytes>::new())
            .map_err(|e| LookupError::Protocol(format!("{rt}: request: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| LookupError::Protocol(format!("{rt}: {e}")))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| LookupError::Protocol(format!("{rt}: body: {e}")))?
                .to_bytes();
            if status == http::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(LookupError::Protocol(format!(
                    "{rt}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                )));
            }
            parse_inspect(&body)
                .map(|m| Some(ContainerMeta { runtime: rt, ..m }))
                .map_err(|e| LookupError::Protocol(format!("{rt}: {e}")))
        }
        .await;
        conn.abort();
        result
    }
}

/// Name (without Docker's leading `/`) and image of an inspect document
/// (`runtime` left to the caller).
pub fn parse_inspect(body: &[u8]) -> Result<ContainerMeta, serde_json::Error> {
    let i: Inspect = serde_json::from_slice(body)?;
    Ok(ContainerMeta {
        name: i.name.strip_prefix('/').unwrap_or(&i.name).to_owned(),
        image: i.config.map(|c| c.image).unwrap_or_default(),
        runtime: "",
    })
}
