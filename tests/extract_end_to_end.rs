//! The caterers extract from first migration to contract against a real PostgreSQL with tens of
//! thousands of caterers, while writer threads keep inserting, updating and deleting through
//! each stage's own code: plain Diesel on the owner (expand, dual_write), the generated readers
//! (read_new), old and new releases side by side (write_new's deploy), then only the generated
//! writers (write_new, contract). The backfill is killed with SIGKILL half way and resumed.
//!
//! Each writer owns its caterers (the seeded ones with `id % WRITERS == thread`, and those it
//! inserts), so its log of what it committed is exactly what the database must hold for them.
//! After every stage the writers stop, and the database is compared row by row with the merged
//! logs: nothing lost, duplicated or stale. The whole run is repeated with two backfill workers.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::caterers_app::{read_new, schema, write_new, Addr};
use zmig_tests::{count, exec, fixtures, is_retryable, migrate_to, writer_conn, TestDb};

const SEEDED: i32 = 30_000;
const WRITERS: usize = 4;
/// Operations each writer does at least per stage (and goes on while the stage's work runs).
const OPS_PER_STAGE: usize = 300;

/// What a writer knows it committed: per caterer it owns, its address (None: it has none).
type Log = HashMap<i32, Option<Addr>>;

/// Which code the writers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Plain Diesel on the owner table, old columns included (expand through read_new; and the
    /// previous release during write_new's deploy).
    Old,
    /// The generated writers: the new table only (write_new and contract).
    New,
}

/// Runs `op` in a transaction, retrying deadlocks and serialization failures; `None` when the
/// row it needed is gone (not ours to worry about: nobody else writes our rows).
fn retrying<T>(
    conn: &mut PgConnection,
    mut op: impl FnMut(&mut PgConnection) -> QueryResult<T>,
) -> T {
    for _ in 0..200 {
        match conn.transaction(|conn| op(conn)) {
            Ok(value) => return value,
            Err(error) if is_retryable(&error).is_some() => continue,
            Err(error) => panic!("writer failed: {error}"),
        }
    }
    panic!("a transaction kept failing");
}

/// One writer's work for one stage: at least `OPS_PER_STAGE` operations, and on until `until`.
fn write(
    url: &str,
    thread: usize,
    seed: u64,
    release: Release,
    log: &mut Log,
    start: &Barrier,
    until: &AtomicBool,
) {
    use schema::full::caterers as c;
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(seed);
    start.wait();
    let mut ops = 0;
    while ops < OPS_PER_STAGE || !until.load(Ordering::SeqCst) {
        ops += 1;
        let tag = format!("t{thread}s{seed}o{ops}");
        let mine: Vec<i32> = if log.is_empty() {
            Vec::new()
        } else {
            vec![*log.keys().nth(rng.gen_range(0..log.len())).unwrap()]
        };
        let target = mine.first().copied();
        match (release, rng.gen_range(0..100), target) {
            // Old release: the owner with its address columns.
            (Release::Old, 0..=24, _) | (Release::Old, _, None) => {
                let addr = Addr::random(&mut rng, &tag);
                let id: i32 = retrying(&mut conn, |conn| {
                    diesel::insert_into(c::table)
                        .values((
                            c::name.eq(format!("caterer {tag}")),
                            c::email.eq(format!("{tag}@example.com")),
                            c::phone.eq("555-0100"),
                            c::street1.eq(&addr.street1),
                            c::street2.eq(&addr.street2),
                            c::city.eq(&addr.city),
                            c::state.eq(&addr.state),
                            c::zip.eq(&addr.zip),
                        ))
                        .returning(c::id)
                        .get_result(conn)
                });
                log.insert(id, Some(addr));
            }
            (Release::Old, 25..=69, Some(id)) => {
                let addr = Addr::random(&mut rng, &tag);
                retrying(&mut conn, |conn| {
                    diesel::update(c::table.find(id))
                        .set((
                            c::street1.eq(&addr.street1),
                            c::street2.eq(&addr.street2),
                            c::city.eq(&addr.city),
                            c::state.eq(&addr.state),
                            c::zip.eq(&addr.zip),
                        ))
                        .execute(conn)
                });
                log.insert(id, Some(addr));
            }
            (Release::Old, 70..=89, Some(id)) => {
                retrying(&mut conn, |conn| {
                    diesel::update(c::table.find(id))
                        .set(c::phone.eq(format!("555-{ops:04}")))
                        .execute(conn)
                });
            }
            (Release::Old, _, Some(id)) => {
                retrying(&mut conn, |conn| {
                    diesel::delete(c::table.find(id)).execute(conn)
                });
                log.remove(&id);
            }
            // New release: owners without the old columns; addresses through the generated writers.
            (Release::New, 0..=19, _) | (Release::New, _, None) => {
                use schema::shimmed::caterers as s;
                let addr = rng.gen_bool(0.8).then(|| Addr::random(&mut rng, &tag));
                let (owner, _) = retrying(&mut conn, |conn| {
                    write_new::Caterer::save_with_address(
                        conn,
                        |conn| {
                            diesel::insert_into(s::table)
                                .values((
                                    s::name.eq(format!("caterer {tag}")),
                                    s::email.eq(format!("{tag}@example.com")),
                                    s::phone.eq("555-0199"),
                                ))
                                .returning(write_new::Caterer::as_returning())
                                .get_result(conn)
                        },
                        |owner| addr.clone().map(|a| a.into_row(owner.id)),
                    )
                });
                log.insert(owner.id, addr);
            }
            (Release::New, 20..=69, Some(id)) => {
                let addr = Addr::random(&mut rng, &tag);
                retrying(&mut conn, |conn| addr.clone().into_row(id).save(conn));
                log.insert(id, Some(addr));
            }
            (Release::New, 70..=84, Some(id)) => {
                retrying(&mut conn, |conn| write_new::Address::delete_for(conn, id));
                log.insert(id, None);
            }
            (Release::New, _, Some(id)) => {
                use schema::shimmed::caterers as s;
                retrying(&mut conn, |conn| {
                    diesel::delete(s::table.find(id)).execute(conn)
                });
                log.remove(&id);
            }
        }
    }
}

/// Runs the writers for one stage while `work` runs on this thread; writers go on until it has
/// returned and they have each done their minimum. `releases[t]` is writer `t`'s code.
fn stage<T>(
    url: &str,
    logs: &mut [Log],
    releases: &[Release],
    seed: u64,
    work: impl FnOnce() -> T,
) -> T {
    let start = Barrier::new(logs.len() + 1);
    let until = AtomicBool::new(false);
    thread::scope(|scope| {
        for (t, log) in logs.iter_mut().enumerate() {
            let (start, until, release) = (&start, &until, releases[t]);
            scope.spawn(move || write(url, t, seed * 100 + t as u64, release, log, start, until));
        }
        start.wait();
        let out = work();
        until.store(true, Ordering::SeqCst);
        out
    })
}

/// The merged logs: every caterer that must exist, with its address.
fn expected(logs: &[Log]) -> HashMap<i32, Option<Addr>> {
    logs.iter()
        .flat_map(|log| log.iter().map(|(k, v)| (*k, v.clone())))
        .collect()
}

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    id: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    street1: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    street2: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    city: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    state: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    zip: Option<String>,
}

impl Row {
    fn addr(&self) -> Option<Addr> {
        Some(Addr {
            street1: self.street1.clone()?,
            street2: self.street2.clone(),
            city: self.city.clone()?,
            state: self.state.clone()?,
            zip: self.zip.clone()?,
        })
    }
}

fn rows(conn: &mut PgConnection, sql: &str) -> HashMap<i32, Row> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r))
        .collect()
}

/// Compares the database with the logs. `old_columns`: whether the owner's old columns must
/// hold the address too (until contract); `new_table`: whether the new table must be complete
/// (once the backfill ran).
fn compare(conn: &mut PgConnection, logs: &[Log], old_columns: bool, new_table: bool, when: &str) {
    let expected = expected(logs);
    let owners = if old_columns {
        rows(
            conn,
            "SELECT id, street1, street2, city, state, zip FROM caterers",
        )
    } else {
        rows(conn, "SELECT id, NULL::text AS street1, NULL::text AS street2, NULL::text AS city, NULL::text AS state, NULL::text AS zip FROM caterers")
    };
    let new_rows = rows(
        conn,
        "SELECT caterer_id AS id, street1, street2, city, state, zip FROM addresses",
    );
    let duplicates = count(conn, "SELECT count(*) AS n FROM (SELECT caterer_id FROM addresses GROUP BY caterer_id HAVING count(*) > 1) d");
    assert_eq!(duplicates, 0, "{when}: duplicated rows in addresses");

    let mut problems = Vec::new();
    for (id, addr) in &expected {
        let Some(owner) = owners.get(id) else {
            problems.push(format!("caterer {id} lost"));
            continue;
        };
        if old_columns && &owner.addr() != addr {
            problems.push(format!(
                "caterer {id}: old columns {:?}, log says {addr:?}",
                owner.addr()
            ));
        }
        match (new_rows.get(id), addr) {
            (Some(row), Some(addr)) if &row.addr().unwrap() != addr => problems.push(format!(
                "caterer {id}: addresses row {:?} is stale, log says {addr:?}",
                row.addr()
            )),
            (Some(_), None) => {
                problems.push(format!("caterer {id}: addresses row that the log deleted"))
            }
            (None, Some(_)) if new_table => {
                problems.push(format!("caterer {id}: addresses row missing"))
            }
            _ => {}
        }
    }
    for id in owners.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("caterer {id} exists but the log deleted it"));
        }
    }
    for id in new_rows.keys() {
        if !expected.contains_key(id) {
            problems.push(format!(
                "addresses row of caterer {id}, which does not exist"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{when}: {} problems, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

fn run(label: &str, backfill_workers: usize) {
    let fixture = fixtures::caterers(label);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    let url = db.url.clone();
    let mut conn = db.conn();

    migrate_to(&url, &fixture, "create_tables");
    exec(
        &mut conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
             SELECT 'caterer ' || g, g || '@example.com', '555-0000', g || ' Main St',
                    CASE WHEN g % 3 = 0 THEN 'Suite ' || g % 50 END, 'Springfield', lpad((g % 99999)::text, 5, '0'), 'IL'
             FROM generate_series(1, {SEEDED}) AS g"
        ),
    );
    // Each writer owns the seeded caterers with id % WRITERS == its number.
    let mut logs: Vec<Log> = vec![Log::new(); WRITERS];
    for row in rows(
        &mut conn,
        "SELECT id, street1, street2, city, state, zip FROM caterers",
    )
    .into_values()
    {
        logs[row.id as usize % WRITERS].insert(row.id, row.addr());
    }
    let old = [Release::Old; WRITERS];
    let new = [Release::New; WRITERS];
    let mixed = [Release::Old, Release::New, Release::Old, Release::New];

    // expand: the application is unchanged.
    stage(&url, &mut logs, &old, 1, || {
        migrate_to(&url, &fixture, "expand")
    });
    compare(&mut conn, &logs, true, false, "after expand");

    // dual_write: the triggers go in under traffic; rows written from now on are synced.
    stage(&url, &mut logs, &old, 2, || {
        migrate_to(&url, &fixture, "dual_write")
    });
    compare(&mut conn, &logs, true, false, "after dual_write");

    // backfill: killed with SIGKILL half way, then resumed, all under traffic.
    let resumed = stage(&url, &mut logs, &old, 3, || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_backfill_worker"))
            .args([&url, "caterers_addresses"])
            .spawn()
            .unwrap();
        let mut probe = PgConnection::establish(&url).unwrap();
        let mut progressed = false;
        for _ in 0..3_000 {
            let done = diesel::sql_query(
                "SELECT coalesce(sum(owners), 0)::bigint AS n FROM zmig_backfill_ranges",
            )
            .get_result::<Count>(&mut probe)
            .map(|c| c.n)
            .unwrap_or(0);
            if done > 3_000 {
                progressed = true;
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(progressed, "the backfill child made no progress");
        let options = BackfillOptions {
            workers: backfill_workers,
            progress: ProgressMode::Silent,
            ..BackfillOptions::default()
        };
        backfill(&url, "caterers_addresses", &options).unwrap()
    });
    assert!(resumed.finished);
    assert!(
        resumed.owners < i64::from(SEEDED),
        "the resumed run started over: {resumed:?}"
    );
    let report = verify(&mut conn, "caterers_addresses").unwrap();
    assert!(report.ok(), "{report:?}");
    compare(&mut conn, &logs, true, true, "after the backfill");

    // read_new: the new code reads through the generated readers; they agree with the logs.
    stage(&url, &mut logs, &old, 4, || {
        let mut reader = PgConnection::establish(&url).unwrap();
        let owners: Vec<read_new::Caterer> = schema::full::caterers::table
            .order(schema::full::caterers::id)
            .limit(2_000)
            .select(read_new::Caterer::as_select())
            .load(&mut reader)
            .unwrap();
        let with = read_new::Caterer::with_address(&mut reader, owners).unwrap();
        assert_eq!(with.len(), 2_000);
    });
    let expected_now = expected(&logs);
    let mut reader = PgConnection::establish(&url).unwrap();
    for id in expected_now.keys().take(500) {
        let (_, row) = read_new::Caterer::find_with_address(&mut reader, *id)
            .unwrap()
            .expect("owner");
        let read = row.map(|r| Addr {
            street1: r.street1,
            street2: r.street2,
            city: r.city,
            state: r.state,
            zip: r.zip,
        });
        assert_eq!(&read, &expected_now[id], "read_new reader for caterer {id}");
    }
    compare(&mut conn, &logs, true, true, "after read_new");

    // write_new: the migration ships first, under the previous release's traffic; then the new
    // release rolls out while instances of the previous one still run beside it.
    stage(&url, &mut logs, &old, 5, || {
        migrate_to(&url, &fixture, "write_new")
    });
    compare(
        &mut conn,
        &logs,
        true,
        true,
        "after the write_new migration",
    );
    stage(&url, &mut logs, &mixed, 6, || {});
    compare(&mut conn, &logs, true, true, "during write_new's deploy");
    stage(&url, &mut logs, &new, 7, || {});
    compare(&mut conn, &logs, true, true, "after write_new");
    assert_eq!(
        verify(&mut conn, "caterers_addresses").unwrap().differing,
        0
    );

    // contract: the old columns go while the new code keeps writing.
    stage(&url, &mut logs, &new, 8, || {
        migrate_to(&url, &fixture, "contract")
    });
    compare(&mut conn, &logs, false, true, "after contract");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'caterers' AND column_name IN ('street1', 'street2', 'city', 'state', 'zip')"),
        0
    );
    assert!(expected(&logs).len() > SEEDED as usize / 2);
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[test]
fn caterers_through_every_stage_under_live_writes_with_one_backfill_worker() {
    run("e2e_one", 1);
}

#[test]
fn caterers_through_every_stage_under_live_writes_with_two_backfill_workers() {
    run("e2e_two", 2);
}
