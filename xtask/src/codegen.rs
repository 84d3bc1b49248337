//! `cargo xtask codegen`: regenerates the gRPC code of `proto/` into
//! `agent/src/delivery/gen/`.
//!
//! The generated code is checked in so building Picket needs no protobuf
//! compiler at all; `protox` (a pure-Rust compiler) parses the `.proto` files
//! here, so regenerating needs none either. A unit test regenerates into a
//! temporary directory and fails when the checked-in code is stale.

use std::path::{Path, PathBuf};

/// Arguments of `cargo xtask codegen`.
#[derive(clap::Args, Debug, Default)]
pub struct CodegenArgs {
    /// Only check that the checked-in code is up to date (exit non-zero if not).
    #[arg(long)]
    pub check: bool,
}

/// The `.proto` files of the API, relative to `proto/`.
const PROTOS: &[&str] = &[
    "picket/v1/common.proto",
    "picket/v1/alerts.proto",
    "picket/v1/events.proto",
    "picket/v1/rules.proto",
    "picket/v1/agent.proto",
    "picket/v1/containment.proto",
];

/// The generated file (prost names it after the package).
const GENERATED: &str = "picket.v1.rs";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the checked-in code lives.
pub fn checked_in_dir() -> PathBuf {
    workspace_root().join("agent/src/delivery/gen")
}

/// Compiles the protos and writes the Rust code into `out_dir`.
pub fn generate(out_dir: &Path) -> Result<(), String> {
    let proto_dir = workspace_root().join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    let fds = protox::compile(&files, [&proto_dir]).map_err(|e| format!("protox: {e}"))?;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    tonic_prost_build::configure()
        .out_dir(out_dir)
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)
        .map_err(|e| format!("code generation: {e}"))
}

/// Runs the subcommand.
pub fn codegen(args: &CodegenArgs) -> Result<(), String> {
    if args.check {
        return check();
    }
    let dir = checked_in_dir();
    generate(&dir)?;
    println!("xtask: wrote {}", dir.join(GENERATED).display());
    Ok(())
}

/// Fails when the checked-in code differs from what the protos generate.
pub fn check() -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("picket-codegen-{}", std::process::id()));
    let res = generate(&tmp).and_then(|()| {
        let fresh = std::fs::read_to_string(tmp.join(GENERATED))
            .map_err(|e| format!("read generated code: {e}"))?;
        let path = checked_in_dir().join(GENERATED);
        let current =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        if fresh == current {
            Ok(())
        } else {
            Err(format!(
                "{} is stale: run `cargo xtask codegen`",
                path.display()
            ))
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_code_is_up_to_date() {
        let tmp = tempfile::tempdir().expect("tempdir");
        super::generate(tmp.path()).expect("generate");
        let fresh = std::fs::read_to_string(tmp.path().join(super::GENERATED)).expect("fresh");
        let current = std::fs::read_to_string(super::checked_in_dir().join(super::GENERATED))
            .expect("checked-in code");
        assert!(
            fresh == current,
            "agent/src/delivery/gen is stale: run `cargo xtask codegen`"
        );
    }
}
