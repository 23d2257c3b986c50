//! The extract sync triggers under concurrent writers: real threads, each with its own
//! connection to the test database, write through the old shape (and, at write_new, through the
//! new one too) while the triggers keep both in step; afterwards one SQL query compares the two
//! tables row by row.
//!
//! Every writer runs a fixed number of operations drawn from its own seeded RNG, so the work is
//! bounded by counts, never by time, and nothing sleeps. Which rows the writers collide on still
//! depends on scheduling, which is the point; a failure prints the offending rows.
//!
//! Transactions that PostgreSQL aborts with a deadlock (SQLSTATE 40P01) or a serialization
//! failure (40001) are retried, as an application would, and counted: retries are allowed, lost
//! writes are not. Diesel reports 40P01 as `DatabaseErrorKind::Unknown`, so it is recognised by
//! its message, which each writer pins to English with `lc_messages = 'C'`. Each writer also
//! lowers `deadlock_timeout` (1 s by default) so that a deadlock costs milliseconds, not a second.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamp};
use diesel_migrations::MigrationHarness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_tests::writes::{
    bind_addr, boxed, insert_caterer, Addr, Change, Events, Id, Shape, Stats,
};
use zmig_tests::{count, exec, fixtures, writer_conn, FixtureCrate, TestDb};

/// Caterers in the table before the migration starts (ids 1..=SEEDED).
const SEEDED: i32 = 2_000;
/// Half of the picked targets are hot ids, 1..=HOT_DUAL_WRITE at dual_write and 1..=HOT_WRITE_NEW
/// at write_new, so writers really collide on the same rows; deletes never touch ids up to
/// COLD_FROM, so the hot rows live to the end.
const HOT_DUAL_WRITE: u32 = 16;
const HOT_WRITE_NEW: u32 = 4;
const COLD_FROM: u32 = 32;

const CITIES: [&str; 5] = ["Boston", "Austin", "Denver", "Tulsa", "Reno"];
const STATES: [&str; 5] = ["MA", "TX", "CO", "OK", "NV"];

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn generated(fixture: &FixtureCrate) {
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
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

/// Applies pending migrations in order until one whose name ends with `_{phase}`; returns their
/// names.
fn apply_through(conn: &mut PgConnection, fixture: &FixtureCrate, phase: &str) -> Vec<String> {
    let suffix = format!("_{phase}");
    let mut applied = Vec::new();
    for migration in conn.pending_migrations(fixture.migrations()).unwrap() {
        let name = migration.name().to_string();
        conn.run_migration(&*migration)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        applied.push(name.clone());
        if name.ends_with(&suffix) {
            return applied;
        }
    }
    panic!("no pending migration ends with {suffix}; applied {applied:?}");
}

fn assert_phases(applied: &[String], phases: &[&str]) {
    assert_eq!(applied.len(), phases.len(), "{applied:?}");
    for (name, phase) in applied.iter().zip(phases) {
        assert!(
            name.ends_with(&format!("_{phase}")),
            "expected phase {phase}, applied {name}"
        );
    }
}

/// The caterers that exist before the migration: a third without `street2`, a seventh in state
/// `XX`, so with the filter about 57% of them carry an address.
fn seed_caterers(conn: &mut PgConnection) {
    let inserted = exec(
        conn,
        "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
         SELECT 'seed ' || i, 'seed' || i || '@example.com', '555-' || lpad(i::text, 4, '0'),
                i || ' Seed St',
                CASE WHEN i % 3 = 0 THEN NULL ELSE 'Unit ' || i END,
                (ARRAY['Boston', 'Austin', 'Denver', 'Tulsa', 'Reno'])[1 + i % 5],
                lpad((i * 37 % 100000)::text, 5, '0'),
                CASE WHEN i % 7 = 0 THEN 'XX' ELSE (ARRAY['MA', 'TX', 'CO', 'OK', 'NV'])[1 + i % 5] END
         FROM generate_series(1, 2000) AS i",
    );
    assert_eq!(inserted, SEEDED as usize);
    assert_eq!(
        count(conn, "SELECT max(id)::bigint AS n FROM caterers"),
        i64::from(SEEDED)
    );
}

/// An id to write to: half the time one of the hot rows 1..=`hot`, else any id handed out so
/// far (it may be deleted by now; the write then touches nothing). Draws the same number of
/// random values whatever `max_id` is, so each thread's sequence of operations depends on its
/// seed only.
fn pick(rng: &mut StdRng, max_id: &AtomicI32, hot: u32) -> i32 {
    let is_hot = rng.gen_bool(0.5);
    let draw = rng.gen::<u32>();
    let bound = if is_hot {
        hot
    } else {
        max_id.load(Ordering::Relaxed) as u32
    };
    (draw % bound) as i32 + 1
}

/// An id to delete: never a hot row, so the collisions go on until the end.
fn pick_cold(rng: &mut StdRng, max_id: &AtomicI32) -> i32 {
    let draw = rng.gen::<u32>();
    (draw % (max_id.load(Ordering::Relaxed) as u32 - COLD_FROM)) as i32 + COLD_FROM as i32 + 1
}

/// Two different ids, ascending, so multi-row transactions lock in one global order.
fn pick_two(rng: &mut StdRng, max_id: &AtomicI32, hot: u32) -> (i32, i32) {
    let a = pick(rng, max_id, hot);
    let mut b = pick(rng, max_id, hot);
    if b == a {
        b = if a > 1 { a - 1 } else { a + 1 };
    }
    (a.min(b), a.max(b))
}

/// A full address, unique to `tag`. `in_filter` decides whether it passes the filtered
/// fixture's `street2 IS NOT NULL AND state <> 'XX'`. (Draws the suite number only where it
/// uses it.)
fn random_addr(rng: &mut StdRng, tag: &str, in_filter: bool) -> Addr {
    let valid_state = STATES[rng.gen_range(0..STATES.len())].to_owned();
    let (street2, state) = if in_filter {
        (
            Some(format!("Suite {}", rng.gen_range(1..500))),
            valid_state,
        )
    } else {
        match rng.gen_range(0..3) {
            0 => (None, valid_state),
            1 => (
                Some(format!("Suite {}", rng.gen_range(1..500))),
                "XX".to_owned(),
            ),
            _ => (None, "XX".to_owned()),
        }
    };
    Addr {
        street1: Some(format!("{} {tag} Ave", rng.gen_range(1..10_000))),
        street2,
        city: Some(CITIES[rng.gen_range(0..CITIES.len())].to_owned()),
        state: Some(state),
        zip: Some(format!("{:05}", rng.gen_range(0..100_000))),
    }
}

/// Changes columns the sync does not watch. Returns whether the row still existed.
fn update_other(conn: &mut PgConnection, id: i32, tag: &str) -> QueryResult<bool> {
    boxed("UPDATE caterers SET name = $2, phone = $3, updated_at = now() WHERE id = $1")
        .bind::<Integer, _>(id)
        .bind::<Text, _>(format!("renamed {tag}"))
        .bind::<Text, _>(format!("555-{tag}"))
        .execute(conn)
        .map(|n| n == 1)
}

fn delete_caterer(conn: &mut PgConnection, id: i32) -> QueryResult<bool> {
    boxed("DELETE FROM caterers WHERE id = $1")
        .bind::<Integer, _>(id)
        .execute(conn)
        .map(|n| n == 1)
}

// ---------------------------------------------------------------------------------------------
// dual_write: the owner table is written, the triggers follow in the new table
// ---------------------------------------------------------------------------------------------

/// The backfill, done while nothing writes: one row per carrying owner.
fn copy_existing(conn: &mut PgConnection, shape: &Shape) -> usize {
    exec(
        conn,
        &format!(
            "INSERT INTO addresses ({key}, street1, street2, city, state, zip, created_at, updated_at)
             SELECT c.id, c.street1, c.street2, c.city, c.state, c.zip, c.created_at, c.updated_at
             FROM caterers c WHERE {carries}",
            key = shape.key,
            carries = shape.carries("c"),
        ),
    )
}

/// The outcome of comparing owners and new rows.
#[derive(QueryableByName, Debug, PartialEq)]
struct SyncReport {
    /// New rows with no owner.
    #[diesel(sql_type = BigInt)]
    orphans: i64,
    /// Carrying owners without a new row.
    #[diesel(sql_type = BigInt)]
    missing: i64,
    /// Non-carrying owners with a new row.
    #[diesel(sql_type = BigInt)]
    extra: i64,
    /// Owners whose new row holds other values.
    #[diesel(sql_type = BigInt)]
    mismatched: i64,
    /// Owners with a new row (for the record).
    #[diesel(sql_type = BigInt)]
    synced: i64,
    /// Owners without one (for the record).
    #[diesel(sql_type = BigInt)]
    bare: i64,
}

impl SyncReport {
    fn clean(&self) -> bool {
        self.orphans == 0 && self.missing == 0 && self.extra == 0 && self.mismatched == 0
    }
}

/// Compares every owner with its new row in one query.
fn sync_report(conn: &mut PgConnection, shape: &Shape) -> SyncReport {
    let sql = format!(
        "SELECT
             count(*) FILTER (WHERE c.id IS NULL) AS orphans,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NULL AND {carries}) AS missing,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL AND NOT {carries}) AS extra,
             count(*) FILTER (WHERE c.id IS NOT NULL AND n.{key} IS NOT NULL
                 AND (c.street1, c.street2, c.city, c.state, c.zip)
                     IS DISTINCT FROM (n.street1, n.street2, n.city, n.state, n.zip)) AS mismatched,
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

fn sync_offenders(conn: &mut PgConnection, shape: &Shape) -> String {
    sample_lines(
        conn,
        &format!(
            "SELECT 'owner ' || CASE WHEN c.id IS NULL THEN '-' ELSE row(c.id, c.street1, c.street2, c.city, c.state, c.zip)::text END
                    || ' carries=' || {carries}
                    || ' new ' || CASE WHEN n.{key} IS NULL THEN '-' ELSE row(n.{key}, n.street1, n.street2, n.city, n.state, n.zip)::text END AS line
             FROM caterers c FULL JOIN addresses n ON n.{key} = c.id
             WHERE c.id IS NULL OR (n.{key} IS NULL) = {carries}
                OR (n.{key} IS NOT NULL AND (c.street1, c.street2, c.city, c.state, c.zip)
                    IS DISTINCT FROM (n.street1, n.street2, n.city, n.state, n.zip))
             ORDER BY coalesce(c.id, n.{key}) LIMIT 10",
            key = shape.key,
            carries = shape.carries("c"),
        ),
    )
}

/// A random change to some address columns of a caterer, as the release before write_new
/// makes them.
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
            STATES[rng.gen_range(0..5)].to_owned()
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

/// A change that moves a row carrying under the filter out of it, or one outside back in.
fn crossing_change(rng: &mut StdRng, tag: &str, in_filter_now: bool) -> Change {
    if in_filter_now {
        if rng.gen_bool(0.5) {
            Change::Street2(None)
        } else {
            Change::State("XX".to_owned())
        }
    } else {
        Change::All(random_addr(rng, tag, true))
    }
}

/// Applies `change` to caterer `id` in one UPDATE, which also reports, exactly, whether the row
/// carried an address before and after (the sub-select locks the row, so what it reads is the
/// version the UPDATE replaces). `None`: the row is gone.
fn apply_change(
    change: &Change,
    conn: &mut PgConnection,
    shape: &Shape,
    id: i32,
) -> QueryResult<Option<Transition>> {
    let set = change.set_list();
    let sql = format!(
        "UPDATE caterers c SET {set}
         FROM (SELECT o.id, {was} AS was, o.street2 IS NULL AS street2_was_null
               FROM caterers o WHERE o.id = $1 FOR NO KEY UPDATE) o
         WHERE c.id = o.id
         RETURNING o.was, {now} AS now, o.street2_was_null, c.street2 IS NULL AS street2_now_null",
        was = shape.carries("o"),
        now = shape.carries("c"),
    );
    change
        .bind_values(boxed(sql).bind::<Integer, _>(id))
        .get_results::<Transition>(conn)
        .map(|rows| rows.into_iter().next())
}

#[derive(QueryableByName)]
struct Transition {
    #[diesel(sql_type = Bool)]
    was: bool,
    #[diesel(sql_type = Bool)]
    now: bool,
    #[diesel(sql_type = Bool)]
    street2_was_null: bool,
    #[diesel(sql_type = Bool)]
    street2_now_null: bool,
}

/// Records what an address update did.
fn record(events: &mut Events, t: Option<Transition>) {
    let Some(t) = t else {
        events.push("target_gone");
        return;
    };
    events.push("address_updated");
    match (t.was, t.now) {
        (false, true) => events.push("started_carrying"),
        (true, false) => events.push("stopped_carrying"),
        _ => {}
    }
    match (t.street2_was_null, t.street2_now_null) {
        (true, false) => events.push("street2_from_null"),
        (false, true) => events.push("street2_to_null"),
        _ => {}
    }
}

/// A whole row as Diesel loads it, to write it back unchanged as `save_changes` would.
#[derive(QueryableByName)]
struct FullRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    phone: String,
    #[diesel(embed)]
    addr: Addr,
    #[diesel(sql_type = Timestamp)]
    created_at: chrono::NaiveDateTime,
    #[diesel(sql_type = Timestamp)]
    updated_at: chrono::NaiveDateTime,
}

/// One writer at dual_write: `ops` operations, each one transaction.
fn dual_write_writer(
    url: &str,
    shape: &Shape,
    thread: u64,
    ops: usize,
    max_id: &AtomicI32,
    start: &Barrier,
) -> Stats {
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(shape.seed * 1_000 + thread);
    let mut stats = Stats::default();
    start.wait();
    for i in 0..ops {
        let tag = format!("w{thread}n{i}");
        let what = format!("{} writer {thread} op {i}", shape.label);
        let roll = rng.gen_range(0..100);
        match roll {
            // Insert a caterer, in the filter or not.
            0..=13 => {
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
            // Change address columns.
            14..=39 => {
                let id = pick(&mut rng, max_id, HOT_DUAL_WRITE);
                let change = random_change(&mut rng, &tag);
                stats.run(&what, &mut conn, |c| {
                    let mut events = vec![];
                    record(&mut events, apply_change(&change, c, shape, id)?);
                    Ok(events)
                });
            }
            // Change only columns the sync does not watch.
            40..=51 => {
                let id = pick(&mut rng, max_id, HOT_DUAL_WRITE);
                stats.run(&what, &mut conn, |c| {
                    Ok(vec![if update_other(c, id, &tag)? {
                        "other_updated"
                    } else {
                        "target_gone"
                    }])
                });
            }
            // Rewrite every column with its own value, in SQL.
            52..=57 => {
                let id = pick(&mut rng, max_id, HOT_DUAL_WRITE);
                stats.run(&what, &mut conn, |c| {
                    let n = boxed(
                        "UPDATE caterers SET name = name, email = email, phone = phone, street1 = street1,
                             street2 = street2, city = city, zip = zip, state = state,
                             created_at = created_at, updated_at = updated_at
                         WHERE id = $1",
                    )
                    .bind::<Integer, _>(id)
                    .execute(c)?;
                    Ok(vec![if n == 1 { "rewritten_same" } else { "target_gone" }])
                });
            }
            // Load a row, then write every column back (two autocommit statements, as Diesel's
            // `save_changes` after a plain load: a concurrent change in between is reverted,
            // which the sync must follow too).
            58..=63 => {
                let id = pick(&mut rng, max_id, HOT_DUAL_WRITE);
                let loaded = stats_load(&mut stats, &what, &mut conn, id);
                if let Some(row) = loaded {
                    stats.run(&what, &mut conn, |c| {
                        let q = boxed(
                            "UPDATE caterers SET name = $2, email = $3, phone = $4, street1 = $5, street2 = $6,
                                 city = $7, state = $8, zip = $9, created_at = $10, updated_at = $11
                             WHERE id = $1",
                        )
                        .bind::<Integer, _>(id)
                        .bind::<Text, _>(row.name.clone())
                        .bind::<Text, _>(row.email.clone())
                        .bind::<Text, _>(row.phone.clone());
                        let n = bind_addr(q, &row.addr)
                            .bind::<Timestamp, _>(row.created_at)
                            .bind::<Timestamp, _>(row.updated_at)
                            .execute(c)?;
                        Ok(vec![if n == 1 { "rewritten_loaded" } else { "target_gone" }])
                    });
                }
            }
            // Delete a caterer (never a hot one).
            64..=73 => {
                let id = pick_cold(&mut rng, max_id);
                stats.run(&what, &mut conn, |c| {
                    Ok(vec![if delete_caterer(c, id)? {
                        "deleted"
                    } else {
                        "target_gone"
                    }])
                });
            }
            // Multi-statement transactions.
            _ => multi_statement(&mut rng, &mut stats, &mut conn, shape, &what, &tag, max_id),
        }
    }
    stats
}

fn stats_load(stats: &mut Stats, what: &str, conn: &mut PgConnection, id: i32) -> Option<FullRow> {
    let mut loaded = None;
    stats.run(what, conn, |c| {
        loaded = boxed(
            "SELECT name, email, phone, street1, street2, city, state, zip, created_at, updated_at
             FROM caterers WHERE id = $1",
        )
        .bind::<Integer, _>(id)
        .get_result::<FullRow>(c)
        .optional()?;
        Ok(vec![if loaded.is_some() {
            "loaded"
        } else {
            "target_gone"
        }])
    });
    loaded
}

fn multi_statement(
    rng: &mut StdRng,
    stats: &mut Stats,
    conn: &mut PgConnection,
    shape: &Shape,
    what: &str,
    tag: &str,
    max_id: &AtomicI32,
) {
    match rng.gen_range(0..5) {
        // A new caterer, moved across the filter (or just changed) before commit.
        0 => {
            let in_filter = rng.gen_bool(0.5);
            let a = random_addr(rng, tag, in_filter);
            let change = crossing_change(rng, &format!("{tag}x"), in_filter);
            let rename = rng.gen_bool(0.5);
            stats.run(what, conn, |c| {
                c.transaction(|c| {
                    let id = insert_caterer(c, tag, &a)?;
                    let mut events = vec!["txn_insert_then_change", "inserted"];
                    record(&mut events, apply_change(&change, c, shape, id)?);
                    if rename {
                        update_other(c, id, tag)?;
                    }
                    max_id.fetch_max(id, Ordering::Relaxed);
                    Ok(events)
                })
            });
        }
        // Two existing caterers, in id order: each gets an address change or another change.
        1 => {
            let (a, b) = pick_two(rng, max_id, HOT_DUAL_WRITE);
            let changes: Vec<(i32, Option<Change>)> = [a, b]
                .into_iter()
                .map(|id| {
                    (
                        id,
                        if rng.gen_bool(0.7) {
                            Some(random_change(rng, tag))
                        } else {
                            None
                        },
                    )
                })
                .collect();
            stats.run(what, conn, |c| {
                c.transaction(|c| {
                    let mut events = vec!["txn_two_rows"];
                    for (id, change) in &changes {
                        match change {
                            Some(change) => {
                                record(&mut events, apply_change(change, c, shape, *id)?)
                            }
                            None => events.push(if update_other(c, *id, tag)? {
                                "other_updated"
                            } else {
                                "target_gone"
                            }),
                        }
                    }
                    Ok(events)
                })
            });
        }
        // One caterer's address changes, another (cold) caterer is deleted, in id order.
        2 => {
            let updated = pick(rng, max_id, HOT_DUAL_WRITE);
            let deleted = pick_cold(rng, max_id);
            let change = random_change(rng, tag);
            stats.run(what, conn, |c| {
                c.transaction(|c| {
                    let mut events = vec!["txn_update_and_delete"];
                    if deleted < updated {
                        events.push(if delete_caterer(c, deleted)? {
                            "deleted"
                        } else {
                            "target_gone"
                        });
                        record(&mut events, apply_change(&change, c, shape, updated)?);
                    } else {
                        record(&mut events, apply_change(&change, c, shape, updated)?);
                        events.push(if delete_caterer(c, deleted)? {
                            "deleted"
                        } else {
                            "target_gone"
                        });
                    }
                    Ok(events)
                })
            });
        }
        // An address change, a second one in a savepoint that is rolled back, then a rename.
        3 => {
            let id = pick(rng, max_id, HOT_DUAL_WRITE);
            let kept = random_change(rng, tag);
            let undone = random_change(rng, &format!("{tag}u"));
            stats.run(what, conn, |c| {
                c.transaction(|c| {
                    let mut events = vec!["txn_savepoint"];
                    record(&mut events, apply_change(&kept, c, shape, id)?);
                    let inner = c.transaction::<(), Error, _>(|c| {
                        apply_change(&undone, c, shape, id)?;
                        Err(Error::RollbackTransaction)
                    });
                    match inner {
                        Err(Error::RollbackTransaction) => events.push("savepoint_rolled_back"),
                        Err(e) => return Err(e),
                        Ok(()) => unreachable!(),
                    }
                    update_other(c, id, tag)?;
                    Ok(events)
                })
            });
        }
        // An address change and an insert, rolled back whole.
        _ => {
            let id = pick(rng, max_id, HOT_DUAL_WRITE);
            let change = random_change(rng, tag);
            let in_filter = rng.gen_bool(0.5);
            let a = random_addr(rng, tag, in_filter);
            stats.run(what, conn, |c| {
                let outcome = c.transaction::<(), Error, _>(|c| {
                    apply_change(&change, c, shape, id)?;
                    insert_caterer(c, tag, &a)?;
                    Err(Error::RollbackTransaction)
                });
                match outcome {
                    Err(Error::RollbackTransaction) => Ok(vec!["txn_rolled_back"]),
                    Err(e) => Err(e),
                    Ok(()) => unreachable!(),
                }
            });
        }
    }
}

fn dual_write_case(shape: &Shape) {
    const WRITERS: u64 = 4;
    const OPS: usize = 1_500;
    let started = Instant::now();
    let fixture = (shape.make)(shape.label);
    generated(&fixture);
    let db = TestDb::new(shape.label);
    let mut conn = db.conn();

    // The caterers exist before the migration; expand and dual_write start the sync; the rows
    // from before it are copied as the backfill would, while nothing writes.
    assert_phases(
        &apply_through(&mut conn, &fixture, "create_tables"),
        &["create_tables"],
    );
    seed_caterers(&mut conn);
    assert_phases(
        &apply_through(&mut conn, &fixture, "dual_write"),
        &["expand", "dual_write"],
    );
    let copied = copy_existing(&mut conn, shape);
    let before = sync_report(&mut conn, shape);
    assert!(
        before.clean(),
        "{}: after the copy: {before:?}",
        shape.label
    );
    assert_eq!(before.synced, copied as i64);
    if shape.filtered {
        assert!(
            before.bare > 500,
            "{}: the seed should leave many owners outside the filter: {before:?}",
            shape.label
        );
    }

    let max_id = AtomicI32::new(SEEDED);
    let start = Barrier::new(WRITERS as usize);
    let writing = Instant::now();
    let all = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (url, max_id, start) = (&db.url, &max_id, &start);
                s.spawn(move || dual_write_writer(url, shape, t, OPS, max_id, start))
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("a writer panicked"))
            .collect::<Vec<_>>()
    });
    let stats = Stats::merge(all);
    let writing = writing.elapsed();

    let report = sync_report(&mut conn, shape);
    eprintln!(
        "{}: {WRITERS} writers x {OPS} ops in {writing:.2?} ({:.2?} in all); retries {:?} (first: {})\n  events {:?}\n  final {report:?}",
        shape.label,
        started.elapsed(),
        stats.retries,
        stats.first_retry.as_deref().unwrap_or("-"),
        stats.events,
    );
    assert!(
        report.clean(),
        "{}: owners and new rows disagree: {report:?}\n{}",
        shape.label,
        sync_offenders(&mut conn, shape)
    );

    // The writers really did each kind of thing, many times.
    stats.assert_at_least(
        shape.label,
        &[
            ("inserted", 600),
            ("inserted_in_filter", 200),
            ("inserted_outside_filter", 200),
            ("address_updated", 1_300),
            ("street2_to_null", 150),
            ("street2_from_null", 150),
            ("other_updated", 400),
            ("rewritten_same", 150),
            ("rewritten_loaded", 150),
            ("deleted", 350),
            ("txn_insert_then_change", 150),
            ("txn_two_rows", 150),
            ("txn_update_and_delete", 150),
            ("txn_savepoint", 150),
            ("savepoint_rolled_back", 150),
            ("txn_rolled_back", 150),
        ],
    );
    if shape.filtered {
        stats.assert_at_least(
            shape.label,
            &[("started_carrying", 200), ("stopped_carrying", 200)],
        );
        assert!(
            report.bare > 200 && report.synced > 200,
            "{}: both kinds of owner at the end: {report:?}",
            shape.label
        );
    }
}

/// At dual_write only the owner table is written. Four writers insert, change addresses (in and
/// out of the filter), change other columns, rewrite rows unchanged and delete, in single- and
/// multi-statement transactions; afterwards every carrying owner has exactly its new row, no
/// other owner has one, and no new row lacks its owner.
#[test]
fn dual_write_keeps_new_table_in_step_under_concurrent_writers() {
    let shapes = [
        Shape {
            label: "conc_dual",
            make: fixtures::caterers,
            migration: "caterers_addresses",
            key: "caterer_id",
            filtered: false,
            seed: 11,
        },
        Shape {
            label: "conc_dual_filtered",
            make: fixtures::caterers_filtered,
            migration: "caterers_addr_filtered",
            key: "owner_id",
            filtered: true,
            seed: 23,
        },
    ];
    for shape in &shapes {
        dual_write_case(shape);
    }
}

// ---------------------------------------------------------------------------------------------
// write_new: the old release writes the owner table, the new release the new table
// ---------------------------------------------------------------------------------------------

/// `test_seed`: every caterer's address when the writers start. `test_ledger`: per caterer, the
/// outcome of the last committed write to its address (or its deletion), recorded in the
/// writing transaction itself after the write. All writes to one caterer's address lock its
/// owner row or its addresses row (or its unique key) until commit, and so does the ledger
/// row, so the ledger's last entry is the last write that committed: what both tables must
/// show at the end.
const LEDGER: &str = "
    CREATE TABLE test_seed AS SELECT id AS caterer_id, street1, street2, city, state, zip FROM caterers;
    CREATE TABLE test_ledger (
        caterer_id integer PRIMARY KEY,
        writes integer NOT NULL,
        deleted boolean NOT NULL,
        street1 text, street2 text, city text, state text, zip text
    );";

/// Records, in the current transaction, that caterer `id` now has address `a` (all `None`: no
/// address) or is deleted.
fn log_write(conn: &mut PgConnection, id: i32, deleted: bool, a: &Addr) -> QueryResult<()> {
    let q = boxed(
        "INSERT INTO test_ledger AS l (caterer_id, writes, deleted, street1, street2, city, state, zip)
         VALUES ($1, 1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (caterer_id) DO UPDATE SET writes = l.writes + 1, deleted = EXCLUDED.deleted,
             street1 = EXCLUDED.street1, street2 = EXCLUDED.street2, city = EXCLUDED.city,
             state = EXCLUDED.state, zip = EXCLUDED.zip",
    )
    .bind::<Integer, _>(id)
    .bind::<Bool, _>(deleted);
    bind_addr(q, a).execute(conn).map(|_| ())
}

/// A row written, with its address as it is after the write.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(embed)]
    addr: Addr,
}

#[derive(QueryableByName)]
struct Upserted {
    #[diesel(embed)]
    written: Written,
    #[diesel(sql_type = Bool)]
    inserted: bool,
}

/// The release before write_new: writes all five old columns, never the new table.
fn old_release_writer(
    url: &str,
    thread: u64,
    ops: usize,
    max_id: &AtomicI32,
    start: &Barrier,
) -> Stats {
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(31_000 + thread);
    let mut stats = Stats::default();
    start.wait();
    for i in 0..ops {
        let tag = format!("o{thread}n{i}");
        let what = format!("old release {thread} op {i}");
        match rng.gen_range(0..100) {
            0..=19 => {
                let in_filter = rng.gen_bool(0.5);
                let a = random_addr(&mut rng, &tag, in_filter);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let id = insert_caterer(c, &tag, &a)?;
                        log_write(c, id, false, &a)?;
                        max_id.fetch_max(id, Ordering::Relaxed);
                        Ok(vec!["old_inserted"])
                    })
                });
            }
            20..=69 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                let in_filter = rng.gen_bool(0.5);
                let a = random_addr(&mut rng, &tag, in_filter);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| old_update(c, id, &a))
                });
            }
            70..=79 => {
                let (first, second) = pick_two(&mut rng, max_id, HOT_WRITE_NEW);
                let a = random_addr(&mut rng, &tag, true);
                let b = random_addr(&mut rng, &format!("{tag}b"), false);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let mut events = old_update(c, first, &a)?;
                        events.extend(old_update(c, second, &b)?);
                        events.push("old_txn_two_rows");
                        Ok(events)
                    })
                });
            }
            80..=89 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                stats.run(&what, &mut conn, |c| {
                    Ok(vec![if update_other(c, id, &tag)? {
                        "old_other_updated"
                    } else {
                        "target_gone"
                    }])
                });
            }
            _ => {
                let id = pick_cold(&mut rng, max_id);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| delete_logged(c, id, "old_deleted"))
                });
            }
        }
    }
    stats
}

/// The old release sets a caterer's whole address.
fn old_update(conn: &mut PgConnection, id: i32, a: &Addr) -> QueryResult<Events> {
    let q = boxed(
        "UPDATE caterers SET street1 = $2, street2 = $3, city = $4, state = $5, zip = $6 WHERE id = $1
         RETURNING id, street1, street2, city, state, zip",
    )
    .bind::<Integer, _>(id);
    match bind_addr(q, a).get_result::<Written>(conn).optional()? {
        Some(w) => {
            log_write(conn, w.id, false, &w.addr)?;
            Ok(vec!["old_address_updated"])
        }
        None => Ok(vec!["target_gone"]),
    }
}

fn delete_logged(conn: &mut PgConnection, id: i32, event: &'static str) -> QueryResult<Events> {
    if delete_caterer(conn, id)? {
        log_write(conn, id, true, &Addr::none())?;
        Ok(vec![event])
    } else {
        Ok(vec!["target_gone"])
    }
}

/// The release after write_new: inserts owners without the old columns, reads and writes
/// addresses in the new table only.
fn new_release_writer(
    url: &str,
    thread: u64,
    ops: usize,
    max_id: &AtomicI32,
    start: &Barrier,
) -> Stats {
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(47_000 + thread);
    let mut stats = Stats::default();
    start.wait();
    for i in 0..ops {
        let tag = format!("n{thread}n{i}");
        let what = format!("new release {thread} op {i}");
        match rng.gen_range(0..100) {
            // A caterer without the old columns, then its addresses row, in one transaction.
            0..=19 => {
                let in_filter = rng.gen_bool(0.5);
                let a = random_addr(&mut rng, &tag, in_filter);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let id = boxed("INSERT INTO caterers (name, email, phone) VALUES ($1, $2, $3) RETURNING id")
                            .bind::<Text, _>(format!("caterer {tag}"))
                            .bind::<Text, _>(format!("{tag}@example.com"))
                            .bind::<Text, _>(format!("555-{tag}"))
                            .get_result::<Id>(c)?
                            .id;
                        let q = boxed(
                            "INSERT INTO addresses (caterer_id, street1, street2, city, state, zip)
                             VALUES ($1, $2, $3, $4, $5, $6)
                             RETURNING caterer_id AS id, street1, street2, city, state, zip",
                        )
                        .bind::<Integer, _>(id);
                        let w = bind_addr(q, &a).get_result::<Written>(c)?;
                        log_write(c, w.id, false, &w.addr)?;
                        max_id.fetch_max(id, Ordering::Relaxed);
                        Ok(vec!["new_inserted"])
                    })
                });
            }
            // Change some or all columns of an addresses row.
            20..=59 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                let (set, values): (&str, Vec<Option<String>>) = match rng.gen_range(0..4) {
                    0 => (
                        "city = $2",
                        vec![Some(CITIES[rng.gen_range(0..5)].to_owned())],
                    ),
                    1 => (
                        "street2 = $2",
                        vec![if rng.gen_bool(0.5) {
                            None
                        } else {
                            Some(format!("Floor {tag}"))
                        }],
                    ),
                    2 => (
                        "state = $2, zip = $3",
                        vec![
                            Some(STATES[rng.gen_range(0..5)].to_owned()),
                            Some(format!("{:05}", rng.gen_range(0..100_000))),
                        ],
                    ),
                    _ => {
                        let in_filter = rng.gen_bool(0.5);
                        let a = random_addr(&mut rng, &tag, in_filter);
                        (
                            "street1 = $2, street2 = $3, city = $4, state = $5, zip = $6",
                            vec![a.street1, a.street2, a.city, a.state, a.zip],
                        )
                    }
                };
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let mut q = boxed(format!(
                            "UPDATE addresses SET {set}, updated_at = now() WHERE caterer_id = $1
                             RETURNING caterer_id AS id, street1, street2, city, state, zip"
                        ))
                        .bind::<Integer, _>(id);
                        for v in &values {
                            q = q.bind::<Nullable<Text>, _>(v.clone());
                        }
                        match q.get_result::<Written>(c).optional()? {
                            Some(w) => {
                                log_write(c, w.id, false, &w.addr)?;
                                Ok(vec!["new_address_updated"])
                            }
                            None => Ok(vec!["target_gone"]),
                        }
                    })
                });
            }
            // Set the address of an existing caterer, whether it has a row or not: half the
            // time a picked one (it mostly has a row), else the first caterer from a random id
            // on that has none (one the new release emptied).
            60..=71 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                let without_row = rng.gen_bool(0.5);
                let in_filter = rng.gen_bool(0.5);
                let a = random_addr(&mut rng, &tag, in_filter);
                let target = if without_row {
                    "(SELECT c.id FROM caterers c WHERE c.id >= $1
                      AND NOT EXISTS (SELECT 1 FROM addresses x WHERE x.caterer_id = c.id) ORDER BY c.id LIMIT 1)"
                } else {
                    "$1"
                };
                stats.run(&what, &mut conn, |c| {
                    let outcome = c.transaction(|c| {
                        let q = boxed(format!(
                            "INSERT INTO addresses AS n (caterer_id, street1, street2, city, state, zip)
                             SELECT id, $2, $3, $4, $5, $6 FROM caterers WHERE id = {target}
                             ON CONFLICT (caterer_id) DO UPDATE SET street1 = EXCLUDED.street1,
                                 street2 = EXCLUDED.street2, city = EXCLUDED.city, state = EXCLUDED.state,
                                 zip = EXCLUDED.zip, updated_at = now()
                             RETURNING n.caterer_id AS id, n.street1, n.street2, n.city, n.state, n.zip,
                                 (n.xmax::text = '0') AS inserted"
                        ))
                        .bind::<Integer, _>(id);
                        match bind_addr(q, &a).get_result::<Upserted>(c).optional()? {
                            Some(u) => {
                                log_write(c, u.written.id, false, &u.written.addr)?;
                                Ok(vec![if u.inserted { "new_upsert_inserted" } else { "new_upsert_updated" }])
                            }
                            None => Ok(vec!["target_gone"]),
                        }
                    });
                    match outcome {
                        // The caterer was deleted while this waited on it: nothing to write to.
                        Err(Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => Ok(vec!["target_gone"]),
                        other => other,
                    }
                });
            }
            // Delete an addresses row: the caterer keeps no address.
            72..=84 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| {
                        let gone = boxed("DELETE FROM addresses WHERE caterer_id = $1 RETURNING caterer_id AS id")
                            .bind::<Integer, _>(id)
                            .get_result::<Id>(c)
                            .optional()?;
                        match gone {
                            Some(row) => {
                                log_write(c, row.id, false, &Addr::none())?;
                                Ok(vec!["new_address_deleted"])
                            }
                            None => Ok(vec!["target_gone"]),
                        }
                    })
                });
            }
            85..=91 => {
                let id = pick(&mut rng, max_id, HOT_WRITE_NEW);
                stats.run(&what, &mut conn, |c| {
                    Ok(vec![if update_other(c, id, &tag)? {
                        "new_other_updated"
                    } else {
                        "target_gone"
                    }])
                });
            }
            _ => {
                let id = pick_cold(&mut rng, max_id);
                stats.run(&what, &mut conn, |c| {
                    c.transaction(|c| delete_logged(c, id, "new_deleted"))
                });
            }
        }
    }
    stats
}

/// Owners and new rows after write_new, where both are written.
#[derive(QueryableByName, Debug)]
struct ReverseReport {
    /// New rows with no owner.
    #[diesel(sql_type = BigInt)]
    orphans: i64,
    /// Owners whose old columns differ from their addresses row.
    #[diesel(sql_type = BigInt)]
    mismatched: i64,
    /// Owners without an addresses row whose old columns still carry an address: a write of the
    /// old release that never reached the new table, or a deletion in the new table that never
    /// reached the old columns.
    #[diesel(sql_type = BigInt)]
    carrying_without_row: i64,
    /// Owners without an addresses row with any old column set (includes the above).
    #[diesel(sql_type = BigInt)]
    leftovers_without_row: i64,
    #[diesel(sql_type = BigInt)]
    with_row: i64,
    #[diesel(sql_type = BigInt)]
    without_row: i64,
}

/// Every caterer with an addresses row has old columns equal to it; every caterer without one
/// has all five old columns NULL. (Here no owner is "never synced": every caterer that existed
/// before dual_write was copied, and every later write is synced in its own transaction. So a
/// carrying owner without a row is a lost write, and so is a partial leftover.) No orphans.
fn reverse_report(conn: &mut PgConnection) -> ReverseReport {
    let sql = "SELECT
             count(*) FILTER (WHERE c.id IS NULL) AS orphans,
             count(*) FILTER (WHERE c.id IS NOT NULL AND a.caterer_id IS NOT NULL
                 AND (c.street1, c.street2, c.city, c.state, c.zip)
                     IS DISTINCT FROM (a.street1, a.street2, a.city, a.state, a.zip)) AS mismatched,
             count(*) FILTER (WHERE c.id IS NOT NULL AND a.caterer_id IS NULL
                 AND c.street1 IS NOT NULL AND c.city IS NOT NULL AND c.state IS NOT NULL AND c.zip IS NOT NULL)
                 AS carrying_without_row,
             count(*) FILTER (WHERE c.id IS NOT NULL AND a.caterer_id IS NULL
                 AND num_nonnulls(c.street1, c.street2, c.city, c.state, c.zip) > 0) AS leftovers_without_row,
             count(*) FILTER (WHERE c.id IS NOT NULL AND a.caterer_id IS NOT NULL) AS with_row,
             count(*) FILTER (WHERE c.id IS NOT NULL AND a.caterer_id IS NULL) AS without_row
         FROM caterers c FULL JOIN addresses a ON a.caterer_id = c.id";
    diesel::sql_query(sql)
        .get_result(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Both tables against the ledger: what the last committed write left.
#[derive(QueryableByName, Debug)]
struct LedgerReport {
    /// Caterers no writer created (nor seeded).
    #[diesel(sql_type = BigInt)]
    unknown_caterers: i64,
    /// Caterers whose deletion committed, still there.
    #[diesel(sql_type = BigInt)]
    resurrected: i64,
    /// Caterers nobody deleted, gone.
    #[diesel(sql_type = BigInt)]
    vanished: i64,
    /// Old columns other than the last write left them.
    #[diesel(sql_type = BigInt)]
    old_columns_wrong: i64,
    /// An addresses row where the last write left none, or none where it left one.
    #[diesel(sql_type = BigInt)]
    row_presence_wrong: i64,
    /// An addresses row other than the last write left it.
    #[diesel(sql_type = BigInt)]
    new_row_wrong: i64,
    #[diesel(sql_type = BigInt)]
    logged: i64,
    #[diesel(sql_type = BigInt)]
    expected_alive: i64,
}

const EXPECTED: &str = "WITH expected AS (
        SELECT caterer_id, deleted, street1, street2, city, state, zip FROM test_ledger
        UNION ALL
        SELECT s.caterer_id, false, s.street1, s.street2, s.city, s.state, s.zip FROM test_seed s
        WHERE NOT EXISTS (SELECT 1 FROM test_ledger l WHERE l.caterer_id = s.caterer_id)
    )";

fn ledger_report(conn: &mut PgConnection) -> LedgerReport {
    let sql = format!(
        "{EXPECTED}
         SELECT
             count(*) FILTER (WHERE e.caterer_id IS NULL) AS unknown_caterers,
             count(*) FILTER (WHERE e.deleted AND c.id IS NOT NULL) AS resurrected,
             count(*) FILTER (WHERE NOT e.deleted AND c.id IS NULL) AS vanished,
             count(*) FILTER (WHERE NOT e.deleted AND c.id IS NOT NULL
                 AND (c.street1, c.street2, c.city, c.state, c.zip)
                     IS DISTINCT FROM (e.street1, e.street2, e.city, e.state, e.zip)) AS old_columns_wrong,
             count(*) FILTER (WHERE NOT e.deleted AND c.id IS NOT NULL
                 AND (a.caterer_id IS NOT NULL) <> (e.street1 IS NOT NULL)) AS row_presence_wrong,
             count(*) FILTER (WHERE a.caterer_id IS NOT NULL
                 AND (e.caterer_id IS NULL OR e.deleted
                      OR (a.street1, a.street2, a.city, a.state, a.zip)
                          IS DISTINCT FROM (e.street1, e.street2, e.city, e.state, e.zip))) AS new_row_wrong,
             (SELECT count(*) FROM test_ledger) AS logged,
             count(*) FILTER (WHERE e.caterer_id IS NOT NULL AND NOT e.deleted) AS expected_alive
         FROM expected e
         FULL JOIN caterers c ON c.id = e.caterer_id
         LEFT JOIN addresses a ON a.caterer_id = coalesce(c.id, e.caterer_id)"
    );
    diesel::sql_query(&sql)
        .get_result(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn reverse_offenders(conn: &mut PgConnection) -> String {
    sample_lines(
        conn,
        &format!(
            "{EXPECTED}
             SELECT 'caterer ' || CASE WHEN c.id IS NULL THEN '-' ELSE row(c.id, c.street1, c.street2, c.city, c.state, c.zip)::text END
                    || ' addresses ' || CASE WHEN a.caterer_id IS NULL THEN '-' ELSE row(a.caterer_id, a.street1, a.street2, a.city, a.state, a.zip)::text END
                    || ' last write ' || CASE WHEN e.caterer_id IS NULL THEN '-' ELSE row(e.caterer_id, e.deleted, e.street1, e.street2, e.city, e.state, e.zip)::text END
                    || ' writes ' || coalesce((SELECT l.writes::text FROM test_ledger l WHERE l.caterer_id = e.caterer_id), '0') AS line
             FROM expected e
             FULL JOIN caterers c ON c.id = e.caterer_id
             LEFT JOIN addresses a ON a.caterer_id = coalesce(c.id, e.caterer_id)
             WHERE e.caterer_id IS NULL OR e.deleted <> (c.id IS NULL)
                OR (a.caterer_id IS NULL AND num_nonnulls(c.street1, c.street2, c.city, c.state, c.zip) > 0)
                OR (a.caterer_id IS NOT NULL AND (c.street1, c.street2, c.city, c.state, c.zip)
                    IS DISTINCT FROM (a.street1, a.street2, a.city, a.state, a.zip))
                OR (NOT e.deleted AND (c.street1, c.street2, c.city, c.state, c.zip)
                    IS DISTINCT FROM (e.street1, e.street2, e.city, e.state, e.zip))
                OR (NOT e.deleted AND (a.caterer_id IS NOT NULL) <> (e.street1 IS NOT NULL))
             ORDER BY coalesce(c.id, e.caterer_id) LIMIT 10"
        ),
    )
}

/// At write_new two releases run side by side: the previous one writes the old columns of
/// `caterers`, the new one writes `addresses` and creates caterers without the old columns.
/// Both syncs run at once, with opposite lock orders; deadlocks are retried. Afterwards the two
/// tables agree row by row, and both show what the last committed write to each caterer left.
#[test]
fn write_new_reverse_sync_keeps_old_columns_in_step_under_mixed_releases() {
    const PER_RELEASE: u64 = 2;
    const OPS: usize = 1_500;
    let started = Instant::now();
    let shape = Shape {
        label: "conc_write_new",
        make: fixtures::caterers,
        migration: "caterers_addresses",
        key: "caterer_id",
        filtered: false,
        seed: 0,
    };
    let fixture = fixtures::caterers(shape.label);
    generated(&fixture);
    let db = TestDb::new(shape.label);
    let mut conn = db.conn();

    assert_phases(
        &apply_through(&mut conn, &fixture, "create_tables"),
        &["create_tables"],
    );
    seed_caterers(&mut conn);
    assert_phases(
        &apply_through(&mut conn, &fixture, "dual_write"),
        &["expand", "dual_write"],
    );
    assert_eq!(copy_existing(&mut conn, &shape), SEEDED as usize);
    // No backfill nor read_new folder: write_new comes next.
    assert_phases(
        &apply_through(&mut conn, &fixture, "write_new"),
        &["write_new"],
    );
    let before = reverse_report(&mut conn);
    assert_eq!(
        (before.mismatched, before.without_row, before.with_row),
        (0, 0, i64::from(SEEDED)),
        "{before:?}"
    );
    for statement in LEDGER.split(';').filter(|s| !s.trim().is_empty()) {
        exec(&mut conn, statement);
    }

    let max_id = AtomicI32::new(SEEDED);
    let start = Barrier::new(2 * PER_RELEASE as usize);
    let writing = Instant::now();
    let (old, new) = thread::scope(|s| {
        let old: Vec<_> = (0..PER_RELEASE)
            .map(|t| {
                let (url, max_id, start) = (&db.url, &max_id, &start);
                s.spawn(move || old_release_writer(url, t, OPS, max_id, start))
            })
            .collect();
        let new: Vec<_> = (0..PER_RELEASE)
            .map(|t| {
                let (url, max_id, start) = (&db.url, &max_id, &start);
                s.spawn(move || new_release_writer(url, t, OPS, max_id, start))
            })
            .collect();
        let join = |handles: Vec<thread::ScopedJoinHandle<'_, Stats>>| {
            Stats::merge(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a writer panicked"))
                    .collect(),
            )
        };
        (join(old), join(new))
    });
    let writing = writing.elapsed();

    let report = reverse_report(&mut conn);
    let ledger = ledger_report(&mut conn);
    eprintln!(
        "{}: {PER_RELEASE}+{PER_RELEASE} writers x {OPS} ops in {writing:.2?} ({:.2?} in all)\n  old release: retries {:?}, events {:?}\n  new release: retries {:?}, events {:?}\n  final {report:?}\n  ledger {ledger:?}",
        shape.label,
        started.elapsed(),
        old.retries,
        old.events,
        new.retries,
        new.events,
    );
    let offenders = || reverse_offenders(&mut db.conn());
    assert_eq!(
        (
            report.orphans,
            report.mismatched,
            report.carrying_without_row,
            report.leftovers_without_row
        ),
        (0, 0, 0, 0),
        "old columns and addresses rows disagree: {report:?}\n{}",
        offenders(),
    );
    assert_eq!(
        (
            ledger.unknown_caterers,
            ledger.resurrected,
            ledger.vanished,
            ledger.old_columns_wrong,
            ledger.row_presence_wrong,
            ledger.new_row_wrong
        ),
        (0, 0, 0, 0, 0, 0),
        "the tables do not show the last committed writes: {ledger:?}\n{}",
        offenders(),
    );
    assert_eq!(ledger.expected_alive, report.with_row + report.without_row);
    assert!(ledger.logged > 1_000, "{ledger:?}");

    old.assert_at_least(
        "old release",
        &[
            ("old_inserted", 300),
            ("old_address_updated", 1_000),
            ("old_txn_two_rows", 150),
            ("old_other_updated", 140),
            ("old_deleted", 120),
        ],
    );
    new.assert_at_least(
        "new release",
        &[
            ("new_inserted", 300),
            ("new_address_updated", 500),
            ("new_upsert_inserted", 60),
            ("new_upsert_updated", 60),
            ("new_address_deleted", 150),
            ("new_other_updated", 100),
            ("new_deleted", 100),
        ],
    );
    // Both kinds of caterer at the end: with an address, and emptied by the new release. How
    // many stay emptied depends on how the writers interleave (a later write may give one its
    // address back), not only on their seeded draws: a handful to a few dozen.
    assert!(
        report.with_row > 1_000 && report.without_row > 0,
        "{report:?}"
    );
    eprintln!(
        "{}: {} retries in all; first: {}",
        shape.label,
        old.retries() + new.retries(),
        old.first_retry
            .or(new.first_retry)
            .unwrap_or_else(|| "-".to_owned()),
    );
}
