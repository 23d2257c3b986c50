//! The Diesel schema as `diesel print-schema` writes it: tables, columns, SQL types, joins;
//! and, from the database itself ([`catalog`]), what `schema.rs` cannot say about a column.
//!
//! Names, Diesel types and nullability come from the same `schema.rs` the application compiles
//! against, so generated SQL and generated Rust agree with each other. But `schema.rs` is a lossy
//! copy of the database: `numeric(12,2)` prints as `Numeric`, defaults and collations not at
//! all. What generated SQL copies (a moved column's type, default, collation, comment) is read
//! from the database once, when a migration is first planned, and recorded with it.

pub mod catalog;
mod parse;
mod types;

pub use catalog::{Catalog, ExactColumn};
pub use parse::parse_schema;
pub use types::{canonical_name, is_widening, pg_type_for, same_type, SqlTypeError};

use std::path::PathBuf;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Everything zmig needs from one `schema.rs` file.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Schema {
    /// The file it was read from, for error messages.
    pub file: PathBuf,
    pub tables: Vec<Table>,
    /// Types declared in `pub mod sql_types { … }` (custom PostgreSQL types, enums).
    pub custom_types: Vec<CustomType>,
    /// `joinable!(child -> parent (fk))` lines.
    pub joinables: Vec<Joinable>,
}

impl Schema {
    /// The table whose Rust name (the `table!` identifier) is `rust_name`.
    pub fn table(&self, rust_name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.rust_name == rust_name)
    }

    pub fn custom_type(&self, rust_name: &str) -> Option<&CustomType> {
        self.custom_types.iter().find(|t| t.rust_name == rust_name)
    }
}

/// One `table!` block.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Table {
    /// The identifier in `table!` (what Rust code names it), `r#` stripped.
    pub rust_name: String,
    /// The name in the database: `#[sql_name = "…"]` or the identifier.
    pub sql_name: String,
    /// `schema.table` in `table!` names a PostgreSQL schema.
    pub pg_schema: Option<String>,
    /// Rust names of the primary-key columns (`table! { users (id) { … } }`; `id` when omitted).
    pub primary_key: Vec<String>,
    pub columns: Vec<Column>,
    /// Doc comment on the table, lines joined with `\n`.
    pub doc: Option<String>,
    /// 1-based line of the table's name in `schema.rs`.
    pub line: usize,
}

impl Table {
    pub fn column(&self, rust_name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.rust_name == rust_name)
    }
}

/// One column line in a `table!` block.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Column {
    /// The identifier Rust code uses, `r#` stripped (`type` for `r#type`).
    pub rust_name: String,
    /// The name in the database: `#[sql_name = "…"]` or the identifier.
    pub sql_name: String,
    /// The Diesel SQL type with `Nullable<…>` removed.
    pub ty: SqlType,
    /// Whether the type was wrapped in `Nullable<…>`.
    pub nullable: bool,
    /// `#[max_length = N]`.
    pub max_length: Option<u32>,
    pub doc: Option<String>,
    /// 1-based line of the column in `schema.rs`.
    pub line: usize,
    /// The column as the database has it, when zmig read it there ([`catalog`]); `None` in a
    /// freshly parsed `schema.rs` and in records written before zmig read the database.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exact: Option<ExactColumn>,
}

/// A Diesel SQL type as written in `schema.rs`, without the outer `Nullable`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum SqlType {
    /// `Int4`, `Text`, `Timestamptz`, `Varchar`, or a custom type's Rust name: the last path
    /// segment as written.
    Named(String),
    /// `Array<T>`; inner nullability is kept because `Array<Nullable<Text>>` is still `text[]`.
    Array(Box<SqlType>),
}

/// A type from `pub mod sql_types`: `#[diesel(postgres_type(name = "mood", schema = "app"))]`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct CustomType {
    pub rust_name: String,
    pub pg_name: String,
    pub pg_schema: Option<String>,
}

/// `joinable!(child -> parent (foreign_key))`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Joinable {
    pub child: String,
    pub parent: String,
    pub foreign_key: String,
}

/// A `schema.rs` that could not be read, with the place that is wrong.
#[derive(Debug)]
pub struct SchemaError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

// By hand rather than with thiserror, as `SqlTypeError`: one syn major on the derive's path.
impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let SchemaError {
            file,
            line,
            column,
            message,
        } = self;
        write!(f, "{}:{line}:{column}: {message}", file.display())
    }
}

impl std::error::Error for SchemaError {}
