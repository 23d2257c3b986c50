//! An extract whose owner key is not unique (`unique_key = false`, the new table keyed by the
//! moved `account_id`): each user's own account is the one whose `account_id` is the user's, and
//! the other accounts the new release gives a user are left alone by the sync in both
//! directions, the backfill, verify and contract.
//!
//! - Every phase applies, reverts and re-applies (`diesel migration redo`).
//! - Step by step: the sync follows the owner's own row (a changed `account_id` takes it along),
//!   a write that would land in another owner's row fails instead, a second account of the same
//!   user changes nothing in `users`, a new-release user gets its first account as its own,
//!   the backfill and verify ignore the extra rows, and contract's down.sql refills from the
//!   lowest `account_id`.
//! - Under concurrent writers (previous and new release) through dual_write, the backfill and
//!   write_new: every user agrees with its own account, every extra account is exactly as its
//!   writer left it, and verify finds nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::{backfill, create_bookkeeping_tables, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::{
    apply_first, count, exec, fixtures, is_retryable, migrate_to, run_each_with_redo, writer_conn,
    FixtureCrate, TestDb,
};

const MIGRATION: &str = "users_accounts";
const DIFF: &str =
    "SELECT count(*) AS n FROM zmig_users_accounts_diff(-9223372036854775808, 9223372036854775807)";

fn generated(label: &str) -> FixtureCrate {
    let fixture = fixtures::users_accounts(label);
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    fixture
}

/// Users that disagree with their own account (the one with their `account_id`): a user with
/// an account id but no such row of its own, a differing value, or a row whose user is gone.
/// Rows of a user with another `account_id` are not its own and not compared.
fn mismatches(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM users u
         FULL JOIN accounts a ON a.user_id = u.id AND a.account_id = u.account_id
         WHERE (u.id IS NULL AND NOT EXISTS (SELECT FROM users x WHERE x.id = a.user_id))
            OR (u.id IS NOT NULL AND u.account_id IS NOT NULL AND a.user_id IS NULL)
            OR (u.id IS NOT NULL AND a.user_id IS NOT NULL
                AND (u.account_name, u.account_plan) IS DISTINCT FROM (a.name, a.plan))",
    )
}

/// The text column `line` of `sql`'s rows, for failure messages.
fn lines(conn: &mut PgConnection, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One backfill over every owner, as the runtime's workers call it.
fn backfill_all(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT written::bigint AS n FROM zmig_users_accounts_backfill(-9223372036854775808, 9223372036854775807, 1000000)",
    )
}

#[test]
fn every_phase_applies_reverts_and_reapplies() {
    let fixture = generated("nu_redo");
    let db = TestDb::new("nu_redo");
    let mut conn = db.conn();
    let applied = run_each_with_redo(&mut conn, &fixture);
    assert_eq!(applied.len(), 5, "create + 4 phases: {applied:?}");
    for _ in 0..applied.len() {
        conn.revert_last_migration(fixture.migrations()).unwrap();
    }
}

#[test]
fn the_sync_backfill_verify_and_contract_follow_each_owners_own_row_only() {
    let fixture = generated("nu_steps");
    let db = TestDb::new("nu_steps");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        "INSERT INTO users (name, account_id, account_name) VALUES ('before', 1, 'one')",
    );
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'accounts_user_id_idx'"
        ),
        1
    );
    assert_eq!(backfill_all(&mut conn), 1);
    assert_eq!(backfill_all(&mut conn), 0, "a second batch writes nothing");

    // dual_write: the owner's own row follows it, a changed account_id takes it along.
    exec(&mut conn, "INSERT INTO users (name, account_id, account_name, account_plan) VALUES ('a', 2, 'two', 'free')");
    exec(
        &mut conn,
        "UPDATE users SET account_plan = 'pro' WHERE name = 'a'",
    );
    exec(
        &mut conn,
        "UPDATE users SET account_id = 3, account_name = 'three' WHERE name = 'a'",
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM accounts WHERE account_id = 3 AND name = 'three' AND plan = 'pro'"), 1);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM accounts"), 2);
    assert_eq!(mismatches(&mut conn), 0);
    assert_eq!(count(&mut conn, DIFF), 0);
    apply_first(&mut conn, &fixture, 1); // write_new
                                         // The new release gives 'a' a second account: 'a' keeps its own in its old columns.
    exec(&mut conn, "INSERT INTO accounts (user_id, account_id, name, plan) SELECT id, 100, 'second', 'team' FROM users WHERE name = 'a'");
    exec(
        &mut conn,
        "UPDATE accounts SET plan = 'enterprise' WHERE account_id = 100",
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'a' AND account_id = 3 AND account_name = 'three' AND account_plan = 'pro'"), 1);
    // The previous release edits 'a' and changes its account_id: only its own row follows.
    exec(
        &mut conn,
        "UPDATE users SET account_name = 'THREE' WHERE name = 'a'",
    );
    exec(
        &mut conn,
        "UPDATE users SET account_id = 4 WHERE name = 'a'",
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM accounts WHERE account_id = 4 AND name = 'THREE'"
        ),
        1
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM accounts WHERE account_id = 100 AND name = 'second' AND plan = 'enterprise'"), 1);
    // The new release renames the own row: it flows back.
    exec(
        &mut conn,
        "UPDATE accounts SET name = 'four' WHERE account_id = 4",
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM users WHERE name = 'a' AND account_name = 'four'"
        ),
        1
    );
    // A previous-release write whose account_id is another user's extra account fails; it
    // never lands in that row.
    exec(&mut conn, "INSERT INTO accounts (user_id, account_id, name) SELECT id, 150, 'theirs' FROM users WHERE name = 'before'");
    for clash in [
        "UPDATE users SET account_id = 150 WHERE name = 'a'",
        "INSERT INTO users (name, account_id, account_name) VALUES ('b', 150, 'mine')",
    ] {
        let error = diesel::sql_query(clash)
            .execute(&mut conn)
            .unwrap_err()
            .to_string();
        assert!(error.contains("accounts_pkey"), "{clash}: {error}");
    }
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM accounts a JOIN users u ON u.id = a.user_id WHERE a.account_id = 150 AND a.name = 'theirs' AND u.name = 'before'"), 1);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'before' AND account_id = 1 AND account_name = 'one'"), 1);
    // A user the new release creates without the old columns: its first account becomes its
    // own, its second does not.
    exec(&mut conn, "INSERT INTO users (name) VALUES ('new')");
    exec(&mut conn, "INSERT INTO accounts (user_id, account_id, name) SELECT id, 200, 'first' FROM users WHERE name = 'new'");
    exec(&mut conn, "INSERT INTO accounts (user_id, account_id, name) SELECT id, 201, 'other' FROM users WHERE name = 'new'");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'new' AND account_id = 200 AND account_name = 'first'"), 1);
    assert_eq!(mismatches(&mut conn), 0);
    assert_eq!(
        count(&mut conn, DIFF),
        0,
        "the extra rows are neither unexpected nor orphans"
    );
    assert_eq!(
        backfill_all(&mut conn),
        0,
        "the backfill leaves the extra rows alone"
    );
    let report = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(report.differing, 0, "{report:?}");
    // Deleting its own row empties the user's old columns; the other row stays.
    exec(&mut conn, "DELETE FROM accounts WHERE account_id = 200");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'new' AND account_id IS NULL AND account_name IS NULL"), 1);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM accounts WHERE account_id = 201"
        ),
        1
    );
    // A deleted user takes all its rows along, as the foreign key cascades.
    exec(&mut conn, "DELETE FROM users WHERE name = 'new'");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM accounts WHERE account_id = 201"
        ),
        0
    );

    apply_first(&mut conn, &fixture, 1); // contract
    exec(&mut conn, "INSERT INTO accounts (user_id, account_id, name) SELECT id, 2, 'lowest' FROM users WHERE name = 'a'");
    // contract's down.sql refills from each user's lowest account_id.
    conn.revert_last_migration(fixture.migrations()).unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'a' AND account_id = 2 AND account_name = 'lowest'"), 1);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM accounts"), 5);
    assert_eq!(mismatches(&mut conn), 0);
    assert_eq!(count(&mut conn, DIFF), 0);
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers
// ---------------------------------------------------------------------------------------------

const SEEDED: i64 = 3_000;

struct Crew {
    stop: AtomicBool,
    ops: AtomicUsize,
    retries: AtomicUsize,
    /// Committed writes by kind (the writer's `pick`).
    kinds: [AtomicUsize; 10],
}

/// One transaction of a writer, retried on deadlocks and serialization failures. A write that
/// loses a race with a delete of its user (a foreign key violation) is dropped, as the
/// application would report it.
fn run_txn(conn: &mut PgConnection, crew: &Crew, kind: usize, statements: &[String]) {
    loop {
        let result = conn.transaction::<_, diesel::result::Error, _>(|conn| {
            for statement in statements {
                diesel::sql_query(statement).execute(conn)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                crew.kinds[kind].fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) if is_retryable(&e).is_some() => {
                crew.retries.fetch_add(1, Ordering::Relaxed);
            }
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => break,
            Err(e) => panic!("{statements:?}: {e}"),
        }
    }
    crew.ops.fetch_add(1, Ordering::Relaxed);
}

/// Random writes until told to stop. The previous release writes `users` only (its old columns,
/// `account_id` included); the new release also gives users extra accounts (ids from 1,000,000,
/// recorded in `expected_extras` in the same transaction), edits and deletes them, edits the
/// users' own accounts and creates users with their first account in `accounts` only.
fn writer(url: &str, crew: &Crew, new_release: bool, seed: u64) {
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(seed);
    let user = "(SELECT id FROM users ORDER BY id DESC LIMIT 1 OFFSET floor(random() * least(100, (SELECT count(*) FROM users)))::int)";
    let some_user = |rng: &mut StdRng| {
        if rng.gen_bool(0.5) {
            format!(
                "(SELECT id FROM users WHERE id = {})",
                rng.gen_range(1..=SEEDED)
            )
        } else {
            user.to_owned()
        }
    };
    while !crew.stop.load(Ordering::SeqCst) {
        let u = some_user(&mut rng);
        let n: u32 = rng.gen_range(0..1000);
        let pick: usize = if new_release {
            rng.gen_range(0..10)
        } else {
            rng.gen_range(0..5)
        };
        let statements = match pick {
            0 => vec![format!("UPDATE users SET account_name = 'n{n}', account_plan = CASE WHEN {n} % 3 = 0 THEN NULL ELSE 'p{n}' END WHERE id = {u} AND account_id IS NOT NULL")],
            1 => vec![format!("UPDATE users SET account_id = nextval('test_account_ids') WHERE id = {u} AND account_id IS NOT NULL")],
            2 => vec![format!("INSERT INTO users (name, account_id, account_name) VALUES ('w{n}', nextval('test_account_ids'), 'i{n}')")],
            // The user is locked first: no extra account can be added to it meanwhile (the
            // foreign key's check waits), so its records go with the accounts the cascade takes.
            3 => vec![
                "CREATE TEMP TABLE IF NOT EXISTS picked_user (id bigint)".to_owned(),
                "TRUNCATE picked_user".to_owned(),
                format!("INSERT INTO picked_user SELECT id FROM users WHERE id = {u} FOR UPDATE"),
                "DELETE FROM expected_extras WHERE user_id IN (SELECT id FROM picked_user)".to_owned(),
                "DELETE FROM users WHERE id IN (SELECT id FROM picked_user)".to_owned(),
            ],
            4 => vec![format!("UPDATE users SET name = 'renamed {n}' WHERE id = {u}")],
            5 | 6 => vec![
                "SELECT nextval('test_extra_ids')".to_owned(),
                format!("INSERT INTO accounts (user_id, account_id, name, plan) SELECT id, currval('test_extra_ids'), 'x{n}', 'extra' FROM users WHERE id = {u}"),
                format!("INSERT INTO expected_extras SELECT user_id, account_id, name, plan FROM accounts WHERE account_id = currval('test_extra_ids')"),
            ],
            // An extra account changes or goes; its record changes with it.
            7 => {
                let extra = "(SELECT account_id FROM expected_extras ORDER BY account_id DESC LIMIT 1 OFFSET floor(random() * 50)::int)";
                let mut statements = vec![
                    "CREATE TEMP TABLE IF NOT EXISTS picked (account_id bigint)".to_owned(),
                    "TRUNCATE picked".to_owned(),
                    format!("INSERT INTO picked SELECT {extra}"),
                ];
                if rng.gen_bool(0.5) {
                    statements.push(format!("UPDATE accounts SET plan = 'e{n}', name = name || '.' WHERE account_id IN (SELECT account_id FROM picked)"));
                    statements.push("UPDATE expected_extras e SET name = a.name, plan = a.plan FROM accounts a WHERE a.account_id = e.account_id AND e.account_id IN (SELECT account_id FROM picked)".to_owned());
                } else {
                    statements.push("DELETE FROM accounts WHERE account_id IN (SELECT account_id FROM picked)".to_owned());
                    statements.push("DELETE FROM expected_extras WHERE account_id IN (SELECT account_id FROM picked)".to_owned());
                }
                statements
            }
            // The new release edits a user's own account.
            8 => vec![format!("UPDATE accounts a SET plan = 'own{n}' FROM users u WHERE u.id = {u} AND a.user_id = u.id AND a.account_id = u.account_id")],
            // A user created by the new release: no old columns, its first account in accounts.
            _ => vec![
                format!("INSERT INTO users (name) VALUES ('new{n}')"),
                format!("INSERT INTO accounts (user_id, account_id, name) VALUES (currval('users_id_seq'), nextval('test_account_ids'), 'first{n}')"),
            ],
        };
        run_txn(&mut conn, crew, pick, &statements);
    }
}

/// Runs a writer per entry of `releases` (`true`: the new release) until `during` has returned
/// and they did `min_ops` writes together; returns what `during` did, the writes and the retries.
fn with_writers<T>(
    url: &str,
    releases: &[bool],
    min_ops: usize,
    during: impl FnOnce() -> T,
) -> (T, usize, usize) {
    let crew = Crew {
        stop: AtomicBool::new(false),
        ops: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
        kinds: Default::default(),
    };
    let result = thread::scope(|s| {
        // A failed assertion below stops the writers too, or the scope would wait for them.
        let _stop = zmig_tests::waits::SetOnDrop(&crew.stop);
        let handles: Vec<_> = releases
            .iter()
            .enumerate()
            .map(|(t, &new_release)| {
                let crew = &crew;
                s.spawn(move || writer(url, crew, new_release, t as u64 + 7))
            })
            .collect();
        let wait_for = |ops: usize| {
            while crew.ops.load(Ordering::SeqCst) < ops {
                assert!(
                    !handles.iter().any(|h| h.is_finished()),
                    "a writer stopped early"
                );
                thread::sleep(Duration::from_millis(2));
            }
        };
        // The writers are under way before `during` starts, and go on after it returned.
        wait_for(30);
        let before = crew.ops.load(Ordering::SeqCst);
        let result = during();
        let overlapped = crew.ops.load(Ordering::SeqCst) - before;
        assert!(
            overlapped >= 20,
            "only {overlapped} writes overlapped the backfill"
        );
        wait_for(min_ops);
        crew.stop.store(true, Ordering::SeqCst);
        for handle in handles {
            handle.join().expect("a writer panicked");
        }
        (result, overlapped)
    });
    let (result, overlapped) = result;
    // Every kind of write these releases make was made, many times.
    let kinds: Vec<usize> = crew
        .kinds
        .iter()
        .map(|k| k.load(Ordering::SeqCst))
        .collect();
    let made = if releases.contains(&true) { 10 } else { 5 };
    assert!(
        kinds[..made].iter().all(|&k| k >= 40),
        "writes by kind: {kinds:?}"
    );
    eprintln!("writes by kind: {kinds:?}, {overlapped} while the backfill ran");
    (
        result,
        crew.ops.load(Ordering::SeqCst),
        crew.retries.load(Ordering::SeqCst),
    )
}

/// Extra accounts that are not exactly as their writer left them, or missing.
fn extras_touched(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM expected_extras e FULL JOIN (SELECT * FROM accounts WHERE account_id >= 1000000) a USING (account_id)
         WHERE (e.user_id, e.name, e.plan) IS DISTINCT FROM (a.user_id, a.name, a.plan)",
    )
}

#[test]
fn concurrent_writers_of_both_releases_keep_each_owners_own_row_and_leave_the_others_alone() {
    let fixture = generated("nu_writers");
    let db = TestDb::new("nu_writers");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(&mut conn, &format!("INSERT INTO users (name, account_id, account_name, account_plan)
        SELECT 'user ' || i, i, 'account ' || i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'plan ' || (i % 5) END
        FROM generate_series(1, {SEEDED}) AS i"));
    // Test bookkeeping: fresh account ids for the writers, and what each extra account holds.
    exec(&mut conn, "CREATE SEQUENCE test_account_ids START 100000");
    exec(&mut conn, "CREATE SEQUENCE test_extra_ids START 1000000");
    exec(&mut conn, "CREATE TABLE expected_extras (user_id bigint, account_id bigint PRIMARY KEY, name text, plan text)");
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    create_bookkeeping_tables(&mut conn).unwrap();

    let options = BackfillOptions {
        workers: 2,
        batch_size: 50,
        min_batch_size: 20,
        max_batch_size: 100,
        progress: ProgressMode::Silent,
        yield_to_traffic: false,
        ..BackfillOptions::default()
    };
    // The previous release writes while the backfill runs.
    let (report, ops, retries) = with_writers(&db.url, &[false; 3], 600, || {
        backfill(&db.url, MIGRATION, &options)
    });
    let report = report.expect("backfill");
    eprintln!("dual_write + backfill: {report:?}; {ops} writes, {retries} retries");
    assert!(report.finished && report.batches >= 10, "{report:?}");
    assert_eq!(mismatches(&mut conn), 0);
    let verified = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(verified.differing, 0, "{verified:?}");

    migrate_to(&db.url, &fixture, "write_new");
    // Both releases at once: the new one adds extra accounts while the previous one still edits
    // the old columns (account_id included). From write_new on the new table holds the truth,
    // so a backfill (old columns into it) refuses, changing nothing.
    let again = BackfillOptions {
        again: true,
        ..options
    };
    let (refused, ops, retries) = with_writers(&db.url, &[false, false, true, true], 3000, || {
        let refused = backfill(&db.url, MIGRATION, &again);
        thread::sleep(Duration::from_secs(2));
        refused
    });
    let refused = refused
        .expect_err("backfill --again from write_new on")
        .to_string();
    eprintln!("write_new: {ops} writes, {retries} retries; backfill --again: {refused}");
    assert!(refused.contains("write_new is applied"), "{refused}");

    let extras = count(&mut conn, "SELECT count(*) AS n FROM expected_extras");
    let users_with_two = count(&mut conn, "SELECT count(*) AS n FROM (SELECT user_id FROM accounts GROUP BY user_id HAVING count(*) > 1) AS t");
    eprintln!("{extras} extra accounts, {users_with_two} users with more than one");
    assert!(
        extras > 100 && users_with_two > 50,
        "{extras} extras, {users_with_two} users with two"
    );
    assert_eq!(
        mismatches(&mut conn),
        0,
        "users and their own accounts agree"
    );
    assert_eq!(
        extras_touched(&mut conn),
        0,
        "the extra accounts are as their writers left them: {}",
        lines(&mut conn, "SELECT format('expected %s, found %s, user now %s', e, a, u) AS line FROM expected_extras e FULL JOIN (SELECT * FROM accounts WHERE account_id >= 1000000) a USING (account_id) LEFT JOIN users u ON u.id = coalesce(a.user_id, e.user_id) WHERE (e.user_id, e.name, e.plan) IS DISTINCT FROM (a.user_id, a.name, a.plan) LIMIT 10")
    );
    let verified = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(verified.differing, 0, "{verified:?}");
    // A backfill run once more writes nothing.
    assert_eq!(backfill_all(&mut conn), 0);
}
