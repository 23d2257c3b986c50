//! The run log (`zmig_runtime::run_log`, issue 12 item 3), on a real database: every run of an
//! extract's backfill and of a swap's move leaves its events in `zmig_run_log`, `status` prints
//! the last run's, and a `tracing` subscriber receives the same events.
//!
//! - A backfill and a move are each paused and resumed from another connection while they run,
//!   stopped part way (the `stop` flag), run again and failed by a worker whose session the
//!   server ended (`pg_terminate_backend`), and run once more to the end: the log holds, in
//!   order, started, summaries, paused, resumed, stopped; started, the error (naming the
//!   worker), stopped; started, finished; each end with its run's totals, which the summaries
//!   add up to and which add up to every row once.
//! - Backing off under lock strain and yielding to live traffic are logged as they begin and
//!   end, with the reason.
//! - A run that starts keeps only the last 20 runs of its migration.
//!
//! Waits poll the database for a condition a bounded number of times.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zmig_runtime::backfill::{self, backfill, set_paused, BackfillOptions, ProgressMode};
use zmig_runtime::run_log::tracing::field::{Field, Visit};
use zmig_runtime::run_log::tracing::{self, span, Event, Metadata, Subscriber};
use zmig_runtime::run_log::{self, RunEvent, KEEP_RUNS};
use zmig_runtime::swap::{self, move_rows, MoveOptions};
use zmig_runtime::Error;
use zmig_tests::waits::{poll_until, SetOnDrop};
use zmig_tests::{apply_first, count, exec, fixtures, migrate_to, run_cli, FixtureCrate, TestDb};

const EXTRACT: &str = "caterers_addresses";
const SWAP: &str = "cars_bigint";
const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";
const OWNERS: i64 = 30_000;
const CARS: i64 = 9_000;
const TEMP_CARS: i64 = 200;

/// A `tracing` event as the test's subscriber saw it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    target: String,
    level: String,
    fields: HashMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.fields
            .insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), value.to_owned());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .insert(field.name().to_owned(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .insert(field.name().to_owned(), value.to_string());
    }
}

/// The smallest subscriber there is: every event, kept; spans ignored.
struct Collector(Arc<Mutex<Vec<Seen>>>);

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            target: event.metadata().target().to_owned(),
            level: event.metadata().level().to_string(),
            fields: HashMap::new(),
        };
        event.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Runs `body` with the collector as this thread's subscriber; returns what it returned and the
/// events of target `zmig` it received.
fn traced<T>(body: impl FnOnce() -> T) -> (T, Vec<Seen>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let result = tracing::subscriber::with_default(Collector(seen.clone()), body);
    let seen = seen.lock().unwrap().clone();
    (
        result,
        seen.into_iter().filter(|s| s.target == "zmig").collect(),
    )
}

/// A fixture crate that `cargo metadata` can read, for `status` on the command line.
fn with_manifest(fixture: FixtureCrate, label: &str) -> (FixtureCrate, PathBuf) {
    let manifest = fixture.make_cargo_package(&format!("runtime-log-{label}"));
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    (fixture, manifest)
}

/// `cargo xtask zmig status` on the fixture and the database.
fn status(manifest: &Path, url: &str) -> String {
    let (ok, output) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "status",
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--database-url",
        url,
    ]);
    assert!(ok, "{output}");
    output
}

/// Caterers with `owners` owners, expand and dual_write applied.
fn caterers_ready(label: &str, owners: i64) -> (TestDb, FixtureCrate, PathBuf) {
    let (fixture, manifest) = with_manifest(fixtures::caterers(label), label);
    let db = TestDb::new(label);
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
             SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA'
             FROM generate_series(1, {owners}) g"
        ),
    );
    apply_first(&mut conn, &fixture, 2);
    (db, fixture, manifest)
}

/// Cars and trips, the swap's prepare applied, and cars inserted since (in temp).
fn cars_ready(label: &str) -> (TestDb, FixtureCrate, PathBuf) {
    let (fixture, manifest) = with_manifest(FixtureCrate::cars(label, CARS_SWAP), label);
    let db = TestDb::new(label);
    migrate_to(&db.url, &fixture, "create_tables");
    db.conn()
        .batch_execute(&format!(
            "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, {CARS}) AS g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % 1000, 10 FROM generate_series(1, 2000) AS g;"
        ))
        .unwrap();
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    exec(
        &mut db.conn(),
        &format!("INSERT INTO cars (make, model, year) SELECT 'late', 'model', 2024 FROM generate_series(1, {TEMP_CARS})"),
    );
    (db, fixture, manifest)
}

/// Small fixed batches with a pause after each, so a run lasts long enough to be paused,
/// stopped and failed while it runs; not yielding, since the test's own polling is traffic.
fn slow(workers: usize, stop: &Arc<AtomicBool>) -> BackfillOptions {
    BackfillOptions {
        workers,
        batch_size: 100,
        min_batch_size: 100,
        max_batch_size: 100,
        pause: Duration::from_millis(10),
        yield_to_traffic: false,
        progress: ProgressMode::Silent,
        stop: Some(stop.clone()),
        ..BackfillOptions::default()
    }
}

/// Every event of `name` kept, grouped by run, in order.
fn runs(conn: &mut PgConnection, name: &str) -> Vec<Vec<RunEvent>> {
    let mut runs: Vec<Vec<RunEvent>> = Vec::new();
    for event in run_log::recent(conn, name, 10_000).unwrap() {
        match runs.last_mut() {
            Some(run) if run[0].run == event.run => run.push(event),
            _ => runs.push(vec![event]),
        }
    }
    runs
}

/// The latest run of `name` (0 before any).
fn latest_run(conn: &mut PgConnection, name: &str) -> i64 {
    run_log::last_run(conn, name, 1)
        .unwrap()
        .map_or(0, |run| run.run)
}

/// Whether a run of `name` later than `after` has logged an event of `kind`.
fn logged(conn: &mut PgConnection, name: &str, after: i64, kind: &str) -> bool {
    run_log::recent(conn, name, 10_000)
        .unwrap()
        .iter()
        .any(|e| e.run > after && e.kind == kind)
}

/// The kinds of a run's events, summaries left out.
fn kinds_but_summaries(run: &[RunEvent]) -> Vec<&str> {
    run.iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "batches")
        .collect()
}

/// Checks a run's summaries and its end: a summary before each event in `summarized_before`,
/// and the summaries' rows and batches adding up to the end's totals, which are returned.
fn check_totals(run: &[RunEvent], summarized_before: &[&str]) -> (i64, i64) {
    let end = run.last().unwrap();
    assert!(end.kind == "finished" || end.kind == "stopped", "{run:#?}");
    let summaries: Vec<&RunEvent> = run.iter().filter(|e| e.kind == "batches").collect();
    let rows: i64 = summaries.iter().map(|e| e.rows.unwrap()).sum();
    let batches: i64 = summaries.iter().map(|e| e.batches.unwrap()).sum();
    assert_eq!(
        (Some(rows), Some(batches)),
        (end.rows, end.batches),
        "{run:#?}"
    );
    for kind in summarized_before {
        let at = run.iter().position(|e| e.kind == *kind).unwrap();
        assert!(
            run[..at].iter().any(|e| e.kind == "batches"),
            "no summary before {kind}: {run:#?}"
        );
    }
    (end.rows.unwrap(), end.batches.unwrap())
}

/// The subscriber saw the run's events: the same kinds in the same order, for the same run,
/// with the same totals, and errors as errors.
fn check_traced(seen: &[Seen], run: &[RunEvent], name: &str) {
    let kinds: Vec<&str> = seen.iter().filter_map(|s| s.field("kind")).collect();
    let logged: Vec<&str> = run.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, logged, "{seen:#?}");
    let id = run[0].run.to_string();
    for (seen, event) in seen.iter().zip(run) {
        assert_eq!(seen.field("migration"), Some(name), "{seen:?}");
        assert_eq!(seen.field("run"), Some(id.as_str()), "{seen:?}");
        assert_eq!(
            seen.field("rows").map(str::to_owned),
            event.rows.map(|r| r.to_string()),
            "{seen:?}"
        );
        assert_eq!(
            seen.field("worker").map(str::to_owned),
            event.worker.clone(),
            "{seen:?}"
        );
        assert_eq!(
            seen.field("message"),
            Some(event.detail.as_str()),
            "{seen:?}"
        );
        let level = if event.kind == "error" {
            "ERROR"
        } else {
            "INFO"
        };
        assert_eq!(seen.level, level, "{seen:?}");
    }
}

/// `status` shows the last run: how it ended and each of its events with its time.
fn check_status(output: &str, run: &[RunEvent], task: &str) {
    let header = format!("  last {task:<16} run {}: ", run[0].run);
    let end = run.last().unwrap();
    let ended = format!(
        "{header}{} at {} UTC",
        end.kind,
        end.at.format("%Y-%m-%d %H:%M:%S")
    );
    assert!(output.contains(&ended), "no `{ended}` in:\n{output}");
    let shown = &run[..run.len().min(10)];
    assert!(run.len() <= 10, "more events than status shows: {run:#?}");
    for event in shown {
        let worker = event
            .worker
            .as_ref()
            .map(|w| format!("worker {w}: "))
            .unwrap_or_default();
        let line = format!(
            "\n    {}  {:<13}  {worker}{}\n",
            event.at.format("%Y-%m-%d %H:%M:%S"),
            event.kind,
            event.detail
        );
        assert!(output.contains(&line), "no `{line}` in:\n{output}");
    }
}

/// Ends the session of one of `name`'s workers as an operator would, once one is seen that
/// `pick` (a `LIKE` pattern on its query) finds; the coordinator, whose last statement wrote the
/// log, is left alone.
fn terminate_a_worker(conn: &mut PgConnection, pick: &str) {
    poll_until("a worker to end", || {
        count(
            conn,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM (
                     SELECT pid FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name LIKE 'zmig % worker'
                       AND query NOT LIKE '%zmig_run_log%' AND query LIKE '{pick}'
                     LIMIT 1) AS w"
            ),
        ) == 1
    });
}

#[test]
fn a_backfill_logs_its_runs_pauses_error_and_ends() {
    let (db, _fixture, manifest) = caterers_ready("log_backfill", OWNERS);
    let mut conn = db.conn();
    let copied = |conn: &mut PgConnection| {
        backfill::status(conn, EXTRACT)
            .unwrap()
            .map_or(0, |s| s.owners)
    };

    // Run 1: paused and resumed from this connection while it runs, then stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (first, first_seen) = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let run = s.spawn(|| traced(|| backfill(&db.url, EXTRACT, &slow(2, &stop))));
        poll_until("1,000 owners copied", || copied(&mut conn) >= 1_000);
        set_paused(&mut conn, EXTRACT, true).unwrap();
        poll_until("the log to say paused", || {
            logged(&mut conn, EXTRACT, 0, "paused")
        });
        let paused_at = copied(&mut conn);
        set_paused(&mut conn, EXTRACT, false).unwrap();
        poll_until("the log to say resumed", || {
            logged(&mut conn, EXTRACT, 0, "resumed")
        });
        poll_until("500 more owners copied", || {
            copied(&mut conn) >= paused_at + 500
        });
        stop.store(true, Ordering::SeqCst);
        run.join().unwrap()
    });
    let first = first.unwrap();
    assert!(!first.finished, "stopped too late: {first:?}");
    let after_first = latest_run(&mut conn, EXTRACT);

    // Run 2: a worker's session ended by the server.
    let stop = Arc::new(AtomicBool::new(false));
    let (second, second_seen) = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let run = s.spawn(|| traced(|| backfill(&db.url, EXTRACT, &slow(2, &stop))));
        poll_until("the second run to copy 500 owners", || {
            copied(&mut conn) >= first.owners + 500
        });
        terminate_a_worker(&mut conn, "%");
        run.join().unwrap()
    });
    let error = second.expect_err("a worker lost its session");
    assert!(
        matches!(error, Error::WorkerConnectionLost { .. }),
        "{error}"
    );
    let after_error = status(&manifest, &db.url);
    println!("{after_error}");

    // Run 3: to the end.
    let (third, third_seen) = traced(|| {
        backfill(
            &db.url,
            EXTRACT,
            &slow(2, &Arc::new(AtomicBool::new(false))),
        )
    });
    let third = third.unwrap();
    assert!(third.finished, "{third:?}");
    let finished = status(&manifest, &db.url);
    println!("{finished}");

    let runs = runs(&mut conn, EXTRACT);
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs[0][0].run < runs[1][0].run && runs[1][0].run < runs[2][0].run);
    assert_eq!(runs[0][0].run, after_first);
    assert_eq!(
        kinds_but_summaries(&runs[0]),
        ["started", "paused", "resumed", "stopped"]
    );
    assert_eq!(
        kinds_but_summaries(&runs[1]),
        ["started", "error", "stopped"]
    );
    assert_eq!(kinds_but_summaries(&runs[2]), ["started", "finished"]);
    for run in &runs {
        assert!(
            run.iter()
                .all(|e| e.migration == EXTRACT && e.task == "backfill"),
            "{run:#?}"
        );
    }

    // What each event says.
    let started = &runs[0][0];
    assert!(
        started.detail.starts_with("2 workers on ")
            && started.detail.contains(
                "batch size 100 (adapting within 100..100 towards 200 ms), pause 10 ms, not yielding to live traffic"
            )
            && started.detail.ends_with(&format!("; from the first of {OWNERS} keys")),
        "{started:?}"
    );
    assert!(
        runs[1][0].detail.contains("; resumes with "),
        "{:?}",
        runs[1][0]
    );
    let error = runs[1].iter().find(|e| e.kind == "error").unwrap();
    let worker = error.worker.as_deref().unwrap();
    assert!(
        worker.contains(&format!(":{}:", std::process::id()))
            && ["1", "2"].iter().any(|n| worker.ends_with(&format!(":{n}"))
                && error
                    .detail
                    .starts_with(&format!("worker {n} lost its connection"))),
        "{error:?}"
    );
    assert!(
        error.detail.contains("lost its connection to the database")
            && !error.detail.contains('\n'),
        "{error:?}"
    );
    assert!(
        runs[1]
            .last()
            .unwrap()
            .detail
            .contains("stopped by the error above"),
        "{:?}",
        runs[1].last()
    );
    assert!(
        runs[2].last().unwrap().detail.contains("every key walked"),
        "{:?}",
        runs[2].last()
    );

    // Totals: each end's are its run's, the summaries add up to them, and the three runs read
    // every owner once.
    let (rows, batches) = check_totals(&runs[0], &["paused", "stopped"]);
    assert_eq!((rows, batches as u64), (first.owners, first.batches));
    let (second_rows, _) = check_totals(&runs[1], &["error"]);
    let (rows, batches) = check_totals(&runs[2], &["finished"]);
    assert_eq!((rows, batches as u64), (third.owners, third.batches));
    assert_eq!(first.owners + second_rows + third.owners, OWNERS);

    // The same events reached tracing, from the thread that called backfill.
    check_traced(&first_seen, &runs[0], EXTRACT);
    check_traced(&second_seen, &runs[1], EXTRACT);
    check_traced(&third_seen, &runs[2], EXTRACT);

    // status shows the last run, each time.
    check_status(&after_error, &runs[1], "backfill");
    check_status(&finished, &runs[2], "backfill");
    assert!(
        !finished.contains(&format!("run {}:", runs[1][0].run)),
        "{finished}"
    );
}

#[test]
fn a_move_logs_its_runs_pauses_error_and_ends() {
    let (db, _fixture, manifest) = cars_ready("log_move");
    let mut conn = db.conn();
    let moved = |conn: &mut PgConnection| count(conn, "SELECT count(*) AS n FROM cars_new");
    let options = |stop: &Arc<AtomicBool>| -> MoveOptions { slow(1, stop) };

    // Run 1: paused and resumed while it runs, then stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (first, first_seen) = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let run = s.spawn(|| traced(|| move_rows(&db.url, SWAP, &options(&stop))));
        poll_until("1,000 cars moved", || moved(&mut conn) >= 1_000);
        set_paused(&mut conn, SWAP, true).unwrap();
        poll_until("the log to say paused", || {
            logged(&mut conn, SWAP, 0, "paused")
        });
        let paused_at = moved(&mut conn);
        set_paused(&mut conn, SWAP, false).unwrap();
        poll_until("the log to say resumed", || {
            logged(&mut conn, SWAP, 0, "resumed")
        });
        poll_until("500 more cars moved", || {
            moved(&mut conn) >= paused_at + 500
        });
        stop.store(true, Ordering::SeqCst);
        run.join().unwrap()
    });
    let first = first.unwrap();
    assert!(!first.finished, "stopped too late: {first:?}");

    // Run 2: the mover's session ended by the server.
    let stop = Arc::new(AtomicBool::new(false));
    let (second, second_seen) = thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        let run = s.spawn(|| traced(|| move_rows(&db.url, SWAP, &options(&stop))));
        poll_until("the second run to move 500 cars", || {
            moved(&mut conn) >= first.moved + 500
        });
        terminate_a_worker(&mut conn, "%zmig_cars_bigint_move\"%");
        run.join().unwrap()
    });
    let error = second.expect_err("the mover lost its session");
    assert!(
        matches!(error, Error::WorkerConnectionLost { .. }),
        "{error}"
    );
    let after_error = status(&manifest, &db.url);
    println!("{after_error}");

    // Run 3: to the end.
    let (third, third_seen) =
        traced(|| move_rows(&db.url, SWAP, &options(&Arc::new(AtomicBool::new(false)))));
    let third = third.unwrap();
    assert!(third.finished, "{third:?}");
    let finished = status(&manifest, &db.url);
    println!("{finished}");

    let runs = runs(&mut conn, SWAP);
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert_eq!(
        kinds_but_summaries(&runs[0]),
        ["started", "paused", "resumed", "stopped"]
    );
    assert_eq!(
        kinds_but_summaries(&runs[1]),
        ["started", "error", "stopped"]
    );
    assert_eq!(kinds_but_summaries(&runs[2]), ["started", "finished"]);
    for run in &runs {
        assert!(
            run.iter().all(|e| e.migration == SWAP && e.task == "move"),
            "{run:#?}"
        );
    }
    assert!(
        runs[0][0].detail.starts_with("1 worker on ")
            && runs[0][0]
                .detail
                .contains("; 9,200 rows left (old 9,000, temp 200), 0 in new"),
        "{:?}",
        runs[0][0]
    );
    let error = runs[1].iter().find(|e| e.kind == "error").unwrap();
    assert!(
        error.worker.as_deref().is_some_and(|w| w.ends_with(":2"))
            && error
                .detail
                .starts_with("worker 2 lost its connection to the database"),
        "the mover (worker 2; 1 is the upkeep): {error:?}"
    );
    assert!(
        runs[2].last().unwrap().detail.contains("old table empty"),
        "{:?}",
        runs[2].last()
    );

    let (rows, batches) = check_totals(&runs[0], &["paused", "stopped"]);
    assert_eq!((rows, batches as u64), (first.moved, first.batches));
    let (second_rows, _) = check_totals(&runs[1], &["error"]);
    let (rows, batches) = check_totals(&runs[2], &["finished"]);
    assert_eq!((rows, batches as u64), (third.moved, third.batches));
    assert_eq!(first.moved + second_rows + third.moved, CARS + TEMP_CARS);

    check_traced(&first_seen, &runs[0], SWAP);
    check_traced(&second_seen, &runs[1], SWAP);
    check_traced(&third_seen, &runs[2], SWAP);

    check_status(&after_error, &runs[1], "move");
    check_status(&finished, &runs[2], "move");
    assert!(swap::status(&mut conn, SWAP).unwrap().is_some());
}

#[test]
fn backing_off_and_yielding_are_logged_with_their_reason() {
    let (db, _fixture, _manifest) = caterers_ready("log_strain", 3_000);
    let mut conn = db.conn();

    // Strain: a session waits on a lock another holds; zmig's limit here is none at all.
    exec(&mut conn, "CREATE TABLE busy (id int)");
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let url = db.url.clone();
    let waiter = thread::spawn(move || {
        PgConnection::establish(&url)
            .unwrap()
            .batch_execute("SELECT count(*) FROM busy")
            .unwrap();
    });
    poll_until("a session waiting over half a second", || {
        backfill::database_strain(&mut conn).unwrap().lock_waiters >= 1
    });
    let (report, seen) = thread::scope(|s| {
        // Dropped (its lock released) should the test fail while the run backs off.
        let mut holder = holder;
        let run = s.spawn(|| {
            traced(|| {
                backfill(
                    &db.url,
                    EXTRACT,
                    &BackfillOptions {
                        max_lock_waiters: 0,
                        yield_to_traffic: false,
                        progress: ProgressMode::Silent,
                        ..BackfillOptions::default()
                    },
                )
            })
        });
        poll_until("the log to say it backs off", || {
            logged(&mut conn, EXTRACT, 0, "backoff_began")
        });
        holder.batch_execute("COMMIT;").unwrap();
        run.join().unwrap()
    });
    waiter.join().unwrap();
    let report = report.unwrap();
    assert!(report.finished && report.backoffs > 0, "{report:?}");
    let strained = runs(&mut conn, EXTRACT).pop().unwrap();
    assert_eq!(
        kinds_but_summaries(&strained),
        ["started", "backoff_began", "backoff_ended", "finished"]
    );
    let began = &strained[1];
    assert!(
        began.detail.contains(
            "the database is under strain: 1 sessions waiting over 0.5 s for a lock (more than 0)"
        ),
        "{began:?}"
    );
    assert!(
        strained[2]
            .detail
            .contains("looks found the database under strain"),
        "{:?}",
        strained[2]
    );
    assert!(
        seen.iter()
            .any(|s| s.level == "WARN" && s.field("kind") == Some("backoff_began")),
        "{seen:#?}"
    );

    // Live traffic: a session busy running a statement the whole time, and the run walks every
    // key again (`again`) yielding to it.
    let mut sleeper = db.conn();
    let pid = count(&mut sleeper, "SELECT pg_backend_pid()::bigint AS n");
    let sleeping = thread::spawn(move || {
        // Cancelled once the run is over.
        let _ = sleeper.batch_execute("SELECT pg_sleep(60)");
    });
    poll_until("the sleeper to be active", || {
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'"
            ),
        ) == 1
    });
    let yielded = backfill(
        &db.url,
        EXTRACT,
        &BackfillOptions {
            again: true,
            batch_size: 100,
            progress: ProgressMode::Silent,
            ..BackfillOptions::default()
        },
    );
    exec(&mut conn, &format!("SELECT pg_cancel_backend({pid})"));
    sleeping.join().unwrap();
    let yielded = yielded.unwrap();
    assert!(yielded.finished && yielded.yields > 0, "{yielded:?}");
    let run = runs(&mut conn, EXTRACT).pop().unwrap();
    assert_eq!(
        kinds_but_summaries(&run),
        ["started", "yield_began", "yield_ended", "finished"]
    );
    assert!(
        run[0]
            .detail
            .contains("yielding to live traffic (50 ms batches, pause 2× the batch)")
            && run[0]
                .detail
                .ends_with(", again; from the first of 3000 keys"),
        "{:?}",
        run[0]
    );
    assert!(
        run[1].detail.contains("other session")
            && run[1]
                .detail
                .contains("of the database busy: short batches, each followed by a pause"),
        "{:?}",
        run[1]
    );
    assert!(
        run[2]
            .detail
            .contains(&format!("{} batches followed by a yield", yielded.yields)),
        "{:?}",
        run[2]
    );
}

#[test]
fn a_run_keeps_only_the_last_20_runs_of_its_migration() {
    let (db, _fixture, manifest) = caterers_ready("log_keep", 100);
    let mut conn = db.conn();
    // Each call stopped before its first batch: a run of two events.
    let stopped = BackfillOptions {
        stop: Some(Arc::new(AtomicBool::new(true))),
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    };
    backfill(&db.url, EXTRACT, &stopped).unwrap();
    let first = latest_run(&mut conn, EXTRACT);
    for _ in 0..KEEP_RUNS + 2 {
        backfill(&db.url, EXTRACT, &stopped).unwrap();
    }
    let kept = runs(&mut conn, EXTRACT);
    assert_eq!(kept.len() as i64, KEEP_RUNS);
    assert!(kept[0][0].run > first, "the oldest runs were kept");
    for run in &kept {
        assert_eq!(kinds_but_summaries(run), ["started", "stopped"], "{run:#?}");
        let stopped = &run[1];
        assert_eq!((stopped.rows, stopped.batches), (Some(0), Some(0)));
    }
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT run) AS n FROM zmig_run_log"
        ),
        KEEP_RUNS
    );
    // recent and last_run read what is kept.
    let recent = run_log::recent(&mut conn, EXTRACT, 3).unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[2], kept.last().unwrap()[1]);
    let last = run_log::last_run(&mut conn, EXTRACT, 10).unwrap().unwrap();
    assert_eq!(last.events, kept.last().unwrap().clone());
    assert_eq!(last.omitted, 0);
    assert_eq!(last.end().map(|e| e.kind.as_str()), Some("stopped"));
    let shown = status(&manifest, &db.url);
    assert!(
        shown.contains(&format!(
            "  last backfill         run {}: stopped at ",
            last.run
        )),
        "{shown}"
    );
    // Nothing to read for a migration that never ran, nor in a database without the table.
    assert!(run_log::recent(&mut conn, "cars_bigint", 10)
        .unwrap()
        .is_empty());
    let empty = TestDb::new("log_keep_empty");
    assert_eq!(
        run_log::last_run(&mut empty.conn(), EXTRACT, 10).unwrap(),
        None
    );
}
