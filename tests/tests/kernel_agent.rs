//! The in-process agent on the real kernel, for what is global to the
//! process (metrics): one test per binary, so no other agent shares the
//! registry.

use std::time::Duration;

use picket_tests::{cgroup::TestCgroup, kernel::start_agent, kernel_test};

/// The value of the first sample line named exactly `name` (no labels).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("{name} missing from the metrics:\n{text}"))
}

/// The agent measures its own runtime's scheduling lag (the guard against
/// a blocking call on the event path, `metrics::loop_lag`): once started it
/// exports `picket_event_loop_lag_seconds` and
/// `picket_event_loop_lag_max_seconds`, and with nothing to do the lag stays
/// small. The watchdog wakes every 100 ms, so in 1.5 s it measured about 15
/// times. The bound on the lag is a sanity bound for a shared machine (1 s),
/// not a performance figure.
#[tokio::test(flavor = "current_thread")]
async fn idle_agent_exports_a_small_event_loop_lag() {
    let t = kernel_test!(idle_agent_exports_a_small_event_loop_lag);
    let cg = TestCgroup::unique("lag");
    let agent = start_agent(std::slice::from_ref(&cg.path), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = picket::metrics::encode_text();
    let count = sample(&text, "picket_event_loop_lag_seconds_count");
    assert!(
        (5.0..=15.0).contains(&count),
        "{count} lag measurements in 1.5 s at one per 100 ms"
    );
    let max = sample(&text, "picket_event_loop_lag_max_seconds");
    assert!(
        (0.0..1.0).contains(&max),
        "idle agent: largest event-loop lag {max} s"
    );
    let sum = sample(&text, "picket_event_loop_lag_seconds_sum");
    assert!(sum <= max * count + 1e-9, "sum {sum} > max {max} x {count}");
    assert!(
        text.contains("picket_event_loop_lag_seconds_bucket{le=\"0.001\"}"),
        "bucket lines missing:\n{text}"
    );
    agent.shutdown();
    t.done();
}
