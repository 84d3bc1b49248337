//! `picket.v1.AgentService`: version, identity and readiness.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ApiState;
use crate::delivery::proto::{self, pb};

pub struct AgentApi {
    pub state: Arc<ApiState>,
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let peer = super::identity::peer_identity(&req);
        let (first, last) = self.state.spool.bounds();
        Ok(Response::new(pb::InfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host_name: self.state.host_name.clone(),
            node_name: self.state.node_name.clone(),
            started: Some(proto::timestamp_to_pb(self.state.started)),
            spool_first_seq: if first > last { 0 } else { first },
            spool_last_seq: last,
            peer_identity: peer,
        }))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let r = &self.state.readiness;
        Ok(Response::new(pb::HealthResponse {
            programs_loaded: r.programs_loaded(),
            sinks_started: r.sinks_started(),
            ready: r.is_ready(),
        }))
    }
}
