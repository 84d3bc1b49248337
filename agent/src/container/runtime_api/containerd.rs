//! containerd's containers API (`containerd.services.containers.v1`) over
//! its Unix socket, with our own tonic/prost stack.
//!
//! Why not the `containerd-client` crate: it pins its own tonic/prost
//! releases (and needs `protoc` to build), which would put a second gRPC
//! stack in the agent. One unary call (`Containers/Get`) needs three
//! messages, declared here with `prost::Message` derives; the field numbers
//! are those of containerd's `api/services/containers/v1/containers.proto`
//! (stable since 1.0). Fields we do not declare (spec, runtime, timestamps)
//! are skipped by prost as unknown fields.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use crate::unix_connector::UnixConnector;
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::{ContainerMeta, LookupError};

/// `GetContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `GetContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub container: Option<Container>,
}

/// The part of containerd's `Container` message the agent reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(map = "string, string", tag = "2")]
    pub labels: HashMap<String, String>,
    /// The image reference the container was created from (empty for
    /// `ctr run --rootfs`).
    #[prost(string, tag = "3")]
    pub image: String,
}

const GET: &str = "/containerd.services.containers.v1.Containers/Get";

/// Labels that carry a container's name, most specific first: the CRI
/// plugin (Kubernetes), nerdctl, Docker Compose.
const NAME_LABELS: &[&str] = &[
    "io.kubernetes.container.name",
    "nerdctl/name",
    "com.docker.compose.container-name",
];

/// A client of one containerd socket. The channel connects lazily and
/// reconnects by itself, so a daemon that starts after the agent is found.
#[derive(Clone, Debug)]
pub struct ContainerdClient {
    channel: Channel,
    namespaces: Vec<String>,
}

impl ContainerdClient {
    pub fn new(socket: PathBuf, namespaces: Vec<String>, timeout: Duration) -> Self {
        // The URI is required by the API but unused by the connector.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_with_connector_lazy(UnixConnector { path: socket });
        Self {
            channel,
            namespaces,
        }
    }

    /// The container `id`, looked for in each namespace in order.
    /// `Ok(None)`: no namespace has it.
    pub async fn get(&self, id: &str) -> Result<Option<ContainerMeta>, LookupError> {
        for ns in &self.namespaces {
            if let Some(c) = self.get_in(ns, id).await? {
                let mut meta = meta_of(&c);
                // Docker keeps its containers in containerd's `moby`.
                if ns == "moby" {
                    meta.runtime = "docker";
                }
                return Ok(Some(meta));
            }
        }
        Ok(None)
    }

    async fn get_in(&self, ns: &str, id: &str) -> Result<Option<Container>, LookupError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| LookupError::Unreachable(format!("containerd: {e}")))?;
        let mut req = tonic::Request::new(GetContainerRequest { id: id.to_owned() });
        let ns_value = ns.parse().map_err(|_| {
            LookupError::Protocol(format!("namespace {ns:?} is not a header value"))
        })?;
        req.metadata_mut().insert("containerd-namespace", ns_value);
        let codec = tonic_prost::ProstCodec::<GetContainerRequest, GetContainerResponse>::default();
        match grpc.unary(req, PathAndQuery::from_static(GET), codec).await {
            Ok(resp) => Ok(resp.into_inner().container),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) if s.code() == tonic::Code::Unavailable => Err(LookupError::Unreachable(
                format!("containerd (namespace {ns}): {}", s.message()),
            )),
            Err(s) => Err(LookupError::Protocol(format!(
                "containerd (namespace {ns}): {:?}: {}",
                s.code(),
                s.message()
            ))),
        }
    }
}

/// Name and image of a containerd container: the name from the labels
/// runtimes on top of containerd write, else the id (containerd itself
/// names a container by its id, as `ctr` shows it).
pub fn meta_of(c: &Container) -> ContainerMeta {
    let name = NAME_LABELS
        .iter()
        .find_map(|l| c.labels.get(*l).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| c.id.clone());
    ContainerMeta {
        name,
        image: c.image.clone(),
        runtime: "containerd",
    }
}
