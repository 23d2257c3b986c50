//! The runtime for async services (feature `async`): the backfill, a swap's move, both verifies
//! and the migration runner as futures a tokio service awaits, and the `sync = app` sync step
//! over a `diesel_async::AsyncPgConnection`.
//!
//! Each future runs its sync counterpart on tokio's blocking pool (`spawn_blocking`) and waits
//! for it there, so the service's executor threads never block on zmig's work. That is not a
//! stopgap: the backfill and the move already run their own worker threads, each with its own
//! connection opened from the URL (and the coordinator that keeps the run log), and verify and
//! the migration runner are a handful of long statements; none of them shares a connection with
//! the service's pool, so rewriting them over diesel-async would change who waits where, not how
//! long. The functions keep their sync names and arguments, except that the ones that took a
//! connection take the database URL and open their own, as the backfill does.
//!
//! - The stop flag ([`BackfillOptions::stop`]) works as in the sync call. Dropping the future
//!   (a `select!` that gave up, a task aborted) sets it too: the workers end after their
//!   current batch and the run resumes from there next time, rather than running on, unseen.
//! - Progress is the sync call's ([`ProgressMode`](crate::backfill::ProgressMode)): in a
//!   service, log lines or `tracing` events (target `zmig`), and the run log in the database.
//! - A panic in the work is resumed in the awaiting task, as the sync call would have panicked.
//!
//! ```no_run
//! # async fn service() -> Result<(), zmig_runtime::Error> {
//! use zmig_runtime::backfill::{BackfillOptions, ProgressMode};
//!
//! let url = "postgres://app@db/app";
//! let options = BackfillOptions { workers: 2, progress: ProgressMode::Log, ..BackfillOptions::default() };
//! let report = zmig_runtime::nonblocking::backfill(url, "caterers_addresses", &options).await?;
//! assert!(report.finished);
//! let check = zmig_runtime::nonblocking::verify(url, "caterers_addresses").await?;
//! assert!(check.ok(), "{} rows differ", check.differing);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::migration::{MigrationSource, MigrationVersion};
use diesel::pg::Pg;
use diesel_async::AsyncPgConnection;

use crate::backfill::{BackfillOptions, BackfillReport};
use crate::migrate::{MigrateError, RetryPolicy};
use crate::swap::{MoveOptions, MoveReport, SwapCheck};
use crate::verify::VerifyReport;
use crate::{check_migration_name, workers, Error, Functions, Result};

/// [`crate::backfill::backfill`], awaited: runs (or resumes) the backfill of `migration`
/// against `database_url` on the blocking pool. Dropping the future stops the run after the
/// current batches (see the module docs).
pub async fn backfill(
    database_url: &str,
    migration: &str,
    options: &BackfillOptions,
) -> Result<BackfillReport> {
    let (url, migration) = (database_url.to_owned(), migration.to_owned());
    let (options, mut stop_on_drop) = stoppable(options);
    let ran = off_the_executor("the backfill", move || {
        crate::backfill::backfill(&url, &migration, &options)
    })
    .await;
    stop_on_drop.armed = false;
    ran?
}

/// [`crate::swap::move_rows`], awaited: runs (or resumes) the move of swap `name` on the
/// blocking pool. Dropping the future stops the move after the current batches.
pub async fn move_rows(
    database_url: &str,
    name: &str,
    options: &MoveOptions,
) -> Result<MoveReport> {
    let (url, name) = (database_url.to_owned(), name.to_owned());
    let (options, mut stop_on_drop) = stoppable(options);
    let ran = off_the_executor("the move", move || {
        crate::swap::move_rows(&url, &name, &options)
    })
    .await;
    stop_on_drop.armed = false;
    ran?
}

/// [`crate::verify::verify`], awaited, on a connection of its own: compares every owner with
/// its row in the new table and records the result that gates write_new and contract.
pub async fn verify(database_url: &str, migration: &str) -> Result<VerifyReport> {
    check_migration_name(migration)?;
    let (url, migration) = (database_url.to_owned(), migration.to_owned());
    off_the_executor("verify", move || {
        let mut conn = workers::connect(&url, &migration)?;
        crate::verify::verify(&mut conn, &migration)
    })
    .await?
}

/// [`crate::swap::verify`], awaited, on a connection of its own: checks the rows of swap `name`
/// and records the result for `status`.
pub async fn swap_verify(database_url: &str, name: &str) -> Result<SwapCheck> {
    check_migration_name(name)?;
    let (url, name) = (database_url.to_owned(), name.to_owned());
    off_the_executor("the swap's verify", move || {
        let mut conn = workers::connect(&url, &name)?;
        crate::swap::verify(&mut conn, &name)
    })
    .await?
}

/// [`crate::migrate::run_pending_with_retry`], awaited, on a connection of its own: applies
/// every pending migration of `source` in order, retrying lock timeouts per `policy` (the
/// pauses between tries sleep a blocking-pool thread, not the executor). `on_retry` is called
/// from that thread.
pub async fn run_pending_with_retry<S>(
    database_url: &str,
    source: S,
    policy: &RetryPolicy,
    on_retry: impl FnMut(&str, u32, &str) + Send + 'static,
) -> Result<Vec<MigrationVersion<'static>>, MigrateError>
where
    S: MigrationSource<Pg> + Send + 'static,
{
    use diesel::Connection;
    let (url, policy) = (database_url.to_owned(), policy.clone());
    let ran = off_the_executor("the migration runner", move || {
        let mut conn = diesel::pg::PgConnection::establish(&url).map_err(|error| MigrateError {
            migration: "(connecting to the database)".to_owned(),
            attempts: 1,
            message: crate::one_line(&error.to_string()),
        })?;
        crate::migrate::run_pending_with_retry(&mut conn, source, &policy, on_retry)
    })
    .await;
    match ran {
        Ok(result) => result,
        Err(error) => Err(MigrateError {
            migration: "(the runner's task)".to_owned(),
            attempts: 1,
            message: error.to_string(),
        }),
    }
}

/// `sync = app`: [`crate::sync_owner`] over diesel-async, in the caller's transaction. The
/// `_async` wrappers `#[derive(Zmig)]` generates call it after every write of an owner.
pub async fn sync_owner(
    conn: &mut AsyncPgConnection,
    migration: &str,
    owner_key: i64,
) -> diesel::QueryResult<()> {
    use diesel_async::RunQueryDsl;
    debug_assert!(check_migration_name(migration).is_ok());
    diesel::sql_query(format!(
        "SELECT \"{}\"($1)",
        Functions::of(migration).sync_owner
    ))
    .bind::<diesel::sql_types::BigInt, _>(owner_key)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A future of the `_async` callbacks the derive's wrappers take (`write_owner`, `insert`,
/// `update`): boxed, `Send`, and borrowing the transaction's connection for `'c`, so the
/// wrapper can run it inside `AsyncConnection::transaction` and a multi-threaded runtime can
/// move the task. Write one as `|conn| Box::pin(async move { … .get_result(conn).await })`.
pub type ConnFuture<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = diesel::QueryResult<T>> + Send + 'c>>;

/// `options` with a stop flag (the caller's, or a new one), and a guard that raises it when
/// dropped: a dropped future leaves a run that stops at its next batch, not one that runs on.
fn stoppable(options: &BackfillOptions) -> (BackfillOptions, StopOnDrop) {
    let mut options = options.clone();
    let stop = options
        .stop
        .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
        .clone();
    (options, StopOnDrop { stop, armed: true })
}

/// Raises its flag when dropped while armed: the future is dropped before its run returned.
/// Disarmed once the run returned, so a caller's own flag is left as it was.
struct StopOnDrop {
    stop: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `work` on tokio's blocking pool and waits for it without blocking the executor; a panic
/// in `work` is resumed here. An error only when the runtime shut down under it.
async fn off_the_executor<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(Error::not_ready(
            crate::NotReady::Cancelled,
            format!(
            "{what} was cancelled: the tokio runtime shut down while it ran; what it committed is \
             kept, run it again to resume"
        ),
        )),
    }
}
