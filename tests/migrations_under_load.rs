//! Generated migrations get their locks under ordinary load through any runner (issue 11,
//! item 11): the real `diesel migration run` and `diesel migration revert` apply every folder
//! of both strategies, and revert every one that can be reverted online (all but contract's,
//! see below; finalize cannot be), ten rounds in a row, while four writers keep the tables
//! busy. One of the writers holds its transactions for longer than the migrations'
//! `lock_timeout` now and then (a report, a slow request), which is what made a single
//! `LOCK TABLE` fail "in one of two runs": a migration that waits for its lock in a loop of
//! short attempts, each in a subtransaction that holds nothing once it gives up, gets it in a
//! gap. A probe measures what the traffic feels: the longest a plain read and a plain write of
//! its own row waited must stay under a second, however long the migration waited.
//!
//! `ZMIG_LOCK_ROUNDS` sets the number of rounds (10 by default).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use rand::Rng;
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::swap::{self, move_rows, move_rows_back};
use zmig_runtime::verify::verify;
use zmig_tests::diesel_workspace::diesel_on_path;
use zmig_tests::{fixtures, FixtureCrate, TestDb};

/// Rows the writers pick from; the probe's own row is id 1, which no writer touches.
const ROWS: i32 = 2_000;
/// How long the slow writer holds a transaction: longer than the migrations' `lock_timeout`.
const SLOW_TRANSACTION: Duration = Duration::from_millis(1_300);
/// How often the slow writer starts one, from the start of the last.
const SLOW_EVERY: Duration = Duration::from_millis(2_000);
/// The longest the probe may wait for one statement.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// The runtime's tasks, quietly.
fn silent() -> BackfillOptions {
    BackfillOptions {
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    }
}

fn rounds() -> usize {
    std::env::var("ZMIG_LOCK_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

/// A folder for the diesel CLI's migrations, filled one generated folder at a time, so each
/// `diesel migration run` applies exactly the next phase (the runtime's task comes between).
struct Deploy {
    dir: PathBuf,
    generated: Vec<PathBuf>,
    url: String,
}

impl Deploy {
    fn new(fixture: &FixtureCrate, db: &TestDb, label: &str) -> Deploy {
        assert!(
            diesel_on_path(),
            "the diesel CLI is not on PATH (.ci/run installs it)"
        );
        let dir = std::env::temp_dir().join(format!("zmig-load-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut generated: Vec<PathBuf> = fs::read_dir(fixture.migrations_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        generated.sort();
        let first = generated.remove(0);
        copy_folder(&first, &dir);
        let deploy = Deploy {
            dir,
            generated,
            url: db.url.clone(),
        };
        deploy.diesel(&["migration", "run"]);
        deploy
    }

    /// `diesel <args> --migration-dir … --database-url …`, which must succeed.
    fn diesel(&self, args: &[&str]) -> String {
        let output = Command::new("diesel")
            .args(args)
            .arg("--migration-dir")
            .arg(&self.dir)
            .arg("--database-url")
            .arg(&self.url)
            .current_dir(&self.dir)
            .env_remove("DIESEL_CONFIG_FILE")
            .env_remove("MIGRATION_DIRECTORY")
            .output()
            .expect("running diesel");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "diesel {args:?} failed under load:\n{stdout}{stderr}"
        );
        stdout
    }

    /// Adds the generated folder of `phase` and runs `diesel migration run`.
    fn run(&self, phase: &str) {
        let folder = self
            .generated
            .iter()
            .find(|f| f.to_string_lossy().ends_with(&format!("_{phase}")))
            .unwrap_or_else(|| panic!("no folder for {phase}"));
        copy_folder(folder, &self.dir);
        let out = self.diesel(&["migration", "run"]);
        assert!(out.contains(&format!("_{phase}")), "{phase}: {out}");
    }

    /// `diesel migration revert --number <n>`: the last `n` phases, newest first.
    /// The reverted folders leave the directory, so the next `run` applies only its own.
    fn revert(&self, n: usize) {
        let number = n.to_string();
        let out = self.diesel(&["migration", "revert", "--number", &number]);
        assert_eq!(out.matches("Rolling back").count(), n, "{out}");
        let mut present: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        present.sort();
        for folder in present.iter().rev().take(n) {
            let name = folder.file_name().unwrap().to_string_lossy().into_owned();
            assert!(out.contains(&name), "{name} was not reverted: {out}");
            fs::remove_dir_all(folder).unwrap();
        }
    }
}

impl Drop for Deploy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn copy_folder(folder: &Path, into: &Path) {
    let target = into.join(folder.file_name().unwrap());
    fs::create_dir_all(&target).unwrap();
    for file in fs::read_dir(folder).unwrap().flatten() {
        fs::copy(file.path(), target.join(file.file_name())).unwrap();
    }
}

/// Four writers and a probe on `tables` (`(table, column)`: each writer updates `column` of a
/// random row other than the probe's); writer 0 holds a transaction open for
/// [`SLOW_TRANSACTION`] every [`SLOW_EVERY`]. Stops and reports when dropped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Whether the probe's waits count: not while a runtime task (backfill, move) runs, whose
    /// batches wait for the writers' row locks by design, which is not what this test measures.
    probing: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// The probe's longest wait and what it was doing.
    longest: Arc<Mutex<(Duration, String)>>,
    writes: Arc<Mutex<u64>>,
    slow: Arc<Mutex<u64>>,
}

impl Load {
    fn start(url: &str, tables: &'static [(&'static str, &'static str)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let probing = Arc::new(AtomicBool::new(true));
        let longest = Arc::new(Mutex::new((Duration::ZERO, String::new())));
        let writes = Arc::new(Mutex::new(0));
        let slow = Arc::new(Mutex::new(0));
        let mut threads = Vec::new();
        for writer in 0..4 {
            let (url, stop, writes, slow) =
                (url.to_owned(), stop.clone(), writes.clone(), slow.clone());
            threads.push(thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let mut rng = rand::thread_rng();
                // The first transaction is a slow one, then one every SLOW_EVERY.
                let mut last_slow = Instant::now() - SLOW_EVERY;
                while !stop.load(Ordering::Relaxed) {
                    let (table, column) = tables[rng.gen_range(0..tables.len())];
                    let id = rng.gen_range(2..=ROWS);
                    let hold = if writer == 0 && last_slow.elapsed() >= SLOW_EVERY {
                        last_slow = Instant::now();
                        *slow.lock().unwrap() += 1;
                        SLOW_TRANSACTION
                    } else {
                        Duration::from_millis(rng.gen_range(0..30))
                    };
                    conn.batch_execute(&format!(
                        "BEGIN; UPDATE {table} SET {column} = {column} WHERE id = {id}; \
                         SELECT pg_sleep({}); COMMIT;",
                        hold.as_secs_f64()
                    ))
                    .unwrap_or_else(|e| panic!("writer {writer} on {table}: {e}"));
                    *writes.lock().unwrap() += 1;
                }
            }));
        }
        {
            let (url, stop, longest, probing) = (
                url.to_owned(),
                stop.clone(),
                longest.clone(),
                probing.clone(),
            );
            threads.push(thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    for (table, column) in tables {
                        for sql in [
                            format!("SELECT 1 FROM {table} LIMIT 1"),
                            format!("UPDATE {table} SET {column} = {column} WHERE id = 1"),
                        ] {
                            let counts = probing.load(Ordering::SeqCst);
                            let started = Instant::now();
                            conn.batch_execute(&sql)
                                .unwrap_or_else(|e| panic!("probe {sql}: {e}"));
                            let waited = started.elapsed();
                            if !(counts && probing.load(Ordering::SeqCst)) {
                                continue;
                            }
                            let mut longest = longest.lock().unwrap();
                            if waited > longest.0 {
                                *longest = (waited, sql);
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        Load {
            stop,
            probing,
            threads,
            longest,
            writes,
            slow,
        }
    }

    /// Runs `task` (a runtime task) with the probe's waits not counted.
    fn unprobed<T>(&self, task: impl FnOnce() -> T) -> T {
        self.probing.store(false, Ordering::SeqCst);
        let result = task();
        self.probing.store(true, Ordering::SeqCst);
        result
    }

    /// Stops the writers and the probe; the probe's longest wait, and the writes made.
    fn finish(mut self) -> ((Duration, String), u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let longest = self.longest.lock().unwrap().clone();
        let writes = *self.writes.lock().unwrap();
        let slow = *self.slow.lock().unwrap();
        (longest, writes, slow)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn assert_probe(label: &str, load: Load) {
    let ((longest, what), writes, slow) = load.finish();
    println!(
        "{label}: {writes} writes ({slow} held for {SLOW_TRANSACTION:?}); \
         the probe waited at most {longest:?} ({what})"
    );
    assert!(slow > 0, "{label}: the slow writer never ran");
    assert!(
        longest < PROBE_LIMIT,
        "{label}: the probe waited {longest:?} for `{what}`"
    );
}

/// Each round on a database of its own: every phase up to write_new, reverted, applied again,
/// then contract. Contract's down.sql is the one migration left out: it refills the old columns
/// of every owner in one `UPDATE`, whose row locks wait for (and then hold up) the writers, so
/// under this load it can outlast its `lock_timeout`; it is an emergency way back, to be run in a
/// quiet moment (README, "Advance").
#[test]
fn the_extract_applies_and_reverts_through_the_diesel_cli_under_load() {
    let fixture = fixtures::caterers("load_extract");
    fixture.generate(false).unwrap();
    let options = silent();
    let rounds = rounds();
    for round in 0..rounds {
        let db = TestDb::new("load_extract");
        let deploy = Deploy::new(&fixture, &db, "extract");
        db.conn()
            .batch_execute(&format!(
                "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
                 SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA'
                 FROM generate_series(1, {ROWS}) g"
            ))
            .unwrap();
        let load = Load::start(&db.url, &[("caterers", "name")]);
        for pass in 0..2 {
            deploy.run("expand");
            deploy.run("dual_write");
            load.unprobed(|| backfill(&db.url, "caterers_addresses", &options))
                .unwrap_or_else(|e| panic!("round {round}: backfill: {e}"));
            let report = verify(&mut db.conn(), "caterers_addresses").unwrap();
            assert!(report.ok(), "round {round}: {report:?}");
            deploy.run("write_new");
            if pass == 0 {
                deploy.revert(3);
            }
        }
        deploy.run("contract");
        assert_probe(&format!("extract round {round}"), load);
    }
}

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

/// finalize cannot be reverted, so each round of the swap starts from a database of its own:
/// prepare, a move, the move back (the way back online: the revert then moves only what was
/// inserted since under its lock, and refuses past 10,000 rows left), prepare reverted and
/// applied again, the move, finalize.
#[test]
fn the_swap_applies_and_reverts_through_the_diesel_cli_under_load() {
    let fixture = FixtureCrate::cars("load_swap", CARS_SWAP);
    fixture.generate(false).unwrap();
    let options = silent();
    let rounds = rounds();
    for round in 0..rounds {
        let db = TestDb::new("load_swap");
        let deploy = Deploy::new(&fixture, &db, "swap");
        db.conn()
            .batch_execute(&format!(
                "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, {ROWS}) g;
                 INSERT INTO trips (car_id, km) SELECT g, 10 FROM generate_series(1, {ROWS}) g;"
            ))
            .unwrap();
        let load = Load::start(&db.url, &[("cars", "make"), ("trips", "km")]);
        deploy.run("prepare");
        load.unprobed(|| move_rows(&db.url, "cars_bigint", &options))
            .unwrap_or_else(|e| panic!("round {round}: move: {e}"));
        load.unprobed(|| move_rows_back(&db.url, "cars_bigint", &options))
            .unwrap_or_else(|e| panic!("round {round}: move back: {e}"));
        deploy.revert(1);
        deploy.run("prepare");
        load.unprobed(|| move_rows(&db.url, "cars_bigint", &options))
            .unwrap_or_else(|e| panic!("round {round}: move: {e}"));
        let check = swap::verify(&mut db.conn(), "cars_bigint").unwrap();
        assert!(check.ok(), "round {round}: {check:?}");
        deploy.run("finalize");
        assert_probe(&format!("swap round {round}"), load);
    }
}
