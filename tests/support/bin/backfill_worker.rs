//! A backfill in a process of its own, for `tests/extract_backfill.rs` to kill (`kill -9`) in
//! the middle of its work: `backfill_worker <database url> <migration name>`.
//!
//! Two workers, batches of exactly 100 owners and a pause after each, so that it is slow enough
//! to be caught half way. On success it prints its report on stdout; on error it exits with 1.

use std::process::ExitCode;
use std::time::Duration;

use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, migration] = args.as_slice() else {
        eprintln!("usage: backfill_worker <database url> <migration name>");
        return ExitCode::from(2);
    };
    let options = BackfillOptions {
        workers: 2,
        batch_size: 100,
        min_batch_size: 100,
        max_batch_size: 100,
        pause: Duration::from_millis(5),
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    };
    match backfill(url, migration, &options) {
        Ok(report) => {
            println!("{report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backfill_worker: {e}");
            ExitCode::FAILURE
        }
    }
}
