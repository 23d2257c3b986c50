//! A swap of a table with a unique index besides its primary key (`unique(make)`, issue 12,
//! "Also"): on the cars example's generated migrations against a real PostgreSQL, with
//! `cars_make_key UNIQUE (make)` on the table.
//!
//! - Writers, half of them in `REPEATABLE READ` transactions that read before they write, insert
//!   cars and change makes to values from a small shared pool (so they clash with each other)
//!   and to the makes of rows nobody touched since prepare (which hold no claim and may be in
//!   old, in new or moving), delete cars and change other columns, through prepare, the move and
//!   finalize. No two cars ever share a make (sampled through the view all along), clashes are
//!   refused as `unique_violation` naming `cars_make_key`, and every car ends as the writers'
//!   ledgers say. Afterwards `cars_make_key` is the table's constraint again and zmig's claims
//!   are gone.
//! - Reverting prepare gives the table its constraint back and drops the claims.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel::sql_types::{BigInt, Integer, Text};
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{move_rows, MoveOptions};
use zmig_tests::waits::{poll_until, SetOnDrop};
use zmig_tests::{
    cars_seeded_with, count, is_retryable, migrate_to, revert_last, writer_conn, FixtureCrate,
};

const CARS: i64 = 2_000;
const WRITERS: i64 = 4;
/// Makes the writers share: few enough that they clash all the time.
const POOL: u64 = 40;

const CARS_SWAP: &str = "#[zmig(swap(columns(id: Int8), references(trips.car_id), unique(make), name = cars_bigint), stage = \"finalize\")]";

/// In the first migration, so the development database `generate` asks has it too.
const UNIQUE_MAKE: &str = "\nALTER TABLE cars ADD CONSTRAINT cars_make_key UNIQUE (make);\n";

fn seed() -> String {
    format!(
        "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, {CARS}) g;
         INSERT INTO trips (car_id, km) SELECT 1 + g % {CARS}, 10 FROM generate_series(1, {}) g;",
        CARS * 2
    )
}

/// A car as the ledgers keep it: make and mileage.
type Car = (String, i32);

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    make: String,
    #[diesel(sql_type = Integer)]
    mileage: i32,
}

fn cars(conn: &mut PgConnection) -> BTreeMap<i64, Car> {
    diesel::sql_query("SELECT id::bigint AS id, make, mileage FROM cars")
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, (r.make, r.mileage)))
        .collect()
}

/// Makes two cars share, as the view shows them in one snapshot.
fn shared_makes(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM (SELECT make FROM cars GROUP BY make HAVING count(*) > 1) d",
    )
}

/// A small deterministic generator: each writer draws its own sequence.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    clashes: AtomicU64,
    /// Held for reading by each `REPEATABLE READ` transaction, for writing around finalize: a
    /// transaction whose snapshot is older than finalize's commit (taken before its first
    /// statement waited for finalize's lock) does not see the rows finalize moved into the new
    /// table, as with any table PostgreSQL rewrites (README says so, under the swap's finalize).
    finalize: RwLock<()>,
}

/// What a write came to.
enum Outcome<T> {
    Done(T),
    /// Refused by the unique index (checked to name `cars_make_key`): nothing changed.
    Clash,
}

/// Runs `op` (in a `REPEATABLE READ` transaction that reads first when `repeatable` is the
/// finalize gate, held meanwhile, so its snapshot is older than the writes it meets) until it commits or clashes, past serialization
/// failures and deadlocks; any other error fails the test.
fn attempt<T>(
    conn: &mut PgConnection,
    repeatable: Option<&RwLock<()>>,
    mut op: impl FnMut(&mut PgConnection) -> QueryResult<T>,
) -> Outcome<T> {
    for _ in 0..500 {
        let result = if let Some(finalize) = repeatable {
            let _between = finalize.read().unwrap();
            conn.build_transaction().repeatable_read().run(|conn| {
                count(conn, "SELECT count(*) AS n FROM cars WHERE id < 10");
                thread::sleep(Duration::from_millis(1));
                op(conn)
            })
        } else {
            op(conn)
        };
        match result {
            Ok(value) => return Outcome::Done(value),
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
                assert_eq!(
                    info.constraint_name(),
                    Some("cars_make_key"),
                    "{}",
                    info.message()
                );
                assert!(
                    info.message().contains(
                        "duplicate key value violates unique constraint \"cars_make_key\""
                    ),
                    "{}",
                    info.message()
                );
                return Outcome::Clash;
            }
            Err(e) if is_retryable(&e).is_some() => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("retried 500 times");
}

/// One writer until `done`: owns the seeded cars whose id is `n` modulo [`WRITERS`] and the
/// cars it inserts; returns what each of them must hold (`None`: deleted).
fn write(url: &str, n: i64, done: &AtomicBool, tally: &Tally) -> BTreeMap<i64, Option<Car>> {
    let mut conn = writer_conn(url);
    let repeatable = (n % 2 == 1).then_some(&tally.finalize);
    let mut mine: BTreeMap<i64, Option<Car>> = (1..=CARS)
        .filter(|id| id % WRITERS == n)
        .map(|id| (id, Some((format!("make {id}"), 0))))
        .collect();
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut round = 0u64;
    while !done.load(Ordering::SeqCst) {
        round += 1;
        let live: Vec<i64> = mine
            .iter()
            .filter(|(_, car)| car.is_some())
            .map(|(id, _)| *id)
            .collect();
        let id = live[draw.next(live.len() as u64) as usize];
        // Deletes free makes faster than clashing inserts take them: a writer left with few
        // cars inserts one of a make of its own.
        let pooled = if live.len() < 50 {
            format!("own {n} {round} inserted")
        } else {
            format!("pool {}", draw.next(POOL))
        };
        // A seeded car's make, which no one may have changed since prepare (held by no claim).
        let seeded = format!("make {}", 1 + draw.next(CARS as u64));
        match draw.next(10) {
            // Insert a car with a pooled make.
            0..=2 => {
                let outcome = attempt(&mut conn, repeatable, |conn| {
                    #[derive(QueryableByName)]
                    struct Id {
                        #[diesel(sql_type = BigInt)]
                        id: i64,
                    }
                    diesel::sql_query(format!(
                        "INSERT INTO cars (make, model, year) VALUES ('{pooled}', 'w', 2024) RETURNING id::bigint AS id"
                    ))
                    .get_result::<Id>(conn)
                    .map(|r| r.id)
                });
                match outcome {
                    Outcome::Done(new) => {
                        mine.insert(new, Some((pooled, 0)));
                    }
                    Outcome::Clash => {
                        tally.clashes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            // Change a car's make to a pooled one, or to a seeded car's.
            3..=5 => {
                let make = if draw.next(2) == 0 { pooled } else { seeded };
                let outcome = attempt(&mut conn, repeatable, |conn| {
                    diesel::sql_query(format!("UPDATE cars SET make = '{make}' WHERE id = {id}"))
                        .execute(conn)
                });
                match outcome {
                    Outcome::Done(updated) => {
                        assert_eq!(updated, 1, "car {id}");
                        mine.get_mut(&id).unwrap().as_mut().unwrap().0 = make;
                    }
                    Outcome::Clash => {
                        tally.clashes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            // Give a car a make of its own, freeing the one it had.
            6 => {
                let make = format!("own {n} {round}");
                let Outcome::Done(updated) = attempt(&mut conn, repeatable, |conn| {
                    diesel::sql_query(format!("UPDATE cars SET make = '{make}' WHERE id = {id}"))
                        .execute(conn)
                }) else {
                    panic!("car {id}: a make no one has clashed");
                };
                assert_eq!(updated, 1, "car {id}");
                mine.get_mut(&id).unwrap().as_mut().unwrap().0 = make;
            }
            // Delete a car (and its trips), freeing its make.
            7 => {
                let Outcome::Done(deleted) = attempt(&mut conn, repeatable, |conn| {
                    diesel::sql_query(format!("DELETE FROM trips WHERE car_id = {id}"))
                        .execute(conn)?;
                    diesel::sql_query(format!("DELETE FROM cars WHERE id = {id}")).execute(conn)
                }) else {
                    panic!("car {id}: a delete clashed");
                };
                assert_eq!(deleted, 1, "car {id}");
                mine.insert(id, None);
            }
            // Drive: another column, the make unchanged.
            _ => {
                let Outcome::Done(updated) = attempt(&mut conn, repeatable, |conn| {
                    diesel::sql_query(format!(
                        "UPDATE cars SET mileage = mileage + 1 WHERE id = {id}"
                    ))
                    .execute(conn)
                }) else {
                    panic!("car {id}: a mileage change clashed");
                };
                assert_eq!(updated, 1, "car {id}");
                mine.get_mut(&id).unwrap().as_mut().unwrap().1 += 1;
            }
        }
        tally.ops.fetch_add(1, Ordering::SeqCst);
    }
    mine
}

#[test]
fn a_unique_index_stays_unique_across_the_swap_under_writers() {
    let (db, fixture) = cars_seeded_with(
        "swap_unique",
        CARS_SWAP,
        UNIQUE_MAKE,
        &[&seed(), "VACUUM ANALYZE cars, trips"],
        None,
    );
    let mut conn = db.conn();
    let done = AtomicBool::new(false);
    let sampled = AtomicBool::new(false);
    let tally = Tally::default();
    // Waits for the writers to have done `n` more writes, so that theirs span every phase; a
    // writer that stopped (its assertion failed) ends the wait.
    let more = |writers: &[thread::ScopedJoinHandle<'_, _>], n: u64| {
        let from = tally.ops.load(Ordering::SeqCst);
        while tally.ops.load(Ordering::SeqCst) < from + n {
            assert!(
                !writers.iter().any(|w| w.is_finished()),
                "a writer stopped (its panic is above)"
            );
            thread::sleep(Duration::from_millis(5));
        }
    };
    let ledgers = thread::scope(|scope| {
        // Whatever ends the scope, a failed assertion too, stops the writers and the sampler.
        let _stop = SetOnDrop(&done);
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let (url, done, tally) = (&db.url, &done, &tally);
                scope.spawn(move || write(url, n, done, tally))
            })
            .collect();
        // One snapshot after another through the view, all along: no make twice.
        let sampler = {
            let (url, sampled, done) = (&db.url, &sampled, &done);
            scope.spawn(move || {
                let mut conn = writer_conn(url);
                let mut samples = 0;
                while !sampled.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst) {
                    assert_eq!(
                        shared_makes(&mut conn),
                        0,
                        "a make shared, sample {samples}"
                    );
                    samples += 1;
                }
                samples
            })
        };
        more(&writers, 300);
        migrate_to(&db.url, &fixture, "cars_bigint_prepare");
        more(&writers, 1_000);
        let options = MoveOptions {
            workers: 2,
            batch_size: 100,
            progress: ProgressMode::Silent,
            ..MoveOptions::default()
        };
        let report = move_rows(&db.url, "cars_bigint", &options).unwrap();
        assert!(report.finished, "{report:?}");
        more(&writers, 500);
        {
            let _alone = tally.finalize.write().unwrap();
            migrate_to(&db.url, &fixture, "cars_bigint_finalize");
        }
        more(&writers, 300);
        done.store(true, Ordering::SeqCst);
        let mut ledgers = BTreeMap::new();
        for writer in writers {
            ledgers.extend(writer.join().unwrap());
        }
        sampled.store(true, Ordering::SeqCst);
        let samples = sampler.join().unwrap();
        assert!(samples > 10, "{samples} samples");
        ledgers
    });

    let clashes = tally.clashes.load(Ordering::SeqCst);
    assert!(clashes > 50, "the writers clashed {clashes} times only");
    let expected: BTreeMap<i64, Car> = ledgers
        .into_iter()
        .filter_map(|(id, car)| Some((id, car?)))
        .collect();
    assert_eq!(cars(&mut conn), expected);
    assert_eq!(shared_makes(&mut conn), 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_constraint WHERE conrelid = 'cars'::regclass AND conname = 'cars_make_key' AND contype = 'u'"
        ),
        1,
        "cars_make_key is the table's unique constraint again"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'zmig_cars_bigint_unique%' OR relname IN ('cars_old', 'cars_new', 'cars_temp')"
        ),
        0,
        "the claims and the swap's tables are gone"
    );
}

#[test]
fn a_clash_reads_as_the_table_would_raise_it_and_a_revert_keeps_the_constraint() {
    let (db, fixture) = cars_seeded_with(
        "swap_unique_revert",
        CARS_SWAP,
        UNIQUE_MAKE,
        &[&seed()],
        Some("cars_bigint_prepare"),
    );
    fixture.export_for_lint("swap_unique");
    let mut conn = db.conn();
    let before = cars(&mut conn);
    let clash = |conn: &mut PgConnection, sql: &str| match diesel::sql_query(sql).execute(conn) {
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => (
            info.message().to_owned(),
            info.details().map(str::to_owned),
            info.constraint_name().map(str::to_owned),
            info.table_name().map(str::to_owned),
        ),
        other => panic!("{sql}: {other:?}"),
    };
    // A seeded car's make, held by no claim, in old; then by a car that moved to new.
    assert_eq!(
        clash(
            &mut conn,
            "INSERT INTO cars (make, model, year) VALUES ('make 7', 'x', 2024)"
        ),
        (
            "duplicate key value violates unique constraint \"cars_make_key\"".to_owned(),
            Some("Key (make)=(make 7) already exists.".to_owned()),
            Some("cars_make_key".to_owned()),
            Some("cars".to_owned()),
        )
    );
    // As on a table, a write of a value another transaction is changing away from waits for
    // it: refused if it rolls back, done if it commits.
    for (end, clashes) in [("ROLLBACK", true), ("COMMIT", false)] {
        let mut holder = writer_conn(&db.url);
        holder
            .batch_execute("BEGIN; UPDATE cars SET make = 'gone' WHERE id = 5")
            .unwrap();
        let url = db.url.clone();
        let waiter = thread::spawn(move || {
            diesel::sql_query("INSERT INTO cars (make, model, year) VALUES ('make 5', 'w', 2024)")
                .execute(&mut writer_conn(&url))
        });
        poll_until("the insert waits for the change", || {
            count(
                &mut conn,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ) == 1
        });
        holder.batch_execute(end).unwrap();
        match waiter.join().unwrap() {
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) if clashes => {}
            Ok(1) if !clashes => {}
            other => panic!("after {end}: {other:?}"),
        }
    }
    conn.batch_execute(
        "DELETE FROM cars WHERE make = 'make 5' AND model = 'w'; UPDATE cars SET make = 'make 5' WHERE id = 5",
    )
    .unwrap();
    conn.batch_execute("SELECT zmig_cars_bigint_move(100)")
        .unwrap();
    assert!(count(&mut conn, "SELECT count(*) AS n FROM cars_new") > 0);
    let moved: i64 = count(&mut conn, "SELECT max(id)::bigint AS n FROM cars_new");
    clash(
        &mut conn,
        &format!("UPDATE cars SET make = 'make {moved}' WHERE id = 1"),
    );
    // A value a write since prepare claimed.
    conn.batch_execute("INSERT INTO cars (make, model, year) VALUES ('fresh', 'x', 2024)")
        .unwrap();
    clash(&mut conn, "UPDATE cars SET make = 'fresh' WHERE id = 2");
    // Freed values are free again: by a change, and by a delete.
    conn.batch_execute(
        "UPDATE cars SET make = 'fresher' WHERE make = 'fresh';
         INSERT INTO cars (make, model, year) VALUES ('fresh', 'y', 2024);
         DELETE FROM cars WHERE make = 'fresher';
         INSERT INTO cars (make, model, year) VALUES ('fresher', 'z', 2024);
         DELETE FROM cars WHERE make IN ('fresh', 'fresher');",
    )
    .unwrap();
    assert_eq!(shared_makes(&mut conn), 0);

    revert_last(&mut conn, &fixture);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE oid = 'cars'::regclass AND relkind = 'r'"
        ),
        1,
        "cars is the table again"
    );
    assert_eq!(cars(&mut conn), before);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_constraint WHERE conrelid = 'cars'::regclass AND conname = 'cars_make_key' AND contype = 'u'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'zmig_cars_bigint_unique%'"
        ),
        0
    );
}

#[test]
fn generate_names_an_unlisted_unique_index_at_the_attribute_and_writes_nothing() {
    let fixture = FixtureCrate::cars_with(
        "swap_unique_generate",
        "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"prepare\")]",
        UNIQUE_MAKE,
    );
    let error = fixture.generate(false).unwrap_err();
    assert!(
        error.starts_with("error: src/models.rs:5:"),
        "at the attribute: {error}"
    );
    assert!(
        error.contains(
            "cars has the unique index cars_make_key on (make), which the swap attribute does not list: add unique(make) to it and generate again"
        ),
        "{error}"
    );
    let folders: Vec<String> = std::fs::read_dir(fixture.migrations_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders, ["2020-01-01-000000-0000_create_tables"]);
}
