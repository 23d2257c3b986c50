//! zmig-runtime: what a service links to use zmig.
//!
//! - [`backfill`]: copies the owner rows that existed before dual writing into the new table, in
//!   keyset batches of adaptive size, checkpointed in the database, resumable after a crash, with
//!   several workers (threads or machines) sharing one backfill;
//! - [`verify`]: compares old and new row by row and records the result that gates the
//!   migrations past the backfill;
//! - [`swap`]: a swap's move: rows into the new table behind the view, in batches of adaptive
//!   size from several workers, and its verify and status;
//! - [`migrate`]: runs pending Diesel migrations, retrying a statement that gave up on its
//!   `lock_timeout`;
//! - [`url`]: database URLs without their password, or pointed at another database;
//! - `cli` (feature `cli`): `cargo xtask zmig …` as one library call; `catalog` (feature `cli`):
//!   the database's exact column types, which `generate` copies.
//!
//! ```text
//! #[derive(Queryable, Selectable, Zmig)]
//! #[diesel(table_name = caterers)]
//! #[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = "dual_write")]
//! pub struct Caterer { /* … */ }
//! ```
//!
//! The SQL that reads and writes data lives in the database, in functions the dual_write
//! migration creates (`zmig_<name>_backfill`, `zmig_<name>_diff`, `zmig_<name>_key_range`): it is
//! generated and reviewed with the migrations, and this crate only decides which keys, how many
//! and when.
//!
//! # The generated Rust's types
//!
//! From read_new on (dual_write with `sync = app`) the derive generates a struct for a row of
//! the new table, with readers and writers. Each field takes the type of the model's own field
//! for that column (a renamed column keeps its field's type, the owner key the primary key's),
//! so `balance: BigDecimal` or `created_at: time::OffsetDateTime` stays what the model says.
//! A widened column, and from write_new on every moved column (the model no longer carries
//! them), falls back to [`RustType`]: turn on the features named as Diesel's that the project
//! uses (`serde_json`, `numeric`, `uuid`, `network-address`), implement [`RustType`] for the
//! project's own SQL types (`crate::schema::sql_types::Mood`), and name any other type in the
//! attribute, `extract(…, rust_types(created_at = time::OffsetDateTime))`. Date and time types
//! fall back to chrono. See [`sql_type`] for the whole table.

pub mod backfill;
#[cfg(feature = "cli")]
pub mod catalog;
#[cfg(feature = "cli")]
pub mod cli;
pub mod migrate;
mod model;
mod progress;
pub mod sql_type;
mod store;
pub mod swap;
pub mod url;
pub mod verify;
mod workers;

pub use model::{ExtractInfo, Migration, Stage, SwapInfo, ZmigModel};
pub use sql_type::RustType;

/// `sync = app`: brings the new row of one owner in step, in the caller's transaction. The
/// wrappers `#[derive(Zmig)]` generates call it after every write of an owner.
pub fn sync_owner(
    conn: &mut diesel::pg::PgConnection,
    migration: &str,
    owner_key: i64,
) -> diesel::QueryResult<()> {
    use diesel::RunQueryDsl;
    debug_assert!(check_migration_name(migration).is_ok());
    diesel::sql_query(format!(
        "SELECT \"{}\"($1)",
        Functions::of(migration).sync_owner
    ))
    .bind::<diesel::sql_types::BigInt, _>(owner_key)
    .execute(conn)
    .map(|_| ())
}
#[cfg(feature = "derive")]
pub use zmig_derive::Zmig;

/// Errors from the runtime's database work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("{0}")]
    NotReady(String),
    #[error("a backfill worker panicked")]
    WorkerPanicked,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database functions of a migration, named as the dual_write migration creates them.
/// (zmig-codegen's `sql::extract` spells the same names; a test checks that they agree.)
pub(crate) struct Functions {
    pub backfill: String,
    pub diff: String,
    pub key_range: String,
    pub sync_owner: String,
}

impl Functions {
    pub fn of(migration: &str) -> Functions {
        Functions {
            backfill: format!("zmig_{migration}_backfill"),
            diff: format!("zmig_{migration}_diff"),
            key_range: format!("zmig_{migration}_key_range"),
            sync_owner: format!("zmig_{migration}_sync_owner"),
        }
    }
}

/// A migration name as it may appear in SQL: the attribute allows only `[a-z0-9_]`, and the
/// runtime refuses anything else before a name reaches a query.
pub(crate) fn check_migration_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::NotReady(format!(
            "`{name}` is not a zmig migration name (a-z, 0-9 and _, at most 40 characters)"
        )))
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use zmig_codegen::sql::extract as generated;

    /// The runtime calls the functions the dual_write migration creates: same names, always.
    #[test]
    fn function_names_agree_with_the_generated_migrations() {
        let name = "a_forty_character_migration_name_is_long";
        assert_eq!(name.len(), 40);
        let functions = super::Functions::of(name);
        assert_eq!(functions.backfill, generated::backfill_function_name(name));
        assert_eq!(functions.diff, generated::diff_function_name(name));
        assert_eq!(
            functions.key_range,
            generated::key_range_function_name(name)
        );
        assert!(functions.backfill.len() <= 63);
    }
}
