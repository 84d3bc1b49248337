//! The `picket` binary: see `picket --help`.

fn main() -> std::process::ExitCode {
    picket::cli::main()
}
