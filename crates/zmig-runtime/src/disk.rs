//! A swap's disk: how much its tables take now, how much more the move will take at its peak,
//! and how much the database's file system has free, where that can be found out.
//!
//! The estimate is `zmig_<name>_disk_needed(…)`, a function the prepare migration creates and
//! checks before it changes anything (against `zmig.free_disk_bytes`, which
//! [`crate::migrate::run_pending_with_retry`] sets from [`free_for_database`]): one formula, in
//! zmig-codegen's swap SQL, from the relation sizes, for what the move still has to do.
//! `cargo xtask bench swap` measured 1.35 and 0.89 times the sizes before.
//!
//! PostgreSQL has no function for free disk. zmig reads it with `statvfs` of the tables'
//! directory (the data directory, or the tablespace's location) when PostgreSQL tells that
//! directory (a superuser, or `pg_read_all_settings`, for `data_directory`) and it is on this
//! machine: `pg_stat_file` of it (a superuser, or `pg_read_server_files`) must report the same
//! modification and change times as the directory zmig sees there. Otherwise free space is
//! unknown, and said so: a database on another host, in a container, or a managed service.
//! WAL (`pg_wal`, up to about `max_wal_size`) is not counted in the estimate.

use std::path::Path;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use indicatif::HumanBytes;

use crate::{Error, Result};

/// How the move checks free disk before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskCheck {
    /// Measure free space where PostgreSQL can tell; refuse when it cannot hold the estimate.
    #[default]
    Measure,
    /// Take this many bytes as free (`--assume-free-disk`), for a server zmig cannot measure.
    Assume(u64),
    /// No check (`--skip-disk-check`).
    Skip,
}

/// What the tables of a swap take, and what the move still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEstimate {
    /// The old, temp and new tables, with their indexes and TOAST.
    pub swapped_bytes: i64,
    /// The referencing tables, with their indexes and TOAST.
    pub referencing_bytes: i64,
    /// Bytes the move will add at its peak beyond what the tables take now.
    pub needed_bytes: i64,
    pub free: FreeDisk,
}

/// Free space on the file system holding the swap's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeDisk {
    /// Measured with `statvfs` of this directory.
    Measured { bytes: u64, path: String },
    /// As the caller said (`--assume-free-disk`).
    Assumed(u64),
    /// Could not be measured, for this reason.
    Unknown(String),
}

impl FreeDisk {
    fn bytes(&self) -> Option<u64> {
        match self {
            FreeDisk::Measured { bytes, .. } | FreeDisk::Assumed(bytes) => Some(*bytes),
            FreeDisk::Unknown(_) => None,
        }
    }
}

impl DiskEstimate {
    /// One line for people: sizes, the estimate and free space.
    pub fn summary(&self) -> String {
        let free = match &self.free {
            FreeDisk::Measured { bytes, path } => format!("{} free on {path}", HumanBytes(*bytes)),
            FreeDisk::Assumed(bytes) => format!("{} free (assumed)", HumanBytes(*bytes)),
            FreeDisk::Unknown(why) => format!("free space unknown: {why}"),
        };
        format!(
            "tables {}, referencing tables {}; the move needs about {} more at its peak; {free}",
            bytes(self.swapped_bytes),
            bytes(self.referencing_bytes),
            bytes(self.needed_bytes),
        )
    }

    /// `Err` with the figures and the way out when the free space is known and cannot hold the
    /// estimate.
    pub fn refuse_if_short(&self, swap: &str) -> Result<()> {
        match self.free.bytes() {
            Some(free) if (free as i64) < self.needed_bytes => Err(Error::not_ready(
                crate::NotReady::DiskShort,
                format!(
                "swap `{swap}`: the move needs about {} more disk at its peak, and {}; nothing was \
                 moved. Free disk on the database's server and run it again; or, if the figure \
                 is wrong, give the free space with --assume-free-disk BYTES or skip the check \
                 with --skip-disk-check",
                bytes(self.needed_bytes),
                match &self.free {
                    FreeDisk::Measured { path, .. } =>
                        format!("the file system of {path} has {} free", HumanBytes(free)),
                    _ => format!("{} is free (--assume-free-disk)", HumanBytes(free)),
                }
            ),
            )),
            _ => Ok(()),
        }
    }
}

fn bytes(n: i64) -> HumanBytes {
    HumanBytes(n.max(0) as u64)
}

/// The sizes and the estimate of a swap (its prepare applied, its functions named: `disk_fn` is
/// `zmig_<name>_disk_needed`), with free space measured as `check` says.
pub fn estimate(
    conn: &mut PgConnection,
    tables_fn: &str,
    progress_fn: &str,
    disk_fn: &str,
    check: DiskCheck,
) -> Result<DiskEstimate> {
    #[derive(QueryableByName)]
    struct Sizes {
        #[diesel(sql_type = BigInt)]
        swapped: i64,
        #[diesel(sql_type = BigInt)]
        referencing: i64,
        #[diesel(sql_type = BigInt)]
        needed: i64,
        #[diesel(sql_type = Nullable<Text>)]
        directory: Option<String>,
    }
    let sizes: Sizes = diesel::sql_query(format!(
        "WITH t AS (SELECT role, rel FROM \"{tables_fn}\"()),
              p AS (SELECT * FROM \"{progress_fn}\"()),
              old AS (SELECT rel FROM t WHERE role = 'old'),
              new AS (SELECT rel FROM t WHERE role = 'new')
         SELECT
           (SELECT coalesce(sum(pg_total_relation_size(rel)), 0) FROM t WHERE role IN ('old', 'temp', 'new'))::bigint AS swapped,
           (SELECT coalesce(sum(pg_total_relation_size(rel)), 0) FROM t WHERE role = 'ref')::bigint AS referencing,
           \"{disk_fn}\"(
             (SELECT rel FROM old),
             (SELECT count(*) FROM pg_index i, new WHERE i.indrelid = new.rel),
             (SELECT CASE WHEN old_rows + new_rows = 0 THEN 0 ELSE old_rows::float8 / (old_rows + new_rows) END FROM p),
             (SELECT refs_left > 0 FROM p)
           ) AS needed,
           {directory} AS directory",
        directory = directory_of("(SELECT rel FROM old)"),
    ))
    .get_result(conn)?;
    Ok(DiskEstimate {
        swapped_bytes: sizes.swapped,
        referencing_bytes: sizes.referencing,
        needed_bytes: sizes.needed,
        free: free_disk(conn, sizes.directory, check),
    })
}

/// Free space where this database's tables go by default (its tablespace), as `check` says:
/// what zmig's migration runner gives a swap's prepare migration to check its estimate against.
pub fn free_for_database(conn: &mut PgConnection, check: DiskCheck) -> Result<FreeDisk> {
    #[derive(QueryableByName)]
    struct Directory {
        #[diesel(sql_type = Nullable<Text>)]
        directory: Option<String>,
    }
    let found: Directory = diesel::sql_query(format!(
        "SELECT {} AS directory",
        directory_of("NULL::regclass")
    ))
    .get_result(conn)?;
    Ok(free_disk(conn, found.directory, check))
}

/// SQL for the directory holding the relation `rel` (a regclass expression; NULL for the
/// database's default tablespace), where PostgreSQL shows it to this role.
fn directory_of(rel: &str) -> String {
    format!(
        "(SELECT CASE WHEN spc.spcname IN ('pg_default', 'pg_global')
                      THEN (SELECT setting FROM pg_settings WHERE name = 'data_directory')
                      ELSE nullif(pg_tablespace_location(spc.oid), '') END
          FROM pg_tablespace spc
          WHERE spc.oid = coalesce(nullif((SELECT reltablespace FROM pg_class WHERE oid = {rel}), 0),
                                   (SELECT dattablespace FROM pg_database WHERE datname = current_database())))"
    )
}

fn free_disk(conn: &mut PgConnection, directory: Option<String>, check: DiskCheck) -> FreeDisk {
    match check {
        DiskCheck::Assume(bytes) => FreeDisk::Assumed(bytes),
        DiskCheck::Skip => FreeDisk::Unknown("not checked: --skip-disk-check".to_owned()),
        DiskCheck::Measure => match directory {
            None => FreeDisk::Unknown(
                "PostgreSQL does not show this role the data directory (a superuser or pg_read_all_settings sees it)"
                    .to_owned(),
            ),
            Some(directory) => measure(conn, &directory),
        },
    }
}

/// `statvfs` of `directory`, once it is sure to be the server's own (see the module's doc).
fn measure(conn: &mut PgConnection, directory: &str) -> FreeDisk {
    #[derive(QueryableByName)]
    struct Stat {
        #[diesel(sql_type = BigInt)]
        modified: i64,
        #[diesel(sql_type = BigInt)]
        changed: i64,
    }
    let path = Path::new(directory);
    let Ok(local) = std::fs::metadata(path) else {
        return FreeDisk::Unknown(format!(
            "the database's directory {directory} is not on this machine"
        ));
    };
    let server = diesel::sql_query(
        "SELECT extract(epoch FROM modification)::bigint AS modified, extract(epoch FROM change)::bigint AS changed
         FROM pg_stat_file($1)",
    )
    .bind::<Text, _>(directory)
    .get_result::<Stat>(conn);
    let Ok(server) = server else {
        return FreeDisk::Unknown(format!(
            "cannot confirm {directory} here is the server's: pg_stat_file needs a superuser or pg_read_server_files"
        ));
    };
    if !same_directory(&local, server.modified, server.changed) {
        return FreeDisk::Unknown(format!(
            "{directory} on this machine is not the database's (another host or a container)"
        ));
    }
    match free_bytes(path) {
        Some(bytes) => FreeDisk::Measured {
            bytes,
            path: directory.to_owned(),
        },
        None => FreeDisk::Unknown(format!("statvfs of {directory} failed")),
    }
}

#[cfg(unix)]
fn same_directory(local: &std::fs::Metadata, modified: i64, changed: i64) -> bool {
    use std::os::unix::fs::MetadataExt;
    local.mtime() == modified && local.ctime() == changed
}

#[cfg(not(unix))]
fn same_directory(_: &std::fs::Metadata, _: i64, _: i64) -> bool {
    false
}

/// Bytes an unprivileged writer may still use on the file system of `path` (PostgreSQL does not
/// run as root, so the blocks reserved for root do not count).
#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}
