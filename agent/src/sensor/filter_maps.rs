//! Writing [`SensorFilters`] to the kernel atomically.
//!
//! Every filter map holds two generations (see `agent_common::settings`):
//! [`FilterMaps::apply`] rewrites the inactive generation completely, then
//! flips the one-entry `FILTER_GEN` map with a single update. A program run
//! reads the generation once and makes all its lookups in it, so it sees the
//! whole old set or the whole new one, never a mix.
//!
//! The generation that was just switched off is rewritten only by the *next*
//! apply, and not before [`GRACE`] has passed since the flip: tracepoint
//! programs run to completion in microseconds (under RCU, without sleeping),
//! so a run that read the old index has long finished when its maps change.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use agent_common::{
    EventKind,
    file::{FILE_PATH_MAX, path_tag},
    net::{NetFilter, port_filter, port_key},
    ratelimit::RateLimit,
    settings::{FILTER_GENERATIONS, file_filter},
};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
};

use super::filters::{FilterError, PortFilter, SensorFilters, path_key};
use crate::pipeline::sensors::wire_kind;

/// Minimum time between a flip and the next rewrite of the generation it
/// switched off (see the module docs).
pub const GRACE: Duration = Duration::from_millis(100);

type PathTrie = LpmTrie<MapData, [u8; FILE_PATH_MAX], u32>;

/// The filter maps, taken out of the loaded object.
pub struct FilterMaps {
    generation: Array<MapData, u32>,
    kinds: Array<MapData, u32>,
    rates: Array<MapData, RateLimit>,
    file_mode: Array<MapData, u32>,
    prefixes: [PathTrie; 2],
    suffixes: [PathTrie; 2],
    net: Array<MapData, NetFilter>,
    ports: HashMap<MapData, u32, u8>,
    /// Active generation (mirrors `FILTER_GEN`).
    active: u32,
    flipped_at: Option<Instant>,
    /// What the active generation holds.
    current: Option<SensorFilters>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> FilterError {
    move |source| FilterError::Map { name, source }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, FilterError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(FilterError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl FilterMaps {
    /// Takes the filter maps out of `ebpf` (once).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, FilterError> {
        const { assert!(FILTER_GENERATIONS == 2) };
        let generation: Array<MapData, u32> = take(ebpf, "FILTER_GEN")?;
        let active = generation.get(&0, 0).map_err(map_err("FILTER_GEN"))? & 1;
        Ok(Self {
            generation,
            kinds: take(ebpf, "KIND_DISABLED")?,
            rates: take(ebpf, "RATE_LIMITS")?,
            file_mode: take(ebpf, "FILE_FILTER")?,
            prefixes: [
                take(ebpf, "FILE_PREFIXES_0")?,
                take(ebpf, "FILE_PREFIXES_1")?,
            ],
            suffixes: [
                take(ebpf, "FILE_SUFFIXES_0")?,
                take(ebpf, "FILE_SUFFIXES_1")?,
            ],
            net: take(ebpf, "NET_FILTER")?,
            ports: take(ebpf, "NET_PORTS")?,
            active,
            flipped_at: None,
            current: None,
        })
    }

    /// The generation the programs use now (0 or 1).
    pub fn active_generation(&self) -> u32 {
        self.active
    }

    /// The filters the programs use now (`None` before the first apply).
    pub fn current(&self) -> Option<&SensorFilters> {
        self.current.as_ref()
    }

    /// Writes `f` to the inactive generation and makes it the active one.
    /// Blocks for at most [`GRACE`] when called right after a previous flip.
    /// On error the active generation is untouched (the kernel keeps the
    /// previous filters).
    pub fn apply(&mut self, f: &SensorFilters) -> Result<(), FilterError> {
        f.validate()?;
        if let Some(t) = self.flipped_at {
            let since = t.elapsed();
            if since < GRACE {
                std::thread::sleep(GRACE - since);
            }
        }
        let next = self.active ^ 1;
        self.write_generation(next, f)?;
        self.generation
            .set(0, next, 0)
            .map_err(map_err("FILTER_GEN"))?;
        self.active = next;
        self.flipped_at = Some(Instant::now());
        self.current = Some(f.clone());
        tracing::info!(
            generation = next,
            disabled = ?f.disabled,
            all_paths = f.all_paths,
            file_prefixes = f.file_prefixes.len(),
            file_suffixes = f.file_suffixes.len(),
            families = ?f.families,
            ports = ?f.ports,
            "in-kernel sensor filters applied"
        );
        Ok(())
    }

    fn write_generation(&mut self, g: u32, f: &SensorFilters) -> Result<(), FilterError> {
        let base = g * EventKind::COUNT;
        let off: BTreeSet<u32> = f
            .disabled
            .iter()
            .filter_map(|k| wire_kind(*k))
            .map(|k| k as u32)
            .collect();
        for slot in 0..EventKind::COUNT {
            self.kinds
                .set(base + slot, u32::from(off.contains(&slot)), 0)
                .map_err(map_err("KIND_DISABLED"))?;
        }
        for slot in 0..EventKind::COUNT {
            let lim = EventKind::from_u16(slot as u16)
                .and_then(|k| {
                    f.rates
                        .iter()
                        .find(|(name, _)| wire_kind(**name) == Some(k))
                })
                .map_or(RateLimit::default(), |(_, r)| RateLimit {
                    max_events: r.max_events,
                    _pad: 0,
                    window_ns: u64::try_from(r.window.as_nanos()).unwrap_or(u64::MAX),
                });
            self.rates
                .set(base + slot, lim, 0)
                .map_err(map_err("RATE_LIMITS"))?;
        }
        let i = g as usize;
        replace_trie(
            &mut self.prefixes[i],
            "FILE_PREFIXES",
            &tagged_paths(&f.file_prefixes, &f.change_prefixes, &f.file_exact, false),
            false,
        )?;
        replace_trie(
            &mut self.suffixes[i],
            "FILE_SUFFIXES",
            &tagged_paths(&f.file_suffixes, &f.change_suffixes, &BTreeSet::new(), true),
            true,
        )?;
        let mut mode = 0;
        if f.all_paths {
            mode |= file_filter::ALL_PATHS;
        }
        if f.change_all_paths {
            mode |= file_filter::CHANGE_ALL_PATHS;
        }
        self.file_mode
            .set(g, mode, 0)
            .map_err(map_err("FILE_FILTER"))?;
        self.write_net(g, f)
    }

    fn write_net(&mut self, g: u32, f: &SensorFilters) -> Result<(), FilterError> {
        let (mode, ports) = match &f.ports {
            PortFilter::All => (port_filter::OFF, BTreeSet::new()),
            PortFilter::Only(p) => (port_filter::ONLY_LISTED, p.clone()),
            PortFilter::Exclude(p) => (port_filter::EXCLUDE_LISTED, p.clone()),
        };
        let name = "NET_PORTS";
        let stale: Vec<u32> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k >> 16 == g && !ports.contains(&((k & 0xffff) as u16)))
            .collect();
        for k in stale {
            self.ports.remove(&k).map_err(map_err(name))?;
        }
        for p in &ports {
            self.ports
                .insert(port_key(g, *p), 1, 0)
                .map_err(map_err(name))?;
        }
        let family_mask = f
            .families
            .iter()
            .filter(|f| **f < 64)
            .fold(0u64, |m, f| m | (1u64 << f));
        self.net
            .set(
                g,
                NetFilter {
                    family_mask,
                    port_mode: mode,
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err("NET_FILTER"))
    }
}

/// The trie entries for the `file_open` literals `open` and the
/// `file_change` literals `change`, each with its `path_tag` bits.
///
/// An LPM lookup returns only the longest matching entry, so every entry
/// also carries the kind tags of the entries it extends (a prefix entry
/// extends the shorter prefixes it starts with; a suffix entry, the shorter
/// suffixes it ends with): then the one entry the kernel finds says every
/// kind any matching literal applies to. An entry in `exact` (exact paths
/// of `file_open` rules; prefixes only) also gets `EXACT_OPEN` and its
/// length, which are its own and never inherited.
pub fn tagged_paths(
    open: &BTreeSet<String>,
    change: &BTreeSet<String>,
    exact: &BTreeSet<String>,
    suffix: bool,
) -> BTreeMap<String, u32> {
    let mut own: BTreeMap<String, u32> = BTreeMap::new();
    for p in open {
        *own.entry(p.clone()).or_default() |= path_tag::OPEN;
    }
    for p in change {
        *own.entry(p.clone()).or_default() |= path_tag::CHANGE;
    }
    own.keys()
        .map(|p| {
            let mut tag = own
                .iter()
                .filter(|(q, _)| {
                    if suffix {
                        p.ends_with(q.as_str())
                    } else {
                        p.starts_with(q.as_str())
                    }
                })
                .fold(0, |t, (_, qt)| t | (qt & path_tag::KINDS));
            if !suffix && p.len() < FILE_PATH_MAX && exact.contains(p) && open.contains(p) {
                tag |= path_tag::EXACT_OPEN | ((p.len() as u32) << path_tag::LEN_SHIFT);
            }
            (p.clone(), tag)
        })
        .collect()
}

/// Makes `trie` hold exactly `paths` with their tags (it is inactive:
/// order is free).
fn replace_trie(
    trie: &mut PathTrie,
    name: &'static str,
    paths: &BTreeMap<String, u32>,
    reversed: bool,
) -> Result<(), FilterError> {
    let new: Vec<(Key<[u8; FILE_PATH_MAX]>, u32)> = paths
        .iter()
        .map(|(p, t)| path_key(p, reversed).map(|k| (k, *t)))
        .collect::<Result<_, _>>()?;
    let old: Vec<Key<[u8; FILE_PATH_MAX]>> = trie.keys().filter_map(Result::ok).collect();
    let same = |a: &Key<[u8; FILE_PATH_MAX]>, b: &Key<[u8; FILE_PATH_MAX]>| {
        a.prefix_len() == b.prefix_len() && a.data() == b.data()
    };
    for k in old.iter().filter(|o| !new.iter().any(|(n, _)| same(n, o))) {
        trie.remove(k).map_err(map_err(name))?;
    }
    for (k, t) in &new {
        trie.insert(k, t, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// A shareable handle on the filter maps: the rule-reload task updates the
/// filters while the agent owns the sensor.
#[derive(Clone)]
pub struct FilterHandle(std::sync::Arc<std::sync::Mutex<FilterMaps>>);

impl FilterHandle {
    pub fn new(maps: FilterMaps) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(maps)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FilterMaps> {
        // A panic while holding the lock leaves the maps valid: the active
        // generation is only switched after a complete write.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`FilterMaps::apply`] (may block up to [`GRACE`]).
    pub fn apply(&self, f: &SensorFilters) -> Result<(), FilterError> {
        self.lock().apply(f)
    }

    /// The filters the programs use now.
    pub fn current(&self) -> Option<SensorFilters> {
        self.lock().current().cloned()
    }

    pub fn active_generation(&self) -> u32 {
        self.lock().active_generation()
    }
}

impl std::fmt::Debug for FilterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHandle")
            .field("generation", &self.active_generation())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn longer_entries_inherit_the_tags_of_the_ones_they_extend() {
        let t = tagged_paths(
            &set(&["/etc/shadow", "/root/.ssh/"]),
            &set(&["/etc/", "/root/.ssh/"]),
            &BTreeSet::new(),
            false,
        );
        let want: BTreeMap<String, u32> = [
            ("/etc/".to_string(), path_tag::CHANGE),
            ("/etc/shadow".to_string(), path_tag::OPEN | path_tag::CHANGE),
            ("/root/.ssh/".to_string(), path_tag::OPEN | path_tag::CHANGE),
        ]
        .into();
        assert_eq!(t, want);
    }

    #[test]
    fn suffix_entries_inherit_by_ending() {
        let t = tagged_paths(
            &set(&["/.ssh/authorized_keys"]),
            &set(&["_keys", "/.bash_history"]),
            &BTreeSet::new(),
            true,
        );
        assert_eq!(
            t["/.ssh/authorized_keys"],
            path_tag::OPEN | path_tag::CHANGE
        );
        assert_eq!(t["_keys"], path_tag::CHANGE);
        assert_eq!(t["/.bash_history"], path_tag::CHANGE);
    }

    #[test]
    fn exact_rule_paths_carry_their_length_and_pass_it_on_to_no_one() {
        let t = tagged_paths(
            &set(&["/etc/shadow", "/etc/shadow.d/", "/etc/"]),
            &set(&[]),
            &set(&["/etc/shadow", "/etc/"]),
            false,
        );
        let exact = |len: u32| path_tag::OPEN | path_tag::EXACT_OPEN | (len << path_tag::LEN_SHIFT);
        assert_eq!(t["/etc/shadow"], exact(11));
        assert_eq!(t["/etc/"], exact(5));
        // Extends both exact entries, is exact itself for no rule.
        assert_eq!(t["/etc/shadow.d/"], path_tag::OPEN);
    }
}
