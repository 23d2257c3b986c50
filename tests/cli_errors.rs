//! The errors a person meets on the command line: each one line that names the cause and says
//! what to do, on a real database (a backfill worker ended by `pg_terminate_backend`, a database
//! error, a role's `statement_timeout`, verify before any backfill).

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use zmig_tests::{exec, fixtures, run_cli, FixtureCrate, TestDb};

/// A caterers fixture that `cargo metadata` can read (the CLI finds models through it).
fn cli_fixture(label: &str) -> (FixtureCrate, PathBuf) {
    let fixture = fixtures::caterers(label);
    let manifest = fixture.make_cargo_package("cli-errors-fixture");
    fixture.generate(false).unwrap();
    (fixture, manifest)
}

/// `cargo xtask zmig <args> --manifest-path … --database-url …`.
fn zmig(manifest: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["cargo xtask", "zmig"];
    argv.extend_from_slice(args);
    argv.extend([
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--database-url",
        url,
    ]);
    run_cli(argv)
}

/// A database with the caterers table filled and the first `migrations` migrations applied.
fn database(label: &str, fixture: &FixtureCrate, migrations: usize, owners: u32) -> TestDb {
    let db = TestDb::new(label);
    let mut conn = db.conn();
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    conn.run_migration(&*pending[0]).unwrap();
    exec(
        &mut conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
             SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA'
             FROM generate_series(1, {owners}) g"
        ),
    );
    for migration in pending.iter().take(migrations).skip(1) {
        conn.run_migration(&**migration).unwrap();
    }
    db
}

/// The error part of a failed run's output: what follows `error: `.
fn error_lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains("error")).collect()
}

#[test]
fn a_worker_ended_by_the_server_says_so_once_and_how_to_resume() {
    let (fixture, manifest) = cli_fixture("terminated");
    let db = database("terminated", &fixture, 3, 20_000);
    let url = db.url.clone();
    let killer = std::thread::spawn(move || {
        let mut admin = PgConnection::establish(&url).unwrap();
        // Wait for a worker to be at work, then end its session as an operator would.
        for _ in 0..500 {
            let ended = diesel::sql_query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name LIKE 'zmig % worker' AND datname = current_database()",
            )
            .execute(&mut admin)
            .unwrap();
            if ended > 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no worker seen");
    });
    let (ok, output) = zmig(
        &manifest,
        &db.url,
        &[
            "backfill",
            "caterers_addresses",
            "--batch-size",
            "100",
            "--pause-ms",
            "50",
            "--no-yield",
        ],
    );
    killer.join().unwrap();
    assert!(!ok, "{output}");
    println!("{output}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{output}");
    let error = errors[0];
    // The cause once (libpq words it by transport: "server closed the connection
    // unexpectedly", "SSL connection has been closed unexpectedly", "no connection to the
    // server"), what it means and what to do.
    for echo in [
        "no connection to the server",
        "closed the connection unexpectedly",
        "has been closed unexpectedly",
    ] {
        assert!(error.matches(echo).count() <= 1, "said twice: {output}");
    }
    assert!(
        error.contains("lost its connection to the database (")
            && error.contains("pg_terminate_backend")
            && error.ends_with("what was done is kept, run it again to resume"),
        "{output}"
    );
    // And it does resume.
    let (ok, output) = zmig(&manifest, &db.url, &["backfill", "caterers_addresses"]);
    assert!(ok && output.contains("backfill complete"), "{output}");
}

#[test]
fn verify_before_any_backfill_says_to_run_it_not_to_run_it_again() {
    let (fixture, manifest) = cli_fixture("verify_first");
    // The owners are inserted before dual_write's triggers: none is in the new table yet.
    let db = database("verify_first", &fixture, 3, 50);
    let (ok, output) = zmig(&manifest, &db.url, &["verify", "caterers_addresses"]);
    println!("{output}");
    assert!(!ok, "{output}");
    assert!(
        output.contains("missing: 50")
            && output.contains(
                "the backfill has not run yet: cargo xtask zmig backfill caterers_addresses, then verify again"
            )
            && !output.contains("--again"),
        "{output}"
    );
    let (ok, output) = zmig(&manifest, &db.url, &["backfill", "caterers_addresses"]);
    assert!(ok, "{output}");
    let (ok, output) = zmig(&manifest, &db.url, &["verify", "caterers_addresses"]);
    assert!(ok && output.contains("0 rows differing"), "{output}");
}

#[test]
fn verify_cut_short_by_a_roles_statement_timeout_says_so() {
    let (fixture, manifest) = cli_fixture("verify_timeout");
    let db = database("verify_timeout", &fixture, 3, 60_000);
    let (ok, output) = zmig(&manifest, &db.url, &["backfill", "caterers_addresses"]);
    assert!(ok, "{output}");
    // The role's own setting in this database, as a DBA guards an application role.
    exec(
        &mut db.conn(),
        &format!(
            "ALTER ROLE CURRENT_USER IN DATABASE \"{}\" SET statement_timeout = '20ms'",
            db.name
        ),
    );
    let (ok, output) = zmig(&manifest, &db.url, &["verify", "caterers_addresses"]);
    println!("{output}");
    assert!(!ok, "{output}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{output}");
    assert!(
        errors[0].contains("statement_timeout of 20 ms, set for the role in this database")
            && errors[0].contains("PGOPTIONS='-c statement_timeout=0'"),
        "{output}"
    );
    // As it says: the URL's options give zmig's session no timeout.
    let url = format!("{}?options=-c%20statement_timeout%3D0", db.url);
    let (ok, output) = zmig(&manifest, &url, &["verify", "caterers_addresses"]);
    assert!(ok && output.contains("0 rows differing"), "{output}");
}
