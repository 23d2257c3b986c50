//! The phase plan: each zmig migration resolved against `schema.rs` into plain data (tables,
//! columns, SQL types), and the phases it goes through with what each deploy ships. The SQL
//! emitter and `cargo xtask zmig plan` both read this; neither looks at attributes.

mod extract;
mod swap;

pub use extract::{resolve_extract, Extract, MovedColumn, NewPrimaryKey, Timestamp};
pub use swap::{resolve_swap, Reference, Swap, SwapColumn};

use std::path::PathBuf;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::schema::{Schema, SqlType, Table};
use crate::spec::{Stage, SyncMode};

/// Where a model's attribute was found: named in generated headers and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct SourceRef {
    /// Path relative to the crate root (`src/models.rs`).
    pub file: PathBuf,
    pub line: usize,
    /// The struct carrying `#[derive(Zmig)]`.
    pub model: String,
}

/// A table in the database: name and schema, both as PostgreSQL knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
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
    Stage::EXTRACT
        .into_iter()
        .map(|stage| {
            let (ships, summary, gate) = match stage {
                Stage::Expand => (
                    Ships::Migration,
                    format!("create table {new} with {} owner key to {owner} (its foreign key comes at write_new); the application is unchanged", if extract.unique_key { "a unique" } else { "an indexed, non-unique" }),
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
                    format!("copy the rows of {owner} that existed before dual writing into {new}: `{zmig} backfill {name}`", zmig = crate::command_name()),
                    format!("`{zmig} verify {name}` reports 0 rows differing", zmig = crate::command_name()),
                ),
                Stage::ReadNew => (
                    Ships::Code,
                    format!("the application reads ({moved}) from {new} through the generated readers"),
                    "every running instance reads the new table; no code reads the old columns".to_owned(),
                ),
                Stage::WriteNew => (
                    Ships::MigrationAndCode,
                    format!("the foreign key from {new} to {owner} is added and validated; triggers on {new} sync writes back into {owner} for instances still on the previous release; the old columns become nullable; the application writes {new} and stops writing the old columns"),
                    "every running instance writes the new table; nothing reads or writes the old columns".to_owned(),
                ),
                Stage::Contract => (
                    Ships::Migration,
                    format!("drop the sync triggers and functions and the old columns ({moved}) of {owner}"),
                    "done".to_owned(),
                ),
                Stage::Prepare | Stage::Move | Stage::Finalize => unreachable!("a swap stage"),
            };
            let has_sql = matches!(stage, Stage::Expand | Stage::DualWrite | Stage::WriteNew | Stage::Contract);
            Phase { stage, ships, summary, gate, has_sql }
        })
        .collect()
}

/// Every phase of a swap, in order.
pub fn swap_phases(swap: &Swap) -> Vec<Phase> {
    let table = &swap.table.name;
    let old = &swap.old_table().name;
    let new = &swap.new_table().name;
    let temp = &swap.temp_table().name;
    let name = &swap.name;
    let changes = swap
        .columns
        .iter()
        .filter(|c| c.changes())
        .map(|c| match &c.cast_text {
            Some(cast) => format!("{} {} → {} as {cast}", c.name, c.old_type, c.new_type),
            None => format!("{} {} → {}", c.name, c.old_type, c.new_type),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let references = swap
        .references
        .iter()
        .map(|r| format!("{}.{}", r.table.name, r.column))
        .collect::<Vec<_>>()
        .join(", ");
    let with_references = |text: String, more: String| {
        if swap.references.is_empty() {
            text
        } else {
            format!("{text}{more}")
        }
    };
    let with_unique = |text: String| {
        if swap.unique.is_empty() {
            text
        } else {
            let unique = swap
                .unique
                .iter()
                .map(|columns| format!("({})", columns.join(", ")))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{text}; the unique indexes on {unique} stay unique across the three tables (each write claims its values)")
        }
    };
    Stage::SWAP
        .into_iter()
        .map(|stage| {
            let (ships, summary, gate) = match stage {
                Stage::Prepare => (
                    Ships::Migration,
                    with_unique(with_references(
                        format!(
                            "rename {table} to {old}, create {new} and {temp} with the new types ({changes}), and serve {table} as a view over the three whose triggers route every write; the application is unchanged"
                        ),
                        format!("; the references ({references}) get a column of the new type beside them, kept in step by triggers"),
                    )),
                    "the migration is applied everywhere before the move starts".to_owned(),
                ),
                Stage::Move => (
                    Ships::RuntimeTask,
                    with_references(
                        format!("move the rows of {old} and {temp} into {new} in short batches: `{zmig} backfill {name}`", zmig = crate::command_name()),
                        format!(", and fill the new columns beside ({references})"),
                    ),
                    format!("the move has finished: {old} and {temp} are empty, but for rows written since, which finalize moves itself"),
                ),
                Stage::Finalize => (
                    Ships::MigrationAndCode,
                    with_references(
                        format!("in one short transaction move the last rows, drop the view, its triggers, {old} and {temp}, and rename {new} to {table} with its indexes and constraints"),
                        format!("; swap the new columns in for ({references}) and restore their foreign keys"),
                    ),
                    "done once the code deploy follows the migration: `diesel print-schema` shows the new types in schema.rs, and the model's fields take them (i64 for Int8)".to_owned(),
                ),
                _ => unreachable!("an extract stage"),
            };
            let has_sql = matches!(stage, Stage::Prepare | Stage::Finalize);
            Phase { stage, ships, summary, gate, has_sql }
        })
        .collect()
}

// Error-message pieces both resolvers use.

/// A Diesel SQL type as `schema.rs` spells it: `Int4`, `Array<Text>`.
fn describe(ty: &SqlType) -> String {
    match ty {
        SqlType::Named(name) => name.clone(),
        SqlType::Array(inner) => format!("Array<{}>", describe(inner)),
    }
}

/// The tables `schema.rs` declares, for "it has: …".
fn table_list(schema: &Schema) -> String {
    schema
        .tables
        .iter()
        .map(|t| t.rust_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_column(table: &Table, name: &str, file: &std::path::Path) -> String {
    let known = table
        .columns
        .iter()
        .map(|c| c.rust_name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "`{}` has no column `{name}` in {} (it has: {known})",
        table.rust_name,
        file.display()
    )
}
