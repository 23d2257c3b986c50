//! The migration runner: a migration that gives up waiting for its lock is retried until the
//! lock is free; any other failure is not retried.

use std::sync::mpsc;

use diesel::connection::SimpleConnection;
use zmig_runtime::migrate::{is_lock_timeout, run_pending_with_retry, RetryPolicy};
use zmig_tests::{apply_first, count, fixtures, TestDb};

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 50,
        first_delay: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(200),
    }
}

#[test]
fn a_migration_blocked_by_a_lock_is_retried_until_the_lock_is_released() {
    let fixture = fixtures::caterers("retry_lock");
    fixture.generate(false).unwrap();
    let db = TestDb::new("retry_lock");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 2); // create + expand

    // Another session holds a lock on the owner table, as a long transaction would.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE caterers IN ACCESS EXCLUSIVE MODE;")
        .unwrap();

    let (first_retry, retried) = mpsc::channel();
    let url = db.url.clone();
    let migrations = fixture.migrations();
    let runner = std::thread::spawn(move || {
        let mut conn = diesel::Connection::establish(&url).unwrap();
        let mut retries = 0;
        let result = run_pending_with_retry(
            &mut conn,
            migrations,
            &quick_policy(),
            |name, attempt, error| {
                retries += 1;
                assert!(name.contains("dual_write"), "{name}");
                // The lock loop's own message, naming SQLSTATE 55P03, after its budget.
                assert!(is_lock_timeout(error), "{error}");
                if attempt == 1 {
                    first_retry.send(()).unwrap();
                }
            },
        );
        (result, retries)
    });
    // The runner gave up on the lock at least once; now the long transaction ends.
    retried.recv().unwrap();
    holder.batch_execute("COMMIT;").unwrap();
    let (result, retries) = runner.join().unwrap();
    let applied = result.expect("applied after the lock was released");
    assert!(retries >= 1);
    // dual_write, write_new and contract (the owner table is empty: the gates pass inline).
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM __diesel_schema_migrations"
        ),
        5
    );
}

#[test]
fn other_failures_are_not_retried() {
    let fixture = fixtures::caterers("retry_other");
    fixture.generate(false).unwrap();
    let db = TestDb::new("retry_other");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    // A table already named like the new one: expand must fail, at once, for good.
    conn.batch_execute("CREATE TABLE addresses (id int);")
        .unwrap();
    let mut retries = 0;
    let error = run_pending_with_retry(
        &mut conn,
        fixture.migrations(),
        &quick_policy(),
        |_, _, _| retries += 1,
    )
    .unwrap_err();
    assert_eq!(retries, 0);
    assert_eq!(error.attempts, 1);
    assert!(
        error.message.contains("already exists"),
        "{}",
        error.message
    );
}
