//! Disk and file-descriptor faults under the delivery stack (issue #17),
//! made with real mechanisms: a tiny tmpfs filled to ENOSPC, an immutable
//! cursor directory (EPERM even for root), and a lowered RLIMIT_NOFILE
//! (EMFILE). Sinks keep delivering, nothing is silently lost, `/readyz`
//! conditions tell the truth and clear when the fault goes away.
//!
//! One test function: RLIMIT_NOFILE is per process, so the steps must not
//! run next to other tests of this binary.

mod delivery_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use delivery_support::{alert, config, eventually};
use picket::delivery::jsonl::JsonlConfig;
use picket::delivery::{Delivery, DeliveryHooks};
use picket::model::Severity;

const STEP: Duration = Duration::from_secs(10);

/// A tmpfs mounted for the test; unmounted (and made mutable again) on drop,
/// also when the test fails.
struct Tmpfs {
    dir: PathBuf,
    immutable: Option<PathBuf>,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Self {
            dir: dir.to_owned(),
            immutable: None,
        }
    }

    fn chattr(&mut self, flag: &str, path: &Path) {
        let ok = Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chattr {flag}");
        self.immutable = (flag == "+i").then(|| path.to_owned());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(p) = self.immutable.take() {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Restores the soft RLIMIT_NOFILE on drop.
struct FdLimit(libc::rlimit);

impl FdLimit {
    fn lower_to(soft: u64) -> Self {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        Self(old)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

fn sample(name_and_labels: &str) -> f64 {
    picket::metrics::encode_text()
        .lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// `(seq, message)` of every alert line of the JSON lines file.
fn lines(path: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let a = v.get("alert")?;
            Some((
                a.get("seq")?.as_u64()?,
                a.get("message")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_fd_faults_degrade_counted_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = Tmpfs::mount(&tmp.path().join("disk"), "1m");
    let out = tmp.path().join("alerts.jsonl");
    let mut cfg = config(&disk.dir);
    cfg.jsonl = vec![JsonlConfig {
        name: "file".into(),
        path: out.display().to_string(),
        ..Default::default()
    }];
    let d = Delivery::start(cfg, DeliveryHooks::default())
        .await
        .unwrap();
    d.readiness().set_programs_loaded(true);
    let a = |m: &str| alert("r1", Severity::High, "prod", &[], m);
    assert_eq!(d.publish(a("a1")).await.unwrap(), 1);
    assert!(eventually(STEP, || d.spool().cursor("file") == Some(1)).await);
    assert!(d.readiness().is_ready());

    // 1. Cursor writes fail with EPERM: delivery goes on, readiness says why.
    let cursors = disk.dir.join("spool/cursors");
    let errors = sample("picket_sink_spool_errors_total{sink=\"file\"}");
    disk.chattr("+i", &cursors);
    assert_eq!(d.publish(a("a2")).await.unwrap(), 2);
    let ok = eventually(STEP, || lines(&out).len() == 2).await;
    assert!(ok, "{:?} {:?}", lines(&out), d.readiness().problems());
    assert!(
        eventually(STEP, || d
            .readiness()
            .problems()
            .get("sink file")
            .is_some_and(|r| r.starts_with("cursor write failed")))
        .await,
        "{:?}",
        d.readiness().problems()
    );
    assert!(!d.readiness().is_ready());
    assert!(sample("picket_sink_spool_errors_total{sink=\"file\"}") >= errors + 1.0);
    assert_eq!(d.spool().cursor("file"), Some(1));
    disk.chattr("-i", &cursors);
    assert!(eventually(STEP, || d.spool().cursor("file") == Some(2)).await);
    assert!(eventually(STEP, || d.readiness().is_ready()).await);

    // 2. The spool disk is full: the alert is retried, then delivered live
    //    with seq 0, counted; readiness names the spool.
    let filler = disk.dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let append_failures = sample("picket_spool_append_failures_total");
    let unspooled = sample("picket_alerts_unspooled_total");
    // Larger than a page, so it cannot slip into the segment's last page.
    let big = format!("a3 {}", "x".repeat(5000));
    assert_eq!(d.publish(a(&big)).await.unwrap(), 0);
    assert_eq!(
        sample("picket_spool_append_failures_total"),
        append_failures + 4.0
    );
    assert_eq!(sample("picket_alerts_unspooled_total"), unspooled + 1.0);
    assert!(
        d.readiness()
            .problems()
            .get("spool")
            .is_some_and(|r| r.contains("No space left on device")),
        "{:?}",
        d.readiness().problems()
    );
    assert!(eventually(STEP, || lines(&out).len() == 3).await);
    assert_eq!(lines(&out)[2], (0, big.clone()));
    assert!(
        eventually(STEP, || sample(
            "picket_sink_unspooled_alerts_total{sink=\"file\"}"
        ) == 1.0)
        .await
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(d.publish(a("a4")).await.unwrap(), 3);
    assert!(!d.readiness().problems().contains_key("spool"));
    assert!(eventually(STEP, || d.spool().cursor("file") == Some(3)).await);

    // 3. The process runs out of file descriptors: the sink still delivers
    //    (its files are open), its cursor catches up once fds are back.
    let held: Vec<std::fs::File>;
    {
        let _limit = FdLimit::lower_to(open_fds() + 16);
        let mut v = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            v.push(f);
        }
        held = v;
        // Nothing below may open a file: counters only.
        let delivered = sample("picket_sink_delivered_alerts_total{sink=\"file\"}");
        assert_eq!(d.publish(a("a5")).await.unwrap(), 4);
        assert!(
            eventually(STEP, || sample(
                "picket_sink_delivered_alerts_total{sink=\"file\"}"
            ) == delivered + 1.0)
            .await
        );
        assert!(
            eventually(STEP, || d.readiness().problems().contains_key("sink file")).await,
            "{:?}",
            d.readiness().problems()
        );
        assert_eq!(d.spool().cursor("file"), Some(3));
        drop(held);
    }
    assert!(eventually(STEP, || d.spool().cursor("file") == Some(4)).await);
    assert!(eventually(STEP, || d.readiness().is_ready()).await);
    assert_eq!(
        lines(&out),
        [
            (1, "a1".to_string()),
            (2, "a2".to_string()),
            (0, big),
            (3, "a4".to_string()),
            (4, "a5".to_string())
        ]
    );
    d.shutdown().await;
}
