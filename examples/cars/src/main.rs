//! `cargo run -p cars`: applies the example's pending migrations (zmig's generated ones
//! included) to `DATABASE_URL`, as a service embedding its migrations would at start-up.
//!
//! A swap's prepare and finalize migrations each take brief exclusive locks and give up after a
//! second rather than queue the traffic behind them, so this service retries a migration that
//! gave up, with growing pauses, instead of failing its start.

use diesel::pg::PgConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy};
use zmig_runtime::url::redact;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = PgConnection::establish(&url)?;
    // What it prints names the database, never its password.
    let url = redact(&url);
    let applied = run_pending_with_retry(
        &mut conn,
        MIGRATIONS,
        &RetryPolicy::default(),
        |migration, attempt, error| {
            eprintln!("{url}: {migration} gave up waiting for a lock (attempt {attempt}): {error}; retrying");
        },
    )?;
    match applied.as_slice() {
        [] => println!("{url}: no pending migrations"),
        versions => {
            for version in versions {
                println!("{url}: applied {version}");
            }
        }
    }
    Ok(())
}
