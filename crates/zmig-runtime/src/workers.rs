//! What batch workers share, whatever their batches do (the backfill copies owners, a swap's
//! move moves rows): threads in one scope watched by a reporter, the stop and failure flags (and
//! each failure, for the run's log), the pause recorded in `zmig_backfill_runs`, back-off while
//! the database is under strain, a batch size adapted towards a target time, and the pace that
//! yields to live traffic ([`Pace`]).
//!
//! Every connection of a run is named `zmig <name> worker` (`application_name`), so workers,
//! in this process or another, never take each other for the application's traffic.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};

use crate::backfill::BackfillOptions;
use crate::{store, Error, Result};

/// How often the reporter reports, and how often it looks whether the workers are done.
const REPORT_EVERY: Duration = Duration::from_millis(200);
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// A pause between batches is slept in slices this long, so a stop is heard promptly.
const REST_SLICE: Duration = Duration::from_millis(50);

/// The `application_name` of every connection of a backfill or move, and the pattern that
/// recognises them (`LIKE`): workers do not yield to each other, nor to workers of another
/// process or machine, nor to another migration's. A name is at most 40 characters, so the
/// whole fits PostgreSQL's 63.
fn application_name(migration: &str) -> String {
    format!("zmig {migration} worker")
}
const WORKER_NAMES: &str = "zmig % worker";

/// Who the crew's worker `n` of this process is, in `zmig_backfill_ranges.worker` and in the
/// run's log: `host:pid:<n + 1>`, numbered from 1 as its errors number it ("worker 1 lost its
/// connection"), so an operator can tell the machines and processes sharing a run apart.
pub(crate) fn worker_name(n: usize) -> String {
    format!("{}:{}", process_name(), n + 1)
}

/// This process: `host:pid`.
pub(crate) fn process_name() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".to_owned())
}

/// Connects for a backfill or move of `migration`, named so other workers recognise it.
pub(crate) fn connect(url: &str, migration: &str) -> Result<PgConnection> {
    let mut conn = PgConnection::establish(url)?;
    diesel::sql_query("SELECT set_config('application_name', $1, false)")
        .bind::<Text, _>(application_name(migration))
        .execute(&mut conn)?;
    Ok(conn)
}

/// The workers of one run, and what they tell each other and the reporter.
pub(crate) struct Crew {
    stop: Arc<AtomicBool>,
    failed: AtomicBool,
    paused: AtomicBool,
    backing_off: AtomicBool,
    backoffs: AtomicU64,
    /// What the last look that found the database under strain saw.
    strain: Mutex<Option<Strain>>,
    /// Other sessions were busy at a worker's last look: it runs short batches and pauses.
    yielding: AtomicBool,
    /// How many, at that look.
    busy_sessions: AtomicI64,
    yields: AtomicU64,
    /// Each worker's error (its number, the one-line message), as it happens: the reporter
    /// writes them to the run's log, while the run returns only the first.
    failures: Mutex<Vec<(usize, String)>>,
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
            strain: Mutex::new(None),
            yielding: AtomicBool::new(false),
            busy_sessions: AtomicI64::new(0),
            yields: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
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

    /// What the last look that found the database under strain saw.
    pub fn last_strain(&self) -> Option<Strain> {
        self.strain.lock().expect("strain").clone()
    }

    /// The workers' errors since the last call: `(worker, one-line message)`.
    pub fn take_failures(&self) -> Vec<(usize, String)> {
        std::mem::take(&mut *self.failures.lock().expect("failures"))
    }

    fn fail(&self, worker: usize, message: String) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((worker, message));
        self.failed.store(true, Ordering::SeqCst);
    }

    /// `Some(busy sessions)` while workers yield to other sessions' work.
    pub fn yielding(&self) -> Option<i64> {
        self.yielding
            .load(Ordering::SeqCst)
            .then(|| self.busy_sessions.load(Ordering::SeqCst))
    }

    /// Batches after which a worker yielded to other sessions (a short next batch and a pause).
    pub fn yields(&self) -> u64 {
        self.yields.load(Ordering::SeqCst)
    }

    /// Sleeps `pause`, in slices, so a stop (Ctrl-C) or another worker's failure ends it early.
    pub fn rest(&self, pause: Duration) {
        let until = Instant::now() + pause;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.should_end() {
                return;
            }
            std::thread::sleep(left.min(REST_SLICE));
        }
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
                        let _panicking = FailOnPanic(self, n);
                        let result = worker(n).map_err(|error| {
                            if error.is_connection_lost() {
                                Error::WorkerConnectionLost {
                                    worker: n + 1,
                                    message: error.database_text(),
                                }
                            } else {
                                error
                            }
                        });
                        if let Err(error) = &result {
                            self.fail(n, crate::one_line(&error.to_string()));
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
                // Stopped while paused: the run ends paused, it was never resumed.
                return Ok(waited);
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
            if strained {
                *self.strain.lock().expect("strain") = Some(strain);
                self.backoffs.fetch_add(1, Ordering::SeqCst);
            }
            self.backing_off.store(strained, Ordering::SeqCst);
            if !strained || self.should_end() {
                return Ok(());
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_secs(5));
        }
    }
}

/// Fails the crew if dropped while its worker's thread panics: the other workers end between
/// batches instead of waiting for one that will never finish, and the run's log says so.
struct FailOnPanic<'a>(&'a Crew, usize);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(self.1, Error::WorkerPanicked.to_string());
        }
    }
}

/// The batch size to start with, within the options' bounds.
pub(crate) fn first_batch_size(options: &BackfillOptions) -> i32 {
    options
        .batch_size
        .clamp(options.min_batch_size, options.max_batch_size)
}

/// The next batch size: scaled towards `target`, by at most a factor of two either way.
pub(crate) fn adapt(
    size: i32,
    elapsed: Duration,
    target: Duration,
    options: &BackfillOptions,
) -> i32 {
    scale(size, elapsed, target, 0.5, options)
}

/// `size` scaled by `target / elapsed`, the factor kept within `[floor, 2]`, the size within the
/// options' bounds.
fn scale(
    size: i32,
    elapsed: Duration,
    target: Duration,
    floor: f64,
    options: &BackfillOptions,
) -> i32 {
    let elapsed = elapsed.as_secs_f64().max(0.001);
    let factor = (target.as_secs_f64() / elapsed).clamp(floor, 2.0);
    ((f64::from(size) * factor) as i32).clamp(options.min_batch_size, options.max_batch_size)
}

/// What a worker aims at next, given whether other sessions were busy at its last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// The time the next batch should take.
    pub target: Duration,
    /// The sleep before it.
    pub pause: Duration,
}

/// The target and the pause after a batch that took `elapsed`. Quiet: the options' target and
/// pause, as set. Busy (and `yield_to_traffic`): the shorter of the target and
/// `busy_target_batch_time`, and the longer of the pause and `busy_pause_ratio` times the batch,
/// so an explicit `pause` or a short `target_batch_time` still holds.
pub(crate) fn step(options: &BackfillOptions, busy: bool, elapsed: Duration) -> Step {
    if !(busy && options.yield_to_traffic) {
        return Step {
            target: options.target_batch_time,
            pause: options.pause,
        };
    }
    let ratio = options.busy_pause_ratio;
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 100.0)
    } else {
        0.0
    };
    Step {
        target: options
            .target_batch_time
            .min(options.busy_target_batch_time),
        pause: options.pause.max(elapsed.mul_f64(ratio)),
    }
}

/// One worker's pace: the size of its next batch, and whether other sessions of the database were
/// busy when it last looked. After each batch ([`Pace::after_batch`]) it looks whether any other
/// session did work since its previous look; while some do, it yields: shorter batches (their
/// locks are held for less time) and a pause after each, by default twice as long as the batch
/// (the application has the database to itself two thirds of the time). With none, it runs as
/// set.
pub(crate) struct Pace<'a> {
    options: &'a BackfillOptions,
    size: i32,
    busy: bool,
    /// The server's clock at the previous look (seconds since the epoch).
    looked_at: Option<f64>,
}

impl<'a> Pace<'a> {
    pub fn new(options: &'a BackfillOptions) -> Pace<'a> {
        Pace {
            options,
            size: first_batch_size(options),
            busy: false,
            looked_at: None,
        }
    }

    /// The size of the next batch.
    pub fn batch_size(&self) -> i32 {
        self.size
    }

    /// After a batch that took `elapsed`: looks at the other sessions (when the options yield
    /// to traffic), adapts the batch size towards the target for what it saw, and sleeps the
    /// pause (a stop cuts it short).
    pub fn after_batch(
        &mut self,
        conn: &mut PgConnection,
        crew: &Crew,
        elapsed: Duration,
    ) -> Result<()> {
        let was_busy = self.busy;
        if self.options.yield_to_traffic {
            let traffic = live_traffic(conn, self.looked_at)?;
            self.looked_at = Some(traffic.looked_at);
            self.busy = traffic.sessions > 0;
            crew.busy_sessions.store(traffic.sessions, Ordering::SeqCst);
            crew.yielding.store(self.busy, Ordering::SeqCst);
            if self.busy {
                crew.yields.fetch_add(1, Ordering::SeqCst);
            }
        }
        let next = step(self.options, self.busy, elapsed);
        self.size = if self.busy && !was_busy {
            // Traffic just began: straight down to the short batches, not halving batch by batch.
            scale(self.size, elapsed, next.target, 0.1, self.options)
        } else {
            adapt(self.size, elapsed, next.target, self.options)
        };
        crew.rest(next.pause);
        Ok(())
    }
}

/// What a worker saw of the other sessions of its database.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Traffic {
    /// Client sessions of this database, other than zmig's workers, that are running a statement
    /// now or started or ended one since the previous look.
    #[diesel(sql_type = BigInt)]
    pub sessions: i64,
    /// When this look began, by the server's clock (seconds since the epoch): the next look's
    /// `since`.
    #[diesel(sql_type = Double)]
    pub looked_at: f64,
}

/// Reads the [`Traffic`] since `since` (a previous look's `looked_at`; `None`: since this session
/// connected). A session counts when it is `active` now, or when its state changed after
/// `since`: it ran a statement (or began or ended a transaction) meanwhile, however briefly. An
/// idle pool connection does not count, nor a transaction left open long before, nor autovacuum
/// and other background processes, nor any session named as zmig's workers are
/// (`zmig <name> worker`). PostgreSQL shows the state of another role's sessions only to a
/// superuser or a member of `pg_read_all_stats` (`pg_monitor`): run the workers as the
/// application's role or with one of those, or they never see its traffic and never yield.
pub fn live_traffic(conn: &mut PgConnection, since: Option<f64>) -> Result<Traffic> {
    Ok(diesel::sql_query(format!(
        "SELECT count(*) FILTER (
                    WHERE a.state = 'active'
                       OR a.state_change > coalesce(to_timestamp($1),
                            (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())))::bigint
                    AS sessions,
                extract(epoch FROM statement_timestamp())::float8 AS looked_at
         FROM pg_stat_activity AS a
         WHERE a.datname = current_database() AND a.backend_type = 'client backend'
           AND a.pid <> pg_backend_pid() AND a.application_name NOT LIKE '{WORKER_NAMES}'"
    ))
    .bind::<Nullable<Double>, _>(since)
    .get_result(conn)?)
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
        let target = options.target_batch_time;
        assert_eq!(
            adapt(1_000, Duration::from_millis(100), target, &options),
            2_000
        );
        assert_eq!(
            adapt(1_000, Duration::from_millis(800), target, &options),
            500
        );
        assert_eq!(adapt(150, Duration::from_secs(10), target, &options), 100);
        assert_eq!(
            adapt(20_000, Duration::from_millis(1), target, &options),
            20_000
        );
        // Entering the busy target: a batch that took 200 ms heads straight for 50 ms.
        assert_eq!(
            scale(
                8_000,
                Duration::from_millis(200),
                Duration::from_millis(50),
                0.1,
                &options
            ),
            2_000
        );
    }

    #[test]
    fn busy_batches_are_shorter_and_followed_by_a_pause_twice_as_long() {
        let ms = Duration::from_millis;
        let options = BackfillOptions::default();
        assert_eq!(
            step(&options, false, ms(180)),
            Step {
                target: ms(200),
                pause: Duration::ZERO
            }
        );
        assert_eq!(
            step(&options, true, ms(60)),
            Step {
                target: ms(50),
                pause: ms(120)
            }
        );
        // The user's pause and a shorter target still hold while busy.
        let set = BackfillOptions {
            pause: ms(100),
            target_batch_time: ms(20),
            busy_pause_ratio: 2.0,
            ..BackfillOptions::default()
        };
        assert_eq!(
            step(&set, true, ms(20)),
            Step {
                target: ms(20),
                pause: ms(100)
            }
        );
        assert_eq!(
            step(&set, true, ms(80)),
            Step {
                target: ms(20),
                pause: ms(160)
            }
        );
        assert_eq!(
            step(&set, false, ms(80)),
            Step {
                target: ms(20),
                pause: ms(100)
            }
        );
        // Not yielding: busy or not, as set.
        let full = BackfillOptions {
            yield_to_traffic: false,
            ..BackfillOptions::default()
        };
        assert_eq!(
            step(&full, true, ms(180)),
            Step {
                target: ms(200),
                pause: Duration::ZERO
            }
        );
        // A ratio that makes no sense pauses not at all rather than failing.
        let odd = BackfillOptions {
            busy_pause_ratio: f64::NAN,
            ..BackfillOptions::default()
        };
        assert_eq!(step(&odd, true, ms(50)).pause, Duration::ZERO);
    }

    #[test]
    fn worker_names_fit_and_match_the_pattern() {
        let name = application_name(&"x".repeat(40));
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("zmig ") && name.ends_with(" worker"));
        assert_eq!(WORKER_NAMES, "zmig % worker");
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
