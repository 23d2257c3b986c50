//! The backfill through a real pgbouncer in transaction pooling mode, how most production
//! PostgreSQL is reached: more workers than server connections, so consecutive transactions of
//! one worker land on different server sessions and one server session serves several workers.
//! Claims live in the batch's own transaction, so no range is ever copied twice (with session
//! advisory locks, two workers sharing a server session both "held" a range and collided on
//! the new table's unique key), and a killed worker's range is free as soon as pgbouncer drops
//! its server connection.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use diesel::prelude::*;
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::pgbouncer::Pgbouncer;
use zmig_tests::waits::poll_until;
use zmig_tests::{apply_first, count, exec, fixtures, held_ranges, TestDb};

const MIGRATION: &str = "caterers_addresses";

fn seed(conn: &mut PgConnection, n: i32) {
    exec(
        conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
             SELECT 'Caterer ' || i, 'c' || i || '@example.com', '555-' || i, i || ' Main St',
                    CASE WHEN i % 3 = 0 THEN NULL ELSE 'Suite ' || i % 97 END,
                    'Boston', lpad((i * 37 % 100000)::text, 5, '0'), 'MA'
             FROM generate_series(1, {n}) AS i"
        ),
    );
}

/// Owners whose address differs from their row in `addresses`, or that have none (every
/// caterer carries an address in this fixture), plus rows without an owner.
fn mismatches(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM caterers c FULL JOIN addresses a ON a.caterer_id = c.id
         WHERE (c.street1, c.street2, c.city, c.zip, c.state)
               IS DISTINCT FROM (a.street1, a.street2, a.city, a.zip, a.state)",
    )
}

fn prepared(label: &str, seeded: i32) -> (TestDb, zmig_tests::FixtureCrate) {
    let fixture = fixtures::caterers(label);
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, seeded);
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    zmig_runtime::backfill::create_bookkeeping_tables(&mut conn).unwrap();
    (db, fixture)
}

#[test]
fn four_workers_on_two_server_connections_copy_each_range_once_under_writers() {
    let (db, _fixture) = prepared("pgb_workers", 20_000);
    let Some(bouncer) = Pgbouncer::start("pgb_workers", &db.url, 2) else {
        return;
    };
    let pooled = bouncer.url(&db.name);
    let mut conn = db.conn();

    // A writer through the pooler too, editing addresses while the backfill copies them.
    let stop = AtomicBool::new(false);
    let report = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut conn = PgConnection::establish(&pooled).unwrap();
            let mut writes = 0u64;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = 1 + (i * 7919) % 20_000;
                diesel::sql_query(
                    "UPDATE caterers SET street1 = street1 || '.', updated_at = now() WHERE id = $1",
                )
                .bind::<diesel::sql_types::Integer, _>(id)
                .execute(&mut conn)
                .unwrap();
                writes += 1;
            }
            writes
        });
        let options = BackfillOptions {
            workers: 4,
            batch_size: 100,
            min_batch_size: 100,
            max_batch_size: 100,
            progress: ProgressMode::Silent,
            yield_to_traffic: false,
            ..BackfillOptions::default()
        };
        let report = backfill(&pooled, MIGRATION, &options);
        stop.store(true, Ordering::SeqCst);
        let writes = writer.join().unwrap();
        eprintln!("pgb_workers: {writes} writes during the backfill");
        assert!(writes > 0);
        report
    });
    let report =
        report.unwrap_or_else(|e| panic!("backfill through pgbouncer: {e}\n{}", bouncer.log()));
    eprintln!("pgb_workers: {report:?}");
    assert!(report.finished, "{report:?}");
    // Every key walked exactly once across all workers.
    assert_eq!(
        count(
            &mut conn,
            "SELECT sum(done_through - start_after)::bigint AS n FROM zmig_backfill_ranges"
        ),
        count(
            &mut conn,
            "SELECT (max(id) - min(id) + 1)::bigint AS n FROM caterers"
        )
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT sum(owners)::bigint AS n FROM zmig_backfill_ranges"
        ),
        20_000,
        "each owner read once"
    );
    assert_eq!(mismatches(&mut conn), 0);
    let mut pooled_conn = PgConnection::establish(&pooled).unwrap();
    let verified = verify(&mut pooled_conn, MIGRATION).unwrap();
    assert_eq!(verified.differing, 0, "{verified:?}");
}

#[test]
fn a_worker_killed_behind_pgbouncer_frees_its_range_and_the_next_run_finishes() {
    let (db, _fixture) = prepared("pgb_killed", 40_000);
    let Some(bouncer) = Pgbouncer::start("pgb_killed", &db.url, 2) else {
        return;
    };
    let pooled = bouncer.url(&db.name);
    let mut conn = db.conn();

    let mut child = Command::new(env!("CARGO_BIN_EXE_backfill_worker"))
        .arg(&pooled)
        .arg(MIGRATION)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backfill_worker");
    poll_until("the backfill process to copy 2,000 owners", || {
        if let Some(exit) = child.try_wait().unwrap() {
            let mut output = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut output)
                .unwrap();
            panic!("backfill_worker ended ({exit}) before it was killed: {output}");
        }
        count(
            &mut conn,
            "SELECT coalesce(sum(owners), 0)::bigint AS n FROM zmig_backfill_ranges",
        ) > 2_000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // pgbouncer sees the client go and drops a server connection caught inside its batch; the
    // range's lock goes with that transaction.
    poll_until("the killed worker's ranges to be free", || {
        held_ranges(&mut conn) == 0
    });
    let copied = count(
        &mut conn,
        "SELECT sum(owners)::bigint AS n FROM zmig_backfill_ranges",
    );
    assert!(copied < 40_000, "killed too late: {copied}");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM addresses"),
        copied
    );

    let options = BackfillOptions {
        workers: 3,
        progress: ProgressMode::Silent,
        yield_to_traffic: false,
        ..BackfillOptions::default()
    };
    let report = backfill(&pooled, MIGRATION, &options)
        .unwrap_or_else(|e| panic!("resumed backfill: {e}\n{}", bouncer.log()));
    assert!(report.finished, "{report:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT sum(owners)::bigint AS n FROM zmig_backfill_ranges"
        ),
        40_000,
        "each owner read once in all"
    );
    assert_eq!(mismatches(&mut conn), 0);
}
