//! A swap's move, verify and status (`zmig_runtime::swap`) and their command line, on a real
//! database, against the prepare migration zmig generates for the cars example (`cars.id` and
//! `trips.car_id` from integer to bigint, `trips_car_id_idx` on the referencing column).
//!
//! - The move runs batches until the old and temp tables are empty, fills the shadow column
//!   `trips.car_id_zmig` and builds `trips_car_id_idx_zmig` on it, ANALYZEs the new table and
//!   VACUUMs the old one; a second run moves nothing.
//! - Stopped half way, it resumes by running again (rebuilding an index build a kill left
//!   invalid); paused, it moves nothing until resumed.
//! - Without the prepare migration's functions it refuses, saying what to apply.
//! - verify names each kind of problem, with an example, for problems written straight into the
//!   tables behind the view; status reports where the rows are.
//! - `backfill`, `verify` and `status` on the command line dispatch to the swap when the
//!   database has its `zmig_<name>_move` function, and to the extract otherwise.
//!
//! Waits poll the database for a condition a bounded number of times; nothing sleeps to let
//! something else happen.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use zmig_runtime::backfill::{set_paused, ProgressMode};
use zmig_runtime::swap::{self, move_rows, MoveOptions, MoveReport, SwapProblem};
use zmig_tests::waits::{db_now, pause_checks, poll_until, SetOnDrop};
use zmig_tests::{cars_seeded, count, exec, migrate_to, run_cli, FixtureCrate, TestDb};

const SWAP: &str = "cars_bigint";
const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";
/// Cars in the old table (seeded before prepare), in temp (inserted through the view since
/// prepare), and trips seeded before prepare, whose shadow column the move fills.
const OLD_ROWS: i64 = 3_000;
const TEMP_ROWS: i64 = 200;
const REF_ROWS: i64 = 500;

/// The command-line test sets `DATABASE_URL` for the process, which every test reads when it
/// creates or drops its database: it runs alone, the others side by side.
static ENVIRONMENT: RwLock<()> = RwLock::new(());

/// A database with the cars example's tables, `OLD_ROWS` cars and `REF_ROWS` trips (two for
/// each of the first cars), then the swap's generated prepare migration, then `TEMP_ROWS` cars
/// inserted through the view (into `cars_temp`). The fixture crate lives as long as the test.
fn prepared(label: &str) -> (TestDb, FixtureCrate) {
    let (db, fixture) = cars_seeded(
        label,
        CARS_SWAP,
        &[&format!(
            "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, {OLD_ROWS}) AS g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % {}, 10 FROM generate_series(1, {REF_ROWS}) AS g;",
            REF_ROWS / 2
        )],
        Some("cars_bigint_prepare"),
    );
    exec(
        &mut db.conn(),
        &format!(
            "INSERT INTO cars (make, model, year) SELECT 'new make ' || g, 'model', 2024 FROM generate_series(1, {TEMP_ROWS}) AS g"
        ),
    );
    (db, fixture)
}

fn options(workers: usize, batch_size: i32) -> MoveOptions {
    MoveOptions {
        workers,
        batch_size,
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    }
}

/// Rows in `table`.
fn rows(conn: &mut PgConnection, table: &str) -> i64 {
    count(conn, &format!("SELECT count(*) AS n FROM {table}"))
}

/// Old, temp and new row counts.
fn where_rows_are(conn: &mut PgConnection) -> (i64, i64, i64) {
    (
        rows(conn, "cars_old"),
        rows(conn, "cars_temp"),
        rows(conn, "cars_new"),
    )
}

/// The references are done: every trip's shadow column equals `car_id`, its NOT NULL check is
/// validated, `trips_car_id_idx_zmig` is built on it and valid, and
/// `zmig_cars_bigint_ref_indexes()` has nothing left to build.
fn assert_references_done(conn: &mut PgConnection) {
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS DISTINCT FROM car_id"
        ),
        0,
        "a shadow column not filled"
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_constraint WHERE conname = 'zmig_cars_bigint_trips_car_id_nn' AND convalidated"
        ),
        1,
        "the shadow column's NOT NULL check is not validated"
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_index AS i JOIN pg_indexes AS d ON d.indexname = 'trips_car_id_idx_zmig'
             WHERE i.indexrelid = to_regclass('trips_car_id_idx_zmig') AND i.indisvalid AND i.indisready
               AND NOT i.indisunique AND d.indexdef LIKE '% ON public.trips USING btree (car_id_zmig)'"
        ),
        1,
        "trips_car_id_idx_zmig is not a valid index on car_id_zmig"
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM zmig_cars_bigint_ref_indexes()"
        ),
        0
    );
}

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ENVIRONMENT.read().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn the_move_empties_old_and_temp_in_batches_then_a_second_run_moves_nothing() {
    let _env = shared();
    let (db, _fixture) = prepared("swap_move");
    let mut conn = db.conn();
    assert_eq!(swap::swaps(&mut conn).unwrap(), vec![SWAP.to_owned()]);
    let before = swap::status(&mut conn, SWAP).unwrap().expect("a swap");
    assert_eq!(
        (
            before.progress.old_rows,
            before.progress.temp_rows,
            before.progress.new_rows,
            before.progress.refs_left
        ),
        (OLD_ROWS, TEMP_ROWS, 0, REF_ROWS)
    );
    assert!(!before.paused);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS NULL"
        ),
        REF_ROWS
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM zmig_cars_bigint_ref_indexes()"
        ),
        1
    );

    let report = move_rows(&db.url, SWAP, &options(2, 100)).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(report.moved, OLD_ROWS + TEMP_ROWS, "{report:?}");
    assert_eq!(report.refs_synced, REF_ROWS, "{report:?}");
    assert!(report.batches >= 2, "{report:?}");
    assert!(
        report.bytes_before > 0 && report.bytes_after > 0,
        "{report:?}"
    );
    assert_eq!(where_rows_are(&mut conn), (0, 0, OLD_ROWS + TEMP_ROWS));
    assert_references_done(&mut conn);
    // Every car is still there once, through the view, with its trips.
    assert_eq!(rows(&mut conn, "cars"), OLD_ROWS + TEMP_ROWS);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips AS t JOIN cars AS c ON c.id = t.car_id"
        ),
        REF_ROWS
    );
    // The new table was analyzed (its estimate is its size), the old one vacuumed.
    assert_eq!(
        count(
            &mut conn,
            "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = 'cars_new'::regclass"
        ),
        OLD_ROWS + TEMP_ROWS
    );
    // Statistics reach other sessions at once from PostgreSQL 15 on, within a second before.
    poll_until("the move's VACUUM of cars_old in the statistics", || {
        count(
            &mut conn,
            "SELECT vacuum_count AS n FROM pg_stat_user_tables WHERE relid = 'cars_old'::regclass",
        ) >= 1
    });
    let after = swap::status(&mut conn, SWAP).unwrap().expect("a swap");
    assert_eq!(
        (
            after.progress.old_rows,
            after.progress.temp_rows,
            after.progress.new_rows,
            after.progress.refs_left
        ),
        (0, 0, OLD_ROWS + TEMP_ROWS, 0)
    );
    let check = swap::verify(&mut conn, SWAP).unwrap();
    assert!(check.ok(), "{check:?}");
    assert_eq!(check.problems.len(), 3, "{check:?}");

    let again = move_rows(&db.url, SWAP, &options(2, 100)).unwrap();
    assert_eq!(
        again,
        MoveReport {
            moved: 0,
            batches: 0,
            refs_synced: 0,
            backoffs: 0,
            bytes_before: again.bytes_before,
            bytes_after: again.bytes_after,
            finished: true,
            finalized: false,
            rows_left: 0,
        }
    );
    assert_eq!(where_rows_are(&mut conn), (0, 0, OLD_ROWS + TEMP_ROWS));
    assert_references_done(&mut conn);
}

#[test]
fn a_stopped_move_resumes_by_running_again() {
    let _env = shared();
    let (db, _fixture) = prepared("swap_resume");
    let mut conn = db.conn();
    let stop = Arc::new(AtomicBool::new(false));
    // Small fixed batches with a pause between them, so the move is still going when stopped.
    let slow = MoveOptions {
        min_batch_size: 20,
        max_batch_size: 20,
        pause: Duration::from_millis(2),
        stop: Some(stop.clone()),
        ..options(1, 20)
    };
    let stopped = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let runner = s.spawn(|| move_rows(&db.url, SWAP, &slow));
        poll_until("the move to get going", || {
            rows(&mut conn, "cars_new") >= 200
        });
        stop.store(true, Ordering::SeqCst);
        runner.join().expect("move panicked").unwrap()
    });
    assert!(!stopped.finished, "{stopped:?}");
    let (old, temp, new) = where_rows_are(&mut conn);
    assert!(old > 0, "stopped too late: {stopped:?}");
    assert_eq!(temp, TEMP_ROWS, "temp moves after old");
    assert_eq!(new, stopped.moved);
    assert_eq!(old + temp + new, OLD_ROWS + TEMP_ROWS);

    // A move killed while it built the shadow column's index concurrently leaves that index
    // invalid (as a failed concurrent build does): the next run drops it and builds it again.
    exec(&mut conn, "DROP INDEX IF EXISTS trips_car_id_idx_zmig");
    let failed =
        conn.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY trips_car_id_idx_zmig ON trips ((1))");
    assert!(failed.is_err(), "the unique build fails on duplicates");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_index WHERE indexrelid = to_regclass('trips_car_id_idx_zmig') AND NOT indisvalid"
        ),
        1
    );

    let resumed = move_rows(&db.url, SWAP, &options(2, 100)).unwrap();
    assert!(resumed.finished, "{resumed:?}");
    assert_eq!(stopped.moved + resumed.moved, OLD_ROWS + TEMP_ROWS);
    assert_eq!(stopped.refs_synced + resumed.refs_synced, REF_ROWS);
    assert_eq!(where_rows_are(&mut conn), (0, 0, OLD_ROWS + TEMP_ROWS));
    assert_references_done(&mut conn);
    assert!(swap::verify(&mut conn, SWAP).unwrap().ok());
}

#[test]
fn a_paused_move_moves_nothing_until_resumed() {
    let _env = shared();
    let (db, _fixture) = prepared("swap_pause");
    let mut conn = db.conn();
    // Nothing to pause before a move has started; a move stopped before its first batch
    // records the run and moves nothing.
    let error = set_paused(&mut conn, SWAP, true).expect_err("no run to pause");
    assert!(error.to_string().contains("has started"), "{error}");
    let stop = Arc::new(AtomicBool::new(true));
    let stopped = move_rows(
        &db.url,
        SWAP,
        &MoveOptions {
            stop: Some(stop.clone()),
            ..options(1, 100)
        },
    )
    .unwrap();
    assert_eq!(
        (stopped.moved, stopped.refs_synced, stopped.finished),
        (0, 0, false),
        "{stopped:?}"
    );

    set_paused(&mut conn, SWAP, true).unwrap();
    assert!(swap::status(&mut conn, SWAP).unwrap().unwrap().paused);
    stop.store(false, Ordering::SeqCst);
    let finished = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let runner = s.spawn(|| {
            move_rows(
                &db.url,
                SWAP,
                &MoveOptions {
                    stop: Some(stop.clone()),
                    ..options(1, 100)
                },
            )
        });
        // The mover and the upkeep thread (references not synced yet) each check the pause
        // again and again, and nothing moves or is synced meanwhile.
        let since = db_now(&mut conn);
        let mut seen: HashMap<i32, HashSet<String>> = HashMap::new();
        poll_until("both paused threads to check the pause three times", || {
            for (pid, started) in pause_checks(&mut conn, &since) {
                seen.entry(pid).or_default().insert(started);
            }
            assert_eq!(
                where_rows_are(&mut conn),
                (OLD_ROWS, TEMP_ROWS, 0),
                "moved while paused"
            );
            assert_eq!(
                count(
                    &mut conn,
                    "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS NOT NULL"
                ),
                0,
                "synced while paused"
            );
            seen.values().filter(|checks| checks.len() >= 3).count() >= 2
        });
        assert!(!runner.is_finished());
        set_paused(&mut conn, SWAP, false).unwrap();
        runner.join().expect("move panicked").unwrap()
    });
    assert!(finished.finished, "{finished:?}");
    assert_eq!(finished.moved, OLD_ROWS + TEMP_ROWS);
    assert_eq!(finished.refs_synced, REF_ROWS);
    assert_eq!(where_rows_are(&mut conn), (0, 0, OLD_ROWS + TEMP_ROWS));
    assert_references_done(&mut conn);
}

#[test]
fn without_the_prepare_migration_the_move_refuses_and_says_what_to_apply() {
    let _env = shared();
    // The cars example's tables, with rows, but not the swap's prepare migration.
    let fixture = FixtureCrate::cars("swap_refuse", CARS_SWAP);
    assert!(fixture.generate(false).unwrap().0.ok());
    let db = TestDb::new("swap_refuse");
    migrate_to(&db.url, &fixture, "create_tables");
    let mut conn = db.conn();
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) SELECT 'make', 'model', 2000 FROM generate_series(1, 10)",
    );
    let error = move_rows(&db.url, SWAP, &options(1, 100)).expect_err("nothing to move");
    let message = error.to_string();
    assert!(
        message.contains("apply the prepare migration first: diesel migration run")
            && message.contains("zmig_cars_bigint_move"),
        "{message}"
    );
    let error = swap::verify(&mut conn, SWAP).expect_err("nothing to verify");
    assert!(
        error.to_string().contains("zmig_cars_bigint_check"),
        "{error}"
    );
    assert!(!swap::is_swap(&mut conn, SWAP).unwrap());
    assert_eq!(swap::status(&mut conn, SWAP).unwrap(), None);
    assert_eq!(swap::swaps(&mut conn).unwrap(), Vec::<String>::new());
    // Nothing was created or changed on the way to the refusal.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'zmig%'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'r'"
        ),
        1
    );
    assert_eq!(rows(&mut conn, "cars"), 10);
}

#[test]
fn verify_names_each_kind_of_problem_with_an_example() {
    let _env = shared();
    let (db, _fixture) = prepared("swap_verify");
    let mut conn = db.conn();
    assert!(
        move_rows(&db.url, SWAP, &options(1, 1_000))
            .unwrap()
            .finished
    );
    assert!(swap::verify(&mut conn, SWAP).unwrap().ok());
    // Written straight into the tables behind the view, which would refuse each of them: car 7
    // also in the old table; a trip of car 999999, which is nowhere; trip 12's shadow column off
    // by one. The trips' triggers (which check the car and fill the shadow column) are off for
    // the two trip writes, in one transaction, so they are on again whatever happens.
    exec(
        &mut conn,
        "INSERT INTO cars_old (id, make, model, year, mileage, created_at)
         SELECT id::integer, make, model, year, mileage, created_at FROM cars_new WHERE id = 7",
    );
    conn.batch_execute(
        "BEGIN;
         ALTER TABLE trips DISABLE TRIGGER USER;
         INSERT INTO trips (car_id, car_id_zmig, km) VALUES (999999, 999999, 1);
         UPDATE trips SET car_id_zmig = car_id + 1 WHERE id = 12;
         ALTER TABLE trips ENABLE TRIGGER USER;
         COMMIT;",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'trips'::regclass AND NOT tgisinternal AND tgenabled = 'O'"
        ),
        2,
        "the trips triggers (on insert, on update) are on again"
    );
    let check = swap::verify(&mut conn, SWAP).unwrap();
    assert!(!check.ok());
    let problem = |problem: &str, rows: i64, example: &str| SwapProblem {
        problem: problem.to_owned(),
        rows,
        example: Some(example.to_owned()),
    };
    assert_eq!(
        check.problems,
        vec![
            problem("key in two tables", 1, "7"),
            problem("trips.car_id without its row in cars", 1, "999999"),
            problem("trips.car_id not yet copied into car_id_zmig", 1, "12"),
        ]
    );
    assert_eq!(check.problem_rows(), 3);
}

/// Runs `cargo xtask zmig <args> --manifest-path <the cars example>`; whether it succeeded and
/// what it printed (or the error it returned).
fn zmig(args: &[&str]) -> (bool, String) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cars/Cargo.toml");
    let mut argv = vec!["cargo xtask", "zmig"];
    argv.extend_from_slice(args);
    argv.extend(["--manifest-path", manifest.to_str().unwrap()]);
    run_cli(argv)
}

/// Points `DATABASE_URL` at a test database, and back where it was when dropped.
struct DatabaseUrl(Option<String>);

impl DatabaseUrl {
    fn set(url: &str) -> DatabaseUrl {
        let previous = std::env::var("DATABASE_URL").ok();
        std::env::set_var("DATABASE_URL", url);
        DatabaseUrl(previous)
    }
}

impl Drop for DatabaseUrl {
    fn drop(&mut self) {
        match &self.0 {
            Some(url) => std::env::set_var("DATABASE_URL", url),
            None => std::env::remove_var("DATABASE_URL"),
        }
    }
}

#[test]
fn the_command_line_moves_verifies_and_reports_a_swap_the_database_has() {
    let _env = ENVIRONMENT.write().unwrap_or_else(PoisonError::into_inner);
    let (db, _fixture) = prepared("swap_cli");
    // Dropped before `db`, which drops its database from the server `DATABASE_URL` named.
    let _url = DatabaseUrl::set(&db.url);
    let mut conn = db.conn();

    let (ok, status) = zmig(&["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("cars_bigint: code at stage `prepare` (1 of 3)")
            && status.contains(
                "move                  in progress or stopped: 3,200 rows left (old 3,000, temp 200), 0 in new"
            )
            && status.contains("references            about 500 rows left to sync")
            && status.contains("verify                never run"),
        "{status}"
    );

    let (ok, moved) = zmig(&["backfill", SWAP, "--workers", "2", "--batch-size", "300"]);
    assert!(ok, "{moved}");
    assert!(
        moved.contains("cars_bigint: 3200 rows moved in ")
            && moved.contains("500 referencing rows synced")
            && moved
                .contains("cars_bigint: move complete: the old table is empty, 0 rows inserted since wait in temp")
            && moved.contains("next: cargo xtask zmig verify cars_bigint"),
        "{moved}"
    );
    assert_references_done(&mut conn);
    let (ok, verified) = zmig(&["verify", SWAP]);
    assert!(ok, "{verified}");
    assert!(
        verified.contains("cars_bigint: 0 rows with problems")
            && verified.contains("  key in two tables: 0")
            && verified.contains("  trips.car_id without its row in cars: 0")
            && verified.contains("  trips.car_id not yet copied into car_id_zmig: 0"),
        "{verified}"
    );

    // Car 5 again, written straight into the temp table (the view would refuse it).
    exec(
        &mut conn,
        "INSERT INTO cars_temp (id, make, model, year) VALUES (5, 'again', 'again', 2024)",
    );
    let (ok, verified) = zmig(&["verify", SWAP]);
    assert!(
        !ok,
        "verify exits non-zero when rows have problems: {verified}"
    );
    assert!(
        verified.contains("cars_bigint: 1 rows with problems")
            && verified.contains("  key in two tables: 1 (for example key 5)"),
        "{verified}"
    );

    let (ok, status) = zmig(&["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("move                  old table empty; rows inserted since wait in temp for finalize: 1 rows left (old 0, temp 1), 3,200 in new")
            && status.contains("references            synced")
            && status.contains("verify                1 rows with problems"),
        "{status}"
    );
    let (ok, json) = zmig(&["status", "--json"]);
    assert!(ok, "{json}");
    let json: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let swap = &json["migrations"][0];
    assert_eq!(swap["name"], SWAP, "{json}");
    assert_eq!(swap["strategy"], "swap", "{json}");
    assert_eq!(swap["code"]["stage"], "prepare", "{json}");
    let moved = &swap["move"];
    assert_eq!(moved["prepared"], true, "{json}");
    assert_eq!(moved["old_rows"], 0, "{json}");
    assert_eq!(moved["temp_rows"], 1, "{json}");
    assert_eq!(moved["new_rows"], 3200, "{json}");
    assert_eq!(moved["references_left"], 0, "{json}");
    assert!(moved["total_bytes"].as_i64().unwrap() > 0, "{json}");
    assert_eq!(swap["verify"]["rows_with_problems"], 1, "{json}");
    assert_eq!(swap["last_run"]["events"][0]["kind"], "started", "{json}");

    let (ok, paused) = zmig(&["backfill", SWAP, "--pause"]);
    assert!(
        ok && paused.contains("cars_bigint: move paused"),
        "{paused}"
    );
    let (ok, resumed) = zmig(&["backfill", SWAP, "--resume"]);
    assert!(
        ok && resumed.contains("cars_bigint: move resumed"),
        "{resumed}"
    );

    // Any other name is an extract, which the code must declare.
    let (ok, unknown) = zmig(&["backfill", "cars_bigwig"]);
    assert!(
        !ok && unknown.contains("no zmig migration named `cars_bigwig`"),
        "{unknown}"
    );
    let (ok, unknown) = zmig(&["verify", "cars_bigwig"]);
    assert!(
        !ok && unknown.contains("no zmig migration named `cars_bigwig`"),
        "{unknown}"
    );
}

/// From a tokio service (feature `async`): the move and the swap's verify awaited through
/// `zmig_runtime::nonblocking` on a one-thread runtime, which a task of the service shares: it
/// keeps running while the move is awaited (a move run on the executor would starve it), and
/// the move ends as the sync one does, every row moved and every reference synced.
#[test]
fn the_move_and_verify_awaited_from_tokio_leave_the_runtime_free() {
    use std::sync::atomic::AtomicU64;
    use zmig_runtime::nonblocking;

    let _env = shared();
    let (db, _fixture) = prepared("swap_async");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (report, check, ticks) = runtime.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let until = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let (ticks, until) = (ticks.clone(), until.clone());
            async move {
                while !until.load(Ordering::SeqCst) {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        // Nothing above yields: the ticker has not run yet.
        let before = ticks.load(Ordering::SeqCst);
        let report = nonblocking::move_rows(&db.url, SWAP, &options(2, 100))
            .await
            .unwrap();
        let during = ticks.load(Ordering::SeqCst) - before;
        let check = nonblocking::swap_verify(&db.url, SWAP).await.unwrap();
        until.store(true, Ordering::SeqCst);
        ticker.await.unwrap();
        (report, check, during)
    });
    assert!(
        ticks > 0,
        "the runtime's other task never ran while the move was awaited"
    );
    assert!(report.finished, "{report:?}");
    assert_eq!(report.moved, OLD_ROWS + TEMP_ROWS, "{report:?}");
    assert_eq!(report.refs_synced, REF_ROWS, "{report:?}");
    assert!(check.ok(), "{check:?}");
    let mut conn = db.conn();
    assert_eq!(where_rows_are(&mut conn), (0, 0, OLD_ROWS + TEMP_ROWS));
    assert_references_done(&mut conn);
    // Recorded for status, as the sync verify does.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM zmig_verifications WHERE migration = 'cars_bigint' AND differing = 0"
        ),
        1
    );
}
