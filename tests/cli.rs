//! `cargo xtask zmig …` as users run it, through `zmig_runtime::cli::run_from`: plan, generate
//! (and --check), backfill, verify and status on a fixture crate and a real database, and the
//! errors a user meets. (One test in this binary: it sets DATABASE_URL for the process.)

use std::path::Path;

use diesel_migrations::MigrationHarness;
use zmig_tests::{exec, fixtures, run_cli, TestDb};

/// Runs `cargo xtask zmig <args>`; returns whether it succeeded and what it printed (or the
/// error it returned).
fn zmig(manifest: &Path, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["cargo xtask", "zmig"];
    argv.extend_from_slice(args);
    let manifest = manifest.to_str().unwrap();
    if !matches!(args.first(), Some(&"help")) {
        argv.extend(["--manifest-path", manifest]);
    }
    run_cli(argv)
}

#[test]
fn the_command_line_walks_an_extract_from_plan_to_verify() {
    let fixture = fixtures::caterers("cli");
    // A real crate: cargo metadata must find it and its zmig dependency.
    let manifest = fixture.make_cargo_package("cli-fixture");

    // The development database, named: DATABASE_URL may be set to a server's own database
    // (`.ci/pg-major` sets it), which plan would read and not find caterers in.
    let dev = fixture.dev_db().url.clone();
    let (ok, plan) = zmig(&manifest, &["plan", "--database-url", &dev]);
    assert!(ok, "{plan}");
    assert!(plan.contains("caterers_addresses: extract (street1, street2, city, state, zip) from caterers into addresses"), "{plan}");
    assert!(
        plan.contains("3. backfill   [shipped] ships: runtime task"),
        "{plan}"
    );

    let (ok, check) = zmig(&manifest, &["generate", "--check", "--database-url", &dev]);
    assert!(!ok && check.contains("missing migration folder"), "{check}");
    // generate copies exact column types from the database diesel print-schema reads, and
    // without it writes nothing (DATABASE_URL may name the server's own database here, which has
    // no caterers table: refused as well).
    let (ok, refused) = zmig(&manifest, &["generate"]);
    assert!(
        !ok && (refused.contains("needs the database") || refused.contains("not in the database")),
        "{refused}"
    );
    assert!(!fixture.migrations_dir().read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("expand")));
    let (ok, generated) = zmig(&manifest, &["generate", "--database-url", &dev]);
    assert!(
        ok && generated.matches("wrote ").count() >= 4,
        "{generated}"
    );
    let (ok, check) = zmig(&manifest, &["generate", "--check"]);
    assert!(ok, "{check}");

    let db = TestDb::new("cli");
    std::env::set_var("DATABASE_URL", &db.url);
    let mut conn = db.conn();
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    conn.run_migration(&*pending[0]).unwrap();
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
         SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA' FROM generate_series(1, 5000) g",
    );

    // Before dual_write the backfill refuses, saying what to do.
    let (ok, refused) = zmig(&manifest, &["backfill", "caterers_addresses"]);
    assert!(
        !ok && refused.contains("dual_write migration of `caterers_addresses` is not applied"),
        "{refused}"
    );
    let (ok, unknown) = zmig(&manifest, &["backfill", "caterers_adresses"]);
    assert!(
        !ok && unknown.contains("no zmig migration named `caterers_adresses`")
            && unknown.contains("caterers_addresses"),
        "{unknown}"
    );

    conn.run_migration(&*pending[1]).unwrap();
    conn.run_migration(&*pending[2]).unwrap();
    let (ok, status) = zmig(&manifest, &["status"]);
    assert!(ok, "{status}");
    assert!(status.contains("migration dual_write  applied"), "{status}");
    assert!(status.contains("migration write_new   pending"), "{status}");
    assert!(
        status.contains("backfill              not started"),
        "{status}"
    );

    let (ok, backfilled) = zmig(
        &manifest,
        &[
            "backfill",
            "caterers_addresses",
            "--workers",
            "2",
            "--batch-size",
            "300",
        ],
    );
    assert!(
        ok && backfilled.contains("backfill complete"),
        "{backfilled}"
    );
    let (ok, verified) = zmig(&manifest, &["verify", "caterers_addresses"]);
    assert!(
        ok && verified.contains("caterers_addresses: 0 rows differing"),
        "{verified}"
    );

    exec(
        &mut conn,
        "DELETE FROM addresses WHERE caterer_id IN (7, 8)",
    );
    let (ok, verified) = zmig(&manifest, &["verify", "caterers_addresses"]);
    assert!(!ok, "verify exits non-zero when rows differ: {verified}");
    assert!(
        verified.contains("2 rows differing")
            && verified.contains("missing: 2")
            && verified.contains("7 (missing)"),
        "{verified}"
    );

    let (ok, status) = zmig(&manifest, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains(
            "backfill              complete: 100.0% of keys, 5000 owners read, 5000 rows written"
        ),
        "{status}"
    );
    assert!(
        status.contains("verify                2 rows differing"),
        "{status}"
    );
    // `--json` says the same, for tooling.
    let (ok, json) = zmig(&manifest, &["status", "--json"]);
    assert!(ok, "{json}");
    let json: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let migration = &json["migrations"][0];
    assert_eq!(migration["name"], "caterers_addresses", "{json}");
    assert_eq!(migration["strategy"], "extract", "{json}");
    assert_eq!(migration["code"]["stage"], "contract", "{json}");
    assert_eq!(migration["code"]["stage_number"], 6, "{json}");
    assert_eq!(migration["code"]["stages"], 6, "{json}");
    let folders = migration["code"]["folders"].as_array().unwrap();
    let states: Vec<(&str, &str)> = folders
        .iter()
        .map(|f| (f["phase"].as_str().unwrap(), f["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("expand", "applied"),
            ("dual_write", "applied"),
            ("write_new", "pending"),
            ("contract", "pending")
        ],
        "{json}"
    );
    let backfill = &migration["backfill"];
    assert_eq!(backfill["state"], "complete", "{json}");
    assert_eq!(backfill["finished"], true, "{json}");
    assert_eq!(backfill["owners_read"], 5000, "{json}");
    assert_eq!(backfill["rows_written"], 5000, "{json}");
    assert_eq!(migration["verify"]["rows_with_problems"], 2, "{json}");
    assert_eq!(migration["last_run"]["ended"], "finished", "{json}");

    // verify says how to mend; `--again` walks every key once more and does.
    assert!(
        verified.contains("cargo xtask zmig backfill caterers_addresses --again"),
        "{verified}"
    );
    let (ok, mended) = zmig(&manifest, &["backfill", "caterers_addresses", "--again"]);
    assert!(ok && mended.contains("backfill complete"), "{mended}");
    let (ok, verified) = zmig(&manifest, &["verify", "caterers_addresses"]);
    assert!(
        ok && verified.contains("caterers_addresses: 0 rows differing"),
        "{verified}"
    );

    let (ok, paused) = zmig(&manifest, &["backfill", "caterers_addresses", "--pause"]);
    assert!(ok && paused.contains("paused"), "{paused}");

    std::env::remove_var("DATABASE_URL");
    let (ok, no_url) = zmig(&manifest, &["verify", "caterers_addresses"]);
    assert!(!ok && no_url.contains("set DATABASE_URL"), "{no_url}");
    let (ok, bad_flag) = zmig(
        &manifest,
        &["backfill", "caterers_addresses", "--workers", "many"],
    );
    assert!(
        !ok && bad_flag.contains("invalid value 'many'"),
        "{bad_flag}"
    );
    // Numbers that parse but cannot work are refused before anything runs.
    for (flag, value) in [
        ("--workers", "0"),
        ("--batch-size", "-1"),
        ("--batch-size", "0"),
    ] {
        let arg = format!("{flag}={value}");
        let (ok, refused) = zmig(&manifest, &["backfill", "caterers_addresses", &arg]);
        assert!(
            !ok && refused.contains(&format!("invalid value '{value}' for '{flag}")),
            "{arg}: {refused}"
        );
    }
}
