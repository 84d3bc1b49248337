//! Installing and checking the build prerequisites.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Debian packages the tests and `picket run` use: unshare/nsenter
/// (util-linux), ip (iproute2), mount helpers, python3 + pip for manifest
/// validation, and the side-by-side peers of the benchmarks.
const APT_PACKAGES: &[&str] = &[
    "util-linux",
    "iproute2",
    "procps",
    "python3-pip",
    "python3-venv",
    // Real-runtime tests (tests/src/containerd.rs): a private containerd
    // driving runc, containers from a static-busybox rootfs. crun is
    // installed for the runtime tests too (it refuses hybrid v1/v2 hosts).
    "containerd",
    "runc",
    "crun",
    "busybox-static",
    // A private dockerd (tests/src/docker.rs) for the Docker API lookups.
    "docker.io",
    // A private podman (tests/src/podman.rs) for the podman API lookups.
    "podman",
    // A standard Go client of the gRPC API (tests/tests/delivery_grpcgo.rs),
    // built offline from Debian's grpc-go sources.
    "golang-go",
    "golang-google-grpc-dev",
];

#[derive(clap::Args, Default)]
pub struct SetupArgs {
    /// Do not install Debian packages (only check and build the Rust pieces).
    #[arg(long)]
    pub no_apt: bool,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Extra arguments passed to `picket run` (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub type Result<T, E = String> = std::result::Result<T, E>;

/// Runs a command, failing with its name when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: $ {shown}");
    let st = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {st}"))
    }
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

pub fn setup(args: &SetupArgs) -> Result<()> {
    if !args.no_apt {
        apt()?;
    }
    // nightly + rust-src: -Z build-std=core for bpfel-unknown-none.
    if !ok(Command::new("rustc").args(["+nightly", "--version"])) {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if !String::from_utf8_lossy(&comps.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    bpf_linker()?;
    python_grpcio()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !ok(Command::new("apt-get").arg("--version")) {
        return Err(format!(
            "missing OS packages {missing:?} and no apt-get to install them"
        ));
    }
    sh(Command::new("apt-get").arg("update").arg("-qq"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// bpf-linker must be built against the LLVM inside the Rust toolchain (no
/// prebuilt binary is reachable here). It links to that libLLVM dynamically,
/// so it is built with an rpath to the nightly sysroot: it then also runs
/// outside `rustup run`. Rebuilt when missing or broken (e.g. after a nightly
/// update moved the library).
fn bpf_linker() -> Result<()> {
    if ok(Command::new("bpf-linker").arg("--version"))
        || ok(Command::new(cargo_bin().join("bpf-linker")).arg("--version"))
    {
        return Ok(());
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc +nightly: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| {
            format!(
                "no libLLVM.so.* in {} (is the nightly toolchain complete?)",
                lib.display()
            )
        })?;
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let prefix = env::temp_dir().join("picket-llvm");
    std::fs::create_dir_all(prefix.join("lib")).map_err(|e| e.to_string())?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&llvm), &link).map_err(|e| e.to_string())?;
    eprintln!("xtask: building bpf-linker against {llvm} (about 2 minutes)");
    sh(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
        ))?;
    if !ok(Command::new(cargo_bin().join("bpf-linker")).arg("--version")) {
        return Err("bpf-linker was installed but does not run".into());
    }
    Ok(())
}

pub fn run(args: &RunArgs) -> Result<()> {
    setup(&args.setup)?;
    let root = workspace_root();
    sh(Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "picket"]))?;
    let bin = root.join("target/release/picket");
    let rules = root.join("rules");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.arg("run").arg("--rules").arg(&rules).args(&args.args);
    sh(&mut cmd)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Python grpcio + grpcio-tools + opentelemetry-proto:
/// `tests/tests/delivery_python.rs` checks the API with the standard Python
/// client (stubs generated from `proto/`) and the OTLP export against a
/// grpcio server with the official OTLP stubs.
fn python_grpcio() -> Result<()> {
    if ok(Command::new("python3").args([
        "-c",
        "import grpc, grpc_tools, opentelemetry.proto.collector.logs.v1",
    ])) {
        return Ok(());
    }
    sh(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "grpcio",
        "grpcio-tools",
        "opentelemetry-proto",
    ]))
}
