//! `generate`: how long `cargo xtask zmig generate` takes on a large crate.
//!
//! A synthetic Diesel crate is written to a temporary folder for each round: a `schema.rs` of
//! three tables per model (300 by default) with `joinable!` lines and
//! `allow_tables_to_appear_in_same_query!`, as `diesel print-schema` prints them, and the
//! annotated models (100 by default) over ten source files, each model at one of the six stages
//! in turn and in one of four attribute forms (plain, own key name, renamed column, filter).
//! Timed: `zmig_codegen::project::load` plus `zmig_codegen::cli::generate`, which writes every
//! folder (and, for the models at write_new or contract, the ignored-column shim); then the same
//! again with `--check` over the result, as CI runs it. generate reads the owners' exact column
//! types from a development database holding the synthetic tables (one query per model, timed
//! with the rest). No baseline.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use crate::db::BenchDb;
use crate::report::{thousands, Figures, Line, Report, Unit};
use crate::{progress, Params};

const STAGES: [(&str, usize); 6] = [
    ("expand", 1),
    ("dual_write", 2),
    ("backfill", 2),
    ("read_new", 2),
    ("write_new", 3),
    ("contract", 4),
];

const TABLE_WORDS: [&str; 12] = [
    "accounts",
    "orders",
    "invoices",
    "products",
    "vendors",
    "shipments",
    "events",
    "tickets",
    "projects",
    "contracts",
    "devices",
    "campaigns",
];
const COLUMN_WORDS: [&str; 14] = [
    "label",
    "code",
    "status",
    "notes",
    "amount",
    "region",
    "source",
    "kind",
    "rating",
    "due_on",
    "flag",
    "owner_ref",
    "payload",
    "token",
];
const TYPES: [&str; 15] = [
    "Varchar",
    "Nullable<Text>",
    "Int4",
    "Text",
    "Nullable<Varchar>",
    "Int8",
    "Bool",
    "Timestamptz",
    "Float8",
    "Date",
    "Numeric",
    "Nullable<Int4>",
    "Jsonb",
    "Uuid",
    "Nullable<Timestamp>",
];

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn run(params: &Params) -> Result<Report> {
    let models = params.models.max(1);
    let tables = models * 3;
    let expected: usize = (0..models).map(|k| STAGES[k % STAGES.len()].1).sum();
    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        let krate = SyntheticCrate::write(models)?;
        let dev = BenchDb::create()?;
        crate::db::exec(&mut dev.conn()?, &create_sql(&krate.root)?)?;
        let started = Instant::now();
        let mut catalog = zmig_runtime::catalog::PgCatalog::new(&dev.url);
        let project = zmig_codegen::project::load_with(&krate.root, Some(&mut catalog))
            .map_err(|e| anyhow!("{e}"))?;
        let mut out = Vec::new();
        let outcome =
            zmig_codegen::cli::generate(&[project], false, "2026-11-21-120000", &mut out)?;
        let generate_ms = started.elapsed().as_secs_f64() * 1_000.0;
        if !outcome.ok() || outcome.written.len() != expected {
            bail!(
                "generate wrote {} folders, expected {expected}:\n{}",
                outcome.written.len(),
                String::from_utf8_lossy(&out)
            );
        }

        let started = Instant::now();
        let project = zmig_codegen::project::load(&krate.root).map_err(|e| anyhow!("{e}"))?;
        let mut out = Vec::new();
        let checked = zmig_codegen::cli::generate(&[project], true, "2026-11-21-130000", &mut out)?;
        let check_ms = started.elapsed().as_secs_f64() * 1_000.0;
        if !checked.ok() || checked.up_to_date != expected {
            bail!(
                "generate --check after generate found {} of {expected} folders up to date:\n{}",
                checked.up_to_date,
                String::from_utf8_lossy(&out)
            );
        }
        progress(&format!(
            "round {round}/{}: generate {generate_ms:.0} ms ({expected} folders), --check {check_ms:.0} ms",
            params.rounds
        ));
        let mut f = Figures::default();
        f.set("generate_ms", generate_ms);
        f.set("check_ms", check_ms);
        f.set("folders", expected as f64);
        f.set("schema_lines", krate.schema_lines as f64);
        rounds.push(f);
    }
    let m = Figures::medians(&rounds);
    let lines = vec![
        Line::new("project::load + generate", Unit::Millis).zmig(m.at("generate_ms")),
        Line::new("project::load + generate --check", Unit::Millis).zmig(m.at("check_ms")),
        Line::new("folders written", Unit::Count).zmig(m.at("folders")),
        Line::new("schema.rs lines", Unit::Count).zmig(m.at("schema_lines")),
    ];
    Ok(Report {
        benchmark: "generate".to_owned(),
        setup: format!(
            "{models} annotated models, a {tables}-table schema.rs, {} round(s), medians",
            params.rounds
        ),
        parameters: params.figures(),
        environment: vec![
            ("cpus".to_owned(), crate::cpus().to_string()),
            ("build".to_owned(), crate::build_profile().to_owned()),
        ],
        figures: m,
        rounds,
        lines,
        notes: vec![
            format!(
                "zmig: project::load + generate over a fresh copy of the crate each round, writing {} migration folders; no baseline",
                thousands(expected as i64)
            ),
            "generate_ms is the figure that counts; check_ms is the same over the result with --check, as CI runs it".to_owned(),
        ],
    })
}

/// The synthetic crate, removed on drop.
struct SyntheticCrate {
    root: PathBuf,
    schema_lines: usize,
}

impl Drop for SyntheticCrate {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn table_name(i: usize) -> String {
    format!("{}_{i}", TABLE_WORDS[i % TABLE_WORDS.len()])
}

/// The non-key columns of table `i`: (name, Diesel type).
fn columns(i: usize) -> Vec<(String, &'static str)> {
    (0..6 + i % 9)
        .map(|j| {
            (
                format!("{}_{j}", COLUMN_WORDS[(i + j) % COLUMN_WORDS.len()]),
                TYPES[(i * 7 + j) % TYPES.len()],
            )
        })
        .collect()
}

impl SyntheticCrate {
    fn write(models: usize) -> Result<SyntheticCrate> {
        let root = std::env::temp_dir().join(format!(
            "zmig-bench-generate-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        let schema = schema_rs(models * 3);
        let krate = SyntheticCrate {
            root,
            schema_lines: schema.lines().count(),
        };
        let root = &krate.root;
        fs::create_dir_all(root.join("src/models"))?;
        fs::create_dir_all(root.join("migrations/2020-01-01-000000-0000_create_tables"))?;
        fs::write(
            root.join("diesel.toml"),
            "[print_schema]\nfile = \"src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n",
        )?;
        fs::write(
            root.join("migrations/2020-01-01-000000-0000_create_tables/up.sql"),
            "-- the application's own tables\n",
        )?;
        fs::write(
            root.join("migrations/2020-01-01-000000-0000_create_tables/down.sql"),
            "-- the application's own tables\n",
        )?;
        fs::write(root.join("src/schema.rs"), &schema)?;
        fs::write(
            root.join("src/lib.rs"),
            "pub mod models;\npub mod schema;\n",
        )?;
        let files = models.div_ceil(10);
        let mut modules = String::new();
        for file in 0..files {
            let _ = writeln!(modules, "pub mod part_{file};");
            let mut source = String::from(
                "use diesel::prelude::*;\nuse zmig_runtime::Zmig;\n\nuse crate::schema::*;\n",
            );
            for k in (file * 10..(file + 1) * 10).filter(|k| *k < models) {
                source.push_str(&model_rs(k));
            }
            fs::write(root.join(format!("src/models/part_{file}.rs")), source)?;
        }
        fs::write(root.join("src/models/mod.rs"), modules)?;
        Ok(krate)
    }
}

/// The `CREATE TABLE`s of the synthetic crate's `schema.rs`, for its development database.
fn create_sql(root: &std::path::Path) -> Result<String> {
    use zmig_codegen::schema::{parse_schema, pg_type_for};
    let text = fs::read_to_string(root.join("src/schema.rs"))?;
    let schema =
        parse_schema(std::path::Path::new("src/schema.rs"), &text).map_err(|e| anyhow!("{e}"))?;
    let mut sql = String::new();
    for table in &schema.tables {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let ty = pg_type_for(&c.ty, c.max_length, &schema)?;
                let null = if c.nullable { "" } else { " NOT NULL" };
                Ok(format!("\"{}\" {ty}{null}", c.sql_name))
            })
            .collect::<Result<_, zmig_codegen::schema::SqlTypeError>>()?;
        let _ = writeln!(
            sql,
            "CREATE TABLE \"{}\" ({}, PRIMARY KEY (id));",
            table.sql_name,
            columns.join(", ")
        );
    }
    Ok(sql)
}

/// A `schema.rs` of `tables` tables, as `diesel print-schema` prints one.
fn schema_rs(tables: usize) -> String {
    let mut out = String::from("// @generated automatically by Diesel CLI.\n");
    for i in 0..tables {
        out.push_str("\ndiesel::table! {\n");
        if i % 4 == 0 {
            let _ = writeln!(out, "    /// The {} of the application.", table_name(i));
        }
        let _ = writeln!(out, "    {} (id) {{", table_name(i));
        let _ = writeln!(
            out,
            "        id -> {},",
            if i % 3 == 1 { "Int8" } else { "Int4" }
        );
        if i % 5 != 0 {
            let _ = writeln!(out, "        parent_id -> Int4,");
        }
        for (j, (name, ty)) in columns(i).into_iter().enumerate() {
            if j % 4 == 1 {
                let _ = writeln!(out, "        /// What {name} holds.");
            }
            if ty.contains("Varchar") && j % 2 == 0 {
                let _ = writeln!(out, "        #[max_length = 64]");
            }
            let _ = writeln!(out, "        {name} -> {ty},");
        }
        out.push_str("        created_at -> Timestamptz,\n        updated_at -> Timestamptz,\n");
        out.push_str("    }\n}\n");
    }
    out.push('\n');
    for i in (1..tables).filter(|i| i % 5 != 0) {
        let _ = writeln!(
            out,
            "diesel::joinable!({} -> {} (parent_id));",
            table_name(i),
            table_name(i - 1)
        );
    }
    out.push_str("\ndiesel::allow_tables_to_appear_in_same_query!(\n");
    for i in 0..tables {
        let _ = writeln!(out, "    {},", table_name(i));
    }
    out.push_str(");\n");
    out
}

/// Model `k`: owner table `3k`, its first three columns moved, at stage `k % 6`, in attribute
/// form `k % 4`.
fn model_rs(k: usize) -> String {
    let owner = table_name(k * 3);
    let cols = columns(k * 3);
    let (a, b, c) = (&cols[0].0, &cols[1].0, &cols[2].0);
    let stage = STAGES[k % STAGES.len()].0;
    let extract = match k % 4 {
        0 => format!("into = {owner}_details, columns({a}, {b}, {c})"),
        1 => format!("into = {owner}_extras, columns({a}, {b}, {c}), key = owner_id"),
        2 => format!("into = {owner}_info, columns({a}, {b} as moved_{b}, {c})"),
        _ => format!("into = {owner}_meta, columns({a}, {b}, {c}), filter = \"{a} IS NOT NULL\""),
    };
    format!(
        "\n/// Model {k}.\n#[derive(Debug, Clone, Queryable, Zmig)]\n#[diesel(table_name = {owner})]\n#[zmig(\n    extract({extract}),\n    stage = \"{stage}\"\n)]\npub struct Model{k} {{\n    pub id: i64,\n}}\n"
    )
}
