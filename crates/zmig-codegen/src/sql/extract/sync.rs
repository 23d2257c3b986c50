//! The sync triggers of an extract: owner → new from dual_write on, new → owner from write_new
//! on. Both run in the writer's own transaction, and neither echoes the other's writes.

use super::Names;
use crate::plan::{Extract, MovedColumn};
use crate::spec::SyncMode;
use crate::sql::{quote_ident as q, quote_literal, Script};

/// `(NEW."a", NEW."b")`: a row constructor over `columns` read from `row`.
pub(super) fn row_of(row: &str, columns: &[Compared]) -> String {
    let items: Vec<String> = columns
        .iter()
        .map(|(c, as_text)| comparable(format!("{row}.{}", q(c)), *as_text))
        .collect();
    format!("({})", items.join(", "))
}

/// A column as the sync and verify compare it: its SQL name, and whether by its text form.
pub(super) type Compared = (String, bool);

/// `expr` as the sync and verify compare it: by its text form when the type's `=` does not
/// mean "the same value" (see `ExactColumn::compare_text`), else as it is.
pub(super) fn comparable(expr: String, as_text: bool) -> String {
    match (as_text, expr.contains("::")) {
        (false, _) => expr,
        (true, false) => format!("{expr}::text"),
        (true, true) => format!("({expr})::text"),
    }
}

/// The new table's names of the moved columns, in order.
pub(super) fn targets(x: &Extract) -> Vec<Compared> {
    x.columns
        .iter()
        .map(|c| (c.target.clone(), c.compare_text))
        .collect()
}

/// The `WHEN` guard: skip rows written by zmig's own sync in the other direction.
fn not_syncing(x: &Extract) -> String {
    format!(
        "current_setting('zmig.syncing', true) IS DISTINCT FROM {}",
        quote_literal(&x.name)
    )
}

/// Whether the owner row `row` has a row in the new table: it matches the filter, and none of
/// the columns that are NOT NULL in the new table is NULL. From write_new on, the application
/// inserts an owner without the old columns and its new row right after; such an owner
/// carries nothing yet and must not get a row of NULLs.
pub(super) fn carries(x: &Extract, row: &str) -> String {
    let mut parts = Vec::new();
    if let Some(filter) = &x.filter {
        parts.push(filter.on(row));
    }
    for c in x.columns.iter().filter(|c| !c.nullable) {
        parts.push(format!("{row}.{} IS NOT NULL", q(&c.source)));
    }
    if parts.is_empty() {
        "true".to_owned()
    } else {
        parts.join("\n       AND ")
    }
}

fn set_syncing(x: &Extract) -> String {
    format!(
        "PERFORM set_config('zmig.syncing', {}, true);",
        quote_literal(&x.name)
    )
}

const CLEAR_SYNCING: &str = "PERFORM set_config('zmig.syncing', '', true);";

/// The owner → new sync, in the mode the attribute asks for.
pub(super) fn owner_sync(x: &Extract, n: &Names, or_replace: bool, out: &mut Script) {
    match x.sync {
        SyncMode::Trigger => forward_sync(x, n, or_replace, out),
        SyncMode::App => app_sync(x, n, or_replace, out),
    }
}

/// Drops what [`owner_sync`] created.
pub(super) fn drop_owner_sync(x: &Extract, n: &Names) -> Vec<String> {
    match x.sync {
        SyncMode::Trigger => drop_forward_sync(x, n),
        SyncMode::App => vec![format!(
            "DROP FUNCTION IF EXISTS {}(bigint);",
            q(&n.sync_owner)
        )],
    }
}

/// The body shared by the trigger function and the app-mode function: upsert the new row of the
/// owner row `row` when it carries the moved columns, delete it when it does not. `indent` is
/// the depth of the surrounding block; the caller marks the write with `zmig.syncing`.
fn sync_row(x: &Extract, row: &str, indent: &str) -> String {
    let new = x.new_table.sql();
    let mut insert_columns = vec![q(&x.key)];
    let mut values = vec![format!("{row}.{}", q(&x.owner_pk))];
    for c in &x.columns {
        insert_columns.push(q(&c.target));
        values.push(format!("{row}.{}", q(&c.source)));
    }
    let mut updates: Vec<String> = x
        .columns
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", q(&c.target)))
        .collect();
    for t in &x.timestamps {
        insert_columns.push(q(&t.name));
        if t.name == "created_at" {
            values.push(format!("{row}.{}", q(&t.name)));
        } else {
            values.push("now()".to_owned());
            updates.push(format!("{0} = EXCLUDED.{0}", q(&t.name)));
        }
    }
    let targets = targets(x);
    if let Some(own) = x.own_row_column() {
        return indented(&sync_own_row(x, row, own, &insert_columns, &values), indent);
    }
    let body = format!(
        "IF {} THEN\n    INSERT INTO {new} AS n ({})\n    VALUES ({})\n    ON CONFLICT ({}) DO UPDATE\n        SET {}\n        WHERE {} IS DISTINCT FROM {};\nELSE\n    DELETE FROM {new} WHERE {} = {row}.{};\nEND IF;",
        carries(x, row).replace("\n       AND ", "\n   AND "),
        insert_columns.join(", "),
        values.join(", "),
        q(&x.key),
        updates.join(",\n            "),
        row_of("n", &targets),
        row_of("EXCLUDED", &targets),
        q(&x.key),
        q(&x.owner_pk),
    );
    indented(&body, indent)
}

/// [`sync_row`] with a non-unique owner key: only the owner's own row (its primary key is the
/// owner's `own` column) is written or deleted. An update, then an insert when the row is not
/// there: an upsert by primary key would take over a row of another owner, where a plain insert
/// raises unique_violation and the write fails instead of landing in someone else's row.
fn sync_own_row(
    x: &Extract,
    row: &str,
    own: &MovedColumn,
    insert_columns: &[String],
    values: &[String],
) -> String {
    let new = x.new_table.sql();
    let mut sets: Vec<String> = x
        .columns
        .iter()
        .filter(|c| c.target != own.target)
        .map(|c| format!("{} = {row}.{}", q(&c.target), q(&c.source)))
        .collect();
    sets.extend(
        x.timestamps
            .iter()
            .filter(|t| t.name != "created_at")
            .map(|t| format!("{} = now()", q(&t.name))),
    );
    let owner_values: Vec<String> = x
        .columns
        .iter()
        .map(|c| {
            comparable(
                format!("{row}.{}::{}", q(&c.source), c.target_type),
                c.compare_text,
            )
        })
        .collect();
    let its_row = |n: &str| {
        format!(
            "{n}{} = {row}.{} AND {n}{} = {row}.{}",
            q(&own.target),
            q(&own.source),
            q(&x.key),
            q(&x.owner_pk)
        )
    };
    let update = if sets.is_empty() {
        // Only the primary key moved: a row that exists is already right.
        format!("PERFORM FROM {new} AS n WHERE {}", its_row("n."))
    } else {
        format!(
            "UPDATE {new} AS n\n    SET {}\n    WHERE {}\n      AND {} IS DISTINCT FROM ({})",
            sets.join(",\n        "),
            its_row("n."),
            row_of("n", &targets(x)),
            owner_values.join(", "),
        )
    };
    let its_row = its_row("");
    format!(
        "IF {} THEN\n    {update};\n    IF NOT FOUND AND NOT EXISTS (SELECT FROM {new} WHERE {its_row}) THEN\n        INSERT INTO {new} ({})\n        VALUES ({});\n    END IF;\nELSE\n    DELETE FROM {new} WHERE {its_row};\nEND IF;",
        carries(x, row).replace("\n       AND ", "\n   AND "),
        insert_columns.join(", "),
        values.join(", "),
    )
}

/// `text` with every line but empty ones prefixed by `indent`.
fn indented(text: &str, indent: &str) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{indent}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sync = app`: no triggers; the wrappers the derive generates call this function after each
/// write of an owner, in the same transaction.
fn app_sync(x: &Extract, n: &Names, or_replace: bool, out: &mut Script) {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let replace = if or_replace { "OR REPLACE " } else { "" };
    out.comment(&format!(
        "`sync = app`: the application keeps {new} in step by calling this function in the same \
         transaction as each write of an owner, deletes included (the derive's generated wrappers \
         do). Writes that bypass the wrappers are not synced. The owner row is read under the lock \
         the write just took, so the backfill, which locks owners too, never interleaves with it. \
         An owner that is gone (deleted) loses its row: until write_new adds the foreign key, \
         nothing else removes it."
    ));
    out.statement(&format!(
        "CREATE {replace}FUNCTION {}(owner_key bigint) RETURNS void\nLANGUAGE plpgsql AS $zmig$\nDECLARE\n    o {owner}%ROWTYPE;\nBEGIN\n    {}\n    SELECT * INTO o FROM {owner} WHERE {} = owner_key;\n    IF NOT FOUND THEN\n        DELETE FROM {new} WHERE {} = owner_key;\n    ELSE\n{}\n    END IF;\n    {CLEAR_SYNCING}\nEND\n$zmig$;",
        q(&n.sync_owner),
        set_syncing(x),
        q(&x.owner_pk),
        q(&x.key),
        sync_row(x, "o", "        "),
    ));
}

/// The owner → new sync: function and its three triggers. `or_replace` for non-transactional scripts,
/// where a retry must not trip over what a first attempt created.
fn forward_sync(x: &Extract, n: &Names, or_replace: bool, out: &mut Script) {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let replace = if or_replace { "OR REPLACE " } else { "" };
    out.comment(&format!(
        "Keeps {new} in step with {owner}, in the writer's own transaction: a row that carries the\n\
         moved columns is upserted, one that stops carrying them (it left the filter) loses its row.\n\
         Until write_new adds the foreign key, this function is what a foreign key with ON DELETE\n\
         CASCADE ON UPDATE CASCADE would be: a deleted owner loses its row, and an owner whose key\n\
         changes takes its row along. `zmig.syncing` marks the write so the reverse sync added at\n\
         write_new does not echo it back."
    ));
    // With a non-unique owner key, an owner whose own column changes takes its own row along,
    // as an owner whose key changes takes all of its rows.
    let own_row_moves = match x.own_row_column() {
        None => String::new(),
        Some(own) => format!(
            "\n        IF TG_OP = 'UPDATE' AND NEW.{src} IS DISTINCT FROM OLD.{src} THEN\n            IF NEW.{src} IS NULL THEN\n                DELETE FROM {new} WHERE {tgt} = OLD.{src} AND {key} = NEW.{pk};\n            ELSE\n                UPDATE {new} SET {tgt} = NEW.{src} WHERE {tgt} = OLD.{src} AND {key} = NEW.{pk};\n            END IF;\n        END IF;",
            src = q(&own.source),
            tgt = q(&own.target),
            key = q(&x.key),
            pk = q(&x.owner_pk),
        ),
    };
    out.statement(&format!(
        "CREATE {replace}FUNCTION {}() RETURNS trigger\nLANGUAGE plpgsql AS $zmig$\nBEGIN\n    {}\n    IF TG_OP = 'DELETE' THEN\n        DELETE FROM {new} WHERE {key} = OLD.{pk};\n    ELSE\n        IF TG_OP = 'UPDATE' AND NEW.{pk} IS DISTINCT FROM OLD.{pk} THEN\n            UPDATE {new} SET {key} = NEW.{pk} WHERE {key} = OLD.{pk};\n        END IF;{own_row_moves}\n{}\n    END IF;\n    {CLEAR_SYNCING}\n    RETURN NULL;\nEND\n$zmig$;",
        q(&n.to_new),
        set_syncing(x),
        sync_row(x, "NEW", "        "),
        key = q(&x.key),
        pk = q(&x.owner_pk),
    ));

    // What the update trigger watches: the moved columns, what the filter reads, and the key.
    let mut watched: Vec<Compared> = vec![(x.owner_pk.clone(), false)];
    watched.extend(x.columns.iter().map(|c| (c.source.clone(), c.compare_text)));
    if let Some(filter) = &x.filter {
        watched.extend(
            filter
                .filter
                .columns
                .iter()
                .map(|c| (c.clone(), filter.compare_text.contains(c))),
        );
    }
    let mut seen = std::collections::HashSet::new();
    watched.retain(|(c, _)| seen.insert(c.clone()));
    let watched_sql: Vec<String> = watched.iter().map(|(c, _)| q(c)).collect();
    out.comment(
        "New owners that carry the moved columns get their row. `WHEN` keeps the function call off\n\
         the insert path for owners that carry nothing.",
    );
    out.statement(&format!(
        "CREATE {replace}TRIGGER {} AFTER INSERT ON {owner}\nFOR EACH ROW\nWHEN ({}\n      AND {})\nEXECUTE FUNCTION {}();",
        q(&n.to_new_insert),
        not_syncing(x),
        carries(x, "NEW").replace("\n       AND ", "\n      AND "),
        q(&n.to_new)
    ));
    out.comment(
        "Updates sync only when a watched column really changes: an update of other columns (or one\n\
         that rewrites the same values, as a full-struct Diesel update does) costs no function call.",
    );
    out.statement(&format!(
        "CREATE {replace}TRIGGER {} AFTER UPDATE OF {} ON {owner}\nFOR EACH ROW\nWHEN ({}\n      AND {} IS DISTINCT FROM {})\nEXECUTE FUNCTION {}();",
        q(&n.to_new_update),
        watched_sql.join(", "),
        not_syncing(x),
        row_of("OLD", &watched),
        row_of("NEW", &watched),
        q(&n.to_new)
    ));
    out.comment(
        "A deleted owner takes its row along (a foreign key would cascade; see write_new).",
    );
    out.statement(&format!(
        "CREATE {replace}TRIGGER {} AFTER DELETE ON {owner}\nFOR EACH ROW\nWHEN ({})\nEXECUTE FUNCTION {}();",
        q(&n.to_new_delete),
        not_syncing(x),
        q(&n.to_new)
    ));
}

/// The new → owner sync added at write_new, for instances still on the previous release.
pub(super) fn reverse_sync(x: &Extract, n: &Names, out: &mut Script) {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let sources: Vec<Compared> = x
        .columns
        .iter()
        .map(|c| (c.source.clone(), c.compare_text))
        .collect();
    let clear: Vec<String> = x
        .columns
        .iter()
        .map(|c| format!("{} = NULL", q(&c.source)))
        .collect();
    let assign: Vec<String> = x
        .columns
        .iter()
        .map(|c| format!("{} = NEW.{}", q(&c.source), q(&c.target)))
        .collect();
    let news: Vec<String> = x
        .columns
        .iter()
        .map(|c| comparable(format!("NEW.{}", q(&c.target)), c.compare_text))
        .collect();
    let own_note = match x.own_row_column() {
        None => String::new(),
        Some(own) => format!(
            "\nAn owner may have several rows in {new}; only its own flows back: the row whose {tgt}\n\
             equals the owner's {src}, or any row of an owner whose {src} is empty (a brand-new owner\n\
             the new release inserted without the old columns), which then becomes its own. The owner's\n\
             other rows are the new release's alone and leave the old columns as they are.",
            tgt = q(&own.target),
            src = q(&own.source),
        ),
    };
    out.comment(&format!(
        "Writes to {new} flow back into the old columns of {owner}, so instances still running the\n\
         previous release read what the new release wrote. A row deleted (or moved to another owner)\n\
         empties its owner's old columns. Assignments cast back to the old types, so a value the old\n\
         column cannot hold fails the write instead of being cut.{own_note}"
    ));
    // With a filter, a row written for an owner outside it would be deleted by the next edit of
    // that owner through the previous release: refuse it now, loudly, rather than lose it later.
    let filter_guard = match &x.filter {
        None => String::new(),
        Some(filter) => format!(
            "\n        IF NOT EXISTS (SELECT 1 FROM {owner} AS o WHERE o.{pk} = NEW.{key} AND {}) THEN\n            RAISE EXCEPTION USING ERRCODE = 'check_violation',\n                MESSAGE = {},\n                HINT = {};\n        END IF;",
            filter.on("o"),
            quote_literal(&format!("zmig {}: this {} row belongs to a {} row outside the migration's filter", x.name, x.new_table.name, x.owner.name)),
            quote_literal(&format!("only owners matching `{}` have a row in {}", filter.text, x.new_table.name)),
            key = q(&x.key),
            pk = q(&x.owner_pk),
        ),
    };
    let (moved_away, was_own, is_own) = match x.own_row_column() {
        None => (
            format!("NEW.{key} IS DISTINCT FROM OLD.{key}", key = q(&x.key)),
            String::new(),
            String::new(),
        ),
        Some(own) => (
            format!(
                "(NEW.{key}, NEW.{tgt}) IS DISTINCT FROM (OLD.{key}, OLD.{tgt})",
                key = q(&x.key),
                tgt = q(&own.target)
            ),
            format!(" AND {} = OLD.{}", q(&own.source), q(&own.target)),
            format!(
                "\n          AND ({src} = NEW.{tgt} OR {src} IS NULL)",
                src = q(&own.source),
                tgt = q(&own.target)
            ),
        ),
    };
    out.statement(&format!(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger\nLANGUAGE plpgsql AS $zmig$\nBEGIN\n    {}\n    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {moved_away}) THEN\n        UPDATE {owner} SET {}\n        WHERE {pk} = OLD.{key}{was_own};\n    END IF;\n    IF TG_OP <> 'DELETE' THEN\n        UPDATE {owner} SET {}\n        WHERE {pk} = NEW.{key}{is_own}\n          AND {} IS DISTINCT FROM ({});{filter_guard}\n    END IF;\n    {CLEAR_SYNCING}\n    RETURN NULL;\nEND\n$zmig$;",
        q(&n.to_old),
        set_syncing(x),
        clear.join(", "),
        assign.join(",\n            "),
        row_of(&owner, &sources),
        news.join(", "),
        key = q(&x.key),
        pk = q(&x.owner_pk),
    ));
    let mut watched: Vec<Compared> = vec![(x.key.clone(), false)];
    watched.extend(targets(x));
    let watched_sql: Vec<String> = watched.iter().map(|(c, _)| q(c)).collect();
    out.statement(&format!(
        "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR DELETE ON {new}\nFOR EACH ROW\nWHEN ({})\nEXECUTE FUNCTION {}();",
        q(&n.to_old_insert_delete),
        not_syncing(x),
        q(&n.to_old)
    ));
    out.statement(&format!(
        "CREATE OR REPLACE TRIGGER {} AFTER UPDATE OF {} ON {new}\nFOR EACH ROW\nWHEN ({}\n      AND {} IS DISTINCT FROM {})\nEXECUTE FUNCTION {}();",
        q(&n.to_old_update),
        watched_sql.join(", "),
        not_syncing(x),
        row_of("OLD", &watched),
        row_of("NEW", &watched),
        q(&n.to_old)
    ));
}

fn drop_forward_sync(x: &Extract, n: &Names) -> Vec<String> {
    let owner = x.owner.sql();
    vec![
        format!("DROP TRIGGER IF EXISTS {} ON {owner};", q(&n.to_new_insert)),
        format!("DROP TRIGGER IF EXISTS {} ON {owner};", q(&n.to_new_update)),
        format!("DROP TRIGGER IF EXISTS {} ON {owner};", q(&n.to_new_delete)),
        format!("DROP FUNCTION IF EXISTS {}();", q(&n.to_new)),
    ]
}

pub(super) fn drop_reverse_sync(x: &Extract, n: &Names) -> Vec<String> {
    let new = x.new_table.sql();
    vec![
        format!(
            "DROP TRIGGER IF EXISTS {} ON {new};",
            q(&n.to_old_insert_delete)
        ),
        format!("DROP TRIGGER IF EXISTS {} ON {new};", q(&n.to_old_update)),
        format!("DROP FUNCTION IF EXISTS {}();", q(&n.to_old)),
    ]
}
