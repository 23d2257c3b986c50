//! The cars swap (`cars.id` and `trips.car_id` from integer to bigint) from prepare to finalize
//! against a real PostgreSQL with 200,000 cars and 200,000 trips, while writer threads insert,
//! update and delete cars and trips through the application's ordinary Diesel code
//! (`examples/cars`): prepare goes in under traffic, the move is killed with SIGKILL half way
//! and resumed, and finalize goes in under traffic, after which the writers roll over to the next
//! release (the one whose schema.rs says `Int8`), as a deploy would. Run again (on 60,000 cars)
//! with writers built once against the one release for the whole swap (`Int8` in schema.rs, the
//! keys as `zmig_runtime::wide::WideInt`): no error, no roll-over, nothing lost.
//!
//! Each writer owns its cars (the seeded ones with `id % WRITERS == thread`, and those it
//! inserts), so its log of what it committed is exactly what the database must hold for them:
//! after every stage the writers stop and the database is compared row by row with the merged
//! logs. A probing session reads and writes a car of its own every few milliseconds with a
//! one-second `lock_timeout` throughout prepare and finalize and records the longest wait.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cars::models as app;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{move_rows, verify, MoveOptions};
use zmig_runtime::wide::{forget_prepared_statements, is_stale_prepared_statement, WideInt};
use zmig_tests::cars_ledger::{cars_in_database as database, CarLog, CarsLedger};
use zmig_tests::cars_next as next;
use zmig_tests::cars_wide as wide;
use zmig_tests::{count, exec, migrate_to, writer_conn, FixtureCrate, TestDb};

const SEEDED: i64 = 200_000;
const WRITERS: usize = 4;
/// Operations each writer does at least per stage (and goes on while the stage's work runs).
const OPS_PER_STAGE: usize = 300;

pub const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

type Log = CarsLedger;

/// Which code a writer runs: the application as it is, or its next release (after finalize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Current,
    Next,
    /// The one release for the whole swap: `Int8` in schema.rs, the keys as `WideInt`.
    Wide,
}

/// Why an operation failed: worth retrying (a serialization failure the view raises for a row
/// changed under a statement, a deadlock), the signal that finalize has happened (the current
/// release cannot decode a bigint), or a bug.
fn classify(e: &Error) -> Option<&'static str> {
    match e {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => Some("retry"),
        Error::DatabaseError(_, info) if info.message().contains("deadlock detected") => {
            Some("retry")
        }
        Error::DeserializationError(e) if format!("{e:?}").contains("more than 4 bytes") => {
            Some("finalized")
        }
        Error::DatabaseError(_, info)
            if info
                .message()
                .contains("cached plan must not change result type") =>
        {
            Some("finalized")
        }
        _ => None,
    }
}

/// Counts of what the writers did, for the record and to prove every path ran.
#[derive(Default, Debug)]
struct Tally {
    ops: BTreeMap<&'static str, u64>,
    retries: u64,
    rollovers: u64,
    /// Times the one release prepared its statements afresh.
    fresh_statements: u64,
}

struct Writer<'a> {
    conn: PgConnection,
    release: Release,
    log: &'a mut Log,
    rng: StdRng,
    tally: Tally,
    thread: usize,
}

impl Writer<'_> {
    /// Runs `op` in a transaction until it commits: retrying what is retryable, rolling over to
    /// the next release when the current one meets the finalized table.
    fn run<T>(&mut self, mut op: impl FnMut(&mut PgConnection, Release) -> QueryResult<T>) -> T {
        for _ in 0..200 {
            let release = self.release;
            match self.conn.transaction(|conn| op(conn, release)) {
                Ok(value) => return value,
                // The one release meets each statement it cached once, when the key's type
                // changes under it: it prepares afresh and carries on.
                Err(e) if self.release == Release::Wide && is_stale_prepared_statement(&e) => {
                    forget_prepared_statements(&mut self.conn);
                    self.tally.fresh_statements += 1;
                }
                Err(e) => match classify(&e) {
                    Some("retry") => self.tally.retries += 1,
                    Some(_) if self.release == Release::Current => {
                        self.release = Release::Next;
                        self.tally.rollovers += 1;
                    }
                    _ => panic!("writer {}: {e}", self.thread),
                },
            }
        }
        panic!("writer {}: still failing after 200 attempts", self.thread);
    }

    fn own_car(&mut self) -> Option<i64> {
        if self.log.is_empty() {
            return None;
        }
        let keys: Vec<i64> = self.log.keys().copied().take(4_000).collect();
        Some(keys[self.rng.gen_range(0..keys.len())])
    }

    fn step(&mut self, n: usize) {
        let roll = self.rng.gen_range(0..100);
        let tag = format!("w{}-{n}", self.thread);
        match (roll, self.own_car()) {
            (0..=19, _) | (_, None) => {
                let year = self.rng.gen_range(1990..2026);
                let (id, created) = self.run(|conn, release| match release {
                    Release::Current => app::create_car(
                        conn,
                        &app::NewCar {
                            make: &tag,
                            model: "new",
                            year,
                        },
                    )
                    .map(|c| (i64::from(c.id), (c.make, c.model, c.year, c.mileage))),
                    Release::Next => next::create_car(
                        conn,
                        &next::NewCar {
                            make: &tag,
                            model: "new",
                            year,
                        },
                    )
                    .map(|c| (c.id, (c.make, c.model, c.year, c.mileage))),
                    Release::Wide => wide::create_car(
                        conn,
                        &wide::NewCar {
                            make: &tag,
                            model: "new",
                            year,
                        },
                    )
                    .map(|c| (c.id.0, (c.make, c.model, c.year, c.mileage))),
                });
                assert_eq!(created, (tag.clone(), "new".to_owned(), year, 0));
                let fresh = CarLog {
                    make: tag,
                    model: "new".into(),
                    year,
                    mileage: 0,
                    trips: vec![],
                };
                assert!(
                    self.log.insert(id, fresh).is_none(),
                    "id {id} handed out twice"
                );
                self.count("insert");
            }
            (20..=49, Some(id)) => {
                let km = self.rng.gen_range(1..500);
                self.run(|conn, release| match release {
                    Release::Current => app::drive(conn, id as i32, km).map(|_| ()),
                    Release::Next => next::drive(conn, id, km).map(|_| ()),
                    Release::Wide => wide::drive(conn, WideInt(id), km).map(|_| ()),
                });
                let car = self.log.get_mut(&id).unwrap();
                car.mileage += km;
                car.trips.push(km);
                car.trips.sort_unstable();
                self.count("drive");
            }
            (50..=64, Some(id)) => {
                let model = format!("m{}", self.rng.gen_range(0..1000));
                let renamed = self.run(|conn, release| match release {
                    Release::Current => app::rename_car(conn, id as i32, &tag, &model)
                        .map(|c| (c.make, c.model, c.mileage)),
                    Release::Next => next::rename_car(conn, id, &tag, &model)
                        .map(|c| (c.make, c.model, c.mileage)),
                    Release::Wide => wide::rename_car(conn, WideInt(id), &tag, &model)
                        .map(|c| (c.make, c.model, c.mileage)),
                });
                let car = self.log.get_mut(&id).unwrap();
                car.make = tag;
                car.model = model;
                assert_eq!(renamed, (car.make.clone(), car.model.clone(), car.mileage));
                self.count("rename");
            }
            (65..=74, Some(id)) => {
                // A full-struct save, as forms do: read, change, write every column back.
                self.run(|conn, release| match release {
                    Release::Current => {
                        let mut car = app::find_car(conn, id as i32)?.expect("own car");
                        car.year += 1;
                        app::save_car(conn, &car).map(|_| ())
                    }
                    Release::Next => {
                        let mut car = next::find_car(conn, id)?.expect("own car");
                        car.year += 1;
                        next::save_car(conn, &car).map(|_| ())
                    }
                    Release::Wide => {
                        let mut car = wide::find_car(conn, WideInt(id))?.expect("own car");
                        car.year += 1;
                        wide::save_car(conn, &car).map(|_| ())
                    }
                });
                self.log.get_mut(&id).unwrap().year += 1;
                self.count("save");
            }
            (75..=84, Some(id)) => {
                let deleted = self.run(|conn, release| match release {
                    Release::Current => app::delete_car(conn, id as i32),
                    Release::Next => next::delete_car(conn, id),
                    Release::Wide => wide::delete_car(conn, WideInt(id)),
                });
                assert_eq!(deleted, 1, "car {id}");
                self.log.remove(&id);
                self.count("delete");
            }
            (_, Some(id)) => {
                let read = self.run(|conn, release| match release {
                    Release::Current => app::find_car(conn, id as i32)
                        .map(|c| c.map(|c| (c.make, c.model, c.year, c.mileage))),
                    Release::Next => next::find_car(conn, id)
                        .map(|c| c.map(|c| (c.make, c.model, c.year, c.mileage))),
                    Release::Wide => wide::find_car(conn, WideInt(id))
                        .map(|c| c.map(|c| (c.make, c.model, c.year, c.mileage))),
                });
                let car = &self.log[&id];
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
        *self.tally.ops.entry(op).or_default() += 1;
    }
}

/// Runs the writers while `work` runs on this thread; they go on until it has returned and each
/// has done its minimum. Returns what `work` returned and the writers' tallies.
fn stage<T>(
    url: &str,
    logs: &mut [Log],
    releases: &mut [Release],
    seed: u64,
    work: impl FnOnce() -> T,
) -> (T, Vec<Tally>) {
    let start = Barrier::new(logs.len() + 1);
    let until = AtomicBool::new(false);
    thread::scope(|scope| {
        let handles: Vec<_> = logs
            .iter_mut()
            .zip(releases.iter_mut())
            .enumerate()
            .map(|(t, (log, release))| {
                let (start, until) = (&start, &until);
                scope.spawn(move || {
                    let mut writer = Writer {
                        conn: writer_conn(url),
                        release: *release,
                        log,
                        rng: StdRng::seed_from_u64(seed * 100 + t as u64),
                        tally: Tally::default(),
                        thread: t,
                    };
                    start.wait();
                    let mut n = 0;
                    while n < OPS_PER_STAGE || !until.load(Ordering::SeqCst) {
                        writer.step(n);
                        n += 1;
                    }
                    *release = writer.release;
                    writer.tally
                })
            })
            .collect();
        start.wait();
        let out = work();
        until.store(true, Ordering::SeqCst);
        let tallies = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (out, tallies)
    })
}

/// A session that reads and updates a car of its own every few milliseconds with a one-second
/// `lock_timeout`, while `work` runs: the longest any of its statements took, and every failure.
fn probed<T>(url: &str, probe_car: i64, work: impl FnOnce() -> T) -> (T, Duration, Vec<String>) {
    let stop = AtomicBool::new(false);
    let worst = Mutex::new((Duration::ZERO, Vec::new()));
    let out = thread::scope(|scope| {
        scope.spawn(|| {
            let mut conn = writer_conn(url);
            exec(&mut conn, "SET lock_timeout = '1s'");
            while !stop.load(Ordering::SeqCst) {
                for sql in [
                    format!("SELECT make FROM cars WHERE id = {probe_car}"),
                    format!("UPDATE cars SET year = year WHERE id = {probe_car}"),
                ] {
                    let started = Instant::now();
                    let result = diesel::sql_query(&sql).execute(&mut conn);
                    let took = started.elapsed();
                    let mut worst = worst.lock().unwrap();
                    worst.0 = worst.0.max(took);
                    if let Err(e) = result {
                        // Its prepared plan outliving the view is not a lock.
                        if !e.to_string().contains("cached plan") {
                            worst.1.push(format!("{sql}: {e} after {took:?}"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(3));
            }
        });
        let out = work();
        stop.store(true, Ordering::SeqCst);
        out
    });
    let (longest, failures) = worst.into_inner().unwrap();
    (out, longest, failures)
}

/// Compares the database with the merged logs, row by row.
fn compare(conn: &mut PgConnection, logs: &[Log], extra: &Log, when: &str) {
    let expected: Log = logs
        .iter()
        .chain([extra])
        .flat_map(|log| log.iter().map(|(k, v)| (*k, v.clone())))
        .collect();
    let actual = database(conn);
    let mut problems = Vec::new();
    for (id, car) in &expected {
        match actual.get(id) {
            None => problems.push(format!("car {id} lost")),
            Some(row) if row != car => {
                problems.push(format!("car {id}: database {row:?}, log says {car:?}"))
            }
            _ => {}
        }
    }
    for id in actual.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("car {id} exists but no log has it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{when}: {} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

fn merged(all: Vec<Tally>) -> Tally {
    let mut tally = Tally::default();
    for t in all {
        for (op, n) in t.ops {
            *tally.ops.entry(op).or_default() += n;
        }
        tally.retries += t.retries;
        tally.rollovers += t.rollovers;
        tally.fresh_statements += t.fresh_statements;
    }
    tally
}

#[test]
fn cars_swap_under_live_writes_keeps_every_row_and_blocks_for_under_a_second() {
    swap_under_live_writes("swap_e2e", SEEDED, Release::Current);
}

/// Issue 12's "finalize needs no deploy": the same writers, built once against the release
/// that holds the keys as `WideInt`, run from before prepare to after finalize with no error
/// and no roll-over, and lose nothing.
#[test]
fn one_release_built_before_prepare_runs_through_finalize_unchanged() {
    swap_under_live_writes("swap_e2e_wide", 60_000, Release::Wide);
}

/// The swap under writers that start on `start`: the current release (rolling over to the next
/// at finalize) or the one release for the whole swap.
fn swap_under_live_writes(label: &str, seeded: i64, start: Release) {
    let fixture = FixtureCrate::cars(label, CARS_SWAP);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    let url = db.url.clone();
    let mut conn = db.conn();

    migrate_to(&url, &fixture, "create_tables");
    conn.batch_execute(
        &format!(
            "INSERT INTO cars (make, model, year, mileage)
             SELECT 'make' || g, 'model' || g % 50, 1990 + g % 30, 0 FROM generate_series(1, {seeded}) g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % {seeded}, 1 + g % 97 FROM generate_series(1, {seeded}) g;
             UPDATE cars c SET mileage = t.km FROM (SELECT car_id, sum(km)::int AS km FROM trips GROUP BY car_id) t WHERE t.car_id = c.id;
             ANALYZE cars; ANALYZE trips;"
        ),
    )
    .unwrap();
    let mut logs: Vec<Log> = vec![Log::new(); WRITERS];
    for (id, car) in database(&mut conn) {
        logs[id as usize % WRITERS].insert(id, car);
    }
    // The probe's own car: in no writer's log, compared like the others.
    let probe_car = seeded + 1_000_000;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO cars (id, make, model, year) VALUES ({probe_car}, 'probe', 'probe', 2000)"
        ),
    );
    let probe_log: Log = database(&mut conn)
        .into_iter()
        .filter(|(id, _)| *id == probe_car)
        .collect();
    let mut releases = [start; WRITERS];
    let mut all = Vec::new();

    // prepare: under traffic; the application is unchanged.
    let ((_, prepare_lock, prepare_failures), tallies) =
        stage(&url, &mut logs, &mut releases, 1, || {
            probed(&url, probe_car, || {
                migrate_to(&url, &fixture, "cars_bigint_prepare")
            })
        });
    all.extend(tallies);
    compare(&mut conn, &logs, &probe_log, "after prepare");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_views WHERE viewname = 'cars'"
        ),
        1
    );

    // move: killed with SIGKILL part-way, then resumed, all under traffic.
    let (resumed, tallies) = stage(&url, &mut logs, &mut releases, 2, || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swap_worker"))
            .args([&url, "cars_bigint"])
            .spawn()
            .unwrap();
        let mut probe = PgConnection::establish(&url).unwrap();
        let mut moved = 0;
        for _ in 0..3_000 {
            moved = count(&mut probe, "SELECT count(*) AS n FROM cars_new");
            if moved > 20_000 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(moved > 20_000, "the move child made no progress");
        assert!(
            count(&mut probe, "SELECT count(*) AS n FROM cars_old") > 0,
            "the move child finished before it was killed"
        );
        let options = MoveOptions {
            workers: 2,
            progress: ProgressMode::Silent,
            ..MoveOptions::default()
        };
        move_rows(&url, "cars_bigint", &options).unwrap()
    });
    all.extend(tallies);
    assert!(resumed.finished, "{resumed:?}");
    assert!(
        resumed.moved < seeded,
        "the resumed move started over: {resumed:?}"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars_old"), 0);
    let check = verify(&mut conn, "cars_bigint").unwrap();
    assert!(check.ok(), "{check:?}");
    compare(&mut conn, &logs, &probe_log, "after the move");

    // finalize: under traffic; the writers roll over to the next release once it lands.
    let ((_, finalize_lock, finalize_failures), tallies) =
        stage(&url, &mut logs, &mut releases, 3, || {
            probed(&url, probe_car, || {
                migrate_to(&url, &fixture, "cars_bigint_finalize")
            })
        });
    all.extend(tallies);
    // One more stage, all on the next release, to use the finalized table.
    let (_, tallies) = stage(&url, &mut logs, &mut releases, 4, || {});
    all.extend(tallies);
    compare(&mut conn, &logs, &probe_log, "after finalize");

    let tally = merged(all);
    println!(
        "writers: {tally:?}; longest probe statement: prepare {prepare_lock:?}, finalize {finalize_lock:?}"
    );
    assert!(
        prepare_failures.is_empty() && finalize_failures.is_empty(),
        "the probe was blocked: {prepare_failures:?} {finalize_failures:?}"
    );
    assert!(
        prepare_lock < Duration::from_secs(1),
        "prepare blocked for {prepare_lock:?}"
    );
    assert!(
        finalize_lock < Duration::from_secs(1),
        "finalize blocked for {finalize_lock:?}"
    );
    for op in ["insert", "drive", "rename", "save", "delete", "read"] {
        assert!(
            tally.ops.get(op).copied().unwrap_or(0) > 50,
            "too few {op}: {tally:?}"
        );
    }
    if start == Release::Current {
        assert_eq!(
            releases,
            [Release::Next; WRITERS],
            "every writer rolled over"
        );
    } else {
        assert_eq!(releases, [start; WRITERS]);
        assert_eq!(tally.rollovers, 0, "{tally:?}");
    }

    // The finalized shape: bigint keys, no leftovers, the sequence and the foreign key intact.
    for (table, column) in [("cars", "id"), ("trips", "car_id")] {
        assert_eq!(
            count(&mut conn, &format!(
                "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}' AND data_type = 'bigint' AND is_nullable = 'NO'"
            )),
            1,
            "{table}.{column} is bigint NOT NULL"
        );
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_temp', 'cars_new') OR relname LIKE '%_zmig'"),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_proc WHERE proname LIKE 'zmig_cars_bigint_%'"
        ),
        0
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_constraint WHERE conname = 'trips_car_id_fkey' AND convalidated AND confrelid = 'cars'::regclass"),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_indexes WHERE indexname IN ('cars_pkey', 'trips_car_id_idx')"),
        2
    );
    let highest = count(
        &mut conn,
        "SELECT max(id) AS n FROM cars WHERE id < 1000000",
    );
    let car = next::create_car(
        &mut conn,
        &next::NewCar {
            make: "after",
            model: "after",
            year: 2026,
        },
    )
    .unwrap();
    assert!(
        car.id > highest,
        "the sequence continues: {} after {highest}",
        car.id
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM information_schema.sequences WHERE sequence_name = 'cars_id_seq' AND data_type = 'bigint'"),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_depend d JOIN pg_class s ON s.oid = d.objid WHERE s.relname = 'cars_id_seq' AND d.refobjid = 'cars'::regclass AND d.deptype = 'a'"),
        1,
        "the sequence is owned by cars.id"
    );
}
