//! `verify`: compares old and new row by row, in chunks of keys, and records the result with
//! who the sync triggers were while it ran. The migrations past the backfill (write_new,
//! contract) refuse to run until the latest recorded verification found no differing row, and
//! only while the triggers it saw are all still in place, firing and unchanged: a verification
//! proves the state now only if nothing could have skipped the sync since.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};

use crate::{check_migration_name, store, Error, Functions, Result};

/// Keys compared per query: one snapshot each, short enough to stay out of the way.
const CHUNK_KEYS: i64 = 50_000;
const EXAMPLES: usize = 10;

/// One owner key that differs, and how.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Difference {
    #[diesel(sql_type = BigInt)]
    pub owner_key: i64,
    /// `missing`, `differs`, `unexpected` or `orphan`.
    #[diesel(sql_type = Text)]
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub differing: i64,
    /// The first few differences, in key order.
    pub examples: Vec<Difference>,
    /// Differences by kind: `(problem, count)`.
    pub by_problem: Vec<(String, i64)>,
    /// Whether write_new is applied: the new table is then the truth, and differences are not
    /// mended by `backfill --again` (which refuses from write_new on).
    pub write_new_applied: bool,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.differing == 0
    }
}

/// Compares every owner with its row in the new table, records the result, and returns it.
pub fn verify(conn: &mut PgConnection, migration: &str) -> Result<VerifyReport> {
    check_migration_name(migration)?;
    let functions = Functions::of(migration);
    #[derive(QueryableByName)]
    struct Present {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let present: Present =
        diesel::sql_query("SELECT count(*) AS n FROM pg_proc WHERE proname IN ($1, $2)")
            .bind::<Text, _>(&functions.diff)
            .bind::<Text, _>(&functions.key_range)
            .get_result(conn)?;
    if present.n != 2 {
        return Err(Error::not_ready(crate::NotReady::PhaseNotApplied, format!(
            "the dual_write migration of `{migration}` is not applied on this database (no {} function); nothing to verify",
            functions.diff
        )));
    }
    store::ensure_tables(conn)?;
    // Read before comparing: a trigger changed after this point shows at the end, and the
    // result is then not recorded.
    let triggers = sync_triggers(conn, migration)?;

    #[derive(QueryableByName)]
    struct KeyRange {
        #[diesel(sql_type = Nullable<BigInt>)]
        lowest: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        highest: Option<i64>,
    }
    let keys: KeyRange = diesel::sql_query(format!(
        "SELECT lowest, highest FROM \"{}\"()",
        functions.key_range
    ))
    .get_result(conn)?;

    // Below, inside and above the owners' keys: rows of the new table outside the owners' range
    // are orphans and must be counted too.
    let mut chunks = Vec::new();
    match (keys.lowest, keys.highest) {
        (Some(lowest), Some(highest)) => {
            chunks.push((i64::MIN, lowest.saturating_sub(1)));
            let mut after = lowest.saturating_sub(1);
            while after < highest {
                let upto = after.saturating_add(CHUNK_KEYS).min(highest);
                chunks.push((after, upto));
                after = upto;
            }
            chunks.push((highest, i64::MAX));
        }
        _ => chunks.push((i64::MIN, i64::MAX)),
    }

    let mut report = VerifyReport {
        differing: 0,
        examples: Vec::new(),
        by_problem: Vec::new(),
        write_new_applied: write_new_applied(conn, migration)?,
    };
    let query = format!(
        "SELECT owner_key, problem FROM \"{}\"($1, $2) ORDER BY owner_key",
        functions.diff
    );
    let timeout = statement_timeout(conn)?;
    for (after, upto) in chunks {
        let started = std::time::Instant::now();
        let found: Vec<Difference> = diesel::sql_query(&query)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(upto)
            .load(conn)
            .map_err(|error| explain_timeout(error, started.elapsed(), timeout.as_ref()))?;
        report.differing += found.len() as i64;
        for difference in found {
            match report
                .by_problem
                .iter_mut()
                .find(|(p, _)| *p == difference.problem)
            {
                Some((_, count)) => *count += 1,
                None => report.by_problem.push((difference.problem.clone(), 1)),
            }
            if report.examples.len() < EXAMPLES {
                report.examples.push(difference);
            }
        }
    }
    let examples = report
        .examples
        .iter()
        .map(|d| format!("{} {}", d.problem, d.owner_key))
        .collect::<Vec<_>>()
        .join(", ");
    if sync_triggers(conn, migration)? != triggers {
        return Err(Error::not_ready(crate::NotReady::SyncTriggersChanged, format!(
            "`{migration}`: the sync triggers changed while verify ran (created, re-created, replaced, \
             disabled or enabled), so writes may have skipped the sync and the result proves nothing; \
             nothing was recorded: run verify again"
        )));
    }
    diesel::sql_query(
        "INSERT INTO zmig_verifications (migration, differing, examples, owner_sync, new_sync)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind::<Text, _>(migration)
    .bind::<BigInt, _>(report.differing)
    .bind::<Text, _>(&examples)
    .bind::<Text, _>(&triggers.owner_sync)
    .bind::<Text, _>(&triggers.new_sync)
    .execute(conn)?;
    Ok(report)
}

/// Who an extract's sync triggers are, each direction: how many fire always, and as one text
/// each one's name and the `oid` and `xmin` of its catalog row and its function's, which change
/// whenever a trigger or its function is created, re-created, replaced, disabled or enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncTriggers {
    pub owner_triggers: i32,
    /// The owner → new triggers (dual_write, `sync = trigger`).
    pub owner_sync: String,
    pub new_triggers: i32,
    /// The new → owner triggers (write_new).
    pub new_sync: String,
}

/// The query write_new's and contract's gates run too (zmig-codegen's
/// `sql::extract::sync_identity_sql`; a test checks that they agree), with the trigger
/// function's name as `$1`.
const SYNC_IDENTITY: &str = "SELECT count(*)::integer AS triggers,
       coalesce(string_agg(format('%s %s/%s %s/%s', t.tgname, t.oid, t.xmin, p.oid, p.xmin), ', '
                           ORDER BY t.tgname), '') AS identity
FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
WHERE p.proname = $1 AND t.tgenabled = 'A'";

pub(crate) fn sync_triggers(conn: &mut PgConnection, migration: &str) -> Result<SyncTriggers> {
    #[derive(QueryableByName)]
    struct Identity {
        #[diesel(sql_type = Integer)]
        triggers: i32,
        #[diesel(sql_type = Text)]
        identity: String,
    }
    let mut of = |function: String| -> Result<Identity> {
        Ok(diesel::sql_query(SYNC_IDENTITY)
            .bind::<Text, _>(function)
            .get_result(conn)?)
    };
    let owner = of(to_new_function(migration))?;
    let new = of(to_old_function(migration))?;
    Ok(SyncTriggers {
        owner_triggers: owner.triggers,
        owner_sync: owner.identity,
        new_triggers: new.triggers,
        new_sync: new.identity,
    })
}

/// Whether write_new's migration is applied (its reverse sync function exists): from then on
/// the new table is the truth, the old columns its copy.
pub(crate) fn write_new_applied(conn: &mut PgConnection, migration: &str) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Applied {
        #[diesel(sql_type = Bool)]
        applied: bool,
    }
    let found: Applied =
        diesel::sql_query("SELECT EXISTS (SELECT FROM pg_proc WHERE proname = $1) AS applied")
            .bind::<Text, _>(to_old_function(migration))
            .get_result(conn)?;
    Ok(found.applied)
}

/// The owner → new sync's trigger function, named as the dual_write migration creates it.
fn to_new_function(migration: &str) -> String {
    Functions::of(migration).to_new
}

/// The new → owner sync's trigger function, named as the write_new migration creates it.
fn to_old_function(migration: &str) -> String {
    Functions::of(migration).to_old
}

/// Records a verification's result, for `status` and the gates of later migrations. The
/// bookkeeping tables must exist.
pub(crate) fn record(
    conn: &mut PgConnection,
    migration: &str,
    differing: i64,
    examples: &str,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO zmig_verifications (migration, differing, examples) VALUES ($1, $2, $3)",
    )
    .bind::<Text, _>(migration)
    .bind::<BigInt, _>(differing)
    .bind::<Text, _>(examples)
    .execute(conn)?;
    Ok(())
}

/// The latest recorded verification: `(differing, when)`.
pub fn last_verification(
    conn: &mut PgConnection,
    migration: &str,
) -> Result<Option<(i64, String)>> {
    check_migration_name(migration)?;
    if !store::tables_exist(conn)? {
        return Ok(None);
    }
    #[derive(QueryableByName)]
    struct Last {
        #[diesel(sql_type = BigInt)]
        differing: i64,
        #[diesel(sql_type = Text)]
        finished_at: String,
    }
    let last: Option<Last> = diesel::sql_query(
        // Ordered by the timestamp itself: ordering by the text (to the second) could pick
        // the wrong one of two verifications a few milliseconds apart.
        "SELECT v.differing, to_char(v.finished_at, 'YYYY-MM-DD HH24:MI:SS TZ') AS finished_at
         FROM zmig_verifications AS v WHERE v.migration = $1 ORDER BY v.finished_at DESC LIMIT 1",
    )
    .bind::<Text, _>(migration)
    .get_result(conn)
    .optional()?;
    Ok(last.map(|l| (l.differing, l.finished_at)))
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use zmig_codegen::sql::extract as generated;

    /// verify records what the gates compare: the same query (the function names are
    /// zmig-core's, for both).
    #[test]
    fn the_sync_identity_agrees_with_the_generated_gate() {
        assert_eq!(super::SYNC_IDENTITY, generated::sync_identity_sql("$1"));
    }
}

/// The session's `statement_timeout` when it is not 0: in milliseconds, and where it was set.
#[derive(Debug, Clone)]
struct StatementTimeout {
    ms: i64,
    source: String,
}

fn statement_timeout(conn: &mut PgConnection) -> Result<Option<StatementTimeout>> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = BigInt)]
        ms: i64,
        #[diesel(sql_type = Text)]
        source: String,
    }
    let setting: Setting = diesel::sql_query(
        "SELECT setting::bigint AS ms, source FROM pg_settings WHERE name = 'statement_timeout'",
    )
    .get_result(conn)?;
    Ok((setting.ms > 0).then_some(StatementTimeout {
        ms: setting.ms,
        source: setting.source,
    }))
}

/// A query that failed once it had run as long as the session's `statement_timeout` allows
/// was cancelled by it (told by the time, which reads the same in any `lc_messages`): say so,
/// where the setting comes from, and how to give zmig's own sessions more.
fn explain_timeout(
    error: diesel::result::Error,
    elapsed: std::time::Duration,
    timeout: Option<&StatementTimeout>,
) -> Error {
    let Some(timeout) = timeout else {
        return error.into();
    };
    if elapsed.as_millis() < timeout.ms as u128 {
        return error.into();
    }
    let set = match timeout.source.as_str() {
        "user" => "for the role (ALTER ROLE … SET statement_timeout)".to_owned(),
        "database" => "for the database (ALTER DATABASE … SET statement_timeout)".to_owned(),
        "database user" => {
            "for the role in this database (ALTER ROLE … IN DATABASE … SET statement_timeout)"
                .to_owned()
        }
        "configuration file" => "in postgresql.conf".to_owned(),
        "client" => "by the client (PGOPTIONS, or the connection URL's options)".to_owned(),
        other => format!("by {other}"),
    };
    Error::not_ready(crate::NotReady::StatementTimeout, format!(
        "a query of {CHUNK_KEYS} owner keys ran into this session's statement_timeout of {} ms, set {set}, \
         and was cancelled ({}); nothing was recorded. Give zmig's own sessions more, e.g. \
         PGOPTIONS='-c statement_timeout=0' (or ?options=-c%20statement_timeout%3D0 in the URL), \
         and run it again",
        timeout.ms,
        crate::one_line(&error.to_string())
    ))
}
