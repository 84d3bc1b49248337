use std::io::Write;

use super::*;
use crate::model::{Event, EventKindName, RuleRef, Severity};

fn alert(msg: &str) -> Alert {
    let t: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    Alert {
        seq: 0,
        time: t,
        severity: Severity::High,
        rule: RuleRef {
            id: "r".into(),
            name: "R".into(),
            tags: vec![],
        },
        message: msg.into(),
        event: Event::new(EventKindName::Exec, t),
    }
}

fn cfg(dir: &Path, seg: u64, total: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_total_bytes: total,
        segment_bytes: seg,
        fsync: FsyncPolicy::Never,
    }
}

fn messages(items: &[SpoolItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            SpoolItem::Alert(a) => format!("{}:{}", a.seq, a.message),
            SpoolItem::Gap(g) => format!("gap {}..{} ({})", g.from_seq, g.to_seq, g.count),
        })
        .collect()
}

#[test]
fn sequence_continues_after_reopen_and_torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    for m in ["a", "b", "c"] {
        s.append(&mut alert(m)).unwrap();
    }
    s.close();
    drop(s);
    // A crash mid-append: half a record at the end of the segment.
    let seg = dir.path().join("segments").join(segment_name(1));
    let half = record::encode(4, b"{\"partial\":true}");
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&half[..10])
        .unwrap();

    let s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    assert_eq!(s.bounds(), (1, 3));
    let mut a = alert("d");
    assert_eq!(s.append(&mut a).unwrap(), 4);
    assert_eq!(a.seq, 4);
    let mut r = s.reader(1);
    assert_eq!(
        messages(&r.read_available(10).unwrap()),
        ["1:a", "2:b", "3:c", "4:d"]
    );
    assert!(r.read_available(10).unwrap().is_empty());
}

#[test]
fn full_spool_drops_oldest_segments_and_reports_exact_gap() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(cfg(dir.path(), 1024, 2048)).unwrap();
    let len = record::HEADER_LEN
        + serde_json::to_vec(&Alert {
            seq: 10,
            ..alert("x")
        })
        .unwrap()
        .len() as u64;
    let per_segment = 1024 / len;
    for _ in 0..40 {
        s.append(&mut alert("x")).unwrap();
    }
    let (first, last) = s.bounds();
    assert_eq!(last, 40);
    // Whole segments of `per_segment` records (seq 10..40 all encode to the
    // same length; 1..9 are one byte shorter) were deleted.
    assert!(
        first > 1 && (first - 1) % per_segment <= 1,
        "first={first} per_segment={per_segment}"
    );
    let mut r = s.reader(1);
    let items = r.read_available(100).unwrap();
    assert_eq!(
        items[0],
        SpoolItem::Gap(Gap {
            from_seq: 1,
            to_seq: first - 1,
            count: first - 1
        })
    );
    assert_eq!(items.len() as u64, 1 + (last - first + 1));
    assert_eq!(items[1].last_seq(), first);
    let total: u64 = fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 2048, "total {total}");
}

#[test]
fn cursors_persist_clamp_and_never_move_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    for m in ["a", "b", "c"] {
        s.append(&mut alert(m)).unwrap();
    }
    assert_eq!(s.ack("otlp", 2).unwrap(), 2);
    assert_eq!(s.ack("otlp", 1).unwrap(), 2);
    assert_eq!(s.ack("grpc.x", 99).unwrap(), 3);
    assert!(s.ack("../evil", 1).is_err());
    s.close();
    drop(s);
    let s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    assert_eq!(s.cursor("otlp"), Some(2));
    let mut r = s.reader_for_sink("otlp", 1).unwrap();
    assert_eq!(messages(&r.read_available(10).unwrap()), ["3:c"]);
}

#[test]
fn second_open_of_a_locked_spool_fails() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    assert!(matches!(
        Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)),
        Err(SpoolError::Locked(_))
    ));
}

#[tokio::test]
async fn reader_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(cfg(dir.path(), 1 << 20, 4 << 20)).unwrap();
    let mut r = s.reader(1);
    let s2 = s.clone();
    let h = tokio::spawn(async move { r.next_batch(10).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s2.append(&mut alert("late")).unwrap();
    assert_eq!(messages(&h.await.unwrap()), ["1:late"]);
}
