//! Builds the kernel programs (`agent-ebpf`) with nightly + bpf-linker and
//! leaves the object in OUT_DIR for `include_bytes!`.
//!
//! Why build.rs (aya-build) rather than an xtask step: `cargo build`, `cargo
//! test` and `cargo clippy` then always embed an object that matches the
//! sources, with no second command to forget. `cargo xtask setup` installs what
//! this needs (nightly rust-src, bpf-linker) and `cargo xtask doctor-build`
//! explains what is missing.
//!
//! `AYA_BUILD_SKIP=1` skips the kernel build (for tools that only need the
//! userspace crate, e.g. fuzzing); the agent then refuses to load programs with
//! a clear error instead of embedding garbage.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../agent-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if !skip {
        check_prerequisites();
    }
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    if let Err(e) = aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    ) {
        panic!(
            "building the eBPF programs failed: {e:#}\n\
             hint: run `cargo xtask setup` (installs nightly rust-src and bpf-linker)"
        );
    }
    let obj = out_dir.join("agent-ebpf");
    if skip && !obj.exists() {
        // Empty placeholder: the loader detects it and reports that the agent
        // was built without kernel programs.
        std::fs::write(&obj, b"").expect("write placeholder");
    }
}

/// Fail early with an actionable message instead of a cryptic linker error.
fn check_prerequisites() {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        panic!(
            "bpf-linker was not found on PATH. It links Picket's eBPF programs.\n\
             hint: run `cargo xtask setup` (builds bpf-linker against the Rust toolchain's LLVM)"
        );
    }
    let src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    if let Ok(o) = src
        && o.status.success()
        && !String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
    {
        panic!(
            "the nightly toolchain lacks rust-src (needed for -Z build-std=core).\n\
             hint: run `cargo xtask setup` or `rustup component add rust-src --toolchain nightly`"
        );
    }
}
