//! A crate that uses zmig, as the xtask sees it: its `diesel.toml`, the `schema.rs` Diesel
//! printed, its migrations folder and every `#[derive(Zmig)]` model in its sources, parsed with
//! the same code as the derive.

use std::fs;
use std::path::{Path, PathBuf};

use crate::migrations::{self, PlannedFolder, OWNER_SNAPSHOT, SWAP_SNAPSHOT};
use crate::plan::{resolve_extract, resolve_swap, Extract, SourceRef, Swap};
use crate::schema::{parse_schema, Catalog, Schema, Table};
use crate::spec::{parse_model_attrs, ExtractSpec, MigrationSpec, ModelSpec, Stage, SwapSpec};
use crate::sql::filter::RowSql;

/// An error in one of the crate's files, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// All the errors found in a crate; nothing is written when there is one.
#[derive(Debug)]
pub struct ProjectErrors(pub Vec<Located>);

impl std::fmt::Display for ProjectErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProjectErrors {}

fn located(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Located {
    Located {
        file: file.to_owned(),
        line,
        column,
        message: message.into(),
    }
}

/// Every error of a `syn::Error`, placed in `file`.
fn from_syn(file: &Path, error: syn::Error) -> Vec<Located> {
    error
        .into_iter()
        .map(|e| {
            let start = e.span().start();
            located(file, start.line, start.column + 1, e.to_string())
        })
        .collect()
}

/// A crate that uses zmig, loaded and resolved.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    /// The `diesel.toml` diesel reads for this crate (found as [`DieselConfig`] says), `None`
    /// when there is none; the paths in it are relative to its folder ([`Project::config_dir`]).
    pub diesel_toml: Option<PathBuf>,
    pub schema_file: PathBuf,
    pub migrations_dir: PathBuf,
    pub extracts: Vec<ResolvedModel>,
    pub swaps: Vec<ResolvedSwap>,
}

impl Project {
    /// The folder diesel reads relative paths of its configuration from: diesel.toml's, or the
    /// crate's when there is none (diesel's project root is then the nearest Cargo.toml).
    pub fn config_dir(&self) -> PathBuf {
        self.diesel_toml
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.clone())
    }

    /// Where `diesel.toml` is, or would be written for diesel to find it.
    pub fn diesel_toml_path(&self) -> PathBuf {
        self.diesel_toml
            .clone()
            .unwrap_or_else(|| self.root.join("diesel.toml"))
    }

    /// Every migration of the crate, whatever its strategy, sorted by name.
    pub fn migrations(&self) -> Vec<PlannedMigration<'_>> {
        let extracts = self.extracts.iter().map(|m| PlannedMigration {
            name: &m.extract.name,
            model: &m.extract.source.model,
            stage: m.extract.stage,
            folders: m.folders(),
            exact_types: m.extract.exact_types,
        });
        let swaps = self.swaps.iter().map(|m| PlannedMigration {
            name: &m.swap.name,
            model: &m.swap.source.model,
            stage: m.swap.stage,
            folders: m.folders(),
            // A swap copies its table with `LIKE … INCLUDING ALL` in the database itself.
            exact_types: true,
        });
        let mut all: Vec<PlannedMigration> = extracts.chain(swaps).collect();
        all.sort_by(|a, b| a.name.cmp(b.name));
        all
    }
}

/// One migration as `generate` and `status` see it: where it is and what it ships.
#[derive(Debug)]
pub struct PlannedMigration<'a> {
    pub name: &'a str,
    /// The struct carrying `#[derive(Zmig)]`.
    pub model: &'a str,
    /// The stage the code is at.
    pub stage: Stage,
    /// Its folders up to `stage`.
    pub folders: Vec<PlannedFolder>,
    /// Whether the column types its SQL copies are the database's own; `false` for an extract
    /// planned without a database, which `generate` will not write a first folder for.
    pub exact_types: bool,
}

/// An extract, resolved.
#[derive(Debug)]
pub struct ResolvedModel {
    pub extract: Extract,
    /// The owner table as recorded for this migration (see [`OWNER_SNAPSHOT`]).
    pub owner_snapshot: String,
    /// The owner's `table!` from that record: its columns with their types and attributes, the
    /// moved ones included after `schema.rs` has left them out (see [`crate::shim`]).
    pub owner: Table,
}

impl ResolvedModel {
    pub fn folders(&self) -> Vec<PlannedFolder> {
        migrations::planned_folders(&self.extract, &self.owner_snapshot)
    }
}

/// A swap, resolved: against `schema.rs` until its prepare folder exists, from the record in
/// that folder ([`SWAP_SNAPSHOT`]) afterwards.
#[derive(Debug)]
pub struct ResolvedSwap {
    pub swap: Swap,
    /// The record as prepare's folder holds it (or will).
    pub swap_snapshot: String,
}

impl ResolvedSwap {
    pub fn folders(&self) -> Vec<PlannedFolder> {
        migrations::planned_swap_folders(&self.swap, &self.swap_snapshot)
    }
}

/// Where diesel keeps a crate's migrations and schema, read from the `diesel.toml` diesel_cli
/// would read for it.
///
/// diesel_cli takes `DIESEL_CONFIG_FILE` when it is set, else the first `diesel.toml` in the
/// current directory or a parent, and reads every relative path in it from the file's own
/// folder. Without `[migrations_directory] dir` it runs the first `migrations/` folder in the
/// current directory or a parent. zmig stands where the models are (the crate) and walks up to
/// the workspace root, no further: a `diesel.toml` above the workspace is not the project's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DieselConfig {
    /// The `diesel.toml` diesel reads: `DIESEL_CONFIG_FILE`, or the one found; `None` when there
    /// is none (diesel then runs on its defaults).
    pub file: Option<PathBuf>,
    /// `[print_schema] file` from diesel.toml's folder; the crate's `src/schema.rs` when unset.
    pub schema_file: PathBuf,
    /// `[migrations_directory] dir` from diesel.toml's folder, else the `migrations/` folder
    /// diesel would find; `None` when there is neither, so diesel would run nothing zmig wrote.
    pub migrations_dir: Option<PathBuf>,
}

/// The folders from `start` up to `workspace_root` (both included), nearest first; `start`
/// alone when it is not inside the workspace.
fn up_to_workspace(start: &Path, workspace_root: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(start).unwrap_or_else(|_| start.to_owned());
    let ancestors: Vec<&Path> = absolute.ancestors().collect();
    match ancestors.iter().position(|dir| *dir == workspace_root) {
        // The crate's own folder as given (relative or not), its parents as found.
        Some(last) => std::iter::once(start.to_owned())
            .chain(ancestors[1..=last].iter().map(|dir| dir.to_path_buf()))
            .collect(),
        None => vec![start.to_owned()],
    }
}

/// The root of the cargo workspace `root` belongs to: the folder its `package.workspace` names,
/// else the nearest folder at or above it whose Cargo.toml has `[workspace]` (as cargo looks),
/// else `root` itself. Absolute.
pub fn workspace_root(root: &Path) -> PathBuf {
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
    let manifest = |dir: &Path| -> Option<toml::Table> {
        fs::read_to_string(dir.join("Cargo.toml"))
            .ok()?
            .parse()
            .ok()
    };
    if let Some(named) = manifest(&absolute).as_ref().and_then(|m| {
        m.get("package")?
            .get("workspace")?
            .as_str()
            .map(PathBuf::from)
    }) {
        return std::path::absolute(absolute.join(named)).unwrap_or(absolute);
    }
    absolute
        .ancestors()
        .find(|dir| manifest(dir).is_some_and(|m| m.contains_key("workspace")))
        .map(Path::to_owned)
        .unwrap_or(absolute)
}

/// Finds and reads the diesel configuration of the crate at `root` (see [`DieselConfig`]);
/// `explicit` is `DIESEL_CONFIG_FILE`.
pub fn find_diesel_config(
    root: &Path,
    workspace_root: &Path,
    explicit: Option<&Path>,
) -> Result<DieselConfig, Located> {
    let file = match explicit {
        Some(path) => Some(path.to_owned()),
        None => up_to_workspace(root, workspace_root)
            .into_iter()
            .map(|dir| dir.join("diesel.toml"))
            .find(|path| path.is_file()),
    };
    let text = match &file {
        Some(path) => match fs::read_to_string(path) {
            Ok(text) => Some(text),
            // diesel runs on its defaults when the file it was pointed at is not there.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(located(path, 1, 1, format!("cannot read: {error}"))),
        },
        None => None,
    };
    let value: toml::Table = match (&file, &text) {
        (Some(path), Some(text)) => text.parse().map_err(|error: toml::de::Error| {
            let (line, column) = error
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((1, 1));
            located(path, line, column, error.message().to_owned())
        })?,
        _ => toml::Table::new(),
    };
    // Relative paths in diesel.toml are relative to its folder, as diesel_cli reads them.
    let base = file
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }
        })
        .unwrap_or(root)
        .to_owned();
    let schema_file = value
        .get("print_schema")
        .and_then(|p| p.get("file"))
        .and_then(|f| f.as_str())
        .map(|f| base.join(f))
        .unwrap_or_else(|| root.join("src/schema.rs"));
    let migrations_dir = match value
        .get("migrations_directory")
        .and_then(|m| m.get("dir"))
        .and_then(|d| d.as_str())
    {
        Some(dir) => Some(base.join(dir)),
        None => up_to_workspace(&base, workspace_root)
            .into_iter()
            .map(|dir| dir.join("migrations"))
            .find(|dir| dir.is_dir()),
    };
    Ok(DieselConfig {
        file,
        schema_file,
        migrations_dir,
    })
}

/// A [`DieselConfig`] whose migrations folder is known.
struct ResolvedConfig {
    file: Option<PathBuf>,
    schema_file: PathBuf,
    migrations_dir: PathBuf,
}

/// Why zmig will not write migrations for a crate whose diesel runs none it could write.
fn no_migrations_dir(root: &Path, workspace_root: &Path, config: &DieselConfig) -> Located {
    match &config.file {
        Some(file) => located(
            file,
            1,
            1,
            format!(
                "this diesel.toml has no `[migrations_directory] dir`, and there is no `migrations/` folder in {} \
                 or above it up to the workspace root {}, where diesel looks then: zmig does not know where \
                 diesel runs migrations, so it writes none.\n  \
                 help: add\n    [migrations_directory]\n    dir = \"migrations\"\n  to it (the folder of the \
                 migrations you already run, relative to diesel.toml), then generate again",
                file.parent().unwrap_or(root).display(),
                workspace_root.display()
            ),
        ),
        None => located(
            Path::new("Cargo.toml"),
            1,
            1,
            format!(
                "this crate has zmig models, but there is no diesel.toml in {} or above it up to the workspace \
                 root {}, and no `migrations/` folder there for diesel's default: zmig does not know where diesel \
                 runs migrations, so it writes none.\n  \
                 help: run `diesel setup` where you run diesel (it writes diesel.toml and migrations/), or create \
                 diesel.toml with\n    [migrations_directory]\n    dir = \"migrations\"\n  then generate again",
                root.display(),
                workspace_root.display()
            ),
        ),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// A model found in the sources, before resolution.
struct FoundModel {
    /// Relative to the crate root.
    file: PathBuf,
    line: usize,
    spec: ModelSpec,
}

/// Loads the crate at `root` without a database: what `plan` needs, and all `generate` needs
/// once every migration's first folder exists (its record then holds the exact column types).
pub fn load(root: &Path) -> Result<Project, ProjectErrors> {
    load_with(root, None)
}

/// Loads the crate at `root`: reads everything, resolves every model, reports every error.
/// An extract not generated yet takes its owner's exact column types from `catalog` (see
/// [`crate::schema::catalog`]); without one it is resolved from `schema.rs` alone and
/// [`Extract::exact_types`] says so.
pub fn load_with(
    root: &Path,
    mut catalog: Option<&mut dyn Catalog>,
) -> Result<Project, ProjectErrors> {
    let mut errors = Vec::new();
    let workspace = workspace_root(root);
    let explicit = std::env::var_os("DIESEL_CONFIG_FILE").map(PathBuf::from);
    let config = find_diesel_config(root, &workspace, explicit.as_deref())
        .map_err(|e| ProjectErrors(vec![e]))?;
    let models = find_models(root, &mut errors);
    if models.is_empty() && errors.is_empty() {
        return Ok(Project {
            root: root.to_owned(),
            diesel_toml: config.file,
            schema_file: config.schema_file,
            // Nothing is written for a crate without models.
            migrations_dir: config
                .migrations_dir
                .unwrap_or_else(|| root.join("migrations")),
            extracts: Vec::new(),
            swaps: Vec::new(),
        });
    }
    let Some(migrations_dir) = config.migrations_dir.clone() else {
        errors.push(no_migrations_dir(root, &workspace, &config));
        return Err(ProjectErrors(errors));
    };
    let config = ResolvedConfig {
        file: config.file,
        schema_file: config.schema_file,
        migrations_dir,
    };
    let schema = match fs::read_to_string(&config.schema_file) {
        Ok(text) => match parse_schema(&relative(root, &config.schema_file), &text) {
            Ok(schema) => Some(schema),
            Err(error) => {
                errors.push(located(
                    &error.file,
                    error.line,
                    error.column,
                    error.message,
                ));
                None
            }
        },
        Err(error) => {
            errors.push(located(
                &config.schema_file,
                1,
                1,
                format!("cannot read the schema Diesel printed ({error}); run `diesel print-schema` or set `[print_schema] file` in diesel.toml"),
            ));
            None
        }
    };
    let mut extracts = Vec::new();
    let mut swaps = Vec::new();
    if let Some(schema) = schema {
        let mut names = std::collections::HashMap::new();
        for model in models {
            let abs_file = root.join(&model.file);
            let source = SourceRef {
                file: model.file.clone(),
                line: model.line,
                model: model.spec.struct_name.value.clone(),
            };
            let resolved = match &model.spec.migration {
                MigrationSpec::Extract(spec) => load_extract(
                    &config.migrations_dir,
                    &model,
                    spec,
                    &schema,
                    source,
                    catalog.as_mut().map(|c| &mut **c as &mut dyn Catalog),
                )
                .map(|extract| {
                    let name = extract.extract.name.clone();
                    extracts.push(extract);
                    name
                }),
                MigrationSpec::Swap(spec) => load_swap(
                    &config.migrations_dir,
                    &model,
                    spec,
                    &schema,
                    source,
                    catalog.as_mut().map(|c| &mut **c as &mut dyn Catalog),
                )
                .map(|swap| {
                    let name = swap.swap.name.clone();
                    swaps.push(swap);
                    name
                }),
            };
            match resolved {
                Ok(name) => {
                    if let Some(previous) = names.insert(name.clone(), model.file.clone()) {
                        errors.push(located(
                            &abs_file,
                            model.line,
                            1,
                            format!("two models declare migration `{name}` (the other is in {}); give one `name = ...`", previous.display()),
                        ));
                    }
                }
                Err(found) => errors.extend(found),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ProjectErrors(errors));
    }
    extracts.sort_by(|a, b| a.extract.name.cmp(&b.extract.name));
    swaps.sort_by(|a, b| a.swap.name.cmp(&b.swap.name));
    Ok(Project {
        root: root.to_owned(),
        diesel_toml: config.file,
        schema_file: config.schema_file,
        migrations_dir: config.migrations_dir,
        extracts,
        swaps,
    })
}

/// Resolves an extract against the owner table as recorded for it.
fn load_extract(
    migrations_dir: &Path,
    model: &FoundModel,
    spec: &ExtractSpec,
    schema: &Schema,
    source: SourceRef,
    mut catalog: Option<&mut dyn Catalog>,
) -> Result<ResolvedModel, Vec<Located>> {
    let (snapshot, planned_now) = owner_schema(
        migrations_dir,
        model,
        schema,
        catalog.as_mut().map(|c| &mut **c as &mut dyn Catalog),
    )?;
    let extract = resolve_extract(&model.spec, spec, &snapshot, source, spec.to_attribute())
        .map_err(|error| from_syn(&model.file, error))?;
    // The filter is asked about with the owner's columns, when the migration is planned: later
    // generates read the record and need no database (each migration asks again as it runs).
    if let (true, Some(catalog), Some(filter), Some(text)) =
        (planned_now, catalog, &extract.filter, &spec.filter)
    {
        let sql = filter.filter.generate_check_sql(
            RowSql::Filter,
            &extract.name,
            &extract.owner.sql(),
            &filter.text,
        );
        ask_database(catalog, &sql, model, text.span)?;
    }
    let owner_snapshot =
        serde_json::to_string_pretty(&snapshot).expect("a schema serializes") + "\n";
    // Resolution found the owner in the record, so it is there.
    let owner = snapshot
        .table(model.spec.table())
        .cloned()
        .expect("resolution found the owner table in the record");
    Ok(ResolvedModel {
        extract,
        owner_snapshot,
        owner,
    })
}

/// A swap as recorded in its prepare folder, or resolved against `schema.rs` when that folder
/// does not exist yet.
///
/// Why a record: `schema.rs` follows the database. After finalize it shows the new types (and
/// between prepare and finalize `print-schema` sees a view, not the table); resolving the
/// shipped phases against that would change what they mean. The stage, the attribute and where
/// it is declared still come from the code, so an attribute changed after prepare shows as a
/// stale folder.
fn load_swap(
    migrations_dir: &Path,
    model: &FoundModel,
    spec: &SwapSpec,
    schema: &Schema,
    source: SourceRef,
    mut catalog: Option<&mut dyn Catalog>,
) -> Result<ResolvedSwap, Vec<Located>> {
    let name = model.spec.migration_name();
    let probe = PlannedFolder {
        stage: Stage::Prepare,
        suffix: format!("{name}_{}", Stage::Prepare),
        files: Vec::new(),
    };
    let prepare = migrations::existing_folder(migrations_dir, &probe).map_err(|e| {
        vec![located(
            migrations_dir,
            1,
            1,
            format!("cannot read the migrations folder: {e}"),
        )]
    })?;
    if let Some(folder) = prepare {
        let path = folder.join(SWAP_SNAPSHOT);
        if let Ok(text) = fs::read_to_string(&path) {
            let damaged = |line: usize, column: usize, what: String| {
                vec![located(&path, line, column, format!("zmig's record of the swap is damaged ({what}); restore it from version control"))]
            };
            let mut swap: Swap = serde_json::from_str(&text)
                .map_err(|e| damaged(e.line(), e.column(), e.to_string()))?;
            swap.restore_casts()
                .map_err(|e| damaged(1, 1, e.to_string()))?;
            swap.stage = model.spec.stage.value;
            swap.source = source;
            swap.attribute = spec.to_attribute();
            return Ok(ResolvedSwap {
                swap,
                swap_snapshot: text,
            });
        }
    }
    let as_in_database = catalog
        .as_mut()
        .and_then(|c| key_types_from_database(&mut **c, &model.spec, spec, schema));
    let swap = resolve_swap(
        &model.spec,
        spec,
        as_in_database.as_ref().unwrap_or(schema),
        source,
    )
    .map_err(|error| from_syn(&model.file, error))?;
    // Computed columns are asked about when prepare is planned, if a database is at hand;
    // prepare asks again as it runs, refusing with nothing changed.
    if let Some(catalog) = catalog {
        let mut errors = Vec::new();
        for (column, entry) in spec.columns.iter().filter_map(|entry| {
            let text = entry.cast.as_ref()?;
            let column = swap
                .columns
                .iter()
                .find(|c| c.cast_text.as_ref() == Some(&text.value))?;
            Some((column, text))
        }) {
            let Some(cast) = &column.cast else { continue };
            let sql = cast.generate_check_sql(
                RowSql::Expression,
                &swap.name,
                &swap.table.sql(),
                &entry.value,
            );
            if let Err(found) = ask_database(catalog, &sql, model, entry.span) {
                errors.extend(found);
            }
        }
        // The unique indexes besides the primary key, as prepare's guards will see them.
        let span = spec.unique.first().map_or(spec.span, |u| u.columns[0].span);
        let sql = crate::sql::swap::unique::check_sql(&swap);
        if let Err(found) = ask_database(catalog, &sql, model, span) {
            errors.extend(found);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    // The record is what prepare planned: written with prepare's folder, never rewritten.
    let mut record = swap.clone();
    record.stage = Stage::Prepare;
    let swap_snapshot = serde_json::to_string_pretty(&record).expect("a swap serializes") + "\n";
    Ok(ResolvedSwap {
        swap,
        swap_snapshot,
    })
}

/// `schema` with the swapped table's key and its references typed as the database has them,
/// when that differs from `schema.rs`; `None` when it does not (or the database cannot say).
///
/// Why: the one-release way ships, before prepare, the release whose `schema.rs` already says
/// the new type (`Int8`, what print-schema prints after finalize) and reads the key as
/// `WideInt`. Resolved against that, the key would seem to keep its type. The database still
/// has the old one, which is what prepare must record (and what the view shim tells
/// print-schema's output by until finalize).
fn key_types_from_database(
    catalog: &mut dyn Catalog,
    model: &ModelSpec,
    spec: &SwapSpec,
    schema: &Schema,
) -> Option<Schema> {
    let table = schema.table(model.table())?;
    let [key] = table.primary_key.as_slice() else {
        return None;
    };
    let mut wanted = vec![(table.rust_name.clone(), key.clone())];
    wanted.extend(
        spec.references
            .iter()
            .map(|r| (r.table.value.clone(), r.column.value.clone())),
    );
    let mut copy = schema.clone();
    let mut changed = false;
    for (table_name, column_name) in wanted {
        let Some(table) = copy.tables.iter_mut().find(|t| t.rust_name == table_name) else {
            continue;
        };
        let Ok(found) = catalog.columns(table.pg_schema.as_deref(), &table.sql_name) else {
            continue;
        };
        let Some(column) = table
            .columns
            .iter_mut()
            .find(|c| c.rust_name == column_name)
        else {
            continue;
        };
        let Some(database) = found
            .iter()
            .find(|c| c.name == column.sql_name)
            .and_then(|c| match c.exact.sql_type.as_str() {
                "smallint" => Some("Int2"),
                "integer" => Some("Int4"),
                "bigint" => Some("Int8"),
                _ => None,
            })
        else {
            continue;
        };
        let in_schema_rs = match &column.ty {
            crate::schema::SqlType::Named(name) => crate::schema::canonical_name(name),
            crate::schema::SqlType::Array(_) => continue,
        };
        if in_schema_rs != database {
            column.ty = crate::schema::SqlType::Named(database.to_owned());
            changed = true;
        }
    }
    changed.then_some(copy)
}

/// The schema that describes the owner table for this model: the snapshot written with the
/// migration's expand folder when there is one, else the owner table from `schema.rs` with each
/// column's exact type, default and comment read through `catalog`.
///
/// Why a snapshot: `schema.rs` follows the database. After write_new the old columns print as
/// `Nullable`, after contract they are gone; resolving later phases against that would rewrite
/// the meaning of phases already shipped. The snapshot keeps them as they were when planned.
/// Also says whether the migration is planned now (no expand folder yet).
fn owner_schema(
    migrations_dir: &Path,
    model: &FoundModel,
    schema: &Schema,
    catalog: Option<&mut dyn Catalog>,
) -> Result<(Schema, bool), Vec<Located>> {
    let name = model.spec.migration_name();
    let probe = PlannedFolder {
        stage: crate::spec::Stage::Expand,
        suffix: format!("{name}_expand"),
        files: Vec::new(),
    };
    let existing = migrations::existing_folder(migrations_dir, &probe).map_err(|e| {
        vec![located(
            migrations_dir,
            1,
            1,
            format!("cannot read the migrations folder: {e}"),
        )]
    })?;
    if let Some(folder) = existing {
        let path = folder.join(OWNER_SNAPSHOT);
        if let Ok(text) = fs::read_to_string(&path) {
            return serde_json::from_str(&text).map(|s| (s, false)).map_err(|e| {
                vec![located(&path, e.line(), e.column(), format!("zmig's record of the owner table is damaged ({e}); restore it from version control"))]
            });
        }
    }
    let mut snapshot = Schema {
        file: schema.file.clone(),
        tables: Vec::new(),
        custom_types: schema.custom_types.clone(),
        joinables: Vec::new(),
    };
    if let Some(owner) = schema.table(model.spec.table()) {
        let mut owner = owner.clone();
        if let Some(catalog) = catalog {
            read_exact_columns(catalog, &mut owner, &schema.file, model)?;
        }
        snapshot.tables.push(owner);
    } else {
        snapshot.tables = schema.tables.clone();
    }
    Ok((snapshot, true))
}

/// Runs a check through `catalog` (see [`Catalog::dry_run`]); a refusal is an error at the
/// attribute's `span` in the model's file.
fn ask_database(
    catalog: &mut dyn Catalog,
    sql: &str,
    model: &FoundModel,
    span: proc_macro2::Span,
) -> Result<(), Vec<Located>> {
    catalog.dry_run(sql).map_err(|error| {
        let start = span.start();
        vec![located(
            &model.file,
            if start.line == 0 {
                model.line
            } else {
                start.line
            },
            start.column + 1,
            format!("{error} (asked {})", catalog.describe()),
        )]
    })
}

/// Fills each column of `owner` with what the database says of it. Every column `schema.rs`
/// declares must be there: a database behind `schema.rs` (or ahead of it) would plan a migration
/// from columns production does not have.
fn read_exact_columns(
    catalog: &mut dyn Catalog,
    owner: &mut Table,
    schema_file: &Path,
    model: &FoundModel,
) -> Result<(), Vec<Located>> {
    let at_model = |message: String| vec![located(&model.file, model.line, 1, message)];
    let database = catalog.describe();
    let found = catalog
        .columns(owner.pg_schema.as_deref(), &owner.sql_name)
        .map_err(|error| {
            at_model(format!(
                "cannot read the exact column types of `{}` from {database}: {error}\n\
                 help: zmig copies types with their modifiers (numeric(12,2), varchar(500)), defaults and \
                 comments from the database `diesel print-schema` reads; set DATABASE_URL or --database-url to it",
                owner.sql_name
            ))
        })?;
    if found.is_empty() {
        return Err(vec![located(
            schema_file,
            owner.line,
            1,
            format!(
                "`{}` is in schema.rs but not in {database}\n\
                 help: point DATABASE_URL (or --database-url) at the database `diesel print-schema` reads, \
                 with the application's migrations applied",
                owner.sql_name
            ),
        )]);
    }
    let mut errors = Vec::new();
    for column in &mut owner.columns {
        match found.iter().find(|c| c.name == column.sql_name) {
            Some(c) if c.exact.not_null == column.nullable => errors.push(located(
                schema_file,
                column.line,
                1,
                format!(
                    "`{}`.`{}` is {} in schema.rs but {} in {database}\n\
                     help: run `diesel print-schema` so schema.rs says what the database has",
                    owner.sql_name,
                    column.sql_name,
                    if column.nullable { "Nullable" } else { "NOT NULL" },
                    if c.exact.not_null { "NOT NULL" } else { "nullable" },
                ),
            )),
            Some(c) => column.exact = Some(c.exact.clone()),
            None => errors.push(located(
                schema_file,
                column.line,
                1,
                format!(
                    "`{}`.`{}` is in schema.rs but not in {database}\n\
                     help: run `diesel migration run` there, or `diesel print-schema` if schema.rs is ahead of it",
                    owner.sql_name, column.sql_name
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_owned)
        .unwrap_or_else(|_| path.to_owned())
}

/// Every struct deriving `Zmig` under `src/`, parsed with the derive's own parser.
fn find_models(root: &Path, errors: &mut Vec<Located>) -> Vec<FoundModel> {
    let mut files = Vec::new();
    collect_rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut models = Vec::new();
    for path in files {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        // Most files have no model: skip them without paying for a parse.
        if !text.contains("Zmig") {
            continue;
        }
        let rel = relative(root, &path);
        let file = match syn::parse_file(&text) {
            Ok(file) => file,
            Err(error) => {
                errors.extend(from_syn(&rel, error));
                continue;
            }
        };
        visit_items(&file.items, &rel, &mut models, errors);
    }
    models
}

fn visit_items(
    items: &[syn::Item],
    file: &Path,
    models: &mut Vec<FoundModel>,
    errors: &mut Vec<Located>,
) {
    for item in items {
        match item {
            syn::Item::Struct(item) if derives_zmig(&item.attrs) => {
                match parse_model_attrs(&item.ident, &item.attrs) {
                    Ok(spec) => models.push(FoundModel {
                        file: file.to_owned(),
                        line: item.ident.span().start().line,
                        spec,
                    }),
                    Err(error) => errors.extend(from_syn(file, error)),
                }
            }
            syn::Item::Mod(module) => {
                if let Some((_, items)) = &module.content {
                    visit_items(items, file, models, errors);
                }
            }
            _ => {}
        }
    }
}

fn derives_zmig(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.segments.last().is_some_and(|s| s.ident == "Zmig") {
                    found = true;
                }
                Ok(())
            });
            found
        })
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
