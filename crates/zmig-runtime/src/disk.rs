//! A swap's disk: how much its tables take now, how much more the move will take at its peak,
//! and how much the database's file system has free, where that can be found out.
//!
//! The estimate comes from the relation sizes (`pg_table_size`, `pg_indexes_size`). The move
//! empties the old table from the end of its heap, and its VACUUMs give those pages back as it
//! goes, so the new table's heap takes the place of the old one's: what it adds is, per index of
//! the new table, the old table's average index (the old table keeps its indexes until the move
//! is over), and a twentieth of the heap moved but not yet given back; the whole heap where the
//! old table's key does not follow its heap (the planner's correlation below 0.9, or unknown),
//! since its pages then empty all over the file and none can go back before the end. Each
//! referencing table grows by about 70 % while its shadow column fills (new row versions, the
//! index rebuilt on the shadow column). Both are scaled by what is left to do, plus a 15 %
//! margin. `cargo xtask bench swap` measured 1.35 and 0.64 times the sizes before.
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
            Some(free) if (free as i64) < self.needed_bytes => Err(Error::NotReady(format!(
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
            ))),
            _ => Ok(()),
        }
    }
}

fn bytes(n: i64) -> HumanBytes {
    HumanBytes(n.max(0) as u64)
}

/// What the move's peak adds to a referencing table, as a share of its size now.
const REFERENCING_GROWTH: f64 = 0.7;

/// The planner's correlation of the old table's key with its heap above which the move, taking
/// the highest keys first, empties the heap from its end, so VACUUM gives the pages back as it
/// goes: a serial key in a table rows were appended to is near 1.
const HEAP_GIVEN_BACK_BELOW: f64 = 0.9;

/// The share of the old table's heap that is moved but not yet given back at any time: the
/// movers VACUUM it every twentieth of the move, and this leaves room for a VACUUM that could not
/// have its lock at once.
const HEAP_BETWEEN_VACUUMS: f64 = 0.1;

/// The estimate's margin over the sum above: the bench's peak came out 8 % above it (the new
/// table's wider key, temp, the free-space and visibility maps).
const MARGIN: f64 = 1.15;

/// The sizes and the estimate of a swap (its prepare applied, its functions named), with free space measured as
/// `check` says.
pub fn estimate(
    conn: &mut PgConnection,
    tables_fn: &str,
    progress_fn: &str,
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
    // What the new table adds while old gives back: per index of new, old's average index,
    // and old's heap and TOAST only where old cannot give its pages back as it empties (its key
    // does not follow its heap; see HEAP_GIVEN_BACK_BELOW), else a tenth of it (what is moved
    // between two VACUUMs); both for the share of rows still in old. Each referencing table
    // grows by REFERENCING_GROWTH of its size for the share of its rows still to fill.
    let sizes: Sizes = diesel::sql_query(format!(
        "WITH t AS (SELECT role, rel FROM \"{tables_fn}\"()),
              p AS (SELECT * FROM \"{progress_fn}\"()),
              old AS (SELECT rel FROM t WHERE role = 'old'),
              new AS (SELECT rel FROM t WHERE role = 'new')
         SELECT
           (SELECT coalesce(sum(pg_total_relation_size(rel)), 0) FROM t WHERE role IN ('old', 'temp', 'new'))::bigint AS swapped,
           (SELECT coalesce(sum(pg_total_relation_size(rel)), 0) FROM t WHERE role = 'ref')::bigint AS referencing,
           ({MARGIN} * (
             (SELECT pg_table_size(rel) * (
                       SELECT CASE WHEN coalesce(max(s.correlation), 0) >= {HEAP_GIVEN_BACK_BELOW} THEN {HEAP_BETWEEN_VACUUMS} ELSE 1 END
                       FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                       JOIN pg_class c ON c.oid = i.indrelid
                       JOIN pg_namespace ns ON ns.oid = c.relnamespace
                       JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = c.relname AND s.attname = a.attname
                       WHERE i.indrelid = old.rel AND i.indisprimary)
                     + pg_indexes_size(rel)::float8
                       / greatest(1, (SELECT count(*) FROM pg_index WHERE indrelid = old.rel))
                       * (SELECT count(*) FROM pg_index i, new WHERE i.indrelid = new.rel)
              FROM old)
             * (SELECT CASE WHEN old_rows + new_rows = 0 THEN 0 ELSE old_rows::float8 / (old_rows + new_rows) END FROM p)
             + (SELECT coalesce(sum(pg_total_relation_size(rel)), 0) FROM t WHERE role = 'ref') * {REFERENCING_GROWTH}
               * (SELECT CASE WHEN refs_left = 0 THEN 0 ELSE 1 END FROM p)
           ))::bigint AS needed,
           (SELECT CASE WHEN spc.spcname IN ('pg_default', 'pg_global')
                        THEN (SELECT setting FROM pg_settings WHERE name = 'data_directory')
                        ELSE nullif(pg_tablespace_location(spc.oid), '') END
            FROM old JOIN pg_class c ON c.oid = old.rel
            JOIN pg_tablespace spc ON spc.oid = CASE WHEN c.reltablespace = 0
                 THEN (SELECT dattablespace FROM pg_database WHERE datname = current_database())
                 ELSE c.reltablespace END) AS directory"
    ))
    .get_result(conn)?;
    let free = match check {
        DiskCheck::Assume(bytes) => FreeDisk::Assumed(bytes),
        DiskCheck::Skip => FreeDisk::Unknown("not checked: --skip-disk-check".to_owned()),
        DiskCheck::Measure => match sizes.directory {
            None => FreeDisk::Unknown(
                "PostgreSQL does not show this role the data directory (a superuser or pg_read_all_settings sees it)"
                    .to_owned(),
            ),
            Some(directory) => measure(conn, &directory),
        },
    };
    Ok(DiskEstimate {
        swapped_bytes: sizes.swapped,
        referencing_bytes: sizes.referencing,
        needed_bytes: sizes.needed,
        free,
    })
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
