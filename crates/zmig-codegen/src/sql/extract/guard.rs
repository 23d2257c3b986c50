//! The check each extract migration starts with: the owner's columns are still what the
//! migration was generated from, exactly (type with its modifiers, collation; at expand also
//! NOT NULL). The types in the SQL below were read from the development database; production
//! may differ (a column widened there by hand, a migration not yet applied), and copying a
//! type that is not the owner's would round or reject values in the sync. The check raises
//! before any other statement, so a refusal changes nothing.

use super::super::filter::RowSql;
use super::super::{quote_literal, Script};
use crate::plan::Extract;
use crate::schema::catalog::collation_sql;
use crate::spec::Stage;

/// The owner's columns this migration relies on, each as `(name, type, collation, NOT NULL)`.
fn relied_on(x: &Extract) -> Vec<(&str, &str, Option<&str>, bool)> {
    let mut columns = vec![(x.owner_pk.as_str(), x.owner_pk_type.as_str(), None, true)];
    columns.extend(x.columns.iter().map(|c| {
        (
            c.source.as_str(),
            c.source_type.as_str(),
            c.collation.as_deref(),
            !c.nullable,
        )
    }));
    columns.extend(
        x.timestamps
            .iter()
            .map(|t| (t.name.as_str(), t.pg_type.as_str(), None, true)),
    );
    columns
}

/// Adds the checks to `up` for `stage`: the owner's columns, then the filter of a migration that
/// compiles it into triggers or functions.
pub(super) fn check_owner_columns(x: &Extract, stage: Stage, up: &mut Script) {
    check_exact_columns(x, stage, up);
    if matches!(stage, Stage::Expand | Stage::DualWrite | Stage::WriteNew) {
        check_filter(x, up);
    }
}

/// The filter depends on the owner's row alone here too: the database this runs on may define a
/// function the filter calls otherwise than the one `generate` asked (see
/// [`crate::sql::filter::Filter::check_sql`]).
fn check_filter(x: &Extract, up: &mut Script) {
    let Some(filter) = &x.filter else {
        return;
    };
    up.comment(&format!(
        "The filter must depend on the row of {} alone, or the triggers, the backfill and verify \
         would disagree about which owners have a row: PostgreSQL says whether it does by accepting \
         it as the predicate of an index, on an empty temporary copy of the table dropped right away. \
         Stop here, with nothing changed, if it refuses.",
        x.owner.sql()
    ));
    up.statement(
        &filter
            .filter
            .check_sql(RowSql::Filter, &x.name, &x.owner.sql(), &filter.text),
    );
}

/// The owner's columns as planned. Nothing for an extract planned from `schema.rs` alone (its
/// types were never exact, so there is nothing exact to hold the database to).
fn check_exact_columns(x: &Extract, stage: Stage, up: &mut Script) {
    if !x.exact_types {
        return;
    }
    // From write_new on the old columns are nullable by design; before it, a NOT NULL that
    // changed means the new table's would be wrong.
    let with_not_null = stage == Stage::Expand;
    let describe = |ty: &str, collation: Option<&str>, not_null: bool| {
        let mut text = ty.to_owned();
        if let Some(collation) = collation {
            text.push_str(&format!(" COLLATE {collation}"));
        }
        if with_not_null && not_null {
            text.push_str(" NOT NULL");
        }
        text
    };
    let expected: Vec<String> = relied_on(x)
        .into_iter()
        .map(|(name, ty, collation, not_null)| {
            format!(
                "({}, {})",
                quote_literal(name),
                quote_literal(&describe(ty, collation, not_null))
            )
        })
        .collect();
    let not_null = if with_not_null {
        "\n               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END"
    } else {
        ""
    };
    let found = format!(
        "format_type(a.atttypid, a.atttypmod)\n               || coalesce(' COLLATE ' || {}, ''){not_null}",
        collation_sql("a", "t")
    );
    let values: Vec<String> = expected
        .iter()
        .map(|row| format!("\n        {row}"))
        .collect();
    up.comment(&format!(
        "The columns of {} this migration copies, as it was generated from them: stop here, with \
         nothing changed, if the database has them otherwise.",
        x.owner.sql()
    ));
    up.statement(&format!(
        "DO $zmig$\n\
DECLARE\n    \
    problem text;\n\
BEGIN\n    \
    SELECT string_agg(format('%s is %s, expected %s', e.name, coalesce(f.found, 'missing'), e.planned), '; ')\n    \
    INTO problem\n    \
    FROM (VALUES{values}\n    ) AS e (name, planned)\n    \
    LEFT JOIN (\n        \
        SELECT a.attname::text AS name,\n               \
               {found} AS found\n        \
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid\n        \
        WHERE a.attrelid = {owner}::regclass AND a.attnum > 0 AND NOT a.attisdropped\n    \
    ) AS f ON f.name = e.name\n    \
    WHERE f.found IS DISTINCT FROM e.planned;\n    \
    IF problem IS NOT NULL THEN\n        \
        RAISE EXCEPTION 'zmig %: the columns of % are not those this migration was generated from: %', {name}, {owner_text}, problem\n            \
            USING HINT = 'zmig generate copied the column types from another database (its DATABASE_URL): apply the migrations this one lacks, or, if this migration has not run anywhere yet, delete its folders and generate again from a database like this one';\n    \
    END IF;\n\
END\n\
$zmig$;",
        values = values.join(","),
        owner = quote_literal(&x.owner.sql()),
        owner_text = quote_literal(&x.owner.name),
        name = quote_literal(&x.name),
    ));
}
