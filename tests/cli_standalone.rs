//! The standalone `zmig` binary (`crates/zmig`, `cargo install zmig`) runs the same commands as
//! `cargo xtask zmig`: one library call, under its own name in `--help` and usage errors.

use zmig_runtime::cli::run_standalone_from;
use zmig_tests::{fixtures, run_cli};

#[test]
fn zmig_runs_the_same_commands_as_the_xtask() {
    let fixture = fixtures::caterers("standalone");
    let manifest = fixture.make_cargo_package("standalone-fixture");
    let dev = fixture.dev_db().url.clone();
    let args = [
        "plan",
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--database-url",
        &dev,
    ];

    let mut xtask_argv = vec!["cargo xtask", "zmig"];
    xtask_argv.extend(args);
    let (ok, xtask) = run_cli(xtask_argv.clone());
    assert!(ok, "{xtask}");

    let mut argv = vec!["zmig"];
    argv.extend(args);
    let mut out = Vec::new();
    let code = run_standalone_from(argv, &mut out).unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let standalone = String::from_utf8(out).unwrap();
    assert!(
        standalone.contains("caterers_addresses: extract (street1, street2, city, state, zip)"),
        "{standalone}"
    );
    // The same plan, each naming the command it was run as in its next steps.
    assert!(
        xtask.contains("`cargo xtask zmig backfill caterers_addresses`"),
        "{xtask}"
    );
    assert!(
        standalone.contains("`zmig backfill caterers_addresses`")
            && !standalone.contains("cargo xtask"),
        "{standalone}"
    );
    assert_eq!(standalone, xtask.replace("cargo xtask zmig", "zmig"));
    let (_, again) = run_cli(xtask_argv);
    assert_eq!(again, xtask, "the xtask says `cargo xtask zmig` again");

    let help = run_standalone_from(["zmig", "--help"], &mut Vec::new())
        .unwrap_err()
        .to_string();
    for command in [
        "plan",
        "generate",
        "backfill",
        "verify",
        "status",
        "--database-url",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
    assert!(help.contains("Usage: zmig [OPTIONS] <COMMAND>"), "{help}");
    assert!(help.contains("Exit codes: 0 done; 1 "), "{help}");
    let wrong = run_standalone_from(["zmig", "backfil"], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("unrecognized subcommand 'backfil'") && wrong.contains("Usage: zmig"),
        "{wrong}"
    );
}

/// An installed `zmig` of one version on a crate whose `Cargo.lock` builds another
/// `zmig-runtime`: the derive and the command would read the attribute differently, so the
/// command refuses, says which version to install, and writes nothing.
#[test]
fn zmig_refuses_a_crate_built_with_another_zmig_version() {
    let fixture = fixtures::caterers("standalone_version");
    let manifest = fixture.make_cargo_package("standalone-version-fixture");
    let root = manifest.parent().unwrap();
    std::fs::write(
        root.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"standalone-version-fixture\"\nversion = \"0.1.0\"\n\
         dependencies = [\"zmig-runtime\"]\n\n[[package]]\nname = \"zmig-runtime\"\nversion = \"9.9.9\"\n",
    )
    .unwrap();
    let before = std::fs::read_dir(fixture.migrations_dir()).unwrap().count();
    let dev = fixture.dev_db().url.clone();
    for command in ["plan", "generate"] {
        let error = run_standalone_from(
            [
                "zmig",
                command,
                "--manifest-path",
                manifest.to_str().unwrap(),
                "--database-url",
                &dev,
            ],
            &mut Vec::new(),
        )
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains(&format!(
                "resolves zmig-runtime 9.9.9, but this zmig is {}",
                env!("CARGO_PKG_VERSION")
            )) && text.contains("cargo install --locked zmig --version 9.9.9"),
            "{command}: {text}"
        );
    }
    assert_eq!(
        std::fs::read_dir(fixture.migrations_dir()).unwrap().count(),
        before,
        "nothing written"
    );

    // The same crate with its lock file at this zmig's version works.
    std::fs::remove_file(root.join("Cargo.lock")).unwrap();
    let mut out = Vec::new();
    let code = run_standalone_from(
        [
            "zmig",
            "plan",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "--database-url",
            &dev,
        ],
        &mut out,
    )
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}
