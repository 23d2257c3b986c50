//! `status`: what each migration's code, folders, backfill or move, verification and last run
//! are. It is gathered once into [`MigrationStatus`] values, then written as text for people or,
//! with `--json`, as one JSON document for tooling, so the two never say different things.

use std::io::Write;

use anyhow::Result;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::{json, Value};
use zmig_codegen::migrations;
use zmig_codegen::project::Project;
use zmig_codegen::spec::Stage;

use crate::backfill::{self, BackfillStatus};
use crate::disk::{DiskEstimate, FreeDisk};
use crate::run_log::{self, LastRun};
use crate::swap::{self, SwapStatus};
use crate::verify;

/// Events of the last run `status` shows: its start and the latest ones.
const STATUS_EVENTS: usize = 10;

/// One migration as `status` reports it.
pub(super) struct MigrationStatus {
    pub name: String,
    /// What the workspace's code says; `None` for a swap the database has and no crate of the
    /// workspace declares (any more).
    pub code: Option<Code>,
    pub work: Work,
    /// The last verification: rows found differing (an extract) or with problems (a swap), and
    /// when. `None` where verify has nothing to check.
    pub verified: Option<Option<(i64, String)>>,
    pub last_run: Option<LastRun>,
}

/// A migration's code: its stage and its folders.
pub(super) struct Code {
    pub strategy: &'static str,
    pub stage: Stage,
    pub folders: Vec<Folder>,
}

/// One migration folder of a phase up to the code's stage.
pub(super) struct Folder {
    pub phase: Stage,
    /// `None` until `generate` wrote it.
    pub folder: Option<String>,
    pub applied: bool,
}

/// The runtime task of a migration.
pub(super) enum Work {
    /// An extract's backfill, `None` until one started.
    Backfill(Option<BackfillStatus>),
    /// A prepared swap's move: where its rows are.
    Move(SwapStatus),
    /// A declared swap the database has not prepared, or whose finalize has run.
    MoveNot { finalized: bool },
}

/// Everything `status` reports, in the order it prints it: the workspace's migrations, then the
/// swaps the database has that no crate declares.
pub(super) fn gather(
    projects: &[Project],
    conn: &mut PgConnection,
) -> Result<Vec<MigrationStatus>> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let applied: Vec<String> =
        match diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load::<Version>(conn)
        {
            Ok(rows) => rows.into_iter().map(|v| v.version).collect(),
            Err(_) => Vec::new(),
        };
    let mut all = Vec::new();
    for project in projects {
        for migration in project.migrations() {
            let mut folders = Vec::new();
            for planned in &migration.folders {
                let folder = migrations::existing_folder(&project.migrations_dir, planned)?
                    .and_then(|path| path.file_name().map(|f| f.to_string_lossy().into_owned()));
                let applied = folder.as_deref().is_some_and(|folder| {
                    let version: String = folder
                        .split('_')
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .filter(char::is_ascii_digit)
                        .collect();
                    applied.contains(&version)
                });
                folders.push(Folder {
                    phase: planned.stage,
                    folder,
                    applied,
                });
            }
            let is_swap = project.swaps.iter().any(|m| m.swap.name == migration.name);
            let work = if !is_swap {
                Work::Backfill(backfill::status(conn, migration.name)?)
            } else if let Some(status) = swap::status(conn, migration.name)? {
                Work::Move(status)
            } else {
                Work::MoveNot {
                    finalized: folders
                        .iter()
                        .any(|f| f.applied && f.phase == Stage::Finalize),
                }
            };
            let code = Code {
                strategy: if is_swap { "swap" } else { "extract" },
                stage: migration.stage,
                folders,
            };
            all.push(of(conn, migration.name.to_owned(), Some(code), work)?);
        }
    }
    for name in swap::swaps(conn)? {
        if projects
            .iter()
            .any(|p| p.swaps.iter().any(|m| m.swap.name == name))
        {
            continue;
        }
        if let Some(status) = swap::status(conn, &name)? {
            all.push(of(conn, name, None, Work::Move(status))?);
        }
    }
    Ok(all)
}

/// A migration's status, its verification and last run read from the database.
fn of(
    conn: &mut PgConnection,
    name: String,
    code: Option<Code>,
    work: Work,
) -> Result<MigrationStatus> {
    let verified = match work {
        Work::MoveNot { .. } => None,
        _ => Some(verify::last_verification(conn, &name)?),
    };
    let last_run = run_log::last_run(conn, &name, STATUS_EVENTS)?;
    Ok(MigrationStatus {
        name,
        code,
        work,
        verified,
        last_run,
    })
}

/// `status` for people.
pub(super) fn write_text(all: &[MigrationStatus], out: &mut dyn Write) -> Result<()> {
    for m in all {
        match &m.code {
            Some(code) => {
                writeln!(
                    out,
                    "{}: code at stage `{}` ({} of {})",
                    m.name,
                    code.stage,
                    code.stage.number(),
                    code.stage.strategy_stages().len()
                )?;
                for f in &code.folders {
                    let state = match (&f.folder, f.applied) {
                        (None, _) => "not generated".to_owned(),
                        (Some(folder), true) => format!("applied ({folder})"),
                        (Some(folder), false) => format!("pending ({folder})"),
                    };
                    writeln!(out, "  migration {:<11} {state}", f.phase.as_str())?;
                }
            }
            None => writeln!(
                out,
                "{}: swap, prepare applied (not declared in this workspace)",
                m.name
            )?,
        }
        let found = match &m.work {
            Work::Backfill(None) => {
                writeln!(out, "  backfill              not started")?;
                "rows differing"
            }
            Work::Backfill(Some(status)) => {
                writeln!(
                    out,
                    "  backfill              {}: {:.1}% of keys, {} owners read, {} rows written",
                    backfill_state(status),
                    backfill_percent(status),
                    status.owners,
                    status.written
                )?;
                "rows differing"
            }
            Work::Move(status) if status.direction == swap::MoveDirection::Back => {
                writeln!(
                    out,
                    "  move                  {}: {}",
                    move_back_state(&m.name, status),
                    status.progress.summary()
                )?;
                "rows with problems"
            }
            Work::Move(status) => {
                let p = &status.progress;
                writeln!(
                    out,
                    "  move                  {}: {}",
                    move_state(status),
                    p.summary()
                )?;
                writeln!(out, "  disk                  {}", status.disk.summary())?;
                if p.refs_left == 0 {
                    writeln!(out, "  references            synced")?;
                } else {
                    writeln!(
                        out,
                        "  references            about {} rows left to sync",
                        p.refs_left
                    )?;
                }
                "rows with problems"
            }
            Work::MoveNot { finalized } => {
                let state = if *finalized {
                    "done: finalize has run, the table has its new types"
                } else {
                    "not started (prepare not applied)"
                };
                writeln!(out, "  move                  {state}")?;
                ""
            }
        };
        match &m.verified {
            None => {}
            Some(None) => writeln!(out, "  verify                never run")?,
            Some(Some((count, when))) => {
                writeln!(out, "  verify                {count} {found} (at {when})")?
            }
        }
        if let Some(run) = &m.last_run {
            write_run(run, out)?;
        }
    }
    Ok(())
}

/// The last run as its log has it (times UTC): how it ended, its `started` event and its latest
/// ones, so an operator sees what happened after the terminal is gone.
fn write_run(run: &LastRun, out: &mut dyn Write) -> Result<()> {
    let time = |event: &run_log::RunEvent| event.at.format("%Y-%m-%d %H:%M:%S").to_string();
    let task = run.events.first().map_or("run", |e| e.task.as_str());
    let state = match (run.end(), run.events.last()) {
        (Some(end), _) => format!("{} at {} UTC", end.kind, time(end)),
        (None, Some(last)) => format!(
            "no end recorded: still running, or its process was killed (last event at {} UTC)",
            time(last)
        ),
        (None, None) => "no events".to_owned(),
    };
    writeln!(out, "  last {task:<16} run {}: {state}", run.run)?;
    for (n, event) in run.events.iter().enumerate() {
        if n == 1 && run.omitted > 0 {
            writeln!(out, "    … {} events not shown", run.omitted)?;
        }
        let worker = event
            .worker
            .as_deref()
            .map(|w| format!("worker {w}: "))
            .unwrap_or_default();
        writeln!(
            out,
            "    {}  {:<13}  {worker}{}",
            time(event),
            event.kind,
            event.detail
        )?;
    }
    Ok(())
}

fn backfill_state(status: &BackfillStatus) -> &'static str {
    if status.finished {
        "complete"
    } else if status.paused {
        "paused"
    } else {
        "in progress or stopped"
    }
}

fn backfill_percent(status: &BackfillStatus) -> f64 {
    if status.keys_total > 0 {
        100.0 * status.keys_done as f64 / status.keys_total as f64
    } else {
        100.0
    }
}

fn move_state(status: &SwapStatus) -> &'static str {
    let p = &status.progress;
    if p.old_rows == 0 && p.temp_rows == 0 {
        "complete"
    } else if p.old_rows == 0 && p.temp_rows > swap::FINALIZE_MOVES_AT_MOST {
        "old table empty, but more rows wait in temp than finalize moves (10,000): run the move again, or with --follow until finalize"
    } else if p.old_rows == 0 {
        "old table empty; rows inserted since wait in temp for finalize"
    } else if status.paused {
        "paused"
    } else {
        "in progress or stopped"
    }
}

/// A swap moving back (`backfill <name> --back`): whether the revert of prepare may run.
fn move_back_state(name: &str, status: &SwapStatus) -> String {
    let p = &status.progress;
    if p.new_rows == 0 && p.temp_rows <= swap::FINALIZE_MOVES_AT_MOST {
        "moved back: ready for `diesel migration revert` of the prepare migration (it moves the rows left in temp under its brief lock)".to_owned()
    } else if status.paused {
        "move back paused".to_owned()
    } else {
        format!(
            "move back in progress or stopped (run `{} backfill {name} --back` to resume)",
            zmig_codegen::command_name()
        )
    }
}

/// `status --json`: one object, `{"migrations": [...]}`, each migration with the same facts the
/// text shows (README's "status --json" documents the fields).
pub(super) fn to_json(all: &[MigrationStatus]) -> Value {
    let migrations: Vec<Value> = all
        .iter()
        .map(|m| {
            let code = m.code.as_ref().map(|code| {
                json!({
                    "strategy": code.strategy,
                    "stage": code.stage.as_str(),
                    "stage_number": code.stage.number(),
                    "stages": code.stage.strategy_stages().len(),
                    "folders": code.folders.iter().map(|f| json!({
                        "phase": f.phase.as_str(),
                        "folder": f.folder,
                        "state": match (&f.folder, f.applied) {
                            (None, _) => "not generated",
                            (Some(_), true) => "applied",
                            (Some(_), false) => "pending",
                        },
                    })).collect::<Vec<_>>(),
                })
            });
            let (strategy, work) = match &m.work {
                Work::Backfill(status) => (
                    "extract",
                    json!({"backfill": status.as_ref().map(|s| json!({
                        "state": backfill_state(s),
                        "finished": s.finished,
                        "paused": s.paused,
                        "keys_total": s.keys_total,
                        "keys_done": s.keys_done,
                        "percent_of_keys": backfill_percent(s),
                        "owners_read": s.owners,
                        "rows_written": s.written,
                    }))}),
                ),
                Work::Move(status) => {
                    let p = &status.progress;
                    let back = status.direction == swap::MoveDirection::Back;
                    (
                        "swap",
                        json!({"move": {
                            "state": if back { move_back_state(&m.name, status) } else { move_state(status).to_owned() },
                            "direction": if back { "back" } else { "forward" },
                            "prepared": true,
                            "finalized": false,
                            "paused": status.paused,
                            "old_rows": p.old_rows,
                            "temp_rows": p.temp_rows,
                            "new_rows": p.new_rows,
                            "rows_left": p.rows_left(),
                            "rows_exact": p.exact(),
                            "references_left": p.refs_left,
                            "total_bytes": p.total_bytes,
                            "disk": disk_json(&status.disk),
                        }}),
                    )
                }
                Work::MoveNot { finalized } => (
                    "swap",
                    json!({"move": {
                        "state": if *finalized { "done" } else { "not started" },
                        "prepared": false,
                        "finalized": finalized,
                    }}),
                ),
            };
            let mut object = json!({
                "name": m.name,
                "strategy": strategy,
                "declared": m.code.is_some(),
                "code": code,
                "verify": m.verified.as_ref().map(|v| match v {
                    None => json!({"run": false}),
                    Some((count, when)) => json!({"run": true, "rows_with_problems": count, "at": when}),
                }),
                "last_run": m.last_run.as_ref().map(|run| json!({
                    "run": run.run,
                    "ended": run.end().map(|e| e.kind.clone()),
                    "events_omitted": run.omitted,
                    "events": run.events.iter().map(|e| json!({
                        "at": e.at.to_rfc3339(),
                        "task": e.task,
                        "kind": e.kind,
                        "worker": e.worker,
                        "rows": e.rows,
                        "batches": e.batches,
                        "detail": e.detail,
                    })).collect::<Vec<_>>(),
                })),
            });
            if let (Value::Object(object), Value::Object(work)) = (&mut object, work) {
                object.extend(work);
            }
            object
        })
        .collect();
    json!({ "migrations": migrations })
}

/// The move's disk figures (`status --json`): sizes, the estimate, and free space as measured,
/// assumed or unknown (with why).
fn disk_json(disk: &DiskEstimate) -> Value {
    let (free_bytes, free_source, free_unknown_because) = match &disk.free {
        FreeDisk::Measured { bytes, path } => (Some(*bytes), format!("measured on {path}"), None),
        FreeDisk::Assumed(bytes) => (Some(*bytes), "assumed".to_owned(), None),
        FreeDisk::Unknown(why) => (None, "unknown".to_owned(), Some(why.clone())),
    };
    json!({
        "swapped_bytes": disk.swapped_bytes,
        "referencing_bytes": disk.referencing_bytes,
        "needed_bytes": disk.needed_bytes,
        "free_bytes": free_bytes,
        "free": free_source,
        "free_unknown_because": free_unknown_because,
    })
}
