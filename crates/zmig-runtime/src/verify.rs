//! `verify`: compares old and new row by row, in chunks of keys, and records the result. The
//! migrations past the backfill (write_new, contract) refuse to run until the latest recorded
//! verification found no differing row.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

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
        return Err(Error::NotReady(format!(
            "the dual_write migration of `{migration}` is not applied on this database (no {} function); nothing to verify",
            functions.diff
        )));
    }
    store::ensure_tables(conn)?;

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
    };
    let query = format!(
        "SELECT owner_key, problem FROM \"{}\"($1, $2) ORDER BY owner_key",
        functions.diff
    );
    for (after, upto) in chunks {
        let found: Vec<Difference> = diesel::sql_query(&query)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(upto)
            .load(conn)?;
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
    record(conn, migration, report.differing, &examples)?;
    Ok(report)
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
