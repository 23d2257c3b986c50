//! The cars data set the swap benchmark uses: a throwaway Diesel crate holding the cars example's
//! schema and first migration, with zmig's swap attribute (`cars.id` and `trips.car_id` to
//! bigint) at `finalize` and the prepare and finalize folders `generate` writes for it; and a
//! seeded database that every measure works on a fresh copy of, so each starts from the same rows
//! on the same pages.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::db::{self, BenchDb};
use crate::fixture::{CrateFiles, TempCrate};
use crate::report::thousands;

/// The zmig migration the benchmark measures.
pub const SWAP: &str = "cars_bigint";

/// The cars example's `schema.rs` and first migration, as the integration tests take them too.
/// The example's committed swap stays at `prepare`, so its `schema.rs` shows the types before the
/// swap, the starting point this benchmark measures.
const SCHEMA_RS: &str = include_str!("../../../examples/cars/src/schema.rs");
const CREATE_SQL: &str = include_str!(
    "../../../examples/cars/migrations/2026-11-01-000000-0000_create_cars_and_trips/up.sql"
);
const DROP_SQL: &str = include_str!(
    "../../../examples/cars/migrations/2026-11-01-000000-0000_create_cars_and_trips/down.sql"
);

const MODELS_RS: &str = "use zmig_runtime::Zmig;

#[derive(Zmig)]
#[diesel(table_name = cars)]
#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]
pub struct Car {
    pub id: i32,
}
";

const CARS_CRATE: CrateFiles = CrateFiles {
    label: "cars",
    schema_rs: SCHEMA_RS,
    models_rs: MODELS_RS,
    create: "create_cars_and_trips",
    create_sql: CREATE_SQL,
    drop_sql: DROP_SQL,
    // prepare and finalize (move is a runtime task).
    generated: 2,
};

/// The seeded database (never measured itself: only copied) and the crate whose migrations the
/// copies apply.
pub struct Cars {
    seeded: BenchDb,
    pub krate: TempCrate,
    pub rows: i64,
}

impl Cars {
    /// A database with the first migration applied through diesel_migrations, `rows` cars and as
    /// many trips, vacuumed and analyzed.
    pub fn seeded(rows: i64) -> Result<Cars> {
        let krate = TempCrate::generated(&CARS_CRATE)?;
        let seeded = BenchDb::create()?;
        {
            // Closed before the first copy: a database being copied must have no session.
            let mut conn = seeded.conn()?;
            krate.apply_next(&mut conn, "create_cars_and_trips")?;
            seed(&mut conn, rows)?;
        }
        Ok(Cars {
            seeded,
            krate,
            rows,
        })
    }

    /// Where the benchmark runs, read on the seeded database (the session closes again).
    pub fn environment(&self) -> Result<Vec<(String, String)>> {
        crate::environment(&mut self.seeded.conn()?)
    }

    /// A fresh database identical to the seeded one, dropped on drop.
    pub fn copy(&self) -> Result<BenchDb> {
        self.seeded.copy()
    }
}

/// `rows` cars with ids `1..=rows` and as many trips, each table in one
/// `INSERT … SELECT … FROM generate_series` with a seeded `random()`: makes and their models from
/// a small catalogue, years 1990–2025, mileages up to 300,000 km, creation times over ten years;
/// trips of random cars (some have none, some several) with mostly short distances. Then
/// `VACUUM ANALYZE`, so the planner has statistics and every page is all-visible.
fn seed(conn: &mut diesel::pg::PgConnection, rows: i64) -> Result<()> {
    let started = Instant::now();
    db::exec(
        conn,
        &format!(
            "SELECT setseed(0.42);
             INSERT INTO cars (make, model, year, mileage, created_at)
             SELECT (ARRAY['Toyota', 'Ford', 'Volkswagen', 'Honda', 'Renault', 'Fiat', 'Kia', 'Skoda'])[1 + k],
                    (ARRAY['Corolla', 'Yaris', 'RAV4', 'Prius', 'Fiesta', 'Focus', 'Transit', 'Kuga',
                           'Golf', 'Polo', 'Passat', 'Tiguan', 'Civic', 'Jazz', 'CR-V', 'Accord',
                           'Clio', 'Megane', 'Captur', 'Kangoo', 'Panda', 'Punto', '500', 'Tipo',
                           'Picanto', 'Rio', 'Ceed', 'Sportage', 'Fabia', 'Octavia', 'Superb', 'Kodiaq'])[1 + k * 4 + floor(random() * 4)::int],
                    1990 + floor(random() * 36)::int,
                    floor(random() * 300000)::int,
                    timestamptz '2015-01-01 00:00:00+00' + random() * interval '10 years'
             FROM (SELECT i, floor(random() * 8)::int AS k FROM generate_series(1, {rows}) AS i) AS g
             ORDER BY i;
             INSERT INTO trips (car_id, km)
             SELECT 1 + floor(random() * {rows})::int, 1 + floor(-ln(1 - random()) * 40)::int
             FROM generate_series(1, {rows});"
        ),
    )
    .context("seeding cars and trips")?;
    // Not in the statement above: VACUUM cannot run in a multi-statement transaction.
    db::exec(conn, "VACUUM ANALYZE cars, trips")?;
    for table in ["cars", "trips"] {
        let n = db::count(conn, &format!("SELECT count(*) AS n FROM {table}"))?;
        if n != rows {
            bail!("seeded {n} {table}, expected {rows}");
        }
    }
    crate::progress(&format!(
        "seeded {} cars and as many trips in {:.1} s",
        thousands(rows),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
