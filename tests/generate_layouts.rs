//! `generate` in the layouts README's "Use zmig in your project" gives: an xtask crate (2a)
//! inside the service's crate, a member of the workspace the service's manifest declares. The
//! xtask has no model, but finds the service's diesel.toml in its parent folder, as diesel does;
//! `generate` must still keep the swap's schema patch in place run after run (it used to remove
//! it on every second run, and `--check` then failed on a clean checkout).

use std::fs;
use std::path::Path;

use zmig_tests::{run_cli, FixtureCrate};

/// `cargo xtask zmig <args>` as run in the crate's folder: without `--manifest-path`, every
/// member of the workspace that uses zmig, the xtask too. (One test in this binary: it changes
/// the process's current folder.)
fn zmig(args: &[&str]) -> (bool, String) {
    let mut argv = vec!["cargo xtask", "zmig"];
    argv.extend_from_slice(args);
    run_cli(argv)
}

#[test]
fn a_swap_beside_the_readmes_xtask_keeps_its_schema_patch_run_after_run() {
    let fixture = FixtureCrate::cars(
        "layout_xtask",
        "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"prepare\")]",
    );
    let manifest = fixture.make_cargo_package("layout-service");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace("[workspace]\n", "[workspace]\nmembers = [\"xtask\"]\n"),
    )
    .unwrap();
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/zmig-runtime")
        .canonicalize()
        .unwrap();
    fs::create_dir_all(fixture.root.join("xtask/src")).unwrap();
    fs::write(
        fixture.root.join("xtask/Cargo.toml"),
        format!(
            "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nzmig-runtime = {{ path = {runtime:?}, features = [\"cli\"] }}\n"
        ),
    )
    .unwrap();
    fs::write(
        fixture.root.join("xtask/src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    zmig_runtime::cli::main()\n}\n",
    )
    .unwrap();

    std::env::set_current_dir(&fixture.root).unwrap();
    let dev = fixture.dev_db().url.clone();
    let (ok, first) = zmig(&["generate", "--database-url", &dev]);
    assert!(ok, "{first}");
    assert!(
        first.contains("src/zmig-schema.patch (the patch"),
        "{first}"
    );
    let patch = fs::read_to_string(fixture.root.join("src/zmig-schema.patch")).unwrap();
    let toml = fs::read_to_string(fixture.root.join("diesel.toml")).unwrap();
    for run in 0..2 {
        let (ok, again) = zmig(&["generate", "--database-url", &dev]);
        assert!(
            ok && again.contains("nothing to write"),
            "run {run}: {again}"
        );
        let (ok, check) = zmig(&["generate", "--check"]);
        assert!(ok, "run {run}: {check}");
    }
    assert_eq!(
        fs::read_to_string(fixture.root.join("src/zmig-schema.patch")).unwrap(),
        patch
    );
    assert_eq!(
        fs::read_to_string(fixture.root.join("diesel.toml")).unwrap(),
        toml
    );
}
