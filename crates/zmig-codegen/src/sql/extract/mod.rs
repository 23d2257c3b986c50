//! The SQL of an extract's phases: expand (the new table), dual_write (owner → new sync
//! triggers), write_new (new → owner sync, old columns nullable) and contract (drop it all).
//!
//! The two sync directions never feed each other: each trigger function sets the transaction-
//! local setting `zmig.syncing` to the migration's name while it writes the other table, and
//! every sync trigger's `WHEN` skips rows written under that setting. `IS DISTINCT FROM`
//! guards on top make every write a no-op when the values already agree.

mod backfill;
mod gate;
mod guard;
mod sync;

use self::backfill::{backfill_functions, drop_backfill_functions};
use self::gate::{enable_always, forward_triggers, reverse_triggers, verified_gate};
use self::guard::check_owner_columns;
use self::sync::{drop_owner_sync, drop_reverse_sync, owner_sync, reverse_sync};
use super::{object_name, quote_ident as q, quote_literal, Lock, PhaseSql, Script};
use crate::plan::{Extract, MovedColumn, NewPrimaryKey};
use crate::spec::{Stage, SyncMode};

pub use self::gate::{sync_identity_sql, to_new_function_name, to_old_function_name};

/// The SQL of `stage`, or `None` for phases that ship no migration (backfill, read_new).
pub fn phase_sql(extract: &Extract, stage: Stage) -> Option<PhaseSql> {
    let names = Names::new(extract);
    match stage {
        Stage::Expand => Some(expand(extract)),
        Stage::DualWrite => Some(dual_write(extract, &names)),
        Stage::WriteNew => Some(write_new(extract, &names)),
        Stage::Contract => Some(contract(extract, &names)),
        Stage::Backfill | Stage::ReadNew => None,
        // Not an extract's stages.
        Stage::Prepare | Stage::Move | Stage::Finalize => None,
    }
}

/// Names of the database objects zmig creates, each at most 63 bytes.
pub(crate) struct Names {
    to_new_fn: String,
    to_new_insert: String,
    to_new_update: String,
    to_new_delete: String,
    to_old_fn: String,
    to_old_insert_delete: String,
    to_old_update: String,
    backfill_fn: String,
    diff_fn: String,
    key_range_fn: String,
    sync_owner_fn: String,
}

impl Names {
    fn new(extract: &Extract) -> Self {
        let n = |suffix: &str| object_name(&["zmig", &extract.name, suffix]);
        Names {
            to_new_fn: to_new_function_name(&extract.name),
            to_new_insert: n("to_new_ins"),
            to_new_update: n("to_new_upd"),
            to_new_delete: n("to_new_del"),
            to_old_fn: to_old_function_name(&extract.name),
            to_old_insert_delete: n("to_old_ins_del"),
            to_old_update: n("to_old_upd"),
            backfill_fn: backfill_function_name(&extract.name),
            diff_fn: diff_function_name(&extract.name),
            key_range_fn: key_range_function_name(&extract.name),
            sync_owner_fn: sync_owner_function_name(&extract.name),
        }
    }
}

/// The function the runtime's backfill calls for each batch. A migration name has at most 40
/// characters, so the name is never shortened: `zmig-runtime` spells it the same way.
pub fn backfill_function_name(migration: &str) -> String {
    format!("zmig_{migration}_backfill")
}

/// The function that says which owner keys the backfill walks.
pub fn key_range_function_name(migration: &str) -> String {
    format!("zmig_{migration}_key_range")
}

/// The function the derive's `sync = app` wrappers call after each write of an owner.
pub fn sync_owner_function_name(migration: &str) -> String {
    format!("zmig_{migration}_sync_owner")
}

/// The function `verify` calls for each chunk of keys.
pub fn diff_function_name(migration: &str) -> String {
    format!("zmig_{migration}_diff")
}

/// Every transaction of a generated migration starts with these: a short wait for locks (see
/// [`lock_timeout_comment`]) and a bound on how long any statement may hold them.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = '10s';";

/// For a transaction that scans a table on purpose while holding no lock that blocks traffic:
/// still a short wait for locks, but no bound on the scan.
const SCAN_TIMEOUTS: &str = "SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = 0;";

fn lock_timeout_comment(table: &str) -> String {
    format!(
        "Every statement below needs a brief lock on {table}, taken first with the others this \
         transaction needs, in a loop of short attempts (below) that never keeps the table's \
         traffic waiting for long. A lock a statement needs beyond those waits at most a second; \
         the migration then rolls back whole and is safe to run again. Unless a step says \
         otherwise, no statement here scans or rewrites the table, so ten seconds is a generous \
         bound."
    )
}

fn expand(x: &Extract) -> PhaseSql {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let mut up = Script::new();
    up.comment(
        "This migration only creates a table: it locks nothing the application uses. The usual short\n\
         timeouts stay, so that nothing here can ever wait behind traffic.",
    );
    up.statement(LOCK_TIMEOUT);
    check_owner_columns(x, Stage::Expand, &mut up);

    let mut lines = Vec::new();
    match &x.primary_key {
        NewPrimaryKey::Identity(id) => lines.push(format!(
            "{} bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            q(id)
        )),
        NewPrimaryKey::OwnerKey => {}
        NewPrimaryKey::Moved(_) => {}
    }
    let key_pk = if x.primary_key == NewPrimaryKey::OwnerKey {
        " PRIMARY KEY"
    } else {
        ""
    };
    lines.push(format!(
        "{} {} NOT NULL{key_pk}",
        q(&x.key),
        x.owner_pk_type
    ));
    for c in &x.columns {
        let not_null = if c.nullable { "" } else { " NOT NULL" };
        let pk = if x.primary_key == NewPrimaryKey::Moved(c.target.clone()) {
            " PRIMARY KEY"
        } else {
            ""
        };
        let default = c
            .default
            .as_ref()
            .map(|d| format!(" DEFAULT {d}"))
            .unwrap_or_default();
        lines.push(format!(
            "{} {}{default}{not_null}{pk}",
            q(&c.target),
            typed(c, &c.target_type)
        ));
    }
    for t in &x.timestamps {
        lines.push(format!(
            "{} {} NOT NULL DEFAULT now()",
            q(&t.name),
            t.pg_type
        ));
    }
    if x.primary_key != NewPrimaryKey::OwnerKey && x.unique_key {
        lines.push(format!(
            "CONSTRAINT {} UNIQUE ({})",
            q(&object_name(&[&x.new_table.name, &x.key, "key"])),
            q(&x.key)
        ));
    }
    let moved: Vec<String> = x.columns.iter().map(|c| q(&c.source)).collect();
    let per_owner = match x.own_row_column() {
        None => "One row per owner at most: the owner key is unique.".to_owned(),
        Some(own) => format!(
            "An owner may have several rows (the owner key is not unique); its own\n\
             row, the one the sync keeps in step, is the one whose {} equals the owner's {}.",
            q(&own.target),
            q(&own.source)
        ),
    };
    up.comment(&format!(
        "The new home of {} of {owner}. {per_owner} The\n\
         foreign key to {owner} comes later, at write_new, once the backfill is verified: checked\n\
         row by row it would be nearly half of the backfill's time, and the dual_write triggers do\n\
         its work until then (a deleted owner loses its row, a changed key takes it along). So this\n\
         migration creates an empty table and takes no lock on {owner}.",
        moved.join(", ")
    ));
    up.safety_assured(
        "No IF NOT EXISTS, on purpose: a table already under this name is not zmig's, and adopting it\n\
         would sync into a table of unknown shape. The migration is transactional, so a retry starts clean.",
        &[format!("CREATE TABLE {new} (\n    {}\n);", lines.join(",\n    "))],
    );
    if !x.unique_key {
        up.safety_assured(
            &format!(
                "The owner key's index, for the sync and the foreign key's cascades. A plain CREATE INDEX,\n\
                 not CONCURRENTLY: {new} was created empty just above, in this transaction, so nobody else\n\
                 can see it yet, let alone wait for it (and CONCURRENTLY cannot run in a transaction). No\n\
                 IF NOT EXISTS: the table is new, and a retry of this transactional migration starts clean."
            ),
            &[format!(
                "CREATE INDEX {} ON {new} ({});",
                q(&object_name(&[&x.new_table.name, &x.key, "idx"])),
                q(&x.key)
            )],
        );
    }

    up.comment("Comments, so the table explains itself in psql and in `diesel print-schema`.");
    up.statement(&format!(
        "COMMENT ON TABLE {new} IS {};",
        quote_literal(&format!(
            "Columns extracted from {} by zmig migration {}.",
            x.owner.name, x.name
        ))
    ));
    up.statement(&format!(
        "COMMENT ON COLUMN {new}.{} IS {};",
        q(&x.key),
        quote_literal(&format!("The {} row this row belongs to.", x.owner.name))
    ));
    for c in &x.columns {
        let text = match (&c.doc, &c.comment) {
            // The owner column's own comment describes the data, wherever it lives.
            (_, Some(comment)) => comment.clone(),
            // A record read from the database without a comment: schema.rs's doc is then
            // Diesel's placeholder ("Its SQL type is `Int4`"), true of the old column only.
            _ if x.exact_types && c.target_type != c.source_type => format!(
                "Was {}.{} ({}), widened to {}.",
                x.owner.name, c.source, c.source_type, c.target_type
            ),
            _ if x.exact_types => format!("Was {}.{}.", x.owner.name, c.source),
            (Some(doc), None) => doc.clone(),
            (None, None) if c.target_type != c.source_type => {
                format!(
                    "Was {}.{} ({}), widened.",
                    x.owner.name, c.source, c.source_type
                )
            }
            (None, None) => format!("Was {}.{}.", x.owner.name, c.source),
        };
        up.statement(&format!(
            "COMMENT ON COLUMN {new}.{} IS {};",
            q(&c.target),
            quote_literal(&text)
        ));
    }

    let mut down = Script::new();
    down.comment(&lock_timeout_comment(&owner));
    down.statement(LOCK_TIMEOUT);
    // The owner too: where the table still has a foreign key to it (write_new adds one),
    // dropping the table locks the owner as well, and that lock must not wait unbounded.
    down.take_locks(
        &x.name,
        &[
            (new.clone(), Lock::AccessExclusive),
            (owner.clone(), Lock::AccessExclusive),
        ],
    );
    down.safety_assured(
        &format!(
            "Dropping {new} discards only copies: until write_new the old columns of {owner} hold every\n\
             value, and this phase is reverted only after dual_write is."
        ),
        &[format!("DROP TABLE {new};")],
    );
    PhaseSql::transactional(Stage::Expand, up, down)
}

/// `ty` with the column's collation, as a column definition spells it.
fn typed(c: &MovedColumn, ty: &str) -> String {
    match &c.collation {
        Some(collation) => format!("{ty} COLLATE {collation}"),
        None => ty.to_owned(),
    }
}

fn dual_write(x: &Extract, n: &Names) -> PhaseSql {
    let owner = x.owner.sql();
    let mut up = Script::new();
    match x.sync {
        SyncMode::Trigger => up.comment(&lock_timeout_comment(&owner)),
        SyncMode::App => up.comment(
            "This migration only creates functions: it locks no table. The usual short timeouts stay, \
             so that nothing here can ever wait behind traffic.",
        ),
    }
    up.statement(LOCK_TIMEOUT);
    if x.sync == SyncMode::Trigger {
        up.take_locks(&x.name, &[(owner.clone(), Lock::ShareRowExclusive)]);
    }
    check_owner_columns(x, Stage::DualWrite, &mut up);
    owner_sync(x, n, false, &mut up);
    if x.sync == SyncMode::Trigger {
        enable_always(&owner, &forward_triggers(x, n), &mut up);
    }
    backfill_functions(x, n, false, &mut up);

    let mut down = Script::new();
    down.comment(&lock_timeout_comment(&owner));
    down.statement(LOCK_TIMEOUT);
    if x.sync == SyncMode::Trigger {
        down.take_locks(&x.name, &[(owner.clone(), Lock::AccessExclusive)]);
    }
    down.comment("Stops the sync; the rows already copied stay until expand is reverted.");
    for statement in drop_owner_sync(x, n)
        .into_iter()
        .chain(drop_backfill_functions(n))
    {
        down.statement(&statement);
    }
    PhaseSql::transactional(Stage::DualWrite, up, down)
}

fn not_null_check(x: &Extract, column: &str) -> String {
    object_name(&["zmig", &x.name, column, "nn"])
}

/// The foreign key write_new adds from the new table to its owner.
fn foreign_key_name(x: &Extract) -> String {
    object_name(&[&x.new_table.name, &x.key, "fkey"])
}

fn write_new(x: &Extract, n: &Names) -> PhaseSql {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let required: Vec<&str> = x
        .columns
        .iter()
        .filter(|c| !c.nullable)
        .map(|c| c.source.as_str())
        .collect();

    let mut up = Script::new();
    up.comment(&format!(
        "{}\n\
         (This migration runs outside Diesel's transaction: it commits once, before validating the\n\
         foreign key, so that the scan holds no lock that blocks writes. Every step is safe to run\n\
         again.)",
        lock_timeout_comment(&owner)
    ));
    up.statement(LOCK_TIMEOUT);
    up.take_locks(
        &x.name,
        &[
            (owner.clone(), Lock::AccessExclusive),
            (new.clone(), Lock::AccessExclusive),
        ],
    );
    check_owner_columns(x, Stage::WriteNew, &mut up);
    up.comment(&format!(
        "Moving past the backfill is safe only once it is complete: stop here unless `zmig verify {}` \
         recorded no differing row (or, on a small table, none is found now).",
        x.name
    ));
    up.statement(&verified_gate(x, n, Stage::WriteNew));
    if !required.is_empty() {
        let drops: Vec<String> = required
            .iter()
            .map(|c| format!("ALTER COLUMN {} DROP NOT NULL", q(c)))
            .collect();
        up.comment(
            "The new release stops writing the old columns, so they must accept NULL. Dropping NOT NULL\n\
             changes the catalog only: no scan, no rewrite. The reverse sync below keeps them filled for\n\
             instances still on the previous release."
        );
        up.safety_assured(
            "Deliberate: the old columns' NOT NULL moves to the new table, where the new release writes.",
            &drops.iter().map(|d| format!("ALTER TABLE {owner} {d};")).collect::<Vec<_>>(),
        );
    }
    reverse_sync(x, n, &mut up);
    enable_always(&new, &reverse_triggers(n), &mut up);
    let fkey = q(&foreign_key_name(x));
    up.comment(&format!(
        "The foreign key from {new} to {owner}, which expand left out so that the backfill would not\n\
         check it row by row. Added NOT VALID, it checks new writes from now on and changes the catalog\n\
         only (a SHARE ROW EXCLUSIVE lock on both tables: reads go on, writes wait for the commit). One\n\
         left by an interrupted run of this file is replaced."
    ));
    up.drop_own_constraint(&format!(
        "ALTER TABLE {new} DROP CONSTRAINT IF EXISTS {fkey};"
    ));
    up.statement(&format!(
        "ALTER TABLE {new} ADD CONSTRAINT {fkey} FOREIGN KEY ({}) REFERENCES {owner} ({}) ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;",
        q(&x.key),
        q(&x.owner_pk)
    ));
    up.commit();
    up.comment(&format!(
        "Validation checks the rows already there in one scan under SHARE UPDATE EXCLUSIVE on {new}\n\
         and ROW SHARE on {owner}: reads and writes of both go on, so it may take as long as it\n\
         needs. The verified backfill found no row without its owner, so it finds none either."
    ));
    up.statement(SCAN_TIMEOUTS);
    up.take_locks(&x.name, &[(new.clone(), Lock::ShareUpdateExclusive)]);
    up.statement(&format!("ALTER TABLE {new} VALIDATE CONSTRAINT {fkey};"));

    let mut down = Script::new();
    down.comment(&format!(
        "{}\n\
         The foreign key added by up.sql stays: it is valid, and the dual_write triggers agree with it.\n\
         This file commits between steps (it runs outside Diesel's transaction), so that validating\n\
         NOT NULL scans the table without blocking it. Every step is safe to run again.",
        lock_timeout_comment(&owner)
    ));
    down.statement(LOCK_TIMEOUT);
    let mut first = vec![(new.clone(), Lock::AccessExclusive)];
    if !required.is_empty() {
        first.insert(0, (owner.clone(), Lock::AccessExclusive));
    }
    down.take_locks(&x.name, &first);
    down.comment("Stops the reverse sync.");
    for statement in drop_reverse_sync(x, n) {
        down.statement(&statement);
    }
    if !required.is_empty() {
        down.comment(
            "NOT NULL comes back in three steps, none of which holds an exclusive lock for a scan:\n\
             a NOT VALID check (catalog only), its validation (reads and writes go on), then SET NOT NULL,\n\
             which PostgreSQL proves from the validated check without scanning again. A check left\n\
             over from an interrupted run is replaced.",
        );
        for c in &required {
            let name = q(&not_null_check(x, c));
            down.drop_own_constraint(&format!(
                "ALTER TABLE {owner} DROP CONSTRAINT IF EXISTS {name};"
            ));
            down.statement(&format!(
                "ALTER TABLE {owner} ADD CONSTRAINT {name} CHECK ({} IS NOT NULL) NOT VALID;",
                q(c)
            ));
        }
        down.commit();
        down.comment(
            "Validation reads the whole table under SHARE UPDATE EXCLUSIVE: reads and writes go on,\n\
             so it may take as long as it needs.",
        );
        down.statement(SCAN_TIMEOUTS);
        down.take_locks(&x.name, &[(owner.clone(), Lock::ShareUpdateExclusive)]);
        for c in &required {
            down.statement(&format!(
                "ALTER TABLE {owner} VALIDATE CONSTRAINT {};",
                q(&not_null_check(x, c))
            ));
        }
        down.commit();
        down.statement(LOCK_TIMEOUT);
        down.take_locks(&x.name, &[(owner.clone(), Lock::AccessExclusive)]);
        down.safety_assured(
            "Linters cannot see the validated checks above; with them PostgreSQL sets NOT NULL without a scan.",
            &required.iter().map(|c| format!("ALTER TABLE {owner} ALTER COLUMN {} SET NOT NULL;", q(c))).collect::<Vec<_>>(),
        );
        for c in &required {
            down.drop_own_constraint(&format!(
                "ALTER TABLE {owner} DROP CONSTRAINT IF EXISTS {};",
                q(&not_null_check(x, c))
            ));
        }
    }
    PhaseSql::outside_transaction(Stage::WriteNew, up, down)
}

fn contract(x: &Extract, n: &Names) -> PhaseSql {
    let owner = x.owner.sql();
    let new = x.new_table.sql();
    let mut up = Script::new();
    up.comment(&format!(
        "{}\n\
         (Outside Diesel's transaction only because down.sql must commit between steps; this file\n\
         still runs as one implicit transaction.)",
        lock_timeout_comment(&owner)
    ));
    up.statement(LOCK_TIMEOUT);
    up.take_locks(
        &x.name,
        &[
            (owner.clone(), Lock::AccessExclusive),
            (new.clone(), Lock::AccessExclusive),
        ],
    );
    check_owner_columns(x, Stage::Contract, &mut up);
    up.comment(&format!(
        "Moving past the backfill is safe only once it is complete: stop here unless `zmig verify {}` \
         recorded no differing row (or, on a small table, none is found now).",
        x.name
    ));
    up.statement(&verified_gate(x, n, Stage::Contract));
    up.comment("The sync ends: every instance reads and writes the new table since write_new.");
    for statement in drop_reverse_sync(x, n)
        .into_iter()
        .chain(drop_owner_sync(x, n))
        .chain(drop_backfill_functions(n))
    {
        up.statement(&statement);
    }
    let drops: Vec<String> = x
        .columns
        .iter()
        .map(|c| {
            format!(
                "ALTER TABLE {owner} DROP COLUMN IF EXISTS {};",
                q(&c.source)
            )
        })
        .collect();
    up.safety_assured(
        &format!(
            "Destructive by design. Safe because `zmig verify {}` reported no row differing between\n\
             {owner} and {new}, and since write_new no code reads or writes these columns. Dropping a\n\
             column changes the catalog only; the space is reclaimed as rows are rewritten.",
            x.name
        ),
        &drops,
    );

    let mut down = Script::new();
    down.comment(&format!(
        "{}\n\
         This file commits between steps so that refilling the old columns holds row locks only.\n\
         Every step is safe to run again.",
        lock_timeout_comment(&owner)
    ));
    down.statement(LOCK_TIMEOUT);
    down.take_locks(
        &x.name,
        &[
            (owner.clone(), Lock::AccessExclusive),
            (new.clone(), Lock::AccessExclusive),
        ],
    );
    let adds: Vec<String> = x
        .columns
        .iter()
        .map(|c| {
            format!(
                "ADD COLUMN IF NOT EXISTS {} {}",
                q(&c.source),
                typed(c, &c.source_type)
            )
        })
        .collect();
    down.comment(
        "The old columns come back nullable, as write_new left them; adding them rewrites nothing.",
    );
    down.statement(&format!(
        "ALTER TABLE {owner}\n    {};",
        adds.join(",\n    ")
    ));
    let defaults: Vec<String> = x
        .columns
        .iter()
        .filter_map(|c| {
            let default = c.default.as_ref()?;
            Some(format!(
                "ALTER COLUMN {} SET DEFAULT {default}",
                q(&c.source)
            ))
        })
        .collect();
    if !defaults.is_empty() {
        down.comment(
            "Their defaults, set apart from ADD COLUMN so that no existing row is rewritten to get one \
             (the refill below gives them their values).",
        );
        down.statement(&format!(
            "ALTER TABLE {owner}\n    {};",
            defaults.join(",\n    ")
        ));
    }
    owner_sync(x, n, true, &mut down);
    if x.sync == SyncMode::Trigger {
        enable_always(&owner, &forward_triggers(x, n), &mut down);
    }
    backfill_functions(x, n, true, &mut down);
    reverse_sync(x, n, &mut down);
    enable_always(&new, &reverse_triggers(n), &mut down);
    down.commit();
    let (rows, own_note) = match x.own_row_column() {
        None => (format!("{new} AS n"), String::new()),
        Some(own) => (
            format!(
                "(SELECT DISTINCT ON ({key}) * FROM {new} ORDER BY {key}, {pk}) AS n",
                key = q(&x.key),
                pk = q(&own.target)
            ),
            format!(
                "\nAn owner may have several rows, and since up.sql dropped {} nothing says which was its\n\
                 own: the old columns take the one with the lowest {}, the same one on every run, and\n\
                 the sync above then keeps that row as the owner's own.",
                q(&own.source),
                q(&own.target)
            ),
        ),
    };
    down.comment(&format!(
        "Refills the old columns from {new}. This rewrites every owner that has a row there: a way\n\
         back for emergencies, not a routine step. `zmig.syncing` keeps the sync from echoing it.{own_note}"
    ));
    let sets: Vec<String> = x
        .columns
        .iter()
        .map(|c| format!("{} = n.{}", q(&c.source), q(&c.target)))
        .collect();
    down.statement(SCAN_TIMEOUTS);
    down.statement(&format!(
        "SELECT set_config('zmig.syncing', {}, true);",
        quote_literal(&x.name)
    ));
    down.statement(&format!(
        "UPDATE {owner} AS o\nSET {}\nFROM {rows}\nWHERE n.{} = o.{};",
        sets.join(",\n    "),
        q(&x.key),
        q(&x.owner_pk)
    ));
    PhaseSql::outside_transaction(Stage::Contract, up, down)
}
