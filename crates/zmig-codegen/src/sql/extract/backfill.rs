//! The functions `zmig-runtime` calls to backfill and verify an extract. They live in the
//! database, created by the dual_write migration, so every statement that touches data is
//! generated here, once, and reviewed with the rest of the migration; the runtime only decides
//! which keys, how many, and when.

use super::sync::{carries, comparable, row_of, targets};
use super::Names;
use crate::plan::Extract;
use crate::sql::{quote_ident as q, Script};

/// The batch-copy and diff functions.
pub(super) fn backfill_functions(x: &Extract, n: &Names, or_replace: bool, out: &mut Script) {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let replace = if or_replace { "OR REPLACE " } else { "" };
    let pk = q(&x.owner_pk);
    let key = q(&x.key);

    let mut insert_columns = vec![key.clone()];
    let mut values = vec![format!("o.{pk}")];
    let mut sets = Vec::new();
    for c in &x.columns {
        insert_columns.push(q(&c.target));
        values.push(format!("o.{}", q(&c.source)));
        sets.push(format!("{} = o.{}", q(&c.target), q(&c.source)));
    }
    for t in &x.timestamps {
        insert_columns.push(q(&t.name));
        if t.name == "created_at" {
            values.push(format!("o.{}", q(&t.name)));
        } else {
            values.push("now()".to_owned());
            // As the triggers do: a row changed by the backfill is a row changed now.
            sets.push(format!("{} = now()", q(&t.name)));
        }
    }
    let carries_o = carries(x, "o").replace("\n       AND ", "\n      AND ");
    let in_batch = |column: &str| format!("{column} > after AND {column} <= last_key");
    // With a non-unique owner key, each statement touches an owner's own row only: the one whose
    // primary key is the owner's own column. Its other rows are left alone; a row is stale only
    // when its owner is gone, or it is the own row of an owner that carries nothing.
    let (own_o, own_n, stale) = match x.own_row_column() {
        None => (
            String::new(),
            String::new(),
            format!(
                "NOT EXISTS (SELECT FROM {owner} AS o\n                      \
                 WHERE o.{pk} = n.{key}\n                        \
                 AND {})",
                carries(x, "o").replace("\n       AND ", "\n                        AND ")
            ),
        ),
        Some(own) => (
            format!("\n      AND o.{} = n.{}", q(&own.source), q(&own.target)),
            format!(
                "\n                        AND n.{} = o.{}",
                q(&own.target),
                q(&own.source)
            ),
            format!(
                "(NOT EXISTS (SELECT FROM {owner} AS o WHERE o.{pk} = n.{key})\n           \
                 OR EXISTS (SELECT FROM {owner} AS o\n                      \
                 WHERE o.{pk} = n.{key}\n                        \
                 AND o.{} = n.{}\n                        \
                 AND NOT ({})))",
                q(&own.source),
                q(&own.target),
                carries(x, "o").replace("\n       AND ", " AND ")
            ),
        ),
    };
    out.comment(&format!(
        "One backfill batch: makes {new} right for the owners with keys in (after, upto], at most \
         max_rows of them in key order, and returns the last key it covered. First it locks those \
         owner rows (FOR SHARE) and waits for writers already changing them; from then until this \
         short transaction commits, nobody changes them, and a writer that wants to waits, and its \
         trigger writes after the batch. Each statement after the lock reads a snapshot taken once \
         the lock is held, so it sees every committed write and the rows their triggers wrote, and \
         what it writes cannot race a trigger: a row of {new} can be inserted with a plain INSERT \
         (no speculative insertion) and compared in a plain UPDATE. The statements only touch rows \
         that need it: a batch run again over the same keys writes nothing. Each restricts both \
         tables to the batch's keys, so the plans stay index range scans however stale the new \
         table's statistics are; and each call is planned with its own keys."
    ));
    out.statement(&format!(
        "CREATE {replace}FUNCTION {}(after bigint, upto bigint, max_rows integer)\n\
         RETURNS TABLE (last_key bigint, owners integer, written integer)\n\
         LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $zmig$\n\
         DECLARE\n    \
             changed integer;\n\
         BEGIN\n    \
             SELECT max(b.k), count(*)::integer INTO last_key, owners\n    \
             FROM (SELECT o.{pk}::bigint AS k\n          \
                   FROM {owner} AS o\n          \
                   WHERE o.{pk} > after AND o.{pk} <= upto\n          \
                   ORDER BY o.{pk}\n          \
                   LIMIT max_rows\n          \
                   FOR SHARE OF o) AS b;\n    \
             written := 0;\n    \
             IF last_key IS NULL THEN\n        \
                 RETURN NEXT;\n        \
                 RETURN;\n    \
             END IF;\n\n    \
             -- Rows whose owner is gone or no longer carries the moved columns.\n    \
             DELETE FROM {new} AS n\n    \
             WHERE {n_range}\n      \
               AND {stale};\n    \
             GET DIAGNOSTICS changed = ROW_COUNT;\n    \
             written := written + changed;\n\n    \
             -- Rows whose values differ from their owner's.\n    \
             UPDATE {new} AS n\n    \
             SET {}\n    \
             FROM {owner} AS o\n    \
             WHERE {n_range}\n      \
               AND o.{pk} = n.{key}{own_o}\n      \
               AND {carries_o}\n      \
               AND {} IS DISTINCT FROM ({});\n    \
             GET DIAGNOSTICS changed = ROW_COUNT;\n    \
             written := written + changed;\n\n    \
             -- Owners that carry the moved columns and have no row yet: on a first pass, all of them.\n    \
             INSERT INTO {new} ({})\n    \
             SELECT {}\n    \
             FROM {owner} AS o\n    \
             WHERE {o_range}\n      \
               AND {carries_o}\n      \
               AND NOT EXISTS (SELECT FROM {new} AS n\n                      \
                               WHERE n.{key} = o.{pk}{own_n}\n                        \
                                 AND {n_range});\n    \
             GET DIAGNOSTICS changed = ROW_COUNT;\n    \
             written := written + changed;\n    \
             RETURN NEXT;\n\
         END\n\
         $zmig$;",
        q(&n.backfill),
        sets.join(",\n        "),
        row_of("n", &targets(x)),
        owner_values(x).join(", "),
        insert_columns.join(", "),
        values.join(", "),
        n_range = in_batch(&format!("n.{key}")),
        o_range = in_batch(&format!("o.{pk}")),
    ));

    out.comment(
        "The owner keys the backfill walks: every owner that existed when it started. Owners \
         inserted later are the triggers' business, so a backfill never chases new rows.",
    );
    out.statement(&format!(
        "CREATE {replace}FUNCTION {}()\n\
         RETURNS TABLE (lowest bigint, highest bigint)\n\
         LANGUAGE sql STABLE AS $zmig$\n\
         SELECT min({pk})::bigint, max({pk})::bigint FROM {owner};\n\
         $zmig$;",
        q(&n.key_range),
    ));

    let owner_values = owner_values(x);
    let new_values = row_of("n", &targets(x));
    let mut rows = format!("(SELECT * FROM {new} WHERE {key} > after AND {key} <= upto) AS n");
    let mut own_note = String::new();
    if let Some(own) = x.own_row_column() {
        own_note = format!(
            " The owner key is not unique: an owner is compared with its own row only, the one whose \
             {} equals its {}; its other rows are the new release's alone, neither counted nor compared.",
            q(&own.target),
            q(&own.source)
        );
        rows = format!(
            "(SELECT * FROM {new} AS n\n           \
             WHERE n.{key} > after AND n.{key} <= upto\n             \
             AND NOT EXISTS (SELECT FROM {owner} AS x WHERE x.{pk} = n.{key} AND x.{} IS DISTINCT FROM n.{})) AS n",
            q(&own.source),
            q(&own.target)
        );
    }
    out.comment(&format!(
        "What `zmig verify` counts, for owner keys in (after, upto]: an owner that carries the moved \
         columns but has no row in {new} ('missing'), a row whose values differ ('differs'), a row \
         for an owner that carries nothing ('unexpected'), and a row without an owner ('orphan'). \
         It only reads, in one snapshot, so it sees every writer's transaction whole.{own_note}"
    ));
    // With a non-unique owner key, an owner is compared with its own row only; its other rows
    // are neither 'unexpected' nor 'orphan' while the owner exists.
    out.statement(&format!(
        "CREATE {replace}FUNCTION {}(after bigint, upto bigint)\n\
         RETURNS TABLE (owner_key bigint, problem text)\n\
         LANGUAGE sql STABLE AS $zmig$\n\
         SELECT coalesce(o.{pk}, n.{key})::bigint,\n       \
                CASE WHEN o.{pk} IS NULL THEN 'orphan'\n            \
                     WHEN n.{key} IS NULL THEN 'missing'\n            \
                     WHEN NOT ({carries_o}) THEN 'unexpected'\n            \
                     ELSE 'differs' END\n\
         FROM (SELECT * FROM {owner} WHERE {pk} > after AND {pk} <= upto) AS o\n\
         FULL JOIN {rows} ON n.{key} = o.{pk}\n\
         WHERE o.{pk} IS NULL\n   \
            OR (n.{key} IS NULL AND {carries_o})\n   \
            OR (n.{key} IS NOT NULL AND NOT ({carries_o}))\n   \
            OR (n.{key} IS NOT NULL AND ({}) IS DISTINCT FROM {});\n\
         $zmig$;",
        q(&n.diff),
        owner_values.join(", "),
        new_values,
        carries_o = carries(x, "o").replace("\n       AND ", " AND "),
    ));
}

/// The moved columns of owner row `o` in the new table's types, as the backfill and verify
/// compare them with the new table's row.
fn owner_values(x: &Extract) -> Vec<String> {
    x.columns
        .iter()
        .map(|c| {
            comparable(
                format!("o.{}::{}", q(&c.source), c.target_type),
                c.compare_text,
            )
        })
        .collect()
}

pub(super) fn drop_backfill_functions(n: &Names) -> Vec<String> {
    vec![
        format!("DROP FUNCTION IF EXISTS {}();", q(&n.key_range)),
        format!(
            "DROP FUNCTION IF EXISTS {}(bigint, bigint, integer);",
            q(&n.backfill)
        ),
        format!("DROP FUNCTION IF EXISTS {}(bigint, bigint);", q(&n.diff)),
    ]
}
