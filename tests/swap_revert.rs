//! The way back from a swap, online (issue 12, item 4), on the cars example's generated
//! migrations against a real PostgreSQL with more rows than prepare's revert moves under its
//! lock (10,000):
//!
//! - under writers inserting, updating and deleting cars and trips through the view with the
//!   example's Diesel code, the move runs part way, the move back (two workers) takes every row
//!   back to `cars_old`, and the prepare migration is reverted: `cars` is a table again with its
//!   original types, and it and `trips` equal the writers' ledgers row by row; no writer saw an
//!   error other than a serialization failure or a deadlock (both retried);
//! - a move back killed with SIGKILL part way and run again ends the same, without starting over;
//! - the revert refuses while more than 10,000 rows are in new and temp, naming how many and
//!   the command to run, with the catalog and every row unchanged;
//! - after a move back was started a move refuses until `--forward`, a running move stops, and
//!   a forward move after a partial move back moves every row (the move's hint was reset).
//!
//! Waits poll the database a bounded number of times; nothing sleeps to let something happen.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use cars::models as app;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::migrate::is_lock_timeout;
use zmig_runtime::swap::{self, move_rows, move_rows_back, MoveDirection, MoveOptions};
use zmig_tests::cars_ledger::{cars_in_database as database, CarLog, CarsLedger};
use zmig_tests::waits::poll_until;
use zmig_tests::{
    cars_seeded, count, exec, is_retryable, run_cli, writer_conn, FixtureCrate, TestDb,
};

const SWAP: &str = "cars_bigint";
const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";
/// Cars seeded before prepare (each with a trip): more than the revert moves under its lock.
const SEEDED: i64 = 30_000;
const WRITERS: usize = 3;
/// Operations each writer does at least per stage (and goes on while the stage's work runs).
const OPS_PER_STAGE: usize = 200;

fn options(workers: usize) -> MoveOptions {
    MoveOptions {
        workers,
        batch_size: 500,
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    }
}

/// A database with the cars example's tables, `SEEDED` cars with a trip each, and the swap's
/// prepare migration applied. The fixture crate lives as long as the test.
fn prepared(label: &str) -> (TestDb, FixtureCrate) {
    cars_seeded(
        label,
        CARS_SWAP,
        &[&format!(
            "INSERT INTO cars (make, model, year, mileage) SELECT 'make' || g, 'model' || g % 50, 1990 + g % 30, 1 + g % 97 FROM generate_series(1, {SEEDED}) g;
             INSERT INTO trips (car_id, km) SELECT g, 1 + g % 97 FROM generate_series(1, {SEEDED}) g;
             ANALYZE cars; ANALYZE trips;"
        )],
        Some("cars_bigint_prepare"),
    )
}

fn rows(conn: &mut PgConnection, table: &str) -> i64 {
    count(conn, &format!("SELECT count(*) AS n FROM {table}"))
}

/// Reverts the prepare migration (the last applied) through diesel_migrations' harness, as a
/// deploy would: again while its brief lock is not to be had under traffic. The error, if it
/// refuses otherwise.
fn revert_prepare(url: &str, fixture: &FixtureCrate) -> Result<String, String> {
    let mut conn = PgConnection::establish(url).unwrap();
    for _ in 0..100 {
        match conn.revert_last_migration(fixture.migrations()) {
            Ok(name) => return Ok(name.to_string()),
            Err(e) if is_lock_timeout(&e.to_string()) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the revert's locks were never to be had".to_owned())
}

/// The `move` line of `cargo xtask zmig status` for the swap, the example crate's code read.
fn status_line(url: &str) -> String {
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cars/Cargo.toml");
    let (ok, out) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "--database-url",
        url,
        "status",
        "--manifest-path",
        manifest.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    out.lines()
        .find(|l| l.trim_start().starts_with("move "))
        .unwrap_or_else(|| panic!("no move line: {out}"))
        .trim()
        .to_owned()
}

type Ledger = CarsLedger;

/// Compares the database with the merged ledgers, row by row.
fn compare(conn: &mut PgConnection, ledgers: &[Ledger], when: &str) {
    let expected: Ledger = ledgers
        .iter()
        .flat_map(|l| l.iter().map(|(k, v)| (*k, v.clone())))
        .collect();
    let actual = database(conn);
    let mut problems = Vec::new();
    for (id, car) in &expected {
        match actual.get(id) {
            None => problems.push(format!("car {id} lost")),
            Some(row) if row != car => {
                problems.push(format!("car {id}: database {row:?}, ledger {car:?}"))
            }
            _ => {}
        }
    }
    problems.extend(
        actual
            .keys()
            .filter(|id| !expected.contains_key(id))
            .map(|id| format!("car {id} exists but no ledger has it")),
    );
    assert!(
        problems.is_empty(),
        "{when}: {} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

/// One writer of the application's own Diesel code: it owns the seeded cars with
/// `id % WRITERS == thread` and those it inserts, so its ledger is exactly what the database
/// must hold for them.
struct Writer<'a> {
    conn: PgConnection,
    ledger: &'a mut Ledger,
    rng: StdRng,
    thread: usize,
    ops: BTreeMap<&'static str, u64>,
    retries: BTreeMap<&'static str, u64>,
}

impl Writer<'_> {
    /// Runs `op` in a transaction until it commits, retrying serialization failures (which the
    /// view's triggers raise for a row changed under a statement) and deadlocks; any other
    /// error fails the test.
    fn run<T>(&mut self, mut op: impl FnMut(&mut PgConnection) -> QueryResult<T>) -> T {
        for _ in 0..200 {
            match self.conn.transaction(&mut op) {
                Ok(value) => return value,
                Err(e) => match is_retryable(&e) {
                    Some(kind) => *self.retries.entry(kind).or_default() += 1,
                    None => panic!("writer {}: {e}", self.thread),
                },
            }
        }
        panic!("writer {}: still failing after 200 attempts", self.thread);
    }

    fn own_car(&mut self) -> Option<i64> {
        if self.ledger.is_empty() {
            return None;
        }
        // Spread over the whole key range, so the writers meet rows in every table.
        let at = self.rng.gen_range(0..=SEEDED + 1_000);
        self.ledger
            .range(at..)
            .next()
            .or_else(|| self.ledger.iter().next_back())
            .map(|(id, _)| *id)
    }

    fn step(&mut self, n: usize) {
        let tag = format!("w{}-{n}", self.thread);
        match (self.rng.gen_range(0..100), self.own_car()) {
            (0..=19, _) | (_, None) => {
                let year = self.rng.gen_range(1990..2026);
                let car = self.run(|conn| {
                    app::create_car(
                        conn,
                        &app::NewCar {
                            make: &tag,
                            model: "new",
                            year,
                        },
                    )
                });
                let fresh = CarLog {
                    make: tag,
                    model: "new".into(),
                    year,
                    mileage: 0,
                    trips: vec![],
                };
                assert_eq!(
                    (car.make.clone(), car.model.clone(), car.year, car.mileage),
                    (fresh.make.clone(), fresh.model.clone(), year, 0)
                );
                assert!(
                    self.ledger.insert(i64::from(car.id), fresh).is_none(),
                    "id {} handed out twice",
                    car.id
                );
                self.count("insert");
            }
            (20..=49, Some(id)) => {
                let km = self.rng.gen_range(1..500);
                self.run(|conn| app::drive(conn, id as i32, km).map(|_| ()));
                let car = self.ledger.get_mut(&id).unwrap();
                car.mileage += km;
                car.trips.push(km);
                car.trips.sort_unstable();
                self.count("drive");
            }
            (50..=64, Some(id)) => {
                let model = format!("m{}", self.rng.gen_range(0..1000));
                let renamed = self.run(|conn| {
                    app::rename_car(conn, id as i32, &tag, &model).map(|c| (c.make, c.model))
                });
                assert_eq!(renamed, (tag.clone(), model.clone()));
                let car = self.ledger.get_mut(&id).unwrap();
                car.make = tag;
                car.model = model;
                self.count("rename");
            }
            (65..=74, Some(id)) => {
                // A full-struct save, as forms do: read, change, write every column back.
                self.run(|conn| {
                    let mut car = app::find_car(conn, id as i32)?.expect("own car");
                    car.year += 1;
                    app::save_car(conn, &car).map(|_| ())
                });
                self.ledger.get_mut(&id).unwrap().year += 1;
                self.count("save");
            }
            (75..=84, Some(id)) => {
                let deleted = self.run(|conn| app::delete_car(conn, id as i32));
                assert_eq!(deleted, 1, "car {id}");
                self.ledger.remove(&id);
                self.count("delete");
            }
            (_, Some(id)) => {
                let read = self.run(|conn| {
                    app::find_car(conn, id as i32)
                        .map(|c| c.map(|c| (c.make, c.model, c.year, c.mileage)))
                });
                let car = &self.ledger[&id];
                assert_eq!(
                    read,
                    Some((car.make.clone(), car.model.clone(), car.year, car.mileage)),
                    "writer {} reads its car {id}",
                    self.thread
                );
                self.count("read");
            }
        }
    }

    fn count(&mut self, op: &'static str) {
        *self.ops.entry(op).or_default() += 1;
    }
}

/// What the writers of a stage did: operations and retries by kind.
type Done = (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>);

/// Runs the writers while `work` runs on this thread; they go on until it has returned and each
/// has done its minimum.
fn stage<T>(url: &str, ledgers: &mut [Ledger], seed: u64, work: impl FnOnce() -> T) -> (T, Done) {
    let start = Barrier::new(ledgers.len() + 1);
    let until = AtomicBool::new(false);
    thread::scope(|scope| {
        let handles: Vec<_> = ledgers
            .iter_mut()
            .enumerate()
            .map(|(t, ledger)| {
                let (start, until) = (&start, &until);
                scope.spawn(move || {
                    let mut writer = Writer {
                        conn: writer_conn(url),
                        ledger,
                        rng: StdRng::seed_from_u64(seed * 100 + t as u64),
                        thread: t,
                        ops: BTreeMap::new(),
                        retries: BTreeMap::new(),
                    };
                    start.wait();
                    let mut n = 0;
                    while n < OPS_PER_STAGE || !until.load(Ordering::SeqCst) {
                        writer.step(n);
                        n += 1;
                    }
                    (writer.ops, writer.retries)
                })
            })
            .collect();
        start.wait();
        let out = work();
        until.store(true, Ordering::SeqCst);
        let mut done = Done::default();
        for handle in handles {
            let (ops, retries) = handle.join().unwrap();
            for (k, v) in ops {
                *done.0.entry(k).or_default() += v;
            }
            for (k, v) in retries {
                *done.1.entry(k).or_default() += v;
            }
        }
        (out, done)
    })
}

/// The table is back as before prepare: `cars` a table with `id integer`, `trips.car_id`
/// integer with its foreign key validated, and nothing of the swap left.
fn assert_reverted(conn: &mut PgConnection) {
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'r'"
        ),
        1,
        "cars is not a table"
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM information_schema.columns
             WHERE (table_name, column_name) IN (('cars', 'id'), ('trips', 'car_id')) AND data_type = 'integer'"
        ),
        2,
        "the original types"
    );
    assert_eq!(
        count(
            conn,
            // The runtime's bookkeeping (`zmig_run_log`, …) stays; the swap's own objects go.
            "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_temp', 'cars_new')
                OR (relname LIKE '%zmig%' AND relname NOT LIKE 'zmig\\_%') OR relname LIKE 'zmig\\_cars\\_bigint%'"
        ),
        0,
        "a table, index or sequence of the swap is left"
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_proc WHERE proname LIKE 'zmig_cars_bigint%'"
        ),
        0
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM zmig_swap_state WHERE swap = 'cars_bigint'"
        ),
        0
    );
    assert_eq!(
        count(
            conn,
            "SELECT count(*) AS n FROM pg_constraint WHERE conname = 'trips_car_id_fkey' AND convalidated"
        ),
        1
    );
}

#[test]
fn under_live_writes_the_move_the_move_back_and_the_revert_lose_nothing() {
    let (db, fixture) = prepared("swap_revert_live");
    let url = db.url.clone();
    let mut conn = db.conn();
    let mut ledgers: Vec<Ledger> = vec![Ledger::new(); WRITERS];
    for (id, car) in database(&mut conn) {
        ledgers[id as usize % WRITERS].insert(id, car);
    }
    let mut all: Vec<Done> = Vec::new();

    // The move, part way: stopped once more than the revert would take under its lock moved.
    let (report, done) = stage(&url, &mut ledgers, 1, || {
        let stop = Arc::new(AtomicBool::new(false));
        let options = MoveOptions {
            stop: Some(stop.clone()),
            ..options(2)
        };
        thread::scope(|scope| {
            let mover = scope.spawn(|| move_rows(&url, SWAP, &options));
            let mut probe = db.conn();
            // Yielding to the writers, the move is slow: polled for up to a minute.
            for _ in 0..6_000 {
                if rows(&mut probe, "cars_new") > 12_000 || mover.is_finished() {
                    break;
                }
                thread::sleep(std::time::Duration::from_millis(10));
            }
            stop.store(true, Ordering::SeqCst);
            mover.join().unwrap().unwrap()
        })
    });
    all.push(done);
    assert!(
        !report.finished,
        "the move finished before it was stopped: {report:?}"
    );
    assert!(rows(&mut conn, "cars_new") > 10_000);
    compare(&mut conn, &ledgers, "after the move");

    // The move back, two workers, to the end.
    // Batches of at most 300 rows, so the writers meet many of them.
    let (back, done) = stage(&url, &mut ledgers, 2, || {
        let small = MoveOptions {
            min_batch_size: 100,
            max_batch_size: 300,
            ..options(2)
        };
        move_rows_back(&url, SWAP, &small).unwrap()
    });
    all.push(done);
    assert!(back.finished, "{back:?}");
    assert!(back.moved > 10_000, "{back:?}");
    assert_eq!(rows(&mut conn, "cars_new"), 0);
    // No key in two tables, no trip without its car (the shadow column, which the move was
    // filling, is the revert's to drop).
    let check = swap::verify(&mut conn, SWAP).unwrap();
    assert!(
        check
            .problems
            .iter()
            .filter(|p| !p.problem.contains("not yet copied"))
            .all(|p| p.rows == 0),
        "{check:?}"
    );
    compare(&mut conn, &ledgers, "after the move back");
    let status = swap::status(&mut conn, SWAP).unwrap().unwrap();
    assert_eq!(status.direction, MoveDirection::Back);

    // The revert, under the same traffic: it moves only what was inserted since.
    let (reverted, done) = stage(&url, &mut ledgers, 3, || revert_prepare(&url, &fixture));
    all.push(done);
    let reverted = reverted.unwrap();
    assert!(
        reverted.ends_with("0001"),
        "reverted {reverted}, the prepare migration"
    );
    assert_reverted(&mut conn);
    compare(&mut conn, &ledgers, "after the revert");

    let ops: u64 = all.iter().flat_map(|d| d.0.values()).sum();
    let retries: u64 = all.iter().flat_map(|d| d.1.values()).sum();
    for op in ["insert", "drive", "rename", "save", "delete", "read"] {
        assert!(
            all.iter().all(|d| d.0.get(op).copied().unwrap_or(0) > 0),
            "a stage without a `{op}`: {:?}",
            all.iter().map(|d| &d.0).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "swap_revert: {ops} writer operations over three stages, {retries} retried ({:?}); the move back took {} rows in {} batches",
        all.iter().map(|d| &d.1).collect::<Vec<_>>(),
        back.moved,
        back.batches
    );
}

#[test]
fn a_move_back_killed_part_way_resumes_and_ends_the_same() {
    let (db, fixture) = prepared("swap_revert_kill");
    let url = db.url.clone();
    let mut conn = db.conn();
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) SELECT 'since ' || g, 'prepare', 2024 FROM generate_series(1, 300) g",
    );
    move_rows(&url, SWAP, &options(2)).unwrap();
    exec(
        &mut conn,
        "UPDATE cars SET mileage = mileage + 7 WHERE id % 1000 = 3",
    );
    let before = database(&mut conn);
    let in_new = rows(&mut conn, "cars_new");
    assert!(in_new > 20_000);

    let mut child = Command::new(env!("CARGO_BIN_EXE_swap_worker"))
        .args([url.as_str(), SWAP, "back"])
        .spawn()
        .unwrap();
    let mut probe = db.conn();
    poll_until("the move back child to take 5,000 rows", || {
        rows(&mut probe, "cars_new") < in_new - 5_000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let left = rows(&mut probe, "cars_new");
    assert!(
        left > 0,
        "the move back child finished before it was killed"
    );
    compare(&mut conn, std::slice::from_ref(&before), "after the kill");
    let status = status_line(&url);
    assert!(
        status.contains(
            "move back in progress or stopped (run `cargo xtask zmig backfill cars_bigint --back` to resume)"
        ),
        "{status}"
    );

    let resumed = move_rows_back(&url, SWAP, &options(2)).unwrap();
    assert!(resumed.finished, "{resumed:?}");
    assert!(
        resumed.moved < in_new,
        "the resumed move back started over: {resumed:?}"
    );
    assert_eq!(rows(&mut conn, "cars_new"), 0);
    assert_eq!(rows(&mut conn, "cars_temp"), 0);
    assert_eq!(rows(&mut conn, "cars_old"), before.len() as i64);
    revert_prepare(&url, &fixture).unwrap();
    assert_reverted(&mut conn);
    compare(&mut conn, &[before], "after the revert");
}

/// What a refused revert must leave as it was: the relations, functions and triggers of the
/// schema, the state, every row where it was, and diesel's record of the migration.
fn fingerprint(conn: &mut PgConnection) -> String {
    #[derive(QueryableByName)]
    struct Print {
        #[diesel(sql_type = Text)]
        print: String,
    }
    diesel::sql_query(
        "SELECT concat_ws(' | ',
            (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace),
            (SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'public'::regnamespace),
            (SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal),
            (SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
            (SELECT string_agg(format('%s %s %s %s', item, detail, after, finished), ',' ORDER BY item) FROM zmig_swap_state),
            (SELECT string_agg(version, ',' ORDER BY version) FROM __diesel_schema_migrations),
            (SELECT md5(string_agg(format('%s|%s|%s|%s|%s', id, make, model, year, mileage), ',' ORDER BY id)) FROM cars_old),
            (SELECT md5(string_agg(format('%s|%s|%s|%s|%s', id, make, model, year, mileage), ',' ORDER BY id)) FROM cars_new),
            (SELECT md5(string_agg(format('%s|%s|%s|%s|%s', id, make, model, year, mileage), ',' ORDER BY id)) FROM cars_temp),
            (SELECT md5(string_agg(format('%s|%s|%s|%s', id, km, car_id, car_id_zmig), ',' ORDER BY id)) FROM trips)
         ) AS print",
    )
    .get_result::<Print>(conn)
    .unwrap()
    .print
}

#[test]
fn the_revert_refuses_while_more_than_it_moves_under_its_lock_are_left() {
    let (db, fixture) = prepared("swap_revert_refuse");
    let url = db.url.clone();
    let mut conn = db.conn();
    move_rows(&url, SWAP, &options(2)).unwrap();
    let before = fingerprint(&mut conn);
    let refused = revert_prepare(&url, &fixture).unwrap_err();
    assert!(
        refused.contains("more than 10000 rows (about")
            && refused.contains("cars_new")
            && refused.contains("cargo xtask zmig backfill cars_bigint --back"),
        "{refused}"
    );
    assert_eq!(
        fingerprint(&mut conn),
        before,
        "the refused revert changed something"
    );

    // 6,000 left in new and 6,000 in temp: counted exactly.
    let in_new = rows(&mut conn, "cars_new");
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT zmig_cars_bigint_move_back({}) AS n", in_new - 6_000)
        ),
        in_new - 6_000
    );
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year) SELECT 'late ' || g, 'model', 2024 FROM generate_series(1, 6000) g",
    );
    let before = fingerprint(&mut conn);
    let refused = revert_prepare(&url, &fixture).unwrap_err();
    assert!(
        refused.contains(": 12000 rows are in \"cars_new\" and \"cars_temp\""),
        "{refused}"
    );
    assert_eq!(
        fingerprint(&mut conn),
        before,
        "the refused revert changed something"
    );

    // Status says what is left to do; once the move back ran, the revert goes through.
    let (ok, out) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "--database-url",
        &url,
        "backfill",
        SWAP,
        "--back",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("move back complete"), "{out}");
    assert!(out.contains("diesel migration revert"), "{out}");
    let status = status_line(&url);
    assert!(
        status.starts_with("move                  moved back: ready for `diesel migration revert`")
            && status.contains("0 in new"),
        "{status}"
    );
    let expected = database(&mut conn);
    revert_prepare(&url, &fixture).unwrap();
    assert_reverted(&mut conn);
    compare(&mut conn, &[expected], "after the revert");
}

#[test]
fn a_forward_move_after_a_move_back_needs_forward_and_then_moves_every_row() {
    let (db, _fixture) = prepared("swap_revert_forward");
    let url = db.url.clone();
    let mut conn = db.conn();
    move_rows(&url, SWAP, &options(1)).unwrap();
    assert!(
        count(
            &mut conn,
            "SELECT after AS n FROM zmig_swap_state WHERE swap = 'cars_bigint' AND item = 'move'"
        ) == 0,
        "the move's hint: the lowest page reached (it walks the heap down from its end)"
    );
    let expected = database(&mut conn);

    // A move running when a move back starts stops at its next batch, saying why.
    exec(&mut conn, "INSERT INTO cars (make, model, year) SELECT 'late ' || g, 'model', 2024 FROM generate_series(1, 20000) g");
    let slow = MoveOptions {
        batch_size: 100,
        min_batch_size: 100,
        max_batch_size: 100,
        pause: std::time::Duration::from_millis(20),
        ..options(1)
    };
    let stopped = thread::scope(|scope| {
        let mover = scope.spawn(|| move_rows(&url, SWAP, &slow));
        let mut probe = db.conn();
        poll_until("the move to take a few batches of temp", || {
            rows(&mut probe, "cars_temp") < 19_500 || mover.is_finished()
        });
        swap::set_direction(&mut probe, SWAP, MoveDirection::Back).unwrap();
        mover.join().unwrap()
    });
    let stopped = stopped.unwrap_err().to_string();
    assert!(
        stopped.contains("going back") && stopped.contains("--forward"),
        "{stopped}"
    );
    let expected_all = database(&mut conn);
    assert_eq!(expected_all.len(), expected.len() + 20_000);

    // Part way back: the highest keys, below the move's hint.
    let back = count(&mut conn, "SELECT zmig_cars_bigint_move_back(12000) AS n");
    assert_eq!(back, 12_000);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM zmig_swap_state WHERE swap = 'cars_bigint' AND item = 'move' AND after IS NULL"
        ),
        1,
        "the move's hint is still set after rows went back below it"
    );

    // A plain move refuses, saying what to do; with --forward it moves every row.
    let cli = |extra: &[&str]| {
        let mut argv = vec![
            "cargo xtask",
            "zmig",
            "--database-url",
            &url,
            "backfill",
            SWAP,
        ];
        argv.extend_from_slice(extra);
        run_cli(argv)
    };
    let (ok, out) = cli(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("are going back") && out.contains("backfill cars_bigint --forward"),
        "{out}"
    );
    assert!(
        rows(&mut conn, "cars_old") >= 12_000,
        "the refused move moved rows"
    );
    let (ok, out) = cli(&["--forward"]);
    assert!(ok, "{out}");
    assert_eq!(rows(&mut conn, "cars_old"), 0);
    assert!(rows(&mut conn, "cars_temp") < 1_000);
    assert_eq!(
        swap::direction(&mut conn, SWAP).unwrap(),
        MoveDirection::Forward
    );
    let check = swap::verify(&mut conn, SWAP).unwrap();
    assert!(check.ok(), "{check:?}");
    compare(&mut conn, &[expected_all], "after going forward again");
}

/// The view's triggers find a row the move back takes from under them: UPDATEs of a few hot
/// cars and trips inserted for them, racing batches of 37 rows going back from new to old,
/// each update changes exactly one row (never 0, as for a row deleted) and each trip finds its
/// car (never a foreign key violation). Every increment committed is there at the end.
#[test]
fn updates_and_references_racing_the_move_back_lose_nothing() {
    let (db, _fixture) = prepared("swap_revert_race");
    let url = db.url.clone();
    move_rows(&url, SWAP, &options(2)).unwrap();
    let hot: Vec<i64> = (1..=20).map(|i| i * 1_499).collect();
    let done = AtomicBool::new(false);
    let committed: Vec<i64> = thread::scope(|scope| {
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (url, hot, done) = (&url, &hot, &done);
                scope.spawn(move || {
                    let mut conn = writer_conn(url);
                    let mut ok = vec![0i64; hot.len()];
                    let mut round = 0;
                    while round < 150 || !done.load(Ordering::SeqCst) {
                        let i = round % hot.len();
                        round += 1;
                        loop {
                            let result = conn.transaction(|conn| {
                                let updated = diesel::sql_query(format!(
                                    "UPDATE cars SET mileage = mileage + 1 WHERE id = {}",
                                    hot[i]
                                ))
                                .execute(conn)?;
                                assert_eq!(updated, 1, "car {} not found by the update", hot[i]);
                                diesel::sql_query(format!(
                                    "INSERT INTO trips (car_id, km) VALUES ({}, 1)",
                                    hot[i]
                                ))
                                .execute(conn)
                            });
                            match result {
                                Ok(_) => break,
                                Err(e) if is_retryable(&e).is_some() => {}
                                Err(e) => panic!("car {}: {e}", hot[i]),
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
            // A batch skips the rows writers hold (`SKIP LOCKED`): one that took none while
            // some are left is not the end.
            while count(&mut conn, "SELECT zmig_cars_bigint_move_back(37) AS n") > 0
                || count(&mut conn, "SELECT count(*) AS n FROM cars_new") > 0
            {}
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
    assert_eq!(rows(&mut conn, "cars_new"), 0);
    for (id, expected) in hot.iter().zip(committed) {
        // Seeded with mileage 1 + id % 97 and one trip of that many km.
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT mileage::bigint - (1 + {id} % 97) AS n FROM cars_old WHERE id = {id}"
                )
            ),
            expected,
            "car {id}"
        );
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) - 1 AS n FROM trips WHERE car_id = {id}")
            ),
            expected,
            "trips of car {id}"
        );
    }
    assert_eq!(rows(&mut conn, "cars"), SEEDED);
}

/// With `follow`, the move back keeps taking back what a writer inserts once the new table is
/// empty, until the prepare migration is reverted under it; then it ends by itself, reporting
/// the revert, and nothing the writer inserted is lost.
#[test]
fn a_following_move_back_ends_by_itself_once_the_revert_ran() {
    let (db, fixture) = prepared("swap_revert_follow");
    let url = db.url.clone();
    move_rows(&url, SWAP, &options(2)).unwrap();
    let mut conn = db.conn();
    let done = AtomicBool::new(false);
    let (report, inserted) = thread::scope(|scope| {
        let follower = scope.spawn(|| {
            let follow = MoveOptions {
                follow: true,
                ..options(2)
            };
            move_rows_back(&url, SWAP, &follow)
        });
        let writer = scope.spawn(|| {
            let mut conn = writer_conn(&url);
            let mut inserted = 0i64;
            while inserted < 200 || !done.load(Ordering::SeqCst) {
                exec(
                    &mut conn,
                    "INSERT INTO cars (make, model, year) VALUES ('follow', 'back', 2025)",
                );
                inserted += 1;
            }
            inserted
        });
        let mut probe = db.conn();
        poll_until("the move back to empty the new table", || {
            rows(&mut probe, "cars_new") == 0 || follower.is_finished()
        });
        revert_prepare(&url, &fixture).unwrap();
        done.store(true, Ordering::SeqCst);
        (follower.join().unwrap(), writer.join().unwrap())
    });
    let report = report.unwrap();
    assert!(report.finished && report.finalized, "{report:?}");
    assert_reverted(&mut conn);
    assert_eq!(rows(&mut conn, "cars"), SEEDED + inserted);
}
