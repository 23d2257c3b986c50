//! A unique index besides the primary key, kept unique across the three tables while the swap
//! runs (`unique(vin)` in the attribute).
//!
//! Old and new keep their copies of the index, which catch two rows of the same table; temp's
//! copy goes (its rows are all claimed, below), so that every clash names the original index.
//! Across tables, a row written while the swap runs (inserted, or its indexed columns changed) first
//! *claims* its values in a table of zmig's own with a unique index over them: two writers
//! claiming the same values meet in that index whatever their snapshots, the second waiting for
//! the first as it would on the table's own index, and failing if the first commits. A claim is
//! the row's, by key: it goes when the row is deleted or its values change.
//!
//! Rows nobody wrote since prepare hold no claim. The writer then looks for such a row in old and
//! new (temp holds only rows inserted since prepare, all claimed), locking it `FOR SHARE`: a row
//! a batch is moving is waited for and then found where it went (old, new, then old again, each
//! statement with a fresh snapshot, as the triggers look for a row); a row another writer is
//! changing is waited for and then read as that writer left it. Under `REPEATABLE READ` a row
//! changed or moved after the writer's snapshot raises a serialization failure, which such an
//! application retries.
//!
//! The new table keeps its copy of the index during the move (the claims look rows up in it),
//! and it becomes the table's at finalize under the original name, as every other index does.

use super::{sibling, Names};
use crate::plan::Swap;
use crate::sql::{quote_ident as q, quote_literal, Script};

/// The claims table of the `i`th entry of `unique(...)` (from 0): `zmig_<name>_unique_<i + 1>`.
pub(super) fn claims_table(swap: &Swap, i: usize) -> String {
    sibling(swap, &["zmig", &swap.name, "unique", &(i + 1).to_string()]).sql()
}

/// `VALUES (1, ARRAY['vin']::name[]), …`: each entry of `unique(...)` by its position, for
/// the guards.
fn declared_rows(swap: &Swap) -> String {
    if swap.unique.is_empty() {
        return "SELECT NULL::int, NULL::name[] WHERE false".to_owned();
    }
    let rows: Vec<String> = swap
        .unique
        .iter()
        .enumerate()
        .map(|(i, columns)| {
            let names: Vec<String> = columns.iter().map(|c| quote_literal(c)).collect();
            format!("({}, ARRAY[{}]::name[])", i + 1, names.join(", "))
        })
        .collect();
    format!("VALUES {}", rows.join(", "))
}

/// The guards' part for unique indexes (PL/pgSQL statements of the guards' DO block, which
/// declares `t`, `problem`, `u` as a record and `listed` as an empty `int[]`): every unique
/// index besides the primary key must be a plain B-tree over columns, not deferrable, and listed
/// in `unique(...)`; every entry must have its index.
pub(super) fn guards(swap: &Swap, n: &Names) -> String {
    let declared = declared_rows(swap);
    let mut out = format!(
        "FOR u IN\n        \
        SELECT i.indexrelid::regclass AS index, d.n, k.columns,\n               \
               regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') AS definition,\n               \
               coalesce(c.condeferrable, false) AS deferrable\n        \
        FROM pg_index i\n        \
        CROSS JOIN LATERAL {columns} k (columns)\n        \
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = t\n        \
        LEFT JOIN ({declared}) d (n, columns) ON d.columns = k.columns\n        \
        WHERE i.indrelid = t AND i.indisunique AND NOT i.indisprimary\n        \
        ORDER BY i.indexrelid::regclass::text\n    \
    LOOP\n        \
        IF u.definition IS DISTINCT FROM format('btree (%s)', (SELECT string_agg(quote_ident(c), ', ') FROM unnest(u.columns) c)) THEN\n            \
            RAISE EXCEPTION 'zmig swap %: % cannot be swapped: its unique index % is %; zmig keeps unique across the swap''s three tables only a B-tree over columns (no expression, WHERE, INCLUDE, operator class, collation, ordering or NULLS NOT DISTINCT)', {swap}, t, u.index, u.definition;\n        \
        ELSIF u.deferrable THEN\n            \
            RAISE EXCEPTION 'zmig swap %: % cannot be swapped: the unique constraint of % is deferrable; zmig checks uniqueness across the swap''s three tables as each row is written', {swap}, t, u.index;\n        \
        ELSIF u.n IS NULL THEN\n            \
            RAISE EXCEPTION 'zmig swap %: % has the unique index % on (%), which the swap attribute does not list: add unique(%) to it and generate again, and zmig keeps the index unique across the three tables', {swap}, t, u.index, array_to_string(u.columns, ', '), CASE WHEN cardinality(u.columns) = 1 THEN u.columns[1]::text ELSE '(' || array_to_string(u.columns, ', ') || ')' END;\n        \
        END IF;\n        \
        listed := listed || u.n;\n    \
    END LOOP;",
        swap = n.swap_literal,
        columns = index_columns("i"),
    );
    if !swap.unique.is_empty() {
        out.push_str(&format!(
            "\n    \
    SELECT string_agg(array_to_string(d.columns, ', '), '), (' ORDER BY d.n)\n    \
    INTO problem\n    \
    FROM ({declared}) d (n, columns)\n    \
    WHERE d.n <> ALL (listed);\n    \
    IF problem IS NOT NULL THEN\n        \
        RAISE EXCEPTION 'zmig swap %: the swap attribute lists unique (%), but % has no unique index on exactly those columns: drop the entry, or create the index before prepare', {swap}, problem, t;\n    \
    END IF;",
            swap = n.swap_literal,
        ));
    }
    out
}

/// The guards' check of unique indexes alone, as a DO block `generate` runs (rolled back)
/// against the development database, so a missing `unique(...)` entry is reported where the
/// attribute is written, before prepare ships; a table the database lacks passes (prepare checks
/// again).
pub fn check_sql(swap: &Swap) -> String {
    let n = Names::new(swap);
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    t regclass := to_regclass({table});\n    \
    problem text;\n    \
    u record;\n    \
    listed int[] := '{{}}';\n\
BEGIN\n    \
    IF t IS NULL THEN\n        \
        RETURN;\n    \
    END IF;\n    \
    {guards}\n\
END\n\
$zmig$;",
        table = quote_literal(&n.table),
        guards = guards(swap, &n),
    )
}

/// Prepare's statements creating each entry's claims table: its values and the row's key, as
/// the view shows them (so of the original types and collations), a unique index over the
/// values and one over the key; then, for all of them, the table's owner, and the privileges a
/// role that may write the table needs to claim: the statements creating the tables with their
/// indexes, and the DO block for the owner and privileges.
fn claims_tables(swap: &Swap, n: &Names) -> (Vec<String>, String) {
    let key = q(&swap.key);
    let mut statements = Vec::new();
    let mut tables = Vec::new();
    for (i, columns) in swap.unique.iter().enumerate() {
        let table = claims_table(swap, i);
        let list = column_list(columns);
        statements.push(format!(
            "CREATE TABLE {table} AS SELECT {list}, {key} FROM {} WITH NO DATA;",
            n.old
        ));
        statements.push(format!("CREATE UNIQUE INDEX ON {table} ({list});"));
        statements.push(format!("CREATE UNIQUE INDEX ON {table} ({key});"));
        tables.push(super::regclass(&table));
    }
    let access = format!(
        "DO $zmig$\n\
DECLARE\n    \
    old regclass := {old};\n    \
    claims regclass;\n    \
    r record;\n\
BEGIN\n    \
    FOREACH claims IN ARRAY ARRAY[{tables}] LOOP\n        \
        {owner}\n        \
        FOR r IN\n            \
            SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = old AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE')\n            \
            UNION\n            \
            SELECT a.grantee FROM pg_attribute c, aclexplode(c.attacl) a WHERE c.attrelid = old AND a.privilege_type IN ('INSERT', 'UPDATE')\n        \
        LOOP\n            \
            EXECUTE format('GRANT SELECT, INSERT, DELETE ON %s TO %s', claims, CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);\n        \
        END LOOP;\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        old = super::regclass(&n.old),
        tables = tables.join(", "),
        owner = super::same_owner("old", "claims"),
    );
    (statements, access)
}

fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ")
}

/// `row."a" IS NOT NULL AND row."b" IS NOT NULL`: values a unique index compares (NULLs never
/// clash).
fn all_set(columns: &[String], row: &str) -> String {
    columns
        .iter()
        .map(|c| format!("{row}.{} IS NOT NULL", q(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `NEW."a", NEW."b"`.
fn new_values(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("NEW.{}", q(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `t."a" = NEW."a" AND t."b" = NEW."b"`.
fn same_values(columns: &[String], table_row: &str) -> String {
    columns
        .iter()
        .map(|c| format!("{table_row}{c} = NEW.{c}", c = q(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The columns of the unique index `i` (of `pg_index`), in its order, as `name[]` SQL.
fn index_columns(i: &str) -> String {
    format!(
        "(SELECT array_agg(a.attname ORDER BY p.n) FROM unnest({i}.indkey) WITH ORDINALITY p (attnum, n) \
         JOIN pg_attribute a ON a.attrelid = {i}.indrelid AND a.attnum = p.attnum WHERE p.n <= {i}.indnkeyatts)"
    )
}

/// The function raising a clash as PostgreSQL raises it on a unique index: the message and
/// `CONSTRAINT` name the original index, looked up in the catalog by the old table's oid
/// (prepare renamed the table, not its indexes) and the columns, so that a transaction whose
/// snapshot is older than prepare names it too; the detail gives the values.
fn violation_function(swap: &Swap, n: &Names) -> String {
    format!(
        "CREATE FUNCTION {f}(columns name[], key_values text) RETURNS void LANGUAGE plpgsql AS $zmig$\n\
DECLARE\n    \
    index text := (\n        \
        SELECT min(c.relname) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid\n        \
        WHERE x.indrelid = {old} AND x.indisunique AND NOT x.indisprimary AND {index_columns} = columns\n    \
    );\n\
BEGIN\n    \
    RAISE unique_violation USING\n        \
        MESSAGE = format('duplicate key value violates unique constraint \"%s\"', index),\n        \
        DETAIL = format('Key (%s)=(%s) already exists.', array_to_string(columns, ', '), key_values),\n        \
        CONSTRAINT = index,\n        \
        TABLE = {table};\n\
END\n\
$zmig$;",
        f = n.functions.unique_violation,
        old = super::regclass(&n.old),
        index_columns = index_columns("x"),
        table = quote_literal(&swap.table.name),
    )
}

/// Raising the clash of the `i`th entry for the row `NEW`.
fn violation(swap: &Swap, n: &Names, i: usize) -> String {
    let columns = &swap.unique[i];
    let names: Vec<String> = columns.iter().map(|c| quote_literal(c)).collect();
    format!(
        "PERFORM {}(ARRAY[{}]::name[], concat_ws(', ', {}));",
        n.functions.unique_violation,
        names.join(", "),
        new_values(columns)
    )
}

/// Claims the values of the row `NEW` (key `NEW.<key>`) for each unique index, and looks for
/// an unclaimed row holding them; raises `unique_violation` on a clash. PL/pgSQL statements
/// for a trigger body, each line after the first indented by `indent`; empty without
/// `unique(...)`.
pub(super) fn claim(swap: &Swap, n: &Names, indent: &str) -> String {
    (0..swap.unique.len())
        .map(|i| claim_index(swap, n, i, indent))
        .collect()
}

/// [`claim`] for the `i`th entry of `unique(...)`.
fn claim_index(swap: &Swap, n: &Names, i: usize, indent: &str) -> String {
    let key = q(&swap.key);
    let columns = &swap.unique[i];
    let mut lookups = String::new();
    for (step, table) in [&n.old, &n.new, &n.old].into_iter().enumerate() {
        let lookup = format!(
            "PERFORM FROM {table} t WHERE {same} AND {table_key} <> NEW.{key} FOR SHARE;",
            same = same_values(columns, "t."),
            table_key = super::routines::key_in(swap, n, table, "t."),
        );
        if step == 0 {
            lookups.push_str(&format!("{indent}    {lookup}\n"));
        } else {
            lookups.push_str(&format!(
                "{indent}    IF NOT FOUND THEN\n{indent}        {lookup}\n{indent}    END IF;\n"
            ));
        }
    }
    let violation = violation(swap, n, i);
    format!(
        "IF {set} THEN\n{indent}    \
             INSERT INTO {claims} ({list}, {key}) VALUES ({values}, NEW.{key}) ON CONFLICT ({list}) DO NOTHING;\n{indent}    \
             IF NOT FOUND THEN\n{indent}        \
                 {violation}\n{indent}    \
             END IF;\n\
         {lookups}{indent}    \
             IF FOUND THEN\n{indent}        \
                 {violation}\n{indent}    \
             END IF;\n{indent}\
         END IF;\n{indent}",
        set = all_set(columns, "NEW"),
        claims = claims_table(swap, i),
        list = column_list(columns),
        values = new_values(columns),
    )
}

/// For UPDATE, before the row is updated: where an index's values change, the row's claim goes
/// and it claims the new values, so a clash is raised here, naming the original index, rather
/// than by a table's own copy of it. Whole lines, each starting with `indent`.
pub(super) fn reclaim(swap: &Swap, n: &Names, indent: &str) -> String {
    let key = q(&swap.key);
    let inner = format!("{indent}    ");
    (0..swap.unique.len())
        .map(|i| {
            let changed = swap.unique[i]
                .iter()
                .map(|c| format!("NEW.{c} IS DISTINCT FROM OLD.{c}", c = q(c)))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!(
                "{indent}IF {changed} THEN\n{inner}\
                     DELETE FROM {claims} WHERE {key} = OLD.{key};\n{inner}\
                     {claim}\n{indent}\
                 END IF;\n",
                claims = claims_table(swap, i),
                claim = claim_index(swap, n, i, &inner).trim_end(),
            )
        })
        .collect()
}

/// The row's claims go: for DELETE once the row is deleted, and for an UPDATE that found the
/// row deleted meanwhile after it claimed. Whole lines, each starting with `indent`.
pub(super) fn release(swap: &Swap, indent: &str) -> String {
    let key = q(&swap.key);
    (0..swap.unique.len())
        .map(|i| {
            format!(
                "{indent}DELETE FROM {} WHERE {key} = OLD.{key};\n",
                claims_table(swap, i)
            )
        })
        .collect()
}

/// Prepare's part, after the view and before its triggers: the claims tables, temp's index
/// copies gone, and the function raising a clash. Nothing without `unique(...)`.
pub(super) fn prepare(swap: &Swap, n: &Names, up: &mut Script) {
    if swap.unique.is_empty() {
        return;
    }
    up.comment(&format!(
        "Each unique index besides the primary key stays unique across the three tables: {old} \
         and {new} keep their copies of the index, and a row written from now on first claims its \
         values in a table of zmig's own with a unique index over them ({claims}), then looks \
         for a row written before prepare holding them in {old} and {new}, waiting for a batch \
         moving it. Empty tables; dropped at finalize.",
        claims = (0..swap.unique.len())
            .map(|i| claims_table(swap, i))
            .collect::<Vec<_>>()
            .join(", "),
        old = n.old,
        new = n.new,
    ));
    let (tables, access) = claims_tables(swap, n);
    up.safety_assured(
        "New tables, empty: their indexes are built in no time, and no client uses them yet.",
        &tables,
    );
    up.statement(&access);
    up.comment(&format!(
        "{temp} holds only rows written from now on, each holding its claims, which keep it \
         unique: its copies of the indexes go, so that a clash is always raised by a claim, \
         naming the original index.",
        temp = n.temp
    ));
    up.statement(&drop_temp_copies(n));
    up.statement(&violation_function(swap, n));
}

/// Prepare's statement dropping temp's copies of the unique indexes (every unique index of temp
/// but its primary key: the guards refused any other). Temp holds only rows written since
/// prepare, all of them claimed, so the claims keep it unique, and a clash is raised by them,
/// naming the original index, not by a copy named after temp.
fn drop_temp_copies(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    temp regclass := {temp};\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN\n        \
        SELECT i.indexrelid::regclass AS index, c.conname\n        \
        FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = temp\n        \
        WHERE i.indrelid = temp AND i.indisunique AND NOT i.indisprimary\n    \
    LOOP\n        \
        IF r.conname IS NOT NULL THEN\n            \
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', temp, r.conname);\n        \
        ELSE\n            \
            EXECUTE format('DROP INDEX %s', r.index);\n        \
        END IF;\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        temp = super::regclass(&n.temp),
    )
}

/// Finalize's and prepare's down: the function raising clashes and the claims tables go.
/// Nothing without `unique(...)`.
pub(super) fn drop(swap: &Swap, n: &Names, body: &mut Script) {
    if swap.unique.is_empty() {
        return;
    }
    body.statement(&format!(
        "DROP FUNCTION {}(name[], text);",
        n.functions.unique_violation
    ));
    let tables: Vec<String> = (0..swap.unique.len())
        .map(|i| format!("DROP TABLE {};", claims_table(swap, i)))
        .collect();
    body.safety_assured(
        "zmig's claims of unique values while the swap ran: no application reads them.",
        &tables,
    );
}
