//! The rule engine's criterion benchmark (`agent/benches/rules.rs`, written
//! by the rules engineer): run it and read its figures from criterion's
//! standard output.

use std::{path::Path, process::Command};

use serde::Serialize;

use super::BenchError;

/// One criterion benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchFigure {
    pub name: String,
    /// Median estimate of the time per iteration, ns.
    pub time_ns: f64,
    /// Median throughput when the bench declares `Throughput::Elements`, elements/s.
    pub elements_per_s: Option<f64>,
    /// ns per event: from the throughput when declared, else the time per
    /// iteration (one event per iteration).
    pub ns_per_event: f64,
}

fn time_unit_ns(u: &str) -> Option<f64> {
    Some(match u {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    })
}

fn elem_unit(u: &str) -> Option<f64> {
    Some(match u {
        "elem/s" => 1.0,
        "Kelem/s" => 1e3,
        "Melem/s" => 1e6,
        "Gelem/s" => 1e9,
        _ => return None,
    })
}

/// The middle value of `[lo mid hi]` with units, e.g. `[1.2 µs 1.3 µs 1.4 µs]`.
fn middle(bracket: &str, unit: fn(&str) -> Option<f64>) -> Option<f64> {
    let inner = bracket.trim().strip_prefix('[')?.split(']').next()?;
    let t: Vec<&str> = inner.split_ascii_whitespace().collect();
    if t.len() != 6 {
        return None;
    }
    Some(t[2].parse::<f64>().ok()? * unit(t[3])?)
}

/// Parses criterion's report lines (`name time: [...]`, optional `thrpt: [...]`,
/// the name on its own line when it is long).
pub fn parse(out: &str) -> Vec<BenchFigure> {
    let mut figs: Vec<BenchFigure> = Vec::new();
    let mut pending_name: Option<String> = None;
    for line in out.lines() {
        let indented = line.starts_with(char::is_whitespace);
        if let Some(pos) = line.find("time:") {
            let name = if indented {
                pending_name.take()
            } else {
                Some(line[..pos].trim().to_string())
            };
            if let (Some(name), Some(t)) = (name, middle(&line[pos + 5..], time_unit_ns)) {
                figs.push(BenchFigure {
                    name,
                    time_ns: t,
                    elements_per_s: None,
                    ns_per_event: t,
                });
            }
            continue;
        }
        if let Some(pos) = line.find("thrpt:") {
            if let (Some(last), Some(eps)) = (figs.last_mut(), middle(&line[pos + 6..], elem_unit))
                && eps > 0.0
            {
                last.elements_per_s = Some(eps);
                last.ns_per_event = 1e9 / eps;
            }
            continue;
        }
        let t = line.trim();
        if !indented && !t.is_empty() && !is_noise(t) {
            pending_name = Some(t.to_string());
        }
    }
    figs
}

fn is_noise(t: &str) -> bool {
    [
        "Benchmarking",
        "Found",
        "Warning",
        "Gnuplot",
        "Running",
        "running",
        "test ",
        "Compiling",
        "Finished",
    ]
    .iter()
    .any(|p| t.starts_with(p))
        || t.contains("change:")
        || t.starts_with("Performance")
        || t.starts_with("No change")
        || t.starts_with("Change within")
}

/// Runs `cargo bench -p picket --bench rules` and parses it. `Ok(None)`
/// when the benchmark does not exist (yet).
pub fn run(root: &Path) -> Result<Option<Vec<BenchFigure>>, BenchError> {
    if !root.join("agent/benches/rules.rs").exists() {
        return Ok(None);
    }
    eprintln!("xtask: bench: running the rule-engine criterion benchmark");
    let out = Command::new("cargo")
        .current_dir(root)
        // Not AYA_BUILD_SKIP: cargo also rebuilds the package's binary for a
        // bench, and a picket without its kernel object must not replace
        // the real one in the shared target directory.
        .env_remove("AYA_BUILD_SKIP")
        .args([
            "bench", "-p", "picket", "--bench", "rules", "--", "--noplot",
        ])
        .output()
        .map_err(|e| BenchError::Tool {
            tool: "cargo bench".into(),
            msg: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        return Err(BenchError::Tool {
            tool: "cargo bench -p picket --bench rules".into(),
            msg: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(Some(parse(&stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_throughput_and_long_names() {
        let out = "\
Benchmarking rules/exec: Warming up for 3.0000 s
rules/exec              time:   [812.00 ns 815.00 ns 818.00 ns]
                        thrpt:  [1.2225 Melem/s 1.2500 Melem/s 1.2315 Melem/s]
                 change: [-1.0% +0.2% +1.1%] (p = 0.70 > 0.05)
                        No change in performance detected.
Found 3 outliers among 100 measurements (3.00%)
rules/a_really_long_benchmark_name_that_wraps
                        time:   [1.5000 µs 2.0000 µs 2.5000 µs]
tiny                    time:   [500.00 ps 600.00 ps 700.00 ps]
";
        let f = parse(out);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "rules/exec");
        assert_eq!(f[0].time_ns, 815.0);
        assert_eq!(f[0].elements_per_s, Some(1.25e6));
        assert_eq!(f[0].ns_per_event, 800.0);
        assert_eq!(f[1].name, "rules/a_really_long_benchmark_name_that_wraps");
        assert_eq!(f[1].time_ns, 2000.0);
        assert_eq!(f[1].ns_per_event, 2000.0);
        assert_eq!(f[2].name, "tiny");
        assert!((f[2].time_ns - 0.6).abs() < 1e-9);
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(parse("").is_empty());
        assert!(parse("x time: [1 2 3]\n  time: [a ns b ns c ns]\n").is_empty());
    }
}
