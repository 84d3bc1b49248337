//! The agent's configuration file (`picket run --config FILE`), YAML or JSON.
//!
//! ```yaml
//! delivery:            # docs/delivery.md: spool, gRPC API, OTLP, /metrics
//!   http: { listen: 0.0.0.0:9090 }
//! containment:         # docs: containment (read by the containment engine)
//!   enabled: false
//! runtimes:            # docs/runtimes.md: runtime API sockets (names, images)
//!   docker_socket: /var/run/docker.sock
//! ```
//!
//! YAML is read with the same located parser as the rule files, so an error
//! names the line and column; it is then converted to JSON values and
//! deserialized with serde (unknown fields are errors).

use std::path::Path;

use serde::Deserialize;

use crate::rules::yaml::{self, Node, Style, Value};

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub delivery: Option<crate::delivery::DeliveryConfig>,
    /// Handed to the containment engine as is.
    #[serde(default)]
    pub containment: Option<serde_json::Value>,
    /// Runtime API sockets for container names and images (docs/runtimes.md).
    #[serde(default)]
    pub runtimes: crate::container::runtime_api::RuntimeApiConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Yaml {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Reads `path` (JSON when it ends in `.json`, YAML otherwise).
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: p.clone(),
            message: e.to_string(),
        })?
    } else {
        let node = yaml::parse(&text).map_err(|e| ConfigError::Yaml {
            path: p.clone(),
            line: e.pos.line,
            column: e.pos.column,
            message: e.message,
        })?;
        to_json(&node)
    };
    serde_json::from_value(value).map_err(|e| ConfigError::Invalid {
        path: p,
        message: e.to_string(),
    })
}

/// YAML node -> JSON value. Plain scalars become booleans, numbers or null
/// when they read as such; quoted scalars stay strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Scalar(s, Style::Plain) => {
            if node.is_null() {
                J::Null
            } else if s == "true" || s == "false" {
                J::Bool(s == "true")
            } else if let Ok(i) = s.parse::<i64>() {
                J::from(i)
            } else if let Ok(f) = s.parse::<f64>() {
                J::from(f)
            } else {
                J::String(s.clone())
            }
        }
        Value::Scalar(s, _) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_and_nesting() {
        let n = yaml::parse("a: 1\nb: 'x'\nc: true\nd: ~\ne: [1.5, foo]\nf: {g: \"2\"}\n")
            .expect("yaml");
        assert_eq!(
            to_json(&n),
            serde_json::json!({"a": 1, "b": "x", "c": true, "d": null, "e": [1.5, "foo"], "f": {"g": "2"}})
        );
    }

    #[test]
    fn the_deployed_config_parses() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("picket.yaml");
        std::fs::write(
            &p,
            "delivery:\n  http:\n    listen: 0.0.0.0:9090\n  jsonl:\n    - name: stdout\n      path: \"-\"\ncontainment:\n  enabled: false\n",
        )
        .expect("write");
        let c = load(&p).expect("config");
        let d = c.delivery.expect("delivery");
        assert!(d.http.is_some());
        assert_eq!(d.jsonl.len(), 1);
        assert_eq!(c.containment, Some(serde_json::json!({"enabled": false})));
        std::fs::write(&p, "delivery:\n  nosuch: 1\n").expect("write");
        let e = load(&p).expect_err("unknown field");
        assert!(e.to_string().contains("nosuch"), "{e}");
    }
}
