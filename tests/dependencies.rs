//! What a service that derives `Zmig` compiles on the proc-macro path: zmig-derive and what it
//! builds with (zmig-codegen without its `cli` and `serde` features) hold one syn major, the one
//! diesel_derives uses, so the derive adds no second syn to a Diesel project's build.

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn the_derive_builds_with_one_syn_major() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--package",
            "zmig-derive",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let syn_majors: BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.strip_prefix("syn v"))
        .map(|version| version.split('.').next().unwrap())
        .collect();
    assert_eq!(syn_majors.len(), 1, "syn majors {syn_majors:?} in:\n{tree}");
    for heavy in ["serde_derive", "thiserror-impl", "clap"] {
        assert!(
            !tree
                .lines()
                .any(|line| line.starts_with(&format!("{heavy} v"))),
            "{heavy} is on the derive's path:\n{tree}"
        );
    }
}
