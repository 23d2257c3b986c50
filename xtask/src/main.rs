//! `cargo xtask …` for this workspace. The zmig commands are one library call, so a user's own
//! xtask can offer them the same way.

fn main() -> std::process::ExitCode {
    zmig_runtime::cli::main()
}
