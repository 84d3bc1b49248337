//! Stateful rule constructs: `aggregate` (many distinct values from one
//! group in a short window: scans) and `after` (this event follows an
//! earlier match of another rule with the same key: a file written by a
//! downloader, then executed).
//!
//! Both keep bounded state in the engine, keyed by rule id so it survives
//! reloads: at most `max_groups` groups per `aggregate` rule, each holding
//! fewer than `threshold` values per `distinct` field, and at most
//! `max_entries` keys per `after` rule. When a table is full, expired
//! entries are dropped first, then the least recently updated entry is
//! evicted; every eviction is counted
//! (`picket_rule_state_evictions_total{rule}`), because an evicted group
//! or key is a possible missed detection. Windows use the events' own time,
//! so replays and fixtures are deterministic.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;

use super::{
    fields::{Accessor, FieldValue},
    template::Extras,
};
use crate::model::Event;

/// Names an output template of an `aggregate` rule may use besides fields.
pub const AGGREGATE_EXTRAS: &[&str] = &["aggregate.field", "aggregate.count", "aggregate.values"];

/// Names an output template of an `after` rule may use besides fields.
pub const AFTER_EXTRAS: &[&str] = &[
    "after.rule",
    "after.key",
    "after.kind",
    "after.process",
    "after.command_line",
    "after.pid",
];

/// Values listed in `{aggregate.values}` at most.
const SHOWN_VALUES: usize = 8;

/// A compiled `aggregate:` block.
#[derive(Debug)]
pub struct Aggregate {
    pub(crate) by: Vec<Accessor>,
    /// (field name, accessor) of each field whose distinct values count.
    pub(crate) distinct: Vec<(String, Accessor)>,
    pub threshold: u32,
    pub window: Duration,
    pub max_groups: usize,
}

/// A compiled `after:` block.
#[derive(Debug)]
pub struct After {
    /// The rule whose matches are remembered.
    pub rule: Arc<str>,
    /// This event's value looked up among the remembered keys.
    pub(crate) matching: Accessor,
    pub within: Duration,
}

/// What a rule's matches feed: the `after` rule that looks them up, the
/// fields remembered and the table's bounds.
#[derive(Debug)]
pub struct Feed {
    pub consumer: Arc<str>,
    pub(crate) key: Vec<Accessor>,
    pub within: Duration,
    pub max_entries: usize,
}

/// The stateful parts of a compiled rule (all empty for ordinary rules).
#[derive(Debug, Default)]
pub struct Stateful {
    pub aggregate: Option<Aggregate>,
    pub after: Option<After>,
    /// `after` rules that look this rule's matches up.
    pub feeds: Vec<Feed>,
}

/// Why an `aggregate` rule fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateHit {
    pub field: String,
    pub count: String,
    pub values: String,
}

impl Extras for AggregateHit {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "aggregate.field" => Some(&self.field),
            "aggregate.count" => Some(&self.count),
            "aggregate.values" => Some(&self.values),
            _ => None,
        }
    }
}

/// The earlier match an `after` rule found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earlier {
    pub rule: Arc<str>,
    pub key: String,
    pub kind: String,
    pub process: String,
    pub command_line: String,
    pub pid: String,
    time: Timestamp,
}

impl Extras for Earlier {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "after.rule" => Some(&self.rule),
            "after.key" => Some(&self.key),
            "after.kind" => Some(&self.kind),
            "after.process" => Some(&self.process),
            "after.command_line" => Some(&self.command_line),
            "after.pid" => Some(&self.pid),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Group {
    last: Timestamp,
    /// Per `distinct` field: (value, last seen), fewer than `threshold`.
    seen: Vec<Vec<(String, Timestamp)>>,
}

/// The engine's stateful tables, keyed by rule id.
#[derive(Debug, Default)]
pub struct State {
    groups: HashMap<Arc<str>, HashMap<String, Group>>,
    earlier: HashMap<Arc<str>, HashMap<String, Earlier>>,
}

/// Result of one update: the hit (if any) and how many entries were evicted.
#[derive(Debug)]
pub struct Outcome<T> {
    pub hit: Option<T>,
    pub evicted: u64,
}

fn render_key(accessors: &[Accessor], ev: &Event) -> String {
    let mut key = String::new();
    for (i, a) in accessors.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        a.get(ev).render(&mut key);
    }
    key
}

/// `t` is older than `window` at `now`. Events from different CPUs arrive
/// slightly out of order: a value stamped after `now` is not expired.
fn expired(now: Timestamp, t: Timestamp, window: Duration) -> bool {
    let d = now.duration_since(t);
    !d.is_negative() && d.unsigned_abs() >= window
}

/// `then` is within `window` after `first` (same-time events included).
fn within(then: Timestamp, first: Timestamp, window: Duration) -> bool {
    let d = then.duration_since(first);
    !d.is_negative() && d.unsigned_abs() < window
}

/// Makes room for one more entry: drops expired entries, then evicts the
/// least recently updated one. Returns how many were evicted (expired
/// entries are not counted: they were no longer in force).
fn make_room<V>(
    table: &mut HashMap<String, V>,
    cap: usize,
    now: Timestamp,
    window: Duration,
    last: impl Fn(&V) -> Timestamp,
) -> u64 {
    if table.len() < cap {
        return 0;
    }
    table.retain(|_, v| !expired(now, last(v), window));
    let mut evicted = 0;
    while table.len() >= cap {
        let Some(oldest) = table
            .iter()
            .min_by_key(|(_, v)| last(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        table.remove(&oldest);
        evicted += 1;
    }
    evicted
}

impl State {
    /// Adds the event's distinct values to its group; a hit when a field
    /// reaches `threshold` distinct values within the window (the group
    /// then starts over, so the next hit needs as many new values).
    pub fn aggregate(
        &mut self,
        rule: &Arc<str>,
        spec: &Aggregate,
        ev: &Event,
    ) -> Outcome<AggregateHit> {
        let now = ev.time;
        let table = self.groups.entry(rule.clone()).or_default();
        let key = render_key(&spec.by, ev);
        let mut out = Outcome {
            hit: None,
            evicted: 0,
        };
        if !table.contains_key(&key) {
            out.evicted = make_room(table, spec.max_groups, now, spec.window, |g: &Group| g.last);
        }
        let group = table.entry(key).or_insert_with(|| Group {
            last: now,
            seen: spec.distinct.iter().map(|_| Vec::new()).collect(),
        });
        group.last = group.last.max(now);
        let threshold = usize::try_from(spec.threshold).unwrap_or(usize::MAX);
        for (i, (name, acc)) in spec.distinct.iter().enumerate() {
            let v = acc.get(ev);
            if !v.exists() {
                continue;
            }
            let mut value = String::new();
            v.render(&mut value);
            let seen = &mut group.seen[i];
            seen.retain(|(_, t)| !expired(now, *t, spec.window));
            match seen.iter_mut().find(|(s, _)| *s == value) {
                Some(e) => e.1 = now,
                None => seen.push((value, now)),
            }
            if seen.len() >= threshold {
                let mut shown: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
                shown.sort_unstable();
                let more = shown.len().saturating_sub(SHOWN_VALUES);
                let mut values = shown[..shown.len().min(SHOWN_VALUES)].join(", ");
                if more > 0 {
                    values.push_str(&format!(", ... ({more} more)"));
                }
                out.hit = Some(AggregateHit {
                    field: name.clone(),
                    count: seen.len().to_string(),
                    values,
                });
                for s in &mut group.seen {
                    s.clear();
                }
                break;
            }
        }
        out
    }

    /// Remembers a match of a rule that feeds `feed.consumer`.
    pub fn remember(&mut self, producer: &Arc<str>, feed: &Feed, ev: &Event) -> u64 {
        let now = ev.time;
        let table = self.earlier.entry(feed.consumer.clone()).or_default();
        let mut evicted = 0;
        for acc in &feed.key {
            let v = acc.get(ev);
            let mut keys = Vec::new();
            match v {
                FieldValue::Int(_) | FieldValue::Bool(_) => {
                    let mut s = String::new();
                    v.render(&mut s);
                    keys.push(s);
                }
                _ => {
                    v.any_str(|s| {
                        if !s.is_empty() {
                            keys.push(s.to_string());
                        }
                        false
                    });
                }
            }
            for key in keys {
                if !table.contains_key(&key) {
                    evicted +=
                        make_room(table, feed.max_entries, now, feed.within, |e: &Earlier| {
                            e.time
                        });
                }
                let e = Earlier {
                    rule: producer.clone(),
                    key: key.clone(),
                    kind: ev.kind().as_str().to_string(),
                    process: ev.process.executable.path.clone(),
                    command_line: ev.process.command_line.clone(),
                    pid: ev.process.pid.to_string(),
                    time: now,
                };
                table.insert(key, e);
            }
        }
        evicted
    }

    /// The earlier match this event follows, if any is remembered for the
    /// rule `consumer` within `spec.within`.
    pub fn follows(&self, consumer: &Arc<str>, spec: &After, ev: &Event) -> Option<Earlier> {
        let table = self.earlier.get(consumer)?;
        let v = spec.matching.get(ev);
        let live = |k: &str| {
            table
                .get(k)
                .filter(|e| within(ev.time, e.time, spec.within))
        };
        let mut found = None;
        match v {
            FieldValue::Int(_) | FieldValue::Bool(_) => {
                let mut s = String::new();
                v.render(&mut s);
                found = live(&s);
            }
            _ => {
                v.any_str(|s| {
                    found = live(s);
                    found.is_some()
                });
            }
        }
        found.cloned()
    }
}
