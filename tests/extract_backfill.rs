//! The backfill runner and `verify` on a real database.
//!
//! - Under concurrent writers, with two workers and many small batches, the backfill loses
//!   nothing: afterwards `verify` and a row-by-row comparison of our own find no difference.
//! - Killed with SIGKILL half way, a backfill resumes exactly where its last committed batch
//!   left it (no range or batch counted twice), and a run over a finished backfill changes
//!   nothing.
//! - It refuses to start before the dual_write migration has put the sync triggers in place.
//! - `verify` names each kind of difference, and write_new's gate follows what it recorded.
//! - A paused backfill holds no range and copies nothing until it is resumed.
//!
//! Everything is bounded by counts of operations: writers stop after the backfill has returned
//! and they have done a minimum of operations; waits poll the database for a condition a bounded
//! number of times. Nothing sleeps to let something else happen.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};
use diesel_migrations::MigrationHarness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::{
    backfill, create_bookkeeping_tables, set_paused, status, BackfillOptions, BackfillReport,
    BackfillStatus, ProgressMode,
};
use zmig_runtime::verify::{last_verification, verify, Difference};
use zmig_tests::waits::{db_now, pause_checks, poll_until, SetOnDrop};
use zmig_tests::writes::{boxed, insert_caterer, Addr, Change, Events, Shape, Stats};
use zmig_tests::{
    apply_first, count, exec, fixtures, held_ranges, writer_conn, FixtureCrate, TestDb,
};

const CITIES: [&str; 8] = [
    "Boston", "Austin", "Denver", "Tulsa", "Reno", "Salem", "Dayton", "Fresno",
];
const STATES: [&str; 8] = ["MA", "TX", "CO", "OK", "NV", "OR", "OH", "CA"];

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn generated(fixture: &FixtureCrate) {
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
}

/// `n` caterers with ids 1..=n, in one statement, with varied values: a third without
/// `street2`, a seventh in state `XX` (so with the filter about 57% of them carry an address).
fn seed(conn: &mut PgConnection, n: i32) {
    let inserted = exec(
        conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state, created_at, updated_at)
             SELECT 'Caterer ' || i, 'caterer' || i || '@example.com', '555-' || lpad((i % 10000)::text, 4, '0'),
                    (1 + i * 7 % 9999) || ' '
                        || (ARRAY['Main St', 'Oak Ave', 'Pine Rd', 'Elm St', 'Market St', '2nd Ave', 'Lake Dr'])[1 + i % 7],
                    CASE WHEN i % 3 = 0 THEN NULL
                         ELSE (ARRAY['Suite ', 'Apt ', 'Unit ', 'Floor '])[1 + i % 4] || (1 + i % 97) END,
                    (ARRAY['Boston', 'Austin', 'Denver', 'Tulsa', 'Reno', 'Salem', 'Dayton', 'Fresno'])[1 + i % 8],
                    lpad((i * 37 % 100000)::text, 5, '0'),
                    CASE WHEN i % 7 = 0 THEN 'XX'
                         ELSE (ARRAY['MA', 'TX', 'CO', 'OK', 'NV', 'OR', 'OH', 'CA'])[1 + i % 8] END,
                    timestamp '2025-01-01' + i * interval '1 minute',
                    timestamp '2025-06-01' + i * interval '1 second'
             FROM generate_series(1, {n}) AS i"
        ),
    );
    assert_eq!(inserted, n as usize);
    assert_eq!(
        count(conn, "SELECT max(id)::bigint AS n FROM caterers"),
        i64::from(n)
    );
}

fn options(workers: usize, batch_size: i32, max_batch_size: i32) -> BackfillOptions {
    BackfillOptions {
        workers,
        batch_size,
        min_batch_size: batch_size.min(100),
        max_batch_size,
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    }
}

/// Up to 10 lines of `sql`'s single text column `line`, for failure messages.
fn sample_lines(conn: &mut PgConnection, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    let lines: Vec<Line> = diesel::sql_query(sql)
        .load(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    lines
        .into_iter()
        .map(|l| format!("  {}\n", l.line))
        .collect()
}

/// The single text column `line` of `sql`.
fn text(conn: &mut PgConnection, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    diesel::sql_query(sql)
        .get_result::<Line>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .line
}

/// Sums over the run's ranges, `None` while zmig's bookkeeping table does not exist yet.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
struct RangeSums {
    #[diesel(sql_type = BigInt)]
    ranges: i64,
    #[diesel(sql_type = BigInt)]
    done: i64,
    #[diesel(sql_type = BigInt)]
    keys: i64,
    #[diesel(sql_type = BigInt)]
    owners: i64,
    #[diesel(sql_type = BigInt)]
    written: i64,
}

fn range_sums(conn: &mut PgConnection, migration: &str) -> Option<RangeSums> {
    if text(
        conn,
        "SELECT (to_regclass('zmig_backfill_ranges') IS NOT NULL)::text AS line",
    ) != "true"
    {
        return None;
    }
    let sql = format!(
        "SELECT count(*) AS ranges, count(*) FILTER (WHERE done) AS done,
                coalesce(sum(done_through - start_after), 0)::bigint AS keys,
                coalesce(sum(owners), 0)::bigint AS owners, coalesce(sum(written), 0)::bigint AS written
         FROM zmig_backfill_ranges WHERE migration = '{migration}'"
    );
    Some(
        diesel::sql_query(&sql)
            .get_result(conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

/// Decrements the counter when dropped (a writer that ended, normally or not).
struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The two fixtures, and the comparison of owners with their new rows
// ---------------------------------------------------------------------------------------------

/// Owners against new rows, by our own rule, independent of the generated diff function.
#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Comparison {
    /// New rows without an owner.
    #[diesel(sql_type = BigInt)]
    orphans: i64,
    /// Carrying owners without a new row.
    #[diesel(sql_type = BigInt)]
    missing: i64,
    /// Owners that carry nothing, with a new row.
    #[diesel(sql_type = BigInt)]
    extra: i64,
    /// Owners whose new row holds other values.
    #[diesel(sql_type = BigInt)]
    mismatched: i64,
    /// Owners whose new row has another `created_at` (both the trigger and the backfill copy
    /// it).
    #[diesel(sql_type = BigInt)]
    created_at_mismatched: i64,
    /// Owners with more than one new row.
    #[diesel(sql_type = BigInt)]
    duplicated: i64,
    /// Owners with a new row (for the record).
    #[diesel(sql_type = BigInt)]
    synced: i64,
    /// Owners without one (for the record).
    #[diesel(sql_type = BigInt)]
    bare: i64,
}

impl Comparison {
    fn clean(&self) -> bool {
        self.orphans == 0
            && self.missing == 0
            && self.extra == 0
            && self.mismatched == 0
            && self.created_at_mismatched == 0
            && self.duplicated == 0
    }
}

fn compare(conn: &mut PgConnection, shape: &Shape) -> Comparison {
    let sql = format!(
        "SELECT
             count(*) FILTER (WHERE c.id IS NULL) AS orphans,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NULL AND {carries}) AS missing,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL AND NOT {carries}) AS extra,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL
                 AND (c.street1, c.street2, c.city, c.state, c.zip)
                     IS DISTINCT FROM (n.street1, n.street2, n.city, n.state, n.zip)) AS mismatched,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL
                 AND c.created_at IS DISTINCT FROM n.created_at) AS created_at_mismatched,
             (SELECT count(*) FROM (SELECT {key} FROM addresses GROUP BY {key} HAVING count(*) > 1) AS d)
                 AS duplicated,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL) AS synced,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NULL) AS bare
         FROM caterers c FULL JOIN addresses n ON n.{key} = c.id",
        key = shape.key,
        carries = shape.carries("c"),
    );
    diesel::sql_query(&sql)
        .get_result(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn offenders(conn: &mut PgConnection, shape: &Shape) -> String {
    sample_lines(
        conn,
        &format!(
            "SELECT 'owner ' || CASE WHEN c.id IS NULL THEN '-' ELSE row(c.id, c.street1, c.street2, c.city, c.state, c.zip, c.created_at)::text END
                    || ' carries=' || {carries}
                    || ' new ' || CASE WHEN n.{key} IS NULL THEN '-' ELSE row(n.{key}, n.street1, n.street2, n.city, n.state, n.zip, n.created_at)::text END AS line
             FROM caterers c FULL JOIN addresses n ON n.{key} = c.id
             WHERE c.id IS NULL OR (n.{key} IS NULL) = {carries}
                OR (n.{key} IS NOT NULL AND (c.street1, c.street2, c.city, c.state, c.zip, c.created_at)
                    IS DISTINCT FROM (n.street1, n.street2, n.city, n.state, n.zip, n.created_at))
             ORDER BY coalesce(c.id, n.{key}) LIMIT 10",
            key = shape.key,
            carries = shape.carries("c"),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. The backfill under concurrent writers
// ---------------------------------------------------------------------------------------------

/// A full address. `in_filter` decides whether it passes the filtered fixture's
/// `street2 IS NOT NULL AND state <> 'XX'`. (Draws the suite number and the kind of address
/// outside the filter whether it uses them or not.)
fn random_addr(rng: &mut StdRng, tag: &str, in_filter: bool) -> Addr {
    let valid_state = STATES[rng.gen_range(0..STATES.len())].to_owned();
    let suite = format!("Suite {}", rng.gen_range(1..500));
    let (street2, state) = match (in_filter, rng.gen_range(0..3)) {
        (true, _) => (Some(suite), valid_state),
        (false, 0) => (None, valid_state),
        (false, 1) => (Some(suite), "XX".to_owned()),
        (false, _) => (None, "XX".to_owned()),
    };
    Addr {
        street1: Some(format!("{} {tag} Ave", rng.gen_range(1..10_000))),
        street2,
        city: Some(CITIES[rng.gen_range(0..CITIES.len())].to_owned()),
        state: Some(state),
        zip: Some(format!("{:05}", rng.gen_range(0..100_000))),
    }
}

/// Where a written caterer stood relative to the backfill when the write's statement began:
/// `behind` a committed checkpoint (the trigger alone must carry the change), `ahead` of it (a
/// batch has yet to read the row), or `outside` any range (the run had not started, or the
/// caterer was inserted after it did).
fn position(migration: &str, alias: &str) -> String {
    format!(
        "coalesce((SELECT CASE WHEN r.done_through >= {alias}.id THEN 'behind' ELSE 'ahead' END
                   FROM zmig_backfill_ranges r
                   WHERE r.migration = '{migration}' AND {alias}.id > r.start_after AND {alias}.id <= r.end_at),
                  'outside')"
    )
}

fn position_event(position: &str) -> &'static str {
    match position {
        "behind" => "write_behind_checkpoint",
        "ahead" => "write_ahead_of_checkpoint",
        _ => "write_outside_ranges",
    }
}

/// A random change to some address columns of a caterer.
fn random_change(rng: &mut StdRng, tag: &str) -> Change {
    match rng.gen_range(0..4) {
        0 => Change::Street2(if rng.gen_bool(0.5) {
            None
        } else {
            Some(format!("Floor {tag}"))
        }),
        1 => Change::State(if rng.gen_bool(0.45) {
            "XX".to_owned()
        } else {
            STATES[rng.gen_range(0..STATES.len())].to_owned()
        }),
        2 => Change::Lines {
            street1: format!("{} {tag} Rd", rng.gen_range(1..10_000)),
            city: CITIES[rng.gen_range(0..CITIES.len())].to_owned(),
            zip: format!("{:05}", rng.gen_range(0..100_000)),
        },
        _ => {
            let in_filter = rng.gen_bool(0.5);
            Change::All(random_addr(rng, tag, in_filter))
        }
    }
}

/// Applies `change` to the first existing caterer with an id from `from` on, in one UPDATE
/// that also reports whether the row carried an address before and after (the sub-select locks
/// the row, so what it reads is the version the UPDATE replaces) and where it stood relative to
/// the backfill.
fn apply_change(
    change: &Change,
    conn: &mut PgConnection,
    shape: &Shape,
    from: i32,
) -> QueryResult<Events> {
    #[derive(QueryableByName)]
    struct Transition {
        #[diesel(sql_type = Bool)]
        was: bool,
        #[diesel(sql_type = Bool)]
        now: bool,
        #[diesel(sql_type = Text)]
        position: String,
    }
    let set = change.set_list();
    let sql = format!(
        "UPDATE caterers c SET {set}
         FROM (SELECT o.id, {was} AS was FROM caterers o WHERE o.id >= $1
               ORDER BY o.id LIMIT 1 FOR NO KEY UPDATE) o
         WHERE c.id = o.id
         RETURNING o.was, {now} AS now, {position} AS position",
        was = shape.carries("o"),
        now = shape.carries("c"),
        position = position(shape.migration, "c"),
    );
    let q = change.bind_values(boxed(sql).bind::<Integer, _>(from));
    let Some(t) = q.get_results::<Transition>(conn)?.into_iter().next() else {
        return Ok(vec!["target_gone"]);
    };
    let mut events = vec!["address_updated", position_event(&t.position)];
    match (t.was, t.now) {
        (false, true) => events.push("started_carrying"),
        (true, false) => events.push("stopped_carrying"),
        _ => {}
    }
    Ok(events)
}

#[derive(QueryableByName)]
struct Positioned {
    #[diesel(sql_type = Text)]
    position: String,
}

/// What the writers and the backfill thread share.
struct Crew {
    /// The highest caterer id handed out so far.
    max_id: AtomicI32,
    /// Writers and the backfill thread meet here before anything writes.
    start: Barrier,
    /// Operations done, by all writers together.
    ops_done: AtomicUsize,
    /// Writers still running.
    writers_alive: AtomicUsize,
    /// Set just before the backfill starts, and once it has returned.
    backfilling: AtomicBool,
    returned: AtomicBool,
    /// Operations every writer does at least, and at most whatever happens to the backfill.
    min_ops: usize,
    max_ops: usize,
}

/// One writer: waits for the others and the backfill, then writes until the backfill has
/// returned and it has done at least `min_ops` operations (one transaction each). Targets are
/// random ids among the existing caterers, so rows ahead of the backfill and behind it are
/// written alike.
fn writer(url: &str, shape: &Shape, thread: u64, crew: &Crew) -> Stats {
    let _alive = DecrementOnDrop(&crew.writers_alive);
    let mut rng = StdRng::seed_from_u64(shape.seed * 1_000 + thread);
    let mut stats = Stats::default();
    let max_id = &crew.max_id;
    crew.start.wait();
    let mut conn = writer_conn(url);
    for i in 0..crew.max_ops {
        let done = crew.returned.load(Ordering::SeqCst);
        if done && i >= crew.min_ops {
            break;
        }
        let during = crew.backfilling.load(Ordering::SeqCst) && !done;
        let tag = format!("w{thread}n{i}");
        let what = format!("{} writer {thread} op {i}", shape.label);
        let from = rng.gen_range(1..=max_id.load(Ordering::Relaxed));
        match rng.gen_range(0..100) {
            // Insert a caterer, in the filter or not (after the run's key range: the triggers'
            // business alone).
            0..=11 => {
                let in_filter = rng.gen_bool(0.5);
                let a = random_addr(&mut rng, &tag, in_filter);
                stats.run(&what, &mut conn, |c| {
                    let id = insert_caterer(c, &tag, &a)?;
                    max_id.fetch_max(id, Ordering::Relaxed);
                    Ok(vec![
                        "inserted",
                        if in_filter {
                            "inserted_in_filter"
                        } else {
                            "inserted_outside_filter"
                        },
                    ])
                });
            }
            // Change address columns, into and out of the filter too.
            12..=51 => {
                let change = random_change(&mut rng, &tag);
                stats.run(&what, &mut conn, |c| apply_change(&change, c, shape, from));
            }
            // Change only columns the sync does not watch.
            52..=66 => {
                stats.run(&what, &mut conn, |c| {
                    let row = boxed(format!(
                        "UPDATE caterers c SET name = $2, phone = $3, updated_at = now()
                         WHERE c.id = (SELECT id FROM caterers WHERE id >= $1 ORDER BY id LIMIT 1)
                         RETURNING {} AS position",
                        position(shape.migration, "c")
                    ))
                    .bind::<Integer, _>(from)
                    .bind::<Text, _>(format!("renamed {tag}"))
                    .bind::<Text, _>(format!("555-{tag}"))
                    .get_results::<Positioned>(c)?;
                    Ok(match row.first() {
                        Some(p) => vec!["other_updated", position_event(&p.position)],
                        None => vec!["target_gone"],
                    })
                });
            }
            // Rewrite the address columns with their own values (the trigger skips it).
            67..=74 => {
                stats.run(&what, &mut conn, |c| {
                    let n = boxed(
                        "UPDATE caterers SET street1 = street1, street2 = street2, city = city,
                             state = state, zip = zip
                         WHERE id = (SELECT id FROM caterers WHERE id >= $1 ORDER BY id LIMIT 1)",
                    )
                    .bind::<Integer, _>(from)
                    .execute(c)?;
                    Ok(vec![if n == 1 {
                        "rewritten_same"
                    } else {
                        "target_gone"
                    }])
                });
            }
            // Delete a caterer (its new row goes with it: the delete trigger, then the foreign key).
            75..=84 => {
                stats.run(&what, &mut conn, |c| {
                    let row = boxed(format!(
                        "DELETE FROM caterers c
                         WHERE c.id = (SELECT id FROM caterers WHERE id >= $1 ORDER BY id LIMIT 1)
                         RETURNING {} AS position",
                        position(shape.migration, "c")
                    ))
                    .bind::<Integer, _>(from)
                    .get_results::<Positioned>(c)?;
                    Ok(match row.first() {
                        Some(p) => vec!["deleted", position_event(&p.position)],
                        None => vec!["target_gone"],
                    })
                });
            }
            // Two caterers' addresses in one transaction, in id order (as the batches lock).
            _ => {
                let other = rng.gen_range(1..=max_id.load(Ordering::Relaxed));
                let (a, b) = (from.min(other), from.max(other));
                let first = random_change(&mut rng, &tag);
                let second = random_change(&mut rng, &format!("{tag}b"));
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let mut events = vec!["txn_two_rows"];
                        events.extend(apply_change(&first, c, shape, a)?);
                        events.extend(apply_change(&second, c, shape, b)?);
                        Ok(events)
                    })
                });
            }
        }
        if during {
            stats.count("op_during_backfill");
        }
        crew.ops_done.fetch_add(1, Ordering::SeqCst);
    }
    stats
}

fn backfill_under_writers(shape: &Shape) {
    const SEEDED: i32 = 30_000;
    const WRITERS: usize = 3;
    /// Operations the writers have done, together, before the backfill starts.
    const HEAD_START: usize = 30;
    let started = Instant::now();
    let fixture = (shape.make)(shape.label);
    generated(&fixture);
    let db = TestDb::new(shape.label);
    let mut conn = db.conn();

    apply_first(&mut conn, &fixture, 1); // create_tables
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses"), 0);
    // zmig's bookkeeping tables exist before the writers start, so they can tell where the
    // backfill stands.
    create_bookkeeping_tables(&mut conn).unwrap();
    assert_eq!(status(&mut conn, shape.migration).unwrap(), None);

    let crew = Crew {
        max_id: AtomicI32::new(SEEDED),
        start: Barrier::new(WRITERS + 1),
        ops_done: AtomicUsize::new(0),
        writers_alive: AtomicUsize::new(WRITERS),
        backfilling: AtomicBool::new(false),
        returned: AtomicBool::new(false),
        min_ops: 700,
        max_ops: 20_000,
    };
    let opts = BackfillOptions {
        workers: 2,
        batch_size: 200,
        max_batch_size: 500,
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    };
    let (report, backfill_time, stats) = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS as u64)
            .map(|t| {
                let (url, crew) = (&db.url, &crew);
                s.spawn(move || writer(url, shape, t, crew))
            })
            .collect();
        let runner = s.spawn(|| {
            let _returned = SetOnDrop(&crew.returned);
            crew.start.wait();
            // The writers are under way before the backfill starts.
            while crew.ops_done.load(Ordering::SeqCst) < HEAD_START
                && crew.writers_alive.load(Ordering::SeqCst) == WRITERS
            {
                thread::sleep(Duration::from_millis(1));
            }
            crew.backfilling.store(true, Ordering::SeqCst);
            let began = Instant::now();
            let report = backfill(&db.url, shape.migration, &opts);
            (report, began.elapsed())
        });
        let (report, took) = runner.join().expect("the backfill panicked");
        let stats = Stats::merge(
            writers
                .into_iter()
                .map(|w| w.join().expect("a writer panicked"))
                .collect(),
        );
        (report, took, stats)
    });
    let report: BackfillReport = report.expect("backfill");

    let comparison = compare(&mut conn, shape);
    let verified = verify(&mut conn, shape.migration).expect("verify");
    let sums = range_sums(&mut conn, shape.migration).unwrap();
    eprintln!(
        "{}: {SEEDED} seeded; backfill {report:?} in {backfill_time:.2?}; ranges {sums:?}\n  writers: retries {:?}, events {:?}\n  final {comparison:?}; verify {verified:?}; {:.2?} in all",
        shape.label,
        stats.retries,
        stats.events,
        started.elapsed(),
    );

    assert!(report.finished, "{}: {report:?}", shape.label);
    assert_eq!(report.ranges_left, 0, "{}: {report:?}", shape.label);
    assert!(
        comparison.clean(),
        "{}: owners and new rows disagree: {comparison:?}\n{}",
        shape.label,
        offenders(&mut conn, shape)
    );
    assert_eq!(
        (verified.differing, verified.examples.len()),
        (0, 0),
        "{}: verify: {verified:?}",
        shape.label
    );
    // Many batches, each owner read once: the ranges' counters add up to this call's, and every
    // seeded owner was read unless a writer deleted it first.
    assert!(report.batches >= 50, "{}: {report:?}", shape.label);
    assert_eq!(
        (sums.owners, sums.written, sums.done),
        (report.owners, report.written, sums.ranges),
        "{}",
        shape.label
    );
    let deleted = stats.get("deleted") as i64;
    assert!(
        report.owners <= i64::from(SEEDED) && report.owners >= i64::from(SEEDED) - deleted,
        "{}: {report:?}, {deleted} deleted",
        shape.label
    );
    let st = status(&mut conn, shape.migration).unwrap().unwrap();
    assert!(
        st.finished && !st.paused && st.keys_done == st.keys_total,
        "{st:?}"
    );

    // The writers overlapped the backfill, on rows on both sides of its checkpoints, and did
    // each kind of thing many times.
    stats.assert_at_least(
        shape.label,
        &[
            ("op_during_backfill", 150),
            ("write_ahead_of_checkpoint", 20),
            ("write_behind_checkpoint", 20),
            ("inserted", 150),
            ("inserted_in_filter", 60),
            ("inserted_outside_filter", 60),
            ("address_updated", 800),
            ("other_updated", 180),
            ("rewritten_same", 90),
            ("deleted", 120),
            ("txn_two_rows", 180),
        ],
    );
    if shape.filtered {
        stats.assert_at_least(
            shape.label,
            &[("started_carrying", 80), ("stopped_carrying", 80)],
        );
        assert!(
            comparison.bare > 5_000 && comparison.synced > 10_000,
            "{}: both kinds of owner at the end: {comparison:?}",
            shape.label
        );
    } else {
        assert_eq!(comparison.bare, 0, "{comparison:?}");
    }
}

/// Three writers insert, change addresses (in and out of the filter), change other columns and
/// delete, on random existing caterers, while a backfill with two workers walks 30,000 owners in
/// batches of 200 to 500; they start before it and go on after it has returned. Afterwards
/// `verify` and our own comparison agree: every carrying owner has exactly its row, no other
/// owner has one, and no row lacks its owner.
#[test]
fn backfill_under_concurrent_writers_loses_nothing() {
    let shapes = [
        Shape {
            label: "bf_writers",
            make: fixtures::caterers,
            migration: "caterers_addresses",
            key: "caterer_id",
            filtered: false,
            seed: 31,
        },
        Shape {
            label: "bf_writers_filtered",
            make: fixtures::caterers_filtered,
            migration: "caterers_addr_filtered",
            key: "owner_id",
            filtered: true,
            seed: 47,
        },
    ];
    for shape in &shapes {
        backfill_under_writers(shape);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Killed and resumed
// ---------------------------------------------------------------------------------------------

/// Every column of every row of the new table, with each row version's `xmin`: equal only if
/// nothing was written.
fn addresses_fingerprint(conn: &mut PgConnection) -> String {
    text(
        conn,
        "SELECT count(*) || ' rows, last updated ' || coalesce(max(updated_at)::text, '-') || ', digest '
                || coalesce(md5(string_agg(a::text || '@' || a.xmin::text, ',' ORDER BY a.id)), '-') AS line
         FROM addresses a",
    )
}

/// A backfill process killed with SIGKILL half way leaves exactly its committed batches; the
/// next run takes up the rest, reading every owner once in all; a run after that does nothing.
#[test]
fn a_killed_backfill_resumes_where_it_stopped_and_a_rerun_changes_nothing() {
    const SEEDED: i32 = 40_000;
    const MIGRATION: &str = "caterers_addresses";
    let started = Instant::now();
    let fixture = fixtures::caterers("bf_killed");
    generated(&fixture);
    let db = TestDb::new("bf_killed");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2);

    let mut child = Command::new(env!("CARGO_BIN_EXE_backfill_worker"))
        .arg(&db.url)
        .arg(MIGRATION)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backfill_worker");
    let child_pid = child.id();
    let mut polls = 0;
    poll_until("the backfill process to copy 2,000 owners", || {
        polls += 1;
        if let Some(exit) = child.try_wait().unwrap() {
            let mut output = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut output)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut output)
                .unwrap();
            panic!("backfill_worker ended ({exit}) before it was killed: {output}");
        }
        range_sums(&mut conn, MIGRATION).is_some_and(|s| s.owners > 2_000)
    });
    child.kill().unwrap();
    let exit = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit.signal(), Some(9), "{exit}");
    }
    #[cfg(not(unix))]
    assert!(!exit.success(), "{exit}");
    // Its sessions end as the server notices the closed connections; until then they may hold
    // a range's row lock, which the next run would (rightly) leave alone.
    poll_until("the killed process's sessions to end", || {
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND pid <> pg_backend_pid()",
        ) == 0
    });
    assert_eq!(held_ranges(&mut conn), 0);

    // Partial progress, and exactly what the checkpoints say: every owner carries, so the new
    // table holds one row per owner below a checkpoint and none above.
    let killed = range_sums(&mut conn, MIGRATION).unwrap();
    eprintln!("bf_killed: killed after {polls} polls at {killed:?}");
    assert!(
        killed.owners > 2_000 && killed.owners < i64::from(SEEDED),
        "{killed:?}"
    );
    assert!(killed.done < killed.ranges, "{killed:?}");
    assert_eq!(
        (killed.keys, killed.written),
        (killed.owners, killed.owners),
        "{killed:?}"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM addresses"),
        killed.owners
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM addresses a WHERE NOT EXISTS (
                 SELECT 1 FROM zmig_backfill_ranges r
                 WHERE a.caterer_id > r.start_after AND a.caterer_id <= r.done_through)"
        ),
        0,
        "rows beyond the checkpoints"
    );
    assert!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM zmig_backfill_ranges WHERE worker LIKE '%:{child_pid}:%'"
            )
        ) >= 1,
        "the killed process did the work"
    );
    let st = status(&mut conn, MIGRATION).unwrap().unwrap();
    assert!(!st.finished && st.keys_done == killed.keys, "{st:?}");

    // Resumed in this process: it reads exactly the owners the killed one had not.
    let resumed = backfill(&db.url, MIGRATION, &options(2, 1_000, 20_000)).expect("resume");
    let sums = range_sums(&mut conn, MIGRATION).unwrap();
    eprintln!("bf_killed: resumed {resumed:?}; ranges {sums:?}");
    assert!(resumed.finished, "{resumed:?}");
    assert_eq!(resumed.ranges_left, 0);
    assert_eq!(
        (resumed.owners, resumed.written),
        (
            i64::from(SEEDED) - killed.owners,
            i64::from(SEEDED) - killed.owners
        ),
        "the resumed run read owners the killed one had done, or skipped some"
    );
    assert_eq!(
        sums,
        RangeSums {
            ranges: killed.ranges,
            done: killed.ranges,
            keys: i64::from(SEEDED),
            owners: i64::from(SEEDED),
            written: i64::from(SEEDED),
        }
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM addresses"),
        i64::from(SEEDED)
    );
    let verified = verify(&mut conn, MIGRATION).unwrap();
    assert!(verified.ok(), "{verified:?}");
    let shape = Shape {
        label: "bf_killed",
        make: fixtures::caterers,
        migration: MIGRATION,
        key: "caterer_id",
        filtered: false,
        seed: 0,
    };
    let comparison = compare(&mut conn, &shape);
    assert!(
        comparison.clean() && comparison.synced == i64::from(SEEDED),
        "{comparison:?}"
    );

    // Once more: nothing to read, nothing written.
    let before = addresses_fingerprint(&mut conn);
    let again = backfill(&db.url, MIGRATION, &options(2, 1_000, 20_000)).expect("re-run");
    assert_eq!(
        (
            again.owners,
            again.written,
            again.batches,
            again.finished,
            again.ranges_left
        ),
        (0, 0, 0, true, 0),
        "{again:?}"
    );
    assert_eq!(addresses_fingerprint(&mut conn), before);
    assert_eq!(range_sums(&mut conn, MIGRATION).unwrap(), sums);
    eprintln!("bf_killed: {:.2?} in all", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. Not before dual_write
// ---------------------------------------------------------------------------------------------

#[test]
fn backfill_refuses_to_start_before_dual_write() {
    let fixture = fixtures::caterers("bf_early");
    generated(&fixture);
    let db = TestDb::new("bf_early");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 2); // create_tables, expand
    seed(&mut conn, 100);

    let error = backfill(&db.url, "caterers_addresses", &options(2, 100, 100))
        .expect_err("a backfill without the sync triggers would lose writes");
    let message = error.to_string();
    assert!(message.contains("dual_write"), "{message}");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses"), 0);
    // No run was recorded.
    if text(
        &mut conn,
        "SELECT (to_regclass('zmig_backfill_runs') IS NOT NULL)::text AS line",
    ) == "true"
    {
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM zmig_backfill_runs"),
            0
        );
    }
    let error = verify(&mut conn, "caterers_addresses").expect_err("nothing to verify");
    assert!(error.to_string().contains("dual_write"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// 4. verify and the write_new gate
// ---------------------------------------------------------------------------------------------

/// Applies the next pending migration; its error as text.
fn apply_next(conn: &mut PgConnection, fixture: &FixtureCrate) -> Result<String, String> {
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    let next = pending.first().expect("a pending migration");
    let name = next.name().to_string();
    conn.run_migration(&**next)
        .map(|_| name)
        .map_err(|e| e.to_string())
}

fn next_pending(conn: &mut PgConnection, fixture: &FixtureCrate) -> String {
    conn.pending_migrations(fixture.migrations())
        .unwrap()
        .first()
        .map(|m| m.name().to_string())
        .unwrap_or_default()
}

/// What `last_verification` reports: the count of differing rows.
fn latest_verification(conn: &mut PgConnection, migration: &str) -> Option<i64> {
    last_verification(conn, migration)
        .unwrap()
        .map(|(differing, _)| differing)
}

/// Each `(expected, reported)`: `last_verification` named the verification just recorded.
/// Verifications a few milliseconds apart must still come out in order.
fn assert_latest_verifications(conn: &mut PgConnection, latest: &[(i64, Option<i64>)]) {
    let recorded = sample_lines(
        conn,
        "SELECT migration || ' ' || to_char(finished_at, 'HH24:MI:SS.US') || ' differing ' || differing AS line
         FROM zmig_verifications ORDER BY finished_at",
    );
    for &(expected, reported) in latest {
        assert_eq!(
            reported,
            Some(expected),
            "just after a verify that found {expected} differing rows, last_verification \
             reported another verification's count; recorded:\n{recorded}"
        );
    }
}

fn sorted_problems(report: &zmig_runtime::verify::VerifyReport) -> Vec<(String, i64)> {
    let mut by_problem = report.by_problem.clone();
    by_problem.sort();
    by_problem
}

fn difference(owner_key: i64, problem: &str) -> Difference {
    Difference {
        owner_key,
        problem: problem.to_owned(),
    }
}

/// On a table above the gate's inline limit (10,000 owners), write_new follows the recorded
/// verification: refused while it counts differences, applied once a new one counts none. On a
/// small table, the gate compares inline.
#[test]
fn verify_reports_each_kind_of_difference_and_gates_write_new() {
    const SEEDED: i32 = 12_000;
    const MIGRATION: &str = "caterers_addresses";
    let fixture = fixtures::caterers("bf_verify");
    generated(&fixture);
    let db = TestDb::new("bf_verify");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2);
    let report = backfill(&db.url, MIGRATION, &options(2, 1_000, 20_000)).unwrap();
    assert!(
        report.finished && report.owners == i64::from(SEEDED),
        "{report:?}"
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // Broken behind zmig's back: one row differs, one is missing.
    exec(
        &mut conn,
        "UPDATE addresses SET city = 'Nowhere' WHERE caterer_id = 4321",
    );
    exec(&mut conn, "DELETE FROM addresses WHERE caterer_id = 8765");
    let broken = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(broken.differing, 2, "{broken:?}");
    assert_eq!(
        broken.examples,
        vec![difference(4321, "differs"), difference(8765, "missing")]
    );
    assert_eq!(
        sorted_problems(&broken),
        vec![("differs".to_owned(), 1), ("missing".to_owned(), 1)]
    );
    // What `last_verification` says now is checked at the end, so that the gate is tested
    // whatever it says.
    let mut latest = vec![(2, latest_verification(&mut conn, MIGRATION))];

    // The gate refuses, and nothing of write_new stays behind.
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));
    let refused = apply_next(&mut conn, &fixture).expect_err("write_new must refuse");
    assert!(refused.contains("not verified"), "{refused}");
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));
    assert_eq!(
        text(
            &mut conn,
            "SELECT attnotnull::text AS line FROM pg_attribute
             WHERE attrelid = 'caterers'::regclass AND attname = 'street1'"
        ),
        "true"
    );

    // Repaired by hand from the owners (re-running the backfill would not: its run is
    // finished), verified again: the gate lets write_new through.
    exec(
        &mut conn,
        "UPDATE addresses a SET city = c.city FROM caterers c WHERE c.id = a.caterer_id AND a.caterer_id = 4321",
    );
    exec(
        &mut conn,
        "INSERT INTO addresses (caterer_id, street1, street2, city, state, zip, created_at)
         SELECT id, street1, street2, city, state, zip, created_at FROM caterers WHERE id = 8765",
    );
    let rerun = backfill(&db.url, MIGRATION, &options(2, 1_000, 20_000)).unwrap();
    assert_eq!((rerun.owners, rerun.written), (0, 0), "{rerun:?}");
    let repaired = verify(&mut conn, MIGRATION).unwrap();
    assert!(repaired.ok(), "{repaired:?}");
    latest.push((0, latest_verification(&mut conn, MIGRATION)));
    let applied = apply_next(&mut conn, &fixture).expect("write_new after a clean verify");
    assert!(applied.ends_with("_write_new"), "{applied}");
    assert!(next_pending(&mut conn, &fixture).ends_with("_contract"));
    assert_latest_verifications(&mut conn, &latest);
}

/// The filtered fixture on a small table: rows for owners outside the filter (`unexpected`) and
/// rows without an owner, below the lowest and above the highest owner key (`orphan`), are all
/// found; write_new's inline comparison refuses them too, and passes once they are gone.
#[test]
fn verify_finds_unexpected_and_orphan_rows_and_the_inline_gate_agrees() {
    const SEEDED: i32 = 3_000;
    const MIGRATION: &str = "caterers_addr_filtered";
    let fixture = fixtures::caterers_filtered("bf_verify_small");
    generated(&fixture);
    let db = TestDb::new("bf_verify_small");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2);
    let report = backfill(&db.url, MIGRATION, &options(2, 1_000, 20_000)).unwrap();
    assert!(report.finished, "{report:?}");
    // Ids 1..=3000: 2,000 have street2, 1 in 7 of those is in state XX.
    let carrying = count(
        &mut conn,
        "SELECT count(*) AS n FROM caterers WHERE street2 IS NOT NULL AND state <> 'XX'",
    );
    assert_eq!(report.written, carrying, "{report:?}");
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // Caterer 7 is in state XX (7 % 7 = 0) and has street2 (7 % 3 = 1): outside the filter.
    assert_eq!(
        text(
            &mut conn,
            "SELECT (street2 IS NOT NULL AND state = 'XX')::text AS line FROM caterers WHERE id = 7"
        ),
        "true"
    );
    exec(
        &mut conn,
        "INSERT INTO addresses (owner_id, street1, street2, city, state, zip)
         SELECT id, street1, street2, city, state, zip FROM caterers WHERE id = 7",
    );
    // Orphans: before write_new the new table has no foreign key to refuse them.
    exec(
        &mut conn,
        "INSERT INTO addresses (owner_id, street1, city, state, zip)
         VALUES (-5, '1 Lost Rd', 'Reno', 'NV', '00001'), (999999, '2 Lost Rd', 'Reno', 'NV', '00002')",
    );
    let broken = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(
        broken.examples,
        vec![
            difference(-5, "orphan"),
            difference(7, "unexpected"),
            difference(999999, "orphan")
        ],
        "{broken:?}"
    );
    assert_eq!(broken.differing, 3);
    assert_eq!(
        sorted_problems(&broken),
        vec![("orphan".to_owned(), 2), ("unexpected".to_owned(), 1)]
    );

    let refused = apply_next(&mut conn, &fixture).expect_err("write_new must refuse");
    assert!(refused.contains("not verified"), "{refused}");

    // Gone again; the last verification still counts 3, but the table is small enough for the
    // gate to compare inline.
    exec(
        &mut conn,
        "DELETE FROM addresses WHERE owner_id IN (-5, 7, 999999)",
    );
    let latest = [(3, latest_verification(&mut conn, MIGRATION))];
    let applied = apply_next(&mut conn, &fixture).expect("write_new: the inline diff is clean");
    assert!(applied.ends_with("_write_new"), "{applied}");
    assert_latest_verifications(&mut conn, &latest);
}

/// Until write_new the new table has no foreign key: the dual_write triggers delete an owner's
/// row with the owner and carry it along when the owner's key changes. A batch of the backfill
/// mends every kind of difference `verify` names (it is what a second run does over rows
/// broken behind zmig's back). write_new then adds the foreign key `NOT VALID` and validates it
/// after a commit; interrupted by a row without an owner, it leaves the key unvalidated and
/// applies whole once the row is gone.
#[test]
fn the_triggers_cascade_a_batch_mends_every_difference_and_write_new_adds_the_foreign_key() {
    const SEEDED: i32 = 3_000;
    const MIGRATION: &str = "caterers_addr_filtered";
    let fixture = fixtures::caterers_filtered("bf_mend");
    generated(&fixture);
    let db = TestDb::new("bf_mend");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2);
    let foreign_keys = |conn: &mut PgConnection| {
        text(
            conn,
            "SELECT coalesce(string_agg(conname || ' ' || convalidated::text, ', '), 'none') AS line
             FROM pg_constraint WHERE conrelid = 'addresses'::regclass AND contype = 'f'",
        )
    };
    assert_eq!(foreign_keys(&mut conn), "none");
    let report = backfill(&db.url, MIGRATION, &options(2, 500, 20_000)).unwrap();
    assert!(report.finished, "{report:?}");
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // What ON DELETE CASCADE and ON UPDATE CASCADE would do, the triggers do: caterer 1 (with
    // street2, state not XX) is deleted, caterer 4 moves to a new key.
    let row_of = |conn: &mut PgConnection, key: i32| {
        count(
            conn,
            &format!("SELECT count(*) AS n FROM addresses WHERE owner_id = {key}"),
        )
    };
    assert_eq!((row_of(&mut conn, 1), row_of(&mut conn, 4)), (1, 1));
    exec(&mut conn, "DELETE FROM caterers WHERE id = 1");
    exec(&mut conn, "UPDATE caterers SET id = 500000 WHERE id = 4");
    assert_eq!(
        (
            row_of(&mut conn, 1),
            row_of(&mut conn, 4),
            row_of(&mut conn, 500000)
        ),
        (0, 0, 1)
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // Broken behind zmig's back, one of each kind (caterer 7 is outside the filter; caterer
    // 2500 is deleted, then a row appears for it).
    exec(
        &mut conn,
        "UPDATE addresses SET city = 'Nowhere' WHERE owner_id = 10",
    );
    exec(&mut conn, "DELETE FROM addresses WHERE owner_id = 13");
    exec(
        &mut conn,
        "INSERT INTO addresses (owner_id, street1, street2, city, state, zip)
         SELECT id, street1, street2, city, state, zip FROM caterers WHERE id = 7",
    );
    exec(&mut conn, "DELETE FROM caterers WHERE id = 2500");
    exec(
        &mut conn,
        "INSERT INTO addresses (owner_id, street1, city, state, zip)
         VALUES (2500, '1 Lost Rd', 'Reno', 'NV', '00001')",
    );
    let broken = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(
        sorted_problems(&broken),
        vec![
            ("differs".to_owned(), 1),
            ("missing".to_owned(), 1),
            ("orphan".to_owned(), 1),
            ("unexpected".to_owned(), 1)
        ],
        "{broken:?}"
    );
    // Two batches over the keys, as the runtime would call them: the four rows are mended,
    // and again nothing is written.
    let batch = |conn: &mut PgConnection, after: i64| {
        text(
            conn,
            &format!(
                "SELECT last_key || ' ' || owners || ' ' || written AS line
                 FROM zmig_{MIGRATION}_backfill({after}, 3000, 2000)"
            ),
        )
    };
    // Ids 2..=2002 but 4, then 2003..=3000 but 2500 (1 and 2500 are gone, 4 is 500000).
    assert_eq!(batch(&mut conn, 0), "2002 2000 3");
    assert_eq!(batch(&mut conn, 2002), "3000 997 1");
    assert_eq!(batch(&mut conn, 0), "2002 2000 0");
    assert_eq!(batch(&mut conn, 2002), "3000 997 0");
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    assert_eq!(
        text(
            &mut conn,
            "SELECT city AS line FROM addresses WHERE owner_id = 10"
        ),
        text(&mut conn, "SELECT city AS line FROM caterers WHERE id = 10")
    );

    // The same through the runner: a finished backfill does nothing, `again` walks every key
    // once more and mends.
    exec(
        &mut conn,
        "UPDATE addresses SET zip = '99999' WHERE owner_id = 2999",
    );
    let finished = backfill(&db.url, MIGRATION, &options(2, 500, 20_000)).unwrap();
    assert_eq!((finished.owners, finished.written), (0, 0), "{finished:?}");
    let again = BackfillOptions {
        again: true,
        ..options(2, 500, 20_000)
    };
    let mended = backfill(&db.url, MIGRATION, &again).unwrap();
    assert!(mended.finished, "{mended:?}");
    // Every owner but 1 and 2500, 500000 included; one row written.
    assert_eq!(
        (mended.owners, mended.written),
        (i64::from(SEEDED) - 2, 1),
        "{mended:?}"
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // A row without an owner slips in after the verification: write_new's validation refuses
    // it. The foreign key stays, not valid, and checks every write from then on.
    exec(
        &mut conn,
        "INSERT INTO addresses (owner_id, street1, city, state, zip)
         VALUES (999999, '2 Lost Rd', 'Reno', 'NV', '00002')",
    );
    let refused = apply_next(&mut conn, &fixture).expect_err("validation must refuse the orphan");
    assert!(refused.contains("foreign key"), "{refused}");
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));
    assert_eq!(foreign_keys(&mut conn), "addresses_owner_id_fkey false");
    let checked = diesel::sql_query(
        "INSERT INTO addresses (owner_id, street1, city, state, zip)
         VALUES (888888, '3 Lost Rd', 'Reno', 'NV', '00003')",
    )
    .execute(&mut conn)
    .expect_err("the unvalidated foreign key checks new rows");
    assert!(checked.to_string().contains("foreign key"), "{checked}");

    // Gone, and write_new runs again from the top, whole.
    exec(&mut conn, "DELETE FROM addresses WHERE owner_id = 999999");
    let applied = apply_next(&mut conn, &fixture).expect("write_new runs again");
    assert!(applied.ends_with("_write_new"), "{applied}");
    assert_eq!(foreign_keys(&mut conn), "addresses_owner_id_fkey true");
    // Now the foreign key cascades, and the triggers find nothing left to do.
    exec(&mut conn, "DELETE FROM caterers WHERE id = 16");
    exec(&mut conn, "UPDATE caterers SET id = 600000 WHERE id = 19");
    assert_eq!(
        (
            row_of(&mut conn, 16),
            row_of(&mut conn, 19),
            row_of(&mut conn, 600000)
        ),
        (0, 0, 1)
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
}

// ---------------------------------------------------------------------------------------------
// 5. Pause and resume
// ---------------------------------------------------------------------------------------------

/// Polls until `workers` sessions have each run the pause check more than `times` times from
/// now on, asserting at every poll that the run stands still: `status` as `expected`, no range
/// held, the new table's row count unchanged.
fn assert_waits_while_paused(
    conn: &mut PgConnection,
    migration: &str,
    workers: usize,
    times: usize,
    expected: &BackfillStatus,
) {
    let rows = count(conn, "SELECT count(*) AS n FROM addresses");
    let since = db_now(conn);
    let mut seen: HashMap<i32, HashSet<String>> = HashMap::new();
    let mut polls = 0;
    poll_until(
        "the paused workers to check the pause again and again",
        || {
            polls += 1;
            for (pid, started) in pause_checks(conn, &since) {
                seen.entry(pid).or_default().insert(started);
            }
            let st = status(conn, migration).unwrap().unwrap();
            assert_eq!(&st, expected, "the run moved while paused");
            assert_eq!(held_ranges(conn), 0, "a paused worker holds a range");
            assert_eq!(count(conn, "SELECT count(*) AS n FROM addresses"), rows);
            seen.values().filter(|s| s.len() > times).count() >= workers
        },
    );
    eprintln!(
        "bf_pause: paused at {} keys; {polls} polls saw {:?} pause checks per worker",
        expected.keys_done,
        seen.values().map(HashSet::len).collect::<Vec<_>>()
    );
}

/// Pausing needs a run; a paused run's workers wait (holding no range, copying nothing) until
/// stopped or resumed; paused in the middle, the workers finish their batch and wait; resumed,
/// the same call finishes the backfill.
#[test]
fn pause_and_resume() {
    const SEEDED: i32 = 20_000;
    const MIGRATION: &str = "caterers_addresses";
    let started = Instant::now();
    let fixture = fixtures::caterers("bf_pause");
    generated(&fixture);
    let db = TestDb::new("bf_pause");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    seed(&mut conn, SEEDED);
    apply_first(&mut conn, &fixture, 2);

    // Nothing to pause yet.
    let error = set_paused(&mut conn, MIGRATION, true).expect_err("no run to pause");
    assert!(error.to_string().contains("no backfill"), "{error}");
    assert_eq!(status(&mut conn, MIGRATION).unwrap(), None);

    // A call stopped before its first batch records the run and its ranges, and copies nothing.
    let stop = Arc::new(AtomicBool::new(true));
    let stopped = backfill(
        &db.url,
        MIGRATION,
        &BackfillOptions {
            stop: Some(stop.clone()),
            ..options(2, 100, 100)
        },
    )
    .unwrap();
    assert_eq!(
        (stopped.owners, stopped.batches, stopped.finished),
        (0, 0, false),
        "{stopped:?}"
    );
    let fresh = BackfillStatus {
        keys_total: i64::from(SEEDED),
        keys_done: 0,
        owners: 0,
        written: 0,
        finished: false,
        paused: false,
    };
    assert_eq!(status(&mut conn, MIGRATION).unwrap().as_ref(), Some(&fresh));
    assert_eq!(
        stopped.ranges_left,
        range_sums(&mut conn, MIGRATION).unwrap().ranges
    );

    // Paused before it starts: the workers wait, then stop when told.
    set_paused(&mut conn, MIGRATION, true).unwrap();
    let paused = BackfillStatus {
        paused: true,
        ..fresh.clone()
    };
    assert_eq!(
        status(&mut conn, MIGRATION).unwrap().as_ref(),
        Some(&paused)
    );
    stop.store(false, Ordering::SeqCst);
    let waited = thread::scope(|s| {
        // Should an assertion fail here, the paused run must still end, or the scope would
        // wait for it forever.
        let _stop = SetOnDrop(&stop);
        let runner = s.spawn(|| {
            backfill(
                &db.url,
                MIGRATION,
                &BackfillOptions {
                    stop: Some(stop.clone()),
                    ..options(2, 100, 100)
                },
            )
        });
        assert_waits_while_paused(&mut conn, MIGRATION, 2, 3, &paused);
        assert!(!runner.is_finished());
        stop.store(true, Ordering::SeqCst);
        runner.join().expect("backfill panicked")
    })
    .unwrap();
    assert_eq!(
        (waited.owners, waited.batches, waited.finished),
        (0, 0, false),
        "{waited:?}"
    );

    // Running, paused half way, resumed: the same call finishes.
    set_paused(&mut conn, MIGRATION, false).unwrap();
    assert_eq!(status(&mut conn, MIGRATION).unwrap().as_ref(), Some(&fresh));
    let halt = Arc::new(AtomicBool::new(false));
    let slow = BackfillOptions {
        pause: Duration::from_millis(5),
        stop: Some(halt.clone()),
        ..options(2, 100, 100)
    };
    let (finished, paused_at) = thread::scope(|s| {
        let _halt = SetOnDrop(&halt);
        let runner = s.spawn(|| backfill(&db.url, MIGRATION, &slow));
        poll_until("the backfill to get going", || {
            status(&mut conn, MIGRATION).unwrap().unwrap().keys_done >= 1_000
        });
        set_paused(&mut conn, MIGRATION, true).unwrap();
        // Each worker finishes the batch it is in, lets its range go, and waits. A worker whose
        // pause check began after the pause was recorded has seen it, and claims no range
        // until the resume.
        let paused_since = db_now(&mut conn);
        poll_until(
            "the workers to see the pause and let their ranges go",
            || {
                let seen: HashSet<i32> = pause_checks(&mut conn, &paused_since)
                    .into_iter()
                    .map(|(pid, _)| pid)
                    .collect();
                seen.len() >= 2 && held_ranges(&mut conn) == 0
            },
        );
        let paused_at = status(&mut conn, MIGRATION).unwrap().unwrap();
        assert!(
            paused_at.paused && paused_at.keys_done < paused_at.keys_total,
            "paused too late: {paused_at:?}"
        );
        assert_waits_while_paused(&mut conn, MIGRATION, 2, 3, &paused_at);
        assert!(!runner.is_finished());
        set_paused(&mut conn, MIGRATION, false).unwrap();
        (runner.join().expect("backfill panicked"), paused_at)
    });
    let finished = finished.unwrap();
    eprintln!(
        "bf_pause: paused at {paused_at:?}, then {finished:?}; {:.2?} in all",
        started.elapsed()
    );
    assert!(finished.finished, "{finished:?}");
    assert_eq!(
        (finished.owners, finished.written),
        (i64::from(SEEDED), i64::from(SEEDED))
    );
    assert_eq!(
        status(&mut conn, MIGRATION).unwrap(),
        Some(BackfillStatus {
            keys_total: i64::from(SEEDED),
            keys_done: i64::from(SEEDED),
            owners: i64::from(SEEDED),
            written: i64::from(SEEDED),
            finished: true,
            paused: false,
        })
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
}
