//! The backfill backs off while the database is under strain: sessions of its database waiting
//! long on locks. (Replication lag is read the same way, from `pg_stat_replication`; this machine
//! has no replica to lag.)

use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use zmig_runtime::backfill::{backfill, database_strain, status, BackfillOptions, ProgressMode};
use zmig_tests::{apply_first, count, exec, fixtures, TestDb};

/// Polls `done` up to `tries` times, 10 ms apart.
fn poll_until(what: &str, tries: u32, mut done: impl FnMut() -> bool) {
    for _ in 0..tries {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting: {what}");
}

#[test]
fn the_backfill_waits_while_sessions_wait_long_on_locks_then_finishes() {
    let fixture = fixtures::caterers("throttle");
    fixture.generate(false).unwrap();
    let db = TestDb::new("throttle");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone, street1, city, zip, state)
         SELECT 'c' || g, g || '@x', '1', g || ' Main St', 'Boston', '02110', 'MA' FROM generate_series(1, 2000) g",
    );
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    assert_eq!(database_strain(&mut conn).unwrap().lock_waiters, 0);

    // Strain: a long transaction holds a lock that three sessions wait for.
    exec(&mut conn, "CREATE TABLE busy (id int)");
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                conn.batch_execute("SELECT count(*) FROM busy").unwrap();
            })
        })
        .collect();
    poll_until("three sessions waiting over half a second", 1_000, || {
        database_strain(&mut conn).unwrap().lock_waiters >= 3
    });

    let url = db.url.clone();
    let run = thread::spawn(move || {
        let options = BackfillOptions {
            max_lock_waiters: 2,
            progress: ProgressMode::Silent,
            ..BackfillOptions::default()
        };
        backfill(&url, "caterers_addresses", &options).unwrap()
    });
    // The worker has connected: it checks the strain before its first batch.
    poll_until("the backfill's worker to connect", 1_000, || {
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'zmig % worker'",
        ) > 0
    });
    for _ in 0..20 {
        let done = status(&mut conn, "caterers_addresses")
            .unwrap()
            .map(|s| s.owners)
            .unwrap_or(0);
        assert_eq!(done, 0, "copied while the database was under strain");
        thread::sleep(Duration::from_millis(10));
    }

    holder.batch_execute("COMMIT;").unwrap();
    for waiter in waiters {
        waiter.join().unwrap();
    }
    let report = run.join().unwrap();
    assert!(report.finished);
    assert!(report.backoffs >= 1, "{report:?}");
    assert_eq!(report.owners, 2000);
}
