//! What `#[derive(Zmig)]` says about a model: its migration, as plain constants.

/// The phases of a migration, in the order they ship: an extract's six, then a swap's three
/// (comparing stages means something only within one strategy). The one `zmig-codegen` and the
/// derive use.
pub use zmig_core::Stage;

/// An extract as the attribute declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractInfo {
    /// The migration's name (folder names, `cargo xtask zmig backfill <name>`).
    pub name: &'static str,
    /// The Diesel `table!` name of the owner table.
    pub owner_table: &'static str,
    /// The new table's name in the database.
    pub new_table: &'static str,
    /// `(owner column, new column)` Rust / SQL names of the moved columns.
    pub columns: &'static [(&'static str, &'static str)],
    /// The stage the code is at.
    pub stage: Stage,
}

/// A swap as the attribute declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapInfo {
    /// The migration's name (folder names, `cargo xtask zmig backfill <name>`).
    pub name: &'static str,
    /// The Diesel `table!` name of the swapped table.
    pub table: &'static str,
    /// `(column, new type)`: the Rust name of each column that changes type, and the Diesel SQL
    /// type it changes to, as the attribute writes it (`("id", "Int8")`).
    pub columns: &'static [(&'static str, &'static str)],
    /// The stage the code is at.
    pub stage: Stage,
}

/// The migration a `#[derive(Zmig)]` model takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    Extract(ExtractInfo),
    Swap(SwapInfo),
}

/// Implemented by `#[derive(Zmig)]`.
pub trait ZmigModel {
    const MIGRATION: Migration;
}
