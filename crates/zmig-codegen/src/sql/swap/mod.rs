//! The SQL of a swap: `prepare` puts the table behind a view over three tables, `finalize` puts
//! the new table in its place. Between them the runtime's move task calls the functions that
//! prepare creates (see `routines`); before finalize, its move back calls their mirror, so that
//! reverting prepare (`prepare_down`) only moves the last few rows under its lock.
//!
//! Every row lives in exactly one of `<t>_old` (the original table, renamed), `<t>_temp` (rows
//! inserted since prepare) and `<t>_new` (the changed structure). Rows move towards `<t>_new`
//! (the move), or back to `<t>_old` (the move back), one transaction each batch, so any single
//! snapshot sees each row exactly once.
//!
//! The view presents the table's *current* column types: an unchanged Diesel application decodes
//! `id` as `Int4` and would refuse the eight bytes of a `bigint`. The new types reach the
//! application at finalize, with the release whose `schema.rs` says so.

mod routines;
pub mod unique;

use self::routines::{
    check_function, delete_function, disk_function, drop_routines, insert_function,
    key_index_function, move_back_function, move_function, progress_function, ref_indexes_function,
    ref_reindex_function, reference_function, sync_refs_function, tables_function, update_function,
};
use super::filter::RowSql;
use super::{object_name, quote_ident as q, quote_literal, Lock, PhaseSql, Script};
use crate::plan::{Reference, Swap, TableName};
use crate::spec::Stage;
use zmig_core::names::SwapNames;

/// The SQL of every swap phase that ships a migration, in order: prepare, finalize.
pub fn swap_sql(swap: &Swap) -> Vec<PhaseSql> {
    let names = Names::new(swap);
    vec![prepare(swap, &names), finalize(swap, &names)]
}

/// The bookkeeping table every swap shares: which foreign keys prepare dropped (to restore
/// them), which index of the new table takes which original name, and the move's progress.
pub(crate) const STATE_TABLE: &str = "zmig_swap_state";

/// Names of the database objects zmig creates, each at most 63 bytes.
pub(crate) struct Names {
    pub table: String,
    pub old: String,
    pub new: String,
    pub temp: String,
    /// The functions prepare creates, in the swapped table's schema: the names the runtime calls.
    pub functions: SwapNames,
    /// The key-cast indexes, by bare name (an index is created in its table's schema).
    pub new_key_index: String,
    pub temp_key_index: String,
    /// `VALUES ('"trips"', 'car_id', 'car_id_zmig'), …`: each reference's table, column and
    /// shadow column, for queries over them.
    pub reference_rows: String,
    /// `'cars_bigint'`, for the state table.
    pub swap_literal: String,
}

impl Names {
    fn new(swap: &Swap) -> Self {
        Names {
            table: swap.table.sql(),
            old: swap.old_table().sql(),
            new: swap.new_table().sql(),
            temp: swap.temp_table().sql(),
            functions: SwapNames::of(&swap.name).map(|name| sibling(swap, &[&name]).sql()),
            new_key_index: object_name(&[&swap.new_table().name, "zmig_key"]),
            temp_key_index: object_name(&[&swap.temp_table().name, "zmig_key"]),
            swap_literal: quote_literal(&swap.name),
            reference_rows: if swap.references.is_empty() {
                "SELECT NULL::text, NULL::text, NULL::text WHERE false".to_owned()
            } else {
                let rows: Vec<String> = swap
                    .references
                    .iter()
                    .map(|r| {
                        format!(
                            "({}, {}, {})",
                            quote_literal(&r.table.sql()),
                            quote_literal(&r.column),
                            quote_literal(&shadow_column(r))
                        )
                    })
                    .collect();
                format!("VALUES {}", rows.join(", "))
            },
        }
    }
}

/// `"schema"."zmig_<name>_<suffix>"`: zmig's functions live beside the table. A migration name
/// has at most 40 characters, so the runtime spells these names the same way.
fn sibling(swap: &Swap, parts: &[&str]) -> TableName {
    TableName {
        schema: swap.table.schema.clone(),
        name: object_name(parts),
    }
}

/// `'"public"."cars"'::regclass`.
fn regclass(table: &str) -> String {
    format!("{}::regclass", quote_literal(table))
}

/// The shadow column a widened reference is copied into until finalize swaps it in.
pub(crate) fn shadow_column(reference: &Reference) -> String {
    object_name(&[&reference.column, "zmig"])
}

/// The NOT NULL proof of a shadow column: validated by the move task, so that finalize's
/// `SET NOT NULL` needs no scan.
pub(crate) fn shadow_not_null(swap: &Swap, reference: &Reference) -> String {
    object_name(&[
        "zmig",
        &swap.name,
        &reference.table.name,
        &reference.column,
        "nn",
    ])
}

/// The state table's item for a reference's sync: `finished` once every row is filled, `detail`
/// the pages the fill covers, `after` how many times it went over every page again.
pub(crate) fn reference_item(reference: &Reference) -> String {
    quote_literal(&reference_item_name(reference))
}

fn reference_item_name(reference: &Reference) -> String {
    format!("ref:{}.{}", reference.table.name, reference.column)
}

/// How many slices of its pages a reference's fill is cut into: that many workers can fill it at
/// once, each its own slices (`FOR UPDATE SKIP LOCKED` on their state rows).
pub(crate) const REFERENCE_SLICES: u32 = 16;

/// What the state items of a reference's slices start with: each is this and a two-digit number,
/// its `after` the next page to fill, `detail` the page it ends before.
pub(crate) fn reference_slice_prefix(reference: &Reference) -> String {
    quote_literal(&format!("{}/", reference_item_name(reference)))
}

/// Records (again) the slices of a reference's fill over the pages `pages` (an SQL expression)
/// counts, each from its first page, finished when it has none; lines after the first start
/// with `indent`.
pub(crate) fn reference_slices(
    swap_literal: &str,
    reference: &Reference,
    pages: &str,
    indent: &str,
) -> String {
    [
        format!("INSERT INTO {STATE_TABLE} (swap, item, after, detail, finished)"),
        format!(
            "SELECT {swap_literal}, {} || lpad(i::text, 2, '0'), s.first, s.upto::text, s.first >= s.upto",
            reference_slice_prefix(reference)
        ),
        format!(
            "FROM (SELECT {pages} AS pages) p, generate_series(0, {}) i,",
            REFERENCE_SLICES - 1
        ),
        format!(
            "    LATERAL (SELECT p.pages * i / {REFERENCE_SLICES} AS first, p.pages * (i + 1) / {REFERENCE_SLICES} AS upto) s"
        ),
        "ON CONFLICT (swap, item) DO UPDATE SET after = excluded.after, detail = excluded.detail, finished = excluded.finished;".to_owned(),
    ]
    .join(&format!("\n{indent}"))
}

/// The pages of `table` now, as SQL: what a fill of its rows covers.
pub(crate) fn table_pages(table: &str) -> String {
    format!(
        "pg_relation_size({}::regclass) / current_setting('block_size')::bigint",
        quote_literal(table)
    )
}

/// Every transaction of a swap migration starts with these: a short wait for locks and a bound
/// on how long any statement may hold them.
const LOCK_TIMEOUT: &str =
    "SET LOCAL lock_timeout = '200ms';\nSET LOCAL statement_timeout = '10s';";

fn lock_timeout_comment(table: &str) -> String {
    format!(
        "Every statement below needs a brief lock on {table} and the tables referencing it, taken \
         all at once first, in a loop of short attempts (below) that never keeps their traffic \
         waiting for long. A lock a statement needs beyond those waits at most 200 ms; the \
         migration then rolls back whole and is safe to run again (zmig-runtime's migration \
         runner retries it with back-off). No statement here scans or rewrites a table that \
         holds rows, so ten seconds is a generous bound."
    )
}

/// The table (or view) and every referencing table, all at once, before anything else: a
/// lock taken halfway would be held while waiting for the next, queueing traffic behind it.
fn lock_all(swap: &Swap, n: &Names, out: &mut Script) {
    let mut locked = vec![(n.table.clone(), Lock::AccessExclusive)];
    locked.extend(
        swap.references
            .iter()
            .map(|r| (r.table.sql(), Lock::AccessExclusive)),
    );
    out.take_locks(&swap.name, &locked);
}

/// The referencing tables in `SHARE UPDATE EXCLUSIVE` mode, which validating their foreign
/// keys takes: it blocks no traffic, but waits for a VACUUM or an index build.
fn lock_references(swap: &Swap, out: &mut Script) {
    let locks: Vec<(String, Lock)> = swap
        .references
        .iter()
        .map(|r| (r.table.sql(), Lock::ShareUpdateExclusive))
        .collect();
    out.take_locks(&swap.name, &locks);
}

/// Changed columns, `"id" bigint`, for headers.
fn changes(swap: &Swap) -> String {
    swap.columns
        .iter()
        .filter(|c| c.changes())
        .map(|c| format!("{} {} → {}", c.name, c.old_type, c.new_type))
        .chain(swap.references.iter().map(|r| {
            format!(
                "{}.{} {} → {}",
                r.table.name, r.column, r.old_type, r.new_type
            )
        }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn prepare(swap: &Swap, n: &Names) -> PhaseSql {
    let mut up = Script::new();
    up.comment(&format!(
        "prepare: {} keeps its name, now as a view over {} (every row today), {} (rows inserted \
         from now on) and {} (the new structure: {}). The application is unchanged. Run `cargo \
         xtask zmig backfill {}` next to move the rows into {}.",
        n.table,
        n.old,
        n.temp,
        n.new,
        changes(swap),
        swap.name,
        n.new
    ));
    up.comment(&lock_timeout_comment(&n.table));
    up.statement(LOCK_TIMEOUT);
    lock_all(swap, n, &mut up);
    up.statement(&format!(
        "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (\n    \
             swap text NOT NULL,\n    \
             item text NOT NULL,\n    \
             detail text,\n    \
             rel text,\n    \
             after bigint,\n    \
             finished boolean NOT NULL DEFAULT false,\n    \
             PRIMARY KEY (swap, item)\n\
         );"
    ));
    up.comment(
        "Refuse what the swap cannot carry across, before changing anything: the view lists the \
         columns schema.rs knows, so the table must have exactly those; triggers, rules, row \
         security, inheritance and views reading the table would not follow the rows into the \
         new table; a unique index besides the primary key must be listed in `unique(...)` (and be \
         a plain B-tree over columns) for the triggers to enforce it across the three tables; a \
         publication of the table (or of a referencing table) would send its \
         subscribers the rows moving between tables they do not have. Foreign keys pointing at \
         the table are recorded, with their actions and comments, to be restored.",
    );
    up.statement(&guards(swap, n));
    up.comment(&format!(
        "The disk the move will need at its peak, beyond what the tables take now (the formula \
         is {disk}, which the move task asks again before it starts), against the free space in \
         `zmig.free_disk_bytes`: zmig's migration runner measures it and sets it where \
         PostgreSQL shows it the data directory on its own machine; \
         `PGOPTIONS='-c zmig.free_disk_bytes=BYTES'` gives it to any runner, and \
         `-c zmig.skip_disk_check=on` skips the check. Unset, the estimate is only a NOTICE.",
        disk = n.functions.disk_needed
    ));
    up.statement(&disk_function(n));
    up.statement(&disk_check(swap, n));
    let computed = swap
        .columns
        .iter()
        .filter_map(|c| Some((c.cast.as_ref()?, c.cast_text.as_ref()?)));
    for (cast, text) in computed {
        up.comment(
            "A computed column depends on the row being moved alone, or the move would compute \
             values no one can reproduce: PostgreSQL says whether it does by accepting it in an \
             index expression, on an empty temporary copy of the table dropped right away. Stop \
             here, with nothing changed, if it refuses.",
        );
        up.statement(&cast.check_sql(RowSql::Expression, &swap.name, &n.table, text));
    }
    up.assured_start(
        "From here to the end of the fenced section: a rename, then new tables, a type change and \
         indexes on those empty tables, in one transaction with the view that takes the name \
         below, so no client ever finds the name missing. Each step says why it is safe.",
    );
    up.comment(
        "The original table, renamed: a catalog change. Its sequence, indexes and constraints \
         stay with it, and it keeps every row until the move task takes them.",
    );
    up.squawk_ignore("renaming-table");
    up.statement(&format!(
        "ALTER TABLE {} RENAME TO {};",
        n.table,
        q(&swap.old_table().name)
    ));
    up.comment(
        "The new structure, empty: copying every index and constraint and changing column types \
         costs nothing on an empty table. Inserts made through the view go to the temp table of \
         the same structure, so the move task never competes with them for pages of the new one. \
         An identity column becomes a plain one here: until finalize its values come from the \
         original's identity sequence (the view's default), and finalize makes it an identity \
         again, continuing that sequence.",
    );
    up.statement(&format!(
        "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING IDENTITY);",
        n.new, n.old
    ));
    let alters: Vec<String> = swap
        .columns
        .iter()
        .filter(|c| c.changes())
        .map(|c| match &c.cast {
            Some(cast) => format!(
                "ALTER COLUMN {} TYPE {} USING {}",
                q(&c.name),
                c.new_type,
                cast.render_bare()
            ),
            None => format!("ALTER COLUMN {} TYPE {}", q(&c.name), c.new_type),
        })
        .collect();
    for alter in alters {
        up.squawk_ignore("changing-column-type");
        up.statement(&format!("ALTER TABLE {} {alter};", n.new));
    }
    up.statement(&format!(
        "CREATE TABLE {} (LIKE {} INCLUDING ALL);",
        n.temp, n.new
    ));
    let key = swap.key_column();
    if key.changes() {
        up.comment(&format!(
            "The view shows {} as {} (see below), so lookups by key read `{}::{}` on the new \
             tables: index that expression too, or every lookup would scan them. Dropped at \
             finalize.",
            key.name, key.old_type, key.name, key.old_type
        ));
        up.statement(&format!(
            "CREATE INDEX {} ON {} (({}::{}));",
            q(&n.temp_key_index),
            n.temp,
            q(&key.name),
            key.old_type
        ));
    }
    up.comment(&format!(
        "On {new}, while rows move into it, one index on the key: `zmig_key`, unique, over the \
         key as the view shows it, `DESC` because the move brings the highest keys first (each \
         batch appends at its right edge, so its pages come out full). {new}'s own primary key \
         is built after the move, concurrently and sorted, once {old} is empty and its files are \
         given back: built beside the move it would add its size to the peak and split its \
         pages in half. Its definition and name are kept in the state, finalize makes it the \
         primary key again, and `zmig_key` is dropped then.",
        new = n.new,
        old = n.old
    ));
    up.statement(&format!(
        "CREATE UNIQUE INDEX {} ON {} (({}) DESC);",
        q(&n.new_key_index),
        n.new,
        routines::key_in(swap, n, &n.new, "")
    ));
    up.assured_end();
    up.comment(
        "Carried over to the new tables: foreign keys to other tables (checked on empty tables: \
         instant), the table's owner, comment and grants. Each index of the new table is paired \
         with the original's name, which it takes at finalize. The new table also takes what LIKE \
         does not copy: the comments of the constraints indexes back, the replica identity, \
         the storage options and the columns' statistics settings (catalog changes on an empty \
         table).",
    );
    up.statement(&carry_over(n));
    up.comment(&format!(
        "{new}'s primary key waits for the end of the move (see `zmig_key` above): its \
         definition and name go into the state, and the constraint goes, on the empty table. \
         Its comments and the replica identity come from the original again at finalize.",
        new = n.new
    ));
    up.statement(&defer_primary_key(n));
    up.comment(
        "The view, under the table's name. It shows the current column types, so the \
         application's Diesel code decodes every row exactly as before; new-structure rows are \
         cast back, which cannot fail while the application can only write values of the current \
         types. Each row is in exactly one of the three tables.",
    );
    up.statement(&view(swap, n));
    up.comment(
        "The view answers `INSERT … RETURNING` with the same defaults as the table (the id \
         sequence, `now()`, literals): copied from the original's catalog, with its owner and \
         exactly its privileges, table-level and per column (finalize gives the view's to the \
         new table).",
    );
    up.statement(&view_defaults_and_grants(n));
    up.comment(&format!(
        "INSERT goes to {}. Its primary key refuses a key already there; one query, one \
         snapshot, then refuses a key in {} or {} (a row being moved is in exactly one of them), \
         with the error PostgreSQL itself would raise.",
        n.temp, n.new, n.old
    ));
    unique::prepare(swap, n, &mut up);
    up.statement(&insert_function(swap, n));
    up.comment(&format!(
        "UPDATE changes the row where it is: {new}, then {temp}, then {old}, each locked first \
         (a row the move back takes from {new} or {temp} meanwhile is found in {old}); then \
         {new} again, because a batch of the move may have taken it there in between; then {old} \
         once more, for a row that went both ways while this looked (a forward batch still \
         running as a move back starts). A row that changed after the statement read it is refused with a \
         serialization failure, where a table would have re-read it: the statement's SET and \
         WHERE were computed from a stale row, and writing it would lose the other write. The \
         key cannot change while the swap runs.",
        new = n.new,
        temp = n.temp,
        old = n.old
    ));
    up.statement(&update_function(swap, n));
    up.comment(
        "DELETE the same way; then the foreign keys pointing at the table, which prepare drops \
         below, are enforced here as NO ACTION would.",
    );
    up.statement(&delete_function(swap, n));
    for (op, function) in [
        ("INSERT", &n.functions.insert),
        ("UPDATE", &n.functions.update),
        ("DELETE", &n.functions.delete),
    ] {
        up.statement(&format!(
            "CREATE TRIGGER {} INSTEAD OF {op} ON {} FOR EACH ROW EXECUTE FUNCTION {function}();",
            q(&format!("zmig_{}_{}", swap.name, op.to_lowercase())),
            n.table
        ));
    }
    for reference in &swap.references {
        references_prepare(swap, n, reference, &mut up);
    }
    up.comment(&format!(
        "The move task's batch: takes up to `max_rows` rows of {old}, highest keys first, then \
         of {temp}, locking them `FOR UPDATE SKIP LOCKED` (a row a writer holds moves in a later \
         batch), deletes them and inserts them into {new} in one statement. Several workers need \
         no other coordination. Highest first: keys mostly follow the heap, so {old} empties \
         from the end of its file and the move's VACUUM gives the pages back as it goes. The \
         lowest key moved is kept as a hint so a batch never walks the dead index entries its \
         predecessors left; once the hint reaches the start, one pass from the end picks up \
         rows that were locked when their turn came.",
        old = n.old,
        temp = n.temp,
        new = n.new
    ));
    up.statement(&move_function(swap, n));
    up.statement(&format!(
        "INSERT INTO {STATE_TABLE} (swap, item) VALUES ({}, 'move');",
        n.swap_literal
    ));
    up.comment(&format!(
        "The way back, online: the move back's batch (`cargo xtask zmig backfill {name} --back`) \
         is the mirror of the move's. It takes up to `max_rows` rows of {new}, then of {temp}, \
         `FOR UPDATE SKIP LOCKED`, deletes them and inserts them into {old} in the current types \
         (as the view shows them, so each row reads the same), one statement each, lowest keys \
         first; the highest key moved back is its hint. Reverting prepare then moves only what writers inserted \
         since, under its brief lock, and refuses while more than 10,000 rows are left.",
        name = swap.name,
        old = n.old,
        temp = n.temp,
        new = n.new
    ));
    up.statement(&move_back_function(swap, n));
    up.statement(&format!(
        "INSERT INTO {STATE_TABLE} (swap, item) VALUES ({}, 'move_back');",
        n.swap_literal
    ));
    up.comment(
        "Progress, the tables by role, and the invariants `cargo xtask zmig verify` checks: no \
         key in two tables, no reference without its row, every shadow column equal to its \
         original.",
    );
    up.comment(
        "The move task's fill of the referencing tables' shadow columns: page by page in heap \
         order (ctid ranges, read by a TID range scan), so no row is looked up by key, and the \
         pages filled first are the first the move's VACUUM makes reusable for the next pages' \
         new row versions. Rows the trigger already filled are skipped; one scan at the end \
         confirms none was left behind.",
    );
    up.statement(&sync_refs_function(swap, n));
    up.statement(&progress_function(swap, n));
    up.statement(&tables_function(swap, n));
    up.statement(&check_function(swap, n));
    up.statement(&ref_indexes_function(n));
    up.statement(&key_index_function(n));
    up.statement(&ref_reindex_function(n));

    let down = prepare_down(swap, n);
    PhaseSql::outside_transaction(Stage::Prepare, up, down)
}

/// Drops the foreign key of `reference` (recorded by the guards), adds the shadow column with
/// its trigger and NOT NULL proof.
fn references_prepare(swap: &Swap, n: &Names, reference: &Reference, up: &mut Script) {
    let table = reference.table.sql();
    let shadow = shadow_column(reference);
    up.comment(&format!(
        "{table}.{col} references {old} now that it was renamed, and would stop the move task \
         from deleting rows there. Its foreign key is dropped for the duration and enforced by \
         the trigger below: on insert, or a change of {col}, it locks the referenced row `FOR \
         KEY SHARE` wherever it lives (the move task skips locked rows), exactly as the \
         foreign key's own check does.",
        col = q(&reference.column),
        old = n.old
    ));
    up.statement(&format!(
        "DO $zmig$\n\
         DECLARE\n    \
             fk record;\n\
         BEGIN\n    \
             FOR fk IN SELECT detail FROM {STATE_TABLE} WHERE swap = {} AND item = {} LOOP\n        \
                 EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', {}, fk.detail);\n    \
             END LOOP;\n\
         END\n\
         $zmig$;",
        n.swap_literal,
        fk_item(reference),
        quote_literal(&table),
    ));
    up.comment(&format!(
        "{table}.{col} widens by the in-place column technique: a shadow column of the new type \
         (adding a nullable column without a default rewrites nothing), kept equal by the trigger \
         and filled for existing rows by the move task, swapped in at finalize.",
        col = q(&reference.column)
    ));
    up.safety_assured(
        "No IF NOT EXISTS, on purpose: a column already under this name is not zmig's, and \
         adopting it would swap unknown values in at finalize.",
        &[format!(
            "ALTER TABLE {table} ADD COLUMN {} {};",
            q(&shadow),
            reference.new_type
        )],
    );
    if !reference.nullable {
        up.comment(
            "Its NOT NULL, proved by a check the move task validates once the column is filled \
             (without blocking writes), so finalize's SET NOT NULL needs no scan.",
        );
        up.statement(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID;",
            q(&shadow_not_null(swap, reference)),
            q(&shadow)
        ));
    }
    up.comment(&format!(
        "Each index reading {table}.{col} is rebuilt on the shadow column by the move task, \
         concurrently (`zmig_{}_ref_indexes()` lists the statements); finalize gives it the \
         original's name once the original column is gone. An index that backs a constraint \
         cannot be rebuilt that way: refused.",
        swap.name,
        col = q(&reference.column)
    ));
    up.statement(&record_reference_indexes(n, reference));
    up.statement(&reference_function(swap, n, reference));
    let [on_insert, on_update] = reference_triggers(swap, reference);
    up.statement(&format!(
        "CREATE TRIGGER {} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {}();",
        q(&on_insert),
        reference_function_name(swap, reference)
    ));
    up.comment(
        "An update fires the trigger only when it changes the column or the row is not filled \
         yet: not for the fill's own updates, nor for updates of other columns once filled.",
    );
    up.statement(&format!(
        "CREATE TRIGGER {} BEFORE UPDATE ON {table} FOR EACH ROW\n    \
         WHEN (NEW.{col} IS DISTINCT FROM OLD.{col} OR NEW.{shadow} IS DISTINCT FROM NEW.{col})\n    \
         EXECUTE FUNCTION {}();",
        q(&on_update),
        reference_function_name(swap, reference),
        col = q(&reference.column),
        shadow = q(&shadow_column(reference)),
    ));
    up.comment(
        "The rows to fill are those on the pages the table has now: the trigger fills every row \
         written from here on, wherever it lands, so the fill never chases new rows. Reading \
         the table's size takes no lock beyond the one held. The pages are cut into slices, so that \
         several workers can fill them at once.",
    );
    up.statement(&format!(
        "INSERT INTO {STATE_TABLE} (swap, item, detail) SELECT {}, {}, ({})::text;",
        n.swap_literal,
        reference_item(reference),
        table_pages(&table),
    ));
    up.statement(&reference_slices(
        &n.swap_literal,
        reference,
        &table_pages(&table),
        "",
    ));
}

pub(crate) fn reference_function_name(swap: &Swap, reference: &Reference) -> String {
    sibling(
        swap,
        &[
            "zmig",
            &swap.name,
            "ref",
            &reference.table.name,
            &reference.column,
        ],
    )
    .sql()
}

/// The triggers keeping a reference's shadow column equal to it (and checking its foreign key):
/// on insert, and on update.
fn reference_triggers(swap: &Swap, reference: &Reference) -> [String; 2] {
    [
        object_name(&["zmig", &swap.name, &reference.column]),
        object_name(&["zmig", &swap.name, &reference.column, "update"]),
    ]
}

/// Records, for each index reading the referencing column, the name of its shadow twin.
fn record_reference_indexes(n: &Names, reference: &Reference) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    -- A constraint on the column besides the foreign key the swap carries (a CHECK, a UNIQUE\n    \
    -- or exclusion constraint, a foreign key to another table) would go with the original\n    \
    -- column at finalize.\n    \
    FOR r IN\n        \
        SELECT con.conname, pg_get_constraintdef(con.oid) AS def\n        \
        FROM pg_constraint con\n        \
        WHERE con.conrelid = {table}\n          \
          AND (SELECT attnum FROM pg_attribute WHERE attrelid = {table} AND attname = {column}) = ANY (con.conkey)\n          \
          AND con.contype IN ('c', 'u', 'x', 'p', 'f')\n          \
          AND con.conname NOT IN (SELECT detail FROM {STATE_TABLE} WHERE swap = {swap} AND item = {fk_item})\n    \
    LOOP\n        \
        RAISE EXCEPTION 'zmig swap %: constraint % on %.% (%) would be dropped with the original column at finalize', {swap}, r.conname, {table_lit}, {column}, r.def\n            \
            USING HINT = 'drop it before prepare and add it back after finalize';\n    \
    END LOOP;\n    \
    FOR r IN\n        \
        SELECT i.indexrelid::regclass AS index, c.relname, con.conname, i.indisreplident\n        \
        FROM pg_index i\n        \
        JOIN pg_class c ON c.oid = i.indexrelid\n        \
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid\n        \
        WHERE i.indrelid = {table}\n          \
          AND EXISTS (SELECT FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid\n                      \
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid AND d.refobjid = i.indrelid AND a.attname = {column})\n    \
    LOOP\n        \
        IF r.conname IS NOT NULL THEN\n            \
            RAISE EXCEPTION 'zmig swap %: index % backs constraint % on %.%, which a swap cannot rebuild concurrently', {swap}, r.index, r.conname, {table_lit}, {column};\n        \
        END IF;\n        \
        IF r.indisreplident THEN\n            \
            RAISE EXCEPTION 'zmig swap %: index % on %.% is the replica identity of %, which a rebuilt index would not keep', {swap}, r.index, {table}, {column}, {table}\n                \
                USING HINT = 'choose another replica identity for the swap (ALTER TABLE … REPLICA IDENTITY)';\n        \
        END IF;\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail, rel) VALUES ({swap}, 'refindex:' || left(r.relname, 58) || '_zmig', r.relname, {table_lit});\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        table = regclass(&reference.table.sql()),
        table_lit = quote_literal(&reference.table.sql()),
        column = quote_literal(&reference.column),
        swap = n.swap_literal,
        fk_item = fk_item(reference),
    )
}

/// SQL qualifying the index named `{row}.{name}` with the schema of the table `{row}.rel`.
pub(crate) fn index_in_table_schema(row: &str, name: &str) -> String {
    format!(
        "(SELECT format('%I.%I', ns.nspname, {row}.{name}) FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.oid = {row}.rel::regclass)"
    )
}

/// The state item recording the foreign key of `reference` (its name in `detail`).
fn fk_item(reference: &Reference) -> String {
    quote_literal(&format!("fk:{}.{}", reference.table.name, reference.column))
}

/// The DO block refusing a table the swap cannot carry, and recording the foreign keys that
/// point at it.
fn guards(swap: &Swap, n: &Names) -> String {
    let expected: Vec<String> = swap
        .columns
        .iter()
        .map(|c| {
            format!(
                "({}, {})",
                quote_literal(&c.name),
                quote_literal(&c.old_type)
            )
        })
        .collect();
    let references: Vec<String> = swap
        .references
        .iter()
        .map(|r| {
            format!(
                "({}, {}, {})",
                regclass(&r.table.sql()),
                quote_literal(&r.column),
                fk_item(r)
            )
        })
        .collect();
    let references_values = if references.is_empty() {
        "SELECT NULL::regclass, NULL::text, NULL::text WHERE false".to_owned()
    } else {
        format!("VALUES {}", references.join(", "))
    };
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    t regclass := {table};\n    \
    problem text;\n    \
    fk record;\n    \
    u record;\n    \
    listed int[] := '{{}}';\n\
BEGIN\n    \
    SELECT string_agg(CASE WHEN a.attname IS NULL THEN format('%s %s is not in the table', e.name, e.type) ELSE format('%s %s is not in schema.rs', a.attname, format_type(a.atttypid, a.atttypmod)) END, ', ')\n    \
    INTO problem\n    \
    FROM (SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = t AND attnum > 0 AND NOT attisdropped) a\n    \
    FULL JOIN (VALUES {expected}) e (name, type) ON e.name = a.attname AND e.type::regtype = a.atttypid\n    \
    WHERE a.attname IS NULL OR e.name IS NULL;\n    \
    IF problem IS NOT NULL THEN\n        \
        RAISE EXCEPTION 'zmig swap %: the columns of % differ from schema.rs: %', {swap}, t, problem\n            \
            USING HINT = 'run `diesel print-schema` (or `diesel migration run`) and `cargo xtask zmig generate` again';\n    \
    END IF;\n    \
    SELECT CASE\n        \
        WHEN c.relkind <> 'r' THEN 'it is not a plain table'\n        \
        WHEN c.relrowsecurity THEN 'it has row-level security'\n        \
        WHEN c.relhasrules THEN 'it has rules'\n        \
        WHEN EXISTS (SELECT FROM pg_inherits WHERE inhrelid = t OR inhparent = t) THEN 'it takes part in inheritance'\n        \
        WHEN EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t AND NOT tgisinternal) THEN 'it has triggers of its own'\n        \
        WHEN EXISTS (SELECT FROM pg_attribute WHERE attrelid = t AND attnum > 0 AND attgenerated <> '') THEN 'it has a generated column'\n        \
        WHEN EXISTS (SELECT FROM pg_constraint WHERE conrelid = t AND contype = 'x') THEN 'it has an exclusion constraint, which each of the three tables would enforce only within itself'\n        \
        WHEN EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = t AND r.ev_class <> t) THEN 'views read it'\n    \
    END\n    \
    INTO problem\n    \
    FROM pg_class c WHERE c.oid = t;\n    \
    IF problem IS NOT NULL THEN\n        \
        RAISE EXCEPTION 'zmig swap %: % cannot be swapped: %', {swap}, t, problem;\n    \
    END IF;\n    \
    {unique}\n    \
    SELECT string_agg(format('publication %s publishes %s', pubname, tables), '; ' ORDER BY pubname)\n    \
    INTO problem\n    \
    FROM (\n        \
        SELECT p.pubname, string_agg(format('%I.%I', p.schemaname, p.tablename)::regclass::text, ', ' ORDER BY p.tablename) AS tables\n        \
        FROM pg_publication_tables p\n        \
        WHERE format('%I.%I', p.schemaname, p.tablename)::regclass IN (SELECT t UNION ALL SELECT rel FROM ({references_values}) r (rel, col, item))\n        \
        GROUP BY p.pubname\n    \
    ) published;\n    \
    IF problem IS NOT NULL THEN\n        \
        RAISE EXCEPTION 'zmig swap %: % cannot be swapped: it or a table referencing it is replicated logically (%); while the swap runs, its rows move between tables no subscriber has', {swap}, t, problem\n            \
            USING HINT = 'take the tables out of the publication for the swap (ALTER PUBLICATION … DROP TABLE), add them back after finalize and refresh the subscriptions (ALTER SUBSCRIPTION … REFRESH PUBLICATION)';\n    \
    END IF;\n    \
    FOR fk IN\n        \
        SELECT c.oid, c.conname, c.conrelid::regclass AS rel, c.confdeltype, c.confupdtype, c.confmatchtype, c.condeferrable, c.convalidated, r.item,\n               \
               (SELECT array_agg(attname) FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = ANY (c.conkey)) AS cols\n        \
        FROM pg_constraint c\n        \
        LEFT JOIN ({references_values}) r (rel, col, item) ON r.rel = c.conrelid AND ARRAY[r.col]::name[] = (SELECT array_agg(attname) FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = ANY (c.conkey))\n        \
        WHERE c.confrelid = t AND c.contype = 'f'\n    \
    LOOP\n        \
        IF fk.item IS NULL THEN\n            \
            RAISE EXCEPTION 'zmig swap %: foreign key % of % (%) points at % but is not in references(...)', {swap}, fk.conname, fk.rel, array_to_string(fk.cols, ', '), t\n                \
                USING HINT = format('add references(%s.%s) to the swap attribute', fk.rel, fk.cols[1]);\n        \
        END IF;\n        \
        IF fk.confdeltype NOT IN ('a', 'r') OR fk.condeferrable THEN\n            \
            RAISE EXCEPTION 'zmig swap %: foreign key % of % is ON DELETE CASCADE / SET NULL / SET DEFAULT or deferrable; zmig enforces only NO ACTION and RESTRICT during a swap', {swap}, fk.conname, fk.rel;\n        \
        END IF;\n        \
        IF NOT fk.convalidated THEN\n            \
            RAISE EXCEPTION 'zmig swap %: foreign key % of % is NOT VALID; a swap restores it validated', {swap}, fk.conname, fk.rel\n                \
                USING HINT = format('validate it first: ALTER TABLE %s VALIDATE CONSTRAINT %I', fk.rel, fk.conname);\n        \
        END IF;\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail) VALUES ({swap}, fk.item, fk.conname);\n        \
        -- Its match type and actions (the key cannot change during the swap, so ON UPDATE has\n        \
        -- nothing to do until finalize restores it) and its comment, to be restored with it.\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail) VALUES ({swap}, 'actions:' || fk.item, concat_ws(' ',\n            \
            CASE fk.confmatchtype WHEN 'f' THEN 'MATCH FULL' END,\n            \
            CASE fk.confupdtype WHEN 'r' THEN 'ON UPDATE RESTRICT' WHEN 'c' THEN 'ON UPDATE CASCADE' WHEN 'n' THEN 'ON UPDATE SET NULL' WHEN 'd' THEN 'ON UPDATE SET DEFAULT' END,\n            \
            CASE fk.confdeltype WHEN 'r' THEN 'ON DELETE RESTRICT' END));\n        \
        IF obj_description(fk.oid, 'pg_constraint') IS NOT NULL THEN\n            \
            INSERT INTO {STATE_TABLE} (swap, item, detail) VALUES ({swap}, 'comment:' || fk.item, obj_description(fk.oid, 'pg_constraint'));\n        \
        END IF;\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        table = regclass(&n.table),
        expected = expected.join(", "),
        swap = n.swap_literal,
        unique = unique::guards(swap, n),
    )
}

/// Foreign keys to other tables onto the new tables, the table comment, grants, and the pairing
/// of the new table's indexes with the original names.
fn carry_over(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    old regclass := {old};\n    \
    target regclass;\n    \
    r record;\n\
BEGIN\n    \
    FOREACH target IN ARRAY ARRAY[{new}, {temp}] LOOP\n        \
        -- The original's owner, where this session is not it (the new table is the table after\n        \
        -- finalize; the view reads the three tables with its owner's privileges).\n        \
        {owner}\n        \
        FOR r IN SELECT conname, pg_get_constraintdef(oid) AS def, obj_description(oid, 'pg_constraint') AS comment FROM pg_constraint WHERE conrelid = old AND contype = 'f' LOOP\n            \
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', target, r.conname, r.def);\n            \
            IF r.comment IS NOT NULL AND target = {new} THEN\n                \
                EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', r.conname, target, r.comment);\n            \
            END IF;\n        \
        END LOOP;\n        \
        {grants}\n    \
    END LOOP;\n    \
    IF obj_description(old, 'pg_class') IS NOT NULL THEN\n        \
        EXECUTE format('COMMENT ON TABLE %s IS %L', {new}, obj_description(old, 'pg_class'));\n    \
    END IF;\n    \
    INSERT INTO {STATE_TABLE} (swap, item, detail)\n    \
    SELECT DISTINCT ON (o.indexrelid) {swap}, 'index:' || n.indexrelid::regclass::text, o.indexrelid::regclass::text\n    \
    FROM pg_index o\n    \
    JOIN pg_index n ON n.indrelid = {new} AND n.indisunique = o.indisunique AND n.indisprimary = o.indisprimary\n        \
        AND regexp_replace(pg_get_indexdef(n.indexrelid), '^.* USING ', '') = regexp_replace(pg_get_indexdef(o.indexrelid), '^.* USING ', '')\n    \
    WHERE o.indrelid = old\n    \
    ORDER BY o.indexrelid, n.indexrelid;\n    \
    -- The comments of the constraints an index backs (the primary key's): LIKE copied the\n    \
    -- indexes' comments, not theirs.\n    \
    FOR r IN\n        \
        SELECT nc.conname, obj_description(oc.oid, 'pg_constraint') AS comment\n        \
        FROM {STATE_TABLE} s\n        \
        JOIN pg_constraint oc ON oc.conrelid = old AND oc.conindid = s.detail::regclass\n        \
        JOIN pg_constraint nc ON nc.conrelid = {new} AND nc.conindid = substr(s.item, 7)::regclass\n        \
        WHERE s.swap = {swap} AND s.item LIKE 'index:%' AND obj_description(oc.oid, 'pg_constraint') IS NOT NULL\n    \
    LOOP\n        \
        EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', r.conname, {new}, r.comment);\n    \
    END LOOP;\n    \
    -- Replica identity and storage options (fillfactor, autovacuum, the TOAST table's), which\n    \
    -- LIKE does not copy.\n    \
    CASE (SELECT relreplident FROM pg_class WHERE oid = old)\n        \
        WHEN 'f' THEN ALTER TABLE {new_sql} REPLICA IDENTITY FULL;\n        \
        WHEN 'n' THEN ALTER TABLE {new_sql} REPLICA IDENTITY NOTHING;\n        \
        WHEN 'i' THEN\n            \
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I', {new}, (\n                \
                SELECT c.relname FROM {STATE_TABLE} s JOIN pg_class c ON c.oid = substr(s.item, 7)::regclass\n                \
                WHERE s.swap = {swap} AND s.item LIKE 'index:%'\n                  \
                  AND s.detail::regclass = (SELECT indexrelid FROM pg_index WHERE indrelid = old AND indisreplident)));\n        \
        ELSE NULL;\n    \
    END CASE;\n    \
    FOR r IN\n        \
        SELECT format('%I = %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)) AS option FROM pg_class c, unnest(c.reloptions) o WHERE c.oid = old\n        \
        UNION ALL\n        \
        SELECT format('toast.%I = %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)) FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid, unnest(t.reloptions) o WHERE c.oid = old\n    \
    LOOP\n        \
        EXECUTE format('ALTER TABLE %s SET (%s)', {new}, r.option);\n    \
    END LOOP;\n    \
    -- And the columns' statistics targets and distinct-value estimates.\n    \
    FOR r IN\n        \
        SELECT format('ALTER COLUMN %I SET STATISTICS %s', attname, attstattarget) AS change FROM pg_attribute WHERE attrelid = old AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0\n        \
        UNION ALL\n        \
        SELECT format('ALTER COLUMN %I SET (%I = %L)', a.attname, split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)) FROM pg_attribute a, unnest(a.attoptions) o\n        \
        WHERE a.attrelid = old AND a.attnum > 0 AND NOT a.attisdropped AND split_part(o, '=', 1) IN ('n_distinct', 'n_distinct_inherited')\n    \
    LOOP\n        \
        EXECUTE format('ALTER TABLE %s %s', {new}, r.change);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        old = regclass(&n.old),
        new = regclass(&n.new),
        new_sql = n.new,
        temp = regclass(&n.temp),
        swap = n.swap_literal,
        grants = copy_grants("old", "target"),
        owner = same_owner("old", "target"),
    )
}

/// A PL/pgSQL statement giving the relation `target` (a regclass expression) the owner of the
/// relation `source`, where it has another; for a block's second level (lines after the first
/// indented by eight spaces).
fn same_owner(source: &str, target: &str) -> String {
    format!(
        "IF (SELECT relowner FROM pg_class WHERE oid = {target}) <> (SELECT relowner FROM pg_class WHERE oid = {source}) THEN\n            \
             EXECUTE format('ALTER TABLE %s OWNER TO %I', {target}, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = {source}));\n        \
         END IF;"
    )
}

/// Refuses, before prepare changes anything, when the free space zmig's runner measured (or the
/// session was given) cannot hold what the move will add at its peak.
fn disk_check(swap: &Swap, n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    t regclass := {table};\n    \
    needed bigint := {disk}(t, (SELECT count(*) FROM pg_index WHERE indrelid = t), 1, {refs});\n    \
    free text := nullif(current_setting('zmig.free_disk_bytes', true), '');\n\
BEGIN\n    \
    IF coalesce(current_setting('zmig.skip_disk_check', true), '') IN ('on', 'true', '1') THEN\n        \
        RETURN;\n    \
    ELSIF free IS NULL THEN\n        \
        RAISE NOTICE 'zmig swap %: the move will need about % more disk at its peak; free space not checked (zmig.free_disk_bytes is not set)', {swap}, pg_size_pretty(needed);\n    \
    ELSIF free::bigint < needed THEN\n        \
        RAISE EXCEPTION 'zmig swap %: the move will need about % more disk at its peak, and % is free; nothing was changed. Free disk on the database server and run the migration again; if the figure is wrong, give the free space with PGOPTIONS=''-c zmig.free_disk_bytes=BYTES'' or skip the check with PGOPTIONS=''-c zmig.skip_disk_check=on''', {swap}, pg_size_pretty(needed), pg_size_pretty(free::bigint);\n    \
    END IF;\n\
END\n\
$zmig$;",
        table = regclass(&n.table),
        disk = n.functions.disk_needed,
        swap = n.swap_literal,
        refs = !swap.references.is_empty(),
    )
}

/// Records the new table's primary key (its name, and its index's definition) and drops it.
fn defer_primary_key(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    new regclass := {new};\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT c.conname, c.conkey, pg_get_indexdef(c.conindid) AS definition FROM pg_constraint c WHERE c.conrelid = new AND c.contype = 'p' LOOP\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail, rel) VALUES ({swap}, 'key_index', r.conname, new::text);\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail) VALUES ({swap}, 'key_index_def', r.definition);\n        \
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', new, r.conname);\n        \
        -- Its columns stay NOT NULL, so that finalize's ADD PRIMARY KEY needs no scan.\n        \
        EXECUTE (SELECT format('ALTER TABLE %s %s', new, string_agg(format('ALTER COLUMN %I SET NOT NULL', a.attname), ', '))\n                 \
                 FROM pg_attribute a WHERE a.attrelid = new AND a.attnum = ANY (r.conkey));\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        new = regclass(&n.new),
        swap = n.swap_literal,
    )
}

/// At finalize: builds the new table's primary key index if the move task has not (a small
/// table, finished by finalize itself), makes it the primary key again under its name, with the
/// original's comments and replica identity.
fn restore_primary_key(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    new regclass := {new};\n    \
    old regclass := {old};\n    \
    statement text;\n    \
    r record;\n\
BEGIN\n    \
    FOR statement IN SELECT * FROM {key_index}() LOOP\n        \
        IF (SELECT count(*) FROM (SELECT FROM {new_sql} LIMIT 10001) s) > 10000 THEN\n            \
            RAISE EXCEPTION 'zmig swap %: the move task has not finished building the primary key of %', {swap}, new\n                \
                USING HINT = 'run `cargo xtask zmig backfill ' || {swap} || '` first';\n        \
        END IF;\n        \
        EXECUTE replace(statement, ' CONCURRENTLY ', ' ');\n    \
    END LOOP;\n    \
    FOR r IN\n        \
        SELECT k.detail AS name, obj_description(o.oid, 'pg_constraint') AS comment, obj_description(o.conindid, 'pg_class') AS index_comment, i.indisreplident AS replident\n        \
        FROM {STATE_TABLE} k, pg_constraint o JOIN pg_index i ON i.indexrelid = o.conindid\n        \
        WHERE k.swap = {swap} AND k.item = 'key_index' AND o.conrelid = old AND o.contype = 'p'\n    \
    LOOP\n        \
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I', new, r.name, r.name);\n        \
        IF r.comment IS NOT NULL THEN\n            \
            EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', r.name, new, r.comment);\n        \
        END IF;\n        \
        IF r.index_comment IS NOT NULL THEN\n            \
            EXECUTE format('COMMENT ON INDEX %s IS %L', (SELECT conindid::regclass FROM pg_constraint WHERE conrelid = new AND contype = 'p'), r.index_comment);\n        \
        END IF;\n        \
        IF r.replident THEN\n            \
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I', new, r.name);\n        \
        END IF;\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        new = regclass(&n.new),
        old = regclass(&n.old),
        new_sql = n.new,
        key_index = n.functions.key_index,
        swap = n.swap_literal,
    )
}

/// A PL/pgSQL loop granting on `target` (an expression naming a relation) every privilege the
/// relation `source` (a regclass expression) grants; uses the record variable `r`.
fn copy_grants(source: &str, target: &str) -> String {
    format!(
        "FOR r IN SELECT a.grantee, a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = {source} LOOP\n        \
             EXECUTE format('GRANT %s ON %s TO %s%s', r.privilege_type, {target},\n            \
                 CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,\n            \
                 CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);\n    \
         END LOOP;"
    )
}

/// A PL/pgSQL block making the privileges on the relation `target` (a regclass expression),
/// table-level and per column, exactly those on `source`: what `target` grants is revoked, then
/// each grant of `source` is made again, by its own grantor where that is not the owner (and
/// this session may act as it), so the catalog shows the same grants.
fn copy_acl(source: &str, target: &str) -> String {
    let grantee = |record: &str| {
        format!(
            "CASE WHEN {record}.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid({record}.grantee)) END"
        )
    };
    format!(
        "DECLARE\n        \
             acl record;\n        \
             saved_role text := current_setting('role');\n    \
         BEGIN\n        \
             FOR acl IN SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = {target} LOOP\n            \
                 EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', {target}, {revokee});\n        \
             END LOOP;\n        \
             FOR acl IN SELECT DISTINCT t.attname, a.grantee FROM pg_attribute t, aclexplode(t.attacl) a WHERE t.attrelid = {target} AND t.attnum > 0 AND NOT t.attisdropped LOOP\n            \
                 EXECUTE format('REVOKE ALL (%I) ON %s FROM %s CASCADE', acl.attname, {target}, {revokee});\n        \
             END LOOP;\n        \
             FOR acl IN\n            \
                 SELECT * FROM (\n                \
                     SELECT NULL::name AS attname, a.grantor, a.grantee, a.privilege_type, a.is_grantable, c.relowner AS owner\n                \
                     FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = {source}\n                \
                     UNION ALL\n                \
                     SELECT t.attname, a.grantor, a.grantee, a.privilege_type, a.is_grantable, c.relowner\n                \
                     FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, aclexplode(t.attacl) a\n                \
                     WHERE c.oid = {source} AND t.attnum > 0 AND NOT t.attisdropped\n            \
                 ) e ORDER BY e.grantor <> e.owner\n        \
             LOOP\n            \
                 IF acl.grantor <> acl.owner AND pg_has_role(acl.grantor, 'MEMBER') THEN\n                \
                     EXECUTE format('SET LOCAL ROLE %I', pg_get_userbyid(acl.grantor));\n            \
                 END IF;\n            \
                 EXECUTE format('GRANT %s%s ON %s TO %s%s', acl.privilege_type,\n                \
                     CASE WHEN acl.attname IS NULL THEN '' ELSE format(' (%I)', acl.attname) END, {target}, {grantee},\n                \
                     CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);\n            \
                 PERFORM set_config('role', saved_role, true);\n        \
             END LOOP;\n    \
         END;",
        revokee = grantee("acl"),
        grantee = grantee("acl"),
    )
}

/// The `UNION ALL` view: new, temp, then old, each showing the current column types.
fn view(swap: &Swap, n: &Names) -> String {
    let cast_back: Vec<String> = swap
        .columns
        .iter()
        .map(|c| {
            if c.changes() {
                format!("{col}::{} AS {col}", c.old_type, col = q(&c.name))
            } else {
                q(&c.name)
            }
        })
        .collect();
    let plain: Vec<String> = swap.columns.iter().map(|c| q(&c.name)).collect();
    format!(
        "CREATE VIEW {} AS\n    \
             SELECT {} FROM {}\n    \
             UNION ALL\n    \
             SELECT {} FROM {}\n    \
             UNION ALL\n    \
             SELECT {} FROM {};",
        n.table,
        cast_back.join(", "),
        n.new,
        cast_back.join(", "),
        n.temp,
        plain.join(", "),
        n.old
    )
}

fn view_defaults_and_grants(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    old regclass := {old};\n    \
    r record;\n    \
    g record;\n    \
    grantee text;\n\
BEGIN\n    \
    FOR r IN\n        \
        SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS expr\n        \
        FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum\n        \
        WHERE d.adrelid = old\n    \
    LOOP\n        \
        EXECUTE format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', {view}, r.attname, r.expr);\n    \
    END LOOP;\n    \
    -- An identity column's values come from its sequence, as the table's would. A role that\n    \
    -- inserts into an identity column needs no privilege on its sequence, but the view's\n    \
    -- default calls nextval() as the inserting role: each role that may insert gets USAGE on\n    \
    -- it until finalize, recorded so that reverting prepare revokes what was added here.\n    \
    FOR r IN\n        \
        SELECT a.attname, pg_get_serial_sequence(old::text, a.attname)::regclass AS seq\n        \
        FROM pg_attribute a WHERE a.attrelid = old AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> ''\n    \
    LOOP\n        \
        EXECUTE format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT nextval(%L::regclass)', {view}, r.attname, r.seq);\n        \
        FOR g IN\n            \
            SELECT DISTINCT e.grantee FROM (\n                \
                SELECT a.grantee, a.privilege_type FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = old\n                \
                UNION ALL\n                \
                SELECT a.grantee, a.privilege_type FROM pg_attribute t, aclexplode(t.attacl) a WHERE t.attrelid = old AND t.attname = r.attname\n            \
            ) e\n            \
            WHERE e.privilege_type = 'INSERT'\n              \
              AND NOT EXISTS (SELECT FROM pg_class s, aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) u\n                              \
                              WHERE s.oid = r.seq AND u.grantee = e.grantee AND u.privilege_type = 'USAGE')\n        \
        LOOP\n            \
            grantee := CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END;\n            \
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %s', r.seq, grantee);\n            \
            INSERT INTO {STATE_TABLE} (swap, item, detail, rel) VALUES ({swap}, format('usage:%s:%s', r.seq, grantee), grantee, r.seq::text);\n        \
        END LOOP;\n    \
    END LOOP;\n    \
    IF (SELECT relowner FROM pg_class WHERE oid = {view}::regclass) <> (SELECT relowner FROM pg_class WHERE oid = old) THEN\n        \
        EXECUTE format('ALTER VIEW %s OWNER TO %I', {view}, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = old));\n    \
    END IF;\n    \
    {grants}\n\
END\n\
$zmig$;",
        old = regclass(&n.old),
        view = quote_literal(&n.table),
        grants = copy_acl("old", &regclass(&n.table)),
        swap = n.swap_literal,
    )
}

/// Puts the original table back with every row: the new and temp rows are cast back into it.
fn prepare_down(swap: &Swap, n: &Names) -> Script {
    let mut down = Script::new();
    down.comment(&format!(
        "Reverts prepare: every row of {new} and {temp} goes back into {old}, which takes its \
         name back; nothing inserted or updated since prepare is lost. A value that no longer \
         fits the original type fails the revert rather than being lost. The rows go back while \
         the tables are locked, so this refuses, changing nothing, while more than \
         {FINALIZE_MOVES_AT_MOST} are in {new} and {temp}: move them back online first with \
         `cargo xtask zmig backfill {name} --back` (batched, under live writes), then run the \
         revert again; it then moves only the few rows writers inserted since.",
        name = swap.name,
        new = n.new,
        temp = n.temp,
        old = n.old
    ));
    down.comment(&format!(
        "Every statement below needs a brief lock on {table} and the tables referencing it, \
         taken all at once first, in a loop of short attempts (below) that never keeps their \
         traffic waiting for long. A lock a statement needs beyond those waits at most 200 ms; \
         the migration then rolls back whole and is safe to run again (zmig-runtime's migration \
         runner retries it with back-off). At most {FINALIZE_MOVES_AT_MOST} rows are copied, so \
         ten seconds is a generous bound.",
        table = n.table
    ));
    down.statement(LOCK_TIMEOUT);
    lock_all(swap, n, &mut down);
    let mut body = Script::new();
    body.comment(&format!(
        "Also the three tables behind the view, which a move or a move back still running \
         reads directly: a batch committing rows into {new} after they were copied back would \
         lose them when {new} is dropped.",
        new = n.new
    ));
    body.take_locks(
        &swap.name,
        &[
            (n.old.clone(), Lock::AccessExclusive),
            (n.temp.clone(), Lock::AccessExclusive),
            (n.new.clone(), Lock::AccessExclusive),
        ],
    );
    body.comment(&format!(
        "Refuse, changing nothing, while more rows are left in {new} and {temp} than this revert \
         moves under its lock (each counted up to {FINALIZE_MOVES_AT_MOST} and one).",
        new = n.new,
        temp = n.temp
    ));
    body.statement(&revert_gate(n));
    body.squawk_ignore("ban-drop-view");
    body.statement(&format!("DROP VIEW {};", n.table));
    let columns: Vec<String> = swap.columns.iter().map(|c| q(&c.name)).collect();
    let cast_back: Vec<String> = swap
        .columns
        .iter()
        .map(|c| {
            if c.changes() {
                format!("{}::{}", q(&c.name), c.old_type)
            } else {
                q(&c.name)
            }
        })
        .collect();
    body.comment(
        "OVERRIDING SYSTEM VALUE: an identity column of the original keeps the values the rows \
         have (its sequence gave them out); without one the clause changes nothing.",
    );
    for from in [&n.new, &n.temp] {
        body.statement(&format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE\nSELECT {} FROM {from};",
            n.old,
            columns.join(", "),
            cast_back.join(", ")
        ));
    }
    body.safety_assured(
        &format!(
            "Their rows are back in {} (the statements above): nothing is lost.",
            n.old
        ),
        &[
            format!("DROP TABLE {};", n.new),
            format!("DROP TABLE {};", n.temp),
        ],
    );
    for statement in drop_routines(n) {
        body.statement(&statement);
    }
    unique::drop(swap, n, &mut body);
    body.assured_start(
        "The original table takes its name back, in the transaction that dropped the view: no \
         client finds the name missing.",
    );
    body.squawk_ignore("renaming-table");
    body.statement(&format!(
        "ALTER TABLE {} RENAME TO {};",
        n.old,
        q(&swap.table.name)
    ));
    body.assured_end();
    for reference in &swap.references {
        let table = reference.table.sql();
        for trigger in reference_triggers(swap, reference) {
            body.statement(&format!("DROP TRIGGER {} ON {table};", q(&trigger)));
        }
        body.statement(&format!(
            "DROP FUNCTION {}();",
            reference_function_name(swap, reference)
        ));
        body.safety_assured(
            "The shadow column only ever held copies of the original column.",
            &[format!(
                "ALTER TABLE {table} DROP COLUMN {};",
                q(&shadow_column(reference))
            )],
        );
    }
    body.comment(
        "The foreign keys pointing at the table come back unvalidated (a catalog change); they \
         are validated after this transaction commits.",
    );
    body.statement(&restore_foreign_keys(swap, n));
    body.comment(
        "The USAGE on identity sequences that prepare granted for the view's default goes again.",
    );
    body.statement(&format!(
        "DO $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT detail, rel FROM {STATE_TABLE} WHERE swap = {} AND item LIKE 'usage:%' LOOP\n        \
        EXECUTE format('REVOKE USAGE ON SEQUENCE %s FROM %s', r.rel, r.detail);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        n.swap_literal
    ));
    body.statement(&format!(
        "DELETE FROM {STATE_TABLE} WHERE swap = {};",
        n.swap_literal
    ));
    down.once(
        &swapped_already(n),
        &format!(
            "zmig swap {}: prepare was reverted by an earlier run that stopped after it; the foreign keys are validated below",
            swap.name
        ),
        body,
    );
    down.commit();
    down.comment("Validation reads the referencing tables but blocks neither reads nor writes.");
    down.statement("SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = 0;");
    lock_references(swap, &mut down);
    down.statement(&validate_foreign_keys(&swap.table.sql()));
    down
}

/// Rows prepare's down and finalize move while they hold the tables' locks, at most.
const FINALIZE_MOVES_AT_MOST: i64 = 10_000;

/// Refuses the revert of prepare while more than [`FINALIZE_MOVES_AT_MOST`] rows are in new and
/// temp, naming how many (counted up to one more than that in each table, the planner's
/// estimate beyond) and the command that moves them back online.
fn revert_gate(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    in_new bigint := (SELECT count(*) FROM (SELECT FROM {new} LIMIT {over}) r);\n    \
    in_temp bigint := (SELECT count(*) FROM (SELECT FROM {temp} LIMIT {over}) r);\n    \
    rows_left text;\n\
BEGIN\n    \
    IF in_new + in_temp > {most} THEN\n        \
        rows_left := CASE WHEN in_new < {over} AND in_temp < {over} THEN format('%s rows', in_new + in_temp)\n            \
            ELSE format('more than %s rows (about %s by the planner''s estimate)', {most}, greatest(in_new + in_temp,\n                \
                (SELECT sum(greatest(reltuples, 0))::bigint FROM pg_class WHERE oid IN ({new_lit}::regclass, {temp_lit}::regclass))))\n        \
        END;\n        \
        RAISE EXCEPTION 'zmig swap %: % are in % and %, more than the {most} this revert moves back while it holds the locks; nothing was changed. Move them back online first (batched, under live writes): cargo xtask zmig backfill % --back; then run the revert again', {swap}, rows_left, {new_lit}, {temp_lit}, {swap};\n    \
    END IF;\n\
END\n\
$zmig$;",
        new = n.new,
        temp = n.temp,
        over = FINALIZE_MOVES_AT_MOST + 1,
        most = FINALIZE_MOVES_AT_MOST,
        new_lit = quote_literal(&n.new),
        temp_lit = quote_literal(&n.temp),
        swap = n.swap_literal,
    )
}

/// Whether the first transaction of prepare's down or of finalize has committed already: the
/// old table is gone (renamed back, or dropped) and so is the swap's state. Both files commit
/// once more, to validate foreign keys, so a run that stopped there is run again from the top.
fn swapped_already(n: &Names) -> String {
    format!(
        "to_regclass({}) IS NULL AND NOT EXISTS (SELECT FROM {STATE_TABLE} WHERE swap = {})",
        quote_literal(&n.old),
        n.swap_literal
    )
}

/// Re-adds, `NOT VALID`, every foreign key the guards recorded, pointing at the table under its
/// original name, with its match type, actions and comment.
fn restore_foreign_keys(swap: &Swap, n: &Names) -> String {
    let adds: Vec<String> = swap
        .references
        .iter()
        .map(|r| {
            format!(
                "    FOR fk IN\n        \
                         SELECT s.detail AS name, a.detail AS actions, c.detail AS comment\n        \
                         FROM {STATE_TABLE} s\n        \
                         LEFT JOIN {STATE_TABLE} a ON a.swap = s.swap AND a.item = 'actions:' || s.item\n        \
                         LEFT JOIN {STATE_TABLE} c ON c.swap = s.swap AND c.item = 'comment:' || s.item\n        \
                         WHERE s.swap = {swap} AND s.item = {item}\n    \
                     LOOP\n        \
                         EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s %s NOT VALID', {table}, fk.name, {column}, {target}, coalesce(fk.actions, ''));\n        \
                         IF fk.comment IS NOT NULL THEN\n            \
                             EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', fk.name, {table}, fk.comment);\n        \
                         END IF;\n    \
                     END LOOP;",
                swap = n.swap_literal,
                item = fk_item(r),
                table = quote_literal(&r.table.sql()),
                column = quote_literal(&r.column),
                target = quote_literal(&n.table),
            )
        })
        .collect();
    if adds.is_empty() {
        return "-- (no foreign key points at the table)".to_owned();
    }
    format!(
        "DO $zmig$\nDECLARE\n    fk record;\nBEGIN\n{}\nEND\n$zmig$;",
        adds.join("\n")
    )
}

/// Validates every foreign key pointing at `table` that is not yet valid.
fn validate_foreign_keys(table: &str) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    fk record;\n\
BEGIN\n    \
    FOR fk IN SELECT conname, conrelid::regclass AS rel FROM pg_constraint WHERE confrelid = {} AND contype = 'f' AND NOT convalidated LOOP\n        \
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', fk.rel, fk.conname);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        regclass(table)
    )
}

fn finalize(swap: &Swap, n: &Names) -> PhaseSql {
    let mut up = Script::new();
    up.comment(&format!(
        "finalize: {new} becomes {table} with the new structure ({}); the view, the helpers and \
         the emptied {old} and {temp} are dropped. Ship it with the release whose schema.rs \
         shows the new types (`diesel print-schema` after this migration). Not reversible.",
        changes(swap),
        new = n.new,
        table = n.table,
        old = n.old,
        temp = n.temp
    ));
    up.comment(&lock_timeout_comment(&n.table));
    up.statement(LOCK_TIMEOUT);
    lock_all(swap, n, &mut up);
    let mut body = Script::new();
    body.comment(&format!(
        "Only the rows written since the move task finished are left to move while the tables \
         are locked: stop here unless it has run (`cargo xtask zmig backfill {}`). A small table \
         is finished here, so a fresh database migrates in one go.",
        swap.name
    ));
    body.statement(&finalize_gate(swap, n));
    body.comment(
        "The new table's primary key, as the original's: its index was built by the move task \
         once the move was over (here, for a table small enough to finish here), so this is a \
         catalog change. Then the original's comments and replica identity on it.",
    );
    body.statement(&restore_primary_key(n));
    body.comment("The sequence now belongs to the new table (before the old one is dropped with it) and counts in the new type, continuing past the highest key. The new table takes the view's privileges exactly, table-level and per column: the original's, copied to the view by prepare, with those granted or revoked since.");
    body.statement(&finalize_carry_over(swap, n));
    body.comment(
        "The view goes; the table under its name takes its place below, in this transaction.",
    );
    body.squawk_ignore("ban-drop-view");
    body.statement(&format!("DROP VIEW {};", n.table));
    for statement in drop_routines(n) {
        body.statement(&statement);
    }
    unique::drop(swap, n, &mut body);
    body.safety_assured(
        &format!(
            "Both are empty: the gate above raised otherwise. Every row is in {}.",
            n.new
        ),
        &[
            format!("DROP TABLE {};", n.old),
            format!("DROP TABLE {};", n.temp),
        ],
    );
    body.assured_start(
        "zmig's own index of the key goes, and the new table takes the name, in the \
         transaction that dropped the view and holds every lock already.",
    );
    body.comment("zmig's own index of the key (`zmig_key`); the table is locked already.");
    body.squawk_ignore("require-concurrent-index-deletion");
    body.statement(&format!(
        "DROP INDEX {};",
        sibling(swap, &[&n.new_key_index]).sql()
    ));
    body.squawk_ignore("renaming-table");
    body.statement(&format!(
        "ALTER TABLE {} RENAME TO {};",
        n.new,
        q(&swap.table.name)
    ));
    body.assured_end();
    body.comment(
        "An identity column of the original is one again, with its sequence's name, settings \
         and position (recorded above, before the original went with its sequence): a catalog \
         change under the locks held.",
    );
    body.statement(&finalize_identities(n));
    body.comment("Indexes (and the constraints they back) take the original names.");
    body.statement(&format!(
        "DO $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT item, detail FROM {STATE_TABLE} WHERE swap = {} AND item LIKE 'index:%' LOOP\n        \
        EXECUTE format('ALTER INDEX %s RENAME TO %I', substr(r.item, 7), (parse_ident(r.detail))[array_upper(parse_ident(r.detail), 1)]);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        n.swap_literal
    ));
    for reference in &swap.references {
        let table = reference.table.sql();
        let shadow = q(&shadow_column(reference));
        let column = q(&reference.column);
        for trigger in reference_triggers(swap, reference) {
            body.statement(&format!("DROP TRIGGER {} ON {table};", q(&trigger)));
        }
        body.statement(&format!(
            "DROP FUNCTION {}();",
            reference_function_name(swap, reference)
        ));
        body.comment(&format!(
            "What the catalog keeps of {table}.{column} besides its values goes to the shadow \
             column before the original is dropped: its comment, privileges, statistics target \
             and distinct-value estimates, and the comments of the indexes rebuilt on it."
        ));
        body.statement(&carry_reference_column(n, reference));
        let steps = vec![
            format!("ALTER TABLE {table} DROP COLUMN {column};"),
            format!("ALTER TABLE {table} RENAME COLUMN {shadow} TO {column};"),
        ];
        let not_null = (!reference.nullable).then(|| {
            (
                format!("ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;"),
                format!(
                    "ALTER TABLE {table} DROP CONSTRAINT {};",
                    q(&shadow_not_null(swap, reference))
                ),
            )
        });
        body.safety_assured(
            &format!(
                "The shadow column, equal to {table}.{column} on every row (kept so by the \
                 trigger, filled by the move task, checked by the gate), takes its place. \
                 Catalog changes only."
            ),
            &steps,
        );
        if let Some((set_not_null, drop_check)) = not_null {
            body.comment(
                "No scan: the check proving the column holds no NULL was validated by the move \
                 task (or by the gate above), so SET NOT NULL takes it as proof.",
            );
            body.assured_start("A NOT NULL proved by a validated check: no scan, catalog only.");
            body.squawk_ignore("adding-not-nullable-field");
            body.statement(&set_not_null);
            body.assured_end();
            body.drop_own_constraint(&drop_check);
        }
    }
    if !swap.references.is_empty() {
        body.comment(
            "The indexes rebuilt on the shadow columns take the names of the originals, which \
             went with the original columns.",
        );
        body.statement(&format!(
            "DO $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT substr(item, 10) AS shadow, detail AS original, rel FROM {STATE_TABLE} WHERE swap = {} AND item LIKE 'refindex:%' LOOP\n        \
        EXECUTE format('ALTER INDEX %s RENAME TO %I', {}, r.original);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
            n.swap_literal,
            index_in_table_schema("r", "shadow"),
        ));
    }
    body.comment(
        "The foreign keys pointing at the table come back unvalidated (a catalog change), \
         validated after this transaction commits.",
    );
    body.statement(&restore_foreign_keys(swap, n));
    body.statement(&format!(
        "DELETE FROM {STATE_TABLE} WHERE swap = {};",
        n.swap_literal
    ));
    up.once(
        &swapped_already(n),
        &format!(
            "zmig swap {}: the swap was committed by an earlier run that stopped after it; the foreign keys are validated below",
            swap.name
        ),
        body,
    );
    up.commit();
    up.comment("Validation reads the referencing tables but blocks neither reads nor writes.");
    up.statement("SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = 0;");
    lock_references(swap, &mut up);
    up.statement(&validate_foreign_keys(&swap.table.sql()));

    let mut down = Script::new();
    down.comment(
        "finalize dropped the view and the emptied tables; there is no state to return to. To \
         go back to the original types, write an ordinary migration (or a new swap) that changes \
         them.",
    );
    down.statement(&format!(
        "DO $zmig$\nBEGIN\n    RAISE EXCEPTION 'zmig swap {}: finalize cannot be reverted';\nEND\n$zmig$;",
        swap.name
    ));
    PhaseSql::outside_transaction(Stage::Finalize, up, down)
}

/// Copies the comment, privileges, statistics target and distinct-value estimates of a
/// referencing column, and the comments of its indexes, to the shadow column and the indexes
/// rebuilt on it.
fn carry_reference_column(n: &Names, reference: &Reference) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    t regclass := {table};\n    \
    r record;\n    \
    saved_role text := current_setting('role');\n\
BEGIN\n    \
    IF col_description(t, (SELECT attnum FROM pg_attribute WHERE attrelid = t AND attname = {column})) IS NOT NULL THEN\n        \
        EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', t, {shadow}, col_description(t, (SELECT attnum FROM pg_attribute WHERE attrelid = t AND attname = {column})));\n    \
    END IF;\n    \
    FOR r IN\n        \
        SELECT a.grantor, a.grantee, a.privilege_type, a.is_grantable, c.relowner AS owner\n        \
        FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a\n        \
        WHERE c.oid = t AND att.attname = {column}\n        \
        ORDER BY a.grantor <> c.relowner\n    \
    LOOP\n        \
        IF r.grantor <> r.owner AND pg_has_role(r.grantor, 'MEMBER') THEN\n            \
            EXECUTE format('SET LOCAL ROLE %I', pg_get_userbyid(r.grantor));\n        \
        END IF;\n        \
        EXECUTE format('GRANT %s (%I) ON %s TO %s%s', r.privilege_type, {shadow}, t,\n            \
            CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,\n            \
            CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);\n        \
        PERFORM set_config('role', saved_role, true);\n    \
    END LOOP;\n    \
    FOR r IN\n        \
        SELECT format('%I.%I', ns.nspname, substr(s.item, 10)) AS shadow_index, obj_description(o.oid, 'pg_class') AS comment\n        \
        FROM {STATE_TABLE} s\n        \
        JOIN pg_class c ON c.oid = t\n        \
        JOIN pg_namespace ns ON ns.oid = c.relnamespace\n        \
        JOIN pg_class o ON o.relnamespace = c.relnamespace AND o.relname = s.detail\n        \
        WHERE s.swap = {swap} AND s.item LIKE 'refindex:%' AND s.rel::regclass = t AND obj_description(o.oid, 'pg_class') IS NOT NULL\n    \
    LOOP\n        \
        EXECUTE format('COMMENT ON INDEX %s IS %L', r.shadow_index, r.comment);\n    \
    END LOOP;\n    \
    FOR r IN\n        \
        SELECT format('ALTER COLUMN %I SET STATISTICS %s', {shadow}, attstattarget) AS change FROM pg_attribute WHERE attrelid = t AND attname = {column} AND attstattarget >= 0\n        \
        UNION ALL\n        \
        SELECT format('ALTER COLUMN %I SET (%I = %L)', {shadow}, split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)) FROM pg_attribute a, unnest(a.attoptions) o\n        \
        WHERE a.attrelid = t AND a.attname = {column} AND split_part(o, '=', 1) IN ('n_distinct', 'n_distinct_inherited')\n    \
    LOOP\n        \
        EXECUTE format('ALTER TABLE %s %s', t, r.change);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        table = regclass(&reference.table.sql()),
        column = quote_literal(&reference.column),
        shadow = quote_literal(&shadow_column(reference)),
        swap = n.swap_literal,
    )
}

/// Moves what is left (refusing if that is more than a few thousand rows), fills what is left
/// of the shadow columns, and checks old and temp are empty.
fn finalize_gate(swap: &Swap, n: &Names) -> String {
    let mut references = String::new();
    for reference in &swap.references {
        let table = reference.table.sql();
        let shadow = q(&shadow_column(reference));
        let column = q(&reference.column);
        references.push_str(&format!(
            "    IF NOT (SELECT finished FROM {STATE_TABLE} WHERE swap = {swap} AND item = {item}) THEN\n        \
                 small := (SELECT count(*) FROM (SELECT FROM {table} LIMIT 10001) s) <= 10000;\n        \
                 IF NOT small THEN\n            \
                     RAISE EXCEPTION 'zmig swap %: the move task has not finished filling %.%', {swap}, {table_lit}, {shadow_lit}\n                \
                         USING HINT = 'run `cargo xtask zmig backfill ' || {swap} || '` first';\n        \
                 END IF;\n        \
                 UPDATE {table} SET {shadow} = {column} WHERE {shadow} IS DISTINCT FROM {column};\n{validate}    \
             END IF;\n",
            swap = n.swap_literal,
            item = reference_item(reference),
            table_lit = quote_literal(&table),
            shadow_lit = quote_literal(&shadow),
            validate = if reference.nullable {
                String::new()
            } else {
                format!(
                    "        ALTER TABLE {table} VALIDATE CONSTRAINT {};\n",
                    q(&shadow_not_null(swap, reference))
                )
            }
        ));
    }
    if !swap.references.is_empty() {
        references.push_str(&format!(
            "    FOR statement IN SELECT * FROM {ref_indexes}() LOOP\n        \
                 IF NOT small THEN\n            \
                     RAISE EXCEPTION 'zmig swap %: the move task has not finished rebuilding the indexes of the referencing columns', {swap}\n                \
                         USING HINT = 'run `cargo xtask zmig backfill ' || {swap} || '` first';\n        \
                 END IF;\n        \
                 EXECUTE replace(statement, ' CONCURRENTLY ', ' ');\n    \
             END LOOP;\n",
            ref_indexes = n.functions.ref_indexes,
            swap = n.swap_literal,
        ));
    }
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    left_over bigint;\n    \
    small boolean := true;\n    \
    statement text;\n\
BEGIN\n    \
    SELECT (SELECT count(*) FROM (SELECT FROM {old} LIMIT 10001) o) + (SELECT count(*) FROM (SELECT FROM {temp} LIMIT 10001) t)\n    \
    INTO left_over;\n    \
    IF left_over > 10000 THEN\n        \
        RAISE EXCEPTION 'zmig swap %: more than 10000 rows are still to move', {swap}\n            \
            USING HINT = 'run `cargo xtask zmig backfill ' || {swap} || '` first';\n    \
    END IF;\n    \
    PERFORM {move_fn}(10000);\n    \
    IF EXISTS (SELECT FROM {old}) OR EXISTS (SELECT FROM {temp}) THEN\n        \
        RAISE EXCEPTION 'zmig swap %: rows are left in % or % after the last move', {swap}, {old_lit}, {temp_lit};\n    \
    END IF;\n\
{references}\
END\n\
$zmig$;",
        old = n.old,
        temp = n.temp,
        swap = n.swap_literal,
        move_fn = n.functions.move_rows,
        old_lit = quote_literal(&n.old),
        temp_lit = quote_literal(&n.temp),
    )
}

fn finalize_carry_over(swap: &Swap, n: &Names) -> String {
    let key = swap.key_column();
    let sequence_type = if key.changes() {
        format!(" AS {}", key.new_type)
    } else {
        String::new()
    };
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    sequence text := pg_get_serial_sequence({old_lit}, {key_lit});\n    \
    r record;\n    \
    settings record;\n    \
    state record;\n\
BEGIN\n    \
    IF sequence IS NOT NULL AND (SELECT attidentity FROM pg_attribute WHERE attrelid = {old_lit}::regclass AND attname = {key_lit}) = '' THEN\n        \
        EXECUTE format('ALTER SEQUENCE %s{sequence_type} OWNED BY %s.%I', sequence, {new_lit}, {key_lit});\n    \
    END IF;\n    \
    -- An identity sequence goes with the old table and cannot change owner: its settings, name\n    \
    -- and position are recorded here, and the new table's column becomes an identity of the\n    \
    -- same kind, name and settings, continuing from that position, once it has the name\n    \
    -- (below). Its bounds follow the column's new type where they were the old type's.\n    \
    FOR r IN\n        \
        SELECT a.attname, a.attidentity, pg_get_serial_sequence({old_lit}, a.attname)::regclass AS seq\n        \
        FROM pg_attribute a WHERE a.attrelid = {old_lit}::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> ''\n    \
    LOOP\n        \
        SELECT s.*, c.relname, ns.nspname,\n               \
               CASE s.seqtypid WHEN 'int2'::regtype THEN -32768 WHEN 'int4'::regtype THEN -2147483648 ELSE -9223372036854775808 END AS type_min,\n               \
               CASE s.seqtypid WHEN 'int2'::regtype THEN 32767 WHEN 'int4'::regtype THEN 2147483647 ELSE 9223372036854775807 END AS type_max\n        \
        INTO settings\n        \
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace\n        \
        WHERE s.seqrelid = r.seq;\n        \
        EXECUTE format('SELECT last_value, is_called FROM %s', r.seq) INTO state;\n        \
        INSERT INTO {STATE_TABLE} (swap, item, detail, rel, after, finished) VALUES ({swap}, 'identity:' || r.attname,\n            \
            format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED %s AS IDENTITY (SEQUENCE NAME %I.%I INCREMENT BY %s %s %s START WITH %s CACHE %s %s)',\n                \
                {table_lit}, r.attname, CASE r.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END,\n                \
                settings.nspname, settings.relname, settings.seqincrement,\n                \
                CASE WHEN settings.seqmin = CASE WHEN settings.seqincrement > 0 THEN 1 ELSE settings.type_min END THEN 'NO MINVALUE' ELSE 'MINVALUE ' || settings.seqmin END,\n                \
                CASE WHEN settings.seqmax = CASE WHEN settings.seqincrement > 0 THEN settings.type_max ELSE -1 END THEN 'NO MAXVALUE' ELSE 'MAXVALUE ' || settings.seqmax END,\n                \
                settings.seqstart, settings.seqcache, CASE WHEN settings.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END),\n            \
            format('%I.%I', settings.nspname, settings.relname), state.last_value, state.is_called);\n    \
    END LOOP;\n    \
    {grants}\n\
END\n\
$zmig$;",
        old_lit = quote_literal(&n.old),
        new_lit = quote_literal(&n.new),
        table_lit = quote_literal(&n.table),
        key_lit = quote_literal(&swap.key),
        swap = n.swap_literal,
        grants = copy_acl(&regclass(&n.table), &regclass(&n.new)),
    )
}

/// After finalize's rename: each identity column recorded by [`finalize_carry_over`] becomes an
/// identity again on the new table, its sequence continuing where the original's stood.
fn finalize_identities(n: &Names) -> String {
    format!(
        "DO $zmig$\n\
DECLARE\n    \
    r record;\n\
BEGIN\n    \
    FOR r IN SELECT detail, rel, after, finished FROM {STATE_TABLE} WHERE swap = {} AND item LIKE 'identity:%' LOOP\n        \
        EXECUTE r.detail;\n        \
        PERFORM setval(r.rel::regclass, r.after, r.finished);\n    \
    END LOOP;\n\
END\n\
$zmig$;",
        n.swap_literal
    )
}
