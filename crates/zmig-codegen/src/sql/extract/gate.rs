//! The gate of write_new and contract: they move past the backfill only on a verification that
//! proves the state now. A `zmig verify` result proves it only while nothing could have skipped
//! the sync since it ran, so the verification records who the sync triggers were, and the gate
//! accepts it only while they are all still there, firing, and the very same: a trigger (or its
//! function) created, re-created, replaced, disabled or enabled since gets a new `oid` or a new
//! `xmin` in the catalog. The triggers fire `ALWAYS`, so `session_replication_role = replica`
//! cannot skip them either (see [`enable_always`]).

use super::Names;
use crate::plan::Extract;
use crate::spec::{Stage, SyncMode};
use crate::sql::{quote_ident as q, quote_literal, Script};

/// Bigger than this, an owner table must have a recorded `verify` before write_new or contract;
/// smaller (a fresh or development database), the gate checks it inline, in a moment.
const INLINE_VERIFY_MAX_ROWS: u32 = 10_000;

/// The query that identifies the sync triggers calling the function named by the SQL text
/// `function` (a literal, or `$1` for the runtime): how many fire always (`tgenabled = 'A'`)
/// and, as one text, who they are (each one's name, the `oid` and `xmin` of its catalog row,
/// and those of its function). `zmig verify` records the text; the gate compares it. Both run
/// this very query, so they cannot disagree about what "the same triggers" means.
pub fn sync_identity_sql(function: &str) -> String {
    format!(
        "SELECT count(*)::integer AS triggers,\n       \
         coalesce(string_agg(format('%s %s/%s %s/%s', t.tgname, t.oid, t.xmin, p.oid, p.xmin), ', '\n                           \
         ORDER BY t.tgname), '') AS identity\n\
         FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid\n\
         WHERE p.proname = {function} AND t.tgenabled = 'A'"
    )
}

/// Makes `triggers` of `table` fire in every session, also under `session_replication_role =
/// replica`, which silences ordinary (`ORIGIN`) triggers: otherwise a session could write the
/// moved columns without syncing them, and no catalog change would tell the gate.
pub(super) fn enable_always(table: &str, triggers: &[&str], out: &mut Script) {
    out.comment(
        "The sync fires in every session, also one with session_replication_role = replica (which\n\
         silences ordinary triggers): no write can skip it without changing the triggers in the\n\
         catalog, which the gates of write_new and contract see. On a logical-replication\n\
         subscriber that applies these migrations too, the sync then also fires for replicated\n\
         rows: replicate either the owner table or the new table there, not both, or their rows\n\
         clash. Same lock as CREATE TRIGGER above, in the same transaction.",
    );
    let actions: Vec<String> = triggers
        .iter()
        .map(|t| format!("ENABLE ALWAYS TRIGGER {}", q(t)))
        .collect();
    out.statement(&format!(
        "ALTER TABLE {table}\n    {};",
        actions.join(",\n    ")
    ));
}

/// The forward sync's triggers on the owner table (none with `sync = app`).
pub(super) fn forward_triggers<'a>(x: &Extract, n: &'a Names) -> Vec<&'a str> {
    match x.sync {
        SyncMode::Trigger => vec![&n.to_new_insert, &n.to_new_update, &n.to_new_delete],
        SyncMode::App => Vec::new(),
    }
}

/// The reverse sync's triggers on the new table.
pub(super) fn reverse_triggers(n: &Names) -> Vec<&str> {
    vec![&n.to_old_insert_delete, &n.to_old_update]
}

/// A `DO` block that stops the migration unless the backfill is verified now: every sync
/// trigger in place and firing always, and the latest verification `zmig verify` recorded found
/// no differing row with these very triggers in place (from write_new on, both directions'); or,
/// for a small owner table, no difference is found inline.
pub(super) fn verified_gate(x: &Extract, n: &Names, stage: Stage) -> String {
    let owner = x.owner.sql();
    let name = quote_literal(&x.name);
    let forward = forward_triggers(x, n).len();
    let reverse = if stage == Stage::Contract {
        reverse_triggers(n).len()
    } else {
        0
    };
    let identity = |function: &str, into: &str| {
        format!(
            "SELECT sync.triggers, sync.identity INTO {into}\n    FROM ({}) AS sync;",
            sync_identity_sql(&quote_literal(function)).replace('\n', "\n          ")
        )
    };
    let mut checks = vec![identity(&n.to_new, "owner_sync_triggers, owner_sync_now")];
    let mut in_place = Vec::new();
    let mut same = vec!["last.owner_sync = owner_sync_now".to_owned()];
    if forward > 0 {
        in_place.push(format!("owner_sync_triggers <> {forward}"));
    }
    if reverse > 0 {
        checks.push(identity(&n.to_old, "new_sync_triggers, new_sync_now"));
        in_place.push(format!("new_sync_triggers <> {reverse}"));
        same.push("last.new_sync = new_sync_now".to_owned());
    }
    let verify = format!("`cargo xtask zmig verify {}`", x.name);
    let (found, next) = if stage == Stage::Contract {
        (
            format!(
                "found %s of {forward} on {} and %s of {reverse} on {}",
                x.owner.name, x.new_table.name
            ),
            format!(
                "run {verify} (contract needs a verification made after write_new, both syncs in \
                 place); if it reports differences, correct those rows by hand (from write_new on \
                 `backfill` refuses: the new table is the truth) and verify again"
            ),
        )
    } else {
        (
            format!("found %s of {forward} on {}", x.owner.name),
            format!(
                "run {verify}, and if it reports differences `cargo xtask zmig backfill {} --again` \
                 and verify again",
                x.name
            ),
        )
    };
    let counts = if reverse > 0 {
        "owner_sync_triggers, new_sync_triggers"
    } else {
        "owner_sync_triggers"
    };
    let not_in_place = if in_place.is_empty() {
        String::new()
    } else {
        format!(
            "    IF {} THEN\n        \
                 RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',\n            \
                 MESSAGE = format({}, {counts});\n    \
             END IF;\n",
            in_place.join(" OR "),
            quote_literal(&format!(
                "zmig {}: the backfill is not verified: its sync triggers are not all in place and \
                 enabled ({found} firing always), so writes may skip the sync; enable them \
                 (ALTER TABLE … ENABLE ALWAYS TRIGGER …) or re-apply the migration that creates \
                 them, then {next}",
                x.name
            ))
        )
    };
    let declare_new = if reverse > 0 {
        "    new_sync_triggers integer;\n    new_sync_now text;\n"
    } else {
        ""
    };
    format!(
        "DO $zmig$\n\
         DECLARE\n    \
             owner_sync_triggers integer;\n    \
             owner_sync_now text;\n\
         {declare_new}    \
             last record;\n    \
             stale boolean := false;\n\
         BEGIN\n    \
             -- The sync triggers now: how many fire always, and who they are (each trigger's and\n    \
             -- its function's oid and xmin, new whenever one is created, replaced, disabled or\n    \
             -- enabled). `zmig verify` recorded the same text when it ran.\n    \
             {checks}\n\
         {not_in_place}    \
             -- Nested: PL/pgSQL plans an expression when it first runs it, so the table is only\n    \
             -- named once it is known to exist; its columns are read through to_jsonb, so a table\n    \
             -- from an older zmig (no sync columns) reads as a verification of unknown triggers.\n    \
             IF to_regclass('zmig_verifications') IS NOT NULL THEN\n        \
                 SELECT v.differing, to_jsonb(v) ->> 'owner_sync' AS owner_sync,\n               \
                        to_jsonb(v) ->> 'new_sync' AS new_sync\n        \
                 INTO last\n        \
                 FROM zmig_verifications AS v WHERE v.migration = {name}\n        \
                 ORDER BY v.finished_at DESC LIMIT 1;\n        \
                 IF FOUND AND last.differing = 0 THEN\n            \
                     IF {same} THEN\n                \
                         RETURN;\n            \
                     END IF;\n            \
                     stale := true;\n        \
                 END IF;\n    \
             END IF;\n    \
             IF (SELECT count(*) FROM (SELECT 1 FROM {owner} LIMIT {limit}) AS sample) < {limit}\n       \
                AND NOT EXISTS (SELECT 1 FROM {diff}(-9223372036854775808, 9223372036854775807)) THEN\n        \
                 RETURN;\n    \
             END IF;\n    \
             IF stale THEN\n        \
                 RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',\n            \
                     MESSAGE = {stale_message};\n    \
             END IF;\n    \
             RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',\n        \
                 MESSAGE = {message},\n        \
                 HINT = {hint};\n\
         END\n\
         $zmig$;",
        checks = checks.join("\n    "),
        same = same.join(" AND "),
        limit = INLINE_VERIFY_MAX_ROWS + 1,
        diff = q(&n.diff),
        stale_message = quote_literal(&format!(
            "zmig {}: the backfill is not verified: the sync triggers changed since `zmig verify {}` \
             last ran (created, re-created, replaced, disabled or enabled: dual_write reverted and \
             re-applied, ALTER TABLE … DISABLE TRIGGER), so writes may have skipped the sync; {next}",
            x.name, x.name
        )),
        message = quote_literal(&format!("zmig {}: the backfill is not verified", x.name)),
        hint = quote_literal(&format!(
            "run `cargo xtask zmig backfill {0}`, then `cargo xtask zmig verify {0}` until it reports 0 rows differing",
            x.name
        )),
    )
}
