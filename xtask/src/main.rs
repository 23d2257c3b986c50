//! `cargo xtask …` for this workspace. The zmig commands are one library call, so a user's own
//! xtask can offer them the same way; `cargo xtask bench …` runs zmig's own benchmarks.

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "bench")
    {
        return zmig_bench::main_from(std::env::args_os());
    }
    zmig_runtime::cli::main()
}
