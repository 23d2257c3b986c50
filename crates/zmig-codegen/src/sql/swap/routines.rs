//! The functions prepare creates: the view's INSTEAD OF triggers, the trigger enforcing each
//! foreign key pointing at the table, the move task's batch, and what `status` and `verify` read.

use super::{
    index_in_table_schema, reference_function_name, reference_item, reference_slice_prefix,
    reference_slices, shadow_column, shadow_not_null, table_pages, Names, STATE_TABLE,
};
use crate::plan::{Reference, Swap, SwapColumn};
use crate::sql::{quote_ident as q, quote_literal};

/// Where a row may be, in the order the triggers look. A row a batch moves while a trigger looks
/// for it is found in the table it went to, as long as that table is looked at again later: a
/// lookup that waited for the batch's lock and then finds the row deleted (READ COMMITTED's
/// re-check) goes on to the next table, whose statement sees the batch committed. The move takes
/// rows from old and temp to new, so new comes again after old; the move back takes rows from
/// new and temp to old, which comes after both. Old comes once more at the end for a row that
/// went both ways while one trigger looked (a forward batch still running when a move back
/// started, a rare overlap the runtime keeps short): new, temp, old, new, old.
fn search_order(n: &Names) -> [(&str, bool); 5] {
    [
        (n.new.as_str(), true),
        (n.temp.as_str(), true),
        (n.old.as_str(), false),
        (n.new.as_str(), true),
        (n.old.as_str(), false),
    ]
}

/// The key of a row of `table` (`row` is `""` or an alias with its dot) as an index of that
/// table reads it. The new table has no index on the key itself while rows move into it (see
/// prepare): only `zmig_key`, over the key as the view shows it (`("id")::integer`), so every
/// lookup and ordering there says it that way. Old and temp keep their primary keys.
pub(super) fn key_in(swap: &Swap, n: &Names, table: &str, row: &str) -> String {
    let key = swap.key_column();
    if table == n.new && key.changes() {
        format!("({row}{}::{})", q(&key.name), key.old_type)
    } else {
        format!("{row}{}", q(&key.name))
    }
}

/// A column of a new-structure table (`t."id"`) as the view shows it (`t."id"::integer`).
fn shown(column: &SwapColumn, row: &str, new_structure: bool) -> String {
    if new_structure && column.changes() {
        format!("{row}{}::{}", q(&column.name), column.old_type)
    } else {
        format!("{row}{}", q(&column.name))
    }
}

/// The value of `column` in the new structure, computed from a row of the current structure.
fn forward(column: &SwapColumn, row: &str) -> String {
    match &column.cast {
        Some(cast) => cast.render(row),
        None if column.changes() => format!("{row}.{}::{}", q(&column.name), column.new_type),
        None => format!("{row}.{}", q(&column.name)),
    }
}

/// A condition true when a row of the current structure would not read back the same through
/// the view once moved: the view shows a computed column cast back to its current type, so the
/// expression must keep the value (`price::numeric(12,2)`), not change it (`price / 100`). `None`
/// when no column is computed by an expression (a widening always reads back the same).
fn changes_value(swap: &Swap, row: &str) -> Option<String> {
    let checks: Vec<String> = swap
        .columns
        .iter()
        .filter(|c| c.cast.is_some())
        .map(|c| {
            format!(
                "({})::{} IS DISTINCT FROM {row}.{}",
                forward(c, row),
                c.old_type,
                q(&c.name)
            )
        })
        .collect();
    (!checks.is_empty()).then(|| checks.join(" OR "))
}

/// Refuses a row whose computed columns would not read back the same (see [`changes_value`]).
fn refuse_value_change(swap: &Swap) -> String {
    match changes_value(swap, "NEW") {
        Some(condition) => format!(
            "IF {condition} THEN\n        \
                 RAISE data_exception USING MESSAGE = {};\n    \
             END IF;\n    ",
            quote_literal(&format!(
                "zmig swap {}: a column computed by an expression would not read back the same value through the view; the expression must keep the value",
                swap.name
            ))
        ),
        None => String::new(),
    }
}

fn list(swap: &Swap, f: impl Fn(&SwapColumn) -> String) -> String {
    swap.columns.iter().map(f).collect::<Vec<_>>().join(", ")
}

fn key_error(swap: &Swap, row: &str) -> String {
    format!(
        "format('Key ({})=(%s) already exists.', {row}.{})",
        swap.key,
        q(&swap.key)
    )
}

pub(super) fn insert_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $zmig$\n\
BEGIN\n    \
    {refuse}INSERT INTO {temp} ({columns})\n    \
    VALUES ({values})\n    \
    RETURNING {shown} INTO NEW;\n    \
    IF EXISTS (SELECT FROM {new} WHERE {new_key} = NEW.{key} UNION ALL SELECT FROM {old} WHERE {key} = NEW.{key}) THEN\n        \
        RAISE unique_violation USING\n            \
            MESSAGE = {message},\n            \
            DETAIL = {detail},\n            \
            TABLE = {table_name};\n    \
    END IF;\n    \
    {claim}RETURN NEW;\n\
END\n\
$zmig$;",
        f = n.functions.insert,
        claim = super::unique::claim(swap, n, "    "),
        new_key = key_in(swap, n, &n.new, ""),
        refuse = refuse_value_change(swap),
        temp = n.temp,
        new = n.new,
        old = n.old,
        columns = list(swap, |c| q(&c.name)),
        values = list(swap, |c| forward(c, "NEW")),
        shown = list(swap, |c| shown(c, "", true)),
        message = quote_literal(&format!(
            "duplicate key value violates the primary key of \"{}\"",
            swap.table.name
        )),
        detail = key_error(swap, "NEW"),
        table_name = quote_literal(&swap.table.name),
    )
}

/// Locks the row in `table` and checks it is still the row the statement read (`OLD`). Rows
/// compare by their text form: every type has one, not every type has equality (`json`).
fn lock_unchanged(swap: &Swap, n: &Names, table: &str, new_structure: bool, lock: &str) -> String {
    format!(
        "SELECT ROW({})::text = ROW({})::text INTO unchanged FROM {table} t WHERE {table_key} = OLD.{key} FOR {lock};",
        list(swap, |c| shown(c, "t.", new_structure)),
        list(swap, |c| format!("OLD.{}", q(&c.name))),
        table_key = key_in(swap, n, table, "t."),
        key = q(&swap.key),
    )
}

fn stale_row_error(swap: &Swap) -> String {
    format!(
        "RAISE serialization_failure USING\n                \
             MESSAGE = format('zmig swap {}: row (%s)=(%s) of \"{}\" changed after this statement read it', {}, OLD.{}),\n                \
             HINT = 'retry the transaction; while the table is swapped behind a view a concurrent change is refused rather than overwritten';",
        swap.name,
        swap.table.name,
        quote_literal(&swap.key),
        q(&swap.key)
    )
}

fn key_change_error(swap: &Swap) -> String {
    format!(
        "IF NEW.{key} IS DISTINCT FROM OLD.{key} THEN\n        \
             RAISE feature_not_supported USING MESSAGE = {message};\n    \
         END IF;",
        key = q(&swap.key),
        message = quote_literal(&format!(
            "zmig swap {}: \"{}\".\"{}\" cannot change until the swap is finalized",
            swap.name, swap.table.name, swap.key
        ))
    )
}

pub(super) fn update_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    let mut attempts = String::new();
    for (table, new_structure) in search_order(n) {
        let sets = swap
            .columns
            .iter()
            .filter(|c| c.name != swap.key)
            .map(|c| {
                let value = if new_structure {
                    forward(c, "NEW")
                } else {
                    format!("NEW.{}", q(&c.name))
                };
                format!("{} = {value}", q(&c.name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        attempts.push_str(&format!(
            "    IF NOT done THEN\n        \
                 {lock}\n        \
                 IF FOUND THEN\n            \
                     IF NOT unchanged THEN\n                \
                         {stale}\n            \
                     END IF;\n            \
                     UPDATE {table} SET {sets} WHERE {table_key} = OLD.{key}\n            \
                     RETURNING {shown} INTO NEW;\n            \
                     done := true;\n        \
                 END IF;\n    \
             END IF;\n",
            lock = lock_unchanged(swap, n, table, new_structure, "NO KEY UPDATE"),
            stale = stale_row_error(swap),
            table_key = key_in(swap, n, table, ""),
            shown = list(swap, |c| shown(c, "", new_structure)),
        ));
    }
    format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    unchanged boolean;\n    \
    done boolean := false;\n\
BEGIN\n    \
    {key_change}\n    \
    {refuse}\n\
{reclaim}\
{attempts}    \
    IF NOT done THEN\n\
{unclaim}        \
        RETURN NULL; -- deleted concurrently: 0 rows, as on a table\n    \
    END IF;\n    \
    RETURN NEW;\n\
END\n\
$zmig$;",
        f = n.functions.update,
        reclaim = super::unique::reclaim(swap, n, "    "),
        unclaim = super::unique::release(swap, "        "),
        key_change = key_change_error(swap),
        refuse = refuse_value_change(swap),
    )
}

pub(super) fn delete_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    let mut attempts = String::new();
    for (table, new_structure) in search_order(n) {
        attempts.push_str(&format!(
            "    IF NOT done THEN\n        \
                 {lock}\n        \
                 IF FOUND THEN\n            \
                     IF NOT unchanged THEN\n                \
                         {stale}\n            \
                     END IF;\n            \
                     DELETE FROM {table} WHERE {table_key} = OLD.{key};\n            \
                     done := true;\n        \
                 END IF;\n    \
             END IF;\n",
            lock = lock_unchanged(swap, n, table, new_structure, "UPDATE"),
            stale = stale_row_error(swap),
            table_key = key_in(swap, n, table, ""),
        ));
    }
    let mut foreign_keys = String::new();
    for reference in &swap.references {
        foreign_keys.push_str(&format!(
            "    IF EXISTS (SELECT FROM {table} WHERE {column} = OLD.{key}) THEN\n        \
                 RAISE foreign_key_violation USING\n            \
                     MESSAGE = {message},\n            \
                     DETAIL = format('Key ({})=(%s) is still referenced from table \"{}\".', OLD.{key}),\n            \
                     TABLE = {table_name};\n    \
             END IF;\n",
            swap.key,
            reference.table.name,
            table = reference.table.sql(),
            column = q(&reference.column),
            message = quote_literal(&format!(
                "update or delete on table \"{}\" violates the foreign key of \"{}\".\"{}\"",
                swap.table.name, reference.table.name, reference.column
            )),
            table_name = quote_literal(&swap.table.name),
        ));
    }
    format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    unchanged boolean;\n    \
    done boolean := false;\n\
BEGIN\n\
{attempts}    \
    IF NOT done THEN\n        \
        RETURN NULL; -- deleted concurrently: 0 rows, as on a table\n    \
    END IF;\n\
{release}\
{foreign_keys}    \
    RETURN OLD;\n\
END\n\
$zmig$;",
        f = n.functions.delete,
        release = super::unique::release(swap, "    "),
    )
}

/// The trigger on a referencing table: keeps the shadow column equal, and checks the
/// referenced row exists, locking it `FOR KEY SHARE` as a foreign key's check does.
pub(super) fn reference_function(swap: &Swap, n: &Names, reference: &Reference) -> String {
    let column = q(&reference.column);
    let mut lookups = String::new();
    for (i, (table, _)) in search_order(n).into_iter().enumerate() {
        let guard = if i == 0 {
            String::new()
        } else {
            "IF NOT FOUND THEN ".to_owned()
        };
        let end = if i == 0 { "" } else { " END IF;" };
        lookups.push_str(&format!(
            "        {guard}PERFORM FROM {table} WHERE {table_key} = NEW.{column} FOR KEY SHARE;{end}\n",
            table_key = key_in(swap, n, table, ""),
        ));
    }
    format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $zmig$\n\
BEGIN\n    \
    NEW.{shadow} := NEW.{column};\n    \
    IF NEW.{column} IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.{column} IS DISTINCT FROM OLD.{column}) THEN\n\
{lookups}        \
        IF NOT FOUND THEN\n            \
            RAISE foreign_key_violation USING\n                \
                MESSAGE = {message},\n                \
                DETAIL = format('Key ({})=(%s) is not present in table \"{}\".', NEW.{column}),\n                \
                TABLE = {table_name};\n        \
        END IF;\n    \
    END IF;\n    \
    RETURN NEW;\n\
END\n\
$zmig$;",
        reference.column,
        swap.table.name,
        f = reference_function_name(swap, reference),
        shadow = q(&shadow_column(reference)),
        message = quote_literal(&format!(
            "insert or update on table \"{}\" violates the foreign key of \"{}\" to \"{}\"",
            reference.table.name, reference.column, swap.table.name
        )),
        table_name = quote_literal(&reference.table.name),
    )
}

/// The move's batch: takes up to `max_rows` rows of old, from the end of its heap (`ctid`
/// ranges, read by a TID range scan), then of temp, `FOR UPDATE SKIP LOCKED`, deletes them and
/// inserts them into new in one statement each. From the end, so the old table empties from
/// the end of its file and VACUUM gives those pages back as the move goes instead of at
/// finalize; each range reaches to the end of the file, and its rows go last page first, so a
/// row an update wrote into a page already emptied (the free space map offers those) goes in
/// the next batch rather than keeping the pages above it. The state keeps the lowest page reached (`after`). Keys mostly follow the heap
/// (a serial key, rows appended), so rows reach new highest keys first, and in descending key
/// order within a batch: `zmig_key` (declared `DESC`) takes them as appends at its right edge,
/// and its pages come out full, where ascending entries arriving in descending batches would
/// split every page in half.
pub(super) fn move_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    let columns = list(swap, |c| q(&c.name));
    format!(
        "CREATE FUNCTION {f}(max_rows integer) RETURNS bigint LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    hint bigint;\n    \
    page bigint;\n    \
    span bigint;\n    \
    per_page double precision;\n    \
    moved bigint := 0;\n    \
    batch bigint;\n    \
    changed bigint;\n\
BEGIN\n    \
    SELECT after INTO hint FROM {STATE_TABLE} WHERE swap = {swap} AND item = 'move';\n    \
    page := coalesce(hint, pg_relation_size({old_lit}::regclass) / current_setting('block_size')::bigint);\n    \
    SELECT CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages ELSE 50 END INTO per_page\n    \
    FROM pg_class c WHERE c.oid = {old_lit}::regclass;\n    \
    LOOP\n        \
        -- The next pages down, and every page above them: a row an update wrote up there after\n        \
        -- its page was emptied goes too (VACUUM has given back what is empty above it).\n        \
        span := greatest(1, ceil((max_rows - moved) / per_page))::bigint;\n        \
        page := greatest(0, page - span);\n        \
        WITH picked AS (\n            \
            SELECT {key} FROM {old} WHERE ctid >= format('(%s,0)', page)::tid\n            \
            ORDER BY ctid DESC LIMIT max_rows - moved FOR UPDATE SKIP LOCKED\n        \
        ), gone AS (\n            \
            -- By key, each looked up: a join with picked may walk the key's index from its start.\n            \
            DELETE FROM {old} o WHERE o.{key} = ANY (ARRAY(SELECT {key} FROM picked)) RETURNING o.*\n        \
        ), put AS (\n            \
            INSERT INTO {new} ({columns})\n            \
            SELECT {forward} FROM gone ORDER BY gone.{key} DESC\n            \
            RETURNING {key}\n        \
        ), lossy AS (\n            \
            SELECT count(*) AS n FROM gone WHERE {lossy}\n        \
        )\n        \
        SELECT count(*), (SELECT n FROM lossy) INTO batch, changed FROM put;\n        \
        IF changed > 0 THEN\n            \
            RAISE data_exception USING MESSAGE = {lossy_message};\n        \
        END IF;\n        \
        moved := moved + batch;\n        \
        EXIT WHEN moved >= max_rows OR page = 0;\n    \
    END LOOP;\n    \
    UPDATE {STATE_TABLE} SET after = page WHERE swap = {swap} AND item = 'move';\n    \
    IF moved < max_rows THEN\n        \
        WITH picked AS (\n            \
            SELECT {key} FROM {temp} ORDER BY {key} LIMIT max_rows - moved FOR UPDATE SKIP LOCKED\n        \
        ), gone AS (\n            \
            DELETE FROM {temp} t WHERE t.{key} = ANY (ARRAY(SELECT {key} FROM picked)) RETURNING t.*\n        \
        )\n        \
        INSERT INTO {new} ({columns})\n        \
        SELECT {columns} FROM gone ORDER BY gone.{key} DESC;\n        \
        GET DIAGNOSTICS batch = ROW_COUNT;\n        \
        moved := moved + batch;\n    \
    END IF;\n    \
    RETURN moved;\n\
END\n\
$zmig$;",
        f = n.functions.move_rows,
        swap = n.swap_literal,
        old = n.old,
        old_lit = quote_literal(&n.old),
        new = n.new,
        temp = n.temp,
        forward = list(swap, |c| forward(c, "gone")),
        lossy = changes_value(swap, "gone").unwrap_or_else(|| "false".to_owned()),
        lossy_message = quote_literal(&format!(
            "zmig swap {}: a column computed by an expression would not read back the same value through the view; the expression must keep the value",
            swap.name
        )),
    )
}

/// The move back's batch, the mirror of [`move_function`]: takes up to `max_rows` rows of new
/// (lowest keys first, above a hint of the highest key moved back so far: the old table's rows
/// all lie below them, so its primary key takes them as appends), then of temp,
/// `FOR UPDATE SKIP LOCKED`, deletes them and inserts them into old in the current types, in
/// one statement each. The values come back as the view shows them (`id::integer`), so a row
/// reads the same before and after; a row whose new-structure values would not come out of
/// its old-type values again (the prepare's cast recomputed) is refused rather than changed.
/// Moving rows back also forgets the forward move's hint: rows are in old again below it.
/// `OVERRIDING SYSTEM VALUE`: an identity key of the original keeps its values (a no-op without one).
pub(super) fn move_back_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    let columns = list(swap, |c| q(&c.name));
    let changed: Vec<(usize, &SwapColumn)> = swap
        .columns
        .iter()
        .filter(|c| c.changes())
        .enumerate()
        .collect();
    let moved_value = |i: usize| q(&format!("zmig_new_value_{}", i + 1));
    let back = {
        let mut cols: Vec<String> = swap
            .columns
            .iter()
            .map(|c| format!("{} AS {}", shown(c, "gone.", true), q(&c.name)))
            .collect();
        cols.extend(
            changed
                .iter()
                .map(|(i, c)| format!("gone.{} AS {}", q(&c.name), moved_value(*i))),
        );
        cols.join(", ")
    };
    let lossy = if changed.is_empty() {
        "false".to_owned()
    } else {
        changed
            .iter()
            .map(|(i, c)| {
                format!(
                    "{} IS DISTINCT FROM back.{}",
                    forward(c, "back"),
                    moved_value(*i)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let batch = |table: &str, filter: &str, order: &str, extreme: &str, indent: &str| {
        format!(
            "{indent}WITH picked AS (\n{indent}    \
                 SELECT {table_key} AS k FROM {table}{filter}\n{indent}    \
                 ORDER BY {table_key}{order} LIMIT max_rows - moved FOR UPDATE SKIP LOCKED\n{indent}\
             ), gone AS (\n{indent}    \
                 DELETE FROM {table} t WHERE {row_key} = ANY (ARRAY(SELECT k FROM picked)) RETURNING t.*\n{indent}\
             ), back AS (\n{indent}    \
                 SELECT {back} FROM gone\n{indent}\
             ), put AS (\n{indent}    \
                 INSERT INTO {old} ({columns}) OVERRIDING SYSTEM VALUE\n{indent}    \
                 SELECT {columns} FROM back\n{indent}    \
                 RETURNING {key}\n{indent}\
             ), lossy AS (\n{indent}    \
                 SELECT count(*) AS n FROM back WHERE {lossy}\n{indent}\
             )\n{indent}\
             SELECT count(*), {extreme}({key}), (SELECT n FROM lossy) INTO batch, edge, changed FROM put;\n{indent}\
             IF changed > 0 THEN\n{indent}    \
                 RAISE data_exception USING MESSAGE = {lossy_message};\n{indent}\
             END IF;\n{indent}\
             moved := moved + batch;\n",
            old = n.old,
            table_key = key_in(swap, n, table, ""),
            row_key = key_in(swap, n, table, "t."),
            lossy_message = quote_literal(&format!(
                "zmig swap {}: a row of the new structure would not come back to the same values in the current types; nothing was moved back",
                swap.name
            )),
        )
    };
    format!(
        "CREATE FUNCTION {f}(max_rows integer) RETURNS bigint LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    hint bigint;\n    \
    moved bigint := 0;\n    \
    batch bigint;\n    \
    edge bigint;\n    \
    changed bigint;\n\
BEGIN\n    \
    SELECT after INTO hint FROM {STATE_TABLE} WHERE swap = {swap} AND item = 'move_back';\n    \
    LOOP\n\
{from_new}        \
        IF edge IS NOT NULL THEN\n            \
            UPDATE {STATE_TABLE} SET after = greatest(after, edge) WHERE swap = {swap} AND item = 'move_back';\n        \
        END IF;\n        \
        EXIT WHEN moved >= max_rows OR hint IS NULL;\n        \
        hint := NULL; -- the hint reached the end: one pass from the start for rows skipped while locked\n    \
    END LOOP;\n    \
    IF moved < max_rows THEN\n\
{from_temp}    \
    END IF;\n    \
    IF moved > 0 THEN\n        \
        -- Rows are in old again above the forward move's hint: a later move starts from the last key.\n        \
        UPDATE {STATE_TABLE} SET after = NULL WHERE swap = {swap} AND item = 'move' AND after IS NOT NULL;\n    \
    END IF;\n    \
    RETURN moved;\n\
END\n\
$zmig$;",
        f = n.functions.move_back,
        swap = n.swap_literal,
        from_new = batch(
            &n.new,
            &format!(
                " WHERE {} > coalesce(hint, '-9223372036854775808'::bigint)",
                key_in(swap, n, &n.new, "")
            ),
            "",
            "max",
            "        "
        ),
        from_temp = batch(&n.temp, "", "", "max", "        "),
    )
}

/// The fill of each referencing table's shadow column, page by page in the order of its heap
/// (`ctid` ranges, which PostgreSQL 14 and later read with a TID range scan): no index lookup per
/// row, and the rows of a page are rewritten together, so once the upkeep's VACUUM has made the
/// pages already filled reusable, the new row versions land in them instead of growing the table.
/// The pages the table had at prepare (pages added since hold only rows the trigger filled) are
/// cut into [`super::REFERENCE_SLICES`] slices, each with its state row (`after` the next page to fill,
/// `detail` the page it ends before): a call takes the first slice no other worker holds
/// (`FOR UPDATE SKIP LOCKED`), so workers fill side by side and each slice resumes where its last
/// commit left it. When every slice is done, one worker (holding the reference's own state row)
/// confirms that no row was left behind (a `VACUUM FULL` meanwhile would have moved rows off
/// their pages; then the slices start over, once, over every page), validates the NOT NULL check
/// and marks the reference finished. Returns the rows it filled; 0 only once every reference is
/// finished, -1 when nothing was left but slices other workers are filling.
pub(super) fn sync_refs_function(swap: &Swap, n: &Names) -> String {
    let mut steps = String::new();
    for reference in &swap.references {
        let table = reference.table.sql();
        let column = q(&reference.column);
        let shadow = q(&shadow_column(reference));
        let validate = if reference.nullable {
            String::new()
        } else {
            format!(
                "\n                ALTER TABLE {table} VALIDATE CONSTRAINT {};",
                q(&shadow_not_null(swap, reference))
            )
        };
        let swap_lit = &n.swap_literal;
        let item = reference_item(reference);
        let prefix = reference_slice_prefix(reference);
        let table_lit = quote_literal(&table);
        let pages = table_pages(&table);
        let slice_again = reference_slices(swap_lit, reference, &pages, &" ".repeat(20));
        let stuck = quote_literal(&format!(
            "zmig swap {}: rows of {table} still differ in {} after a pass over every page filled them",
            swap.name,
            shadow_column(reference)
        ));
        steps.push_str(&format!(
            r#"    IF done < max_rows AND NOT (SELECT finished FROM {STATE_TABLE} WHERE swap = {swap_lit} AND item = {item}) THEN
        SELECT CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages ELSE 50 END INTO per_page
        FROM pg_class c WHERE c.oid = {table_lit}::regclass;
        LOOP
            EXIT WHEN done >= max_rows;
            SELECT item, after, detail::bigint AS upto INTO slice FROM {STATE_TABLE}
            WHERE swap = {swap_lit} AND starts_with(item, {prefix}) AND NOT finished
            ORDER BY item LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                IF EXISTS (SELECT FROM {STATE_TABLE} WHERE swap = {swap_lit} AND starts_with(item, {prefix}) AND NOT finished) THEN
                    busy := true; -- the slices left are another worker's
                    EXIT;
                END IF;
                SELECT finished, coalesce(after, 0) AS sweeps INTO state FROM {STATE_TABLE} WHERE swap = {swap_lit} AND item = {item} FOR UPDATE;
                EXIT WHEN state.finished;
                IF EXISTS (SELECT FROM {table} WHERE {shadow} IS DISTINCT FROM {column}) THEN
                    IF state.sweeps > 0 THEN
                        RAISE EXCEPTION USING MESSAGE = {stuck}, HINT = 'look for a trigger of the table that sets the column';
                    END IF;
                    -- a row left its page unfilled (VACUUM FULL, CLUSTER): once more over every page
                    UPDATE {STATE_TABLE} SET after = 1, detail = ({pages})::text WHERE swap = {swap_lit} AND item = {item};
                    {slice_again}
                    CONTINUE;
                END IF;{validate}
                ANALYZE {table} ({shadow});
                UPDATE {STATE_TABLE} SET finished = true WHERE swap = {swap_lit} AND item = {item};
                EXIT;
            END IF;
            page := slice.after;
            LOOP
                EXIT WHEN done >= max_rows OR page >= slice.upto;
                span := least(slice.upto - page, greatest(1, ceil((max_rows - done) / per_page))::bigint);
                UPDATE {table} r SET {shadow} = r.{column}
                WHERE r.ctid >= format('(%s,0)', page)::tid AND r.ctid < format('(%s,0)', page + span)::tid
                  AND r.{shadow} IS DISTINCT FROM r.{column};
                GET DIAGNOSTICS batch = ROW_COUNT;
                done := done + batch;
                page := page + span;
            END LOOP;
            UPDATE {STATE_TABLE} SET after = page, finished = page >= slice.upto WHERE swap = {swap_lit} AND item = slice.item;
        END LOOP;
    END IF;
"#
        ));
    }
    format!(
        "CREATE FUNCTION {f}(max_rows integer) RETURNS bigint LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    state record;\n    \
    slice record;\n    \
    done bigint := 0;\n    \
    busy boolean := false;\n    \
    batch bigint;\n    \
    page bigint;\n    \
    span bigint;\n    \
    per_page double precision;\n\
BEGIN\n\
{steps}    \
    RETURN CASE WHEN done = 0 AND busy THEN -1 ELSE done END;\n\
END\n\
$zmig$;",
        f = n.functions.sync_refs,
    )
}

/// Rows of a table: 0 when its first key (read through the key's index) is gone, an exact count
/// when the planner's estimate says under 10,000 (cheap then, and what a small table's progress
/// needs), the estimate otherwise. VACUUM leaves the estimate of a table the move emptied as it
/// was (it extrapolates from the pages it scanned), so emptiness is looked up, never estimated.
fn row_count(table: &str, key: &str) -> String {
    format!(
        "(SELECT CASE WHEN (SELECT {key} FROM {table} ORDER BY {key} LIMIT 1) IS NULL THEN 0 \
         WHEN c.reltuples >= 10000 THEN c.reltuples::bigint ELSE (SELECT count(*) FROM {table}) END \
         FROM pg_class c WHERE c.oid = {}::regclass)",
        quote_literal(table)
    )
}

pub(super) fn progress_function(swap: &Swap, n: &Names) -> String {
    let refs_left = if swap.references.is_empty() {
        "0::bigint".to_owned()
    } else {
        swap.references
            .iter()
            .map(|r| {
                format!(
                    "(SELECT CASE WHEN s.finished THEN 0 \
                     ELSE ({rows} * (SELECT coalesce(sum(greatest(0, l.detail::bigint - l.after)), 0) \
                     FROM {STATE_TABLE} l WHERE l.swap = s.swap AND starts_with(l.item, {prefix})) \
                     / greatest(1, s.detail::bigint))::bigint END \
                     FROM {STATE_TABLE} s WHERE s.swap = {swap} AND s.item = {item})",
                    rows = row_count(&r.table.sql(), &q(&r.table_key)),
                    swap = n.swap_literal,
                    item = reference_item(r),
                    prefix = reference_slice_prefix(r),
                )
            })
            .collect::<Vec<_>>()
            .join("\n        + ")
    };
    format!(
        "CREATE FUNCTION {f}() RETURNS TABLE (old_rows bigint, temp_rows bigint, new_rows bigint, refs_left bigint, total_bytes bigint)\n\
LANGUAGE sql STABLE AS $zmig$\n    \
    SELECT {old_rows},\n        \
        {temp_rows},\n        \
        {new_rows},\n        \
        {refs_left},\n        \
        pg_total_relation_size({old_lit}) + pg_total_relation_size({temp_lit}) + pg_total_relation_size({new_lit})\n\
$zmig$;",
        f = n.functions.progress,
        old_rows = row_count(&n.old, &q(&swap.key)),
        temp_rows = row_count(&n.temp, &q(&swap.key)),
        new_rows = row_count(&n.new, &key_in(swap, n, &n.new, "")),
        old_lit = quote_literal(&n.old),
        temp_lit = quote_literal(&n.temp),
        new_lit = quote_literal(&n.new),
    )
}

pub(super) fn tables_function(swap: &Swap, n: &Names) -> String {
    let mut rows = vec![
        format!("('old', {}::regclass)", quote_literal(&n.old)),
        format!("('temp', {}::regclass)", quote_literal(&n.temp)),
        format!("('new', {}::regclass)", quote_literal(&n.new)),
        format!("('view', {}::regclass)", quote_literal(&n.table)),
    ];
    rows.extend(
        swap.references
            .iter()
            .map(|r| format!("('ref', {}::regclass)", quote_literal(&r.table.sql()))),
    );
    format!(
        "CREATE FUNCTION {f}() RETURNS TABLE (role text, rel regclass) LANGUAGE sql STABLE AS $zmig$\n    \
             VALUES {}\n\
         $zmig$;",
        rows.join(",\n        "),
        f = n.functions.tables,
    )
}

pub(super) fn check_function(swap: &Swap, n: &Names) -> String {
    let key = q(&swap.key);
    let mut checks = vec![format!(
        "SELECT 'key in two tables', count(DISTINCT k), min(k)::text FROM (\n        \
             SELECT n.{key} AS k FROM {new} n JOIN {old} o ON o.{key} = n.{key}\n        \
             UNION ALL SELECT t.{key} FROM {temp} t JOIN {old} o ON o.{key} = t.{key}\n        \
             UNION ALL SELECT t.{key} FROM {temp} t JOIN {new} n ON n.{key} = t.{key}\n    \
         ) twice",
        new = n.new,
        old = n.old,
        temp = n.temp,
    )];
    for reference in &swap.references {
        let table = reference.table.sql();
        let column = q(&reference.column);
        let shadow = q(&shadow_column(reference));
        let absent = [&n.new, &n.temp, &n.old]
            .iter()
            .map(|t| {
                format!(
                    "NOT EXISTS (SELECT FROM {t} c WHERE {} = r.{column})",
                    key_in(swap, n, t, "c.")
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        checks.push(format!(
            "SELECT {}, count(*), min(r.{column})::text FROM {table} r\n    \
             WHERE r.{column} IS NOT NULL AND {absent}",
            quote_literal(&format!(
                "{}.{} without its row in {}",
                reference.table.name, reference.column, swap.table.name
            )),
        ));
        checks.push(format!(
            "SELECT {}, count(*), min(r.{})::text FROM {table} r WHERE r.{shadow} IS DISTINCT FROM r.{column}",
            quote_literal(&format!(
                "{}.{} not yet copied into {}",
                reference.table.name,
                reference.column,
                shadow_column(reference)
            )),
            q(&reference.table_key),
        ));
    }
    format!(
        "CREATE FUNCTION {f}() RETURNS TABLE (problem text, rows bigint, example text) LANGUAGE sql STABLE AS $zmig$\n    \
             {}\n\
         $zmig$;",
        checks.join("\n    UNION ALL\n    "),
        f = n.functions.check,
    )
}

/// The statements still to run to rebuild, on the shadow columns, the indexes reading the
/// referencing columns: `CREATE INDEX CONCURRENTLY` (after dropping an invalid one a killed
/// build left). Empty once every one is built.
pub(super) fn ref_indexes_function(n: &Names) -> String {
    format!(
        "CREATE FUNCTION {f}() RETURNS SETOF text LANGUAGE plpgsql STABLE AS $zmig$\n\
DECLARE\n    \
    r record;\n    \
    shadow text;\n    \
    valid boolean;\n    \
    definition text;\n    \
    head text;\n\
BEGIN\n    \
    FOR r IN SELECT substr(s.item, 10) AS shadow, s.detail AS original, s.rel, ref.column_name, ref.shadow_name\n             \
             FROM {STATE_TABLE} s\n             \
             JOIN ({refs}) ref (rel, column_name, shadow_name) ON ref.rel = s.rel\n             \
             WHERE s.swap = {swap} AND s.item LIKE 'refindex:%'\n    \
    LOOP\n        \
        shadow := {shadow_index};\n\
{rebuild}        \
        definition := pg_get_indexdef(({original_index})::regclass);\n        \
        head := substring(definition FROM '^CREATE (?:UNIQUE )?INDEX ');\n        \
        definition := substr(definition, length(head) + 1);\n        \
        definition := substr(definition, position(' ON ' IN definition));\n        \
        head := head || 'CONCURRENTLY ' || quote_ident(r.shadow) || left(definition, position(' USING ' IN definition) - 1);\n        \
        definition := substr(definition, position(' USING ' IN definition));\n        \
        definition := regexp_replace(definition, '(^|[^\\w\"])' || quote_ident(r.column_name) || '($|[^\\w\"])', '\\1' || quote_ident(r.shadow_name) || '\\2', 'g');\n        \
        RETURN NEXT head || definition;\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        f = n.functions.ref_indexes,
        swap = n.swap_literal,
        rebuild = skip_valid_drop_invalid("shadow"),
        shadow_index = index_in_table_schema("r", "shadow"),
        original_index = index_in_table_schema("r", "original"),
        refs = n.reference_rows,
    )
}

/// What the move will add to the disk at its peak, beyond what the tables take now, in bytes:
/// prepare checks it against the free space before it changes anything, and the move task
/// before it starts (`zmig_runtime::disk`); one formula for both.
///
/// The move empties the old table from the end of its heap, and its VACUUMs give those pages
/// back as it goes, so the new table's heap takes the place of the old one's: what it adds is,
/// per index of the new table, the old table's average index (the old table keeps its indexes
/// until the move is over), and a tenth of the heap (moved but not yet given back: the movers
/// VACUUM every twentieth, and a VACUUM may miss its moment); the whole heap where the old
/// table's key does not follow its heap (the planner's correlation below 0.9, or unknown), as
/// its pages then empty all over the file and none goes back before the end. Both for the share
/// of rows still to move. Each referencing table grows by about 90 % at the end of its fill (new
/// row versions, the index rebuilt on the shadow column, the rebuild of its other indexes beside
/// the bloated ones). Plus a 15 % margin. `cargo xtask bench swap` measured 1.35 and 0.89 times
/// the sizes before.
pub(super) fn disk_function(n: &Names) -> String {
    format!(
        "CREATE FUNCTION {f}(old regclass, new_indexes bigint, share_left double precision, refs_pending boolean)\n\
RETURNS bigint LANGUAGE sql STABLE AS $zmig$\n    \
    SELECT (1.15 * (\n        \
        (pg_table_size(old) * (\n            \
            SELECT CASE WHEN coalesce(max(s.correlation), 0) >= 0.9 THEN 0.1 ELSE 1 END\n            \
            FROM pg_index i\n            \
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]\n            \
            JOIN pg_class c ON c.oid = i.indrelid\n            \
            JOIN pg_namespace ns ON ns.oid = c.relnamespace\n            \
            JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = c.relname AND s.attname = a.attname\n            \
            WHERE i.indrelid = old AND i.indisprimary)\n         \
         + pg_indexes_size(old)::float8 / greatest(1, (SELECT count(*) FROM pg_index WHERE indrelid = old)) * new_indexes\n        \
        ) * share_left\n        \
        + CASE WHEN refs_pending THEN 0.9 * (SELECT coalesce(sum(pg_total_relation_size(r.rel::regclass)), 0) FROM ({refs}) r (rel, column_name, shadow_name)) ELSE 0 END\n    \
    ))::bigint\n\
$zmig$;",
        f = n.functions.disk_needed,
        refs = n.reference_rows,
    )
}

/// The statements still to run, once the shadow columns are filled, to rebuild the other indexes
/// of each referencing table: the fill rewrote every row, and each index not on the referencing
/// column took a second entry for most of them (its pages split before VACUUM could drop the
/// first), so it is about twice its size. `REINDEX INDEX CONCURRENTLY` builds it again, sorted,
/// while writes go on, and gives the bloated one back. The indexes on the referencing column go
/// at finalize with it, those on the shadow column were just built. First the `DROP INDEX
/// CONCURRENTLY` of an invalid copy a killed rebuild left (`_ccnew`, `_ccold`); last, a statement
/// recording the table done, so a later run lists nothing for it.
pub(super) fn ref_reindex_function(n: &Names) -> String {
    format!(
        "CREATE FUNCTION {f}() RETURNS SETOF text LANGUAGE plpgsql STABLE AS $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT ref.rel::regclass AS rel, ref.column_name, ref.shadow_name\n             \
             FROM ({refs}) ref (rel, column_name, shadow_name)\n             \
             WHERE NOT EXISTS (SELECT FROM {STATE_TABLE} s WHERE s.swap = {swap} AND s.item = 'reindexed:' || ref.rel)\n    \
    LOOP\n        \
        RETURN QUERY SELECT format('DROP INDEX CONCURRENTLY %s', i.indexrelid::regclass)\n        \
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid\n        \
        WHERE i.indrelid = r.rel AND NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$';\n        \
        RETURN QUERY SELECT format('REINDEX INDEX CONCURRENTLY %s', i.indexrelid::regclass)\n        \
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid\n        \
        WHERE i.indrelid = r.rel AND i.indisvalid AND c.relname !~ '_cc(new|old)[0-9]*$'\n          \
          AND NOT EXISTS (\n              \
              SELECT FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid\n              \
              WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid AND d.refobjid = r.rel\n                \
                AND a.attname IN (r.column_name, r.shadow_name));\n        \
        RETURN NEXT format('INSERT INTO {STATE_TABLE} (swap, item) VALUES (%L, %L) ON CONFLICT DO NOTHING', {swap}, 'reindexed:' || r.rel::text);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        f = n.functions.ref_reindex,
        swap = n.swap_literal,
        refs = n.reference_rows,
    )
}

/// In a loop over indexes to build concurrently, with the index's qualified name in the
/// variable `index`: the next one when it is built and valid, and first the `DROP INDEX
/// CONCURRENTLY` of an invalid one a killed build left behind.
fn skip_valid_drop_invalid(index: &str) -> String {
    format!(
        "        SELECT i.indisvalid INTO valid FROM pg_index i WHERE i.indexrelid = to_regclass({index});\n        \
                 CONTINUE WHEN valid;\n        \
                 IF FOUND THEN\n            \
                     RETURN NEXT format('DROP INDEX CONCURRENTLY %s', {index});\n        \
                 END IF;\n"
    )
}

/// The statements still to run to build the new table's primary key index, which prepare put
/// off until the move is over (see prepare): `CREATE UNIQUE INDEX CONCURRENTLY` with the
/// definition the new table's copy of the original had, after dropping an invalid one a killed
/// build left. Empty once it is built.
pub(super) fn key_index_function(n: &Names) -> String {
    format!(
        "CREATE FUNCTION {f}() RETURNS SETOF text LANGUAGE plpgsql STABLE AS $zmig$\n\
DECLARE\n    \
    r record;\n    \
    key_index text;\n    \
    valid boolean;\n\
BEGIN\n    \
    FOR r IN SELECT k.detail AS name, k.rel, d.detail AS definition\n             \
             FROM {STATE_TABLE} k JOIN {STATE_TABLE} d ON d.swap = k.swap AND d.item = 'key_index_def'\n             \
             WHERE k.swap = {swap} AND k.item = 'key_index'\n    \
    LOOP\n        \
        key_index := {key_index};\n\
{rebuild}        \
        RETURN NEXT regexp_replace(r.definition, '^CREATE UNIQUE INDEX ', 'CREATE UNIQUE INDEX CONCURRENTLY ');\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        f = n.functions.key_index,
        swap = n.swap_literal,
        key_index = index_in_table_schema("r", "name"),
        rebuild = skip_valid_drop_invalid("key_index"),
    )
}

/// Drops what prepare created on the view's side (the triggers go with the view).
pub(super) fn drop_routines(n: &Names) -> Vec<String> {
    [
        (&n.functions.insert, ""),
        (&n.functions.update, ""),
        (&n.functions.delete, ""),
        (&n.functions.move_rows, "integer"),
        (&n.functions.move_back, "integer"),
        (&n.functions.sync_refs, "integer"),
        (&n.functions.progress, ""),
        (&n.functions.tables, ""),
        (&n.functions.check, ""),
        (&n.functions.ref_indexes, ""),
        (&n.functions.key_index, ""),
        (&n.functions.ref_reindex, ""),
        (
            &n.functions.disk_needed,
            "regclass, bigint, double precision, boolean",
        ),
    ]
    .into_iter()
    .map(|(f, args)| format!("DROP FUNCTION {f}({args});"))
    .collect()
}
