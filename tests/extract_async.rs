//! The caterers extract in an async service: from first migration to contract under writer
//! tasks on a tokio runtime, each taking its connections from a diesel-async deadpool and
//! writing through each stage's own code: plain diesel-async on the owner (expand, dual_write),
//! the generated `_async` readers (read_new), old and new releases side by side (write_new's
//! deploy), then only the generated `_async` writers (write_new, contract). The migrations, the
//! backfill and verify are `zmig_runtime::nonblocking` calls, awaited on that same runtime.
//!
//! The runtime has one thread: a zmig call that blocked it would stop every writer while it ran,
//! so the writers' operations completed during each backfill are counted, and must not be zero.
//! The backfill is stopped half way by its stop flag and resumed, then stopped once more by
//! dropping its future (its run log must say stopped) and resumed to the end.
//!
//! Each writer owns its caterers (the seeded ones with `id % WRITERS == writer`, and those it
//! inserts), so its ledger of what it committed is exactly what the database must hold for them.
//! After every stage the writers stop, and the database is compared row by row with the merged
//! ledgers. The `sync = app` variant does the same through dual_write and the backfill, every
//! write through the generated `zmig_*_async` wrappers.
//!
//! The models below live in a module that imports `diesel_async::RunQueryDsl` beside Diesel's
//! prelude, as an async service's do: the generated code must compile there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::{BackfillOptions, ProgressMode};
use zmig_runtime::diesel_async::pooled_connection::deadpool::Pool;
use zmig_runtime::diesel_async::pooled_connection::AsyncDieselConnectionManager;
// Named, so it shadows the prelude's: the async service's usual imports. (Its blanket impl
// also claims `.load` on anything: atomics are read as `AtomicBool::load(&flag, …)` here.)
use zmig_runtime::diesel_async::{AsyncPgConnection, RunQueryDsl};
use zmig_runtime::migrate::RetryPolicy;
use zmig_runtime::nonblocking;
use zmig_tests::caterers_app::schema;
use zmig_tests::{fixtures, is_retryable, FixtureCrate, TestDb, UpTo};

/// The `sync = app` release of the service (its read_new and write_new models are
/// `zmig_tests::caterers_app`'s, whose modules import diesel-async's `RunQueryDsl` as a service's do).
mod models {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;
    #[allow(unused_imports)]
    use zmig_runtime::diesel_async::RunQueryDsl;
    use zmig_runtime::Zmig;

    pub mod app {
        use super::*;

        /// `sync = app` at dual_write: the wrappers keep the new table in step.
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Zmig)]
        #[diesel(table_name = zmig_tests::caterers_app::schema::full::caterers)]
        #[zmig(
            extract(into = addresses, columns(street1, street2, city, state, zip), sync = app, name = caterers_addresses_app),
            stage = "dual_write"
        )]
        pub struct Caterer {
            pub id: i32,
            pub name: String,
            pub email: String,
            pub phone: String,
            pub street1: String,
            pub street2: Option<String>,
            pub city: String,
            pub zip: String,
            pub state: String,
            pub created_at: NaiveDateTime,
            pub updated_at: NaiveDateTime,
        }
    }
}

use models::app;
use zmig_tests::caterers_app::{read_new, write_new, Addr};

const SEEDED: i32 = 30_000;
const WRITERS: usize = 4;
/// Operations each writer does at least per stage (and goes on while the stage's work runs).
const OPS_PER_STAGE: usize = 300;

/// What a writer knows it committed: per caterer it owns, its address (None: it has none).
type Ledger = HashMap<i32, Option<Addr>>;

/// Which code the writers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Plain diesel-async on the owner table, old columns included (expand through read_new;
    /// and the previous release during write_new's deploy).
    Old,
    /// The generated `_async` writers: the new table only (write_new and contract).
    New,
    /// `sync = app`: every write of an owner through the generated `zmig_*_async` wrappers.
    App,
}

/// The service's pool; each writer takes a connection per operation, as a request handler does.
/// Deadlocks are found in milliseconds and reported in English (the settings ride on the URL),
/// so they can be recognised and retried.
fn writer_pool(url: &str) -> Pool<AsyncPgConnection> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20deadlock_timeout%3D10ms%20-c%20lc_messages%3DC");
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder(manager)
        .max_size(WRITERS + 2)
        .build()
        .unwrap()
}

/// Runs `op` on a pooled connection, retrying deadlocks and serialization failures.
async fn retrying<T, F>(pool: &Pool<AsyncPgConnection>, mut op: F) -> T
where
    F: for<'c> FnMut(&'c mut AsyncPgConnection) -> nonblocking::ConnFuture<'c, T>,
{
    for _ in 0..200 {
        let mut conn = pool.get().await.expect("a pooled connection");
        match op(&mut conn).await {
            Ok(value) => return value,
            Err(error) if is_retryable(&error).is_some() => continue,
            Err(error) => panic!("writer failed: {error}"),
        }
    }
    panic!("an operation kept failing");
}

/// A random caterer of `ledger`, if it has any.
fn pick(ledger: &Ledger, rng: &mut StdRng) -> Option<i32> {
    (!ledger.is_empty()).then(|| *ledger.keys().nth(rng.gen_range(0..ledger.len())).unwrap())
}

/// One writer task's work for one stage: at least `OPS_PER_STAGE` operations, and on until
/// `until`; `done` counts its operations as they commit.
async fn write(
    pool: Pool<AsyncPgConnection>,
    writer: usize,
    seed: u64,
    release: Release,
    mut ledger: Ledger,
    until: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Ledger {
    use schema::full::caterers as c;
    use schema::shimmed::caterers as s;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = 0;
    while ops < OPS_PER_STAGE || !AtomicBool::load(&until, Ordering::SeqCst) {
        ops += 1;
        let tag = format!("w{writer}s{seed}o{ops}");
        let target = pick(&ledger, &mut rng);
        match (release, rng.gen_range(0..100), target) {
            // Old release: the owner with its address columns.
            (Release::Old, 0..=24, _) | (Release::Old, _, None) => {
                let addr = Addr::random(&mut rng, &tag);
                let id: i32 = retrying(&pool, |conn| {
                    let (tag, addr) = (tag.clone(), addr.clone());
                    Box::pin(async move {
                        diesel::insert_into(c::table)
                            .values((
                                c::name.eq(format!("caterer {tag}")),
                                c::email.eq(format!("{tag}@example.com")),
                                c::phone.eq("555-0100"),
                                c::street1.eq(addr.street1),
                                c::street2.eq(addr.street2),
                                c::city.eq(addr.city),
                                c::state.eq(addr.state),
                                c::zip.eq(addr.zip),
                            ))
                            .returning(c::id)
                            .get_result(conn)
                            .await
                    })
                })
                .await;
                ledger.insert(id, Some(addr));
            }
            (Release::Old, 25..=69, Some(id)) => {
                let addr = Addr::random(&mut rng, &tag);
                retrying(&pool, |conn| {
                    let addr = addr.clone();
                    Box::pin(async move {
                        diesel::update(c::table.find(id))
                            .set((
                                c::street1.eq(addr.street1),
                                c::street2.eq(addr.street2),
                                c::city.eq(addr.city),
                                c::state.eq(addr.state),
                                c::zip.eq(addr.zip),
                            ))
                            .execute(conn)
                            .await
                    })
                })
                .await;
                ledger.insert(id, Some(addr));
            }
            (Release::Old, 70..=89, Some(id)) => {
                retrying(&pool, |conn| {
                    Box::pin(async move {
                        diesel::update(c::table.find(id))
                            .set(c::phone.eq(format!("555-{ops:04}")))
                            .execute(conn)
                            .await
                    })
                })
                .await;
            }
            (Release::Old, _, Some(id)) => {
                retrying(&pool, |conn| {
                    Box::pin(async move { diesel::delete(c::table.find(id)).execute(conn).await })
                })
                .await;
                ledger.remove(&id);
            }
            // New release: owners without the old columns; addresses through the generated
            // `_async` writers.
            (Release::New, 0..=19, _) | (Release::New, _, None) => {
                let addr = rng.gen_bool(0.8).then(|| Addr::random(&mut rng, &tag));
                let (owner, _) = retrying(&pool, |conn| {
                    let (tag, addr) = (tag.clone(), addr.clone());
                    Box::pin(async move {
                        write_new::Caterer::save_with_address_async(
                            conn,
                            |conn| {
                                Box::pin(async move {
                                    diesel::insert_into(s::table)
                                        .values((
                                            s::name.eq(format!("caterer {tag}")),
                                            s::email.eq(format!("{tag}@example.com")),
                                            s::phone.eq("555-0199"),
                                        ))
                                        .returning(write_new::Caterer::as_returning())
                                        .get_result(conn)
                                        .await
                                })
                            },
                            |owner| addr.map(|a| a.into_row(owner.id)),
                        )
                        .await
                    })
                })
                .await;
                ledger.insert(owner.id, addr);
            }
            (Release::New, 20..=69, Some(id)) => {
                let addr = Addr::random(&mut rng, &tag);
                let saved = retrying(&pool, |conn| {
                    let row = addr.clone().into_row(id);
                    Box::pin(async move { row.save_async(conn).await })
                })
                .await;
                assert_eq!(
                    saved,
                    addr.clone().into_row(id),
                    "save_async returns the row"
                );
                ledger.insert(id, Some(addr));
            }
            (Release::New, 70..=84, Some(id)) => {
                retrying(&pool, |conn| {
                    Box::pin(write_new::Address::delete_for_async(conn, id))
                })
                .await;
                ledger.insert(id, None);
            }
            (Release::New, _, Some(id)) => {
                retrying(&pool, |conn| {
                    Box::pin(async move { diesel::delete(s::table.find(id)).execute(conn).await })
                })
                .await;
                ledger.remove(&id);
            }
            // sync = app: the generated wrappers, each one transaction with its sync.
            (Release::App, 0..=24, _) | (Release::App, _, None) => {
                let addr = Addr::random(&mut rng, &tag);
                let owner = retrying(&pool, |conn| {
                    let (tag, addr) = (tag.clone(), addr.clone());
                    Box::pin(async move {
                        app::Caterer::zmig_insert_async(conn, |conn| {
                            Box::pin(async move {
                                diesel::insert_into(c::table)
                                    .values((
                                        c::name.eq(format!("caterer {tag}")),
                                        c::email.eq(format!("{tag}@example.com")),
                                        c::phone.eq("555-0100"),
                                        c::street1.eq(addr.street1),
                                        c::street2.eq(addr.street2),
                                        c::city.eq(addr.city),
                                        c::state.eq(addr.state),
                                        c::zip.eq(addr.zip),
                                    ))
                                    .returning(app::Caterer::as_returning())
                                    .get_result(conn)
                                    .await
                            })
                        })
                        .await
                    })
                })
                .await;
                ledger.insert(owner.id, Some(addr));
            }
            (Release::App, 25..=79, Some(id)) => {
                let addr = Addr::random(&mut rng, &tag);
                retrying(&pool, |conn| {
                    let addr = addr.clone();
                    Box::pin(async move {
                        app::Caterer::zmig_update_async(conn, id, |conn| {
                            Box::pin(async move {
                                diesel::update(c::table.find(id))
                                    .set((
                                        c::street1.eq(addr.street1),
                                        c::street2.eq(addr.street2),
                                        c::city.eq(addr.city),
                                        c::state.eq(addr.state),
                                        c::zip.eq(addr.zip),
                                    ))
                                    .execute(conn)
                                    .await
                            })
                        })
                        .await
                    })
                })
                .await;
                ledger.insert(id, Some(addr));
            }
            (Release::App, _, Some(id)) => {
                retrying(&pool, |conn| {
                    Box::pin(app::Caterer::zmig_delete_async(conn, id))
                })
                .await;
                ledger.remove(&id);
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    ledger
}

/// Runs the writer tasks for one stage while `work` runs in this task; writers go on until it
/// has returned and they have each done their minimum. `releases[w]` is writer `w`'s code.
/// Returns what `work` returned and how many operations the writers committed while it ran.
async fn stage<T>(
    pool: &Pool<AsyncPgConnection>,
    ledgers: &mut Vec<Ledger>,
    releases: &[Release],
    seed: u64,
    work: impl std::future::Future<Output = T>,
) -> (T, u64) {
    let until = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = ledgers
        .drain(..)
        .enumerate()
        .map(|(w, ledger)| {
            tokio::spawn(write(
                pool.clone(),
                w,
                seed * 100 + w as u64,
                releases[w],
                ledger,
                until.clone(),
                done.clone(),
            ))
        })
        .collect();
    // Nothing above yields: on this one thread, no writer has run yet.
    let before = AtomicU64::load(&done, Ordering::SeqCst);
    let out = work.await;
    let during = AtomicU64::load(&done, Ordering::SeqCst) - before;
    until.store(true, Ordering::SeqCst);
    for writer in writers {
        ledgers.push(writer.await.expect("a writer task"));
    }
    (out, during)
}

/// Applies the fixture's pending migrations up to `phase` through the awaited runner.
async fn migrate_to(url: &str, fixture: &FixtureCrate, phase: &str) {
    let policy = RetryPolicy {
        attempts: 100,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
    };
    let source = UpTo {
        inner: fixture.migrations(),
        phase: phase.to_owned(),
    };
    nonblocking::run_pending_with_retry(url, source, &policy, |_, _, _| {})
        .await
        .unwrap_or_else(|e| panic!("{phase}: {e}"));
}

/// The merged ledgers: every caterer that must exist, with its address.
fn expected(ledgers: &[Ledger]) -> HashMap<i32, Option<Addr>> {
    ledgers
        .iter()
        .flat_map(|ledger| ledger.iter().map(|(k, v)| (*k, v.clone())))
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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn rows(conn: &mut AsyncPgConnection, sql: &str) -> HashMap<i32, Row> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r))
        .collect()
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// Compares the database with the ledgers. `old_columns`: whether the owner's old columns must
/// hold the address too (until contract); `new_table`: whether the new table must be complete
/// (once the backfill ran).
async fn compare(
    conn: &mut AsyncPgConnection,
    ledgers: &[Ledger],
    old_columns: bool,
    new_table: bool,
    when: &str,
) {
    let expected = expected(ledgers);
    let owners = if old_columns {
        rows(
            conn,
            "SELECT id, street1, street2, city, state, zip FROM caterers",
        )
        .await
    } else {
        rows(conn, "SELECT id, NULL::text AS street1, NULL::text AS street2, NULL::text AS city, NULL::text AS state, NULL::text AS zip FROM caterers").await
    };
    let new_rows = rows(
        conn,
        "SELECT caterer_id AS id, street1, street2, city, state, zip FROM addresses",
    )
    .await;
    let duplicates = count(conn, "SELECT count(*) AS n FROM (SELECT caterer_id FROM addresses GROUP BY caterer_id HAVING count(*) > 1) d").await;
    assert_eq!(duplicates, 0, "{when}: duplicated rows in addresses");

    let mut problems = Vec::new();
    for (id, addr) in &expected {
        let Some(owner) = owners.get(id) else {
            problems.push(format!("caterer {id} lost"));
            continue;
        };
        if old_columns && &owner.addr() != addr {
            problems.push(format!(
                "caterer {id}: old columns {:?}, ledger says {addr:?}",
                owner.addr()
            ));
        }
        match (new_rows.get(id), addr) {
            (Some(row), Some(addr)) if &row.addr().unwrap() != addr => problems.push(format!(
                "caterer {id}: addresses row {:?} is stale, ledger says {addr:?}",
                row.addr()
            )),
            (Some(_), None) => problems.push(format!(
                "caterer {id}: addresses row that the ledger deleted"
            )),
            (None, Some(_)) if new_table => {
                problems.push(format!("caterer {id}: addresses row missing"))
            }
            _ => {}
        }
    }
    for id in owners.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("caterer {id} exists but the ledger deleted it"));
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

/// A new database with the example's first migration and `SEEDED` caterers, and the writers'
/// ledgers of them.
async fn seeded(
    label: &str,
    fixture: &FixtureCrate,
) -> (TestDb, Pool<AsyncPgConnection>, Vec<Ledger>) {
    let db = TestDb::new(label);
    migrate_to(&db.url, fixture, "create_tables").await;
    let pool = writer_pool(&db.url);
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(format!(
        "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
         SELECT 'caterer ' || g, g || '@example.com', '555-0000', g || ' Main St',
                CASE WHEN g % 3 = 0 THEN 'Suite ' || g % 50 END, 'Springfield', lpad((g % 99999)::text, 5, '0'), 'IL'
         FROM generate_series(1, {SEEDED}) AS g"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut ledgers: Vec<Ledger> = vec![Ledger::new(); WRITERS];
    for row in rows(
        &mut conn,
        "SELECT id, street1, street2, city, state, zip FROM caterers",
    )
    .await
    .into_values()
    {
        ledgers[row.id as usize % WRITERS].insert(row.id, row.addr());
    }
    drop(conn);
    (db, pool, ledgers)
}

/// Owners the backfill's ranges have read so far.
async fn backfilled(conn: &mut AsyncPgConnection) -> i64 {
    diesel::sql_query("SELECT coalesce(sum(owners), 0)::bigint AS n FROM zmig_backfill_ranges")
        .get_result::<Count>(conn)
        .await
        .map(|c| c.n)
        .unwrap_or(0)
}

/// Waits (polling, up to a minute) until the backfill's ranges have read more than `owners`.
async fn wait_backfilled(pool: &Pool<AsyncPgConnection>, owners: i64) {
    let mut conn = pool.get().await.unwrap();
    for _ in 0..6_000 {
        if backfilled(&mut conn).await > owners {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the backfill never read {owners} owners");
}

/// The backfill through `nonblocking`, under the writers: stopped half way by its stop flag,
/// resumed; stopped again by dropping its future, which its run log must record; resumed to the
/// end. Each call must leave the writers running while it works.
async fn backfill_under_writers(
    url: &str,
    migration: &str,
    pool: &Pool<AsyncPgConnection>,
    ledgers: &mut Vec<Ledger>,
    releases: &[Release],
    seed: u64,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let options = BackfillOptions {
        workers: 2,
        progress: ProgressMode::Silent,
        stop: Some(stop.clone()),
        ..BackfillOptions::default()
    };
    // Stopped by its flag once a tenth is done: it returns, not finished, the rest left.
    let (first, during) = stage(pool, ledgers, releases, seed, async {
        let stopper = async {
            wait_backfilled(pool, i64::from(SEEDED) / 10).await;
            stop.store(true, Ordering::SeqCst);
        };
        let (report, ()) = tokio::join!(nonblocking::backfill(url, migration, &options), stopper);
        report.unwrap()
    })
    .await;
    assert!(
        during > 0,
        "no writer ran while the backfill was awaited: it blocked the executor"
    );
    assert!(
        !first.finished,
        "the stop flag did not stop the backfill: {first:?}"
    );
    stop.store(false, Ordering::SeqCst);

    // Dropped once a third is done: its workers stop after their batch, and the run log says so.
    let mut probe = pool.get().await.unwrap();
    let stopped_runs = "SELECT count(*) AS n FROM zmig_run_log WHERE kind = 'stopped'";
    let stopped_before = count(&mut probe, stopped_runs).await;
    let (finished_early, during) = stage(pool, ledgers, releases, seed + 1, async {
        tokio::select! {
            report = nonblocking::backfill(url, migration, &options) => report.unwrap().finished,
            () = wait_backfilled(pool, i64::from(SEEDED) / 3) => false,
        }
    })
    .await;
    assert!(
        !finished_early,
        "the backfill finished before its future was dropped"
    );
    assert!(
        during > 0,
        "no writer ran while the backfill was awaited: it blocked the executor"
    );
    let mut recorded = false;
    for _ in 0..6_000 {
        if count(&mut probe, stopped_runs).await > stopped_before {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(recorded, "the dropped backfill's run never stopped");
    assert!(
        AtomicBool::load(&stop, Ordering::SeqCst),
        "dropping the future did not raise the run's stop flag"
    );
    stop.store(false, Ordering::SeqCst);
    let before_resume = backfilled(&mut probe).await;

    // Resumed to the end, where the others left it.
    let (resumed, during) = stage(pool, ledgers, releases, seed + 2, async {
        nonblocking::backfill(url, migration, &options)
            .await
            .unwrap()
    })
    .await;
    assert!(resumed.finished, "{resumed:?}");
    // A third of the keys (at least) were done before: the resumed run reads what is left.
    assert!(
        resumed.owners <= i64::from(SEEDED) * 3 / 4,
        "the resumed run started over: {resumed:?} after {before_resume} owners"
    );
    assert!(
        during > 0,
        "no writer ran while the backfill was awaited: it blocked the executor"
    );
    eprintln!(
        "{migration}: the resumed backfill read {} owners while the writers committed {during} operations",
        resumed.owners
    );
    let report = nonblocking::verify(url, migration).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn caterers_through_every_stage_under_async_writers() {
    let fixture = fixtures::caterers("async_e2e");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let (db, pool, mut ledgers) = seeded("async_e2e", &fixture).await;
    let url = db.url.clone();
    let mut conn = pool.get().await.unwrap();
    let old = [Release::Old; WRITERS];
    let new = [Release::New; WRITERS];
    let mixed = [Release::Old, Release::New, Release::Old, Release::New];

    // expand: the application is unchanged.
    stage(
        &pool,
        &mut ledgers,
        &old,
        1,
        migrate_to(&url, &fixture, "expand"),
    )
    .await;
    compare(&mut conn, &ledgers, true, false, "after expand").await;

    // dual_write: the triggers go in under traffic; rows written from now on are synced.
    stage(
        &pool,
        &mut ledgers,
        &old,
        2,
        migrate_to(&url, &fixture, "dual_write"),
    )
    .await;
    compare(&mut conn, &ledgers, true, false, "after dual_write").await;

    // backfill: stopped, dropped and resumed, all under traffic.
    backfill_under_writers(&url, "caterers_addresses", &pool, &mut ledgers, &old, 3).await;
    compare(&mut conn, &ledgers, true, true, "after the backfill").await;

    // read_new: the new code reads through the generated `_async` readers while the writers
    // write; afterwards they agree with the ledgers.
    stage(&pool, &mut ledgers, &old, 6, async {
        let mut reader = pool.get().await.unwrap();
        let owners: Vec<read_new::Caterer> = schema::full::caterers::table
            .order(schema::full::caterers::id)
            .limit(2_000)
            .select(read_new::Caterer::as_select())
            .load(&mut reader)
            .await
            .unwrap();
        let with = read_new::Caterer::with_address_async(&mut reader, owners)
            .await
            .unwrap();
        assert_eq!(with.len(), 2_000);
    })
    .await;
    let expected_now = expected(&ledgers);
    let ids: Vec<i32> = expected_now.keys().copied().take(500).collect();
    for id in &ids {
        let (_, row) = read_new::Caterer::find_with_address_async(&mut conn, *id)
            .await
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
    let many = read_new::Address::find_for_many_async(&mut conn, &ids)
        .await
        .unwrap();
    assert_eq!(
        many.len(),
        ids.iter().filter(|id| expected_now[id].is_some()).count()
    );
    compare(&mut conn, &ledgers, true, true, "after read_new").await;

    // write_new: the migration ships first, under the previous release's traffic; then the new
    // release rolls out while instances of the previous one still run beside it.
    stage(
        &pool,
        &mut ledgers,
        &old,
        7,
        migrate_to(&url, &fixture, "write_new"),
    )
    .await;
    compare(
        &mut conn,
        &ledgers,
        true,
        true,
        "after the write_new migration",
    )
    .await;
    stage(&pool, &mut ledgers, &mixed, 8, async {}).await;
    compare(&mut conn, &ledgers, true, true, "during write_new's deploy").await;
    stage(&pool, &mut ledgers, &new, 9, async {}).await;
    compare(&mut conn, &ledgers, true, true, "after write_new").await;
    let expected_now = expected(&ledgers);
    for (id, addr) in expected_now.iter().take(200) {
        let row = write_new::Address::find_for_async(&mut conn, *id)
            .await
            .unwrap();
        assert_eq!(
            row,
            addr.clone().map(|a| a.into_row(*id)),
            "write_new reader for caterer {id}"
        );
    }
    assert_eq!(
        nonblocking::verify(&url, "caterers_addresses")
            .await
            .unwrap()
            .differing,
        0
    );

    // contract: the old columns go while the new code keeps writing.
    stage(
        &pool,
        &mut ledgers,
        &new,
        10,
        migrate_to(&url, &fixture, "contract"),
    )
    .await;
    compare(&mut conn, &ledgers, false, true, "after contract").await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'caterers' AND column_name IN ('street1', 'street2', 'city', 'state', 'zip')").await,
        0
    );
    assert!(expected(&ledgers).len() > SEEDED as usize / 2);
    drop(conn);
    pool.close();
}

/// `sync = app`: no triggers; every write goes through the generated `zmig_*_async` wrappers,
/// which sync the new row in the writer's transaction, through dual_write and the backfill.
#[tokio::test(flavor = "current_thread")]
async fn app_mode_wrappers_through_dual_write_and_the_backfill_under_async_writers() {
    let fixture = fixtures::caterers_app("async_app");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let (db, pool, mut ledgers) = seeded("async_app", &fixture).await;
    let url = db.url.clone();
    let mut conn = pool.get().await.unwrap();
    let old = [Release::Old; WRITERS];
    let app = [Release::App; WRITERS];

    stage(
        &pool,
        &mut ledgers,
        &old,
        1,
        migrate_to(&url, &fixture, "expand"),
    )
    .await;
    compare(&mut conn, &ledgers, true, false, "after expand").await;
    // dual_write's migration creates the sync function the wrappers call; the release with the
    // wrappers rolls out once it is applied (what the old release wrote meanwhile, the backfill
    // copies).
    stage(
        &pool,
        &mut ledgers,
        &old,
        2,
        migrate_to(&url, &fixture, "dual_write"),
    )
    .await;
    stage(&pool, &mut ledgers, &app, 3, async {}).await;
    compare(&mut conn, &ledgers, true, false, "after dual_write").await;

    backfill_under_writers(&url, "caterers_addresses_app", &pool, &mut ledgers, &app, 4).await;
    compare(&mut conn, &ledgers, true, true, "after the backfill").await;
    drop(conn);
    pool.close();
}
