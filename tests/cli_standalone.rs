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
    let (ok, xtask) = run_cli(xtask_argv);
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
    assert_eq!(standalone, xtask);

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
