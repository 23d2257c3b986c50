//! `dual-write`: what zmig's sync triggers cost the application's writes.
//!
//! One connection writes single rows in a closed loop for `--seconds` per kind and side: updates
//! of a moved column (the trigger upserts the address), updates of other columns only (the
//! trigger is not even considered: it fires on `UPDATE OF` the watched columns), and inserts (the
//! trigger inserts the address). The new table is filled first, as it is once the backfill has
//! run. Baseline: the same kind of writes with the dual_write migration reverted (no trigger);
//! zmig: with it applied. Each side's time comes in slices of about a second, interleaved
//! B Z Z B B Z … (starting with the other side every other round), the migration applied or
//! reverted between slices, so that the machine's drift falls on both sides alike.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::db;
use crate::fixture::Caterers;
use crate::report::{quantile, thousands, Figures, Line, Report, Unit};
use crate::workload::{Kind, Mix, Outcome, Writer};
use crate::{environment, progress, Params};

const KINDS: [Kind; 3] = [Kind::Moved, Kind::Other, Kind::Insert];

pub fn run(params: &Params) -> Result<Report> {
    let fixture = Caterers::seeded(params.rows)?;
    let mut conn = fixture.db.conn()?;
    fixture.apply_next(&mut conn, "expand")?;
    // The new table as the backfill leaves it: every owner has its row, so a moved-column
    // update upserts onto an existing row, as during most of the dual-write stage.
    db::exec(
        &mut conn,
        "INSERT INTO addresses (caterer_id, street1, street2, city, state, zip, created_at, updated_at)
         SELECT id, street1, street2, city, state, zip, created_at, updated_at FROM caterers",
    )?;
    db::exec(&mut conn, "VACUUM ANALYZE addresses")?;
    let environment = environment(&mut conn)?;
    let mut writer = Writer::new(fixture.db.conn()?, 0, params.rows);
    let mut triggers = false;
    let never = AtomicBool::new(false);
    // Each side's time per kind comes in slices of about a second, interleaved B Z Z B B Z …
    // (the first side alternating from round to round), so drift in the machine's speed falls
    // on both sides alike.
    let slices = (params.seconds.round() as usize).max(1);
    let slice = Duration::from_secs_f64(params.seconds / slices as f64);
    let mut seed = 0u64;

    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        let mut f = Figures::default();
        for kind in KINDS {
            db::checkpoint(&mut conn);
            let mut sides = [Outcome::default(), Outcome::default()];
            for n in 0..2 * slices {
                let with_triggers = (matches!(n % 4, 1 | 2)) != (round % 2 == 0);
                if with_triggers != triggers {
                    if with_triggers {
                        fixture.apply_next(&mut conn, "dual_write")?;
                    } else {
                        fixture.revert_last(&mut conn, "dual_write")?;
                    }
                    triggers = with_triggers;
                }
                // Never the same writes twice: an update that rewrites the value a previous one
                // wrote changes nothing, and the trigger rightly skips it.
                seed += 1;
                writer.reseed(seed);
                let outcome = writer.run(Mix::Only(kind), Instant::now() + slice, &never)?;
                let side = &mut sides[usize::from(with_triggers)];
                *side = Outcome::merge_in_turn(std::mem::take(side), outcome);
            }
            for (side, outcome) in ["baseline", "zmig"].into_iter().zip(&sides) {
                f.set(
                    &format!("{side}_{}_per_s", kind.key()),
                    outcome.per_second(),
                );
                f.set(
                    &format!("{side}_{}_p50_ms", kind.key()),
                    quantile(&outcome.sorted_latencies(), 0.5),
                );
            }
            let key = kind.key();
            f.set(
                &format!("dual_write_overhead_{key}"),
                1.0 - f.at(&format!("zmig_{key}_per_s")) / f.at(&format!("baseline_{key}_per_s")),
            );
            progress(&format!(
                "round {round}/{}: {key:<6} {} writes/s without the triggers, {} with (overhead {:.3})",
                params.rounds,
                thousands(f.at(&format!("baseline_{key}_per_s")) as i64),
                thousands(f.at(&format!("zmig_{key}_per_s")) as i64),
                f.at(&format!("dual_write_overhead_{key}")),
            ));
        }
        rounds.push(f);
    }

    let m = Figures::medians(&rounds);
    let mut lines = Vec::new();
    for (kind, label) in [
        (Kind::Moved, "updates of a moved column"),
        (Kind::Other, "updates of other columns"),
        (Kind::Insert, "inserts"),
    ] {
        let key = kind.key();
        lines.push(
            Line::new(label, Unit::PerSecond)
                .baseline(m.at(&format!("baseline_{key}_per_s")))
                .zmig(m.at(&format!("zmig_{key}_per_s")))
                .ratio(
                    &format!("dual_write_overhead_{key}"),
                    m.at(&format!("dual_write_overhead_{key}")),
                ),
        );
    }
    for (kind, label) in [
        (Kind::Moved, "  p50 latency, moved"),
        (Kind::Other, "  p50 latency, other"),
        (Kind::Insert, "  p50 latency, insert"),
    ] {
        let key = kind.key();
        lines.push(
            Line::new(label, Unit::Millis)
                .baseline(m.at(&format!("baseline_{key}_p50_ms")))
                .zmig(m.at(&format!("zmig_{key}_p50_ms"))),
        );
    }
    Ok(Report {
        benchmark: "dual-write".to_owned(),
        setup: format!(
            "{} caterers, {} s per kind and side, {} round(s), medians",
            thousands(params.rows),
            params.seconds,
            params.rounds
        ),
        parameters: params.figures(),
        environment,
        figures: m,
        rounds,
        lines,
        notes: vec![
            "one connection, single-row writes in a closed loop, each its own transaction (commit waits for the WAL flush)".to_owned(),
            "baseline: dual_write reverted (no trigger); zmig: dual_write applied; the new table filled; the two interleaved in slices of about a second".to_owned(),
            "ratio: overhead = 1 - zmig writes/s / baseline writes/s (lower is better; 0 = free), median of the rounds' overheads".to_owned(),
        ],
    })
}
