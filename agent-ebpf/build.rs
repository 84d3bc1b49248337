//! Makes cargo rebuild the programs when bpf-linker changes (it is the linker).
fn main() {
    if let Ok(p) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
