//! The database a benchmark runs in: created on the server `DATABASE_URL` names, dropped when the
//! benchmark ends (also on error or panic), so runs leave nothing behind.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use zmig_runtime::url::{redact, with_database};

/// The server: `DATABASE_URL`, or the local PostgreSQL.
pub fn server_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A database of the benchmark's own, `zmig_bench_<pid>_<n>`, dropped on drop.
pub struct BenchDb {
    pub name: String,
    pub url: String,
    server: String,
}

impl BenchDb {
    /// A new, empty database.
    pub fn create() -> Result<BenchDb> {
        BenchDb::create_as("")
    }

    /// A new database that is a file-level copy of this one (`CREATE DATABASE … TEMPLATE`):
    /// the same rows on the same pages, statistics and visibility map included. No session may
    /// be connected to this one meanwhile.
    pub fn copy(&self) -> Result<BenchDb> {
        BenchDb::create_as(&format!(" TEMPLATE \"{}\"", self.name))
            .with_context(|| format!("copying database {}", self.name))
    }

    /// `CREATE DATABASE <a new name><clause>`.
    fn create_as(clause: &str) -> Result<BenchDb> {
        let server = server_url();
        let name = format!(
            "zmig_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = PgConnection::establish(&server).with_context(|| {
            format!(
                "cannot reach PostgreSQL at {} (set DATABASE_URL to a server where this user may create databases)",
                redact(&server)
            )
        })?;
        // Two statements: neither may run in a (multi-statement) transaction.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"{clause}"))?;
        let url = with_database(&server, &name);
        Ok(BenchDb { name, url, server })
    }

    pub fn conn(&self) -> Result<PgConnection> {
        PgConnection::establish(&self.url)
            .with_context(|| format!("connecting to {}", redact(&self.url)))
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.server) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Runs `sql` (one or more statements, no parameters).
pub fn exec(conn: &mut PgConnection, sql: &str) -> Result<()> {
    conn.batch_execute(sql)
        .with_context(|| format!("running: {}", first_line(sql)))
}

/// The `bigint` column `n` of the single row `sql` returns.
pub fn count(conn: &mut PgConnection, sql: &str) -> Result<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    Ok(diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .with_context(|| format!("running: {}", first_line(sql)))?
        .n)
}

/// Disk used by `relation` with its indexes and TOAST (`pg_total_relation_size`).
pub fn relation_bytes(conn: &mut PgConnection, relation: &str) -> Result<i64> {
    count(
        conn,
        &format!("SELECT pg_total_relation_size('{relation}')::bigint AS n"),
    )
}

/// The text column `t` of the single row `sql` returns.
pub fn text(conn: &mut PgConnection, sql: &str) -> Result<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        t: String,
    }
    Ok(diesel::sql_query(sql)
        .get_result::<Line>(conn)
        .with_context(|| format!("running: {}", first_line(sql)))?
        .t)
}

/// A checkpoint before a timed step, so every step starts with the same amount of dirty data to
/// write and the same full-page-image cost, and no timed checkpoint falls in the middle of one.
/// Needs a superuser or `pg_checkpoint`; without the right it is skipped.
pub fn checkpoint(conn: &mut PgConnection) {
    let _ = conn.batch_execute("CHECKPOINT");
}

/// `PostgreSQL 15.20` from the server's version string.
pub fn server_version(conn: &mut PgConnection) -> Result<String> {
    let version = text(conn, "SELECT version() AS t")?;
    Ok(version
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}
