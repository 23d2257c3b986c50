//! The backfill yields to live traffic: after each batch a worker looks whether other sessions of
//! its database did work since its last look, and while they do it runs short batches with a
//! pause after each; with nobody else working, it never yields.
//!
//! - `live_traffic` itself: what counts as another session's work (a statement since the last
//!   look, or one running now) and what does not (idle sessions, a transaction left open,
//!   sessions named as zmig's workers are).
//! - The backfill under writers yields (its report counts the batches it yielded after), its
//!   connections carry the worker name, and it still copies everything; alone it never yields;
//!   with `yield_to_traffic` off it ignores the writers.
//!
//! Nothing here times anything: the assertions are on counts, and waits poll the database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use zmig_runtime::backfill::{
    backfill, live_traffic, set_paused, BackfillOptions, BackfillReport, ProgressMode,
};
use zmig_tests::waits::{poll_until, SetOnDrop};
use zmig_tests::{apply_first, count, exec, fixtures, is_retryable, writer_conn, TestDb};

const MIGRATION: &str = "caterers_addresses";
const SEEDED: i64 = 5_000;
const WORKER_NAME: &str = "zmig caterers_addresses worker";

/// A database with `SEEDED` caterers and the expand and dual_write migrations applied.
fn ready(label: &str) -> TestDb {
    let fixture = fixtures::caterers(label);
    fixture.generate(false).unwrap();
    let db = TestDb::new(label);
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
             SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA'
             FROM generate_series(1, {SEEDED}) g"
        ),
    );
    apply_first(&mut conn, &fixture, 2);
    db
}

/// Small batches to start with, so even a few thousand owners take several batches.
fn options() -> BackfillOptions {
    BackfillOptions {
        batch_size: 100,
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    }
}

fn pid(conn: &mut PgConnection) -> i32 {
    count(conn, "SELECT pg_backend_pid()::bigint AS n") as i32
}

/// Sessions of this database with `application_name` = `name`.
fn named_sessions(conn: &mut PgConnection, name: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind::<Text, _>(name)
    .get_result::<N>(conn)
    .unwrap()
    .n
}

/// Runs `body` while `writers` sessions update caterers' phones (a column the backfill does not
/// copy) in a closed loop; returns once `body` has, with every writer having written at least
/// once before `body` started.
fn with_writers<T>(db: &TestDb, writers: usize, body: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    let written: Vec<AtomicU64> = (0..writers).map(|_| AtomicU64::new(0)).collect();
    thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for (n, done) in written.iter().enumerate() {
            let stop = &stop;
            let url = db.url.clone();
            s.spawn(move || {
                let mut conn = writer_conn(&url);
                let mut id = n as i32;
                while !stop.load(Ordering::SeqCst) {
                    id = id * 7 % SEEDED as i32 + 1;
                    match diesel::sql_query("UPDATE caterers SET phone = $2 WHERE id = $1")
                        .bind::<Integer, _>(id)
                        .bind::<Text, _>(format!("555-{n}-{id}"))
                        .execute(&mut conn)
                    {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if is_retryable(&e).is_some() => {}
                        Err(e) => panic!("writer {n}: {e}"),
                    }
                }
            });
        }
        poll_until("every writer writing", || {
            written.iter().all(|w| w.load(Ordering::SeqCst) >= 10)
        });
        body()
    })
}

/// What counts as another session's work: a session running a statement now, or one that ran
/// (began, ended) a statement since the last look. An idle session does not, nor a transaction
/// left open, nor a session named as zmig's workers are, nor the looking session itself.
#[test]
fn live_traffic_counts_other_sessions_work_since_the_last_look() {
    let db = TestDb::new("yield_traffic");
    let mut idle = db.conn();
    exec(&mut idle, "SELECT 1");
    let mut open = db.conn();
    open.batch_execute("BEGIN; SELECT 1;").unwrap();
    let mut other_worker = db.conn();
    exec(
        &mut other_worker,
        "SELECT set_config('application_name', 'zmig some_other_migration worker', false)",
    );
    // Connected after the others' last statements: a first look counts none of them.
    let mut looker = db.conn();
    let first = live_traffic(&mut looker, None).unwrap();
    assert_eq!(first.sessions, 0, "{first:?}");
    // Looking itself is no traffic.
    let again = live_traffic(&mut looker, Some(first.looked_at)).unwrap();
    assert_eq!(again.sessions, 0, "{again:?}");

    // One statement of the idle session counts once: at the next look, not the one after.
    exec(&mut idle, "SELECT 1");
    let seen = live_traffic(&mut looker, Some(again.looked_at)).unwrap();
    assert_eq!(seen.sessions, 1, "{seen:?}");
    let after = live_traffic(&mut looker, Some(seen.looked_at)).unwrap();
    assert_eq!(after.sessions, 0, "{after:?}");

    // So does a statement in the open transaction; the transaction staying open does not.
    exec(&mut open, "SELECT 1");
    let seen = live_traffic(&mut looker, Some(after.looked_at)).unwrap();
    assert_eq!(seen.sessions, 1, "{seen:?}");
    let after = live_traffic(&mut looker, Some(seen.looked_at)).unwrap();
    assert_eq!(after.sessions, 0, "{after:?}");

    // Another migration's worker never counts, however busy.
    exec(&mut other_worker, "SELECT 1");
    let ignored = live_traffic(&mut looker, Some(after.looked_at)).unwrap();
    assert_eq!(ignored.sessions, 0, "{ignored:?}");

    // A statement running now counts at every look while it runs.
    let mut sleeper = db.conn();
    let sleeper_pid = pid(&mut sleeper);
    let mut since = ignored.looked_at;
    let mut canceller = db.conn();
    // Both stay connected to the end: a session that has gone no longer shows.
    let _sleeper = thread::scope(|s| {
        let running = s.spawn(move || {
            // Ends when cancelled below.
            let _ = sleeper.batch_execute("SELECT pg_sleep(600)");
            sleeper
        });
        let cancel = |conn: &mut PgConnection| {
            count(
                conn,
                &format!("SELECT count(pg_cancel_backend({sleeper_pid}))::bigint AS n"),
            )
        };
        let _cancel_on_panic = CancelIfPanicking(&db.url, sleeper_pid);
        poll_until("the sleeper running", || {
            count(
                &mut canceller,
                &format!(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {sleeper_pid} AND state = 'active'"
                ),
            ) == 1
        });
        // The first look also counts the canceller's polls; the later ones the sleeper alone.
        let look = live_traffic(&mut looker, Some(since)).unwrap();
        assert!(look.sessions >= 1, "{look:?}");
        since = look.looked_at;
        for _ in 0..3 {
            let look = live_traffic(&mut looker, Some(since)).unwrap();
            assert_eq!(look.sessions, 1, "{look:?}");
            since = look.looked_at;
        }
        cancel(&mut canceller);
        running.join().unwrap()
    });
    // The sleeper's end and the canceller's statements count once more; then nobody works.
    let last = live_traffic(&mut looker, Some(since)).unwrap();
    assert!(last.sessions >= 1, "{last:?}");
    let quiet = live_traffic(&mut looker, Some(last.looked_at)).unwrap();
    assert_eq!(quiet.sessions, 0, "{quiet:?}");
}

/// Cancels the sleeper's statement if the test fails while it sleeps.
struct CancelIfPanicking<'a>(&'a str, i32);

impl Drop for CancelIfPanicking<'_> {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        if let Ok(mut conn) = PgConnection::establish(self.0) {
            let _ = conn.batch_execute(&format!("SELECT pg_cancel_backend({})", self.1));
        }
    }
}

fn assert_copied_everything(report: &BackfillReport) {
    assert!(report.finished, "{report:?}");
    assert_eq!(report.owners, SEEDED, "{report:?}");
    assert!(report.batches > 1, "{report:?}");
}

/// Under two writers the backfill yields after its batches, and still copies every owner. Its
/// connections carry the worker name the others leave out.
#[test]
fn the_backfill_yields_while_other_sessions_write() {
    let db = ready("yield_busy");
    let mut conn = db.conn();
    // A call stopped before its first batch records the run, so it can be paused before it
    // runs: its connections are then seen waiting, before it copies anything.
    let recorded = backfill(
        &db.url,
        MIGRATION,
        &BackfillOptions {
            stop: Some(Arc::new(AtomicBool::new(true))),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(recorded.batches, 0, "{recorded:?}");
    set_paused(&mut conn, MIGRATION, true).unwrap();
    let report = with_writers(&db, 2, || {
        thread::scope(|s| {
            let run = s.spawn(|| backfill(&db.url, MIGRATION, &options()));
            // The coordinating connection and the worker's, the worker waiting for the resume.
            poll_until("the backfill's named connections", || {
                named_sessions(&mut conn, WORKER_NAME) >= 2
            });
            set_paused(&mut conn, MIGRATION, false).unwrap();
            run.join().expect("the backfill panicked")
        })
        .unwrap()
    });
    eprintln!("yield_busy: {report:?}");
    assert_copied_everything(&report);
    assert!(
        report.yields >= 1,
        "never yielded to the writers: {report:?}"
    );
    assert!(report.yields <= report.batches, "{report:?}");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM addresses"),
        SEEDED
    );
}

/// With nobody else working on the database, the backfill never yields.
#[test]
fn the_backfill_alone_never_yields() {
    let db = ready("yield_alone");
    let report = backfill(&db.url, MIGRATION, &options()).unwrap();
    eprintln!("yield_alone: {report:?}");
    assert_copied_everything(&report);
    assert_eq!(report.yields, 0, "{report:?}");
}

/// `yield_to_traffic: false` (`--no-yield`): the writers are ignored.
#[test]
fn without_yielding_the_backfill_ignores_writers() {
    let db = ready("yield_off");
    let report = with_writers(&db, 2, || {
        backfill(
            &db.url,
            MIGRATION,
            &BackfillOptions {
                yield_to_traffic: false,
                ..options()
            },
        )
        .unwrap()
    });
    eprintln!("yield_off: {report:?}");
    assert_copied_everything(&report);
    assert_eq!(report.yields, 0, "{report:?}");
}
