//! The learned rule behind `anomalous-egress`.
//!
//! Per workload (Kubernetes owner + namespace; else the container image; else
//! the executable on a host) it learns the egress destinations (address
//! masked to a prefix, port, transport) and the busiest minute of outbound
//! connections during a learning window that starts when the workload is
//! first seen. After the window it reports destinations it never saw and
//! minutes whose connection count exceeds `rate_factor` times the learned
//! maximum (and `min_rate_per_minute`). Time is the events' own time, so
//! replays and tests are deterministic and never sleep.
//!
//! The baseline is saved as JSON with write-to-temp + fsync + rename, so a
//! crash leaves the old or the new file, never a torn one, and a restart
//! does not relearn.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{expr::eval::parse_ip, parse::BaselineSpec, template::Extras};
use crate::model::Event;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read the baseline {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the baseline {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the baseline {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

const VERSION: u32 = 1;

/// What the baseline found unusual about a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// `new destination` or `connection rate spike (N/min, learned max M/min)`.
    pub reason: String,
    pub workload: String,
    pub destination: String,
}

impl Extras for Anomaly {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "baseline.reason" => Some(&self.reason),
            "baseline.workload" => Some(&self.workload),
            "baseline.destination" => Some(&self.destination),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workload {
    first_seen: Option<Timestamp>,
    destinations: BTreeSet<String>,
    max_per_minute: u32,
    /// More destinations than `max_destinations` while learning: too diverse
    /// to judge, new destinations are not reported.
    #[serde(default)]
    overflow: bool,
    #[serde(skip)]
    minute: i64,
    #[serde(skip)]
    count: u32,
}

/// Learned state of every baseline rule, keyed by rule id then workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    version: u32,
    rules: BTreeMap<String, BTreeMap<String, Workload>>,
    #[serde(skip)]
    dirty: bool,
}

/// Outcome of one observation, for metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub anomaly: Option<Anomaly>,
    /// A cap stopped learning (workloads or destinations).
    pub overflow: bool,
    /// The workload was seen for the first time.
    pub new_workload: bool,
    /// A destination was added to the workload's baseline.
    pub new_destination: bool,
}

impl Baseline {
    pub fn new() -> Self {
        Self {
            version: VERSION,
            ..Default::default()
        }
    }

    /// Loads a saved baseline; a missing file is an empty baseline.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => {
                return Err(BaselineError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let b: Baseline = serde_json::from_str(&text).map_err(|source| BaselineError::Parse {
            path: path.into(),
            source,
        })?;
        Ok(Self {
            version: VERSION,
            ..b
        })
    }

    /// Writes the baseline atomically (temp file in the same directory,
    /// fsync, rename, fsync of the directory).
    pub fn save(&mut self, path: &Path) -> Result<(), BaselineError> {
        let err = |source| BaselineError::Write {
            path: path.into(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let json = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut tmp = tempfile_in(dir, path).map_err(err)?;
        tmp.1.write_all(&json).map_err(err)?;
        tmp.1.sync_all().map_err(err)?;
        std::fs::rename(&tmp.0, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp.0);
            err(e)
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        self.dirty = false;
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// (workloads, destinations) over all rules, for gauges.
    pub fn size(&self) -> (usize, usize) {
        let w = self.rules.values().map(BTreeMap::len).sum();
        let d = self
            .rules
            .values()
            .flat_map(|m| m.values())
            .map(|w| w.destinations.len())
            .sum();
        (w, d)
    }

    /// Learns from or judges one egress event of rule `rule`.
    pub fn observe(&mut self, rule: &str, spec: &BaselineSpec, ev: &Event) -> Observed {
        let mut out = Observed::default();
        let Some(dest) = destination(ev, spec) else {
            return out;
        };
        let key = workload_key(ev);
        let now = ev.time;
        let minute = now.as_second().div_euclid(60);
        if !self.rules.contains_key(rule) {
            self.rules.insert(rule.to_string(), BTreeMap::new());
        }
        let Some(workloads) = self.rules.get_mut(rule) else {
            return out;
        };
        if !workloads.contains_key(&key) {
            if workloads.len() >= spec.max_workloads {
                out.overflow = true;
                return out;
            }
            out.new_workload = true;
        }
        let w = workloads.entry(key.clone()).or_default();
        let first = *w.first_seen.get_or_insert_with(|| {
            self.dirty = true;
            now
        });
        // Per-minute connection count (event time).
        if w.minute != minute {
            w.minute = minute;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        let learning = now.duration_since(first).unsigned_abs() < spec.learning || now < first;
        if learning {
            if w.count > w.max_per_minute {
                w.max_per_minute = w.count;
                self.dirty = true;
            }
            if !w.destinations.contains(&dest) {
                if w.destinations.len() >= spec.max_destinations {
                    if !w.overflow {
                        w.overflow = true;
                        self.dirty = true;
                    }
                    out.overflow = true;
                } else {
                    w.destinations.insert(dest);
                    out.new_destination = true;
                    self.dirty = true;
                }
            }
            return out;
        }
        let threshold = w
            .max_per_minute
            .saturating_mul(spec.rate_factor)
            .max(spec.min_rate_per_minute);
        if !w.overflow && !w.destinations.contains(&dest) {
            // Reported once: the destination joins the baseline.
            if w.destinations.len() < spec.max_destinations.saturating_mul(2) {
                w.destinations.insert(dest.clone());
                out.new_destination = true;
                self.dirty = true;
            } else {
                out.overflow = true;
            }
            out.anomaly = Some(Anomaly {
                reason: "new destination".into(),
                workload: key,
                destination: dest,
            });
        } else if w.count == threshold.saturating_add(1) {
            out.anomaly = Some(Anomaly {
                reason: format!(
                    "connection rate spike ({} connections/min, learned max {}/min)",
                    w.count, w.max_per_minute
                ),
                workload: key,
                destination: dest,
            });
        }
        out
    }
}

/// Creates `<dir>/.<name>.tmp-<pid>` for writing.
fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("baseline.json");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    Ok((tmp, f))
}

/// The workload an event belongs to: `k8s:<ns>/<kind>/<name>`,
/// `image:<image>`, `container:<id>` or `exe:<path>`.
pub fn workload_key(ev: &Event) -> String {
    if let Some(k) = &ev.k8s {
        let ns = k.namespace.as_ref().map_or("?", |n| n.name.as_str());
        let owners = [
            ("deployment", &k.deployment),
            ("statefulset", &k.statefulset),
            ("daemonset", &k.daemonset),
            ("cronjob", &k.cronjob),
            ("job", &k.job),
            ("replicaset", &k.replicaset),
        ];
        for (kind, o) in owners {
            if let Some(o) = o {
                return format!("k8s:{ns}/{kind}/{}", o.name);
            }
        }
        if !k.pod.name.is_empty() {
            return format!("k8s:{ns}/pod/{}", k.pod.name);
        }
        return format!("k8s:pod-uid/{}", k.pod.uid);
    }
    if let Some(c) = &ev.container {
        if let Some(img) = c.image.as_ref().filter(|i| !i.name.is_empty()) {
            return format!("image:{}", img.name);
        }
        return format!("container:{}", c.id);
    }
    format!("exe:{}", ev.process.executable.path)
}

/// `10.0.1.0/24 443/tcp`: the peer masked to the configured prefix.
pub fn destination(ev: &Event, spec: &BaselineSpec) -> Option<String> {
    let n = ev.network.as_ref()?;
    let peer = n.peer.as_ref()?;
    let ip = parse_ip(&peer.address)?;
    let prefix = if ip.is_ipv4() {
        spec.ipv4_prefix
    } else {
        spec.ipv6_prefix
    };
    let net = IpNet::new(ip, prefix).ok()?.trunc();
    Some(format!("{net} {}/{}", peer.port, n.transport))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Endpoint, EventKindName, K8s, K8sNamespace, Named, Network};

    fn connect(secs: i64, addr: &str, port: u16) -> Event {
        let mut ev = Event::new(
            EventKindName::Connect,
            Timestamp::from_second(1_700_000_000 + secs).expect("ts"),
        );
        ev.network = Some(Network {
            transport: "tcp".into(),
            r#type: "ipv4".into(),
            peer: Some(Endpoint {
                address: addr.into(),
                port,
            }),
            local: None,
        });
        ev.k8s = Some(K8s {
            namespace: Some(K8sNamespace {
                name: "shop".into(),
                ..Default::default()
            }),
            deployment: Some(Named { name: "api".into() }),
            ..Default::default()
        });
        ev
    }

    fn spec() -> BaselineSpec {
        BaselineSpec {
            learning: Duration::from_secs(3600),
            min_rate_per_minute: 5,
            rate_factor: 2,
            ..Default::default()
        }
    }

    #[test]
    fn learns_then_reports_new_destinations_once() {
        let mut b = Baseline::new();
        let s = spec();
        assert_eq!(
            b.observe("r", &s, &connect(0, "10.0.1.5", 443)).anomaly,
            None
        );
        // Same /24, after learning: known.
        assert_eq!(
            b.observe("r", &s, &connect(4000, "10.0.1.99", 443)).anomaly,
            None
        );
        let a = b
            .observe("r", &s, &connect(4001, "10.0.2.1", 443))
            .anomaly
            .expect("anomaly");
        assert_eq!(
            a,
            Anomaly {
                reason: "new destination".into(),
                workload: "k8s:shop/deployment/api".into(),
                destination: "10.0.2.0/24 443/tcp".into()
            }
        );
        assert_eq!(
            b.observe("r", &s, &connect(4002, "10.0.2.1", 443)).anomaly,
            None
        );
        // Another port is another destination.
        assert!(
            b.observe("r", &s, &connect(4003, "10.0.1.5", 80))
                .anomaly
                .is_some()
        );
    }

    #[test]
    fn rate_spike_over_factor_times_learned_max() {
        let mut b = Baseline::new();
        let s = spec();
        for i in 0..3 {
            b.observe("r", &s, &connect(i, "10.0.1.5", 443));
        }
        // learned max 3/min, factor 2 -> threshold max(6, 5) = 6; the 7th in a minute alerts.
        // Two hours in: past learning; the ten events fall in one minute.
        let base = 7200;
        let mut anomalies = Vec::new();
        for i in 0..10 {
            if let Some(a) = b
                .observe("r", &s, &connect(base + i, "10.0.1.5", 443))
                .anomaly
            {
                anomalies.push((i, a.reason));
            }
        }
        assert_eq!(
            anomalies,
            vec![(
                6,
                "connection rate spike (7 connections/min, learned max 3/min)".to_string()
            )]
        );
    }

    #[test]
    fn caps_stop_learning() {
        let mut b = Baseline::new();
        let s = BaselineSpec {
            max_destinations: 2,
            ..spec()
        };
        assert!(!b.observe("r", &s, &connect(0, "10.0.1.1", 1)).overflow);
        assert!(!b.observe("r", &s, &connect(1, "10.0.1.1", 2)).overflow);
        assert!(b.observe("r", &s, &connect(2, "10.0.1.1", 3)).overflow);
        // Too diverse: no new-destination alerts.
        assert_eq!(
            b.observe("r", &s, &connect(5000, "192.0.2.1", 9)).anomaly,
            None
        );
    }

    #[test]
    fn persists_and_reloads_without_relearning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/baseline.json");
        let mut b = Baseline::new();
        let s = spec();
        b.observe("r", &s, &connect(0, "10.0.1.5", 443));
        assert!(b.is_dirty());
        b.save(&path).expect("save");
        assert!(!b.is_dirty());
        let mut again = Baseline::load(&path).expect("load");
        assert_eq!(again.size(), (1, 1));
        // Learning window measured from the persisted first sighting.
        assert_eq!(
            again
                .observe("r", &s, &connect(4000, "10.0.1.7", 443))
                .anomaly,
            None
        );
        assert!(
            again
                .observe("r", &s, &connect(4001, "10.9.9.9", 443))
                .anomaly
                .is_some()
        );
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(names, vec!["baseline.json".to_string()]);
        assert_eq!(
            Baseline::load(&dir.path().join("missing.json")).expect("missing"),
            Baseline::new()
        );
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(
            Baseline::load(&path),
            Err(BaselineError::Parse { .. })
        ));
    }

    #[test]
    fn workload_keys() {
        let mut ev = connect(0, "10.0.0.1", 1);
        assert_eq!(workload_key(&ev), "k8s:shop/deployment/api");
        ev.k8s = None;
        ev.process.executable.path = "/usr/bin/curl".into();
        assert_eq!(workload_key(&ev), "exe:/usr/bin/curl");
        ev.network.as_mut().expect("net").peer = Some(Endpoint {
            address: "2001:db8::1".into(),
            port: 53,
        });
        assert_eq!(
            destination(&ev, &spec()).as_deref(),
            Some("2001:db8::/64 53/tcp")
        );
    }
}
