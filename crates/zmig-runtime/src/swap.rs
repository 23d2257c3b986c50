//! A swap's `move` (`#[zmig(swap(...))]`, between its prepare and finalize migrations): moves
//! every row of `<table>_old` and `<table>_temp` into `<table>_new` while the view `<table>` keeps
//! serving reads and writes, and fills the widened shadow columns of the tables that reference
//! it. Also the way back, the move back ([`move_rows_back`]: the rows go back to `<table>_old`
//! in the same kind of batches, so that reverting prepare takes only its brief lock), and the
//! swap's `verify` and `status`.
//!
//! - Each batch is one short transaction calling `zmig_<name>_move(n)`, which the prepare
//!   migration created: it takes its rows `FOR UPDATE SKIP LOCKED`, so workers (threads here,
//!   processes elsewhere) never wait for each other or for a writer holding a row, and every row
//!   is in exactly one of the three tables at each commit. There is nothing to checkpoint: the
//!   tables are the state, so a killed move resumes by running again, and a run after the end
//!   moves nothing.
//! - The batch takes rows from the end of the old table's heap, and every twentieth of the way a
//!   mover VACUUMs the old table, so its dead rows do not pile up, its row estimate (which
//!   `zmig_<name>_progress` reports) stays true, and the emptied end of its file goes back to
//!   the operating system as the move goes; every tenth it ANALYZEs the new table, so the
//!   planner sees it grow behind the view. Once the old table is empty, the first mover there
//!   rebuilds its indexes small and then builds the new table's primary key index
//!   (`finish_tables`), and every mover joins the fill of the referencing columns.
//! - An upkeep thread runs `zmig_<name>_sync_refs` to completion (it checkpoints itself in the
//!   database, per slice of each referencing table's pages, so the movers that join it fill other
//!   slices side by side), moves the rows of each referencing table's last pages into the free
//!   space the fill left below and gives the emptied end back (`compact_refs`), then builds
//!   concurrently the indexes of the filled shadow columns (`zmig_<name>_ref_indexes()`) and
//!   rebuilds the referencing tables' other indexes, which the fill bloated
//!   (`zmig_<name>_ref_reindex()`).
//! - Workers, adaptive batch size, pause, back-off under strain, yielding to live traffic and
//!   progress are the backfill's ([`BackfillOptions`], [`crate::backfill::set_paused`]): the
//!   movers and the references' sync run short batches and pause after each while other
//!   sessions of the database work.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use indicatif::{HumanBytes, HumanCount};

use crate::backfill::BackfillOptions;
use crate::disk::{self, DiskCheck, DiskEstimate};
use crate::progress::{self, Progress, ProgressMode};
use crate::run_log::{Counts, RunLog, Task};
use crate::workers::{self, Crew, Pace};
use crate::{check_migration_name, store, verify, Error, Result};

/// A move runs with the backfill's options: workers, batch size and its bounds, target batch
/// time, pause between batches, yielding to live traffic, strain limits, progress and the stop
/// flag. The batch size counts rows moved (and, for the references, rows synced).
pub type MoveOptions = BackfillOptions;

/// Below this many rows, `zmig_<name>_progress` counts a table exactly; above, it reports the
/// planner's estimate (`reltuples`), which only VACUUM and ANALYZE bring up to date.
const EXACT_BELOW: i64 = 10_000;

/// A move ends once the old table is empty and the temp table holds fewer rows than this:
/// writers keep inserting into temp through the view until finalize, which moves what remains
/// under its lock, so waiting for temp to be empty at one instant could last as long as the
/// traffic does.
const LEFT_FOR_FINALIZE: i64 = 1_000;

/// How long a worker waits when `move` found nothing to take while rows remain: they are locked
/// by writers or by another worker's batch, or the remaining count is a stale estimate.
const LOCKED_ROWS_WAIT: Duration = Duration::from_millis(100);

/// With [`BackfillOptions::follow`], how long a mover that caught up waits before it looks at
/// temp again.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Longer than the finalize migration's lock attempts (8 s) and statement timeout (10 s)
/// together take before it gives up.
const FINALIZE_TAKES_AT_MOST: Duration = Duration::from_secs(20);

/// The most rows the finalize migration moves under its lock (it refuses with more left): its
/// own limit, in `zmig_codegen`'s finalize SQL.
pub const FINALIZE_MOVES_AT_MOST: i64 = 10_000;

/// The fewest rows moved between two rounds of ANALYZE and VACUUM, so a small table is not
/// tidied after every batch.
const MIN_TIDY_STEP: i64 = 1_000;

/// How often the upkeep thread, its references synced, looks whether to tidy or to end.
const UPKEEP_LOOKS_EVERY: Duration = Duration::from_millis(20);

/// How many times the upkeep VACUUMs the referencing tables while it fills their shadow columns:
/// the table grows by about one part in this many (see [`vacuum_refs`]).
const REFS_VACUUMS: i64 = 20;

/// The longest [`vacuum_refs`] waits for older transactions before it VACUUMs anyway.
const VACUUM_WAITS_AT_MOST: Duration = Duration::from_millis(500);

/// How many times the movers VACUUM the old table over the move: it holds at most about one
/// part in this many of what was moved that it has not given back.
const OLD_VACUUMS: i64 = 20;

/// How often a mover held back by another's VACUUM of the old table looks whether it is done.
const HOLD_LOOKS_EVERY: Duration = Duration::from_millis(5);

/// The indexes of the emptied old table above this size are rebuilt to give their files back
/// (an empty btree takes a page or two).
const OLD_INDEXES_KEPT: i64 = 64 * 1024;

/// Refreshing stale estimates (a VACUUM) happens at most this often.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveReport {
    /// Rows this call moved into the new table.
    pub moved: i64,
    /// Batches that moved rows.
    pub batches: u64,
    /// Rows of referencing tables whose shadow column this call filled (rows the trigger had
    /// already filled are not counted).
    pub refs_synced: i64,
    /// Times a worker paused because the database was under strain.
    pub backoffs: u64,
    /// Disk used by the old, temp and new tables (with their indexes and TOAST) before and after.
    pub bytes_before: i64,
    pub bytes_after: i64,
    /// Whether the old table is empty, at most a few rows inserted meanwhile wait in temp for
    /// finalize, and every referencing row is synced.
    pub finished: bool,
    /// With [`BackfillOptions::follow`]: the move followed temp until the finalize migration
    /// ran (rather than until it was stopped).
    pub finalized: bool,
    /// Rows left in old and temp when the move ended (0 once finalized).
    pub rows_left: i64,
}

/// Where a swap's rows are, as `zmig_<name>_progress()` reports it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SwapProgress {
    /// Rows in the old table: exact below 10,000, the planner's estimate above.
    #[diesel(sql_type = BigInt)]
    pub old_rows: i64,
    /// Rows inserted since prepare and not moved yet: exact below 10,000, estimated above.
    #[diesel(sql_type = BigInt)]
    pub temp_rows: i64,
    #[diesel(sql_type = BigInt)]
    pub new_rows: i64,
    /// Rows of referencing tables whose shadow column is not synced yet.
    #[diesel(sql_type = BigInt)]
    pub refs_left: i64,
    /// Disk used by the three tables, with their indexes and TOAST.
    #[diesel(sql_type = BigInt)]
    pub total_bytes: i64,
}

impl SwapProgress {
    /// Rows still to move (old + temp).
    pub fn rows_left(&self) -> i64 {
        self.old_rows + self.temp_rows
    }

    /// Whether `rows_left` is a count rather than an estimate.
    pub fn exact(&self) -> bool {
        self.old_rows < EXACT_BELOW && self.temp_rows < EXACT_BELOW
    }

    /// The old table is empty and temp holds no more than finalize moves under its lock.
    fn moved_enough(&self) -> bool {
        self.old_rows == 0 && self.temp_rows < LEFT_FOR_FINALIZE
    }

    /// One line for people: `1,200 rows left (old 1,000, temp 200), 8,800 in new, 1.2 MiB on
    /// disk`, with `about` before an estimate.
    pub fn summary(&self) -> String {
        format!(
            "{} rows left (old {}, temp {}), {} in new, {} on disk",
            approximate(self.rows_left(), self.exact()),
            table_rows(self.old_rows),
            table_rows(self.temp_rows),
            table_rows(self.new_rows),
            HumanBytes(self.total_bytes.max(0) as u64)
        )
    }
}

/// Where a swap stands on this database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapStatus {
    pub progress: SwapProgress,
    /// The tables' sizes, what the move still needs at its peak, and free disk where PostgreSQL
    /// can tell.
    pub disk: DiskEstimate,
    /// Paused with `set_paused` (running movers wait).
    pub paused: bool,
    /// Which way the rows go: back once a move back was started.
    pub direction: MoveDirection,
}

/// One kind of problem `zmig_<name>_check()` looks for, and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SwapProblem {
    /// `key in two tables`, `<table>.<column> without its row in <table>` or `<table>.<column> not
    /// yet copied into <shadow column>`.
    #[diesel(sql_type = Text)]
    pub problem: String,
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// A key that has it.
    #[diesel(sql_type = Nullable<Text>)]
    pub example: Option<String>,
}

/// What `verify` found: every kind of problem, with 0 rows when the swap is clean of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapCheck {
    pub problems: Vec<SwapProblem>,
}

impl SwapCheck {
    /// Rows with a problem, over all kinds.
    pub fn problem_rows(&self) -> i64 {
        self.problems.iter().map(|p| p.rows).sum()
    }

    pub fn ok(&self) -> bool {
        self.problems.iter().all(|p| p.rows == 0)
    }
}

/// The database functions of a swap, named as its prepare migration creates them.
type SwapFunctions = zmig_core::names::SwapNames;

/// The tables a move works on, as SQL (quoted, qualified when not on the search path).
struct SwapTables {
    old: String,
    temp: String,
    new: String,
    /// The referencing tables.
    refs: Vec<String>,
}

/// Whether `name` is a swap whose prepare migration this database has applied (its
/// `zmig_<name>_move` function exists). `false` for a name zmig would never give a migration.
pub fn is_swap(conn: &mut PgConnection, name: &str) -> Result<bool> {
    if check_migration_name(name).is_err() {
        return Ok(false);
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query("SELECT to_regproc($1) IS NOT NULL AS found")
        .bind::<Text, _>(SwapFunctions::of(name).move_rows)
        .get_result(conn)?;
    Ok(found.found)
}

/// The swaps this database has a prepare migration of, by name.
pub fn swaps(conn: &mut PgConnection) -> Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    // `_move` alone could be some other function's suffix; a swap also has its progress.
    let names: Vec<Name> = diesel::sql_query(
        "SELECT DISTINCT substring(m.proname FROM '^zmig_(.+)_move$') AS name
         FROM pg_proc AS m
         WHERE m.proname ~ '^zmig_.+_move$' AND pg_function_is_visible(m.oid)
           AND to_regproc('zmig_' || substring(m.proname FROM '^zmig_(.+)_move$') || '_progress') IS NOT NULL
         ORDER BY 1",
    )
    .load(conn)?;
    Ok(names
        .into_iter()
        .map(|n| n.name)
        .filter(|n| check_migration_name(n).is_ok())
        .collect())
}

/// Runs (or resumes) the move of swap `name` against `database_url`: moves every row into the
/// new table, syncs the referencing columns, and keeps the tables' statistics fresh.
pub fn move_rows(database_url: &str, name: &str, options: &MoveOptions) -> Result<MoveReport> {
    check_migration_name(name)?;
    let functions = SwapFunctions::of(name);
    let mut conn = workers::connect(database_url, name)?;
    require_prepare(
        &mut conn,
        name,
        &[
            &functions.move_rows,
            &functions.sync_refs,
            &functions.progress,
            &functions.tables,
        ],
    )?;
    let tables = load_tables(&mut conn, &functions)?;
    refuse_against(&mut conn, name, MoveDirection::Forward)?;
    if options.disk_check != DiskCheck::Skip {
        disk::estimate(
            &mut conn,
            &functions.tables,
            &functions.progress,
            &functions.disk_needed,
            options.disk_check,
        )?
        .refuse_if_short(name)?;
    }
    store::ensure_tables(&mut conn)?;
    store::open_run(&mut conn, name)?;
    let before = read_progress(&mut conn, &functions)?;
    // From here on the log has the coordinator's connection, and every step that can fail is
    // logged, with the run's end.
    let mut log = RunLog::start(
        conn,
        database_url,
        name,
        Task::Move,
        options,
        &format!(
            "{}; {} referencing rows to sync",
            before.summary(),
            approximate(before.refs_left, true)
        ),
    );

    let crew = Crew::new(options.stop.clone());
    let movers = options.workers.max(1);
    let tally = Tally::new(movers);
    let tidy_step = (before.rows_left() / 10).max(MIN_TIDY_STEP);
    let old_vacuum_step = (before.rows_left() / OLD_VACUUMS).max(MIN_TIDY_STEP);
    tally.old_vacuum_at.store(old_vacuum_step, Ordering::SeqCst);
    let refs_vacuum_step = (before.refs_left / REFS_VACUUMS).max(MIN_TIDY_STEP);
    let progress = Progress::new(
        options.progress,
        name,
        "done",
        before.rows_left() + before.refs_left,
        0,
    );
    // The counts as last read, and the rows moved by then.
    let mut latest = (before.clone(), 0);
    let mut ticks = 0u32;
    let job = MoveJob {
        url: database_url,
        name,
        functions: &functions,
        tables: &tables,
        options,
        crew: &crew,
        tally: &tally,
    };
    let ran = crew.run(
        movers + 1,
        |n| {
            if n == 0 {
                return run_upkeep(&job, tidy_step, refs_vacuum_step);
            }
            let result = run_mover(&job, old_vacuum_step);
            tally.movers_running.fetch_sub(1, Ordering::SeqCst);
            result
        },
        || {
            // The counts cost a query: once a second is plenty for a bar or a log line.
            ticks += 1;
            if options.progress != ProgressMode::Silent && ticks % 5 == 1 {
                let moved = tally.moved.load(Ordering::SeqCst);
                if let Ok(now) = log.step_quietly(|conn| read_progress(conn, &functions)) {
                    latest = (now, moved);
                }
            }
            show_progress(
                &progress,
                &latest.0,
                latest.1,
                &tally,
                &crew,
                options.follow,
            );
            log.observe(&crew, tally.logged());
        },
    );
    if let Err(error) = ran {
        log.end(
            &crew,
            false,
            tally.logged(),
            "stopped by the error above; what was done is kept, run it again to resume",
        );
        return Err(error);
    }

    let finalized = tally.finalized.load(Ordering::SeqCst);
    let finished = finalized
        || (tally.all_moved.load(Ordering::SeqCst) && tally.refs_done.load(Ordering::SeqCst));
    // The planner's statistics for the new table as it is now, stopped or done; when done, a
    // last VACUUM so the old table's dead rows are reusable and its estimate reads empty.
    // After finalize there is nothing left to tidy: the table is the application's own.
    let after = if finalized {
        SwapProgress {
            old_rows: 0,
            temp_rows: 0,
            new_rows: latest.0.new_rows,
            refs_left: 0,
            total_bytes: latest.0.total_bytes,
        }
    } else {
        log.step(|conn| {
            analyze(conn, &tables)?;
            if finished {
                vacuum(conn, &tables)?;
            }
            read_progress(conn, &functions)
        })?
    };
    if finished {
        log.step(|conn| store::finish_run(conn, name))?;
    }
    let report = MoveReport {
        moved: tally.moved.load(Ordering::SeqCst),
        batches: tally.batches.load(Ordering::SeqCst),
        refs_synced: tally.refs_synced.load(Ordering::SeqCst),
        backoffs: crew.backoffs(),
        bytes_before: before.total_bytes,
        bytes_after: after.total_bytes,
        finished,
        finalized,
        rows_left: after.rows_left(),
    };
    progress.finish(&format!(
        "{}: {} rows moved, {} referencing rows synced; {} (was {}){}",
        if finalized {
            "followed until finalize"
        } else if finished {
            "done"
        } else {
            "stopped; run it again to resume"
        },
        HumanCount(report.moved.max(0) as u64),
        HumanCount(report.refs_synced.max(0) as u64),
        after.summary(),
        HumanBytes(report.bytes_before.max(0) as u64),
        progress::yielded(
            crew.yields(),
            tally.batches.load(Ordering::SeqCst) + tally.ref_batches.load(Ordering::SeqCst)
        ),
    ));
    log.end(
        &crew,
        finished,
        tally.logged(),
        &if finalized {
            "followed the inserts until the finalize migration ran".to_owned()
        } else if finished {
            format!("old table empty; {}", after.summary())
        } else {
            format!("{}; run it again to resume", after.summary())
        },
    );
    Ok(report)
}

/// Which way a prepared swap's rows go: towards the new table (the move, then finalize) or back
/// to the old one (the move back, then the prepare migration's revert). Recorded in the swap's
/// state (`zmig_swap_state`, item `direction`) so that a move and a move back, in any process,
/// never run against each other: each would undo the other's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveDirection {
    Forward,
    Back,
}

impl MoveDirection {
    fn as_str(self) -> &'static str {
        match self {
            MoveDirection::Forward => "forward",
            MoveDirection::Back => "back",
        }
    }
}

/// Which way the rows of swap `name` go, as last recorded: forward unless a move back was
/// started (and no `--forward` move since).
pub fn direction(conn: &mut PgConnection, name: &str) -> Result<MoveDirection> {
    #[derive(QueryableByName)]
    struct Back {
        #[diesel(sql_type = Bool)]
        back: bool,
    }
    let back: Back = diesel::sql_query(
        "SELECT EXISTS (SELECT FROM zmig_swap_state WHERE swap = $1 AND item = 'direction' AND detail = 'back') AS back",
    )
    .bind::<Text, _>(name)
    .get_result(conn)?;
    Ok(if back.back {
        MoveDirection::Back
    } else {
        MoveDirection::Forward
    })
}

/// Records that the rows of swap `name` go `way` from now on: a run going the other way stops
/// at its next batch. Going forward again also forgets the move back's hint (the lowest key it
/// moved), which rows moved forward since would make wrong; the move back's batch forgets the
/// move's hint itself.
pub fn set_direction(conn: &mut PgConnection, name: &str, way: MoveDirection) -> Result<()> {
    conn.transaction(|conn| {
        diesel::sql_query(
            "INSERT INTO zmig_swap_state (swap, item, detail) VALUES ($1, 'direction', $2)
             ON CONFLICT (swap, item) DO UPDATE SET detail = excluded.detail",
        )
        .bind::<Text, _>(name)
        .bind::<Text, _>(way.as_str())
        .execute(conn)?;
        if way == MoveDirection::Forward {
            diesel::sql_query(
                "UPDATE zmig_swap_state SET after = NULL WHERE swap = $1 AND item = 'move_back' AND after IS NOT NULL",
            )
            .bind::<Text, _>(name)
            .execute(conn)?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

/// An error unless the rows of swap `name` go `way`: what a run going `way` says when it
/// refuses to start, or stops, because a run the other way was started.
fn refuse_against(conn: &mut PgConnection, name: &str, way: MoveDirection) -> Result<()> {
    if direction(conn, name)? == way {
        return Ok(());
    }
    Err(Error::not_ready(
        crate::NotReady::OtherDirection,
        match way {
            MoveDirection::Forward => format!(
                "the rows of swap `{name}` are going back to its old table: a move back \
             (`backfill {name} --back`) was started, and this move would undo it, so it does not \
             move. To finish going back: `cargo xtask zmig backfill {name} --back`, then \
             `diesel migration revert` of the prepare migration. To go forward after all: \
             `cargo xtask zmig backfill {name} --forward` (a move back still running then stops)"
            ),
            MoveDirection::Back => format!(
            "the rows of swap `{name}` go forward again: `backfill {name} --forward` was started \
             since this move back, which stops rather than undo it. To go back after all, run \
             `cargo xtask zmig backfill {name} --back` again (the forward move then stops)"
        ),
        },
    ))
}

/// A move back ends once the new table is empty and temp holds fewer rows than this: writers
/// keep inserting into temp through the view until the revert, which moves what remains under
/// its lock (at most [`FINALIZE_MOVES_AT_MOST`]).
const LEFT_FOR_REVERT: i64 = LEFT_FOR_FINALIZE;

/// Runs (or resumes) the move back of swap `name` against `database_url`: the way back from any
/// point before finalize, online. Moves every row of the new and temp tables into the old one in
/// the current types (`zmig_<name>_move_back`, batches `FOR UPDATE SKIP LOCKED` like the move's,
/// under live writes through the view), with the move's crew, options, pause, yielding, back-off,
/// progress and run log (task `move_back`). The tables are the state: a stopped or killed move
/// back resumes by running again. It records the direction `back` first, so a move running
/// anywhere stops at its next batch and a new one refuses. Once done, reverting the prepare
/// migration moves only the rows inserted since, under its brief lock. The referencing tables'
/// shadow columns are left to the revert, which drops them.
pub fn move_rows_back(database_url: &str, name: &str, options: &MoveOptions) -> Result<MoveReport> {
    check_migration_name(name)?;
    let functions = SwapFunctions::of(name);
    let mut conn = workers::connect(database_url, name)?;
    require_prepare(
        &mut conn,
        name,
        &[&functions.move_back, &functions.progress, &functions.tables],
    )?;
    let tables = load_tables(&mut conn, &functions)?;
    set_direction(&mut conn, name, MoveDirection::Back)?;
    store::ensure_tables(&mut conn)?;
    store::open_run(&mut conn, name)?;
    let before = read_progress(&mut conn, &functions)?;
    let to_move = before.new_rows + before.temp_rows;
    let mut log = RunLog::start(
        conn,
        database_url,
        name,
        Task::MoveBack,
        options,
        &format!("moving back: {}", before.summary()),
    );

    let crew = Crew::new(options.stop.clone());
    let movers = options.workers.max(1);
    let tally = Tally::new(movers);
    let tidy_step = (to_move / 10).max(MIN_TIDY_STEP);
    let progress = Progress::new(options.progress, name, "moved back", to_move, 0);
    let ran = crew.run(
        movers + 1,
        |n| {
            if n == 0 {
                return run_back_upkeep(database_url, name, &tables, &crew, &tally, tidy_step);
            }
            let result = run_back_mover(database_url, name, &functions, options, &crew, &tally);
            tally.movers_running.fetch_sub(1, Ordering::SeqCst);
            result
        },
        || {
            let moved = tally.moved.load(Ordering::SeqCst);
            let rate = moved as f64 / progress.elapsed_secs();
            let state = progress::activity(crew.paused(), crew.backing_off(), crew.yielding());
            let left = (to_move - moved).max(0);
            progress.show(
                moved,
                moved + left,
                &format!("about {} rows left, {rate:.0}/s{state}", HumanCount(left as u64)),
                || {
                    format!(
                        "moving back: {} rows moved back, about {} left in new and temp, {rate:.0} rows/s, eta {}{state}",
                        HumanCount(moved.max(0) as u64),
                        HumanCount(left as u64),
                        progress::eta(left, rate)
                    )
                },
            );
            log.observe(&crew, tally.logged());
        },
    );
    if let Err(error) = ran {
        log.end(
            &crew,
            false,
            tally.logged(),
            "stopped by the error above; what was moved back stays in the old table, run it again to resume",
        );
        return Err(error);
    }
    let reverted = tally.finalized.load(Ordering::SeqCst);
    let finished = reverted || tally.all_moved.load(Ordering::SeqCst);
    let after = if reverted {
        SwapProgress {
            old_rows: before.old_rows + tally.moved.load(Ordering::SeqCst),
            temp_rows: 0,
            new_rows: 0,
            refs_left: 0,
            total_bytes: before.total_bytes,
        }
    } else {
        log.step(|conn| {
            tidy_back(conn, &tables)?;
            read_progress(conn, &functions)
        })?
    };
    if finished {
        log.step(|conn| store::finish_run(conn, name))?;
    }
    let report = MoveReport {
        moved: tally.moved.load(Ordering::SeqCst),
        batches: tally.batches.load(Ordering::SeqCst),
        refs_synced: 0,
        backoffs: crew.backoffs(),
        bytes_before: before.total_bytes,
        bytes_after: after.total_bytes,
        finished,
        finalized: reverted,
        rows_left: if reverted {
            0
        } else {
            after.new_rows + after.temp_rows
        },
    };
    let end = if reverted {
        "followed the inserts until the prepare migration was reverted".to_owned()
    } else if finished {
        format!(
            "new table empty, ready for the revert of the prepare migration; {}",
            after.summary()
        )
    } else {
        format!("{}; run it again to resume", after.summary())
    };
    progress.finish(&format!(
        "{}: {} rows moved back; {}{}",
        if finished { "done" } else { "stopped" },
        HumanCount(report.moved.max(0) as u64),
        end,
        progress::yielded(crew.yields(), tally.batches.load(Ordering::SeqCst)),
    ));
    log.end(&crew, finished, tally.logged(), &end);
    Ok(report)
}

/// Whether a move back has gone far enough for the revert: the new table is empty and temp
/// holds fewer than [`LEFT_FOR_REVERT`] rows, both counted exactly (cheap at that size).
fn moved_back_enough(conn: &mut PgConnection, tables: &SwapTables) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Enough {
        #[diesel(sql_type = Bool)]
        enough: bool,
    }
    let enough: Enough = diesel::sql_query(format!(
        "SELECT NOT EXISTS (SELECT FROM {new}) AND (SELECT count(*) FROM (SELECT FROM {temp} LIMIT {LEFT_FOR_REVERT}) t) < {LEFT_FOR_REVERT} AS enough",
        new = tables.new,
        temp = tables.temp,
    ))
    .get_result(conn)?;
    Ok(enough.enough)
}

/// One mover of a move back: batches of `zmig_<name>_move_back` until the new table is empty
/// (with `follow`, until the prepare migration is reverted), stopping if a forward move is
/// started meanwhile.
fn run_back_mover(
    url: &str,
    name: &str,
    functions: &SwapFunctions,
    options: &MoveOptions,
    crew: &Crew,
    tally: &Tally,
) -> Result<()> {
    let mut conn = workers::connect(url, name)?;
    let tables = load_tables(&mut conn, functions)?;
    let mut pace = Pace::new(options);
    let query = format!(
        "SELECT coalesce(\"{}\"($1), 0)::bigint AS n",
        functions.move_back
    );
    // Following temp, the revert may take the tables and functions away at any moment.
    let gone = |conn: &mut PgConnection| -> Result<bool> {
        Ok(options.follow && finalized(conn, name, tally)?)
    };
    while !tally.finalized.load(Ordering::SeqCst)
        && crew.ready_for_batch(&mut conn, name, options)?
    {
        while tally.hold_movers.load(Ordering::SeqCst) && !crew.should_end() {
            std::thread::sleep(HOLD_LOOKS_EVERY);
        }
        let started = Instant::now();
        let batch_size = pace.batch_size();
        let moved = match refuse_against(&mut conn, name, MoveDirection::Back)
            .and_then(|()| Ok(conn.transaction(|conn| call_batch(conn, &query, batch_size))?))
        {
            Ok(moved) => moved,
            Err(_) if gone(&mut conn)? => return Ok(()),
            Err(e) => return Err(e),
        };
        if moved > 0 {
            tally.moved.fetch_add(moved, Ordering::SeqCst);
            tally.batches.fetch_add(1, Ordering::SeqCst);
        }
        if moved < i64::from(batch_size) {
            let enough = match moved_back_enough(&mut conn, &tables) {
                Ok(enough) => enough,
                Err(_) if gone(&mut conn)? => return Ok(()),
                Err(e) => return Err(e),
            };
            if enough {
                tally.all_moved.store(true, Ordering::SeqCst);
                if !options.follow {
                    return Ok(());
                }
            }
            if moved == 0 {
                // The rest is locked by writers or another worker's batch, or (following)
                // nothing was inserted since.
                std::thread::sleep(if enough {
                    FOLLOW_EVERY
                } else {
                    LOCKED_ROWS_WAIT
                });
                continue;
            }
        }
        pace.after_batch(&mut conn, crew, started.elapsed())?;
    }
    Ok(())
}

/// The move back's upkeep: every `tidy_step` rows moved back, ANALYZE the old table (growing
/// again behind the view) and VACUUM the new one and temp (emptying), until the movers are done.
fn run_back_upkeep(
    url: &str,
    name: &str,
    tables: &SwapTables,
    crew: &Crew,
    tally: &Tally,
    tidy_step: i64,
) -> Result<()> {
    let mut conn = workers::connect(url, name)?;
    let mut tidy_at = tidy_step;
    loop {
        if crew.should_end()
            || tally.finalized.load(Ordering::SeqCst)
            || tally.movers_running.load(Ordering::SeqCst) == 0
        {
            return Ok(());
        }
        let moved = tally.moved.load(Ordering::SeqCst);
        if moved >= tidy_at {
            match tidy_back(&mut conn, tables) {
                // The revert took the tables away while the movers followed temp.
                Err(_) if !is_swap(&mut conn, name)? => return Ok(()),
                other => other?,
            }
            tidy_at = moved + tidy_step;
        }
        std::thread::sleep(UPKEEP_LOOKS_EVERY);
    }
}

/// ANALYZE of the old table, VACUUM of the new one and temp, for the move back: as
/// [`analyze`] and [`vacuum`] for the move, the other way round.
fn tidy_back(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    conn.batch_execute(&format!("ANALYZE {}", tables.old))?;
    // Its own statement: VACUUM runs in no transaction, not even a multi-statement string's.
    conn.batch_execute(&format!(
        "VACUUM (TRUNCATE false) {}, {}",
        tables.new, tables.temp
    ))?;
    Ok(())
}

/// Checks the rows of swap `name` (`zmig_<name>_check()`): no key in two of its tables, no
/// reference without its row, every shadow column equal to its column. Records the result for
/// `status`.
pub fn verify(conn: &mut PgConnection, name: &str) -> Result<SwapCheck> {
    check_migration_name(name)?;
    let functions = SwapFunctions::of(name);
    require_prepare(conn, name, &[&functions.check])?;
    let problems: Vec<SwapProblem> = diesel::sql_query(format!(
        "SELECT problem, coalesce(\"rows\", 0)::bigint AS \"rows\", example FROM \"{}\"()",
        functions.check
    ))
    .load(conn)?;
    let check = SwapCheck { problems };
    let examples = check
        .problems
        .iter()
        .filter(|p| p.rows > 0)
        .map(|p| format!("{} {}", p.problem, p.example.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ");
    store::ensure_tables(conn)?;
    verify::record(conn, name, check.problem_rows(), &examples)?;
    Ok(check)
}

/// Where swap `name` stands on this database; `None` when its prepare migration is not applied
/// (or finalize has run).
pub fn status(conn: &mut PgConnection, name: &str) -> Result<Option<SwapStatus>> {
    if !is_swap(conn, name)? {
        return Ok(None);
    }
    let functions = SwapFunctions::of(name);
    let progress = read_progress(conn, &functions)?;
    let disk = disk::estimate(
        conn,
        &functions.tables,
        &functions.progress,
        &functions.disk_needed,
        DiskCheck::Measure,
    )?;
    let paused =
        store::tables_exist(conn)? && store::load_run(conn, name)?.is_some_and(|run| run.paused);
    let direction = direction(conn, name)?;
    Ok(Some(SwapStatus {
        progress,
        disk,
        paused,
        direction,
    }))
}

/// `n` rows for messages: an estimate says so.
fn approximate(n: i64, exact: bool) -> String {
    let count = HumanCount(n.max(0) as u64);
    if exact {
        count.to_string()
    } else {
        format!("about {count}")
    }
}

/// The rows of one table as `zmig_<name>_progress` counts them: exact below 10,000.
fn table_rows(n: i64) -> String {
    approximate(n, n < EXACT_BELOW)
}

/// The move needs the functions the prepare migration creates: without them there is no view
/// routing writes, and nothing to move.
fn require_prepare(conn: &mut PgConnection, name: &str, functions: &[&String]) -> Result<()> {
    #[derive(QueryableByName)]
    struct Missing {
        #[diesel(sql_type = Array<Text>)]
        missing: Vec<String>,
    }
    let missing: Missing = diesel::sql_query(
        "SELECT array(SELECT f FROM unnest($1::text[]) WITH ORDINALITY AS u(f, n)
                      WHERE to_regproc(f) IS NULL ORDER BY n) AS missing",
    )
    .bind::<Array<Text>, _>(functions)
    .get_result(conn)?;
    if missing.missing.is_empty() {
        return Ok(());
    }
    Err(Error::not_ready(
        crate::NotReady::PhaseNotApplied,
        format!(
        "the prepare migration of swap `{name}` is not applied on this database (no {} function); \
         apply the prepare migration first: diesel migration run (or your service's embedded \
         migrations), after zmig's `generate` with stage = \"prepare\"",
        missing.missing.join(", no ")
    ),
    ))
}

fn load_tables(conn: &mut PgConnection, functions: &SwapFunctions) -> Result<SwapTables> {
    #[derive(QueryableByName)]
    struct Role {
        #[diesel(sql_type = Text)]
        role: String,
        #[diesel(sql_type = Text)]
        rel: String,
    }
    let roles: Vec<Role> = diesel::sql_query(format!(
        "SELECT role, rel::text AS rel FROM \"{}\"()",
        functions.tables
    ))
    .load(conn)?;
    let find = |wanted: &str| {
        roles
            .iter()
            .find(|r| r.role == wanted)
            .map(|r| r.rel.clone())
            .ok_or_else(|| {
                Error::not_ready(
                    crate::NotReady::PrepareDamaged,
                    format!(
                        "{}() names no `{wanted}` table; the prepare migration is damaged",
                        functions.tables
                    ),
                )
            })
    };
    Ok(SwapTables {
        old: find("old")?,
        temp: find("temp")?,
        new: find("new")?,
        refs: roles
            .iter()
            .filter(|r| r.role == "ref")
            .map(|r| r.rel.clone())
            .collect(),
    })
}

fn read_progress(conn: &mut PgConnection, functions: &SwapFunctions) -> Result<SwapProgress> {
    Ok(diesel::sql_query(format!(
        "SELECT coalesce(old_rows, 0)::bigint AS old_rows, coalesce(temp_rows, 0)::bigint AS temp_rows,
                coalesce(new_rows, 0)::bigint AS new_rows, coalesce(refs_left, 0)::bigint AS refs_left,
                coalesce(total_bytes, 0)::bigint AS total_bytes
         FROM \"{}\"()",
        functions.progress
    ))
    .get_result(conn)?)
}

/// What the workers of one move have done, for each other, the reporter and the report.
struct Tally {
    moved: AtomicI64,
    batches: AtomicU64,
    /// Batches of the references' sync.
    ref_batches: AtomicU64,
    refs_synced: AtomicI64,
    /// `sync_refs` returned 0: every referencing row is synced.
    refs_done: AtomicBool,
    /// A mover saw the old table empty (and temp all but empty) after a batch that found less
    /// than it asked for.
    all_moved: AtomicBool,
    movers_running: AtomicUsize,
    /// The rows moved at which a mover next VACUUMs the old table (see [`vacuum_old_between`]).
    old_vacuum_at: AtomicI64,
    /// Set while a mover VACUUMs the old table: the others wait between batches, so that the
    /// VACUUM finds the table free of their locks for the moment it gives pages back.
    hold_movers: AtomicBool,
    /// A mover found nothing to move while the counts, estimates, said otherwise.
    refresh_estimates: AtomicBool,
    /// Following temp, a worker found the swap's functions gone: finalize has run.
    finalized: AtomicBool,
    /// A mover took on [`finish_tables`] (once the old table was empty).
    tables_finishing: AtomicBool,
    /// Held while a worker VACUUMs or ANALYZEs the swap's tables or rebuilds their indexes: side
    /// by side, a VACUUM or ANALYZE waits for the concurrent build's lock while the build waits
    /// for ANALYZE's transaction (or, following temp, finalize's, queued behind the VACUUM), a
    /// deadlock PostgreSQL breaks by failing one of them.
    tables_upkeep: Mutex<()>,
}

impl Tally {
    /// What the run's log counts: rows moved, in the movers' batches, and referencing rows
    /// synced.
    fn logged(&self) -> Counts {
        Counts {
            rows: self.moved.load(Ordering::SeqCst),
            extra: self.refs_synced.load(Ordering::SeqCst),
            batches: self.batches.load(Ordering::SeqCst),
        }
    }

    /// The swap's tables to this worker alone for VACUUM, ANALYZE or an index build (see
    /// [`Tally::tables_upkeep`]).
    fn upkeep_of_tables(&self) -> MutexGuard<'_, ()> {
        // A worker that panicked holding it left nothing half-done in the database.
        self.tables_upkeep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new(movers: usize) -> Tally {
        Tally {
            moved: AtomicI64::new(0),
            batches: AtomicU64::new(0),
            ref_batches: AtomicU64::new(0),
            refs_synced: AtomicI64::new(0),
            refs_done: AtomicBool::new(false),
            all_moved: AtomicBool::new(false),
            movers_running: AtomicUsize::new(movers),
            old_vacuum_at: AtomicI64::new(i64::MAX),
            hold_movers: AtomicBool::new(false),
            refresh_estimates: AtomicBool::new(false),
            finalized: AtomicBool::new(false),
            tables_finishing: AtomicBool::new(false),
            tables_upkeep: Mutex::new(()),
        }
    }
}

/// What every thread of a move shares.
#[derive(Clone, Copy)]
struct MoveJob<'a> {
    url: &'a str,
    name: &'a str,
    functions: &'a SwapFunctions,
    tables: &'a SwapTables,
    options: &'a MoveOptions,
    crew: &'a Crew,
    tally: &'a Tally,
}

/// One mover: batches of `zmig_<name>_move` until the old table is empty, VACUUMing the old
/// table every `old_vacuum_step` rows moved (whichever mover gets there first).
fn run_mover(job: &MoveJob, old_vacuum_step: i64) -> Result<()> {
    let MoveJob {
        url,
        name,
        functions,
        tables,
        options,
        crew,
        tally,
    } = *job;
    let mut conn = workers::connect(url, name)?;
    let mut pace = Pace::new(options);
    let query = format!(
        "SELECT coalesce(\"{}\"($1), 0)::bigint AS n",
        functions.move_rows
    );
    while !tally.finalized.load(Ordering::SeqCst)
        && crew.ready_for_batch(&mut conn, name, options)?
    {
        while tally.hold_movers.load(Ordering::SeqCst) && !crew.should_end() {
            std::thread::sleep(HOLD_LOOKS_EVERY);
        }
        let started = Instant::now();
        let batch_size = pace.batch_size();
        // A move back started meanwhile: stop rather than undo it.
        match refuse_against(&mut conn, name, MoveDirection::Forward) {
            Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                return Ok(())
            }
            other => other?,
        }
        let moved = match conn.transaction(|conn| call_batch(conn, &query, batch_size)) {
            Ok(moved) => moved,
            Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        if moved > 0 {
            let total = tally.moved.fetch_add(moved, Ordering::SeqCst) + moved;
            tally.batches.fetch_add(1, Ordering::SeqCst);
            match vacuum_old_between(&mut conn, tables, tally, total, old_vacuum_step) {
                Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                    return Ok(())
                }
                other => other?,
            }
        }
        if moved < i64::from(batch_size) {
            // The batch took every row it could: done, or the rest is locked (by writers or
            // another worker's batch), or the count left is a stale estimate.
            let left = match read_progress(&mut conn, functions) {
                Ok(left) => left,
                Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            };
            if left.moved_enough() {
                tally.all_moved.store(true, Ordering::SeqCst);
                match after_move(&mut conn, job) {
                    Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                        return Ok(())
                    }
                    other => other?,
                }
                if !options.follow {
                    return Ok(());
                }
                // Caught up: look again in a moment, for what writers inserted meanwhile,
                // until stopped or until finalize has taken the tables away.
                if moved == 0 {
                    if finalized(&mut conn, name, tally)? {
                        return Ok(());
                    }
                    std::thread::sleep(FOLLOW_EVERY);
                    continue;
                }
            }
            if moved == 0 {
                if !left.exact() {
                    tally.refresh_estimates.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(LOCKED_ROWS_WAIT);
                continue;
            }
        }
        pace.after_batch(&mut conn, crew, started.elapsed())?;
    }
    Ok(())
}

/// What a mover does once the old table is empty: the first to get there gives the old table's
/// files back and builds the new table's primary key index ([`finish_tables`]); then each helps
/// the upkeep thread fill the referencing columns, which take slices of their pages side by side
/// ([`help_fill`]).
fn after_move(conn: &mut PgConnection, job: &MoveJob) -> Result<()> {
    let tally = job.tally;
    if !tally.tables_finishing.swap(true, Ordering::SeqCst) {
        let _alone = tally.upkeep_of_tables();
        finish_tables(conn, job.functions, job.tables)?;
    }
    help_fill(conn, job)
}

/// Batches of `zmig_<name>_sync_refs` beside the upkeep thread's, until the fill is done or every
/// slice left is another worker's (the function returns 0 or -1): the upkeep thread ends the fill
/// (its last call validates, then it builds the indexes), and VACUUMs as the count grows.
fn help_fill(conn: &mut PgConnection, job: &MoveJob) -> Result<()> {
    let MoveJob {
        name,
        functions,
        options,
        crew,
        tally,
        ..
    } = *job;
    let query = fill_query(functions);
    let mut pace = Pace::new(options);
    while !tally.refs_done.load(Ordering::SeqCst) && crew.ready_for_batch(conn, name, options)? {
        let started = Instant::now();
        let batch_size = pace.batch_size();
        let synced = conn.transaction(|conn| call_batch(conn, &query, batch_size))?;
        if synced <= 0 {
            return Ok(());
        }
        tally.refs_synced.fetch_add(synced, Ordering::SeqCst);
        tally.ref_batches.fetch_add(1, Ordering::SeqCst);
        pace.after_batch(conn, crew, started.elapsed())?;
    }
    Ok(())
}

/// One batch of the references' fill: rows filled, 0 once all are, -1 while the slices left are
/// other workers'.
fn fill_query(functions: &SwapFunctions) -> String {
    format!(
        "SELECT coalesce(\"{}\"($1), 0)::bigint AS n",
        functions.sync_refs
    )
}

/// Following temp, whether the finalize migration is what made a step fail: a concurrent index
/// build on the old or new table waits for finalize's transaction while finalize waits for the
/// build's lock, and PostgreSQL breaks that by failing the build before finalize commits. So it
/// waits, at most [`FINALIZE_TAKES_AT_MOST`], for finalize to have run.
fn finalize_took_over(conn: &mut PgConnection, name: &str, tally: &Tally) -> Result<bool> {
    let started = Instant::now();
    loop {
        if finalized(conn, name, tally)? {
            return Ok(true);
        }
        if started.elapsed() >= FINALIZE_TAKES_AT_MOST {
            return Ok(false);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Whether the finalize migration has run while this move followed temp: the swap's functions
/// are gone. Recorded in `tally` for every worker.
fn finalized(conn: &mut PgConnection, name: &str, tally: &Tally) -> Result<bool> {
    if tally.finalized.load(Ordering::SeqCst) || !is_swap(conn, name)? {
        tally.finalized.store(true, Ordering::SeqCst);
        return Ok(true);
    }
    Ok(false)
}

/// The upkeep thread: syncs the referencing columns to the end, VACUUMing the referencing tables
/// every `refs_vacuum_step` rows filled, and tidies the tables every `tidy_step` rows moved (or
/// when a mover needs fresh estimates) until the movers are done.
fn run_upkeep(job: &MoveJob, tidy_step: i64, refs_vacuum_step: i64) -> Result<()> {
    let MoveJob {
        url,
        name,
        functions,
        tables,
        options,
        crew,
        tally,
    } = *job;
    let mut conn = workers::connect(url, name)?;
    let mut pace = Pace::new(options);
    let query = fill_query(functions);
    let mut tidy_at = tidy_step;
    let mut refs_vacuum_at = refs_vacuum_step;
    let mut refreshed: Option<Instant> = None;
    loop {
        if crew.should_end() || tally.finalized.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !tally.refs_done.load(Ordering::SeqCst) {
            if !crew.ready_for_batch(&mut conn, name, options)? {
                return Ok(());
            }
            let started = Instant::now();
            // Done, it also validates the NOT NULL check of the shadow columns: that call can
            // take a while on a big table, and only reads.
            let batch_size = pace.batch_size();
            let synced = conn.transaction(|conn| call_batch(conn, &query, batch_size))?;
            if synced < 0 {
                // The slices left are the movers' (they help once the old table is empty).
                std::thread::sleep(UPKEEP_LOOKS_EVERY);
            } else if synced == 0 {
                if !compact_refs(&mut conn, job)? {
                    return Ok(());
                }
                build_reference_indexes(&mut conn, functions)?;
                build_indexes(&mut conn, &functions.ref_reindex)?;
                tally.refs_done.store(true, Ordering::SeqCst);
            } else {
                let filled = tally.refs_synced.fetch_add(synced, Ordering::SeqCst) + synced;
                tally.ref_batches.fetch_add(1, Ordering::SeqCst);
                if filled >= refs_vacuum_at {
                    vacuum_refs(&mut conn, tables)?;
                    refs_vacuum_at = filled + refs_vacuum_step;
                }
                pace.after_batch(&mut conn, crew, started.elapsed())?;
            }
        }
        let moved = tally.moved.load(Ordering::SeqCst);
        let refresh = tally.refresh_estimates.swap(false, Ordering::SeqCst)
            && refreshed.is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        // While the fill runs the movers ANALYZE as they go (see `vacuum_old_between`): the
        // fill is the longer job, and this thread's time is its.
        let filling = !tally.refs_done.load(Ordering::SeqCst);
        if (moved >= tidy_at && !filling) || refresh {
            // Following temp, finalize may take the tables away at any moment. The movers
            // VACUUM old as they go; a refresh of stale estimates needs it too.
            let alone = tally.upkeep_of_tables();
            let tidied = analyze(&mut conn, tables).and_then(|()| {
                if refresh {
                    vacuum(&mut conn, tables)
                } else {
                    vacuum_temp(&mut conn, tables)
                }
            });
            drop(alone);
            match tidied {
                Err(_) if options.follow && finalize_took_over(&mut conn, name, tally)? => {
                    return Ok(())
                }
                other => other?,
            }
            tidy_at = moved + tidy_step;
            if refresh {
                refreshed = Some(Instant::now());
            }
        }
        if tally.refs_done.load(Ordering::SeqCst) {
            if tally.movers_running.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            std::thread::sleep(UPKEEP_LOOKS_EVERY);
        }
    }
}

/// Once the old table is empty: its files go back to the operating system, then the new table's
/// primary key index is built. In that order, so the disk holds one copy of the table and its
/// indexes at a time (prepare left the new table only `zmig_key` for the move). VACUUM gives back
/// the heap (see [`vacuum`]); `REINDEX TABLE CONCURRENTLY` rebuilds the old table's indexes,
/// empty now, and drops their full-size files; it blocks no reader or writer, and waits for every
/// transaction that could still see the moved rows there (VACUUM too removes only what no
/// snapshot sees). The primary key index comes from `zmig_<name>_key_index()`: `CREATE UNIQUE
/// INDEX CONCURRENTLY`, after dropping an invalid one a killed build left; nothing once built.
fn finish_tables(
    conn: &mut PgConnection,
    functions: &SwapFunctions,
    tables: &SwapTables,
) -> Result<()> {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = BigInt)]
        indexes: i64,
    }
    vacuum(conn, tables)?;
    let old: Size = diesel::sql_query("SELECT pg_indexes_size($1::regclass)::bigint AS indexes")
        .bind::<Text, _>(&tables.old)
        .get_result(conn)?;
    // An empty btree is a page or two; more is what the moved rows left.
    if old.indexes > OLD_INDEXES_KEPT {
        conn.batch_execute(&format!("REINDEX TABLE CONCURRENTLY {}", tables.old))?;
    }
    build_indexes(conn, &functions.key_index)
}

/// Pages at the end of a referencing table whose rows one transaction of [`compact_refs`] moves.
const COMPACT_PAGES: i64 = 8;

/// How many times one transaction of [`compact_refs`] updates the rows left in its chunk.
const COMPACT_TRIES: usize = 64;

/// How many times [`compact_refs`] VACUUMs a table to give its emptied end back.
const COMPACT_VACUUMS: usize = 10;

/// At most this share of a referencing table's pages [`compact_refs`] empties.
const COMPACT_SHARE: f64 = 0.25;

/// Once the fill is done, each referencing table is made as compact as an `ALTER` would leave
/// it. The fill wrote a new version of every row and VACUUM made the old versions' space
/// reusable as it went, but the last pages' new versions found none left and went to the end:
/// the table ends a few parts in a hundred longer than its rows need, with that much free space
/// spread below. So the rows of the last pages are updated to themselves, [`COMPACT_PAGES`] at
/// a time, each chunk in its own transaction: their pages are full, so each new version goes
/// where the free space map finds room, below (a row whose version still fits its page is
/// updated again, up to [`COMPACT_TRIES`] times, until the page is full and it leaves); VACUUM
/// then gives the emptied end back. It stops at the first chunk whose rows would go past the end
/// (no room left below: that transaction is rolled back, so the end stays empty), at a chunk
/// whose rows would not leave, and after [`COMPACT_SHARE`] of the table. Done once per table
/// (`compacted:<table>` in the swap's state), before the indexes are rebuilt, which the moved
/// versions' new entries bloated.
///
/// Such an update changes no value; the swap's triggers skip it, the application's own update
/// triggers on the table run as they did for the fill. VACUUM gives pages back only when it can
/// lock the table at once, as for the old table.
///
/// Each chunk waits, as a batch does, while the move is paused; `false` when the run is to end
/// (stopped), the table not marked done, so that the next run compacts it.
fn compact_refs(conn: &mut PgConnection, job: &MoveJob) -> Result<bool> {
    let MoveJob {
        name,
        tables,
        options,
        crew,
        ..
    } = *job;
    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Bool)]
        done: bool,
        #[diesel(sql_type = Nullable<Text>)]
        column: Option<String>,
    }
    #[derive(QueryableByName)]
    struct Landed {
        #[diesel(sql_type = BigInt)]
        page: i64,
    }
    for rel in &tables.refs {
        let item = format!("compacted:{rel}");
        // A column an UPDATE may set to itself: not generated, not an identity.
        let plan: Plan = diesel::sql_query(
            "SELECT EXISTS (SELECT FROM zmig_swap_state WHERE swap = $1 AND item = $2) AS done,
                    (SELECT quote_ident(attname) FROM pg_attribute
                     WHERE attrelid = $3::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' AND attidentity = ''
                     ORDER BY attnum LIMIT 1) AS column",
        )
        .bind::<Text, _>(name)
        .bind::<Text, _>(&item)
        .bind::<Text, _>(rel)
        .get_result(conn)?;
        let Some(column) = plan.column.filter(|_| !plan.done) else {
            continue;
        };
        // The free space map up to date with every version the fill left behind.
        conn.batch_execute(&format!("VACUUM (TRUNCATE false) {rel}"))?;
        let pages = relation_pages(conn, rel)?;
        let floor = pages - (pages as f64 * COMPACT_SHARE) as i64;
        let mut end = pages;
        while end > floor {
            if !crew.ready_for_batch(conn, name, options)? {
                return Ok(false);
            }
            let start = (end - COMPACT_PAGES).max(floor);
            let moved = conn.transaction(|conn| {
                // A version that still fits its page stays there: updated again, the rows left
                // fill their pages with versions this transaction holds, until they leave too.
                for _ in 0..COMPACT_TRIES {
                    let landed: Vec<Landed> = diesel::sql_query(format!(
                        "UPDATE {rel} SET {column} = {column} \
                         WHERE ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid \
                         RETURNING (ctid::text::point)[0]::bigint AS page"
                    ))
                    .load(conn)?;
                    if landed.iter().any(|l| l.page >= pages) {
                        // No room left below: they went past the end. Undone, so that the end
                        // stays empty for VACUUM to give back.
                        return Err(diesel::result::Error::RollbackTransaction);
                    }
                    if landed.iter().all(|l| l.page < start) {
                        return Ok(true);
                    }
                }
                Ok(false)
            });
            match moved {
                Ok(true) => {}
                Ok(false) | Err(diesel::result::Error::RollbackTransaction) => break,
                Err(error) => return Err(error.into()),
            }
            end = start;
        }
        // Every version the updates left dead removable, then the emptied end given back. A
        // transaction older than the last chunk (a worker's index build, say) keeps those
        // versions, and VACUUM gives back only pages it can empty and lock at once: it tries
        // again a few times. What is left, a later (auto)VACUUM gives back.
        for _ in 0..COMPACT_VACUUMS {
            wait_for_older_snapshots(conn)?;
            conn.batch_execute(&format!("VACUUM {rel}"))?;
            if relation_pages(conn, rel)? <= end + COMPACT_PAGES {
                break;
            }
        }
        // Unless finalize ran meanwhile and cleared the swap's state.
        diesel::sql_query(
            "INSERT INTO zmig_swap_state (swap, item)
             SELECT $1, $2 WHERE EXISTS (SELECT FROM zmig_swap_state WHERE swap = $1 AND item = 'move')
             ON CONFLICT DO NOTHING",
        )
        .bind::<Text, _>(name)
        .bind::<Text, _>(&item)
        .execute(conn)?;
    }
    Ok(true)
}

/// The pages of the relation `rel` now.
fn relation_pages(conn: &mut PgConnection, rel: &str) -> Result<i64> {
    #[derive(QueryableByName)]
    struct Pages {
        #[diesel(sql_type = BigInt)]
        pages: i64,
    }
    let found: Pages = diesel::sql_query(
        "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::bigint)::bigint AS pages",
    )
    .bind::<Text, _>(rel)
    .get_result(conn)?;
    Ok(found.pages)
}

/// Rebuilds, on the filled shadow columns, every index that reads a referencing column, as
/// `zmig_<name>_ref_indexes()` lists them: `CREATE INDEX CONCURRENTLY`, so writes to the
/// referencing tables go on. Each statement runs on its own, outside any transaction, as
/// concurrent builds must; a build a kill interrupted is dropped and started again.
fn build_reference_indexes(conn: &mut PgConnection, functions: &SwapFunctions) -> Result<()> {
    build_indexes(conn, &functions.ref_indexes)
}

/// Runs, each on its own outside any transaction, the statements the function `lister` returns
/// (`zmig_<name>_ref_indexes` or `zmig_<name>_key_index`).
fn build_indexes(conn: &mut PgConnection, lister: &str) -> Result<()> {
    #[derive(QueryableByName)]
    struct Statement {
        #[diesel(sql_type = Text)]
        statement: String,
    }
    let statements = diesel::sql_query(format!("SELECT s AS statement FROM \"{lister}\"() s"))
        .load::<Statement>(conn)?;
    for Statement { statement } in statements {
        conn.batch_execute(&statement)?;
    }
    Ok(())
}

/// `SELECT f($1)` of a batch function that returns how many rows it did.
fn call_batch(conn: &mut PgConnection, query: &str, batch_size: i32) -> diesel::QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Done {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(query)
        .bind::<Integer, _>(batch_size)
        .get_result::<Done>(conn)
        .map(|d| d.n)
}

/// Statistics for the new table, which grows behind the view without autovacuum's ANALYZE
/// keeping pace with a bulk move.
fn analyze(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    conn.batch_execute(&format!("ANALYZE {}", tables.new))?;
    Ok(())
}

/// VACUUM of old and temp, which the move empties: their dead rows become reusable and their
/// `reltuples` estimates true. VACUUM cannot run in a transaction: this is one autocommit
/// statement each. For old, see [`vacuum_old`]; temp keeps its pages (`TRUNCATE false`): the
/// view's inserts go there throughout, and finalize drops it.
fn vacuum(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    vacuum_old(conn, tables)?;
    vacuum_temp(conn, tables)
}

fn vacuum_temp(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    conn.batch_execute(&format!("VACUUM (TRUNCATE false) {}", tables.temp))?;
    Ok(())
}

/// VACUUM of the old table, giving its emptied pages at the end of its file back to the
/// operating system (the move takes the highest keys first, which in most tables sit there).
/// For that VACUUM takes an ACCESS EXCLUSIVE lock on it, only when it can have it at once
/// (trying for up to five seconds), and lets go as soon as a query waits for it, so a read
/// through the view waits a few milliseconds at most; on a table whose traffic never leaves it
/// unlocked for a moment the pages stay until finalize. A hot standby replays that lock: a
/// query of its own reading the view waits for the replay, or is cancelled after
/// `max_standby_streaming_delay`.
fn vacuum_old(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    conn.batch_execute(&format!("VACUUM {}", tables.old))?;
    Ok(())
}

/// Called by a mover after each batch, with the rows moved by then: every `step` rows one mover
/// VACUUMs the old table (see [`vacuum_old`]) while the others wait between batches, so that
/// the old table has given back all but a share of [`OLD_VACUUMS`] of what was moved; every
/// other time, while the references fill, it ANALYZEs the new table too. The mover
/// does it, not the upkeep thread: the upkeep's fill is the longer job, and between batches
/// this mover holds no lock on the old table that would keep VACUUM from giving pages back.
fn vacuum_old_between(
    conn: &mut PgConnection,
    tables: &SwapTables,
    tally: &Tally,
    moved: i64,
    step: i64,
) -> Result<()> {
    let due = tally.old_vacuum_at.load(Ordering::SeqCst);
    if moved < due
        || tally
            .old_vacuum_at
            .compare_exchange(due, moved + step, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return Ok(());
    }
    tally.hold_movers.store(true, Ordering::SeqCst);
    let vacuumed = {
        let _alone = tally.upkeep_of_tables();
        vacuum_old(conn, tables)
    };
    tally.hold_movers.store(false, Ordering::SeqCst);
    vacuumed?;
    // Every other time, while the upkeep thread fills the references, the planner's statistics
    // of the new table too (the upkeep does it itself once the fill is done).
    if (moved / step) % 2 == 0 && !tally.refs_done.load(Ordering::SeqCst) {
        let _alone = tally.upkeep_of_tables();
        analyze(conn, tables)?;
    }
    Ok(())
}

/// VACUUM of the referencing tables while their shadow columns fill: every row filled leaves its
/// former version dead, and only VACUUM makes that space reusable, so the next pages' new
/// versions land there instead of at the end of the table; done every twentieth of the fill
/// (every tenth left trips 6 % bigger than the ALTER does once two workers filled it, this 4 %),
/// the table grows by a few parts in a hundred instead of doubling. `TRUNCATE false`, as for the old table:
/// the application reads these tables throughout.
///
/// VACUUM removes only versions no running transaction may still see: one that began before the
/// fill's last commit (a mover's batch, most of the time) keeps that batch's versions, and a
/// whole batch left for the next VACUUM is a batch of pages the next ones cannot reuse. So it
/// first waits, at most [`VACUUM_WAITS_AT_MOST`], for the transactions of this database older
/// than now to end (those of other roles it may not see: it does not wait for them).
fn vacuum_refs(conn: &mut PgConnection, tables: &SwapTables) -> Result<()> {
    if tables.refs.is_empty() {
        return Ok(());
    }
    wait_for_older_snapshots(conn)?;
    conn.batch_execute(&format!(
        "VACUUM (TRUNCATE false) {}",
        tables.refs.join(", ")
    ))?;
    Ok(())
}

/// Waits, at most [`VACUUM_WAITS_AT_MOST`], for the transactions of this database older than now
/// to end, so that a VACUUM next can remove every version this session's commits left dead (those
/// of other roles it may not see: it does not wait for them).
fn wait_for_older_snapshots(conn: &mut PgConnection) -> Result<()> {
    #[derive(QueryableByName)]
    struct Clear {
        #[diesel(sql_type = Bool)]
        clear: bool,
    }
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = BigInt)]
        next: i64,
    }
    let now: Next =
        diesel::sql_query("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next")
            .get_result(conn)?;
    let started = Instant::now();
    loop {
        // A snapshot older than `now` has an xmin more transactions old than have started since.
        let clear: Clear = diesel::sql_query(
            "SELECT NOT EXISTS (
                 SELECT FROM pg_stat_activity a
                 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                   AND a.backend_xmin IS NOT NULL
                   AND age(a.backend_xmin) > pg_snapshot_xmax(pg_current_snapshot())::text::bigint - $1
             ) AS clear",
        )
        .bind::<BigInt, _>(now.next)
        .get_result(conn)?;
        if clear.clear || started.elapsed() >= VACUUM_WAITS_AT_MOST {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The bar and the log line. The bar counts both jobs: rows moved of rows moved + left, then
/// referencing rows synced of synced + left, so it keeps filling while the references sync
/// after the last row moved. `latest` was read when this run had moved `moved_then` rows; the
/// rows moved since come off its count. Once the movers caught up (without `follow`), the few
/// rows writers insert into temp meanwhile are finalize's: they are shown, not counted, so the
/// bar never goes back.
fn show_progress(
    progress: &Progress,
    latest: &SwapProgress,
    moved_then: i64,
    tally: &Tally,
    crew: &Crew,
    follow: bool,
) {
    let moved = tally.moved.load(Ordering::SeqCst);
    let rate = moved as f64 / progress.elapsed_secs();
    let state = progress::activity(crew.paused(), crew.backing_off(), crew.yielding());
    let caught_up = tally.all_moved.load(Ordering::SeqCst);
    let left = (latest.rows_left() - (moved - moved_then)).max(0);
    let counted_left = if caught_up && !follow { 0 } else { left };
    let refs_synced = tally.refs_synced.load(Ordering::SeqCst);
    let refs_left = if tally.refs_done.load(Ordering::SeqCst) {
        0
    } else {
        latest.refs_left.max(0)
    };
    let left_text = approximate(left, latest.exact());
    let bytes = HumanBytes(latest.total_bytes.max(0) as u64);
    let doing = match (caught_up, refs_left > 0, follow) {
        (false, _, _) => format!("{left_text} rows left"),
        (true, true, _) => format!(
            "rows moved, {} referencing rows to sync",
            approximate(refs_left, true)
        ),
        (true, false, true) => format!("following temp ({left_text} rows there) until finalize"),
        (true, false, false) => {
            format!("rows moved ({left_text} inserted since wait for finalize)")
        }
    };
    let position = moved + refs_synced;
    progress.show(
        position,
        position + counted_left + refs_left,
        &format!("{doing}, {} moved, {bytes}, {rate:.0}/s{state}", HumanCount(moved.max(0) as u64)),
        || {
            let total = position + counted_left + refs_left;
            let percent = if total > 0 {
                100.0 * position as f64 / total as f64
            } else {
                100.0
            };
            format!(
                "{percent:.1}% done: {doing}; {left_text} rows left in old and temp, {} rows moved, \
                 {rate:.0} rows/s, {bytes} on disk, {} referencing rows synced, {} to sync, eta {}{state}",
                HumanCount(moved.max(0) as u64),
                HumanCount(refs_synced.max(0) as u64),
                approximate(refs_left, true),
                progress::eta(counted_left, rate)
            )
        },
    );
}
