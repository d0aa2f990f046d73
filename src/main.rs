//! The `annfs` binary.
fn main() -> std::process::ExitCode {
    annfs::cli::main()
}
