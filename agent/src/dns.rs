//! Addresses of the host names written in rules, for Falco's
//! `fd.sip.name = X` (and `fd.cip.name`, `fd.rip.name`, `fd.lip.name`).
//!
//! Falco's semantics: the names in a condition are resolved through the
//! node's resolver and refreshed periodically; `fd.sip.name = X` holds when
//! the server address is one of X's current addresses. Picket does the same:
//! compiling a rule registers its names here ([`host`]); a background thread
//! of its own (never the event runtime) resolves every registered name at
//! once, then every [`REFRESH`], each lookup bounded by [`LOOKUP_TIMEOUT`].
//! The event path only reads the last result (one atomic load per name).
//!
//! A lookup that fails or times out keeps the previous addresses (a
//! resolver hiccup must not blind a rule) and is counted in
//! `picket_dns_lookups_total{result="ok|error|timeout"}`. A name never
//! resolved has no addresses: the test is false, as in Falco.
//!
//! Kubernetes: every pod gets `KUBERNETES_SERVICE_HOST`, the ClusterIP of
//! the `kubernetes` Service in `default`. That is the address
//! `kubernetes.default.svc.cluster.local` (and its short forms) resolves to
//! with cluster DNS, which an agent on the host network often does not
//! use: for those names the address from the environment is added to what
//! DNS gives.
//!
//! The registry is process-wide because rules are compiled in many places
//! (start, hot reload, lint) that share no handle; a name stays registered
//! for the life of the process, bounded by [`MAX_HOSTS`].

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Condvar, LazyLock, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use prometheus_client::{
    encoding::EncodeLabelSet, metrics::counter::Counter, metrics::family::Family,
};

/// How often every registered name is resolved again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// Longest wait for one lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most names kept; further names are never resolved (and logged).
pub const MAX_HOSTS: usize = 1024;

/// The names that denote the API server's Service (see the module docs).
const KUBERNETES_NAMES: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

static LOOKUPS: LazyLock<Family<ResultLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "dns_lookups",
        "Lookups of host names used in rules (fd.sip.name) by result: ok, error (the resolver \
         failed; the previous addresses are kept), timeout",
        Family::default(),
    )
});

fn count(result: &'static str) {
    LOOKUPS.get_or_create(&ResultLabel { result }).inc();
}

/// One host name and its current addresses.
#[derive(Debug)]
pub struct Host {
    name: Box<str>,
    addrs: ArcSwap<Vec<IpAddr>>,
}

impl Host {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            addrs: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses of the last successful lookup.
    pub fn addrs(&self) -> Arc<Vec<IpAddr>> {
        self.addrs.load_full()
    }

    #[inline]
    fn contains(&self, ip: &IpAddr) -> bool {
        self.addrs.load().contains(ip)
    }

    fn store(&self, mut addrs: Vec<IpAddr>) {
        for a in &mut addrs {
            *a = canonical(*a);
        }
        addrs.sort_unstable();
        addrs.dedup();
        if **self.addrs.load() != addrs {
            tracing::info!(name = %self.name, ?addrs, "rule host name resolved");
            self.addrs.store(Arc::new(addrs));
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (as event addresses do).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hosts one test names (`fd.sip.name in (a, b)`).
#[derive(Debug, Clone)]
pub struct HostSet(Box<[Arc<Host>]>);

impl HostSet {
    /// Registers `names` (resolved in the background from now on).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Self(names.iter().map(|n| host(n.as_ref())).collect())
    }

    /// Whether `ip` is a current address of one of the names.
    #[inline]
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.0.iter().any(|h| h.contains(&ip))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|h| h.name())
    }
}

struct Registry {
    hosts: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    hosts: HashMap<Box<str>, Arc<Host>>,
    /// Names registered since the last pass: resolved at once.
    fresh: bool,
    started: bool,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    hosts: Mutex::new(State::default()),
    wake: Condvar::new(),
});

/// The entry of `name` (case-insensitive, without a trailing dot),
/// registering it and starting the resolver thread on first use.
pub fn host(name: &str) -> Arc<Host> {
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    let mut st = REGISTRY.hosts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = st.hosts.get(key.as_str()) {
        return h.clone();
    }
    let h = Arc::new(Host::new(&key));
    if st.hosts.len() >= MAX_HOSTS {
        tracing::warn!(name = %key, max = MAX_HOSTS, "too many host names in rules: not resolved");
        return h;
    }
    st.hosts.insert(key.into(), h.clone());
    st.fresh = true;
    if !st.started {
        match std::thread::Builder::new()
            .name("picket-dns".into())
            .spawn(refresher)
        {
            Ok(_) => st.started = true,
            Err(e) => tracing::error!(error = %e, "cannot start the host name resolver"),
        }
    }
    REGISTRY.wake.notify_all();
    h
}

/// The resolver thread: a private current-thread runtime (lookups run on
/// its blocking pool), one pass when names are added or [`REFRESH`] passed.
fn refresher() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the host name resolver runtime");
            return;
        }
    };
    loop {
        let hosts: Vec<Arc<Host>> = {
            let mut st = REGISTRY.hosts.lock().unwrap_or_else(|e| e.into_inner());
            st.fresh = false;
            st.hosts.values().cloned().collect()
        };
        let k8s = kubernetes_service_host();
        for h in &hosts {
            let mut addrs = match rt.block_on(resolve(h.name())) {
                Ok(a) => a,
                Err(result) => {
                    count(result);
                    // Keep the last addresses, and the Service's if known.
                    let mut keep = (*h.addrs()).clone();
                    if let Some(ip) = k8s.filter(|_| KUBERNETES_NAMES.contains(&h.name())) {
                        keep.push(ip);
                    }
                    h.store(keep);
                    continue;
                }
            };
            count("ok");
            if let Some(ip) = k8s.filter(|_| KUBERNETES_NAMES.contains(&h.name())) {
                addrs.push(ip);
            }
            h.store(addrs);
        }
        let st = REGISTRY.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = REGISTRY
            .wake
            .wait_timeout_while(st, REFRESH, |st| !st.fresh)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// The addresses of `name`, or the result label of the failure.
async fn resolve(name: &str) -> Result<Vec<IpAddr>, &'static str> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(it)) => Ok(it.map(|sa| sa.ip()).collect()),
        Ok(Err(e)) => {
            tracing::debug!(name, error = %e, "host name lookup failed");
            Err("error")
        }
        Err(_) => {
            tracing::debug!(name, "host name lookup timed out");
            Err("timeout")
        }
    }
}

/// `KUBERNETES_SERVICE_HOST` when it is an address.
fn kubernetes_service_host() -> Option<IpAddr> {
    std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_resolved(set: &HostSet, ip: IpAddr) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if set.contains(&ip) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn localhost_resolves_in_the_background() {
        let set = HostSet::new(&["LocalHost."]);
        assert_eq!(set.names().collect::<Vec<_>>(), ["localhost"]);
        assert!(wait_resolved(&set, "127.0.0.1".parse().expect("ip")));
        // The mapped form of the same address matches too.
        assert!(set.contains(&"::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!set.contains(&"127.0.0.2".parse().expect("ip")));
        // The same entry is shared by every test naming it.
        assert!(Arc::ptr_eq(&host("localhost"), &host("localhost.")));
    }

    #[test]
    fn an_unresolvable_name_matches_nothing_and_is_counted() {
        let failed = || {
            ["error", "timeout"]
                .map(|result| LOOKUPS.get_or_create(&ResultLabel { result }).get())
                .iter()
                .sum::<u64>()
        };
        let before = failed();
        let set = HostSet::new(&["picket-no-such-host.invalid"]);
        let deadline = std::time::Instant::now() + LOOKUP_TIMEOUT + Duration::from_secs(5);
        while failed() == before {
            assert!(std::time::Instant::now() < deadline, "lookup not counted");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(set.0[0].addrs().is_empty());
        assert!(!set.contains(&"127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn addresses_are_canonical_and_sorted() {
        let h = Host::new("x");
        h.store(vec![
            "::ffff:10.0.0.2".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ]);
        assert_eq!(
            *h.addrs(),
            [
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "10.0.0.2".parse().expect("ip")
            ]
        );
    }
}
