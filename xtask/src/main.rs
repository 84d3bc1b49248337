//! `cargo xtask`: set-up, running, tests and benchmarks for Picket.
//!
//! The two commands a fresh machine needs (see README):
//! - `cargo xtask run`  — installs what the build needs, builds, runs `picket run`.
//! - `cargo xtask test` — installs what the tests need and runs the whole suite,
//!   failing if any real-kernel test did not run.

mod bench;
mod codegen;
mod kernels;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Picket build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or check the toolchain pieces: nightly rust-src, bpf-linker, OS packages.
    Setup(setup::SetupArgs),
    /// Set up, build (release) and run `picket run` on this host with the default rules.
    Run(setup::RunArgs),
    /// Set up and run the whole test suite (needs root for the real-kernel tests).
    Test(test::TestArgs),
    /// Regenerate the checked-in gRPC code (agent/src/delivery/gen) from proto/.
    Codegen(codegen::CodegenArgs),
    /// Boot the kernel matrix (5.10, 6.1, 6.12) under qemu and run the smoke suite in each.
    Kernels(kernels::KernelsArgs),
    /// (Inside a booted kernel) the smoke suite of `kernels`.
    #[command(hide = true)]
    KernelsGuest(kernels::GuestArgs),
    /// Measure overhead, throughput, latency and memory vs auditd and libbpf-tools.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Setup(a) => setup::setup(&a),
        Cmd::Run(a) => setup::run(&a),
        Cmd::Test(a) => test::test(&a),
        Cmd::Kernels(a) => kernels::kernels(&a),
        Cmd::KernelsGuest(a) => kernels::guest(&a),
        Cmd::Codegen(a) => codegen::codegen(&a),
        Cmd::Bench(a) => bench::bench(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
