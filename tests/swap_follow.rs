//! A swap's move keeps up with writers until finalize (issue 11, item 6). Without `follow`, the
//! move ends once the old table is empty; rows inserted after that wait in temp, and when more
//! pile up than finalize moves under its lock, finalize refuses. With `follow`, the move goes
//! on taking what writers insert until the finalize migration has run, then ends by itself; a
//! writer inserting through the whole of it loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{self, move_rows, MoveOptions, FINALIZE_MOVES_AT_MOST};
use zmig_tests::waits::{poll_until, SetOnDrop};
use zmig_tests::{cars_seeded, count, exec, migrate_to, FixtureCrate, TestDb};

const SWAP: &str = "cars_bigint";
const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

fn prepared(label: &str) -> (TestDb, FixtureCrate) {
    cars_seeded(
        label,
        CARS_SWAP,
        &["INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, 3000) AS g;
           INSERT INTO trips (car_id, km) SELECT 1 + g % 1000, 10 FROM generate_series(1, 2000) AS g;"],
        Some("cars_bigint_prepare"),
    )
}

fn options(follow: bool, stop: Option<std::sync::Arc<AtomicBool>>) -> MoveOptions {
    MoveOptions {
        workers: 2,
        progress: ProgressMode::Silent,
        yield_to_traffic: false,
        follow,
        stop,
        ..MoveOptions::default()
    }
}

#[test]
fn without_follow_rows_inserted_after_the_move_pile_up_and_finalize_refuses() {
    let (db, fixture) = prepared("follow_refused");
    let mut conn = db.conn();
    let report = move_rows(&db.url, SWAP, &options(false, None)).unwrap();
    assert!(report.finished && !report.finalized, "{report:?}");
    assert_eq!(report.rows_left, 0);
    // Writers go on after "move complete".
    exec(
        &mut conn,
        &format!(
            "INSERT INTO cars (make, model, year) SELECT 'late ' || g, 'model', 2025 FROM generate_series(1, {}) AS g",
            FINALIZE_MOVES_AT_MOST + 500
        ),
    );
    let status = swap::status(&mut conn, SWAP).unwrap().unwrap();
    assert_eq!(status.progress.temp_rows, FINALIZE_MOVES_AT_MOST + 500);
    let message = conn
        .run_pending_migrations(fixture.migrations())
        .expect_err("finalize with more rows in temp than it moves")
        .to_string();
    assert!(message.contains("rows are still to move"), "{message}");
    // A move run again takes them, and finalize then applies.
    let report = move_rows(&db.url, SWAP, &options(false, None)).unwrap();
    assert!(
        report.finished && report.moved >= FINALIZE_MOVES_AT_MOST,
        "{report:?}"
    );
    migrate_to(&db.url, &fixture, "finalize");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM cars"),
        3000 + FINALIZE_MOVES_AT_MOST + 500
    );
}

#[test]
fn with_follow_the_move_keeps_up_with_a_writer_until_finalize_and_loses_nothing() {
    let (db, fixture) = prepared("follow_finalize");
    let mut conn = db.conn();
    let writer_stop = AtomicBool::new(false);
    let (report, inserted) = thread::scope(|scope| {
        // A writer inserting cars (and a trip for each) through prepare's view, then, after
        // finalize, into the table: the same statements either way.
        let writer = scope.spawn(|| {
            let mut conn = PgConnection::establish(&db.url).unwrap();
            let mut inserted = 0i64;
            while !writer_stop.load(Ordering::SeqCst) {
                let done = conn.transaction(|conn| {
                    diesel::sql_query(
                        "WITH car AS (INSERT INTO cars (make, model, year) VALUES ('live', 'model', 2026) RETURNING id)
                         INSERT INTO trips (car_id, km) SELECT id, 1 FROM car",
                    )
                    .execute(conn)
                });
                match done {
                    Ok(_) => inserted += 1,
                    // finalize's lock attempt, or a statement caught as the view became a table.
                    Err(e) if zmig_tests::is_retryable(&e).is_some() => {}
                    Err(e) => panic!("writer: {e}"),
                }
            }
            inserted
        });
        // A failure below stops the writer as it unwinds, rather than leave the scope waiting.
        let _stop_writer = SetOnDrop(&writer_stop);
        let follower = scope.spawn(|| move_rows(&db.url, SWAP, &options(true, None)));
        // The move catches up (old empty) and keeps following what the writer inserts.
        let mut probe = PgConnection::establish(&db.url).unwrap();
        poll_until("the move to empty the old table", || {
            count(&mut probe, "SELECT count(*) AS n FROM cars_old") == 0
                && count(&mut probe, "SELECT count(*) AS n FROM cars_new") > 3000
        });
        poll_until("the writer to insert more than finalize would take", || {
            count(&mut probe, "SELECT count(*) AS n FROM trips")
                > 2000 + FINALIZE_MOVES_AT_MOST / 10
        });
        // Temp stays small while the follower runs.
        assert!(
            count(&mut probe, "SELECT count(*) AS n FROM cars_temp") < FINALIZE_MOVES_AT_MOST,
            "the follower fell behind"
        );
        migrate_to(&db.url, &fixture, "finalize");
        // The follower sees finalize and ends by itself.
        let report = follower.join().unwrap();
        writer_stop.store(true, Ordering::SeqCst);
        (report, writer.join().unwrap())
    });
    let report = report.unwrap();
    eprintln!("follow_finalize: {report:?}, {inserted} cars inserted by the writer");
    assert!(report.finalized && report.finished, "{report:?}");
    assert!(inserted > 0);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM cars"),
        3000 + inserted
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM trips"),
        2000 + inserted
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips t LEFT JOIN cars c ON c.id = t.car_id WHERE c.id IS NULL"
        ),
        0
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_temp', 'cars_new')"), 0);
}

#[test]
fn with_follow_ctrl_c_ends_the_move_as_finished_once_it_caught_up() {
    let (db, _fixture) = prepared("follow_stop");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let report = thread::scope(|scope| {
        let follower = scope.spawn(|| move_rows(&db.url, SWAP, &options(true, Some(stop.clone()))));
        let mut probe = PgConnection::establish(&db.url).unwrap();
        poll_until("the move to empty the old table", || {
            count(&mut probe, "SELECT count(*) AS n FROM cars_old") == 0
        });
        exec(
            &mut probe,
            "INSERT INTO cars (make, model, year) SELECT 'late', 'model', 2025 FROM generate_series(1, 50)",
        );
        poll_until("the follower to take the late rows", || {
            count(&mut probe, "SELECT count(*) AS n FROM cars_temp") == 0
        });
        // And the references: their shadow column's index built (the last step of their sync),
        // or Ctrl-C would stop the move before it could call itself finished.
        poll_until("the shadow column's index", || {
            count(
                &mut probe,
                "SELECT count(*) AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid = 'trips'::regclass AND c.relname LIKE '%\\_zmig' AND i.indisvalid",
            ) >= 1
        });
        stop.store(true, Ordering::SeqCst);
        follower.join().unwrap()
    });
    let report = report.unwrap();
    assert!(report.finished && !report.finalized, "{report:?}");
    assert_eq!(report.moved, 3050);
}
