//! zmig's bookkeeping tables: backfill runs and their key ranges (the checkpoints), swaps'
//! moves (a run without ranges, for the pause), and verifications, each with the identity of
//! the sync triggers it relied on; and the log of each run (`zmig_run_log`, see [`crate::run_log`]).
//! They are created on first use, in the connection's current schema, and hold nothing of the
//! application's data.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};

use crate::Result;

/// Advisory-lock class for zmig ('zmig' in ASCII), so its locks stand apart from the application's.
pub(crate) const LOCK_CLASS: i32 = 0x7a6d_6967;

/// Creates the bookkeeping tables if they are missing. Serialized by an advisory lock: two
/// workers starting together must not race on `CREATE TABLE IF NOT EXISTS`.
pub(crate) fn ensure_tables(conn: &mut PgConnection) -> Result<()> {
    conn.transaction(|conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind::<Integer, _>(LOCK_CLASS)
            .execute(conn)?;
        conn.batch_execute(
            "CREATE TABLE IF NOT EXISTS zmig_backfill_runs (
                migration text PRIMARY KEY,
                started_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                -- The owner keys walked: every owner that existed when the run started.
                lowest bigint,
                highest bigint,
                paused boolean NOT NULL DEFAULT false,
                -- Who the owner → new sync triggers were when the run started (see
                -- `verify::SyncTriggers`): a run older than a re-created trigger is stale.
                owner_sync text
            );
            CREATE TABLE IF NOT EXISTS zmig_backfill_ranges (
                migration text NOT NULL REFERENCES zmig_backfill_runs ON DELETE CASCADE,
                range_no integer NOT NULL,
                start_after bigint NOT NULL,
                end_at bigint NOT NULL,
                -- The checkpoint: keys up to here are done. Moved in the batch's own transaction.
                done_through bigint NOT NULL,
                owners bigint NOT NULL DEFAULT 0,
                written bigint NOT NULL DEFAULT 0,
                done boolean NOT NULL DEFAULT false,
                worker text,
                updated_at timestamptz,
                PRIMARY KEY (migration, range_no)
            );
            CREATE TABLE IF NOT EXISTS zmig_verifications (
                migration text NOT NULL,
                finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                differing bigint NOT NULL,
                examples text NOT NULL DEFAULT '',
                -- Who the sync triggers were while it ran, each direction (see
                -- `verify::SyncTriggers`): write_new's and contract's gates accept it only while
                -- they are still the same.
                owner_sync text,
                new_sync text,
                PRIMARY KEY (migration, finished_at)
            );
            -- What each run of a backfill or a swap's move did (see `run_log`): its start and
            -- options, a summary of its batches every few seconds, pauses, yields, back-offs,
            -- errors and its end. Written by the run's coordinator, never in a batch's
            -- transaction; a run that starts keeps only the last 20 runs of its migration. The
            -- key serves every read (a migration's last run, a run's events in order).
            CREATE TABLE IF NOT EXISTS zmig_run_log (
                id bigserial,
                migration text NOT NULL,
                task text NOT NULL,
                -- The id of the run's `started` event.
                run bigint NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(),
                worker text,
                kind text NOT NULL,
                \"rows\" bigint,
                batches bigint,
                detail text NOT NULL DEFAULT '',
                PRIMARY KEY (migration, run, id)
            );
            -- Tables an older zmig created lack the columns of the sync triggers. Added only when
            -- missing: ALTER TABLE locks the table even when it has nothing to do.
            DO $zmig$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_attribute
                               WHERE attrelid = 'zmig_backfill_runs'::regclass AND attname = 'owner_sync') THEN
                    ALTER TABLE zmig_backfill_runs ADD COLUMN owner_sync text;
                END IF;
                IF NOT EXISTS (SELECT FROM pg_attribute
                               WHERE attrelid = 'zmig_verifications'::regclass AND attname = 'owner_sync') THEN
                    ALTER TABLE zmig_verifications ADD COLUMN owner_sync text, ADD COLUMN new_sync text;
                END IF;
            END
            $zmig$;",
        )?;
        Ok(())
    })
}

/// Whether the bookkeeping tables exist: readers (status, the last verification) look without
/// creating anything.
pub(crate) fn tables_exist(conn: &mut PgConnection) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }
    let found: Exists = diesel::sql_query(
        "SELECT to_regclass('zmig_backfill_runs') IS NOT NULL
                AND to_regclass('zmig_verifications') IS NOT NULL AS exists",
    )
    .get_result(conn)?;
    Ok(found.exists)
}

/// A backfill run as recorded.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct Run {
    #[diesel(sql_type = Bool)]
    pub paused: bool,
    #[diesel(sql_type = Bool)]
    pub finished: bool,
}

pub(crate) fn load_run(conn: &mut PgConnection, migration: &str) -> Result<Option<Run>> {
    Ok(diesel::sql_query(
        "SELECT paused, finished_at IS NOT NULL AS finished FROM zmig_backfill_runs WHERE migration = $1",
    )
    .bind::<Text, _>(migration)
    .get_result(conn)
    .optional()?)
}

/// Records a run that walks no key ranges (a swap's move: its tables are its state), so that
/// `set_paused` can pause it like a backfill; a run that finished before is open again.
pub(crate) fn open_run(conn: &mut PgConnection, migration: &str) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO zmig_backfill_runs (migration) VALUES ($1)
         ON CONFLICT (migration) DO UPDATE SET finished_at = NULL",
    )
    .bind::<Text, _>(migration)
    .execute(conn)?;
    Ok(())
}

/// Marks the run finished (once: a later call keeps the first time).
pub(crate) fn finish_run(conn: &mut PgConnection, migration: &str) -> Result<()> {
    diesel::sql_query(
        "UPDATE zmig_backfill_runs SET finished_at = now() WHERE migration = $1 AND finished_at IS NULL",
    )
    .bind::<Text, _>(migration)
    .execute(conn)?;
    Ok(())
}

/// Totals over a run's ranges.
#[derive(Debug, Clone, Default, QueryableByName)]
pub(crate) struct RangeTotals {
    #[diesel(sql_type = BigInt)]
    pub ranges: i64,
    #[diesel(sql_type = BigInt)]
    pub ranges_done: i64,
    /// Keys walked so far (summed over ranges).
    #[diesel(sql_type = BigInt)]
    pub keys_done: i64,
    #[diesel(sql_type = BigInt)]
    pub keys_total: i64,
    #[diesel(sql_type = BigInt)]
    pub owners: i64,
    #[diesel(sql_type = BigInt)]
    pub written: i64,
}

pub(crate) fn range_totals(conn: &mut PgConnection, migration: &str) -> Result<RangeTotals> {
    Ok(diesel::sql_query(
        "SELECT count(*)::bigint AS ranges,
                count(*) FILTER (WHERE done)::bigint AS ranges_done,
                coalesce(sum(done_through - start_after), 0)::bigint AS keys_done,
                coalesce(sum(end_at - start_after), 0)::bigint AS keys_total,
                coalesce(sum(owners), 0)::bigint AS owners,
                coalesce(sum(written), 0)::bigint AS written
         FROM zmig_backfill_ranges WHERE migration = $1",
    )
    .bind::<Text, _>(migration)
    .get_result(conn)?)
}

/// A 32-bit key for advisory locks on one migration's ranges.
pub(crate) fn lock_key(migration: &str) -> i32 {
    // FNV-1a: stable across processes and machines, which is all an advisory key needs.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in migration.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}
