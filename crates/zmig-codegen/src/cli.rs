//! `cargo xtask zmig plan | generate [--check]`: the commands that read the crate. They reach
//! the database only through a [`Catalog`] the caller hands in (to copy exact column types);
//! the command line itself (`zmig_runtime::cli::main`) supplies it and adds the commands that
//! work on the database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::migrations::{self, FolderState};
use crate::plan::{extract_phases, swap_phases, Phase, Ships};
use crate::project::{self, Project};
use crate::schema::Catalog;
use crate::shim;
use crate::spec::Stage;

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
    /// `schema.rs` with a patch for `diesel print-schema` (the ignored-column shim); from a swap's
    /// `prepare` until finalize it keeps print-schema printing `schema.rs` as committed (the view
    /// shim: a filter for zmig's tables and a patch in diesel.toml).
    Generate {
        #[command(flatten)]
        target: Target,
        /// Write nothing; exit non-zero when a folder is missing, stale or edited, or a shim
        /// is not as generate leaves it (for CI).
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

/// Runs `plan` or `generate`. `catalog` is the database `diesel print-schema` reads, when there
/// is one: an extract not generated yet takes its exact column types from it (see
/// [`crate::schema::catalog`]); `generate` refuses to write such an extract's first folder
/// without one.
pub fn run(
    command: ZmigCommand,
    catalog: Option<&mut dyn Catalog>,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    match command {
        ZmigCommand::Plan { target, json } => {
            let projects = load_all(&target, catalog)?;
            print_plan(&projects, json, out)?;
            Ok(ExitCode::SUCCESS)
        }
        ZmigCommand::Generate { target, check } => {
            let projects = load_all(&target, catalog)?;
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
pub fn load_all(target: &Target, mut catalog: Option<&mut dyn Catalog>) -> Result<Vec<Project>> {
    let (crates, workspace_root) = zmig_crates(target.manifest_path.as_deref())?;
    if !crates.is_empty() {
        check_zmig_version(&workspace_root)?;
    }
    let cwd = std::env::current_dir()?;
    let mut projects = Vec::new();
    let mut errors = Vec::new();
    for root in crates {
        match project::load_with(
            &root,
            catalog.as_mut().map(|c| &mut **c as &mut dyn Catalog),
        ) {
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

/// The version of zmig doing the work: `zmig-codegen`'s, which every zmig crate shares (one
/// workspace version).
const ZMIG_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Refuses to work on a workspace whose `Cargo.lock` resolves `zmig-runtime` or `zmig-derive` to
/// another version than this zmig's: the derive and this command read the same attribute, and
/// what one generates must be what the other expects (object names, stages, the shim). An
/// xtask builds from that same lock file, so only an installed `zmig` can differ. Without a
/// lock file (nothing built yet) there is nothing to compare.
fn check_zmig_version(workspace_root: &Path) -> Result<()> {
    let lock = workspace_root.join("Cargo.lock");
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return Ok(());
    };
    let parsed: toml::Table = text
        .parse()
        .with_context(|| format!("reading {}", lock.display()))?;
    let mut others: Vec<String> = parsed
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter(|package| {
            matches!(
                package.get("name").and_then(|n| n.as_str()),
                Some("zmig-runtime" | "zmig-derive")
            )
        })
        .filter_map(|package| package.get("version").and_then(|v| v.as_str()))
        .filter(|version| *version != ZMIG_VERSION)
        .map(str::to_owned)
        .collect();
    others.sort();
    others.dedup();
    if let Some(theirs) = others.first() {
        bail!(
            "{} resolves zmig-runtime {theirs}, but this zmig is {ZMIG_VERSION}: the command and \
             the derive must be one version, since both read the same #[zmig] attribute\n\
             help: install zmig {theirs} (`cargo install --locked zmig --version {theirs}`, or \
             `cargo install --locked --path <checkout>/crates/zmig` from the checkout your crate \
             depends on), or run it as your project's xtask; nothing was written",
            display_path(&lock)
        );
    }
    Ok(())
}

/// The crates to work on (the one `--manifest-path` names, or every workspace member that
/// depends on zmig), and the workspace's root folder.
fn zmig_crates(manifest_path: Option<&Path>) -> Result<(Vec<PathBuf>, PathBuf)> {
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
    let workspace_root = PathBuf::from(metadata["workspace_root"].as_str().unwrap_or("."));
    Ok((roots, workspace_root))
}

fn print_plan(projects: &[Project], json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        let all: Vec<serde_json::Value> = projects
            .iter()
            .flat_map(|p| {
                let extracts = p.extracts.iter().map(move |m| {
                    serde_json::json!({
                        "crate": p.root,
                        "strategy": "extract",
                        "migration": m.extract,
                        "phases": extract_phases(&m.extract),
                    })
                });
                let swaps = p.swaps.iter().map(move |m| {
                    serde_json::json!({
                        "crate": p.root,
                        "strategy": "swap",
                        "migration": m.swap,
                        "phases": swap_phases(&m.swap),
                    })
                });
                extracts.chain(swaps)
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
            let types: Vec<String> = x
                .columns
                .iter()
                .map(|c| format!("{} {}", c.target, c.target_type))
                .collect();
            let whence = if x.exact_types {
                "exact, as read from the database"
            } else {
                "from schema.rs, without modifiers: generate reads the exact ones from the database"
            };
            writeln!(out, "  new columns ({whence}): {}\n", types.join(", "))?;
            print_phases(&extract_phases(x), x.stage, out)?;
        }
        for model in &project.swaps {
            any = true;
            let x = &model.swap;
            let changes: Vec<String> = x
                .columns
                .iter()
                .filter(|c| c.changes())
                .map(|c| format!("{} → {}", c.name, c.new_type))
                .chain(
                    x.references
                        .iter()
                        .map(|r| format!("{}.{} → {}", r.table.name, r.column, r.new_type)),
                )
                .collect();
            writeln!(
                out,
                "{}: swap {} behind a view ({})\n  declared on `{}` in {}; code is at stage `{}` ({} of {})\n",
                x.name,
                x.table.name,
                changes.join(", "),
                x.source.model,
                display_path(&project.root.join(&x.source.file)),
                x.stage,
                x.stage.number(),
                Stage::SWAP.len()
            )?;
            print_phases(&swap_phases(x), x.stage, out)?;
        }
    }
    if !any {
        writeln!(out, "no #[derive(Zmig)] models found")?;
    }
    Ok(())
}

/// One migration's phases, each with where the code stands relative to it.
fn print_phases(phases: &[Phase], current: Stage, out: &mut dyn Write) -> Result<()> {
    for phase in phases {
        let status = match phase.stage.cmp(&current) {
            std::cmp::Ordering::Less => "shipped",
            std::cmp::Ordering::Equal => "current",
            std::cmp::Ordering::Greater if phase.stage.number() == current.number() + 1 => "next",
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
        for migration in project.migrations() {
            let ahead = migrations::folders_past_stage(
                &project.migrations_dir,
                migration.name,
                migration.stage,
            )
            .with_context(|| format!("reading {}", project.migrations_dir.display()))?;
            for (stage, path) in ahead {
                outcome.problems.push(format!(
                    "{}: phase `{stage}` is generated but `{}` is at stage `{}`; it would run on the next deploy.\n  \
                     Set the stage back to `{stage}`, or revert that migration where it ran and delete the folder.",
                    display_path(&path),
                    migration.model,
                    migration.stage
                ));
            }
            let mut later_exists = false;
            for planned in migration.folders.into_iter().rev() {
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
                    // Only the first folder: it writes the record later phases read their types from.
                    FolderState::Missing
                        if !check && !migration.exact_types && planned.stage == Stage::Expand =>
                    {
                        outcome.problems.push(format!(
                            "{}: `{}` needs the database to write `{}`: zmig copies the moved columns' exact types \
                             (numeric(12,2), varchar(500), domains, collations), defaults and comments from it, \
                             which schema.rs does not carry.\n  \
                             Set DATABASE_URL (or pass --database-url) to the database `diesel print-schema` reads, \
                             with the application's migrations applied, and generate again.",
                            display_path(&project.root),
                            migration.model,
                            planned.suffix
                        ));
                    }
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
                "error: missing migration folder `*_{missing}`: run `{} generate`",
                crate::command_name()
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
                "error: {} {state} ({}): run `{} generate`",
                display_path(&change.path),
                change.what,
                crate::command_name()
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    const CARS_SCHEMA: &str = "diesel::table! {
    cars (id) {
        id -> Int4,
        make -> Text,
        model -> Text,
        year -> Int4,
        mileage -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
    }
}

diesel::joinable!(trips -> cars (car_id));
diesel::allow_tables_to_appear_in_same_query!(cars, trips);
";

    /// A crate with the cars example's schema and model, in a directory of its own.
    struct Cars {
        root: PathBuf,
    }

    impl Cars {
        fn new(label: &str) -> Cars {
            let root =
                std::env::temp_dir().join(format!("zmig-codegen-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("src")).unwrap();
            fs::write(root.join("src/schema.rs"), CARS_SCHEMA).unwrap();
            // Where diesel runs migrations: zmig writes none for a crate that does not say.
            fs::write(
                root.join("diesel.toml"),
                "[migrations_directory]\ndir = \"migrations\"\n",
            )
            .unwrap();
            let cars = Cars { root };
            cars.set_stage("prepare");
            cars
        }

        fn set_stage(&self, stage: &str) {
            let model = format!(
                "use zmig_runtime::Zmig;

#[derive(Zmig)]
#[diesel(table_name = crate::schema::cars)]
#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"{stage}\")]
pub struct Car {{
    pub id: i32,
}}
"
            );
            fs::write(self.root.join("src/models.rs"), model).unwrap();
        }

        fn generate(&self, check: bool) -> (Outcome, String) {
            let project = project::load(&self.root)
                .map_err(|e| e.to_string())
                .unwrap();
            let mut out = Vec::new();
            let outcome = generate(&[project], check, "2026-11-21-070921", &mut out).unwrap();
            (outcome, String::from_utf8(out).unwrap())
        }

        fn folders(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.root.join("migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        fn read(&self, path: &str) -> String {
            fs::read_to_string(self.root.join("migrations").join(path)).unwrap()
        }
    }

    impl Drop for Cars {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn a_swap_writes_prepare_then_finalize_and_keeps_them_after_print_schema() {
        let cars = Cars::new("swap-generate");
        let (outcome, report) = cars.generate(false);
        assert!(outcome.ok(), "{report}");
        assert_eq!(
            cars.folders(),
            ["2026-11-21-070921-0001_cars_bigint_prepare"]
        );
        let prepare = "2026-11-21-070921-0001_cars_bigint_prepare";
        let up = cars.read(&format!("{prepare}/up.sql"));
        assert!(
            up.contains("-- zmig migration `cars_bigint`, phase 1 of 3: prepare (up.sql)\n"),
            "{up}"
        );
        assert!(
            up.contains("--   #[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint))]\n"),
            "{up}"
        );
        let record: crate::plan::Swap =
            serde_json::from_str(&cars.read(&format!("{prepare}/{}", migrations::SWAP_SNAPSHOT)))
                .unwrap();
        assert_eq!(record.references[0].new_type, "bigint");

        // move ships no migration.
        cars.set_stage("move");
        let (outcome, report) = cars.generate(false);
        assert!(outcome.ok() && outcome.written.is_empty(), "{report}");

        cars.set_stage("finalize");
        let (outcome, report) = cars.generate(false);
        assert_eq!(outcome.written.len(), 1, "{report}");
        assert_eq!(
            cars.folders(),
            [prepare, "2026-11-21-070921-0002_cars_bigint_finalize"]
        );
        let finalize_up = cars.read("2026-11-21-070921-0002_cars_bigint_finalize/up.sql");

        // After finalize, print-schema shows the new types; the shipped folders stay as planned.
        fs::write(
            cars.root.join("src/schema.rs"),
            CARS_SCHEMA
                .replace("id -> Int4", "id -> Int8")
                .replace("car_id -> Int4", "car_id -> Int8"),
        )
        .unwrap();
        let (check, report) = cars.generate(true);
        assert!(check.ok(), "{report}");
        assert_eq!(check.up_to_date, 2, "{report}");
        assert_eq!(cars.read(&format!("{prepare}/up.sql")), up);
        assert_eq!(
            cars.read("2026-11-21-070921-0002_cars_bigint_finalize/up.sql"),
            finalize_up
        );

        // Moving the stage back would ship finalize with code not ready for it.
        cars.set_stage("move");
        let (outcome, report) = cars.generate(true);
        assert!(!outcome.ok(), "{report}");
        assert!(
            report.contains("phase `finalize` is generated but `Car` is at stage `move`"),
            "{report}"
        );

        // A changed attribute shows as a stale folder, not as a new plan.
        cars.set_stage("finalize");
        let model = fs::read_to_string(cars.root.join("src/models.rs")).unwrap();
        fs::write(
            cars.root.join("src/models.rs"),
            model.replace("columns(id: Int8)", "columns(id: Int8, mileage: Int8)"),
        )
        .unwrap();
        let (outcome, report) = cars.generate(true);
        assert!(!outcome.ok(), "{report}");
        assert!(
            report.contains("up.sql, down.sql no longer match"),
            "{report}"
        );
    }

    #[test]
    fn a_swap_is_refused_with_file_and_line_when_a_reference_is_missing() {
        let cars = Cars::new("swap-missing-reference");
        let model = fs::read_to_string(cars.root.join("src/models.rs")).unwrap();
        fs::write(
            cars.root.join("src/models.rs"),
            model.replace(", references(trips.car_id)", ""),
        )
        .unwrap();
        let error = project::load(&cars.root).unwrap_err().to_string();
        assert!(
            error.starts_with("error: src/models.rs:5:21: `id` changes type, and src/schema.rs says `trips.car_id` references `cars`"),
            "{error}"
        );
        assert!(!cars.root.join("migrations").exists());
    }

    #[test]
    fn plan_prints_a_swap() {
        let cars = Cars::new("swap-plan");
        cars.set_stage("move");
        let project = project::load(&cars.root).unwrap();
        let mut out = Vec::new();
        print_plan(std::slice::from_ref(&project), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "cars_bigint: swap cars behind a view (id → bigint, trips.car_id → bigint)\n"
            ),
            "{text}"
        );
        assert!(text.contains("code is at stage `move` (2 of 3)"), "{text}");
        assert!(
            text.contains("  1. prepare    [shipped] ships: migration\n"),
            "{text}"
        );
        assert!(
            text.contains("  2. move       [current] ships: runtime task\n"),
            "{text}"
        );
        assert!(
            text.contains("  3. finalize   [next] ships: migration, then code deploy\n"),
            "{text}"
        );

        let mut out = Vec::new();
        print_plan(&[project], true, &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json[0]["strategy"], "swap");
        assert_eq!(json[0]["migration"]["name"], "cars_bigint");
        assert_eq!(json[0]["phases"][1]["ships"], "runtime_task");
    }
}
