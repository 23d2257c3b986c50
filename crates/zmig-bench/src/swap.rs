//! `swap`: zmig's table swap of `cars` (`id` integer → bigint, and `trips.car_id` with it)
//! against the `ALTER TABLE` that does the same in place.
//!
//! Each round works on two fresh copies of one seeded database (`--rows` cars and as many trips).
//!
//! - Baseline, on one copy: `ALTER TABLE cars ALTER COLUMN id TYPE bigint`, `ALTER TABLE trips
//!   ALTER COLUMN car_id TYPE bigint` and `ALTER SEQUENCE cars_id_seq AS bigint` in one
//!   transaction. It rewrites both tables, rebuilds their indexes and checks the foreign key
//!   again, all under ACCESS EXCLUSIVE locks held to the commit: its whole time is the time the
//!   application cannot even read `cars`.
//! - zmig, on the other copy: the prepare migration (applied as a service applies it, with
//!   zmig-runtime's runner over diesel_migrations), `zmig_runtime::swap::move_rows` (1 worker,
//!   default options), then the finalize migration. Each is timed; their sum is zmig's time.
//!
//! While each runs, a probing session reads and updates one car (`lock_timeout` 5 s) and
//! records its longest statement: the longest the application waited. `swap_max_lock_ms` is the
//! longest over prepare and finalize; the ALTER's is measured the same way (with a timeout long
//! enough to see it whole), and the move's, for context, with the probe at a slower pace.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use diesel::pg::PgConnection;
use diesel::Connection;
use zmig_runtime::swap::{move_rows, MoveOptions};

use crate::cars::{Cars, SWAP};
use crate::db;
use crate::disk;
use crate::probe::{Probe, Probed};
use crate::report::{thousands, Figures, Line, Report, Unit};
use crate::{notes, progress, Params};

/// The probe while a migration runs: the application's reads and writes of one car, every few
/// milliseconds, giving up on a lock after 5 s.
const PROBE: Probe = Probe {
    lock_timeout: Duration::from_secs(5),
    every: Duration::from_millis(2),
};

/// The probe while the move runs: as above at a slower pace, so it does not take CPU from the
/// move it is timed beside.
const PROBE_MOVE: Probe = Probe {
    lock_timeout: Duration::from_secs(5),
    every: Duration::from_millis(20),
};

/// The probe while the ALTER runs: it waits for the whole transaction, however long.
const PROBE_ALTER: Probe = Probe {
    lock_timeout: Duration::from_secs(3_600),
    every: Duration::from_millis(2),
};

/// The statements of the baseline's transaction, each with the key of its time.
const ALTER: [(&str, &str); 3] = [
    (
        "baseline_alter_cars_s",
        "ALTER TABLE cars ALTER COLUMN id TYPE bigint",
    ),
    (
        "baseline_alter_trips_s",
        "ALTER TABLE trips ALTER COLUMN car_id TYPE bigint",
    ),
    (
        "baseline_alter_sequence_s",
        "ALTER SEQUENCE cars_id_seq AS bigint",
    ),
];

/// BENCHMARKS.md's target for the longest wait the swap's migrations cause.
const TARGET_MAX_LOCK_MS: f64 = 100.0;

pub fn run(params: &Params) -> Result<Report> {
    let cars = Cars::seeded(params.rows)?;
    let environment = cars.environment()?;
    // A car in the middle: moved neither first nor last.
    let probe_car = params.rows / 2 + 1;

    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        let mut f = Figures::default();
        alter(&cars, probe_car, &mut f)?;
        progress(&format!(
            "round {round}/{}: ALTER TABLE {:.2} s (the probe waited {:.0} ms)",
            params.rounds,
            f.at("baseline_s"),
            f.at("baseline_probe_ms"),
        ));
        swap(&cars, params, probe_car, &mut f)?;
        f.set("swap_ratio", f.at("baseline_s") / f.at("zmig_total_s"));
        progress(&format!(
            "round {round}/{}: zmig prepare {:.2} s, move {:.2} s ({} rows/s), finalize {:.2} s; the probe waited at most {:.1} ms (prepare {:.1}, finalize {:.1}, move {:.1}); {} retries",
            params.rounds,
            f.at("zmig_prepare_s"),
            f.at("zmig_move_s"),
            thousands(f.at("zmig_move_rows_per_s") as i64),
            f.at("zmig_finalize_s"),
            f.at("swap_max_lock_ms"),
            f.at("zmig_prepare_lock_ms"),
            f.at("zmig_finalize_lock_ms"),
            f.at("zmig_move_probe_ms"),
            f.at("zmig_migration_retries"),
        ));
        rounds.push(f);
    }

    let m = Figures::medians(&rounds);
    let max_lock = m.at("swap_max_lock_ms");
    let target = format!(
        "target: swap_max_lock_ms ≤ {TARGET_MAX_LOCK_MS:.0} ms: {max_lock:.1} ms, {}",
        if max_lock <= TARGET_MAX_LOCK_MS {
            "met"
        } else {
            "not met"
        }
    );
    Ok(Report {
        benchmark: "swap".to_owned(),
        setup: format!(
            "{} cars and as many trips, {} round(s), medians",
            thousands(params.rows),
            params.rounds
        ),
        parameters: params.figures(),
        environment,
        lines: lines(&m),
        figures: m,
        rounds,
        notes: notes(params, vec![
            "baseline: ALTER TABLE cars ALTER COLUMN id TYPE bigint, the same for trips.car_id, and ALTER SEQUENCE cars_id_seq AS bigint in one transaction on a fresh copy of the database; it holds ACCESS EXCLUSIVE on both tables to the commit".to_owned(),
            "zmig: on another fresh copy, prepare and finalize applied with zmig_runtime::migrate (diesel_migrations, lock timeouts retried), between them zmig_runtime::swap::move_rows (1 worker, default options unless a note below says otherwise)".to_owned(),
            "probe: a session running SELECT make FROM cars WHERE id = … and UPDATE cars SET year = year WHERE id = … in a loop (lock_timeout 5 s; during the ALTER, 1 h); its longest statement is the longest the application waited".to_owned(),
            "ratio: ALTER time / zmig time (prepare + move + finalize); higher is better, 1 = as fast as the ALTER; median of the rounds' ratios".to_owned(),
            target,
        ]),
    })
}

/// The baseline: the ALTERs in one transaction on a fresh copy, with the probe waiting on them.
fn alter(cars: &Cars, probe_car: i64, f: &mut Figures) -> Result<()> {
    let db = cars.copy()?;
    let mut conn = db.conn()?;
    record_sizes(&mut conn, f, "", "before")?;
    db::checkpoint(&mut conn);
    let ((steps, took, probed), peak) = disk::around(&db.url, || {
        probed_step(PROBE_ALTER, &db.url, probe_car, || {
            conn.transaction(|conn| {
                ALTER
                    .iter()
                    .map(|(_, sql)| {
                        let started = Instant::now();
                        db::exec(conn, sql)?;
                        Ok(started.elapsed().as_secs_f64())
                    })
                    .collect::<Result<Vec<f64>>>()
            })
        })
    })?;
    check_widened(&mut conn, cars.rows, "after the ALTER")?;
    f.set("baseline_s", took);
    for ((key, _), step) in ALTER.iter().zip(steps) {
        f.set(key, step);
    }
    f.set("baseline_rows_per_s", cars.rows as f64 / took);
    f.set("baseline_lock_ms", took * 1_000.0);
    f.set("baseline_probe_ms", probed.longest_ms());
    f.set("baseline_probe_timeouts", probed.timeouts as f64);
    f.set("baseline_peak_cars_bytes", peak.swapped as f64);
    f.set("baseline_peak_trips_bytes", peak.referencing as f64);
    record_sizes(&mut conn, f, "baseline_", "after")?;
    f.set(
        "baseline_peak_disk_ratio",
        f.at("baseline_peak_cars_bytes") / f.at("cars_bytes_before"),
    );
    Ok(())
}

/// zmig: prepare, move, finalize on a fresh copy, each with the probe beside it.
fn swap(cars: &Cars, params: &Params, probe_car: i64, f: &mut Figures) -> Result<()> {
    let db = cars.copy()?;
    let mut conn = db.conn()?;
    let krate = &cars.krate;

    db::checkpoint(&mut conn);
    let ((prepare_retries, prepare_s, prepare), mut peak) = disk::around(&db.url, || {
        probed_step(PROBE, &db.url, probe_car, || {
            krate.apply_next(&mut conn, "cars_bigint_prepare")
        })
    })?;

    db::checkpoint(&mut conn);
    let options = MoveOptions {
        workers: 1,
        ..params.backfill_options()
    };
    let ((moved, move_s, during_move), move_peak) = disk::around(&db.url, || {
        probed_step(PROBE_MOVE, &db.url, probe_car, || {
            Ok(move_rows(&db.url, SWAP, &options)?)
        })
    })?;
    peak.take(move_peak);
    if !moved.finished || moved.moved != cars.rows {
        bail!("the move did not finish: {moved:?} for {} cars", cars.rows);
    }

    db::checkpoint(&mut conn);
    let ((finalize_retries, finalize_s, finalize), finalize_peak) = disk::around(&db.url, || {
        probed_step(PROBE, &db.url, probe_car, || {
            krate.apply_next(&mut conn, "cars_bigint_finalize")
        })
    })?;
    peak.take(finalize_peak);
    check_widened(&mut conn, cars.rows, "after finalize")?;

    f.set("zmig_prepare_s", prepare_s);
    f.set("zmig_move_s", move_s);
    f.set("zmig_finalize_s", finalize_s);
    f.set("zmig_total_s", prepare_s + move_s + finalize_s);
    f.set("zmig_move_rows_per_s", moved.moved as f64 / move_s);
    f.set("zmig_move_batches", moved.batches as f64);
    f.set("zmig_refs_synced", moved.refs_synced as f64);
    f.set("zmig_move_backoffs", moved.backoffs as f64);
    f.set(
        "zmig_migration_retries",
        f64::from(prepare_retries + finalize_retries),
    );
    f.set("zmig_prepare_lock_ms", prepare.longest_ms());
    f.set("zmig_finalize_lock_ms", finalize.longest_ms());
    f.set(
        "swap_max_lock_ms",
        prepare.longest_ms().max(finalize.longest_ms()),
    );
    f.set("zmig_move_probe_ms", during_move.longest_ms());
    f.set(
        "zmig_probe_timeouts",
        (prepare.timeouts + during_move.timeouts + finalize.timeouts) as f64,
    );
    f.set("zmig_bytes_before", moved.bytes_before as f64);
    f.set("zmig_bytes_after", moved.bytes_after as f64);
    f.set("zmig_peak_cars_bytes", peak.swapped as f64);
    f.set("zmig_peak_trips_bytes", peak.referencing as f64);
    f.set("zmig_disk_samples", peak.samples as f64);
    record_sizes(&mut conn, f, "zmig_", "after")?;
    f.set(
        "swap_peak_disk_ratio",
        f.at("zmig_peak_cars_bytes") / f.at("cars_bytes_before"),
    );
    f.set(
        "zmig_peak_trips_ratio",
        f.at("zmig_peak_trips_bytes") / f.at("trips_bytes_before"),
    );
    f.set(
        "zmig_trips_end_ratio",
        f.at("zmig_trips_bytes_after") / f.at("baseline_trips_bytes_after"),
    );
    Ok(())
}

/// `<side>cars_bytes_<when>` and `<side>trips_bytes_<when>`: the disk each table uses, with its
/// indexes and TOAST.
fn record_sizes(conn: &mut PgConnection, f: &mut Figures, side: &str, when: &str) -> Result<()> {
    for table in ["cars", "trips"] {
        let bytes = db::relation_bytes(conn, table)?;
        f.set(&format!("{side}{table}_bytes_{when}"), bytes as f64);
    }
    Ok(())
}

/// Runs `step` with `probe` beside it: what it returned, how long it took (s), what the probe saw.
fn probed_step<T>(
    probe: Probe,
    url: &str,
    probe_car: i64,
    step: impl FnOnce() -> Result<T>,
) -> Result<(T, f64, Probed)> {
    let ((out, took), probed) = probe.around(url, probe_car, || {
        let started = Instant::now();
        let out = step()?;
        Ok((out, started.elapsed().as_secs_f64()))
    })?;
    Ok((out, took, probed))
}

/// Both keys are bigint, the foreign key is back and validated, and no row went missing.
fn check_widened(conn: &mut PgConnection, rows: i64, when: &str) -> Result<()> {
    let checks = [
        (
            "columns widened to bigint",
            "SELECT count(*) AS n FROM information_schema.columns
             WHERE table_schema = current_schema() AND data_type = 'bigint'
               AND ((table_name = 'cars' AND column_name = 'id') OR (table_name = 'trips' AND column_name = 'car_id'))",
            2,
        ),
        (
            "validated foreign keys from trips to cars",
            "SELECT count(*) AS n FROM pg_constraint
             WHERE contype = 'f' AND conrelid = 'trips'::regclass AND confrelid = 'cars'::regclass AND convalidated",
            1,
        ),
        ("cars", "SELECT count(*) AS n FROM cars", rows),
        ("trips", "SELECT count(*) AS n FROM trips", rows),
    ];
    for (what, sql, expected) in checks {
        let n = db::count(conn, sql)?;
        if n != expected {
            bail!("{when}: {n} {what}, expected {expected}");
        }
    }
    Ok(())
}

fn lines(m: &Figures) -> Vec<Line> {
    vec![
        Line::new("time to widen cars.id and trips.car_id", Unit::Seconds)
            .baseline(m.at("baseline_s"))
            .zmig(m.at("zmig_total_s"))
            .ratio("swap_ratio", m.at("swap_ratio")),
        Line::new("  ALTER TABLE cars", Unit::Seconds).baseline(m.at("baseline_alter_cars_s")),
        Line::new("  ALTER TABLE trips", Unit::Seconds).baseline(m.at("baseline_alter_trips_s")),
        Line::new("  prepare", Unit::Seconds).zmig(m.at("zmig_prepare_s")),
        Line::new("  move", Unit::Seconds).zmig(m.at("zmig_move_s")),
        Line::new("  finalize", Unit::Seconds).zmig(m.at("zmig_finalize_s")),
        Line::new("cars per second (ALTER; move)", Unit::PerSecond)
            .baseline(m.at("baseline_rows_per_s"))
            .zmig(m.at("zmig_move_rows_per_s")),
        Line::new("longest wait of the probe", Unit::Millis)
            .baseline(m.at("baseline_probe_ms"))
            .zmig(m.at("swap_max_lock_ms"))
            .key("swap_max_lock_ms"),
        Line::new("  during prepare", Unit::Millis).zmig(m.at("zmig_prepare_lock_ms")),
        Line::new("  during finalize", Unit::Millis).zmig(m.at("zmig_finalize_lock_ms")),
        Line::new("  context: during the move", Unit::Millis).zmig(m.at("zmig_move_probe_ms")),
        Line::new("  ACCESS EXCLUSIVE held by the ALTER", Unit::Millis)
            .baseline(m.at("baseline_lock_ms")),
        Line::new("disk used by cars before", Unit::Bytes)
            .baseline(m.at("cars_bytes_before"))
            .zmig(m.at("zmig_bytes_before")),
        Line::new("  at the end of the move (old, temp, new)", Unit::Bytes)
            .zmig(m.at("zmig_bytes_after")),
        Line::new("  largest while it runs", Unit::Bytes)
            .baseline(m.at("baseline_peak_cars_bytes"))
            .zmig(m.at("zmig_peak_cars_bytes")),
        Line::new("  largest / before", Unit::Ratio)
            .baseline(m.at("baseline_peak_disk_ratio"))
            .zmig(m.at("swap_peak_disk_ratio"))
            .key("swap_peak_disk_ratio"),
        Line::new("  after", Unit::Bytes)
            .baseline(m.at("baseline_cars_bytes_after"))
            .zmig(m.at("zmig_cars_bytes_after")),
        Line::new("disk used by trips before", Unit::Bytes)
            .baseline(m.at("trips_bytes_before"))
            .zmig(m.at("trips_bytes_before")),
        Line::new("  largest while it runs", Unit::Bytes)
            .baseline(m.at("baseline_peak_trips_bytes"))
            .zmig(m.at("zmig_peak_trips_bytes")),
        Line::new("  after", Unit::Bytes)
            .baseline(m.at("baseline_trips_bytes_after"))
            .zmig(m.at("zmig_trips_bytes_after"))
            .ratio("zmig_trips_end_ratio", m.at("zmig_trips_end_ratio")),
        Line::new("move batches", Unit::Count).zmig(m.at("zmig_move_batches")),
        Line::new("trips synced by the move", Unit::Count).zmig(m.at("zmig_refs_synced")),
        Line::new("migrations retried after a lock timeout", Unit::Count)
            .zmig(m.at("zmig_migration_retries")),
    ]
}
