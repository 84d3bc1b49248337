//! Command-line interface.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Picket: eBPF runtime security for Kubernetes nodes and plain hosts.
#[derive(Debug, Parser)]
#[command(name = "picket", version, about)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `picket=debug`.
    #[arg(long, global = true, env = "PICKET_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel programs and print alerts (and events with --events).
    Run(crate::run::RunArgs),
    /// Report the kernel features Picket needs and which sensors will run.
    Doctor(crate::doctor::DoctorArgs),
    /// Stream alerts from a running agent's gRPC API to the terminal.
    Alerts(crate::delivery::AlertsArgs),
    /// Lint and test detection rules.
    Rules(crate::rules::cli::RulesArgs),
    /// Print the Kubernetes manifests (DaemonSet, RBAC, ConfigMaps, Service).
    Manifests(crate::k8s::manifests::ManifestsArgs),
    /// Contain a pod through the node agent (isolate, delete, block-egress, kill-container).
    Contain(crate::contain::cli::ContainArgs),
    /// Lift block-egress and isolation from a pod through the node agent.
    Release(crate::contain::cli::ReleaseArgs),
    /// List the node agent's recent containment actions (restored ones marked).
    Actions(crate::contain::cli::ActionsArgs),
    /// Remove every pinned egress block and the containment state (uninstall; agent stopped).
    PurgeContainment(crate::contain::cli::PurgeArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match cli.command {
        Command::Run(args) => crate::run::main(args),
        Command::Doctor(args) => crate::doctor::main(args),
        Command::Alerts(args) => crate::delivery::alerts_main(args),
        Command::Rules(args) => crate::rules::cli::main(args),
        Command::Manifests(args) => crate::k8s::manifests::run(args),
        Command::Contain(args) => crate::contain::cli::contain_main(args),
        Command::Release(args) => crate::contain::cli::release_main(args),
        Command::Actions(args) => crate::contain::cli::actions_main(args),
        Command::PurgeContainment(args) => crate::contain::cli::purge_main(args),
    }
}

/// Logs go to stderr so stdout carries only events and alerts.
fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
