//! Every benchmark still runs: each with tiny sizes against the test server (`DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`), checking that its report carries
//! every figure, finite, and positive where it must be. Nothing here judges a figure's size:
//! these are benchmarks, and timings are not a test's business.

use clap::Parser;
use zmig_bench::{run, BenchArgs, Report};

fn bench(args: &[&str]) -> Report {
    let args = BenchArgs::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .expect("the arguments parse");
    run(&args).unwrap_or_else(|e| panic!("{args:?} failed: {e:#}"))
}

/// Every key is a finite figure of the medians and of each round; the `positive` ones are > 0.
fn check(report: &Report, rounds: usize, finite: &[&str], positive: &[&str]) {
    assert_eq!(report.rounds.len(), rounds, "rounds asked for");
    for key in finite.iter().chain(positive) {
        for figures in std::iter::once(&report.figures).chain(&report.rounds) {
            let value = figures
                .get(key)
                .unwrap_or_else(|| panic!("{}: no figure `{key}`", report.benchmark));
            assert!(value.is_finite(), "{}: {key} = {value}", report.benchmark);
        }
    }
    for key in positive {
        let value = report.figures.at(key);
        assert!(value > 0.0, "{}: {key} = {value}", report.benchmark);
    }
    // The JSON object carries the same figures, and the table names every ratio it prints.
    let json = report.json();
    for key in finite.iter().chain(positive) {
        assert!(
            json["figures"][key].is_f64(),
            "{}: {key} missing from the JSON: {json}",
            report.benchmark
        );
    }
    assert_eq!(json["benchmark"], report.benchmark.as_str());
    let table = report.table();
    for line in &report.lines {
        assert!(table.contains(&line.measure), "{table}");
        if let Some((key, _)) = &line.ratio {
            assert!(table.contains(key.as_str()), "{table}");
        }
        if let Some(key) = &line.key {
            assert!(table.contains(key.as_str()), "{table}");
        }
    }
}

#[test]
fn backfill() {
    let report = bench(&["backfill", "--rows", "2000", "--rounds", "1"]);
    check(
        &report,
        1,
        &[],
        &[
            "baseline_s",
            "baseline_insert_s",
            "baseline_constraints_s",
            "baseline_rows_per_s",
            "constrained_s",
            "constrained_rows_per_s",
            "zmig_1_worker_s",
            "zmig_1_worker_rows_per_s",
            "zmig_1_worker_batches",
            "zmig_2_workers_s",
            "zmig_2_workers_rows_per_s",
            "zmig_2_workers_batches",
            "zmig_fk_s",
            "zmig_1_worker_with_fk_s",
            "backfill_ratio",
            "backfill_ratio_with_fk",
            "backfill_ratio_2_workers",
        ],
    );
}

#[test]
fn dual_write() {
    // Two rounds: the second starts with the triggers and reverts dual_write for its baseline.
    let report = bench(&[
        "dual-write",
        "--rows",
        "2000",
        "--seconds",
        "0.2",
        "--rounds",
        "2",
    ]);
    let mut positive = Vec::new();
    for side in ["baseline", "zmig"] {
        for kind in ["moved", "other", "insert"] {
            positive.push(format!("{side}_{kind}_per_s"));
            positive.push(format!("{side}_{kind}_p50_ms"));
        }
    }
    let positive: Vec<&str> = positive.iter().map(String::as_str).collect();
    check(
        &report,
        2,
        &[
            "dual_write_overhead_moved",
            "dual_write_overhead_other",
            "dual_write_overhead_insert",
        ],
        &positive,
    );
    for kind in ["moved", "other", "insert"] {
        let overhead = report.figures.at(&format!("dual_write_overhead_{kind}"));
        assert!(overhead < 1.0, "{kind}: {overhead}");
    }
}

#[test]
fn concurrent() {
    let report = bench(&[
        "concurrent",
        "--rows",
        "2000",
        // Long enough for a first batch to finish on a loaded 2-core CI machine (at 0.5 s one
        // run saw none): the bench refuses a window in which the backfill copied nothing.
        "--seconds",
        "2",
        "--rounds",
        "1",
    ]);
    check(
        &report,
        1,
        &[
            "baseline_retries",
            "during_retries",
            "backfill_finished",
            "backfill_backoffs",
        ],
        &[
            "baseline_p50_ms",
            "baseline_p99_ms",
            "baseline_p999_ms",
            "baseline_max_ms",
            "baseline_mean_ms",
            "baseline_per_s",
            "during_p50_ms",
            "during_p99_ms",
            "during_p999_ms",
            "during_max_ms",
            "during_mean_ms",
            "during_per_s",
            "window_s",
            "concurrent_p99_ratio",
            "backfill_rows_per_s",
            "backfill_owners",
        ],
    );
}

#[test]
fn generate() {
    let report = bench(&["generate", "--models", "12", "--rounds", "1"]);
    check(
        &report,
        1,
        &[],
        &["generate_ms", "check_ms", "folders", "schema_lines"],
    );
    // Two models at each of the six stages: 2 × (1 + 2 + 2 + 2 + 3 + 4) folders.
    assert_eq!(report.figures.at("folders"), 28.0);
}

#[test]
fn swap() {
    let report = bench(&["swap", "--rows", "2000", "--rounds", "1"]);
    check(
        &report,
        1,
        &[
            "baseline_probe_timeouts",
            "zmig_move_backoffs",
            "zmig_migration_retries",
            "zmig_probe_timeouts",
        ],
        &[
            "baseline_s",
            "baseline_alter_cars_s",
            "baseline_alter_trips_s",
            "baseline_alter_sequence_s",
            "baseline_rows_per_s",
            "baseline_lock_ms",
            "baseline_probe_ms",
            "cars_bytes_before",
            "trips_bytes_before",
            "baseline_cars_bytes_after",
            "baseline_trips_bytes_after",
            "zmig_prepare_s",
            "zmig_move_s",
            "zmig_finalize_s",
            "zmig_total_s",
            "zmig_move_rows_per_s",
            "zmig_move_batches",
            "zmig_refs_synced",
            "zmig_prepare_lock_ms",
            "zmig_finalize_lock_ms",
            "zmig_move_probe_ms",
            "zmig_bytes_before",
            "zmig_bytes_after",
            "zmig_cars_bytes_after",
            "zmig_trips_bytes_after",
            "baseline_peak_cars_bytes",
            "baseline_peak_trips_bytes",
            "baseline_peak_disk_ratio",
            "zmig_peak_cars_bytes",
            "zmig_peak_trips_bytes",
            "swap_peak_disk_ratio",
            "zmig_peak_trips_ratio",
            "zmig_trips_end_ratio",
            "swap_ratio",
            "swap_max_lock_ms",
        ],
    );
    // Every row moved and every trip synced, in this tiny run as in a full one.
    assert_eq!(report.figures.at("zmig_refs_synced"), 2000.0);
    assert!(report.table().contains("target: swap_max_lock_ms"));
}
