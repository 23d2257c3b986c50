//! Each gap of the published table-swap technique, closed, on the cars example's generated
//! migrations against a real PostgreSQL (`docs/swap-design.md`):
//!
//! - UPDATE through the view changes the row where it is: never a copy in another table, and
//!   never a lost update when a batch moves the row or another session changes it meanwhile;
//! - a key is unique across the three tables, also for explicit keys racing the move;
//! - foreign keys pointing at the table hold during the swap, racing the move and deletes;
//! - finalize keeps the table holding the rows, whatever is left to move when it runs;
//! - reverting prepare after a partial move restores every row, including those inserted and
//!   updated since (2,000 cars: under the 10,000 the revert moves back under its lock; with
//!   more it refuses until `backfill --back` has moved them, `tests/swap_revert.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use zmig_tests::{
    cars_seeded, count, exec, migrate_to, revert_last, writer_conn, FixtureCrate, TestDb,
};

const CARS: i64 = 2_000;

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

/// A database with the cars example's tables, `CARS` cars with three trips each, and the swap's
/// prepare migration applied.
fn prepared(label: &str) -> (TestDb, FixtureCrate) {
    cars_seeded(
        label,
        CARS_SWAP,
        &[&format!(
            "INSERT INTO cars (make, model, year) SELECT 'make' || g, 'model', 2000 FROM generate_series(1, {CARS}) g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % {CARS}, 10 FROM generate_series(1, {}) g;",
            CARS * 3
        )],
        Some("cars_bigint_prepare"),
    )
}

fn move_some(conn: &mut PgConnection, rows: i64) -> i64 {
    count(conn, &format!("SELECT zmig_cars_bigint_move({rows}) AS n"))
}

/// How many of the three tables hold the car.
fn copies(conn: &mut PgConnection, id: i64) -> i64 {
    count(
        conn,
        &format!(
            "SELECT (SELECT count(*) FROM cars_old WHERE id = {id}) + (SELECT count(*) FROM cars_temp WHERE id = {id}) + (SELECT count(*) FROM cars_new WHERE id = {id}) AS n"
        ),
    )
}

fn kind(result: QueryResult<usize>) -> Option<DatabaseErrorKind> {
    match result {
        Err(Error::DatabaseError(kind, _)) => Some(kind),
        Err(e) => panic!("{e}"),
        Ok(_) => None,
    }
}

/// An insert through the view with an explicit key.
fn insert_with_key(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "INSERT INTO cars (id, make, model, year) VALUES ({id}, 'dup', 'dup', 1)"
    ))
    .execute(conn)
}

#[test]
fn an_update_changes_the_row_where_it_lives_and_nowhere_else() {
    let (db, _fixture) = prepared("swap_gap_update");
    let mut conn = db.conn();
    move_some(&mut conn, 500);
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) VALUES ('fresh', 'temp', 2020)",
    );
    let fresh = count(&mut conn, "SELECT max(id)::bigint AS n FROM cars");
    // One car in each table: new (moved), old (not yet), temp (inserted since prepare).
    for id in [1, CARS, fresh] {
        let updated = exec(
            &mut conn,
            &format!("UPDATE cars SET mileage = mileage + 7, model = 'changed' WHERE id = {id}"),
        );
        assert_eq!(updated, 1, "car {id}");
        assert_eq!(copies(&mut conn, id), 1, "car {id} is in exactly one table");
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT mileage::bigint AS n FROM cars WHERE id = {id} AND model = 'changed'"
                )
            ),
            7
        );
    }
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), CARS + 1);
    // 0 rows for a car that does not exist, as on a table; a key change is refused.
    assert_eq!(exec(&mut conn, "UPDATE cars SET year = 1 WHERE id = -5"), 0);
    assert_eq!(
        kind(diesel::sql_query("UPDATE cars SET id = id + 100000 WHERE id = 3").execute(&mut conn)),
        Some(DatabaseErrorKind::Unknown)
    );
    // RETURNING answers with the updated row.
    #[derive(QueryableByName)]
    struct Returned {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        mileage: i32,
    }
    let returned: Returned =
        diesel::sql_query("UPDATE cars SET mileage = 42 WHERE id = 2 RETURNING mileage")
            .get_result(&mut conn)
            .unwrap();
    assert_eq!(returned.mileage, 42);
}

/// Sessions increment the mileage of the same few cars while batches move them: every
/// increment that committed is counted exactly once. A statement that read a row another
/// session changed before it could lock it gets a serialization failure (and is retried),
/// where writing its stale row back would have lost the other increment.
#[test]
fn concurrent_updates_racing_the_move_lose_nothing() {
    let (db, _fixture) = prepared("swap_gap_race");
    let url = db.url.clone();
    let hot: Vec<i64> = (1..=20).map(|i| i * 50).collect();
    let done = AtomicBool::new(false);
    let committed: Vec<i64> = thread::scope(|scope| {
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (url, hot, done) = (&url, &hot, &done);
                scope.spawn(move || {
                    let mut conn = writer_conn(url);
                    let mut ok = vec![0i64; hot.len()];
                    // At least 150 increments each, and on until the move is done, so the
                    // writes span every batch.
                    let mut round = 0;
                    while round < 150 || !done.load(Ordering::SeqCst) {
                        let i = round % hot.len();
                        round += 1;
                        loop {
                            let sql = format!(
                                "UPDATE cars SET mileage = mileage + 1 WHERE id = {}",
                                hot[i]
                            );
                            match diesel::sql_query(sql).execute(&mut conn) {
                                Ok(1) => break,
                                Ok(n) => panic!("updated {n} rows"),
                                Err(Error::DatabaseError(
                                    DatabaseErrorKind::SerializationFailure,
                                    _,
                                )) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                        ok[i] += 1;
                    }
                    ok
                })
            })
            .collect();
        let mover = scope.spawn(|| {
            let mut conn = writer_conn(&url);
            while move_some(&mut conn, 37) > 0 {}
            done.store(true, Ordering::SeqCst);
        });
        mover.join().unwrap();
        let mut totals = vec![0i64; hot.len()];
        for writer in writers {
            for (t, n) in totals.iter_mut().zip(writer.join().unwrap()) {
                *t += n;
            }
        }
        totals
    });
    let mut conn = db.conn();
    for (id, expected) in hot.iter().zip(committed) {
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT mileage::bigint AS n FROM cars WHERE id = {id}")
            ),
            expected,
            "car {id}"
        );
        assert_eq!(copies(&mut conn, *id), 1);
    }
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), CARS);
}

#[test]
fn a_key_is_unique_across_the_three_tables() {
    let (db, _fixture) = prepared("swap_gap_unique");
    let mut conn = db.conn();
    move_some(&mut conn, 1_000);
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) VALUES ('t', 't', 1)",
    );
    let in_temp = count(&mut conn, "SELECT max(id)::bigint AS n FROM cars_temp");
    // 10 is in new, 1999 in old, in_temp in temp: an explicit insert of each is refused with the
    // error a primary key raises.
    for id in [10, CARS - 1, in_temp] {
        assert_eq!(
            kind(insert_with_key(&mut conn, id)),
            Some(DatabaseErrorKind::UniqueViolation),
            "key {id}"
        );
    }
    // Explicit keys inserted while batches move the old rows: each key is refused while its row
    // lives anywhere, so every attempt fails and each key ends up in one table.
    let url = db.url.clone();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut conn = writer_conn(&url);
            while move_some(&mut conn, 50) > 0 {}
        });
        let mut conn = writer_conn(&url);
        for id in (1_000..CARS).rev() {
            assert_eq!(
                kind(insert_with_key(&mut conn, id)),
                Some(DatabaseErrorKind::UniqueViolation),
                "key {id}"
            );
        }
    });
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM cars WHERE make = 'dup'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT rows AS n FROM zmig_cars_bigint_check() WHERE problem = 'key in two tables'"
        ),
        0
    );
}

#[test]
fn foreign_keys_pointing_at_the_table_hold_during_the_swap() {
    let (db, _fixture) = prepared("swap_gap_fk");
    let mut conn = db.conn();
    move_some(&mut conn, 700);
    // A trip of a car that does not exist, and deleting a car that has trips, are refused as
    // the foreign key would; a trip of a car in any of the three tables is accepted.
    let missing =
        diesel::sql_query("INSERT INTO trips (car_id, km) VALUES (999999, 1)").execute(&mut conn);
    assert_eq!(kind(missing), Some(DatabaseErrorKind::ForeignKeyViolation));
    let referenced = diesel::sql_query("DELETE FROM cars WHERE id = 5").execute(&mut conn);
    assert_eq!(
        kind(referenced),
        Some(DatabaseErrorKind::ForeignKeyViolation)
    );
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) VALUES ('t', 't', 1)",
    );
    let in_temp = count(&mut conn, "SELECT max(id)::bigint AS n FROM cars_temp");
    for car in [5, CARS, in_temp] {
        exec(
            &mut conn,
            &format!("INSERT INTO trips (car_id, km) VALUES ({car}, 3)"),
        );
    }
    // The shadow column follows the reference.
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS DISTINCT FROM car_id AND id > 6000"),
        0
    );

    // Racing: one session deletes cars (trips first, as the application does), another adds
    // trips to the same cars, while batches move them. Either the trip or the delete fails; a
    // trip never outlives its car.
    let url = db.url.clone();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut conn = writer_conn(&url);
            while move_some(&mut conn, 25) > 0 {}
        });
        scope.spawn(|| {
            let mut conn = writer_conn(&url);
            for car in 1_000..1_400 {
                let _ = conn.transaction(|conn| {
                    diesel::sql_query(format!("DELETE FROM trips WHERE car_id = {car}"))
                        .execute(conn)?;
                    diesel::sql_query(format!("DELETE FROM cars WHERE id = {car}")).execute(conn)
                });
            }
        });
        let mut conn = writer_conn(&url);
        for car in 1_000..1_400 {
            let _ = diesel::sql_query(format!("INSERT INTO trips (car_id, km) VALUES ({car}, 1)"))
                .execute(&mut conn);
        }
    });
    assert_eq!(
        count(&mut conn, "SELECT rows AS n FROM zmig_cars_bigint_check() WHERE problem LIKE 'trips.car_id without%'"),
        0
    );
}

#[test]
fn finalize_keeps_every_row_whatever_is_left_to_move() {
    let (db, fixture) = prepared("swap_gap_finalize");
    let mut conn = db.conn();
    move_some(&mut conn, 1_200);
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) VALUES ('late', 'late', 2024)",
    );
    exec(
        &mut conn,
        "UPDATE cars SET make = 'changed' WHERE id IN (3, 1900)",
    );
    let before = count(&mut conn, "SELECT count(*) AS n FROM cars");
    // The references are not filled yet, nor the index rebuilt: on a small table finalize does
    // both inside its transaction.
    migrate_to(&db.url, &fixture, "cars_bigint_finalize");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), before);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM cars WHERE make = 'changed'"
        ),
        2
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM trips"),
        CARS * 3
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'trips_car_id_idx' AND indexdef LIKE '%(car_id)'"),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_temp', 'cars_new')"),
        0
    );
}

#[test]
fn finalize_refuses_while_the_move_has_not_run_on_a_big_table() {
    let fixture = FixtureCrate::cars("swap_gap_gate", CARS_SWAP);
    assert!(fixture.generate(false).unwrap().0.ok());
    let db = TestDb::new("swap_gap_gate");
    migrate_to(&db.url, &fixture, "create_tables");
    let mut conn = db.conn();
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) SELECT 'm', 'm', 1 FROM generate_series(1, 12000)",
    );
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    let mut admin = db.conn();
    let result = diesel_migrations::MigrationHarness::run_pending_migrations(
        &mut admin,
        fixture.migrations(),
    );
    let message = result.expect_err("finalize refuses").to_string();
    assert!(
        message.contains("more than 10000 rows are still to move"),
        "{message}"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM cars_old"),
        12_000
    );
}

#[test]
fn reverting_prepare_after_a_partial_move_restores_every_row() {
    let (db, fixture) = prepared("swap_gap_revert");
    let mut conn = db.conn();
    move_some(&mut conn, 900);
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) VALUES ('since', 'prepare', 2025)",
    );
    exec(
        &mut conn,
        "UPDATE cars SET mileage = 99 WHERE id IN (1, 1500)",
    );
    exec(&mut conn, "DELETE FROM trips WHERE car_id = 7");
    exec(&mut conn, "DELETE FROM cars WHERE id = 7");
    exec(&mut conn, "INSERT INTO trips (car_id, km) VALUES (1, 5)");
    let snapshot = "SELECT md5(string_agg(format('%s|%s|%s|%s|%s', id, make, model, year, mileage), ',' ORDER BY id)) AS n FROM cars";
    #[derive(QueryableByName)]
    struct Digest {
        #[diesel(sql_type = diesel::sql_types::Text)]
        n: String,
    }
    let before: Digest = diesel::sql_query(snapshot).get_result(&mut conn).unwrap();
    let reverted = revert_last(&mut conn, &fixture);
    assert!(
        reverted.ends_with("0001"),
        "reverted {reverted}, the prepare migration"
    );
    let after: Digest = diesel::sql_query(snapshot).get_result(&mut conn).unwrap();
    assert_eq!(
        before.n, after.n,
        "every row, as it was just before the revert"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), CARS);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'cars' AND column_name = 'id' AND data_type = 'integer'"),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_temp', 'cars_new') OR relname LIKE '%zmig%' AND relname NOT LIKE 'zmig_swap_state%'"),
        0
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_constraint WHERE conname = 'trips_car_id_fkey' AND convalidated"),
        1
    );
    // And prepare applies again.
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), CARS);
}
