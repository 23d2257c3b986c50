//! The phase plan: each zmig migration resolved against `schema.rs` into plain data (tables,
//! columns, SQL types), and the phases it goes through with what each deploy ships. The SQL
//! emitter and `cargo xtask zmig plan` both read this; neither looks at attributes.

mod extract;

pub use extract::{resolve_extract, Extract, MovedColumn, NewPrimaryKey, Timestamp};

use std::path::PathBuf;

use serde::Serialize;

use crate::spec::{Stage, SyncMode};

/// Where a model's attribute was found: named in generated headers and error messages.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceRef {
    /// Path relative to the crate root (`src/models.rs`).
    pub file: PathBuf,
    pub line: usize,
    /// The struct carrying `#[derive(Zmig)]`.
    pub model: String,
}

/// A table in the database: name and schema, both as PostgreSQL knows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// `"schema"."name"`, quoted.
    pub fn sql(&self) -> String {
        crate::sql::quote_qualified(self.schema.as_deref(), &self.name)
    }
}

/// What a phase puts into production.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ships {
    /// A Diesel migration folder.
    Migration,
    /// A deploy of application code (the derive's generated Rust follows `stage`).
    Code,
    /// A migration and the code that goes with it, in that order.
    MigrationAndCode,
    /// A task run against the live database (`cargo xtask zmig backfill`).
    RuntimeTask,
}

/// One phase of one migration, as `plan` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub stage: Stage,
    pub ships: Ships,
    /// What this phase does, one sentence.
    pub summary: String,
    /// What must be true before the next phase ships.
    pub gate: String,
    /// Whether `generate` writes a migration folder for it.
    pub has_sql: bool,
}

/// Every phase of an extract, in order.
pub fn extract_phases(extract: &Extract) -> Vec<Phase> {
    let owner = &extract.owner.name;
    let new = &extract.new_table.name;
    let name = &extract.name;
    let moved = extract
        .columns
        .iter()
        .map(|c| c.source.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Stage::ALL
        .into_iter()
        .map(|stage| {
            let (ships, summary, gate) = match stage {
                Stage::Expand => (
                    Ships::Migration,
                    format!("create table {new} with a foreign key and unique owner key to {owner}; the application is unchanged"),
                    "the migration is applied everywhere".to_owned(),
                ),
                Stage::DualWrite if extract.sync == SyncMode::App => (
                    Ships::MigrationAndCode,
                    format!("a sync function, then code whose every write of {owner} goes through the generated wrappers, which sync ({moved}) into {new} in the same transaction"),
                    "every running instance writes through the wrappers before any backfill starts, or rows changed during the backfill would be lost".to_owned(),
                ),
                Stage::DualWrite => (
                    Ships::Migration,
                    format!("triggers on {owner} copy every insert, update and delete of ({moved}) into {new} in the writer's own transaction"),
                    "the triggers are applied before any backfill starts, or rows changed during the backfill would be lost".to_owned(),
                ),
                Stage::Backfill => (
                    Ships::RuntimeTask,
                    format!("copy the rows of {owner} that existed before dual writing into {new}: `cargo xtask zmig backfill {name}`"),
                    format!("`cargo xtask zmig verify {name}` reports 0 rows differing"),
                ),
                Stage::ReadNew => (
                    Ships::Code,
                    format!("the application reads ({moved}) from {new} through the generated readers"),
                    "every running instance reads the new table; no code reads the old columns".to_owned(),
                ),
                Stage::WriteNew => (
                    Ships::MigrationAndCode,
                    format!("triggers on {new} sync writes back into {owner} for instances still on the previous release; the old columns become nullable; the application writes {new} and stops writing the old columns"),
                    "every running instance writes the new table; nothing reads or writes the old columns".to_owned(),
                ),
                Stage::Contract => (
                    Ships::Migration,
                    format!("drop the sync triggers and functions and the old columns ({moved}) of {owner}"),
                    "done".to_owned(),
                ),
            };
            let has_sql = matches!(stage, Stage::Expand | Stage::DualWrite | Stage::WriteNew | Stage::Contract);
            Phase { stage, ships, summary, gate, has_sql }
        })
        .collect()
}
