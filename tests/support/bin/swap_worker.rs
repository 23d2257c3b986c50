//! A swap's move in a process of its own, for `tests/swap_end_to_end.rs` (and, moving back,
//! `tests/swap_revert.rs`) to kill (`kill -9`) in the middle of its work:
//! `swap_worker <database url> <swap name> [back]`.
//!
//! Two workers, batches of exactly 500 rows and a pause after each, so that it is slow enough to
//! be caught half way. On success it prints its report on stdout; on error it exits with 1.

use std::process::ExitCode;
use std::time::Duration;

use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{move_rows, move_rows_back, MoveOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, name, back) = match args.as_slice() {
        [url, name] => (url, name, false),
        [url, name, way] if way == "back" => (url, name, true),
        _ => {
            eprintln!("usage: swap_worker <database url> <swap name> [back]");
            return ExitCode::from(2);
        }
    };
    let options = MoveOptions {
        workers: 2,
        batch_size: 500,
        min_batch_size: 500,
        max_batch_size: 500,
        pause: Duration::from_millis(5),
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    };
    let moved = if back {
        move_rows_back(url, name, &options)
    } else {
        move_rows(url, name, &options)
    };
    match moved {
        Ok(report) => {
            println!("{report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swap_worker: {e}");
            ExitCode::FAILURE
        }
    }
}
