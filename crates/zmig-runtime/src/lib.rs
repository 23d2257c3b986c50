//! zmig-runtime: what a service links to use zmig.
//!
//! - [`backfill`]: copies the owner rows that existed before dual writing into the new table, in
//!   keyset batches of adaptive size, checkpointed in the database, resumable after a crash, with
//!   several workers (threads or machines) sharing one backfill;
//! - [`verify`]: compares old and new row by row and records the result that gates the
//!   migrations past the backfill;
//! - [`swap`]: a swap's move: rows into the new table behind the view, in batches of adaptive
//!   size from several workers, and its verify and status;
//! - [`migrate`]: runs pending Diesel migrations, retrying one that gave up waiting for a lock;
//! - [`run_log`]: the log of each backfill and move run, in the database and as `tracing`
//!   events;
//! - [`wide`]: [`wide::WideInt`], an `i64` read from `integer` or `bigint`, for one release that
//!   runs through a swap;
//! - [`url`]: database URLs without their password, or pointed at another database;
//! - `nonblocking` (feature `async`): the backfill, the move, both verifies and the migration
//!   runner as futures for a tokio service, run on the blocking pool so its executor never
//!   waits on them; with it the derive also generates `_async` twins of the readers, writers and
//!   `sync = app` wrappers over `diesel_async::AsyncPgConnection`, re-exported here as
//!   `diesel_async` (features `deadpool` and `bb8` turn on its pools);
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
pub mod disk;
pub mod migrate;
mod model;
#[cfg(feature = "async")]
pub mod nonblocking;
mod progress;
pub mod run_log;
pub mod sql_type;
mod store;
pub mod swap;
pub mod url;
pub mod verify;
pub mod wide;
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

/// diesel-async, as zmig-runtime builds it (feature `async`): the service's connections and
/// pools (`diesel_async::pooled_connection::deadpool` with feature `deadpool`, `…::bb8` with
/// `bb8`) without a dependency of its own that could drift to another version.
#[cfg(feature = "async")]
pub use diesel_async;

/// What the code `#[derive(Zmig)]` generates names, and nothing else may rely on: these paths
/// can change in any release.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "async")]
    pub use diesel_async;
}

/// Errors from the runtime's database work. Each displays as one line that carries the
/// database's own message (and its hint), so the error it wraps is not its `source()` as well:
/// a report that prints the chain (`{:#}`) would say everything twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the database: {}", one_line(&.0.to_string()))]
    Connect(diesel::ConnectionError),
    #[error("{}", database_message(.0))]
    Database(diesel::result::Error),
    /// Something the operation needs is not so (see [`NotReady`]); nothing was changed. The
    /// message says what, and what to do.
    #[error("{message}")]
    NotReady { reason: NotReady, message: String },
    #[error("a backfill worker panicked")]
    WorkerPanicked,
    /// A worker's session ended under it: the database keeps what its batches committed.
    #[error("worker {worker} lost its connection to the database ({message}){LOST_CONNECTION}")]
    WorkerConnectionLost { worker: usize, message: String },
}

/// Which precondition an [`Error::NotReady`] is about, for a caller that handles one of them
/// (waits and retries on [`NotReady::NoConnection`], says where to free disk on
/// [`NotReady::DiskShort`]) rather than reporting the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// A name zmig never gives a migration.
    BadMigrationName,
    /// The migration the operation works on (dual_write for a backfill or verify, prepare for
    /// a swap's move) is not applied on this database.
    PhaseNotApplied,
    /// Pausing or resuming a backfill that never started here.
    NoBackfillStarted,
    /// A backfill after write_new, which would overwrite newer values with older ones.
    WriteNewApplied,
    /// The sync triggers changed while verify ran: its result proves nothing.
    SyncTriggersChanged,
    /// A query ran into the session's `statement_timeout`.
    StatementTimeout,
    /// The free disk cannot hold what the swap's move will add at its peak.
    DiskShort,
    /// The async runtime shut down while the work ran.
    Cancelled,
    /// The run log's connection is down, and retried later.
    NoConnection,
    /// A move and a move back of a swap: the other direction was started.
    OtherDirection,
    /// The prepare migration's functions do not say what they should.
    PrepareDamaged,
}

impl Error {
    pub(crate) fn not_ready(reason: NotReady, message: String) -> Error {
        Error::NotReady { reason, message }
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(error: diesel::ConnectionError) -> Self {
        Error::Connect(error)
    }
}

impl From<diesel::result::Error> for Error {
    fn from(error: diesel::result::Error) -> Self {
        Error::Database(error)
    }
}

impl Error {
    /// Whether the session this error came from is gone (the server closed it, or the network).
    pub fn is_connection_lost(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error as Diesel};
        matches!(
            self,
            Error::Database(Diesel::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            )) | Error::WorkerConnectionLost { .. }
        )
    }

    /// The message of the database error, on one line (libpq's own end in a newline, or span
    /// several).
    pub(crate) fn database_text(&self) -> String {
        match self {
            Error::Database(diesel::result::Error::DatabaseError(_, info)) => {
                one_line(info.message())
            }
            other => one_line(&other.to_string()),
        }
    }
}

/// What a lost connection means and what to do: everything zmig does is kept as it commits, and
/// resumes (a backfill, a move) or runs again (verify) from what the database holds.
const LOST_CONNECTION: &str = ": the server ended the session (pg_terminate_backend, a restart, a timeout \
     such as idle_session_timeout) or the network failed; what was done is kept, run it again to resume";

/// A database error as one line: the server's message, then its hint when it gives one (zmig's
/// own migrations and functions say there what to do).
fn database_message(error: &diesel::result::Error) -> String {
    use diesel::result::{DatabaseErrorKind, Error as Diesel};
    match error {
        Diesel::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            info,
        ) => format!(
            "zmig lost its connection to the database ({}){LOST_CONNECTION}",
            one_line(info.message())
        ),
        Diesel::DatabaseError(_, info) => {
            let mut text = format!("database error: {}", one_line(info.message()));
            if let Some(hint) = info.hint() {
                text.push_str(&format!(" (hint: {})", one_line(hint)));
            }
            text
        }
        other => format!("database error: {}", one_line(&other.to_string())),
    }
}

/// `text` with its line breaks and runs of blanks made single spaces, trimmed.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database functions of a migration, named as the dual_write migration creates them (the
/// names zmig-codegen spells them with).
pub(crate) type Functions = zmig_core::names::ExtractNames;

/// A migration name as it may appear in SQL: the attribute allows only names that
/// [`zmig_core::names::is_migration_name`] accepts, and the runtime refuses anything else before
/// a name reaches a query.
pub(crate) fn check_migration_name(name: &str) -> Result<()> {
    if zmig_core::names::is_migration_name(name) {
        Ok(())
    } else {
        Err(Error::not_ready(crate::NotReady::BadMigrationName, format!(
            "`{name}` is not a zmig migration name (a-z, 0-9 and _, starting with a letter, at most 40 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::{check_migration_name, Error, NotReady};

    #[test]
    fn a_refused_precondition_says_which_and_why() {
        let error = check_migration_name("9_lives").unwrap_err();
        assert!(
            matches!(
                error,
                Error::NotReady {
                    reason: NotReady::BadMigrationName,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "`9_lives` is not a zmig migration name (a-z, 0-9 and _, starting with a letter, at most 40 characters)"
        );
        assert!(check_migration_name("cars_bigint").is_ok());
    }
}
