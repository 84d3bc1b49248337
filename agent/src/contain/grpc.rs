//! `picket.v1.ContainmentService`: Contain / Release / ListActions on
//! demand, for authenticated callers only.
//!
//! Wiring (delivery's server): `.add_service(ContainmentServiceServer::new(
//! ContainApi::new(engine)))`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    action::{ActionKind, ActionRecord, ActionRequest, EgressScope, Target, Trigger},
    engine::Containment,
};
use crate::delivery::{
    grpc::identity::peer_identity,
    proto::{json_to_struct, pb},
};

pub use pb::containment_service_server::ContainmentServiceServer;

/// The service over a shared engine.
#[derive(Clone)]
pub struct ContainApi {
    engine: Arc<Containment>,
}

impl ContainApi {
    pub fn new(engine: Arc<Containment>) -> Self {
        Self { engine }
    }
}

/// The caller's identity, or UNAUTHENTICATED: only a verified client
/// certificate or a Unix-socket peer (SO_PEERCRED) counts.
pub fn authenticated<T>(req: &Request<T>) -> Result<String, Status> {
    let id = peer_identity(req);
    if id.starts_with("cn=") || id.starts_with("uid=") {
        return Ok(id);
    }
    tracing::warn!(peer = %id, "containment request from an unauthenticated caller rejected");
    super::metrics::REFUSALS
        .get_or_create(&super::metrics::RefusalLabels {
            action: "rpc",
            reason: "unauthenticated",
        })
        .inc();
    Err(Status::unauthenticated(format!(
        "containment needs an authenticated caller (mTLS or the Unix socket); got {id}"
    )))
}

/// Envelope + full record.
pub fn to_pb(r: &ActionRecord) -> pb::ActionResult {
    let record = match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => Some(json_to_struct(&m)),
        _ => None,
    };
    pb::ActionResult {
        id: r.id.clone(),
        action: r.action.as_str().to_string(),
        outcome: r.outcome.as_str().to_string(),
        message: r.message.clone(),
        release: r.release,
        record,
    }
}

fn pod_target(p: Option<pb::PodRef>) -> Result<Target, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("pod is required"))?;
    if p.namespace.is_empty() || p.name.is_empty() {
        return Err(Status::invalid_argument("pod needs a namespace and a name"));
    }
    Ok(Target {
        namespace: Some(p.namespace),
        pod: Some(p.name),
        ..Default::default()
    })
}

/// Actions that can be requested on demand (kill-process needs a process
/// identity the API does not take).
fn on_demand_action(s: &str) -> Result<ActionKind, Status> {
    match ActionKind::parse(s) {
        Some(ActionKind::KillProcess) | None => Err(Status::invalid_argument(format!(
            "action {s:?}: expected isolate-pod, delete-pod, block-egress or kill-container"
        ))),
        Some(a) => Ok(a),
    }
}

/// Builds the engine request of a Contain call.
pub fn contain_request(r: pb::ContainRequest, identity: String) -> Result<ActionRequest, Status> {
    let action = on_demand_action(&r.action)?;
    let mut req = ActionRequest::new(action, pod_target(r.pod)?, Trigger::Client { identity });
    req.reason = r.reason;
    req.dry_run = r.dry_run;
    req.grace_period_seconds = (r.grace_period_seconds > 0).then_some(r.grace_period_seconds);
    req.egress = if r.allow_dns {
        EgressScope::AllExceptDns { resolvers: vec![] }
    } else {
        EgressScope::All
    };
    Ok(req)
}

#[tonic::async_trait]
impl pb::containment_service_server::ContainmentService for ContainApi {
    async fn contain(
        &self,
        request: Request<pb::ContainRequest>,
    ) -> Result<Response<pb::ContainResponse>, Status> {
        let identity = authenticated(&request)?;
        let req = contain_request(request.into_inner(), identity)?;
        let rec = self.engine.execute(req).await;
        Ok(Response::new(pb::ContainResponse {
            result: Some(to_pb(&rec)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let identity = authenticated(&request)?;
        let r = request.into_inner();
        let action = match r.action.as_str() {
            "" => None,
            s => match ActionKind::parse(s) {
                Some(a) if a.releasable() => Some(a),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "action {s:?}: only block-egress and isolate-pod can be released"
                    )));
                }
            },
        };
        let target = pod_target(r.pod)?;
        let recs = self
            .engine
            .release(
                target,
                action,
                Trigger::Client { identity },
                r.reason,
                r.dry_run,
            )
            .await;
        Ok(Response::new(pb::ReleaseResponse {
            results: recs.iter().map(to_pb).collect(),
        }))
    }

    async fn list_actions(
        &self,
        request: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        authenticated(&request)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n as usize,
        };
        let recs = self.engine.list_actions(limit);
        Ok(Response::new(pb::ListActionsResponse {
            results: recs.iter().map(to_pb).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests_and_rejects_bad_ones() {
        let r = pb::ContainRequest {
            pod: Some(pb::PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
            }),
            action: "block-egress".into(),
            reason: "c2".into(),
            dry_run: true,
            grace_period_seconds: 0,
            allow_dns: true,
        };
        let req = contain_request(r.clone(), "cn=alice".into()).unwrap();
        assert_eq!(req.action, ActionKind::BlockEgress);
        assert_eq!(req.target.pod_ref(), Some(("shop", "web-1")));
        assert_eq!(
            req.trigger,
            Trigger::Client {
                identity: "cn=alice".into()
            }
        );
        assert_eq!(req.egress, EgressScope::AllExceptDns { resolvers: vec![] });
        assert!(req.dry_run);
        assert_eq!(req.grace_period_seconds, None);
        let bad = pb::ContainRequest {
            action: "kill-process".into(),
            ..r.clone()
        };
        assert_eq!(
            contain_request(bad, "x".into()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let no_pod = pb::ContainRequest { pod: None, ..r };
        assert_eq!(
            contain_request(no_pod, "x".into()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn plain_requests_are_unauthenticated() {
        let req = Request::new(());
        assert_eq!(
            authenticated(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
