//! What batch workers share, whatever their batches do (the backfill copies owners, a swap's
//! move moves rows): threads in one scope watched by a reporter, the stop and failure flags, the
//! pause recorded in `zmig_backfill_runs`, back-off while the database is under strain, and a
//! batch size adapted towards a target time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double};

use crate::backfill::BackfillOptions;
use crate::{store, Error, Result};

/// How often the reporter reports, and how often it looks whether the workers are done.
const REPORT_EVERY: Duration = Duration::from_millis(200);
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// The workers of one run, and what they tell each other and the reporter.
pub(crate) struct Crew {
    stop: Arc<AtomicBool>,
    failed: AtomicBool,
    paused: AtomicBool,
    backing_off: AtomicBool,
    backoffs: AtomicU64,
}

impl Crew {
    /// `stop` is the caller's flag (Ctrl-C): workers end between batches once it is set.
    pub fn new(stop: Option<Arc<AtomicBool>>) -> Crew {
        Crew {
            stop: stop.unwrap_or_default(),
            failed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            backing_off: AtomicBool::new(false),
            backoffs: AtomicU64::new(0),
        }
    }

    /// Whether workers should end now: stopped from outside, or another worker failed (its
    /// error ends the run, and the others' batches would only be undone by the rerun anyway).
    pub fn should_end(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst)
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn backing_off(&self) -> bool {
        self.backing_off.load(Ordering::SeqCst)
    }

    /// Times a worker found the database under strain and waited.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::SeqCst)
    }

    /// Runs `worker(0)` … `worker(count - 1)`, each on a thread of its own, and calls `report`
    /// on this thread every 200 ms until all have returned. The first error a worker returns
    /// (or a panic) ends the others between batches and is returned.
    pub fn run<W, R>(&self, count: usize, worker: W, mut report: R) -> Result<()>
    where
        W: Fn(usize) -> Result<()> + Sync,
        R: FnMut(),
    {
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .map(|n| {
                    let worker = &worker;
                    scope.spawn(move || {
                        let _panicking = FailOnPanic(&self.failed);
                        let result = worker(n);
                        if result.is_err() {
                            self.failed.store(true, Ordering::SeqCst);
                        }
                        result
                    })
                })
                .collect();
            let mut reported: Option<Instant> = None;
            while handles.iter().any(|h| !h.is_finished()) {
                if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                    report();
                    reported = Some(Instant::now());
                }
                std::thread::sleep(LOOK_EVERY);
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(Error::WorkerPanicked)))
                .collect()
        });
        results.into_iter().collect()
    }

    /// What a worker does before each batch: waits while the run is paused and while the
    /// database is under strain. `false` when the worker should end instead.
    pub fn ready_for_batch(
        &self,
        conn: &mut PgConnection,
        migration: &str,
        options: &BackfillOptions,
    ) -> Result<bool> {
        loop {
            if self.should_end() {
                return Ok(false);
            }
            if self.wait_while_paused(conn, migration)? {
                continue;
            }
            self.back_off_under_strain(conn, options)?;
            return Ok(!self.should_end());
        }
    }

    /// Waits while the run of `migration` is paused (`set_paused`); `true` when it waited, so
    /// the caller looks at its state again before the next batch.
    pub fn wait_while_paused(&self, conn: &mut PgConnection, migration: &str) -> Result<bool> {
        let mut waited = false;
        while store::load_run(conn, migration)?.is_some_and(|r| r.paused) {
            self.paused.store(true, Ordering::SeqCst);
            if self.should_end() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            waited = true;
        }
        self.paused.store(false, Ordering::SeqCst);
        Ok(waited)
    }

    /// Waits, with a growing sleep (100 ms doubling up to 5 s), for as long as the database
    /// shows strain, or until the run ends.
    pub fn back_off_under_strain(
        &self,
        conn: &mut PgConnection,
        options: &BackfillOptions,
    ) -> Result<()> {
        let mut sleep = Duration::from_millis(100);
        loop {
            let strain = database_strain(conn)?;
            let strained = strain.lock_waiters > options.max_lock_waiters
                || strain.replication_lag_seconds > options.max_replication_lag.as_secs_f64();
            self.backing_off.store(strained, Ordering::SeqCst);
            if strained {
                self.backoffs.fetch_add(1, Ordering::SeqCst);
            }
            if !strained || self.should_end() {
                return Ok(());
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_secs(5));
        }
    }
}

/// Fails the crew if dropped while its worker's thread panics: the other workers end between
/// batches instead of waiting for one that will never finish.
struct FailOnPanic<'a>(&'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// The batch size to start with, within the options' bounds.
pub(crate) fn first_batch_size(options: &BackfillOptions) -> i32 {
    options
        .batch_size
        .clamp(options.min_batch_size, options.max_batch_size)
}

/// The next batch size: scaled towards the target time, by at most a factor of two either way.
pub(crate) fn adapt(size: i32, elapsed: Duration, options: &BackfillOptions) -> i32 {
    let elapsed = elapsed.as_secs_f64().max(0.001);
    let factor = (options.target_batch_time.as_secs_f64() / elapsed).clamp(0.5, 2.0);
    ((f64::from(size) * factor) as i32).clamp(options.min_batch_size, options.max_batch_size)
}

/// Signs that the database is under strain, as workers read them before each batch.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Strain {
    /// Sessions of this database waiting more than half a second for a lock.
    #[diesel(sql_type = BigInt)]
    pub lock_waiters: i64,
    /// The largest replay lag of any replica, in seconds (0 without replicas, or without the
    /// right to see them).
    #[diesel(sql_type = Double)]
    pub replication_lag_seconds: f64,
}

/// Reads the current [`Strain`].
pub fn database_strain(conn: &mut PgConnection) -> Result<Strain> {
    Ok(diesel::sql_query(
        "SELECT (SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
                 WHERE NOT l.granted AND a.datname = current_database()
                   AND l.waitstart < clock_timestamp() - interval '500 milliseconds')::bigint AS lock_waiters,
                (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication)::float8
                    AS replication_lag_seconds",
    )
    .get_result(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_towards_the_target_time_within_bounds() {
        let options = BackfillOptions::default();
        assert_eq!(adapt(1_000, Duration::from_millis(100), &options), 2_000);
        assert_eq!(adapt(1_000, Duration::from_millis(800), &options), 500);
        assert_eq!(adapt(150, Duration::from_secs(10), &options), 100);
        assert_eq!(adapt(20_000, Duration::from_millis(1), &options), 20_000);
    }

    #[test]
    fn the_first_batch_size_stays_within_bounds() {
        let options = BackfillOptions {
            batch_size: 5,
            ..BackfillOptions::default()
        };
        assert_eq!(first_batch_size(&options), 100);
    }
}
