//! Helpers shared by the integration tests: a PostgreSQL database of their own for each test,
//! and throwaway Diesel crates that zmig generates migrations for.

pub mod cars_ledger;
pub mod cars_next;
pub mod cars_wide;
pub mod caterers_app;
pub mod cluster;
pub mod diesel_workspace;
pub mod fixtures;
pub mod pgbouncer;
pub mod users_accounts_app;
pub mod waits;
pub mod writes;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use zmig_codegen::cli::generate;
use zmig_codegen::project;
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy};
use zmig_runtime::url::with_database;

/// The server the tests use: `DATABASE_URL`, or the local PostgreSQL.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The test server's `server_version_num` (150019 for 15.19), for what differs between majors.
pub fn server_version_num() -> i32 {
    let mut conn = PgConnection::establish(&server_url()).unwrap();
    count(
        &mut conn,
        "SELECT current_setting('server_version_num')::bigint AS n",
    ) as i32
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A database created for one test and dropped when it ends, so tests run in parallel and leave
/// nothing behind.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        let name = format!(
            "zmig_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = PgConnection::establish(&server_url()).unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {} ({e}); see DEVELOPERS.md",
                server_url()
            )
        });
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .unwrap();
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .unwrap();
        let url = with_database(&server_url(), &name);
        TestDb { name, url }
    }

    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&server_url()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// A throwaway Diesel crate: `diesel.toml`, `src/schema.rs`, `src/models.rs` and a first
/// migration creating the tables, in a temporary folder removed on drop.
pub struct FixtureCrate {
    pub root: PathBuf,
    /// The crate's development database, as `diesel print-schema` would read it: its first
    /// migration applied. `generate` reads exact column types from it; made on first use.
    dev_db: std::cell::OnceCell<TestDb>,
}

/// The fixed version stamp tests generate with, so snapshots are stable.
pub const TIMESTAMP: &str = "2026-11-21-120000";

impl FixtureCrate {
    /// `schema` is `schema.rs`, `models` the model source, `create_sql` the first migration.
    pub fn new(
        label: &str,
        schema: &str,
        models: &str,
        create_sql: &str,
        drop_sql: &str,
    ) -> FixtureCrate {
        let root = std::env::temp_dir().join(format!(
            "zmig-fixture-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("src")).unwrap();
        let create = root.join("migrations/2020-01-01-000000-0000_create_tables");
        fs::create_dir_all(&create).unwrap();
        fs::write(root.join("diesel.toml"), "[print_schema]\nfile = \"src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n").unwrap();
        fs::write(root.join("src/schema.rs"), schema).unwrap();
        fs::write(root.join("src/models.rs"), models).unwrap();
        fs::write(create.join("up.sql"), create_sql).unwrap();
        fs::write(create.join("down.sql"), drop_sql).unwrap();
        FixtureCrate {
            root,
            dev_db: std::cell::OnceCell::new(),
        }
    }

    /// The caterers example's schema and first migration, with `attribute` on its model.
    pub fn caterers(label: &str, attribute: &str) -> FixtureCrate {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/caterers");
        let schema = fs::read_to_string(example.join("src/schema.rs")).unwrap();
        let create = fs::read_to_string(
            example.join("migrations/2026-11-01-000000-0000_create_caterers/up.sql"),
        )
        .unwrap();
        let drop = fs::read_to_string(
            example.join("migrations/2026-11-01-000000-0000_create_caterers/down.sql"),
        )
        .unwrap();
        FixtureCrate::new(
            label,
            &schema,
            &model_source("caterers", "Caterer", attribute),
            &create,
            &drop,
        )
    }

    /// The cars example's schema and first migration, with `attribute` on its model.
    pub fn cars(label: &str, attribute: &str) -> FixtureCrate {
        FixtureCrate::cars_with(label, attribute, "")
    }

    /// [`FixtureCrate::cars`] with `more_sql` at the end of the first migration (an index
    /// `schema.rs` does not show, say), so the development database has it too.
    pub fn cars_with(label: &str, attribute: &str, more_sql: &str) -> FixtureCrate {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cars");
        let schema = fs::read_to_string(example.join("src/schema.rs")).unwrap();
        let first = example.join("migrations/2026-11-01-000000-0000_create_cars_and_trips");
        let create = fs::read_to_string(first.join("up.sql")).unwrap() + more_sql;
        let drop = fs::read_to_string(first.join("down.sql")).unwrap();
        FixtureCrate::new(
            label,
            &schema,
            &model_source("cars", "Car", attribute),
            &create,
            &drop,
        )
    }

    /// Makes the fixture a crate `cargo metadata` can read, named `package` and depending on
    /// this workspace's zmig-runtime, as the command line finds models (`--manifest-path`);
    /// returns its manifest.
    pub fn make_cargo_package(&self, package: &str) -> PathBuf {
        let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/zmig-runtime");
        fs::write(
            self.root.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n[dependencies]\nzmig-runtime = {{ path = {:?} }}\n",
                runtime.canonicalize().unwrap()
            ),
        )
        .unwrap();
        fs::write(
            self.root.join("src/lib.rs"),
            "pub mod models;\npub mod schema;\n",
        )
        .unwrap();
        self.root.join("Cargo.toml")
    }

    pub fn migrations_dir(&self) -> PathBuf {
        self.root.join("migrations")
    }

    /// Replaces the model source (to advance `stage`, say).
    pub fn set_models(&self, models: &str) {
        fs::write(self.root.join("src/models.rs"), models).unwrap();
    }

    /// Runs `generate` (or `generate --check`) on the crate; returns the outcome and its report.
    pub fn generate(&self, check: bool) -> Result<(generate_outcome::Outcome, String), String> {
        self.generate_at(check, TIMESTAMP)
    }

    /// `generate` with the clock reading `timestamp` (`YYYY-MM-DD-HHMMSS`).
    pub fn generate_at(
        &self,
        check: bool,
        timestamp: &str,
    ) -> Result<(generate_outcome::Outcome, String), String> {
        let mut catalog = zmig_runtime::catalog::PgCatalog::new(&self.dev_db().url);
        let project =
            project::load_with(&self.root, Some(&mut catalog)).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let outcome =
            generate(&[project], check, timestamp, &mut out).map_err(|e| format!("{e:#}"))?;
        Ok((outcome, String::from_utf8(out).unwrap()))
    }

    /// The development database `generate` reads exact column types from: a database of its
    /// own with the crate's first migration applied.
    pub fn dev_db(&self) -> &TestDb {
        self.dev_db.get_or_init(|| {
            let db = TestDb::new("dev");
            let create = self
                .migrations_dir()
                .join("2020-01-01-000000-0000_create_tables/up.sql");
            let sql = fs::read_to_string(&create).unwrap();
            db.conn().batch_execute(&sql).unwrap();
            db
        })
    }

    /// Every generated file, `folder/file` → contents, sorted.
    pub fn generated_files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        for folder in fs::read_dir(self.migrations_dir()).unwrap().flatten() {
            let folder_name = folder.file_name().to_string_lossy().into_owned();
            if folder_name.starts_with("2020-") {
                continue;
            }
            for file in fs::read_dir(folder.path()).unwrap().flatten() {
                let name = format!("{folder_name}/{}", file.file_name().to_string_lossy());
                files.push((name, fs::read_to_string(file.path()).unwrap()));
            }
        }
        files.sort();
        files
    }

    /// Copies the generated folders to `target/zmig-lint/<name>/` where CI runs squawk and
    /// diesel-guard over them.
    pub fn export_for_lint(&self, name: &str) {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/zmig-lint")
            .join(name);
        let _ = fs::remove_dir_all(&target);
        for (file, contents) in self.generated_files() {
            let path = target.join(&file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
    }

    pub fn migrations(&self) -> FileBasedMigrations {
        FileBasedMigrations::from_path(self.migrations_dir()).unwrap()
    }
}

impl Drop for FixtureCrate {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Re-exported so tests can name the outcome type.
pub mod generate_outcome {
    pub use zmig_codegen::cli::Outcome;
}

/// A model struct for `table` with every column of the caterers table and `attribute`.
pub fn model_source(table: &str, model: &str, attribute: &str) -> String {
    format!(
        "use zmig_runtime::Zmig;\n\n#[derive(Zmig)]\n#[diesel(table_name = {table})]\n{attribute}\npub struct {model} {{\n    pub id: i32,\n}}\n"
    )
}

/// Applies every pending migration.
pub fn run_pending(conn: &mut PgConnection, fixture: &FixtureCrate) {
    conn.run_pending_migrations(fixture.migrations())
        .unwrap_or_else(|e| panic!("migration failed: {e}"));
}

/// Applies pending migrations one at a time, checking after each that reverting it and running
/// it again works (`diesel migration redo`).
pub fn run_each_with_redo(conn: &mut PgConnection, fixture: &FixtureCrate) -> Vec<String> {
    let mut applied = Vec::new();
    loop {
        let pending = conn.pending_migrations(fixture.migrations()).unwrap();
        let Some(next) = pending.into_iter().next() else {
            break;
        };
        let name = next.name().to_string();
        conn.run_migration(&*next)
            .unwrap_or_else(|e| panic!("{name}: up failed: {e}"));
        conn.revert_migration(&*next)
            .unwrap_or_else(|e| panic!("{name}: down failed: {e}"));
        conn.run_migration(&*next)
            .unwrap_or_else(|e| panic!("{name}: up after down failed: {e}"));
        applied.push(name);
    }
    applied
}

/// Reverts the last applied migration.
pub fn revert_last(conn: &mut PgConnection, fixture: &FixtureCrate) -> String {
    conn.revert_last_migration(fixture.migrations())
        .unwrap_or_else(|e| panic!("revert failed: {e}"))
        .to_string()
}

/// Runs the command line `argv` (`cargo xtask`, `zmig`, …) as users run it, through
/// `zmig_runtime::cli::run_from`: whether it succeeded, and what it printed (followed by the
/// error it returned, if any).
pub fn run_cli(argv: Vec<&str>) -> (bool, String) {
    let mut out = Vec::new();
    match zmig_runtime::cli::run_from(argv, &mut out) {
        Ok(code) => (
            code == std::process::ExitCode::SUCCESS,
            String::from_utf8(out).unwrap(),
        ),
        Err(error) => (
            false,
            format!("{}error: {error:#}", String::from_utf8(out).unwrap()),
        ),
    }
}

/// Runs `sql`, panicking with the statement on error; returns the rows affected.
pub fn exec(conn: &mut PgConnection, sql: &str) -> usize {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Backfill ranges whose row lock a batch holds right now (a worker holds its range's lock for
/// the length of each batch): the ranges a `SKIP LOCKED` read cannot take.
pub fn held_ranges(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT (SELECT count(*) FROM zmig_backfill_ranges)
              - (SELECT count(*) FROM (SELECT FROM zmig_backfill_ranges FOR KEY SHARE SKIP LOCKED) AS free)
              AS n",
    )
}

/// The value of `sql`'s single `bigint` column `n`.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Applies the first `n` pending migrations of `fixture`, in order.
pub fn apply_first(conn: &mut PgConnection, fixture: &FixtureCrate, n: usize) {
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    assert!(
        pending.len() >= n,
        "only {} migrations pending, wanted {n}",
        pending.len()
    );
    for migration in pending.iter().take(n) {
        conn.run_migration(&**migration)
            .unwrap_or_else(|e| panic!("{}: {e}", migration.name()));
    }
}

/// A connection for a writer thread of a concurrency test: deadlocks are found in milliseconds
/// (not a second) and reported in English, so they can be recognised and retried. Both settings
/// need a superuser (the local test server's `postgres`); without one, deadlocks are found after
/// a second and the message check still works on an English server.
pub fn writer_conn(url: &str) -> PgConnection {
    let mut conn = PgConnection::establish(url).unwrap();
    let _ = diesel::sql_query("SET deadlock_timeout = '10ms'").execute(&mut conn);
    let _ = diesel::sql_query("SET lc_messages = 'C'").execute(&mut conn);
    conn
}

/// Whether a failed transaction is worth retrying, and why: a serialization failure or a
/// deadlock (opposite lock orders between the sync directions are expected to meet).
pub fn is_retryable(error: &diesel::result::Error) -> Option<&'static str> {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            Some("serialization_failure")
        }
        Error::DatabaseError(_, info) if info.message().contains("deadlock detected") => {
            Some("deadlock")
        }
        _ => None,
    }
}

/// Pending migrations up to and including the one whose name ends with `_<phase>`.
pub struct UpTo {
    pub inner: FileBasedMigrations,
    pub phase: String,
}

impl MigrationSource<Pg> for UpTo {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = MigrationSource::<Pg>::migrations(&self.inner)?;
        all.sort_by_key(|m| m.name().to_string());
        let last = all
            .iter()
            .position(|m| m.name().to_string().ends_with(&format!("_{}", self.phase)))
            .expect("phase folder");
        all.truncate(last + 1);
        Ok(all)
    }
}

/// Applies the fixture's pending migrations up to `phase` as a deploy under traffic would: with
/// the retrying runner, which waits out a lock timeout and tries again.
pub fn migrate_to(url: &str, fixture: &FixtureCrate, phase: &str) {
    let mut conn = PgConnection::establish(url).unwrap();
    let policy = RetryPolicy {
        attempts: 100,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
    };
    let source = UpTo {
        inner: fixture.migrations(),
        phase: phase.to_owned(),
    };
    run_pending_with_retry(&mut conn, source, &policy, |_, _, _| {})
        .unwrap_or_else(|e| panic!("{phase}: {e}"));
}

/// The cars example's fixture crate with `attribute` on `Car`, its migrations generated, and a
/// database with the example's tables, then each statement of `seed` in turn (each alone, so one
/// can be a VACUUM), then the migrations up to `phase` when there is one (`cars_bigint_prepare`,
/// say). The fixture crate lives as long as the test.
pub fn cars_seeded(
    label: &str,
    attribute: &str,
    seed: &[&str],
    phase: Option<&str>,
) -> (TestDb, FixtureCrate) {
    cars_seeded_with(label, attribute, "", seed, phase)
}

/// [`cars_seeded`] on [`FixtureCrate::cars_with`]`(label, attribute, more_sql)`.
pub fn cars_seeded_with(
    label: &str,
    attribute: &str,
    more_sql: &str,
    seed: &[&str],
    phase: Option<&str>,
) -> (TestDb, FixtureCrate) {
    let fixture = FixtureCrate::cars_with(label, attribute, more_sql);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    migrate_to(&db.url, &fixture, "create_tables");
    let mut conn = db.conn();
    for statement in seed {
        conn.batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    if let Some(phase) = phase {
        migrate_to(&db.url, &fixture, phase);
    }
    (db, fixture)
}

/// [`cars_seeded`] with `cars` cars and `trips` trips (`1 + g % cars`), `VACUUM ANALYZE`d as
/// tables that have lived a while are, then the prepare migration of the swap `attribute`
/// declares (named `cars_bigint`).
pub fn cars_swap_prepared(
    label: &str,
    attribute: &str,
    cars: i64,
    trips: i64,
) -> (TestDb, FixtureCrate) {
    let rows = format!(
        "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, {cars}) AS g;
         INSERT INTO trips (car_id, km) SELECT 1 + g % {cars}, 10 FROM generate_series(1, {trips}) AS g;"
    );
    cars_seeded(
        label,
        attribute,
        &[&rows, "VACUUM ANALYZE cars, trips"],
        Some("cars_bigint_prepare"),
    )
}

/// Roles are the server's, not a database's: each test makes its own, dropped after its
/// database (declare it before the `TestDb`, so it is dropped last).
pub struct Roles(Vec<String>);

impl Roles {
    pub fn new(label: &str, names: &[&str]) -> Roles {
        let roles: Vec<String> = names
            .iter()
            .map(|n| format!("zmig_{label}_{n}_{}", std::process::id()))
            .collect();
        let mut admin = PgConnection::establish(&server_url()).unwrap();
        for role in &roles {
            exec(&mut admin, &format!("DROP ROLE IF EXISTS \"{role}\""));
            exec(&mut admin, &format!("CREATE ROLE \"{role}\""));
        }
        Roles(roles)
    }

    pub fn get(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&server_url()) {
            for role in &self.0 {
                let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{role}\""))
                    .execute(&mut admin);
            }
        }
    }
}
