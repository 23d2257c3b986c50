//! zmig's benchmarks, behind `cargo xtask bench <name>`: each measures zmig beside the plain
//! PostgreSQL way of doing the same work, in the same run, on a database of its own that it
//! creates on the server `DATABASE_URL` names and drops at the end. Figures are medians over
//! `--rounds` rounds; the ratios between zmig and its baseline are what count (machines are
//! noisy; absolute times are context). See BENCHMARKS.md for a full run and what each figure
//! means.
//!
//! [`main_from`] is the command line; [`run`] runs one benchmark and returns its [`Report`].

pub mod backfill;
mod cars;
pub mod concurrent;
mod db;
mod disk;
pub mod dual_write;
mod fixture;
pub mod generate;
mod probe;
pub mod report;
pub mod swap;
mod workload;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use diesel::pg::PgConnection;

pub use report::{Figures, Line, Report};

const LONG_ABOUT: &str = "\
Benchmarks zmig against the plain PostgreSQL way of doing the same work, in the same run.

Each benchmark creates a database of its own on the server DATABASE_URL names (default
postgres://postgres@127.0.0.1:5432/postgres; the user must be allowed to create databases) and
drops it at the end. It fills the caterers table of the bundled example (swap: the cars and trips
tables) with --rows rows of varied values and applies zmig's generated migrations with
diesel_migrations. It prints a table of medians over --rounds rounds, the baseline beside zmig,
and their ratio; --json prints one JSON object with every figure instead. Ratios from one run
are what count: machines are noisy, absolute times are context. Build in release mode for
figures worth reporting:
  cargo run --release -p xtask -- bench backfill

backfill    zmig's backfill (zmig_runtime::backfill::backfill, default options), with 1 and 2
            workers, each on a freshly emptied new table.
            Baseline: one INSERT INTO addresses ... SELECT ... FROM caterers into the bare new
            table, then its primary key, unique owner key and foreign key added (timed too).
            backfill_ratio = baseline time / zmig time (1 worker); backfill_ratio_2_workers;
            backfill_ratio_with_fk also counts write_new's foreign key (NOT VALID, then
            VALIDATE), which expand leaves out so that the backfill does not check it per row.

dual-write  One connection, single-row writes in a closed loop, --seconds per kind: updates of a
            moved column, updates of other columns, inserts, with the dual_write migration (the
            sync triggers) applied.
            Baseline: the same writes without the triggers.
            dual_write_overhead_moved, _other, _insert = 1 - zmig writes/s / baseline writes/s.

concurrent  Two connections writing (mixed updates and inserts) while the backfill runs with its
            default throttle settings, for at most --seconds.
            Baseline: the same writes for the same time without a backfill.
            concurrent_p99_ratio = p99 write latency during / without; backfill rows/s under load.

generate    zmig_codegen::project::load + generate over a synthetic crate of --models annotated
            models (100) and a schema.rs of three tables per model (300), in a temporary folder.
            No baseline: generate_ms.

swap        zmig's table swap of cars (id integer -> bigint, and trips.car_id with it): the
            prepare migration, zmig_runtime::swap::move_rows (1 worker, default options), the
            finalize migration, on a fresh copy of --rows cars and as many trips each round.
            Baseline: ALTER TABLE cars ALTER COLUMN id TYPE bigint, the same for trips.car_id
            (and the sequence) in one transaction, on another fresh copy.
            swap_ratio = ALTER time / zmig time (prepare + move + finalize); swap_max_lock_ms =
            the longest a probing session reading and updating one car waited during prepare
            and finalize (target <= 100), beside how long it waited for the ALTER.";

/// `cargo xtask bench`: one benchmark, its sizes, and how to print the result.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cargo xtask bench",
    bin_name = "cargo xtask bench",
    about = "Benchmark zmig against the plain PostgreSQL way of doing the same work.",
    long_about = LONG_ABOUT
)]
pub struct BenchArgs {
    /// The benchmark to run.
    #[arg(value_enum)]
    pub name: Bench,
    /// Rows in the data set: caterers (backfill, dual-write, concurrent), or cars and as many
    /// trips (swap).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub rows: i64,
    /// Seconds of writes per measure (dual-write: per kind and side; concurrent: at most, per
    /// side).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Rounds; the report gives the median of each figure.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Annotated models in the synthetic crate (generate); its schema.rs has three tables per
    /// model.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub models: u32,
    /// The backfill's target time per batch in milliseconds (backfill, concurrent; swap: the
    /// move's), instead of zmig's default (200): to see how it trades the backfill's speed for
    /// write latency.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub target_batch_ms: Option<u64>,
    /// The backfill's pause between batches in milliseconds (backfill, concurrent; swap: the
    /// move's), instead of zmig's default (0).
    #[arg(long, value_name = "MS")]
    pub pause_ms: Option<u64>,
    /// The backfill's target time per batch while other sessions work, in milliseconds
    /// (backfill, concurrent; swap: the move's), instead of zmig's default (50).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub busy_target_batch_ms: Option<u64>,
    /// The backfill's pause after each batch while other sessions work, as a multiple of the
    /// batch's time (backfill, concurrent; swap: the move's), instead of zmig's default (2).
    #[arg(long, value_name = "RATIO")]
    pub busy_pause_ratio: Option<f64>,
    /// Run the backfill (swap: the move) without yielding to other sessions, as zmig did before
    /// it yielded: full speed whatever the writers do.
    #[arg(long)]
    pub no_yield: bool,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The benchmarks.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// zmig's backfill, 1 and 2 workers, against one INSERT … SELECT with constraints added after.
    Backfill,
    /// Single-row writes with zmig's sync triggers against the same writes without them.
    DualWrite,
    /// p99 write latency while the backfill runs against the same writes without it.
    Concurrent,
    /// generate over 100 models and a 300-table schema.rs (no baseline).
    Generate,
    /// zmig's swap of cars.id and trips.car_id to bigint against ALTER TABLE … TYPE bigint.
    Swap,
}

/// The sizes a benchmark runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub rows: i64,
    pub seconds: f64,
    pub rounds: usize,
    pub models: usize,
    /// The backfill's target batch time, when not zmig's default.
    pub target_batch_ms: Option<u64>,
    /// The backfill's pause between batches, when not zmig's default.
    pub pause_ms: Option<u64>,
    /// The backfill's busy target and pause ratio, when not zmig's defaults.
    pub busy_target_batch_ms: Option<u64>,
    pub busy_pause_ratio: Option<f64>,
    /// The backfill does not yield to other sessions.
    pub no_yield: bool,
}

impl Params {
    fn figures(&self) -> Figures {
        let mut f = Figures::default();
        f.set("rows", self.rows as f64);
        f.set("seconds", self.seconds);
        f.set("rounds", self.rounds as f64);
        f.set("models", self.models as f64);
        if let Some(ms) = self.target_batch_ms {
            f.set("target_batch_ms", ms as f64);
        }
        if let Some(ms) = self.pause_ms {
            f.set("pause_ms", ms as f64);
        }
        if let Some(ms) = self.busy_target_batch_ms {
            f.set("busy_target_batch_ms", ms as f64);
        }
        if let Some(ratio) = self.busy_pause_ratio {
            f.set("busy_pause_ratio", ratio);
        }
        if self.no_yield {
            f.set("no_yield", 1.0);
        }
        f
    }

    /// zmig's default backfill options, silent, with the throttle flags that were given.
    fn backfill_options(&self) -> zmig_runtime::backfill::BackfillOptions {
        let mut options = zmig_runtime::backfill::BackfillOptions {
            progress: zmig_runtime::backfill::ProgressMode::Silent,
            ..Default::default()
        };
        if let Some(ms) = self.target_batch_ms {
            options.target_batch_time = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.pause_ms {
            options.pause = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.busy_target_batch_ms {
            options.busy_target_batch_time = std::time::Duration::from_millis(ms);
        }
        if let Some(ratio) = self.busy_pause_ratio {
            options.busy_pause_ratio = ratio;
        }
        options.yield_to_traffic = !self.no_yield;
        options
    }
}

/// Runs the benchmark `args` names and returns its report; prints progress to stderr.
pub fn run(args: &BenchArgs) -> Result<Report> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be a positive number of seconds");
    }
    if args
        .busy_pause_ratio
        .is_some_and(|r| !(r.is_finite() && r >= 0.0))
    {
        bail!("--busy-pause-ratio must be a number, 0 or more");
    }
    let params = Params {
        rows: args.rows,
        seconds: args.seconds,
        rounds: args.rounds as usize,
        models: args.models as usize,
        target_batch_ms: args.target_batch_ms,
        pause_ms: args.pause_ms,
        busy_target_batch_ms: args.busy_target_batch_ms,
        busy_pause_ratio: args.busy_pause_ratio,
        no_yield: args.no_yield,
    };
    match args.name {
        Bench::Backfill => backfill::run(&params),
        Bench::DualWrite => dual_write::run(&params),
        Bench::Concurrent => concurrent::run(&params),
        Bench::Generate => generate::run(&params),
        Bench::Swap => swap::run(&params),
    }
}

/// The command line: `args` as `std::env::args_os()` gives them to the xtask, the program
/// first, then `bench`, then the benchmark's arguments. Prints the table (or `--json`), or the
/// error; exits non-zero on an error.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // `bench` stands where clap expects the program's name.
    let args = match BenchArgs::try_parse_from(args.into_iter().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build; for figures worth reporting run `cargo run --release -p xtask -- bench …`"
        );
    }
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.json()).expect("JSON values serialize")
                );
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `notes`, and a last one when the backfill did not run with zmig's default options.
pub(crate) fn notes(params: &Params, mut notes: Vec<String>) -> Vec<String> {
    let mut changed = Vec::new();
    if let Some(ms) = params.target_batch_ms {
        changed.push(format!("--target-batch-ms {ms}"));
    }
    if let Some(ms) = params.pause_ms {
        changed.push(format!("--pause-ms {ms}"));
    }
    if let Some(ms) = params.busy_target_batch_ms {
        changed.push(format!("--busy-target-batch-ms {ms}"));
    }
    if let Some(ratio) = params.busy_pause_ratio {
        changed.push(format!("--busy-pause-ratio {ratio}"));
    }
    if params.no_yield {
        changed.push("--no-yield".to_owned());
    }
    if !changed.is_empty() {
        notes.push(format!(
            "the backfill ran with {}, not zmig's default options",
            changed.join(" ")
        ));
    }
    notes
}

/// A progress line on stderr, so a long run shows where it is (stdout carries the report).
pub(crate) fn progress(message: &str) {
    eprintln!("bench: {message}");
}

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Where a database benchmark ran: the server and the settings that weigh on its figures.
pub(crate) fn environment(conn: &mut PgConnection) -> Result<Vec<(String, String)>> {
    let server = db::server_version(conn)?;
    let setting = |conn: &mut PgConnection, name: &str| {
        db::text(conn, &format!("SELECT current_setting('{name}') AS t"))
    };
    Ok(vec![
        ("server".to_owned(), server),
        (
            "shared_buffers".to_owned(),
            setting(conn, "shared_buffers")?,
        ),
        (
            "synchronous_commit".to_owned(),
            setting(conn, "synchronous_commit")?,
        ),
        ("cpus".to_owned(), cpus().to_string()),
        ("build".to_owned(), build_profile().to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_after_bench() {
        let args = BenchArgs::try_parse_from(["bench", "dual-write", "--rows", "5", "--json"])
            .expect("parses");
        assert_eq!(args.name, Bench::DualWrite);
        assert_eq!(args.rows, 5);
        assert_eq!(args.rounds, 3);
        assert!(args.json);
        assert!(BenchArgs::try_parse_from(["bench", "backfill", "--rounds", "0"]).is_err());
        assert!(BenchArgs::try_parse_from(["bench", "nope"]).is_err());
    }

    #[test]
    fn the_help_explains_every_benchmark() {
        use clap::CommandFactory;
        let help = BenchArgs::command().render_long_help().to_string();
        for name in ["backfill", "dual-write", "concurrent", "generate", "swap"] {
            assert!(help.contains(name), "{name} missing from:\n{help}");
        }
        assert!(help.contains("Baseline"));
        assert!(!help.contains("not available yet"));
    }
}
