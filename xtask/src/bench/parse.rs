//! Turning each monitor's output lines into one normalised [`Record`], and
//! attributing records to the workload's process tree.
//!
//! Formats:
//! - Picket: JSON lines (`docs/schema.md`); an alert is `{"alert": {...}}`,
//!   `events_lost` records carry `lost.count`, `rate_summary` records
//!   `summary.count`.
//! - execsnoop `-t`: `TIME(s) PCOMM PID PPID RET ARGS`.
//! - opensnoop: `PID COMM FD ERR PATH`.
//! - libbpf tools print `Lost N events on CPU #C!` on stderr.
//! - auditd: `type=SYSCALL msg=audit(...): ... ppid=P pid=Q ... comm="x" ... key="k"`
//!   (the ENRICHED format appends `\x1d`-separated fields; ignored).

use std::collections::HashSet;

/// One line of monitor output, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A traced event of `kind` by process `pid`.
    Event(EventRec),
    /// A Picket alert; `ktime_ns` is the kernel timestamp of the event it is about.
    Alert {
        ev: EventRec,
        rule: String,
        ktime_ns: u64,
    },
    /// Events the monitor says it lost.
    Lost { count: u64 },
    /// Events the kernel counted instead of sending (Picket `rate_summary`).
    Summarized { count: u64 },
    /// Headers, other audit record types, blank or unparsable lines.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventRec {
    pub kind: String,
    pub pid: u32,
    pub ppid: Option<u32>,
    /// For a fork: the new child (so the tree can be followed without exec).
    pub child: Option<u32>,
    /// Command name when the format has one.
    pub comm: Option<String>,
}

fn u32_at(v: &serde_json::Value, path: &[&str]) -> Option<u32> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn picket_event(ev: &serde_json::Value) -> EventRec {
    EventRec {
        kind: str_at(ev, &["event", "kind"]).unwrap_or("").to_string(),
        pid: u32_at(ev, &["process", "pid"]).unwrap_or(0),
        ppid: u32_at(ev, &["process", "parent_pid"]),
        child: u32_at(ev, &["child", "pid"]),
        comm: str_at(ev, &["process", "executable", "name"]).map(str::to_string),
    }
}

/// A line of `picket run --format json` output.
pub fn picket_line(line: &str) -> Record {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Record::Other;
    };
    if let Some(a) = v.get("alert") {
        let ev = a.get("event").unwrap_or(&serde_json::Value::Null);
        return Record::Alert {
            ev: picket_event(ev),
            rule: str_at(a, &["rule", "id"]).unwrap_or("").to_string(),
            ktime_ns: ev
                .get("event")
                .and_then(|m| m.get("ktime_ns"))
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
        };
    }
    match str_at(&v, &["event", "kind"]) {
        Some("events_lost") => Record::Lost {
            count: v
                .pointer("/lost/count")
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
        },
        Some("rate_summary") => Record::Summarized {
            count: v
                .pointer("/summary/count")
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
        },
        Some(_) => Record::Event(picket_event(&v)),
        None => Record::Other,
    }
}

/// A line of `execsnoop -t` output. The command name may contain spaces, so
/// the PID/PPID/RET triple is found as the first run of three integers.
pub fn execsnoop_line(line: &str) -> Record {
    let t: Vec<&str> = line.split_ascii_whitespace().collect();
    if t.len() < 5 || t[0].parse::<f64>().is_err() {
        return Record::Other;
    }
    for i in 2..t.len().saturating_sub(2) {
        if let (Ok(pid), Ok(ppid), Ok(_ret)) = (
            t[i].parse::<u32>(),
            t[i + 1].parse::<u32>(),
            t[i + 2].parse::<i32>(),
        ) {
            return Record::Event(EventRec {
                kind: "exec".into(),
                pid,
                ppid: Some(ppid),
                child: None,
                comm: Some(t[1..i].join(" ")),
            });
        }
    }
    Record::Other
}

/// A line of `opensnoop` output (no timestamp column).
pub fn opensnoop_line(line: &str) -> Record {
    let t: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some(pid) = t.first().and_then(|p| p.parse::<u32>().ok()) else {
        return Record::Other;
    };
    for i in 2..t.len().saturating_sub(1) {
        if t[i].parse::<i32>().is_ok() && t[i + 1].parse::<i32>().is_ok() {
            return Record::Event(EventRec {
                kind: "open".into(),
                pid,
                ppid: None,
                child: None,
                comm: Some(t[1..i].join(" ")),
            });
        }
    }
    Record::Other
}

/// A stderr line of a libbpf tool: `Lost 12 events on CPU #1!`.
pub fn libbpf_lost_line(line: &str) -> Option<u64> {
    line.trim()
        .strip_prefix("Lost ")?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of ` name=` in an audit record (quotes stripped). The leading
/// space keeps `pid=` from matching inside `ppid=`.
fn audit_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        return q.split('"').next();
    }
    rest.split([' ', '\x1d']).next()
}

/// A line of the audit log; only `SYSCALL` records with key `key` count as
/// events (one per audited syscall; the PATH/CWD/EXECVE/PROCTITLE records
/// that follow belong to the same event).
pub fn audit_line(line: &str, key: &str) -> Record {
    if !line.starts_with("type=SYSCALL ") {
        return Record::Other;
    }
    if audit_field(line, "key") != Some(key) {
        return Record::Other;
    }
    let Some(pid) = audit_field(line, "pid").and_then(|p| p.parse().ok()) else {
        return Record::Other;
    };
    Record::Event(EventRec {
        kind: audit_field(line, "syscall").unwrap_or("").to_string(),
        pid,
        ppid: audit_field(line, "ppid").and_then(|p| p.parse().ok()),
        child: None,
        comm: audit_field(line, "comm").map(str::to_string),
    })
}

/// `lost N` from `auditctl -s`.
pub fn auditctl_status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let mut it = l.split_ascii_whitespace();
        (it.next()? == name).then_some(())?;
        it.next()?.parse().ok()
    })
}

/// The pids of the workload: `root` and every process whose parent is
/// already in the set (followed to a fixed point, so the order of the
/// records does not matter).
pub fn descendants(root: u32, records: &[Record]) -> HashSet<u32> {
    descendants_of(&[root], records)
}

/// [`descendants`] of several roots at once.
pub fn descendants_of(roots: &[u32], records: &[Record]) -> HashSet<u32> {
    let mut edges: Vec<(u32, u32)> = Vec::new(); // (child, parent)
    for r in records {
        let ev = match r {
            Record::Event(ev) | Record::Alert { ev, .. } => ev,
            _ => continue,
        };
        if let Some(pp) = ev.ppid {
            edges.push((ev.pid, pp));
        }
        if let Some(c) = ev.child {
            edges.push((c, ev.pid));
        }
    }
    let mut set: HashSet<u32> = roots.iter().copied().collect();
    loop {
        let before = set.len();
        for &(c, p) in &edges {
            if set.contains(&p) {
                set.insert(c);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// Counts of one monitor run's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every event record (any process).
    pub total: u64,
    /// Event records attributed to the workload.
    pub workload: u64,
    /// Alerts (any process) and their kernel timestamps (with line receive times).
    pub alerts: u64,
    pub lost: u64,
    pub summarized: u64,
}

/// How a record is attributed to the workload.
pub enum Attribution<'a> {
    /// The process tree rooted at this pid.
    Tree(u32),
    /// The process trees rooted at these pids.
    Trees(&'a [u32]),
    /// Records whose command name is one of these (for formats without a
    /// parent pid, e.g. opensnoop during a shell script).
    Comms(&'a [&'a str]),
}

/// Tallies `records` with the given attribution.
pub fn tally(records: &[Record], attr: &Attribution<'_>) -> Tally {
    let tree = match attr {
        Attribution::Tree(root) => Some(descendants(*root, records)),
        Attribution::Trees(roots) => Some(descendants_of(roots, records)),
        Attribution::Comms(_) => None,
    };
    let mine = |ev: &EventRec| match (attr, &tree) {
        (Attribution::Comms(c), _) => ev.comm.as_deref().is_some_and(|n| c.contains(&n)),
        (_, Some(set)) => set.contains(&ev.pid),
        _ => false,
    };
    let mut t = Tally::default();
    for r in records {
        match r {
            Record::Event(ev) => {
                t.total += 1;
                t.workload += u64::from(mine(ev));
            }
            Record::Alert { .. } => t.alerts += 1,
            Record::Lost { count } => t.lost += count,
            Record::Summarized { count } => t.summarized += count,
            Record::Other => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, pid: u32, ppid: Option<u32>) -> EventRec {
        EventRec {
            kind: kind.into(),
            pid,
            ppid,
            child: None,
            comm: None,
        }
    }

    #[test]
    fn picket_event_alert_lost_summary() {
        let e = r#"{"time":"2026-11-22T05:30:01Z","event":{"kind":"exec","ktime_ns":15},"process":{"pid":42,"parent_pid":41,"executable":{"path":"/usr/bin/true","name":"true"}}}"#;
        assert_eq!(
            picket_line(e),
            Record::Event(EventRec {
                kind: "exec".into(),
                pid: 42,
                ppid: Some(41),
                child: None,
                comm: Some("true".into())
            })
        );
        let f = r#"{"time":"t","event":{"kind":"fork","ktime_ns":1},"process":{"pid":41,"parent_pid":1},"child":{"pid":43}}"#;
        let Record::Event(f) = picket_line(f) else {
            panic!("fork not parsed")
        };
        assert_eq!((f.pid, f.child), (41, Some(43)));
        let a = r#"{"alert":{"seq":0,"time":"t","severity":"high","rule":{"id":"read-shadow","name":"n"},"message":"m","event":{"time":"t","event":{"kind":"file_open","ktime_ns":123456789},"process":{"pid":7,"parent_pid":6}}}}"#;
        assert_eq!(
            picket_line(a),
            Record::Alert {
                ev: ev("file_open", 7, Some(6)),
                rule: "read-shadow".into(),
                ktime_ns: 123456789
            }
        );
        let l = r#"{"time":"t","event":{"kind":"events_lost","ktime_ns":0},"lost":{"kind":"exec","count":17,"reason":"ringbuf_full"}}"#;
        assert_eq!(picket_line(l), Record::Lost { count: 17 });
        let s = r#"{"time":"t","event":{"kind":"rate_summary"},"summary":{"kind":"file_open","count":900,"window_ms":1000}}"#;
        assert_eq!(picket_line(s), Record::Summarized { count: 900 });
    }

    #[test]
    fn picket_garbage_is_other() {
        assert_eq!(picket_line(""), Record::Other);
        assert_eq!(picket_line("not json"), Record::Other);
        assert_eq!(picket_line("{\"x\":1}"), Record::Other);
        assert_eq!(picket_line("[1,2]"), Record::Other);
        // Wrong types do not panic.
        let Record::Event(e) = picket_line(r#"{"event":{"kind":"exec"},"process":{"pid":-1}}"#)
        else {
            panic!()
        };
        assert_eq!(e.pid, 0);
    }

    #[test]
    fn execsnoop_lines() {
        assert_eq!(
            execsnoop_line("TIME(s)  PCOMM            PID    PPID   RET ARGS"),
            Record::Other
        );
        assert_eq!(
            execsnoop_line("1.703   true             15829  15791    0 /bin/true "),
            Record::Event(EventRec {
                kind: "exec".into(),
                pid: 15829,
                ppid: Some(15791),
                child: None,
                comm: Some("true".into())
            })
        );
        // A command name with a space and numeric arguments.
        let Record::Event(e) = execsnoop_line("2.000   my prog          100    99      0 /x 1 2 3")
        else {
            panic!()
        };
        assert_eq!(
            (e.pid, e.ppid, e.comm.as_deref()),
            (100, Some(99), Some("my prog"))
        );
        assert_eq!(execsnoop_line(""), Record::Other);
    }

    #[test]
    fn opensnoop_lines() {
        assert_eq!(
            opensnoop_line("PID    COMM              FD ERR PATH"),
            Record::Other
        );
        let Record::Event(e) = opensnoop_line("4242   pkb-open            3   0 /tmp/a file")
        else {
            panic!()
        };
        assert_eq!((e.pid, e.comm.as_deref()), (4242, Some("pkb-open")));
        let Record::Event(e) = opensnoop_line("77     cat                -1   2 /nope") else {
            panic!()
        };
        assert_eq!(e.pid, 77);
        assert_eq!(opensnoop_line("12 x"), Record::Other);
    }

    #[test]
    fn libbpf_lost() {
        assert_eq!(libbpf_lost_line("Lost 12 events on CPU #1!"), Some(12));
        assert_eq!(libbpf_lost_line("libbpf: something"), None);
    }

    #[test]
    fn audit_records() {
        let sys = "type=SYSCALL msg=audit(1700000000.123:456): arch=c000003e syscall=59 success=yes exit=0 \
                   a0=55 a1=56 a2=57 a3=0 items=2 ppid=100 pid=101 auid=4294967295 uid=0 gid=0 euid=0 \
                   comm=\"pkb-true\" exe=\"/tmp/x/pkb-true\" subj=unconfined key=\"pkb\"\x1dARCH=x86_64 SYSCALL=execve";
        assert_eq!(
            audit_line(sys, "pkb"),
            Record::Event(EventRec {
                kind: "59".into(),
                pid: 101,
                ppid: Some(100),
                child: None,
                comm: Some("pkb-true".into())
            })
        );
        assert_eq!(audit_line(sys, "other"), Record::Other);
        assert_eq!(
            audit_line("type=PATH msg=audit(1.2:3): item=0 name=\"/x\"", "pkb"),
            Record::Other
        );
        assert_eq!(
            audit_line("type=SYSCALL msg=audit(1.2:3): key=\"pkb\"", "pkb"),
            Record::Other
        );
        // key=(null) when no key is set.
        assert_eq!(
            audit_line("type=SYSCALL msg=x: ppid=1 pid=2 key=(null)", "pkb"),
            Record::Other
        );
    }

    #[test]
    fn auditctl_status() {
        let s = "enabled 1\nfailure 1\npid 4242\nrate_limit 0\nbacklog_limit 8192\nlost 17\nbacklog 0\n";
        assert_eq!(auditctl_status_field(s, "lost"), Some(17));
        assert_eq!(auditctl_status_field(s, "enabled"), Some(1));
        assert_eq!(auditctl_status_field(s, "backlog_limit"), Some(8192));
        assert_eq!(auditctl_status_field(s, "missing"), None);
    }

    #[test]
    fn tree_attribution_follows_forks_and_execs_in_any_order() {
        let recs = vec![
            Record::Event(ev("exec", 12, Some(11))), // grandchild before its parent's record
            Record::Event(EventRec {
                kind: "fork".into(),
                pid: 10,
                ppid: Some(1),
                child: Some(11),
                comm: None,
            }),
            Record::Event(ev("exec", 13, Some(99))), // unrelated
            Record::Lost { count: 3 },
            Record::Alert {
                ev: ev("exec", 12, Some(11)),
                rule: "r".into(),
                ktime_ns: 1,
            },
            Record::Other,
        ];
        let set = descendants(10, &recs);
        assert_eq!(set, HashSet::from([10, 11, 12]));
        let t = tally(&recs, &Attribution::Tree(10));
        assert_eq!(
            t,
            Tally {
                total: 3,
                workload: 2,
                alerts: 1,
                lost: 3,
                summarized: 0
            }
        );
        assert_eq!(
            descendants_of(&[10, 99], &recs),
            HashSet::from([10, 11, 12, 99, 13])
        );
        assert_eq!(tally(&recs, &Attribution::Trees(&[10, 99])).workload, 3);
    }

    #[test]
    fn comm_attribution() {
        let mut a = ev("open", 5, None);
        a.comm = Some("tar".into());
        let mut b = ev("open", 6, None);
        b.comm = Some("sshd".into());
        let t = tally(
            &[Record::Event(a), Record::Event(b)],
            &Attribution::Comms(&["tar", "gzip"]),
        );
        assert_eq!((t.total, t.workload), (2, 1));
    }
}
