//! Settings of the Kubernetes enricher and the `picket run` flags that set them.

use std::{path::PathBuf, time::Duration};

/// Whether to talk to the Kubernetes API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum K8sMode {
    /// On when running inside a pod (`KUBERNETES_SERVICE_HOST` set) or when
    /// `--kubeconfig` is given; off otherwise (host mode).
    #[default]
    Auto,
    /// Always on: a missing API server is an outage, retried with back-off.
    On,
    /// Host mode: no API calls; pod UIDs from cgroup paths only.
    Off,
}

/// How the enricher finds and talks to the API server.
#[derive(Clone, Debug, PartialEq)]
pub struct K8sConfig {
    /// Watch pods and namespaces at all (false = host mode).
    pub enabled: bool,
    /// This node's name: only pods with `spec.nodeName` equal to it are watched.
    pub node_name: String,
    /// A kubeconfig file; `None` = in-cluster service account, then `KUBECONFIG`
    /// / `~/.kube/config` (kube's `Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// How long deleted pods stay resolvable (events of short-lived pods often
    /// arrive after the DELETED watch event).
    pub tombstone_ttl: Duration,
    /// How long a lookup for a pod that is not in the cache yet waits for the
    /// watch to deliver it before the event goes out unresolved.
    pub metadata_wait: Duration,
    /// Upper bound on cached pods (live + tombstones): memory stays bounded even
    /// when a node runs thousands of pods.
    pub max_pods: usize,
    /// First retry delay after an API error (doubles up to `backoff_max`, with jitter).
    pub backoff_min: Duration,
    /// Longest retry delay after API errors.
    pub backoff_max: Duration,
    /// Timeout of one owner GET (ReplicaSet, Job) so a slow API server cannot
    /// stall the pod watch.
    pub owner_timeout: Duration,
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_name: String::new(),
            kubeconfig: None,
            tombstone_ttl: Duration::from_secs(300),
            metadata_wait: Duration::from_secs(2),
            max_pods: 10_000,
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            owner_timeout: Duration::from_secs(5),
        }
    }
}

/// `picket run` flags for Kubernetes enrichment (flatten into `RunArgs`).
///
/// The node name is not here: `RunArgs` already has `--node-name` / `NODE_NAME`.
#[derive(Clone, Debug, clap::Args)]
pub struct K8sArgs {
    /// Kubernetes enrichment: auto (on inside a pod or with --kubeconfig), on, off.
    #[arg(
        long = "kubernetes",
        value_enum,
        default_value = "auto",
        env = "PICKET_KUBERNETES"
    )]
    pub mode: K8sMode,
    /// Kubeconfig file (default: in-cluster service account, then KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How long deleted pods stay resolvable, e.g. `300s`, `5m`.
    #[arg(long = "k8s-tombstone-ttl", value_parser = parse_duration, default_value = "5m", env = "PICKET_K8S_TOMBSTONE_TTL")]
    pub tombstone_ttl: Duration,
    /// How long an event waits for pod metadata not cached yet, e.g. `2s`, `500ms`.
    #[arg(long = "k8s-metadata-wait", value_parser = parse_duration, default_value = "2s", env = "PICKET_K8S_METADATA_WAIT")]
    pub metadata_wait: Duration,
    /// Most pods (live + deleted) kept in the metadata cache.
    #[arg(
        long = "k8s-max-pods",
        default_value_t = 10_000,
        env = "PICKET_K8S_MAX_PODS"
    )]
    pub max_pods: usize,
}

impl K8sArgs {
    /// The enricher settings; `node_name` comes from `RunArgs::node_name` (or
    /// the host name, which equals the node name on most clusters).
    pub fn to_config(&self, node_name: &str) -> K8sConfig {
        let enabled = match self.mode {
            K8sMode::On => true,
            K8sMode::Off => false,
            K8sMode::Auto => {
                // kubectl's convention: a set KUBECONFIG names the cluster.
                self.kubeconfig.is_some()
                    || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
            }
        };
        K8sConfig {
            enabled,
            node_name: node_name.to_string(),
            kubeconfig: self.kubeconfig.clone(),
            tombstone_ttl: self.tombstone_ttl,
            metadata_wait: self.metadata_wait,
            max_pods: self.max_pods.max(1),
            ..K8sConfig::default()
        }
    }
}

/// Parses `500ms`, `2s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 2s, 500ms, 5m)"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
