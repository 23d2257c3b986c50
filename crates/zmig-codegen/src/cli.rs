//! `cargo xtask zmig plan | generate [--check]`: the commands that need no database. The
//! command line itself (`zmig_runtime::cli::main`) adds the ones that do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::migrations::{self, FolderState};
use crate::plan::{extract_phases, Ships};
use crate::project::{self, Project};
use crate::shim;

#[derive(Subcommand, Debug)]
pub enum ZmigCommand {
    /// Print every phase of every zmig migration: what each deploy ships, where the code is now,
    /// and what must be true before moving on.
    Plan {
        #[command(flatten)]
        target: Target,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the Diesel migration folders for every phase up to each model's `stage`.
    ///
    /// Existing folders are never rewritten; advancing `stage` adds the next ones. A folder edited
    /// by hand, or stale because the attribute or schema changed, is reported and nothing is
    /// written until it is resolved. At `write_new` it also keeps the moved columns out of
    /// `schema.rs` with a patch for `diesel print-schema` (the ignored-column shim).
    Generate {
        #[command(flatten)]
        target: Target,
        /// Write nothing; exit non-zero when a folder is missing, stale or edited, or the
        /// ignored-column shim is not as generate leaves it (for CI).
        #[arg(long)]
        check: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// Path to the Cargo.toml of the crate to work on (default: every workspace member that
    /// depends on zmig-runtime or zmig-derive).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
}

pub fn run(command: ZmigCommand, out: &mut dyn Write) -> Result<ExitCode> {
    match command {
        ZmigCommand::Plan { target, json } => {
            let projects = load_all(&target)?;
            print_plan(&projects, json, out)?;
            Ok(ExitCode::SUCCESS)
        }
        ZmigCommand::Generate { target, check } => {
            let projects = load_all(&target)?;
            let timestamp = chrono::Utc::now().format("%Y-%m-%d-%H%M%S").to_string();
            let outcome = generate(&projects, check, &timestamp, out)?;
            Ok(if outcome.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Every crate `target` names, loaded; all errors, with file and line, or the projects.
pub fn load_all(target: &Target) -> Result<Vec<Project>> {
    let crates = zmig_crates(target.manifest_path.as_deref())?;
    let cwd = std::env::current_dir()?;
    let mut projects = Vec::new();
    let mut errors = Vec::new();
    for root in crates {
        match project::load(&root) {
            Ok(project) => projects.push(project),
            Err(project::ProjectErrors(list)) => errors.extend(list.into_iter().map(|mut e| {
                if e.file.is_relative() {
                    e.file = root.join(&e.file);
                }
                e.file = e
                    .file
                    .strip_prefix(&cwd)
                    .map(Path::to_owned)
                    .unwrap_or(e.file);
                e
            })),
        }
    }
    if !errors.is_empty() {
        bail!("{}\nnothing was written", project::ProjectErrors(errors));
    }
    Ok(projects)
}

/// The crates to work on: the one `--manifest-path` names, or every workspace member that
/// depends on zmig.
fn zmig_crates(manifest_path: Option<&Path>) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args(["metadata", "--format-version", "1", "--no-deps"]);
    if let Some(path) = manifest_path {
        if !path.is_file() {
            bail!("--manifest-path {}: no such file", path.display());
        }
        command.arg("--manifest-path").arg(path);
    }
    let output = command.output().context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading `cargo metadata` output")?;
    let packages: Vec<(PathBuf, bool)> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|package| {
            let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
            // A normal (not dev or build) dependency on zmig.
            let uses_zmig = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| {
                    matches!(d["name"].as_str(), Some("zmig-runtime" | "zmig-derive"))
                        && d["kind"].is_null()
                });
            (manifest, uses_zmig)
        })
        .collect();
    // A package manifest names that crate; a virtual workspace manifest (or none) means every
    // member that uses zmig.
    let wanted = manifest_path.map(|p| p.canonicalize()).transpose()?;
    let named: Vec<&PathBuf> = packages
        .iter()
        .filter(|(manifest, _)| wanted.is_some() && manifest.canonicalize().ok() == wanted)
        .map(|(manifest, _)| manifest)
        .collect();
    let chosen: Vec<&PathBuf> = if named.is_empty() {
        packages
            .iter()
            .filter(|(_, uses)| *uses)
            .map(|(manifest, _)| manifest)
            .collect()
    } else {
        named
    };
    let mut roots: Vec<PathBuf> = chosen
        .into_iter()
        .map(|m| m.parent().map(Path::to_owned).unwrap_or_default())
        .collect();
    roots.sort();
    Ok(roots)
}

fn print_plan(projects: &[Project], json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        let all: Vec<serde_json::Value> = projects
            .iter()
            .flat_map(|p| p.extracts.iter().map(move |m| (p, m)))
            .map(|(p, m)| {
                serde_json::json!({
                    "crate": p.root,
                    "migration": m.extract,
                    "phases": extract_phases(&m.extract),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    let mut any = false;
    for project in projects {
        for model in &project.extracts {
            any = true;
            let x = &model.extract;
            writeln!(
                out,
                "{}: extract ({}) from {} into {}\n  declared on `{}` in {}; code is at stage `{}` ({} of 6)\n",
                x.name,
                x.columns.iter().map(|c| c.source.as_str()).collect::<Vec<_>>().join(", "),
                x.owner.name,
                x.new_table.name,
                x.source.model,
                display_path(&project.root.join(&x.source.file)),
                x.stage,
                x.stage.number()
            )?;
            for phase in extract_phases(x) {
                let status = match phase.stage.cmp(&x.stage) {
                    std::cmp::Ordering::Less => "shipped",
                    std::cmp::Ordering::Equal => "current",
                    std::cmp::Ordering::Greater if phase.stage.number() == x.stage.number() + 1 => {
                        "next"
                    }
                    std::cmp::Ordering::Greater => "later",
                };
                let ships = match phase.ships {
                    Ships::Migration => "migration",
                    Ships::Code => "code deploy",
                    Ships::MigrationAndCode => "migration, then code deploy",
                    Ships::RuntimeTask => "runtime task",
                };
                writeln!(
                    out,
                    "  {}. {:<10} [{status}] ships: {ships}",
                    phase.stage.number(),
                    phase.stage.as_str()
                )?;
                writeln!(out, "     {}", phase.summary)?;
                writeln!(out, "     before moving on: {}", phase.gate)?;
            }
            writeln!(out)?;
        }
    }
    if !any {
        writeln!(out, "no #[derive(Zmig)] models found")?;
    }
    Ok(())
}

/// `path` relative to the current directory when it is below it, as cargo prints paths.
pub fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What `generate` found and did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<PathBuf>,
    pub up_to_date: usize,
    pub missing: Vec<String>,
    pub problems: Vec<String>,
    /// Files of the ignored-column shim (`schema.rs`, zmig's schema patch, `diesel.toml`) that
    /// were written or removed.
    pub shim_written: Vec<PathBuf>,
    /// Shim files that are not as `generate` leaves them (what `--check` reports; emptied by a
    /// write).
    pub shim_pending: Vec<PathBuf>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.missing.is_empty() && self.shim_pending.is_empty()
    }
}

/// Compares every planned folder and the ignored-column shim ([`shim`]) with the disk; writes the
/// missing folders and the shim's files unless `check` or any folder is stale or edited, or the
/// shim cannot be built (then it writes nothing).
pub fn generate(
    projects: &[Project],
    check: bool,
    timestamp: &str,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut to_write = Vec::new();
    let mut shim_changes = Vec::new();
    for project in projects {
        for model in &project.extracts {
            let ahead = migrations::folders_past_stage(&project.migrations_dir, &model.extract)
                .with_context(|| format!("reading {}", project.migrations_dir.display()))?;
            for (stage, path) in ahead {
                outcome.problems.push(format!(
                    "{}: phase `{stage}` is generated but `{}` is at stage `{}`; it would run on the next deploy.\n  \
                     Set the stage back to `{stage}`, or revert that migration where it ran and delete the folder.",
                    display_path(&path),
                    model.extract.source.model,
                    model.extract.stage
                ));
            }
            let mut later_exists = false;
            for planned in model.folders().into_iter().rev() {
                let state = migrations::folder_state(&project.migrations_dir, &planned)
                    .with_context(|| format!("reading {}", project.migrations_dir.display()))?;
                match state {
                    FolderState::UpToDate(_) => {
                        later_exists = true;
                        outcome.up_to_date += 1;
                    }
                    FolderState::Missing if later_exists => outcome.problems.push(format!(
                        "{}: the folder for phase `{}` is missing but later phases exist; restore it from version control",
                        planned.suffix, planned.stage
                    )),
                    FolderState::Missing => {
                        outcome.missing.push(planned.suffix.clone());
                        to_write.push((project.migrations_dir.clone(), planned));
                    }
                    FolderState::Stale(path, files) => {
                        later_exists = true;
                        outcome.problems.push(format!(
                            "{}: {} no longer match what zmig generates from the attribute and schema.\n  \
                             If this migration has not run anywhere, delete the folder and generate again; if it has, \
                             put the attribute back as it was.",
                            display_path(&path),
                            files.join(", ")
                        ))
                    }
                    FolderState::EditedByHand(path, files) => {
                        later_exists = true;
                        outcome.problems.push(format!(
                            "{}: {} edited by hand (checksum mismatch); zmig will not overwrite it.\n  \
                             Undo the edit, or delete the folder to have it generated again.",
                            display_path(&path),
                            files.join(", ")
                        ))
                    }
                }
            }
        }
        match shim::plan(project) {
            Ok(plan) => {
                for note in &plan.notes {
                    writeln!(out, "warning: {note}")?;
                }
                outcome
                    .shim_pending
                    .extend(plan.changes.iter().map(|c| c.path.clone()));
                shim_changes.extend(plan.changes);
            }
            Err(problems) => outcome.problems.extend(problems),
        }
    }
    for problem in &outcome.problems {
        writeln!(out, "error: {problem}")?;
    }
    if check {
        for missing in &outcome.missing {
            writeln!(
                out,
                "error: missing migration folder `*_{missing}`: run `cargo xtask zmig generate`"
            )?;
        }
        for change in &shim_changes {
            let state = if change.contents.is_some() {
                "is not up to date"
            } else {
                "should be gone"
            };
            writeln!(
                out,
                "error: {} {state} ({}): run `cargo xtask zmig generate`",
                display_path(&change.path),
                change.what
            )?;
        }
        if outcome.ok() {
            writeln!(out, "{} migration folders up to date", outcome.up_to_date)?;
        }
        return Ok(outcome);
    }
    if !outcome.problems.is_empty() {
        writeln!(out, "nothing was written")?;
        return Ok(outcome);
    }
    // Folders are written in phase order; each is complete before the next starts, and each
    // gets a version of its own (two migrations may reach expand in the same run).
    to_write.sort_by_key(|(_, planned)| planned.stage);
    let mut versions: std::collections::HashMap<PathBuf, migrations::Versions> = Default::default();
    for (dir, planned) in &to_write {
        if !versions.contains_key(dir) {
            let after = migrations::Versions::after_existing(dir, timestamp)
                .with_context(|| format!("reading {}", dir.display()))?;
            versions.insert(dir.clone(), after);
        }
        let dir_versions = versions.get_mut(dir).expect("inserted above");
        let path = migrations::write_folder(dir, planned, dir_versions)
            .with_context(|| format!("writing into {}", dir.display()))?;
        writeln!(out, "wrote {}", display_path(&path))?;
        outcome.written.push(path);
    }
    outcome.missing.clear();
    // The shim after the folders: schema.rs may only leave the columns out once write_new's
    // folder is there to make them nullable.
    for change in &shim_changes {
        shim::apply(std::slice::from_ref(change))
            .with_context(|| format!("writing {}", display_path(&change.path)))?;
        let verb = if change.contents.is_some() {
            "wrote"
        } else {
            "removed"
        };
        writeln!(
            out,
            "{verb} {} ({})",
            display_path(&change.path),
            change.what
        )?;
        outcome.shim_written.push(change.path.clone());
    }
    outcome.shim_pending.clear();
    if outcome.written.is_empty() && outcome.shim_written.is_empty() {
        writeln!(
            out,
            "{} migration folders up to date; nothing to write",
            outcome.up_to_date
        )?;
    }
    Ok(outcome)
}
