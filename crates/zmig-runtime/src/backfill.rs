//! The backfill: copies every owner that existed when dual writing began into the new table.
//!
//! - The keys to walk are fixed when a run starts (`zmig_<name>_key_range()`): owners inserted
//!   later are synced by the triggers, so the backfill never chases new rows and always ends.
//! - The keys are split into ranges recorded in `zmig_backfill_ranges`. Each batch takes its
//!   range's row lock (`FOR UPDATE SKIP LOCKED`) for its own transaction: no two workers
//!   (threads or machines) ever copy the same keys, nothing is kept in the session, so it works
//!   through a pooler in transaction mode, and a range whose worker was killed is free again
//!   as soon as its transaction ends, with no lease to wait out.
//! - Each batch is one short transaction that calls `zmig_<name>_backfill(after, upto, n)` and
//!   moves the range's checkpoint: killed at any moment, a backfill resumes exactly where the
//!   last committed batch left it, and a batch run again writes only what differs (nothing,
//!   unless something changed the rows behind zmig's back).
//! - A finished run does nothing when called again; with [`BackfillOptions::again`] it is replaced
//!   by a new run over every key, which mends what `verify` found. A run that started before a
//!   sync trigger was (re)created, replaced, disabled or enabled is stale (rows written meanwhile
//!   may have skipped the sync) and is replaced the same way, finished or not; its workers go on
//!   with the new run's ranges, each batch reading its checkpoint under its range's lock.
//! - From write_new on, the new table holds the truth: a backfill, which copies the old columns
//!   into it, refuses.
//! - Batch size adapts to a target time per batch, between bounds; an optional pause separates
//!   batches; workers back off while sessions wait long on locks or replicas lag.
//! - Workers yield to live traffic: after each batch a worker looks whether other sessions of
//!   the database did work since its last look (`pg_stat_activity`, zmig's own workers left
//!   out); while they do, its batches aim at a shorter time and each is followed by a pause (by
//!   default twice as long as the batch). With no other work, it runs at full speed.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};

pub use crate::progress::ProgressMode;
use crate::progress::{self, Progress};
use crate::run_log::{Counts, RunLog, Task};
use crate::store::{self, LOCK_CLASS};
use crate::workers::{self, Crew, Pace};
pub use crate::workers::{database_strain, live_traffic, Strain, Traffic};
use crate::{check_migration_name, verify, Error, Functions, Result};

/// How a backfill runs. `Default` is what `cargo xtask zmig backfill` uses.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Worker threads in this process; more can run in other processes or machines.
    pub workers: usize,
    /// Owners per batch to start with; adapted towards `target_batch_time`.
    pub batch_size: i32,
    pub min_batch_size: i32,
    pub max_batch_size: i32,
    /// How long one batch should take while no other session works (and the longest it should
    /// take while some do): short enough that writers waiting on its locks barely notice, long
    /// enough that per-batch overhead stays small. Default 200 ms.
    pub target_batch_time: Duration,
    /// Sleep between batches, to leave the database room, busy or not. Default none.
    pub pause: Duration,
    /// Yield to live traffic: after each batch, look whether other sessions of the database
    /// (zmig's workers left out) did work since the last look, and while they do, run batches of
    /// `busy_target_batch_time` with a pause of `busy_pause_ratio` times the batch after each.
    /// Default `true`; `false` runs at full speed whatever else runs (a quiet night). See
    /// [`live_traffic`] for what counts, and the rights it needs.
    pub yield_to_traffic: bool,
    /// How long one batch should take while other sessions work: its locks make writers wait up
    /// to that long. Never longer than `target_batch_time`. Default 50 ms.
    pub busy_target_batch_time: Duration,
    /// While other sessions work, the pause after each batch, as a multiple of the time the batch
    /// took: 2 (default) leaves the database to the application two thirds of the time, 1 half of
    /// it, 0 never pauses. Never shorter than `pause`.
    pub busy_pause_ratio: f64,
    /// Back off while more than this many sessions have waited over half a second for a lock.
    pub max_lock_waiters: i64,
    /// Back off while a replica lags more than this.
    pub max_replication_lag: Duration,
    pub progress: ProgressMode,
    /// Set to stop between batches (Ctrl-C); the run resumes where it stopped.
    pub stop: Option<Arc<AtomicBool>>,
    /// When the last run finished, start a new one over every owner key: each batch also
    /// deletes rows whose owner is gone or carries nothing and corrects rows that differ, so
    /// this mends what `verify` found. A run still in progress is resumed as usual. Default
    /// `false`: a finished backfill does nothing.
    pub again: bool,
    /// A swap's move only: once the old table is empty, keep moving the rows writers insert
    /// into temp, until stopped (`stop`, Ctrl-C) or until the finalize migration has run, so
    /// temp never holds more than finalize takes under its lock. Default `false`: the move ends
    /// once the old table is empty and temp holds fewer than 1,000 rows.
    pub follow: bool,
    /// A swap's move only: whether it first checks the database's free disk against its
    /// estimate of the peak, and refuses when it cannot hold it. Default: measured where
    /// PostgreSQL can tell (see [`crate::disk`]), not checked where it cannot.
    pub disk_check: crate::disk::DiskCheck,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            workers: 1,
            batch_size: 1_000,
            min_batch_size: 100,
            max_batch_size: 20_000,
            target_batch_time: Duration::from_millis(200),
            pause: Duration::ZERO,
            yield_to_traffic: true,
            busy_target_batch_time: Duration::from_millis(50),
            busy_pause_ratio: 2.0,
            max_lock_waiters: 2,
            max_replication_lag: Duration::from_secs(10),
            progress: ProgressMode::Auto,
            stop: None,
            again: false,
            follow: false,
            disk_check: crate::disk::DiskCheck::Measure,
        }
    }
}

/// What a backfill did, and where the run stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Owners read by this call.
    pub owners: i64,
    /// Rows written (inserted or changed) by this call.
    pub written: i64,
    pub batches: u64,
    /// Whether every range of the run is done.
    pub finished: bool,
    /// Ranges not done that other workers hold (or that this call left when stopped).
    pub ranges_left: i64,
    /// Times a worker paused because the database was under strain.
    pub backoffs: u64,
    /// Batches after which a worker yielded to other sessions' work (ran a shorter batch next
    /// and paused first).
    pub yields: u64,
}

/// Runs (or resumes) the backfill of `migration` against `database_url`.
pub fn backfill(
    database_url: &str,
    migration: &str,
    options: &BackfillOptions,
) -> Result<BackfillReport> {
    check_migration_name(migration)?;
    let functions = Functions::of(migration);
    let mut conn = workers::connect(database_url, migration)?;
    check_dual_write_in_place(&mut conn, migration, &functions)?;
    if verify::write_new_applied(&mut conn, migration)? {
        return Err(Error::not_ready(crate::NotReady::WriteNewApplied, format!(
            "`{migration}`: backfill refuses: write_new is applied, so the new table holds the truth and \
             a backfill (old columns into the new table) would overwrite newer values with older ones; \
             nothing was changed. If verify reports differences, correct those rows by hand (or revert \
             write_new first if the old columns are right), then verify again"
        )));
    }
    store::ensure_tables(&mut conn)?;
    start_run(&mut conn, migration, &functions, options.again)?;

    let before = store::range_totals(&mut conn, migration)?;
    // From here on the log has the coordinator's connection, and every step that can fail is
    // logged, with the run's end.
    let mut log = RunLog::start(
        conn,
        database_url,
        migration,
        Task::Backfill,
        options,
        &where_it_starts(&before),
    );
    let shared = Shared {
        crew: Crew::new(options.stop.clone()),
        counters: Mutex::new(Counters::default()),
    };
    let progress = Progress::new(
        options.progress,
        migration,
        "of keys",
        before.keys_total,
        before.keys_done,
    );
    let ran = shared.crew.run(
        options.workers.max(1),
        |n| run_worker(database_url, migration, &functions, options, &shared, n),
        || {
            let counters = shared.counters.lock().expect("counters").clone();
            show_progress(&progress, &before, &counters, &shared.crew);
            log.observe(&shared.crew, counters.logged());
        },
    );
    let counters = shared.counters.lock().expect("counters").clone();
    if let Err(error) = ran {
        log.end(
            &shared.crew,
            false,
            counters.logged(),
            "stopped by the error above; what was done is kept, run it again to resume",
        );
        return Err(error);
    }

    let totals = log.step(|conn| store::range_totals(conn, migration))?;
    let finished = totals.ranges == totals.ranges_done;
    if finished {
        log.step(|conn| store::finish_run(conn, migration))?;
    }
    progress.finish(&format!(
        "{}: {} owners read, {} rows written{}",
        if finished {
            "done"
        } else {
            "stopped; run it again to resume"
        },
        counters.owners,
        counters.written,
        progress::yielded(shared.crew.yields(), counters.batches)
    ));
    log.end(
        &shared.crew,
        finished,
        counters.logged(),
        &if finished {
            format!("every key walked ({} keys)", totals.keys_total)
        } else {
            format!(
                "stopped with {} of {} keys walked, {} ranges left; run it again to resume",
                totals.keys_done,
                totals.keys_total,
                totals.ranges - totals.ranges_done
            )
        },
    );
    Ok(BackfillReport {
        owners: counters.owners,
        written: counters.written,
        batches: counters.batches,
        finished,
        ranges_left: totals.ranges - totals.ranges_done,
        backoffs: shared.crew.backoffs(),
        yields: shared.crew.yields(),
    })
}

/// Where a run starts, for its log: from the first key, or where an earlier call stopped.
fn where_it_starts(before: &store::RangeTotals) -> String {
    if before.keys_done == 0 {
        format!("from the first of {} keys", before.keys_total)
    } else if before.keys_done >= before.keys_total {
        "nothing left: every key was walked before (--again walks them once more)".to_owned()
    } else {
        format!(
            "resumes with {} of {} keys walked ({:.1}%)",
            before.keys_done,
            before.keys_total,
            100.0 * before.keys_done as f64 / before.keys_total as f64
        )
    }
}

/// The bar (keys walked) and the log line, from this run's counters.
fn show_progress(
    progress: &Progress,
    before: &store::RangeTotals,
    counters: &Counters,
    crew: &Crew,
) {
    let rate = counters.owners as f64 / progress.elapsed_secs();
    let state = progress::activity(crew.paused(), crew.backing_off(), crew.yielding());
    let done = before.keys_done + counters.keys;
    progress.show(
        done,
        before.keys_total,
        &format!("{} owners, {rate:.0}/s{state}", counters.owners),
        || {
            let percent = if before.keys_total > 0 {
                100.0 * done as f64 / before.keys_total as f64
            } else {
                100.0
            };
            let key_rate = counters.keys as f64 / progress.elapsed_secs();
            format!(
                "{percent:.1}% of keys, {} owners copied, {rate:.0} owners/s, eta {}{state}",
                counters.owners,
                progress::eta(before.keys_total - done, key_rate)
            )
        },
    );
}

/// Creates zmig's bookkeeping tables now, if they are missing (a backfill or verify creates
/// them on first use anyway): for a deploy step that holds the DDL rights the workers lack, or
/// for tools that watch the checkpoints before a backfill starts.
pub fn create_bookkeeping_tables(conn: &mut PgConnection) -> Result<()> {
    store::ensure_tables(conn)
}

/// Pauses (or resumes) a backfill: running workers finish their batch and wait.
pub fn set_paused(conn: &mut PgConnection, migration: &str, paused: bool) -> Result<()> {
    check_migration_name(migration)?;
    if !store::tables_exist(conn)? {
        return Err(Error::not_ready(
            crate::NotReady::NoBackfillStarted,
            format!("no backfill of `{migration}` has started on this database"),
        ));
    }
    let updated =
        diesel::sql_query("UPDATE zmig_backfill_runs SET paused = $2 WHERE migration = $1")
            .bind::<Text, _>(migration)
            .bind::<Bool, _>(paused)
            .execute(conn)?;
    if updated == 0 {
        return Err(Error::not_ready(
            crate::NotReady::NoBackfillStarted,
            format!("no backfill of `{migration}` has started on this database"),
        ));
    }
    Ok(())
}

/// Where a backfill stands, as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillStatus {
    pub keys_total: i64,
    pub keys_done: i64,
    pub owners: i64,
    pub written: i64,
    pub finished: bool,
    pub paused: bool,
}

/// The recorded state of `migration`'s backfill, `None` when none has started.
pub fn status(conn: &mut PgConnection, migration: &str) -> Result<Option<BackfillStatus>> {
    check_migration_name(migration)?;
    if !store::tables_exist(conn)? {
        return Ok(None);
    }
    let Some(run) = store::load_run(conn, migration)? else {
        return Ok(None);
    };
    let totals = store::range_totals(conn, migration)?;
    Ok(Some(BackfillStatus {
        keys_total: totals.keys_total,
        keys_done: totals.keys_done,
        owners: totals.owners,
        written: totals.written,
        finished: run.finished,
        paused: run.paused,
    }))
}

/// The backfill may only start once the triggers sync every write: otherwise a row changed
/// behind the batch would never reach the new table.
fn check_dual_write_in_place(
    conn: &mut PgConnection,
    migration: &str,
    functions: &Functions,
) -> Result<()> {
    #[derive(QueryableByName)]
    struct Present {
        #[diesel(sql_type = Bool)]
        functions: bool,
        #[diesel(sql_type = Bool)]
        trigger: bool,
    }
    let present: Present = diesel::sql_query(
        "SELECT (SELECT count(*) FROM pg_proc WHERE proname IN ($1, $2)) = 2 AS functions,
                (EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = $3)
                 OR EXISTS (SELECT 1 FROM pg_proc WHERE proname = $4)) AS trigger",
    )
    .bind::<Text, _>(&functions.backfill)
    .bind::<Text, _>(&functions.key_range)
    .bind::<Text, _>(&functions.to_new_insert)
    .bind::<Text, _>(&functions.sync_owner)
    .get_result(conn)?;
    if present.functions && present.trigger {
        return Ok(());
    }
    Err(Error::not_ready(crate::NotReady::PhaseNotApplied, format!(
        "the dual_write migration of `{migration}` is not applied on this database (no sync trigger or backfill \
         function), so rows changed during a backfill would be lost.\n\
         Apply it first: zmig's `generate` with stage = \"dual_write\" or later, then \
         `diesel migration run` (or your service's embedded migrations)."
    )))
}

/// Records the run and its ranges the first time; a later call resumes the same run, or with
/// `again`, replaces a finished one with a new run over every key.
fn start_run(
    conn: &mut PgConnection,
    migration: &str,
    functions: &Functions,
    again: bool,
) -> Result<()> {
    conn.transaction::<_, Error, _>(|conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind::<Integer, _>(LOCK_CLASS)
            .bind::<Integer, _>(store::lock_key(migration))
            .execute(conn)?;
        // Who the owner → new triggers are now, and were when the run started.
        let owner_sync = verify::sync_triggers(conn, migration)?.owner_sync;
        #[derive(QueryableByName)]
        struct Started {
            #[diesel(sql_type = Nullable<Text>)]
            owner_sync: Option<String>,
        }
        let started: Option<Started> =
            diesel::sql_query("SELECT owner_sync FROM zmig_backfill_runs WHERE migration = $1")
                .bind::<Text, _>(migration)
                .get_result(conn)
                .optional()?;
        let stale = started
            .as_ref()
            .is_some_and(|s| s.owner_sync.as_deref() != Some(owner_sync.as_str()));
        match store::load_run(conn, migration)? {
            Some(run) if stale || (again && run.finished) => {
                // Its ranges go with it (ON DELETE CASCADE).
                diesel::sql_query("DELETE FROM zmig_backfill_runs WHERE migration = $1")
                    .bind::<Text, _>(migration)
                    .execute(conn)?;
            }
            Some(_) => return Ok(()),
            None => {}
        }
        #[derive(QueryableByName)]
        struct KeyRange {
            #[diesel(sql_type = Nullable<BigInt>)]
            lowest: Option<i64>,
            #[diesel(sql_type = Nullable<BigInt>)]
            highest: Option<i64>,
        }
        let keys: KeyRange =
            diesel::sql_query(format!("SELECT lowest, highest FROM \"{}\"()", functions.key_range)).get_result(conn)?;
        diesel::sql_query("INSERT INTO zmig_backfill_runs (migration, lowest, highest, owner_sync) VALUES ($1, $2, $3, $4)")
            .bind::<Text, _>(migration)
            .bind::<Nullable<BigInt>, _>(keys.lowest)
            .bind::<Nullable<BigInt>, _>(keys.highest)
            .bind::<Text, _>(&owner_sync)
            .execute(conn)?;
        if let (Some(lowest), Some(highest)) = (keys.lowest, keys.highest) {
            let (count, size) = split(lowest, highest);
            diesel::sql_query(
                "INSERT INTO zmig_backfill_ranges (migration, range_no, start_after, end_at, done_through)
                 SELECT $1, g, $2 - 1 + g * $4, least($2 - 1 + (g + 1) * $4, $3), $2 - 1 + g * $4
                 FROM generate_series(0, $5 - 1) AS g",
            )
            .bind::<Text, _>(migration)
            .bind::<BigInt, _>(lowest)
            .bind::<BigInt, _>(highest)
            .bind::<BigInt, _>(size)
            .bind::<Integer, _>(count)
            .execute(conn)?;
        }
        Ok(())
    })
}

/// Ranges of at least 10,000 keys, at most 64 of them: enough for many workers, few enough rows.
fn split(lowest: i64, highest: i64) -> (i32, i64) {
    let span = (i128::from(highest) - i128::from(lowest) + 1).max(1);
    let count = (span / 10_000).clamp(1, 64);
    let size = (span + count - 1) / count;
    let count = (span + size - 1) / size;
    (count as i32, size.min(i128::from(i64::MAX)) as i64)
}

struct Shared {
    crew: Crew,
    counters: Mutex<Counters>,
}

#[derive(Debug, Clone, Default)]
struct Counters {
    keys: i64,
    owners: i64,
    written: i64,
    batches: u64,
}

impl Counters {
    /// What the run's log counts.
    fn logged(&self) -> Counts {
        Counts {
            rows: self.owners,
            extra: self.written,
            batches: self.batches,
        }
    }
}

#[derive(QueryableByName)]
struct RangeRow {
    #[diesel(sql_type = Integer)]
    range_no: i32,
    #[diesel(sql_type = BigInt)]
    done_through: i64,
    #[diesel(sql_type = BigInt)]
    end_at: i64,
}

fn run_worker(
    url: &str,
    migration: &str,
    functions: &Functions,
    options: &BackfillOptions,
    shared: &Shared,
    worker: usize,
) -> Result<()> {
    let mut conn = workers::connect(url, migration)?;
    let worker_name = workers::worker_name(worker);
    let crew = &shared.crew;
    let mut pace = Pace::new(options);
    let mut last_range = None;
    loop {
        if crew.should_end() {
            return Ok(());
        }
        if crew.wait_while_paused(&mut conn, migration)? {
            continue;
        }
        crew.back_off_under_strain(&mut conn, options)?;
        if crew.should_end() {
            return Ok(());
        }
        let started = Instant::now();
        let Some(batch) = run_batch(
            &mut conn,
            migration,
            functions,
            last_range,
            pace.batch_size(),
            &worker_name,
        )?
        else {
            // Every range is done, or in another worker's batch right now.
            return Ok(());
        };
        let elapsed = started.elapsed();
        {
            let mut counters = shared.counters.lock().expect("counters");
            counters.keys += batch.keys;
            counters.owners += i64::from(batch.owners);
            counters.written += i64::from(batch.written);
            counters.batches += 1;
        }
        last_range = (!batch.range_done).then_some(batch.range_no);
        pace.after_batch(&mut conn, crew, elapsed)?;
    }
}

/// Takes a range for one batch: the first range not done that no other batch holds, locked
/// until the batch's transaction ends (`FOR UPDATE SKIP LOCKED`). Nothing lives in the session,
/// so it works the same through a pooler in transaction mode (pgbouncer), and a worker that
/// dies mid-batch lets its range go with its transaction. The range this worker had before
/// comes first, then ranges no other worker touched in the last seconds, so workers spread
/// over the ranges; another worker may still take a range between two of its batches, which
/// is safe because each batch starts from the checkpoint it reads under the lock.
fn claim_range(
    conn: &mut PgConnection,
    migration: &str,
    last_range: Option<i32>,
    worker: &str,
) -> QueryResult<Option<RangeRow>> {
    diesel::sql_query(
        "SELECT range_no, done_through, end_at FROM zmig_backfill_ranges
         WHERE migration = $1 AND NOT done
         ORDER BY range_no IS NOT DISTINCT FROM $2 DESC,
                  (worker IS NULL OR worker = $3 OR updated_at < now() - interval '5 seconds') DESC,
                  range_no
         LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .bind::<Text, _>(migration)
    .bind::<Nullable<Integer>, _>(last_range)
    .bind::<Text, _>(worker)
    .get_result(conn)
    .optional()
}

struct Batch {
    range_no: i32,
    range_done: bool,
    /// Keys the batch walked past.
    keys: i64,
    owners: i32,
    written: i32,
}

/// One batch and its checkpoint, in one transaction with the lock on its range: either both
/// happen or neither, and no other batch works on the range meanwhile. `None`: no range free.
fn run_batch(
    conn: &mut PgConnection,
    migration: &str,
    functions: &Functions,
    last_range: Option<i32>,
    batch_size: i32,
    worker: &str,
) -> Result<Option<Batch>> {
    #[derive(QueryableByName)]
    struct Copied {
        #[diesel(sql_type = Nullable<BigInt>)]
        last_key: Option<i64>,
        #[diesel(sql_type = Integer)]
        owners: i32,
        #[diesel(sql_type = Integer)]
        written: i32,
    }
    let batch = conn.transaction(|conn| {
        let Some(range) = claim_range(conn, migration, last_range, worker)? else {
            return Ok(None);
        };
        let copied: Copied =
            diesel::sql_query(format!("SELECT last_key, owners, written FROM \"{}\"($1, $2, $3)", functions.backfill))
                .bind::<BigInt, _>(range.done_through)
                .bind::<BigInt, _>(range.end_at)
                .bind::<Integer, _>(batch_size)
                .get_result(conn)?;
        // A short batch read every key left in the range.
        let next = match copied.last_key {
            Some(last) if copied.owners >= batch_size => last,
            _ => range.end_at,
        };
        diesel::sql_query(
            "UPDATE zmig_backfill_ranges
             SET done_through = $3, owners = owners + $4, written = written + $5, done = $3 >= end_at,
                 worker = $6, updated_at = now()
             WHERE migration = $1 AND range_no = $2",
        )
        .bind::<Text, _>(migration)
        .bind::<Integer, _>(range.range_no)
        .bind::<BigInt, _>(next)
        .bind::<BigInt, _>(i64::from(copied.owners))
        .bind::<BigInt, _>(i64::from(copied.written))
        .bind::<Text, _>(worker)
        .execute(conn)?;
        Ok::<_, diesel::result::Error>(Some(Batch {
            range_no: range.range_no,
            range_done: next >= range.end_at,
            keys: next - range.done_through,
            owners: copied.owners,
            written: copied.written,
        }))
    })?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keys_into_bounded_ranges() {
        assert_eq!(split(1, 1), (1, 1));
        assert_eq!(split(1, 25_000), (2, 12_500));
        let (count, size) = split(1, 1_000_000_000);
        assert_eq!(count, 64);
        assert!(i64::from(count) * size >= 1_000_000_000);
        let (count, size) = split(-5, 5);
        assert_eq!((count, size), (1, 11));
    }
}
