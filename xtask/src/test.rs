//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! Real-kernel tests cannot be skipped: each one records a marker file when it
//! has run to completion, and this task fails unless every real-kernel test
//! that the test binaries list left its marker.

use std::{collections::BTreeSet, path::Path, process::Command};

use crate::setup::{Result, SetupArgs, is_root, setup, sh, workspace_root};

/// Test binaries (in the `picket-tests` package) whose tests need the real
/// kernel. Each of their tests must call `picket_tests::kernel::ran(name)`.
pub const KERNEL_TEST_BINARIES: &[&str] = &[
    "kernel_process",
    "kernel_sensors",
    "kernel_contain",
    "kernel_filters",
    "kernel_agent",
    "e2e_contain",
    "e2e_delivery",
    "e2e_run",
    "e2e_container",
    "e2e_k8s",
    "e2e_falco",
    "runtime_containerd",
];

#[derive(clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub setup: SetupArgs,
    /// How long the rule parser/evaluator fuzz target runs (libFuzzer,
    /// `cargo fuzz`); 0 skips it (local iterations only: CI runs it).
    #[arg(long, default_value_t = 60)]
    pub fuzz_seconds: u64,
}

pub fn test(args: &TestArgs) -> Result<()> {
    if !is_root() {
        return Err("the real-kernel tests load eBPF programs and need root: run `sudo -E cargo xtask test`".into());
    }
    setup(&args.setup)?;
    let root = workspace_root();
    let markers = tempdir()?;
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.current_dir(&root)
            .args(args)
            .env("PICKET_KERNEL_TEST_MARKERS", &markers)
            .env_remove("AYA_BUILD_SKIP");
        c
    };
    sh(&mut cargo(&["build", "--all-targets"]))?;
    sh(&mut cargo(&["test", "--no-fail-fast"]))?;
    check_kernel_markers(&root, &markers)?;
    // The default rules: lint, and replay every rule's fixtures through the CLI.
    sh(&mut cargo(&[
        "run", "-q", "-p", "picket", "--", "rules", "lint", "rules",
    ]))?;
    sh(&mut cargo(&[
        "run", "-q", "-p", "picket", "--", "rules", "test", "rules",
    ]))?;
    // The Kubernetes manifests against the OpenAPI schemas (offline package).
    if !Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        sh(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "kubernetes-validate",
        ]))?;
    }
    sh(Command::new("sh").arg(root.join("deploy/validate.sh")))?;
    if args.fuzz_seconds > 0 {
        fuzz(&root, args.fuzz_seconds)?;
    }
    // The kernel matrix (docs/kernels.md): the same binary booted on 5.10,
    // 6.1 and 6.12. Fails when a kernel was not run or a program does not
    // load where its hook exists. The debug build is enough: what is tested
    // is the kernel side (verifier, hooks, BTF), identical in both profiles.
    let started = std::time::Instant::now();
    crate::kernels::kernels(&crate::kernels::KernelsArgs {
        kernels: vec!["all".to_string()],
        picket: Some(root.join("target/debug/picket")),
        no_install: false,
        cpus: 2,
        out: std::path::PathBuf::from("/tmp/picket-kernels"),
    })?;
    eprintln!(
        "xtask: kernel matrix took {} s",
        started.elapsed().as_secs()
    );
    let _ = std::fs::remove_dir_all(&markers);
    eprintln!("xtask: all tests passed; every real-kernel test ran");
    Ok(())
}

/// Runs the `rules_parse` fuzz target for `secs` seconds from the checked-in
/// seeds (new inputs go to a temporary corpus, not into the repository). A
/// crash fails the run and libFuzzer prints the reproducer's path.
fn fuzz(root: &std::path::Path, secs: u64) -> Result<()> {
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        sh(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let corpus = std::env::temp_dir().join(format!("picket-fuzz-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds/rules_parse");
    let r = sh(Command::new("cargo")
        .current_dir(root)
        // No sanitizer: the target is safe Rust (panics and hangs are the
        // bugs to find), and the build is much cheaper.
        .args([
            "+nightly",
            "fuzz",
            "run",
            "--sanitizer",
            "none",
            "rules_parse",
        ])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-rss_limit_mb=4096")
        // The fuzz target needs no kernel programs.
        .env("AYA_BUILD_SKIP", "1"));
    let _ = std::fs::remove_dir_all(&corpus);
    r?;
    eprintln!("xtask: fuzzed the rule parser and evaluator for {secs} s without a crash");
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("picket-kernel-markers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Lists each kernel test binary's tests and checks that every one left a marker.
fn check_kernel_markers(root: &Path, markers: &Path) -> Result<()> {
    let mut expected = BTreeSet::new();
    for bin in KERNEL_TEST_BINARIES {
        let out = Command::new("cargo")
            .current_dir(root)
            .args([
                "test",
                "-q",
                "-p",
                "picket-tests",
                "--test",
                bin,
                "--",
                "--list",
                "--format",
                "terse",
            ])
            .output()
            .map_err(|e| format!("listing {bin}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "listing the tests of {bin} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.strip_suffix(": test") {
                expected.insert(format!("{bin}::{name}"));
            }
        }
    }
    if expected.is_empty() {
        return Err("no real-kernel tests were found".into());
    }
    let ran: BTreeSet<String> = std::fs::read_dir(markers)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<_> = expected.iter().filter(|t| !ran.contains(*t)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "real-kernel tests that did not run to completion (skipped?): {missing:?}"
        ));
    }
    eprintln!("xtask: {} real-kernel tests ran", expected.len());
    Ok(())
}
