//! The throwaway Diesel crates the database benchmarks generate zmig's migrations in, and the
//! caterers data set the extract benchmarks share: a crate holding the caterers example's schema
//! and first migration, with zmig's extract attribute at `dual_write` and the folders `generate`
//! writes for it; a database with that crate's migrations applied through diesel_migrations; and
//! the caterers rows, made in one statement.
//!
//! The example's schema is copied here rather than read from `examples/caterers`: that crate
//! moves through the stages (its `schema.rs` loses the moved columns at write_new), while the
//! benchmarks always measure the same starting point.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::{Pg, PgConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy};

use crate::db::{self, BenchDb};

/// The zmig migration the benchmarks measure.
pub const MIGRATION: &str = "caterers_addresses";

/// The fixed version stamp of the generated folders (after the create migration's).
const TIMESTAMP: &str = "2026-11-21-120000";

/// The caterers example's `schema.rs` and first migration, as the cars benchmark takes its
/// example's. The example's committed extract stays at `dual_write`, so its `schema.rs` still has
/// the moved columns, the starting point these benchmarks measure.
const SCHEMA_RS: &str = include_str!("../../../examples/caterers/src/schema.rs");
const CREATE_SQL: &str = include_str!(
    "../../../examples/caterers/migrations/2026-11-01-000000-0000_create_caterers/up.sql"
);
const DROP_SQL: &str = include_str!(
    "../../../examples/caterers/migrations/2026-11-01-000000-0000_create_caterers/down.sql"
);

const MODELS_RS: &str = "use zmig_runtime::Zmig;

#[derive(Zmig)]
#[diesel(table_name = caterers)]
#[zmig(
    extract(into = addresses, columns(street1, street2, city, state, zip)),
    stage = \"dual_write\"
)]
pub struct Caterer {
    pub id: i32,
}
";

/// The owner table, for the writers' typed (and so prepared, cached) statements, as a Diesel
/// application writes: the example's own `table!`.
pub mod schema {
    include!("../../../examples/caterers/src/schema.rs");
}
pub use schema::caterers;

/// The caterers crate: its schema, its first migration, and the extract at `dual_write`
/// (expand and dual_write).
const CATERERS_CRATE: CrateFiles = CrateFiles {
    label: "caterers",
    schema_rs: SCHEMA_RS,
    models_rs: MODELS_RS,
    create: "create_caterers",
    create_sql: CREATE_SQL,
    drop_sql: DROP_SQL,
    generated: 2,
};

/// What a temporary crate is made of: the application's `schema.rs`, the annotated model, the
/// first migration (its name, up and down), and how many folders `generate` must write for it.
pub struct CrateFiles {
    pub label: &'static str,
    pub schema_rs: &'static str,
    pub models_rs: &'static str,
    pub create: &'static str,
    pub create_sql: &'static str,
    pub drop_sql: &'static str,
    pub generated: usize,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary Diesel crate with the first migration of `CrateFiles` and zmig's generated
/// migrations after it. Removed on drop.
pub struct TempCrate {
    pub root: PathBuf,
}

impl TempCrate {
    /// The caterers crate, with the extract's expand and dual_write folders.
    pub fn caterers() -> Result<TempCrate> {
        TempCrate::generated(&CATERERS_CRATE)
    }

    /// Writes the crate `files` describes and runs zmig's `generate` on it.
    pub fn generated(files: &CrateFiles) -> Result<TempCrate> {
        let root = std::env::temp_dir().join(format!(
            "zmig-bench-{}-{}-{}",
            files.label,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        let krate = TempCrate { root };
        let create = krate.root.join(format!(
            "migrations/2020-01-01-000000-0000_{}",
            files.create
        ));
        fs::create_dir_all(krate.root.join("src"))?;
        fs::create_dir_all(&create)?;
        fs::write(
            krate.root.join("diesel.toml"),
            "[print_schema]\nfile = \"src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n",
        )?;
        fs::write(krate.root.join("src/schema.rs"), files.schema_rs)?;
        fs::write(krate.root.join("src/models.rs"), files.models_rs)?;
        fs::write(create.join("up.sql"), files.create_sql)?;
        fs::write(create.join("down.sql"), files.drop_sql)?;
        // The development database generate reads exact column types from, as a team's would
        // be: the application's first migration applied.
        let dev = BenchDb::create()?;
        db::exec(&mut dev.conn()?, files.create_sql)?;
        let mut catalog = zmig_runtime::catalog::PgCatalog::new(&dev.url);
        let project = zmig_codegen::project::load_with(&krate.root, Some(&mut catalog))
            .map_err(|e| anyhow!("{e}"))?;
        let mut out = Vec::new();
        let outcome = zmig_codegen::cli::generate(&[project], false, TIMESTAMP, &mut out)?;
        if !outcome.ok() || outcome.written.len() != files.generated {
            bail!(
                "generating the {} migrations failed:\n{}",
                files.label,
                String::from_utf8_lossy(&out)
            );
        }
        Ok(krate)
    }

    pub fn migrations(&self) -> Result<FileBasedMigrations> {
        FileBasedMigrations::from_path(self.root.join("migrations"))
            .map_err(|e| anyhow!("reading the generated migrations: {e}"))
    }

    /// Applies the next pending migration, which must be the one whose name contains `what`,
    /// as a service does at start-up: with zmig-runtime's runner, which tries again (after a
    /// growing pause) a migration that gave up waiting for a lock. Returns the retries.
    pub fn apply_next(&self, conn: &mut PgConnection, what: &str) -> Result<u32> {
        let pending = conn
            .pending_migrations(self.migrations()?)
            .map_err(|e| anyhow!("listing pending migrations: {e}"))?;
        let Some(next) = pending.first() else {
            bail!("no migration pending, expected {what}");
        };
        let name = next.name().to_string();
        if !name.contains(what) {
            bail!("the next pending migration is {name}, expected {what}");
        }
        let only = OneMigration {
            migrations: self.migrations()?,
            name,
        };
        let mut retries = 0;
        run_pending_with_retry(conn, only, &RetryPolicy::default(), |_, _, _| retries += 1)?;
        Ok(retries)
    }

    /// Reverts the last applied migration, which must be the one whose name contains `what`.
    pub fn revert_last(&self, conn: &mut PgConnection, what: &str) -> Result<()> {
        let expected = MigrationSource::<Pg>::migrations(&self.migrations()?)
            .map_err(|e| anyhow!("reading the generated migrations: {e}"))?
            .iter()
            .map(|m| m.name())
            .find(|name| name.to_string().contains(what))
            .map(|name| name.version().as_owned())
            .ok_or_else(|| anyhow!("no migration named like {what}"))?;
        let reverted = conn
            .revert_last_migration(self.migrations()?)
            .map_err(|e| anyhow!("reverting {what}: {e}"))?;
        if reverted != expected {
            bail!("reverted migration {reverted}, expected {what} ({expected})");
        }
        Ok(())
    }
}

impl Drop for TempCrate {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The migration of a folder named `name`, alone: what `apply_next` hands the runner.
struct OneMigration {
    migrations: FileBasedMigrations,
    name: String,
}

impl MigrationSource<Pg> for OneMigration {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = MigrationSource::<Pg>::migrations(&self.migrations)?;
        all.retain(|m| m.name().to_string() == self.name);
        Ok(all)
    }
}

/// A benchmark database holding the caterers table, seeded, with the crate whose migrations it
/// applies.
pub struct Caterers {
    pub db: BenchDb,
    pub krate: TempCrate,
}

impl Caterers {
    /// A new database with `rows` caterers, analyzed, and no zmig migration applied yet.
    pub fn seeded(rows: i64) -> Result<Caterers> {
        let krate = TempCrate::caterers()?;
        let db = BenchDb::create()?;
        let fixture = Caterers { db, krate };
        let mut conn = fixture.db.conn()?;
        fixture.apply_next(&mut conn, "create_caterers")?;
        seed(&mut conn, rows)?;
        Ok(fixture)
    }

    /// Applies the next pending migration, which must be the one whose name contains `what`.
    pub fn apply_next(&self, conn: &mut PgConnection, what: &str) -> Result<()> {
        self.krate.apply_next(conn, what).map(|_| ())
    }

    /// Reverts the last applied migration, which must be the one whose name contains `what`.
    pub fn revert_last(&self, conn: &mut PgConnection, what: &str) -> Result<()> {
        self.krate.revert_last(conn, what)
    }

    /// Empties the new table and forgets the backfill, so the next backfill starts from scratch.
    pub fn reset_new_table(&self, conn: &mut PgConnection) -> Result<()> {
        db::exec(
            conn,
            &format!(
                "TRUNCATE addresses;
                 DO $$ BEGIN
                     IF to_regclass('zmig_backfill_runs') IS NOT NULL THEN
                         DELETE FROM zmig_backfill_runs WHERE migration = '{MIGRATION}';
                     END IF;
                 END $$;"
            ),
        )
    }
}

/// `rows` caterers with ids `1..=rows`, in one `INSERT … SELECT … FROM generate_series`, with
/// varied values from a seeded `random()`: street numbers and random-looking street names, a
/// third without `street2`, cities and states from small lists, five-digit zips; then
/// `VACUUM ANALYZE`, so the planner has statistics and every page is all-visible (a first read
/// does not pay for setting hint bits in one of the timed steps).
pub fn seed(conn: &mut PgConnection, rows: i64) -> Result<()> {
    let started = std::time::Instant::now();
    db::exec(
        conn,
        &format!(
            "SELECT setseed(0.42);
             INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state, created_at, updated_at)
             SELECT (ARRAY['Golden', 'Blue', 'Happy', 'Little', 'Royal', 'Green', 'Silver', 'Sunny', 'Urban', 'Rustic'])[1 + floor(random() * 10)::int]
                        || ' ' || (ARRAY['Fork', 'Spoon', 'Table', 'Kitchen', 'Plate', 'Oven', 'Feast', 'Pantry'])[1 + floor(random() * 8)::int]
                        || ' ' || i,
                    'caterer' || i || '@example.com',
                    '+1 ' || (200 + floor(random() * 800)::int) || '-555-' || lpad(floor(random() * 10000)::int::text, 4, '0'),
                    (1 + floor(random() * 9999)::int)
                        || ' ' || (ARRAY['', '', '', 'North ', 'South ', 'East ', 'West ', 'Old '])[1 + floor(random() * 8)::int]
                        || (ARRAY['Maple', 'Oak', 'Cedar', 'Pine', 'Elm', 'Willow', 'Birch', 'Aspen', 'Hickory', 'Walnut',
                                  'Lake', 'River', 'Hill', 'Park', 'Meadow', 'Forest', 'Spring', 'Valley', 'Sunset', 'Harbor',
                                  'Washington', 'Lincoln', 'Jefferson', 'Madison', 'Franklin', 'Jackson', 'Adams', 'Monroe',
                                  'Church', 'Mill', 'Market', 'Center', 'Union', 'Highland', 'Prospect', 'Broad'])[1 + floor(random() * 36)::int]
                        || ' ' || (ARRAY['St', 'Ave', 'Rd', 'Blvd', 'Ln', 'Dr', 'Way', 'Ct', 'Pl', 'Ter'])[1 + floor(random() * 10)::int],
                    CASE WHEN random() < 1.0 / 3 THEN NULL
                         ELSE (ARRAY['Suite', 'Apt', 'Unit', 'Floor', 'Building'])[1 + floor(random() * 5)::int]
                              || ' ' || (1 + floor(random() * 500)::int) END,
                    (ARRAY['Boston', 'Austin', 'Denver', 'Tulsa', 'Reno', 'Salem', 'Dayton', 'Fresno', 'Portland',
                           'Madison', 'Raleigh', 'Tucson', 'Omaha', 'Spokane', 'Savannah', 'Boise'])[1 + floor(random() * 16)::int],
                    lpad(floor(random() * 100000)::int::text, 5, '0'),
                    (ARRAY['MA', 'TX', 'CO', 'OK', 'NV', 'OR', 'OH', 'CA', 'WI', 'NC', 'AZ', 'NE', 'WA', 'GA', 'ID'])[1 + floor(random() * 15)::int],
                    timestamp '2019-01-01' + random() * interval '6 years',
                    timestamp '2025-01-01' + random() * interval '300 days'
             FROM generate_series(1, {rows}) AS i;"
        ),
    )
    .context("seeding caterers")?;
    // Not in the statement above: VACUUM cannot run in a multi-statement transaction.
    db::exec(conn, "VACUUM ANALYZE caterers")?;
    let n = db::count(conn, "SELECT count(*) AS n FROM caterers")?;
    if n != rows {
        bail!("seeded {n} caterers, expected {rows}");
    }
    crate::progress(&format!(
        "seeded {} caterers in {:.1} s",
        crate::report::thousands(rows),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
