//! The log of each run of a backfill or of a swap's move, so an operator sees what happened after
//! the terminal is gone: when it started and with which options, a summary of its batches every
//! few seconds, pauses, yields to live traffic and back-offs under strain (when each began and
//! ended, and why), each worker's error, and how it ended, with its totals. Kept in
//! `zmig_run_log` beside the other bookkeeping tables (the last [`KEEP_RUNS`] runs of each
//! migration), printed by `cargo xtask zmig status`, read by [`recent`] and [`last_run`]; and
//! sent, the same events, as [`tracing`] events of target `zmig` for a service to route, with
//! the fields `migration`, `task`, `run`, `worker`, `kind`, `rows` and `batches`, the detail as
//! the message.
//!
//! The run's coordinator writes the log, never a batch: workers only set flags and counters in
//! memory (as they do for the progress bar), and the reporter, which looks at them every 200 ms,
//! writes what changed on the coordinator's own connection, each event in a transaction of its
//! own that touches nothing but `zmig_run_log`. So a batch never waits for the log, holds none of
//! its locks, and cannot fail because of it; a write that finds its connection lost is tried once
//! more on a new one, and a write that still fails is dropped with a `tracing` warning while the
//! run goes on. What the log loses that way is the flags' exact moments: a pause shorter than
//! the reporter's look, or a yield between two looks, is seen by its counters, not its times.
//!
//! The kinds of event, as `kind` spells them:
//!
//! | kind | when | `rows`, `batches` |
//! |---|---|---|
//! | `started` | the run began; the detail has its options and where it resumes | |
//! | `batches` | at most every 10 s while batches run, and before a pause, an error or the end | since the last summary |
//! | `paused`, `resumed` | the workers saw the pause (`--pause`) or its end | |
//! | `yield_began`, `yield_ended` | workers began to yield to other sessions' work, and stopped (5 s without) | |
//! | `backoff_began`, `backoff_ended` | workers began to wait while the database was under strain (the reason), and stopped | |
//! | `error` | a worker's (or the coordinator's) error, on one line; `worker` says whose | |
//! | `finished`, `stopped` | the run's end: done, or stopped (Ctrl-C, an error) with what is left | the run's totals |
//!
//! A run killed outright (`kill -9`, a crash) has no end event.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};

use crate::backfill::BackfillOptions;
use crate::workers::{self, Crew};
use crate::{check_migration_name, one_line, progress, Result};

/// The `tracing` zmig-runtime emits its events with: a service (or a test) that routes them
/// can install its subscriber through it without naming a version of its own.
pub use tracing;

/// Runs kept per migration: a run that starts deletes the events of older ones.
pub const KEEP_RUNS: i64 = 20;

/// The longest a run's batches go without a summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// A yield or a back-off ends once the workers have gone this long without one: workers look
/// after every batch, and under intermittent traffic would begin and end one batch after
/// another.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// A lost connection is opened again at most this often.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// One event of a run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RunEvent {
    #[diesel(sql_type = Text)]
    pub migration: String,
    /// `backfill` (an extract's) or `move` (a swap's).
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The run: the id of its `started` event, so a later run has a larger one.
    #[diesel(sql_type = BigInt)]
    pub run: i64,
    /// When it was written, by the database's clock.
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    /// The worker it is about (`host:pid:n`, as in `zmig_backfill_ranges.worker`); `None` for
    /// the run as a whole.
    #[diesel(sql_type = Nullable<Text>)]
    pub worker: Option<String>,
    /// What happened: see the [module](self)'s table.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// A summary's rows since the last one, or an end's totals (owners read, rows moved).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub rows: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub batches: Option<i64>,
    /// What it was, for people: the options, the rate, the reason, the error's message.
    #[diesel(sql_type = Text)]
    pub detail: String,
}

/// The last run of a migration, as [`last_run`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub run: i64,
    /// Its first event (`started`) and its latest ones, oldest first.
    pub events: Vec<RunEvent>,
    /// Events between the first and the latest ones that `events` leaves out.
    pub omitted: i64,
}

impl LastRun {
    /// How the run ended (its last event, `finished` or `stopped`), `None` while it runs or when
    /// its process was killed.
    pub fn end(&self) -> Option<&RunEvent> {
        self.events
            .last()
            .filter(|e| e.kind == Kind::Finished.as_str() || e.kind == Kind::Stopped.as_str())
    }
}

/// The last `limit` events of `migration` over the runs kept, oldest first (grouped by run, in
/// the order the runs started); none when nothing has run.
pub fn recent(conn: &mut PgConnection, migration: &str, limit: usize) -> Result<Vec<RunEvent>> {
    check_migration_name(migration)?;
    if !log_exists(conn)? {
        return Ok(Vec::new());
    }
    let mut events: Vec<RunEvent> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM zmig_run_log WHERE migration = $1 ORDER BY run DESC, id DESC LIMIT $2"
    ))
    .bind::<Text, _>(migration)
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .load(conn)?;
    events.reverse();
    Ok(events)
}

/// The last run of `migration`: its `started` event and its latest events, `limit` in all;
/// `None` when nothing has run.
pub fn last_run(conn: &mut PgConnection, migration: &str, limit: usize) -> Result<Option<LastRun>> {
    check_migration_name(migration)?;
    if !log_exists(conn)? {
        return Ok(None);
    }
    #[derive(QueryableByName)]
    struct Run {
        #[diesel(sql_type = Nullable<BigInt>)]
        run: Option<i64>,
        #[diesel(sql_type = BigInt)]
        events: i64,
    }
    let found: Run = diesel::sql_query(
        "SELECT r.run, (SELECT count(*) FROM zmig_run_log WHERE migration = $1 AND run = r.run) AS events
         FROM (SELECT max(run) AS run FROM zmig_run_log WHERE migration = $1) AS r",
    )
    .bind::<Text, _>(migration)
    .get_result(conn)?;
    let Some(run) = found.run else {
        return Ok(None);
    };
    let latest = i64::try_from(limit.max(1) - 1).unwrap_or(i64::MAX);
    let events: Vec<RunEvent> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM (
             SELECT *, row_number() OVER (ORDER BY id) AS n FROM zmig_run_log WHERE migration = $1 AND run = $2
         ) AS e
         WHERE n = 1 OR n > $3 - $4
         ORDER BY id"
    ))
    .bind::<Text, _>(migration)
    .bind::<BigInt, _>(run)
    .bind::<BigInt, _>(found.events)
    .bind::<BigInt, _>(latest)
    .load(conn)?;
    Ok(Some(LastRun {
        run,
        omitted: found.events - events.len() as i64,
        events,
    }))
}

const COLUMNS: &str = "migration, task, run, at, worker, kind, \"rows\", batches, detail";

fn log_exists(conn: &mut PgConnection) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT to_regclass('zmig_run_log') IS NOT NULL AS exists")
            .get_result(conn)?;
    Ok(found.exists)
}

/// What happened, as the log's `kind` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Started,
    Batches,
    Paused,
    Resumed,
    YieldBegan,
    YieldEnded,
    BackoffBegan,
    BackoffEnded,
    Error,
    Finished,
    Stopped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Batches => "batches",
            Kind::Paused => "paused",
            Kind::Resumed => "resumed",
            Kind::YieldBegan => "yield_began",
            Kind::YieldEnded => "yield_ended",
            Kind::BackoffBegan => "backoff_began",
            Kind::BackoffEnded => "backoff_ended",
            Kind::Error => "error",
            Kind::Finished => "finished",
            Kind::Stopped => "stopped",
        }
    }
}

/// Whose run it is: an extract's backfill or a swap's move, and what their counts count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    Backfill,
    Move,
    /// A swap's move back, which takes the rows to the old table before prepare is reverted.
    MoveBack,
}

impl Task {
    fn as_str(self) -> &'static str {
        match self {
            Task::Backfill => "backfill",
            Task::Move => "move",
            Task::MoveBack => "move_back",
        }
    }

    /// What `rows` and `extra` count, and the rate's unit.
    fn units(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Task::Backfill => ("owners read", "rows written", "owners/s"),
            Task::Move => ("rows moved", "referencing rows synced", "rows/s"),
            // The referencing tables are left as they are: the revert drops their shadow
            // columns, so `extra` stays 0.
            Task::MoveBack => ("rows moved back", "referencing rows synced", "rows/s"),
        }
    }
}

/// A run's counts so far: owners read or rows moved, rows written or referencing rows synced,
/// and batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub rows: i64,
    pub extra: i64,
    pub batches: u64,
}

/// A state of the workers that begins and ends (yielding, backing off), as the reporter sees it:
/// by its flag at each look, and by its counter, which catches what happened between two looks.
#[derive(Debug, Default)]
struct Episode {
    began: Option<Instant>,
    last_seen: Option<Instant>,
    /// The counter when it began, and at the last look.
    count_at_start: u64,
    count_seen: u64,
}

enum Change {
    Began,
    Ended { lasted: Duration, times: u64 },
}

impl Episode {
    fn look(&mut self, flag: bool, count: u64, now: Instant) -> Option<Change> {
        let seen = flag || count > self.count_seen;
        let before = std::mem::replace(&mut self.count_seen, count);
        match self.began {
            None if seen => {
                self.began = Some(now);
                self.last_seen = Some(now);
                self.count_at_start = before;
                Some(Change::Began)
            }
            Some(_) if seen => {
                self.last_seen = Some(now);
                None
            }
            Some(_) if self.last_seen.is_some_and(|at| now - at >= QUIET_FOR) => self.end(),
            _ => None,
        }
    }

    /// Ends it now, if it began.
    fn end(&mut self) -> Option<Change> {
        let began = self.began.take()?;
        let lasted = self.last_seen.take().unwrap_or(began) - began;
        Some(Change::Ended {
            lasted,
            times: self.count_seen - self.count_at_start,
        })
    }
}

/// The log of one run, written by its coordinator: see the [module](self) for why there.
pub(crate) struct RunLog {
    url: String,
    migration: String,
    task: Task,
    /// `None` when the `started` event could not be written: the events still go to `tracing`.
    run: Option<i64>,
    /// The coordinator's connection, which the log owns so that it can open it again when the
    /// server ended it; the coordinator borrows it through [`RunLog::step`].
    conn: Option<PgConnection>,
    reconnect_after: Option<Instant>,
    max_lock_waiters: i64,
    max_replication_lag: Duration,
    started: Instant,
    latest: Counts,
    yields: u64,
    backoffs: u64,
    summarized: Counts,
    summarized_at: Instant,
    paused_at: Option<Instant>,
    yielding: Episode,
    backing_off: Episode,
    ended: bool,
}

impl RunLog {
    /// Starts the log of a run of `migration` on the coordinator's connection `conn` (the
    /// bookkeeping tables exist): writes its `started` event, with `options` and `state` (where
    /// it resumes), and deletes the events of runs older than the last [`KEEP_RUNS`].
    pub fn start(
        conn: PgConnection,
        url: &str,
        migration: &str,
        task: Task,
        options: &BackfillOptions,
        state: &str,
    ) -> RunLog {
        let now = Instant::now();
        let mut log = RunLog {
            url: url.to_owned(),
            migration: migration.to_owned(),
            task,
            run: None,
            conn: Some(conn),
            reconnect_after: None,
            max_lock_waiters: options.max_lock_waiters,
            max_replication_lag: options.max_replication_lag,
            started: now,
            latest: Counts::default(),
            yields: 0,
            backoffs: 0,
            summarized: Counts::default(),
            summarized_at: now,
            paused_at: None,
            yielding: Episode::default(),
            backing_off: Episode::default(),
            ended: false,
        };
        let detail = format!("{}; {state}", options_text(options));
        let (name, task_name) = (migration.to_owned(), task.as_str());
        match log.with_conn(|conn| begin(conn, &name, task_name, &detail)) {
            Ok(run) => log.run = Some(run),
            Err(error) => log.write_failed(&error),
        }
        log.emit(Kind::Started, None, None, &detail);
        if let Err(error) = log.with_conn(|conn| prune(conn, &name)) {
            log.write_failed(&error);
        }
        log
    }

    /// Runs the coordinator's `work` on its connection (opened again if the server ended it;
    /// `work` must be safe to run twice). An error is logged, with the run's end, and returned.
    pub fn step<T>(&mut self, work: impl FnMut(&mut PgConnection) -> Result<T>) -> Result<T> {
        self.with_conn(work).inspect_err(|error| {
            self.record(Kind::Error, None, None, &one_line(&error.to_string()));
            self.close(
                false,
                "stopped by the error above; what was done is kept, run it again to resume",
            );
        })
    }

    /// Runs `work` on the coordinator's connection as [`RunLog::step`] does, but an error is
    /// only returned: for what the run can do without (the bar's counts).
    pub fn step_quietly<T>(
        &mut self,
        work: impl FnMut(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        self.with_conn(work)
    }

    /// The reporter's look, every 200 ms while the workers run: logs the workers' errors, a
    /// pause or its end, a yield or a back-off beginning or ending, and a summary when one is
    /// due. `counts` are the run's so far.
    pub fn observe(&mut self, crew: &Crew, counts: Counts) {
        if self.ended {
            return;
        }
        let now = Instant::now();
        self.latest = counts;
        self.yields = crew.yields();
        self.backoffs = crew.backoffs();
        for (worker, message) in crew.take_failures() {
            self.summarize(now);
            let worker = workers::worker_name(worker);
            self.record(Kind::Error, Some(&worker), None, &message);
        }
        let paused = crew.paused();
        match (paused, self.paused_at) {
            (true, None) => {
                self.summarize(now);
                self.paused_at = Some(now);
                self.record(
                    Kind::Paused,
                    None,
                    None,
                    "the workers wait between batches until it is resumed (--resume)",
                );
            }
            (false, Some(at)) => {
                self.paused_at = None;
                let detail = format!("after {:.1} s paused", (now - at).as_secs_f64());
                self.record(Kind::Resumed, None, None, &detail);
            }
            _ => {}
        }
        let change = self
            .backing_off
            .look(crew.backing_off(), crew.backoffs(), now);
        match change {
            Some(Change::Began) => {
                let detail = self.strain_text(crew);
                self.record(Kind::BackoffBegan, None, None, &detail);
            }
            Some(ended) => self.record_ended(Kind::BackoffEnded, ended),
            None => {}
        }
        let change = self
            .yielding
            .look(crew.yielding().is_some(), crew.yields(), now);
        match change {
            Some(Change::Began) => {
                let detail = match crew.yielding() {
                    Some(sessions) => format!(
                        "{sessions} other session{} of the database busy: short batches, each followed by a pause",
                        if sessions == 1 { "" } else { "s" }
                    ),
                    None => "other sessions of the database busy: short batches, each followed by a pause"
                        .to_owned(),
                };
                self.record(Kind::YieldBegan, None, None, &detail);
            }
            Some(ended) => self.record_ended(Kind::YieldEnded, ended),
            None => {}
        }
        if now - self.summarized_at >= SUMMARY_EVERY {
            self.summarize(now);
        }
    }

    /// Logs the run's end, after a last look at `crew`: `finished`, or `stopped`, with its
    /// totals `counts` and `state` (what is done, what is left).
    pub fn end(&mut self, crew: &Crew, finished: bool, counts: Counts, state: &str) {
        self.observe(crew, counts);
        self.close(finished, state);
    }

    /// Ends what is open (a yield, a back-off), summarizes the last batches and writes the end.
    fn close(&mut self, finished: bool, state: &str) {
        if self.ended {
            return;
        }
        if let Some(ended) = self.yielding.end() {
            self.record_ended(Kind::YieldEnded, ended);
        }
        if let Some(ended) = self.backing_off.end() {
            self.record_ended(Kind::BackoffEnded, ended);
        }
        self.summarize(Instant::now());
        let (rows, extra, _) = self.task.units();
        let counts = self.latest;
        let mut detail = format!(
            "{} {rows} in {} batches, {} {extra}, in {:.1} s{}",
            counts.rows,
            counts.batches,
            counts.extra,
            self.started.elapsed().as_secs_f64(),
            progress::yielded(self.yields, counts.batches)
        );
        if self.backoffs > 0 {
            detail.push_str(&format!(
                "; backed off {} times under strain",
                self.backoffs
            ));
        }
        detail.push_str("; ");
        detail.push_str(state);
        let kind = if finished {
            Kind::Finished
        } else {
            Kind::Stopped
        };
        self.record(kind, None, Some(counts), &detail);
        self.ended = true;
    }

    /// A summary of the batches since the last one, if any ran.
    fn summarize(&mut self, now: Instant) {
        let last = self.summarized;
        let since = Counts {
            rows: self.latest.rows - last.rows,
            extra: self.latest.extra - last.extra,
            batches: self.latest.batches - last.batches,
        };
        if since.batches == 0 && since.extra == 0 {
            return;
        }
        let seconds = (now - self.summarized_at).as_secs_f64().max(0.001);
        let (rows, extra, per_second) = self.task.units();
        let detail = format!(
            "{} {rows} in {} batches, {} {extra}; {:.0} {per_second}",
            since.rows,
            since.batches,
            since.extra,
            since.rows as f64 / seconds
        );
        self.summarized = self.latest;
        self.summarized_at = now;
        self.record(Kind::Batches, None, Some(since), &detail);
    }

    fn record_ended(&mut self, kind: Kind, change: Change) {
        let Change::Ended { lasted, times } = change else {
            return;
        };
        let what = if kind == Kind::YieldEnded {
            "batches followed by a yield"
        } else {
            "looks found the database under strain"
        };
        let detail = format!("after {:.1} s; {times} {what}", lasted.as_secs_f64());
        self.record(kind, None, None, &detail);
    }

    /// Why the workers back off, from the last strained look.
    fn strain_text(&self, crew: &Crew) -> String {
        let Some(strain) = crew.last_strain() else {
            return "the database is under strain".to_owned();
        };
        let mut reasons = Vec::new();
        if strain.lock_waiters > self.max_lock_waiters {
            reasons.push(format!(
                "{} sessions waiting over 0.5 s for a lock (more than {})",
                strain.lock_waiters, self.max_lock_waiters
            ));
        }
        if strain.replication_lag_seconds > self.max_replication_lag.as_secs_f64() {
            reasons.push(format!(
                "a replica {:.1} s behind (more than {} s)",
                strain.replication_lag_seconds,
                self.max_replication_lag.as_secs_f64()
            ));
        }
        if reasons.is_empty() {
            "the database is under strain".to_owned()
        } else {
            format!("the database is under strain: {}", reasons.join(", "))
        }
    }

    /// Sends the event to `tracing` and writes it to the log.
    fn record(&mut self, kind: Kind, worker: Option<&str>, counts: Option<Counts>, detail: &str) {
        self.emit(kind, worker, counts, detail);
        let Some(run) = self.run else {
            return;
        };
        let (migration, task) = (self.migration.clone(), self.task.as_str());
        let written = self.with_conn(|conn| {
            diesel::sql_query(
                "INSERT INTO zmig_run_log (migration, task, run, worker, kind, \"rows\", batches, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind::<Text, _>(&migration)
            .bind::<Text, _>(task)
            .bind::<BigInt, _>(run)
            .bind::<Nullable<Text>, _>(worker)
            .bind::<Text, _>(kind.as_str())
            .bind::<Nullable<BigInt>, _>(counts.map(|c| c.rows))
            .bind::<Nullable<BigInt>, _>(counts.map(|c| c.batches as i64))
            .bind::<Text, _>(detail)
            .execute(conn)?;
            Ok(())
        });
        if let Err(error) = written {
            self.write_failed(&error);
        }
    }

    fn emit(&self, kind: Kind, worker: Option<&str>, counts: Option<Counts>, detail: &str) {
        let migration = self.migration.as_str();
        let task = self.task.as_str();
        let run = self.run;
        let rows = counts.map(|c| c.rows);
        let batches = counts.map(|c| c.batches);
        let kind_name = kind.as_str();
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "zmig",
                    $level,
                    migration,
                    task,
                    run,
                    worker,
                    kind = kind_name,
                    rows,
                    batches,
                    "{detail}"
                )
            };
        }
        match kind {
            Kind::Error => event!(tracing::Level::ERROR),
            Kind::BackoffBegan => event!(tracing::Level::WARN),
            _ => event!(tracing::Level::INFO),
        }
    }

    fn write_failed(&self, error: &crate::Error) {
        tracing::warn!(
            target: "zmig",
            migration = self.migration.as_str(),
            run = self.run,
            "could not write the run log (zmig_run_log): {error}"
        );
    }

    /// Runs `work` on the connection, opening it again (at most once a second) when the server
    /// ended it, and then trying once more.
    fn with_conn<T>(&mut self, mut work: impl FnMut(&mut PgConnection) -> Result<T>) -> Result<T> {
        if let Some(conn) = self.conn.as_mut() {
            match work(conn) {
                Err(error) if error.is_connection_lost() => self.conn = None,
                other => return other,
            }
        }
        let now = Instant::now();
        if let Some(after) = self.reconnect_after.filter(|after| now < *after) {
            return Err(crate::Error::not_ready(
                crate::NotReady::NoConnection,
                format!(
                    "no connection to the database (trying again in {:.1} s)",
                    (after - now).as_secs_f64()
                ),
            ));
        }
        self.reconnect_after = Some(now + RECONNECT_EVERY);
        let conn = self
            .conn
            .insert(workers::connect(&self.url, &self.migration)?);
        let result = work(conn);
        if result.as_ref().is_err_and(crate::Error::is_connection_lost) {
            self.conn = None;
        }
        result
    }
}

impl Drop for RunLog {
    /// A run that ended without its end written (a coordinator's early return): stopped, as far
    /// as the log knows. Not while a panic unwinds, when the database is best left alone.
    fn drop(&mut self) {
        if !self.ended && !std::thread::panicking() {
            self.close(false, "ended early");
        }
    }
}

/// Writes the `started` event of a new run: its id is the run's.
fn begin(conn: &mut PgConnection, migration: &str, task: &str, detail: &str) -> Result<i64> {
    #[derive(QueryableByName)]
    struct Started {
        #[diesel(sql_type = BigInt)]
        run: i64,
    }
    let started: Started = diesel::sql_query(
        "INSERT INTO zmig_run_log (id, run, migration, task, kind, detail)
         SELECT n, n, $1, $2, 'started', $3 FROM nextval(pg_get_serial_sequence('zmig_run_log', 'id')) AS n
         RETURNING run",
    )
    .bind::<Text, _>(migration)
    .bind::<Text, _>(task)
    .bind::<Text, _>(detail)
    .get_result(conn)?;
    Ok(started.run)
}

/// Deletes the events of `migration`'s runs older than the last [`KEEP_RUNS`].
fn prune(conn: &mut PgConnection, migration: &str) -> Result<()> {
    diesel::sql_query(
        "DELETE FROM zmig_run_log WHERE migration = $1 AND run < (
             SELECT min(run) FROM (
                 SELECT DISTINCT run FROM zmig_run_log WHERE migration = $1 ORDER BY run DESC LIMIT $2
             ) AS kept)",
    )
    .bind::<Text, _>(migration)
    .bind::<BigInt, _>(KEEP_RUNS)
    .execute(conn)?;
    Ok(())
}

/// The options of a run, for its `started` event.
fn options_text(options: &BackfillOptions) -> String {
    let ms = |d: Duration| d.as_millis();
    let mut text = format!(
        "{} worker{} on {}, batch size {} (adapting within {}..{} towards {} ms)",
        options.workers.max(1),
        if options.workers > 1 { "s" } else { "" },
        workers::process_name(),
        workers::first_batch_size(options),
        options.min_batch_size,
        options.max_batch_size,
        ms(options.target_batch_time)
    );
    if !options.pause.is_zero() {
        text.push_str(&format!(", pause {} ms", ms(options.pause)));
    }
    if options.yield_to_traffic {
        text.push_str(&format!(
            ", yielding to live traffic ({} ms batches, pause {}× the batch)",
            ms(options
                .busy_target_batch_time
                .min(options.target_batch_time)),
            options.busy_pause_ratio
        ));
    } else {
        text.push_str(", not yielding to live traffic");
    }
    text.push_str(&format!(
        ", backing off above {} lock waiters or {} s of replica lag",
        options.max_lock_waiters,
        options.max_replication_lag.as_secs_f64()
    ));
    if options.again {
        text.push_str(", again");
    }
    if options.follow {
        text.push_str(", following inserts until finalize");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_ends_after_a_quiet_spell_and_counts_what_happened_between_looks() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut episode = Episode::default();
        assert!(episode.look(false, 0, at(0)).is_none());
        // A yield between two looks: the flag is down again, the counter tells.
        assert!(matches!(
            episode.look(false, 1, at(200)),
            Some(Change::Began)
        ));
        assert!(episode.look(true, 3, at(400)).is_none());
        assert!(episode.look(false, 3, at(600)).is_none());
        assert!(episode.look(false, 3, at(5_300)).is_none());
        match episode.look(false, 3, at(5_400)) {
            Some(Change::Ended { lasted, times }) => {
                assert_eq!(lasted, Duration::from_millis(200));
                assert_eq!(times, 3);
            }
            _ => panic!("not ended after 5 s without"),
        }
        assert!(episode.look(false, 3, at(5_600)).is_none());
        assert!(episode.end().is_none());
        assert!(matches!(
            episode.look(true, 3, at(6_000)),
            Some(Change::Began)
        ));
        assert!(matches!(
            episode.end(),
            Some(Change::Ended { times: 0, .. })
        ));
    }

    #[test]
    fn the_options_read_as_the_command_line_sets_them() {
        let text = options_text(&BackfillOptions {
            workers: 2,
            pause: Duration::from_millis(20),
            again: true,
            ..BackfillOptions::default()
        });
        assert!(text.starts_with("2 workers on "), "{text}");
        assert!(
            text.ends_with(
                ", batch size 1000 (adapting within 100..20000 towards 200 ms), pause 20 ms, \
                 yielding to live traffic (50 ms batches, pause 2× the batch), \
                 backing off above 2 lock waiters or 10 s of replica lag, again"
            ),
            "{text}"
        );
    }
}
