//! `concurrent`: what a running backfill does to the application's write latency.
//!
//! Two connections write in a closed loop (40 % moved-column updates, 40 % other-column updates,
//! 20 % inserts, on owners picked uniformly) with the dual_write migration applied. During: the
//! zmig backfill runs beside them with its default throttle settings, from an empty new table;
//! the writers stop when it finishes or after `--seconds`, and it is stopped then. Baseline: the
//! same writes for the same time without a backfill. The figure that counts is the p99 write
//! latency during the backfill over the p99 without; the backfill's own rate under that load is
//! reported beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use zmig_runtime::backfill::{backfill, BackfillOptions, BackfillReport};

use crate::db;
use crate::fixture::{Caterers, MIGRATION};
use crate::report::{quantile, thousands, Figures, Line, Report, Unit};
use crate::workload::{Mix, Outcome, Writer};
use crate::{environment, notes, progress, Params};

const WRITERS: u64 = 2;

pub fn run(params: &Params) -> Result<Report> {
    let fixture = Caterers::seeded(params.rows)?;
    let mut conn = fixture.db.conn()?;
    fixture.apply_next(&mut conn, "expand")?;
    fixture.apply_next(&mut conn, "dual_write")?;
    let environment = environment(&mut conn)?;
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(Writer::new(fixture.db.conn()?, 0, params.rows));
    }
    let rows = params.rows;

    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        let mut f = Figures::default();
        // Different writes on each side: an update that rewrites the value an earlier one wrote
        // changes nothing, and the trigger rightly skips it.
        let seed = round as u64 * 16;

        // During a backfill.
        fixture.reset_new_table(&mut conn)?;
        db::checkpoint(&mut conn);
        let stop = Arc::new(AtomicBool::new(false));
        let finished = AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs_f64(params.seconds);
        let (during, copied, copy_time) = std::thread::scope(|scope| -> Result<_> {
            let url = &fixture.db.url;
            let options = BackfillOptions {
                stop: Some(stop.clone()),
                ..params.backfill_options()
            };
            let finished = &finished;
            let copier = scope.spawn(move || {
                let started = Instant::now();
                let result = backfill(url, MIGRATION, &options);
                finished.store(true, Ordering::SeqCst);
                (result, started.elapsed())
            });
            let outcome = write_together(&mut writers, seed, deadline, finished);
            stop.store(true, Ordering::SeqCst);
            let (copied, took) = copier
                .join()
                .map_err(|_| anyhow!("the backfill thread panicked"))?;
            Ok((outcome?, copied?, took))
        })?;
        let window = during.elapsed;

        // The same writes, as long, without a backfill.
        fixture.reset_new_table(&mut conn)?;
        db::checkpoint(&mut conn);
        let never = AtomicBool::new(false);
        let baseline = write_together(&mut writers, seed + 8, Instant::now() + window, &never)?;

        record(&mut f, "baseline", &baseline);
        record(&mut f, "during", &during);
        f.set("window_s", window.as_secs_f64());
        f.set(
            "concurrent_p99_ratio",
            f.at("during_p99_ms") / f.at("baseline_p99_ms"),
        );
        f.set(
            "backfill_rows_per_s",
            copied.owners as f64 / copy_time.as_secs_f64(),
        );
        f.set("backfill_owners", copied.owners as f64);
        f.set("backfill_finished", f64::from(u8::from(copied.finished)));
        f.set("backfill_backoffs", copied.backoffs as f64);
        f.set("backfill_batches", copied.batches as f64);
        f.set("backfill_yields", copied.yields as f64);
        progress(&format!(
            "round {round}/{}: p99 {:.2} ms without, {:.2} ms during a backfill that copied {} of {} owners at {} rows/s",
            params.rounds,
            f.at("baseline_p99_ms"),
            f.at("during_p99_ms"),
            thousands(copied.owners),
            thousands(rows),
            thousands(f.at("backfill_rows_per_s") as i64),
        ));
        rounds.push(f);
        check_report(&copied)?;
    }

    let m = Figures::medians(&rounds);
    let lines = vec![
        Line::new("p99 write latency", Unit::Millis)
            .baseline(m.at("baseline_p99_ms"))
            .zmig(m.at("during_p99_ms"))
            .ratio("concurrent_p99_ratio", m.at("concurrent_p99_ratio")),
        Line::new("p50 write latency", Unit::Millis)
            .baseline(m.at("baseline_p50_ms"))
            .zmig(m.at("during_p50_ms")),
        Line::new("p99.9 write latency", Unit::Millis)
            .baseline(m.at("baseline_p999_ms"))
            .zmig(m.at("during_p999_ms")),
        Line::new("longest write", Unit::Millis)
            .baseline(m.at("baseline_max_ms"))
            .zmig(m.at("during_max_ms")),
        Line::new("mean write latency", Unit::Millis)
            .baseline(m.at("baseline_mean_ms"))
            .zmig(m.at("during_mean_ms")),
        Line::new("writes per second", Unit::PerSecond)
            .baseline(m.at("baseline_per_s"))
            .zmig(m.at("during_per_s")),
        Line::new("backfill rows per second under load", Unit::PerSecond)
            .zmig(m.at("backfill_rows_per_s")),
        Line::new("backfill owners copied in the window", Unit::Count)
            .zmig(m.at("backfill_owners")),
        Line::new("backfill batches", Unit::Count).zmig(m.at("backfill_batches")),
        Line::new("  of which followed by a yield", Unit::Count).zmig(m.at("backfill_yields")),
        Line::new("window", Unit::Seconds)
            .baseline(m.at("window_s"))
            .zmig(m.at("window_s")),
    ];
    Ok(Report {
        benchmark: "concurrent".to_owned(),
        setup: format!(
            "{} caterers, {WRITERS} writers, up to {} s per side, {} round(s), medians",
            thousands(params.rows),
            params.seconds,
            params.rounds
        ),
        parameters: params.figures(),
        environment,
        figures: m,
        rounds,
        lines,
        notes: notes(params, vec![
            "writers: 2 connections, closed loop, 40 % moved-column updates, 40 % other updates, 20 % inserts, dual_write applied on both sides".to_owned(),
            "zmig column: while zmig_runtime::backfill::backfill runs (default options unless a note below says otherwise; stopped at the end of the window); baseline: no backfill, same window".to_owned(),
            "ratio: p99 during / p99 without (lower is better; 1 = unnoticed), median of the rounds' ratios".to_owned(),
        ]),
    })
}

/// Every writer in its own thread, all until `deadline` or `stop`.
fn write_together(
    writers: &mut [Writer],
    seed: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let outcomes: Vec<Result<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter_mut()
            .enumerate()
            .map(|(n, writer)| {
                writer.reseed(seed + n as u64);
                scope.spawn(move || writer.run(Mix::Mixed, deadline, stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a writer panicked")))
            })
            .collect()
    });
    Ok(Outcome::merge(
        outcomes.into_iter().collect::<Result<Vec<_>>>()?,
    ))
}

fn record(f: &mut Figures, side: &str, outcome: &Outcome) {
    let latencies = outcome.sorted_latencies();
    f.set(&format!("{side}_p50_ms"), quantile(&latencies, 0.5));
    f.set(&format!("{side}_p99_ms"), quantile(&latencies, 0.99));
    f.set(&format!("{side}_p999_ms"), quantile(&latencies, 0.999));
    f.set(
        &format!("{side}_max_ms"),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    f.set(
        &format!("{side}_mean_ms"),
        latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
    );
    f.set(&format!("{side}_per_s"), outcome.per_second());
    f.set(&format!("{side}_retries"), outcome.retries as f64);
}

/// A backfill that copied nothing in its window measured nothing.
fn check_report(report: &BackfillReport) -> Result<()> {
    if report.owners == 0 {
        return Err(anyhow!(
            "the backfill copied nothing during the window: {report:?}"
        ));
    }
    Ok(())
}
