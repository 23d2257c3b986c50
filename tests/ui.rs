//! Compile-fail tests: every mistake in #[zmig] is a compile error on the offending tokens.
//!
//! Paths are relative to this package's root (`tests/`). Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p zmig-tests --test ui`, then read every one of them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
