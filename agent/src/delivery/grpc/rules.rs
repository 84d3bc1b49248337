//! `picket.v1.RuleService` and the [`RuleControl`] trait through which the
//! rule engine serves it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ApiState;
use crate::delivery::proto::{self, pb};
use crate::model::{EventKindName, Severity};

/// A loaded rule as the API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSummary {
    pub id: String,
    pub name: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub events: Vec<EventKindName>,
    pub enabled: bool,
    /// File the rule came from.
    pub source: String,
}

/// A problem found in a rules document.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleProblem {
    pub rule_id: Option<String>,
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub message: String,
}

/// The result of validating a document: valid when `problems` is empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validation {
    pub rule_count: usize,
    pub problems: Vec<RuleProblem>,
}

/// What the rule engine offers the API. Calls run on the blocking pool, so
/// implementations may read files.
pub trait RuleControl: Send + Sync + 'static {
    fn list(&self) -> Vec<RuleSummary>;
    fn validate(&self, yaml: &str) -> Validation;
    /// Re-reads the configured rules; on error the old set stays active.
    /// Returns the number of rules loaded.
    fn reload(&self) -> Result<usize, Vec<RuleProblem>>;
}

pub struct RuleApi {
    pub state: Arc<ApiState>,
}

fn problem_pb(p: RuleProblem) -> pb::RuleProblem {
    pb::RuleProblem {
        rule_id: p.rule_id.unwrap_or_default(),
        line: p.line.unwrap_or(0),
        message: p.message,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RuleApi {
    fn control(&self) -> Result<Arc<dyn RuleControl>, Status> {
        self.state
            .rules
            .clone()
            .ok_or_else(|| Status::unimplemented("rule management is not wired in this agent"))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl pb::rule_service_server::RuleService for RuleApi {
    async fn list_rules(
        &self,
        _req: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let rc = self.control()?;
        let rules = blocking(move || rc.list()).await?;
        let rules = rules
            .into_iter()
            .map(|r| pb::RuleInfo {
                id: r.id,
                name: r.name,
                severity: proto::severity_to_pb(r.severity) as i32,
                tags: r.tags,
                events: r.events.iter().map(|k| k.as_str().to_owned()).collect(),
                enabled: r.enabled,
                source: r.source,
            })
            .collect();
        Ok(Response::new(pb::ListRulesResponse { rules }))
    }

    async fn validate_rules(
        &self,
        req: Request<pb::ValidateRulesRequest>,
    ) -> Result<Response<pb::ValidateRulesResponse>, Status> {
        let rc = self.control()?;
        let yaml = req.into_inner().yaml;
        let v = blocking(move || rc.validate(&yaml)).await?;
        Ok(Response::new(pb::ValidateRulesResponse {
            valid: v.problems.is_empty(),
            rule_count: count(v.rule_count),
            problems: v.problems.into_iter().map(problem_pb).collect(),
        }))
    }

    async fn reload_rules(
        &self,
        req: Request<pb::ReloadRulesRequest>,
    ) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let peer = super::identity::peer_identity(&req);
        let rc = self.control()?;
        let res = blocking(move || rc.reload()).await?;
        tracing::info!(peer = %peer, ok = res.is_ok(), "rule reload requested");
        Ok(Response::new(match res {
            Ok(n) => pb::ReloadRulesResponse {
                rule_count: count(n),
                problems: vec![],
            },
            Err(p) => pb::ReloadRulesResponse {
                rule_count: 0,
                problems: p.into_iter().map(problem_pb).collect(),
            },
        }))
    }
}
