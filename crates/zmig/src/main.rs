//! `zmig`: the same command line as `cargo xtask zmig`, for teams that install it once
//! (`cargo install zmig`) instead of keeping an xtask. Both are one library call,
//! [`zmig_runtime::cli`].

fn main() -> std::process::ExitCode {
    zmig_runtime::cli::main_standalone()
}
