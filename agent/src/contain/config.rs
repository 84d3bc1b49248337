//! The `containment:` section of the agent's configuration file.
//!
//! ```yaml
//! containment:
//!   enabled: true              # off by default: detection only
//!   dry_run: false             # report what would be done, do nothing
//!   allow_host: false          # act on processes outside containers
//!   protected_namespaces: [kube-system, picket]
//!   protected_labels: ["picket.io/protected", "tier=database"]
//!   rate_limits:               # token buckets; `null` disables one
//!     per_rule: {burst: 5, per_seconds: 60}
//!     per_namespace: {burst: 10, per_seconds: 60}
//!     global: {burst: 30, per_seconds: 60}
//!   delete_grace_period_seconds: 30
//!   kill_wait_ms: 5000
//!   history: 1000
//!   pin_dir: /sys/fs/bpf/picket/containment   # pinned egress-block links
//!   state_dir: /var/lib/picket/containment    # what each block was for
//! ```
//!
//! The agent's own pod comes from `POD_NAMESPACE`/`POD_NAME` (downward API)
//! and its own cgroup from `/proc/self/cgroup`; both are always protected.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    engine::ContainmentConfig,
    safety::{Rate, SafetyConfig},
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub burst: u32,
    pub per_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub per_rule: Option<RateSpec>,
    pub per_namespace: Option<RateSpec>,
    pub global: Option<RateSpec>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_rule: Some(RateSpec {
                burst: 5,
                per_seconds: 60,
            }),
            per_namespace: Some(RateSpec {
                burst: 10,
                per_seconds: 60,
            }),
            global: Some(RateSpec {
                burst: 30,
                per_seconds: 60,
            }),
        }
    }
}

/// The file's `containment:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainmentFileConfig {
    pub enabled: bool,
    pub dry_run: bool,
    pub allow_host: bool,
    pub protected_namespaces: Vec<String>,
    /// `key` (any value) or `key=value`.
    pub protected_labels: Vec<String>,
    pub rate_limits: RateLimits,
    pub delete_grace_period_seconds: u32,
    pub kill_wait_ms: u64,
    pub history: usize,
    /// bpffs directory where egress-block links are pinned (they survive
    /// agent restarts); picket-owned, one per agent instance.
    pub pin_dir: PathBuf,
    /// Where the record of each block is kept.
    pub state_dir: PathBuf,
}

impl Default for ContainmentFileConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dry_run: false,
            allow_host: false,
            protected_namespaces: vec!["kube-system".into()],
            protected_labels: Vec::new(),
            rate_limits: RateLimits::default(),
            delete_grace_period_seconds: 30,
            kill_wait_ms: 5000,
            history: 1000,
            pin_dir: PathBuf::from(super::persist::DEFAULT_PIN_DIR),
            state_dir: PathBuf::from(super::persist::DEFAULT_STATE_DIR),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("containment: {0}")]
    Invalid(String),
}

fn rate(field: &str, r: &Option<RateSpec>) -> Result<Option<Rate>, ConfigError> {
    match r {
        None => Ok(None),
        Some(r) if r.burst == 0 || r.per_seconds == 0 => Err(ConfigError::Invalid(format!(
            "rate_limits.{field}: burst and per_seconds must be at least 1 (use null to disable the limit)"
        ))),
        Some(r) => Ok(Some(Rate::new(r.burst, Duration::from_secs(r.per_seconds)))),
    }
}

impl ContainmentFileConfig {
    /// Where blocks are pinned and recorded.
    pub fn persist(&self) -> super::persist::PersistConfig {
        super::persist::PersistConfig {
            pin_dir: self.pin_dir.clone(),
            state_dir: self.state_dir.clone(),
        }
    }

    /// Parses the opaque `containment:` value of the configuration file.
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(v.clone()).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The engine configuration for this node.
    pub fn engine_config(&self, node_name: &str) -> Result<ContainmentConfig, ConfigError> {
        let mut protected_labels = Vec::new();
        for l in &self.protected_labels {
            let (k, v) = match l.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (l.as_str(), None),
            };
            if k.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "protected_labels: {l:?} has no key"
                )));
            }
            protected_labels.push((k.to_string(), v));
        }
        let own_pod = match (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME")) {
            (Ok(ns), Ok(name)) if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
            _ => None,
        };
        let safety = SafetyConfig {
            dry_run: self.dry_run,
            protected_namespaces: self
                .protected_namespaces
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            protected_labels,
            allow_host: self.allow_host,
            own_pod,
            per_rule: rate("per_rule", &self.rate_limits.per_rule)?,
            per_namespace: rate("per_namespace", &self.rate_limits.per_namespace)?,
            global: rate("global", &self.rate_limits.global)?,
            ..SafetyConfig::default()
        };
        Ok(ContainmentConfig {
            safety,
            node_name: node_name.to_string(),
            delete_grace_period_seconds: self.delete_grace_period_seconds,
            kill_wait: Duration::from_millis(self.kill_wait_ms),
            history: self.history.max(1),
            ..ContainmentConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_off_and_safe() {
        let c = ContainmentFileConfig::from_value(&json!({})).unwrap();
        assert_eq!(c, ContainmentFileConfig::default());
        assert!(!c.enabled);
        let e = c.engine_config("n1").unwrap();
        assert_eq!(e.node_name, "n1");
        assert!(e.safety.protected_namespaces.contains("kube-system"));
        assert!(!e.safety.allow_host);
        assert_eq!(
            e.safety.per_rule,
            Some(Rate::new(5, Duration::from_secs(60)))
        );
    }

    #[test]
    fn full_section() {
        let c = ContainmentFileConfig::from_value(&json!({
            "enabled": true, "dry_run": true, "allow_host": true,
            "protected_namespaces": ["a"], "protected_labels": ["k", "t=db"],
            "rate_limits": {"per_rule": null, "global": {"burst": 2, "per_seconds": 10}},
            "delete_grace_period_seconds": 0, "kill_wait_ms": 100, "history": 5
        }))
        .unwrap();
        let e = c.engine_config("n").unwrap();
        assert!(e.safety.dry_run && e.safety.allow_host);
        assert_eq!(
            e.safety.protected_namespaces,
            BTreeSet::from(["a".to_string()])
        );
        assert_eq!(
            e.safety.protected_labels,
            vec![("k".into(), None), ("t".into(), Some("db".into()))]
        );
        assert_eq!(e.safety.per_rule, None);
        // Unset keys of a given `rate_limits` keep their defaults.
        assert_eq!(
            e.safety.per_namespace,
            Some(Rate::new(10, Duration::from_secs(60)))
        );
        assert_eq!(e.safety.global, Some(Rate::new(2, Duration::from_secs(10))));
        assert_eq!(e.kill_wait, Duration::from_millis(100));
        assert_eq!((e.delete_grace_period_seconds, e.history), (0, 5));
    }

    #[test]
    fn errors_name_the_field() {
        let e = ContainmentFileConfig::from_value(&json!({"enable": true})).unwrap_err();
        assert!(e.to_string().contains("unknown field `enable`"), "{e}");
        let c = ContainmentFileConfig::from_value(
            &json!({"rate_limits": {"global": {"burst": 0, "per_seconds": 1}}}),
        )
        .unwrap();
        assert_eq!(
            c.engine_config("n").unwrap_err().to_string(),
            "containment: rate_limits.global: burst and per_seconds must be at least 1 (use null to disable the limit)"
        );
        let c = ContainmentFileConfig::from_value(&json!({"protected_labels": ["=x"]})).unwrap();
        assert!(c.engine_config("n").is_err());
    }
}
