//! `cargo run -p caterers`: applies the example's pending migrations (zmig's generated ones
//! included) to `DATABASE_URL`, as a service embedding its migrations would at start-up.

use diesel::pg::PgConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = PgConnection::establish(&url)?;
    let applied = conn.run_pending_migrations(MIGRATIONS)?;
    if applied.is_empty() {
        println!("{url}: no pending migrations");
    }
    for version in applied {
        println!("{url}: applied {version}");
    }
    Ok(())
}
