//! `cargo xtask zmig …`: the whole command line as one library call. A user's
//! `xtask/src/main.rs` is `fn main() -> std::process::ExitCode { zmig_runtime::cli::main() }`;
//! the standalone `zmig` binary (the `zmig` crate) is [`main_standalone`], the same commands.
//!
//! `plan` and `generate` read the crate, and the database (`--database-url`, else
//! `DATABASE_URL`) only to copy exact column types when a migration's first folder is written;
//! `backfill`, `verify` and `status` work on that database. A name whose `zmig_<name>_move` function exists
//! there is a swap: `backfill` moves its rows and `verify` checks them; any other name is an
//! extract the workspace's code must declare.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zmig_codegen::cli::{self as codegen_cli, Target, ZmigCommand};

use crate::backfill::{self, BackfillOptions};
use crate::catalog::PgCatalog;
use crate::disk::DiskCheck;
use crate::url::redact;

mod status;
use crate::{swap, verify};
use zmig_codegen::schema::Catalog;

/// What `--help` says of exit codes (README's "Exit codes" says the same).
const EXIT_CODES: &str =
    "Exit codes: 0 done; 1 an error, rows that differ (verify), folders missing \
     or stale (generate --check), or a backfill or move that stopped before the end (run it again \
     to resume); 2 a command line that does not parse.";

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

/// The standalone `zmig` binary (the `zmig` crate): the same commands, without `cargo xtask`.
#[derive(Parser, Debug)]
#[command(
    name = "zmig",
    bin_name = "zmig",
    version,
    about = "zmig: zero-downtime table changes for Diesel on PostgreSQL",
    after_help = EXIT_CODES
)]
struct Standalone {
    #[command(flatten)]
    args: ZmigArgs,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// zmig: zero-downtime table changes for Diesel on PostgreSQL.
    Zmig(ZmigArgs),
}

#[derive(Parser, Debug)]
struct ZmigArgs {
    /// The database to work on (default: DATABASE_URL). `plan` and `generate` read exact column
    /// types from it when a migration's first folder is written: point it at the database
    /// `diesel print-schema` reads.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Codegen(ZmigCommand),
    /// Copy the owner rows that existed before dual writing into the new table; for a swap,
    /// moves rows into the new table (or, with --back, back to the old one).
    ///
    /// Batched, throttled and resumable: stop it (Ctrl-C) or kill it at any moment and run it
    /// again to resume; run it on several machines at once to share the work. It yields to live
    /// traffic: while other sessions of the database work, batches are short
    /// (--busy-target-batch-ms) and each is followed by a pause twice as long
    /// (--busy-pause-ratio); with none, it runs at full speed (--target-batch-ms). An extract's
    /// backfill is checkpointed in the database and refuses to start before the dual_write
    /// migration is applied. A swap's move (when the database has the swap's
    /// `zmig_<name>_move` function) needs no checkpoint, the tables being its state; it also
    /// syncs the referencing columns, and ANALYZEs the new table and VACUUMs the old one as it
    /// goes; it refuses to start before the prepare migration is applied.
    Backfill {
        /// The migration's name (see `cargo xtask zmig plan`).
        name: String,
        /// Worker threads in this process.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
        /// Owners (for a swap, rows) per batch to start with; adapted towards --target-batch-ms.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(i32).range(1..))]
        batch_size: i32,
        /// How long a batch should take while no other session of the database works, in
        /// milliseconds.
        #[arg(long, default_value_t = 200)]
        target_batch_ms: u64,
        /// Sleep between batches, in milliseconds, whether other sessions work or not.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// How long a batch should take while other sessions of the database work (a session
        /// counts when it ran a statement since the worker's last look; zmig's workers do not),
        /// in milliseconds: writers that need a row of the batch wait up to that long. At most
        /// --target-batch-ms.
        #[arg(long, default_value_t = 50, value_name = "MS")]
        busy_target_batch_ms: u64,
        /// While other sessions work, pause after each batch this many times as long as the
        /// batch took: 2 leaves the database to them two thirds of the time, 1 half of it, 0
        /// never pauses. At least --pause-ms.
        #[arg(long, default_value_t = 2.0, value_name = "RATIO", value_parser = pause_ratio)]
        busy_pause_ratio: f64,
        /// Do not yield: run at full speed whatever other sessions do (a quiet night, a
        /// maintenance window).
        #[arg(long, conflicts_with_all = ["busy_target_batch_ms", "busy_pause_ratio"])]
        no_yield: bool,
        /// When the last backfill finished, run a new one over every owner key. Each batch also
        /// deletes rows whose owner is gone or carries nothing and corrects rows that differ:
        /// this mends what `verify` found. A backfill still in progress is resumed as usual.
        /// Not for a swap (its move always resumes where the rows are).
        #[arg(long, conflicts_with_all = ["pause", "resume"])]
        again: bool,
        /// A swap's move only: once the old table is empty, keep moving the rows writers insert
        /// (which land in temp) until Ctrl-C or until the finalize migration has run, so temp
        /// never holds more than finalize moves under its lock (10,000 rows). Without it the
        /// move ends once the old table is empty and temp holds fewer than 1,000 rows. With
        /// --back the same the other way: once the new table is empty, keep moving back what
        /// writers insert until Ctrl-C or until the prepare migration is reverted.
        #[arg(long, conflicts_with_all = ["again", "pause", "resume"])]
        follow: bool,
        /// A swap only: the way back, online. Moves the rows back from the new table (and the
        /// temp table) to the old one in batches under live writes, with the same workers,
        /// throttle, yielding and pause as the move; stopped or killed, run it again to resume.
        /// Use it before reverting the prepare migration (`diesel migration revert`) once the
        /// move has run: the revert then takes only its brief lock to move the few rows inserted
        /// since, and refuses while more than 10,000 rows are in new and temp. A move running
        /// meanwhile stops at its next batch, and later ones refuse until `--forward`.
        #[arg(long, conflicts_with_all = ["again", "pause", "resume", "forward"])]
        back: bool,
        /// A swap only: go forward again after a move back was started (which then stops at its
        /// next batch), moving every row into the new table as a plain move does.
        #[arg(long, conflicts_with_all = ["again", "pause", "resume"])]
        forward: bool,
        /// A swap's move only: take this many bytes as the free disk of the database's server
        /// instead of measuring it. The move estimates what it will add at its peak (status
        /// shows it) and refuses to start when the free space cannot hold it; zmig measures
        /// free space only when PostgreSQL shows it the data directory on this same machine.
        #[arg(long, value_name = "BYTES", conflicts_with_all = ["skip_disk_check", "again", "pause", "resume"])]
        assume_free_disk: Option<u64>,
        /// A swap's move only: start without comparing the free disk with the estimate.
        #[arg(long, conflicts_with_all = ["again", "pause", "resume"])]
        skip_disk_check: bool,
        /// Pause the running backfill or move (its workers finish their batch and wait), then
        /// exit.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Resume a paused backfill or move, then exit.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Compare old and new row by row; for a swap, checks its rows. Exits non-zero when any
    /// row differs.
    ///
    /// The result is recorded: write_new and contract refuse to run until the latest
    /// verification found no differing row. For a swap: no key in two of its tables, no
    /// reference without its row, every widened shadow column equal to its column.
    Verify {
        /// The migration's name (see `cargo xtask zmig plan`).
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Per migration: stage in code, migrations applied, backfill progress, rows differing,
    /// and the last run's log (its start, latest events and end); then the swaps the database
    /// has (rows left to move, disk used, references to sync, the last move's log).
    Status {
        #[command(flatten)]
        target: Target,
        /// Print it as one JSON document (`{"migrations": [...]}`, fields as in README's
        /// "status --json"), for tooling.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line, as `cargo xtask zmig …`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let Top::Zmig(args) = cli.command;
    exit_code(run(args, &mut std::io::stdout().lock()))
}

/// Runs the command line of the standalone `zmig` binary: the same commands as
/// `cargo xtask zmig …`, the same library call.
pub fn main_standalone() -> ExitCode {
    let _name = zmig_codegen::as_command("zmig");
    let cli = Standalone::parse();
    exit_code(run(cli.args, &mut std::io::stdout().lock()))
}

/// [`run_from`] for the standalone binary's arguments (`zmig plan …`).
pub fn run_standalone_from<I, T>(args: I, out: &mut dyn Write) -> Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _name = zmig_codegen::as_command("zmig");
    run(Standalone::try_parse_from(args)?.args, out)
}

/// The exit code of a run, its error (if any) printed on stderr.
fn exit_code(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            // A report of several located errors already says `error:` on each of its lines.
            let text = format!("{error:#}");
            if text.starts_with("error: ") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the command line `args` (starting with the program name, as `std::env::args`),
/// writing the report to `out`: what [`main`] does, callable from tests and other tools.
/// Parse errors (and `--help`) come back as an error carrying clap's text.
pub fn run_from<I, T>(args: I, out: &mut dyn Write) -> Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let Top::Zmig(args) = cli.command;
    run(args, out)
}

fn run(args: ZmigArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let zmig = zmig_codegen::command_name();
    let url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|url| !url.is_empty());
    let database_url = || {
        match &url {
        Some(url) => Ok(url.clone()),
        None => Err(anyhow::anyhow!(
            "set DATABASE_URL (or pass --database-url) to the database to work on, e.g. postgres://user@host/db"
        )),
    }
    };
    match args.command {
        Command::Codegen(command) => {
            let mut catalog = url.as_deref().map(PgCatalog::new);
            codegen_cli::run(
                command,
                catalog.as_mut().map(|c| c as &mut dyn Catalog),
                out,
            )
        }
        Command::Backfill {
            name,
            workers,
            batch_size,
            target_batch_ms,
            pause_ms,
            busy_target_batch_ms,
            busy_pause_ratio,
            no_yield,
            again,
            follow,
            back,
            forward,
            assume_free_disk,
            skip_disk_check,
            pause,
            resume,
            target,
        } => {
            let url = database_url()?;
            let mut conn = connect(&url)?;
            let is_swap = swap::is_swap(&mut conn, &name)?;
            if !is_swap {
                known_migration(&target, &name)?;
            }
            let task = if is_swap { "move" } else { "backfill" };
            if is_swap && again {
                bail!(
                    "--again is for an extract's backfill; `{name}` is a swap, whose move always resumes from the rows left to move"
                );
            }
            if !is_swap && (back || forward) {
                bail!(
                    "--{} is for a swap; `{name}` is an extract, whose way back is reverting its migrations (`diesel migration revert`)",
                    if back { "back" } else { "forward" }
                );
            }
            if !is_swap && follow {
                bail!(
                    "--follow is for a swap's move; `{name}` is an extract, whose backfill ends with the keys that existed when it started (the triggers sync the rest)"
                );
            }
            if pause || resume {
                backfill::set_paused(&mut conn, &name, pause)?;
                writeln!(
                    out,
                    "{name}: {task} {}",
                    if pause { "paused" } else { "resumed" }
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let stop = Arc::new(AtomicBool::new(false));
            let handler_stop = stop.clone();
            // A second Ctrl-C is not caught: the process ends, and the run still resumes.
            let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));
            let options = BackfillOptions {
                workers: workers.into(),
                batch_size,
                target_batch_time: Duration::from_millis(target_batch_ms),
                pause: Duration::from_millis(pause_ms),
                yield_to_traffic: !no_yield,
                busy_target_batch_time: Duration::from_millis(busy_target_batch_ms),
                busy_pause_ratio,
                stop: Some(stop),
                again,
                follow,
                disk_check: match (assume_free_disk, skip_disk_check) {
                    (Some(bytes), _) => DiskCheck::Assume(bytes),
                    (None, true) => DiskCheck::Skip,
                    (None, false) => DiskCheck::Measure,
                },
                ..BackfillOptions::default()
            };
            if is_swap && back {
                return run_move_back(&url, &name, &options, out);
            }
            if is_swap {
                if forward {
                    swap::set_direction(&mut conn, &name, swap::MoveDirection::Forward)?;
                }
                return run_move(&url, &name, &options, out);
            }
            let report = backfill::backfill(&url, &name, &options)?;
            if report.finished {
                writeln!(out, "{name}: backfill complete; next: {zmig} verify {name}")?;
                Ok(ExitCode::SUCCESS)
            } else {
                writeln!(
                    out,
                    "{name}: backfill not complete ({} ranges left, some may be held by other workers); run it again to resume",
                    report.ranges_left
                )?;
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Verify { name, target } => {
            let url = database_url()?;
            let mut conn = connect(&url)?;
            if swap::is_swap(&mut conn, &name)? {
                return verify_swap(&mut conn, &name, out);
            }
            known_migration(&target, &name)?;
            let report = verify::verify(&mut conn, &name)?;
            writeln!(out, "{name}: {} rows differing", report.differing)?;
            for (problem, count) in &report.by_problem {
                writeln!(out, "  {problem}: {count}")?;
            }
            if !report.examples.is_empty() {
                let examples: Vec<String> = report
                    .examples
                    .iter()
                    .map(|d| format!("{} ({})", d.owner_key, d.problem))
                    .collect();
                writeln!(out, "  for example owner keys {}", examples.join(", "))?;
            }
            if !report.ok() && report.write_new_applied {
                writeln!(
                    out,
                    "  write_new is applied: the new table holds the truth, and `backfill` refuses (it would overwrite it); correct these rows by hand, then verify again"
                )?;
            } else if !report.ok() {
                // What mends them depends on what ran: nothing yet, a run stopped part way, or
                // a finished one (which only `--again` walks once more).
                let advice = match backfill::status(&mut conn, &name)? {
                    None => format!(
                        "the backfill has not run yet: {zmig} backfill {name}, then verify again"
                    ),
                    Some(run) if !run.finished => format!(
                        "the backfill has not finished ({} of {} keys done): {zmig} backfill {name} resumes it, then verify again",
                        run.keys_done, run.keys_total
                    ),
                    Some(_) => format!(
                        "to mend them: {zmig} backfill {name} --again, then verify again"
                    ),
                };
                writeln!(out, "  {advice}")?;
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { target, json } => {
            let projects = codegen_cli::load_all(&target, None)?;
            let url = database_url()?;
            let mut conn = connect(&url)?;
            let all = status::gather(&projects, &mut conn)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &status::to_json(&all))?;
                writeln!(out)?;
            } else {
                status::write_text(&all, out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A swap's move, and what to do next.
fn run_move(
    url: &str,
    name: &str,
    options: &BackfillOptions,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let zmig = zmig_codegen::command_name();
    let report = swap::move_rows(url, name, options)?;
    writeln!(
        out,
        "{name}: {} rows moved in {} batches, {} referencing rows synced; {} on disk (was {})",
        report.moved,
        report.batches,
        report.refs_synced,
        indicatif::HumanBytes(report.bytes_after.max(0) as u64),
        indicatif::HumanBytes(report.bytes_before.max(0) as u64),
    )?;
    if report.finalized {
        writeln!(
            out,
            "{name}: followed the inserts until the finalize migration ran; the swap is done"
        )?;
        Ok(ExitCode::SUCCESS)
    } else if report.finished {
        writeln!(
            out,
            "{name}: move complete: the old table is empty, {} rows inserted since wait in temp for finalize \
             (it moves at most {} under its lock; if more pile up before you finalize, run the move again, \
             or keep `--follow` running until finalize); next: {zmig} verify {name}, then stage = \"finalize\"",
            report.rows_left,
            swap::FINALIZE_MOVES_AT_MOST,
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{name}: move not complete (stopped, or other workers hold the last rows); run it again to resume"
        )?;
        Ok(ExitCode::FAILURE)
    }
}

/// A swap's move back, and what to do next.
fn run_move_back(
    url: &str,
    name: &str,
    options: &BackfillOptions,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let report = swap::move_rows_back(url, name, options)?;
    writeln!(
        out,
        "{name}: {} rows moved back in {} batches; {} on disk (was {})",
        report.moved,
        report.batches,
        indicatif::HumanBytes(report.bytes_after.max(0) as u64),
        indicatif::HumanBytes(report.bytes_before.max(0) as u64),
    )?;
    if report.finalized {
        writeln!(
            out,
            "{name}: followed the inserts until the prepare migration was reverted; the table is back as it was"
        )?;
        Ok(ExitCode::SUCCESS)
    } else if report.finished {
        writeln!(
            out,
            "{name}: move back complete: the new table is empty, {} rows inserted since wait in temp; \
             next: revert the prepare migration (`diesel migration revert`), which moves them under its \
             brief lock (at most {}; if more pile up first, run the move back again, or keep it running \
             with --follow until the revert)",
            report.rows_left,
            swap::FINALIZE_MOVES_AT_MOST,
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{name}: move back not complete (stopped, or other workers hold the last rows); run it again to resume"
        )?;
        Ok(ExitCode::FAILURE)
    }
}

/// A swap's verify: every kind of problem with its count, non-zero exit when any has rows.
fn verify_swap(conn: &mut PgConnection, name: &str, out: &mut dyn Write) -> Result<ExitCode> {
    let check = swap::verify(conn, name)?;
    writeln!(out, "{name}: {} rows with problems", check.problem_rows())?;
    for problem in &check.problems {
        match (&problem.example, problem.rows) {
            (Some(example), rows) if rows > 0 => writeln!(
                out,
                "  {}: {rows} (for example key {example})",
                problem.problem
            )?,
            (_, rows) => writeln!(out, "  {}: {rows}", problem.problem)?,
        }
    }
    Ok(if check.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--busy-pause-ratio`: a finite number, 0 to 100.
fn pause_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=100.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{text}` is not a number from 0 to 100")),
    }
}

fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::establish(url).with_context(|| format!("connecting to {}", redact(url)))
}

/// Refuses a name no model declares, listing the ones that exist.
fn known_migration(target: &Target, name: &str) -> Result<()> {
    let projects = codegen_cli::load_all(target, None)?;
    if projects
        .iter()
        .flat_map(|p| p.swaps.iter())
        .any(|s| s.swap.name == name)
    {
        bail!(
            "swap `{name}` is declared but this database has not applied its prepare migration: \
             apply it first (`diesel migration run`, or the application's embedded migrations)"
        );
    }
    let names: Vec<&str> = projects
        .iter()
        .flat_map(|p| {
            let extracts = p.extracts.iter().map(|m| m.extract.name.as_str());
            extracts.chain(p.swaps.iter().map(|m| m.swap.name.as_str()))
        })
        .collect();
    if names.contains(&name) {
        return Ok(());
    }
    bail!(
        "no zmig migration named `{name}`; the workspace declares: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_flags_default_to_the_library_defaults() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                ["cargo xtask", "zmig", "backfill", "caterers_addresses"]
                    .iter()
                    .chain(args),
            )
            .map_err(|e| e.to_string())?;
            let Top::Zmig(ZmigArgs { command, .. }) = cli.command;
            match command {
                Command::Backfill {
                    target_batch_ms,
                    pause_ms,
                    busy_target_batch_ms,
                    busy_pause_ratio,
                    no_yield,
                    ..
                } => Ok((
                    target_batch_ms,
                    pause_ms,
                    busy_target_batch_ms,
                    busy_pause_ratio,
                    no_yield,
                )),
                _ => Err("not a backfill".to_owned()),
            }
        };
        let defaults = BackfillOptions::default();
        assert_eq!(
            parse(&[]).unwrap(),
            (
                defaults.target_batch_time.as_millis() as u64,
                defaults.pause.as_millis() as u64,
                defaults.busy_target_batch_time.as_millis() as u64,
                defaults.busy_pause_ratio,
                !defaults.yield_to_traffic,
            )
        );
        assert_eq!(parse(&["--busy-pause-ratio", "0.5"]).unwrap().3, 0.5);
        assert!(parse(&["--no-yield"]).unwrap().4);
        assert!(parse(&["--busy-pause-ratio", "-1"]).is_err());
        assert!(parse(&["--busy-pause-ratio", "NaN"]).is_err());
        assert!(parse(&["--no-yield", "--busy-pause-ratio", "2"]).is_err());
    }
}
