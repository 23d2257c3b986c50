//! write_new's and contract's gates accept only a verification that proves the state now
//! (issue 11, items 1 and 2), on a table above the gate's inline limit (10,000 owners), where
//! the gate follows what `verify` recorded:
//!
//! - dual_write reverted and re-applied after the verification, with writes in between: the
//!   triggers are new, the verification is stale, write_new refuses (and after verify, `backfill
//!   --again` and verify, it passes and nothing is lost);
//! - a sync trigger disabled for a while after the verification (`ALTER TABLE … DISABLE
//!   TRIGGER`): write_new refuses, and from write_new on, contract refuses the same way, and also
//!   refuses a verification made before write_new (the reverse sync is younger than it);
//! - writes under `session_replication_role = replica` are synced both ways (the triggers are
//!   `ENABLE ALWAYS`), so the gates pass and nothing is lost;
//! - verify refuses to record a result when the triggers changed while it ran;
//! - the backfill run started before a trigger was re-created is stale: `backfill` walks every
//!   key again without `--again`;
//! - from write_new on `backfill` (with or without `--again`) refuses, changing nothing: the new
//!   table is the truth there.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::{apply_first, count, exec, fixtures, revert_last, FixtureCrate, TestDb};

const MIGRATION: &str = "caterers_addresses";
/// Above the gate's inline limit, so the gate trusts (or not) the recorded verification.
const SEEDED: i32 = 10_500;

fn options(again: bool) -> BackfillOptions {
    BackfillOptions {
        workers: 2,
        batch_size: 2_000,
        max_batch_size: 20_000,
        progress: ProgressMode::Silent,
        yield_to_traffic: false,
        again,
        ..BackfillOptions::default()
    }
}

/// The caterers fixture generated through contract, `SEEDED` caterers, expand and dual_write
/// applied, backfilled and verified clean.
fn backfilled_and_verified(label: &str) -> (FixtureCrate, TestDb, PgConnection) {
    let fixture = fixtures::caterers(label);
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    let inserted = exec(
        &mut conn,
        &format!(
            "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
             SELECT 'Caterer ' || i, 'c' || i || '@example.com', '555-0000', i || ' Main St',
                    CASE WHEN i % 3 = 0 THEN NULL ELSE 'Suite ' || i END,
                    'Boston', lpad(i::text, 5, '0'), 'MA'
             FROM generate_series(1, {SEEDED}) AS i"
        ),
    );
    assert_eq!(inserted, SEEDED as usize);
    apply_first(&mut conn, &fixture, 2);
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));
    let report = backfill(&db.url, MIGRATION, &options(false)).unwrap();
    assert!(
        report.finished && report.owners == i64::from(SEEDED),
        "{report:?}"
    );
    let verified = verify(&mut conn, MIGRATION).unwrap();
    assert!(verified.ok(), "{verified:?}");
    (fixture, db, conn)
}

fn next_pending(conn: &mut PgConnection, fixture: &FixtureCrate) -> String {
    conn.pending_migrations(fixture.migrations())
        .unwrap()
        .first()
        .map(|m| m.name().to_string())
        .unwrap_or_default()
}

/// Applies the next pending migration; its error as text.
fn apply_next(conn: &mut PgConnection, fixture: &FixtureCrate) -> Result<String, String> {
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    let next = pending.first().expect("a pending migration");
    let name = next.name().to_string();
    conn.run_migration(&**next)
        .map(|_| name)
        .map_err(|e| e.to_string())
}

fn text(conn: &mut PgConnection, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    diesel::sql_query(sql)
        .get_result::<Line>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .line
}

/// Moves caterers `first..first + 99` to another city in the old columns.
fn move_hundred(conn: &mut PgConnection, first: i32, city: &str) {
    let moved = exec(
        conn,
        &format!("UPDATE caterers SET city = '{city}' WHERE id BETWEEN {first} AND {first} + 99"),
    );
    assert_eq!(moved, 100);
}

/// How many of caterers `first..first + 99` have `city` in the new table.
fn new_rows_in(conn: &mut PgConnection, first: i32, city: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM addresses
             WHERE caterer_id BETWEEN {first} AND {first} + 99 AND city = '{city}'"
        ),
    )
}

fn old_columns_present(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM information_schema.columns
         WHERE table_name = 'caterers' AND column_name IN ('street1', 'street2', 'city', 'state', 'zip')",
    )
}

/// The gate's refusal of a verification older than the triggers: it says why and what to do.
fn assert_stale_refusal(refused: &str) {
    assert!(refused.contains("not verified"), "{refused}");
    assert!(
        refused.contains("sync triggers changed since"),
        "the refusal says why: {refused}"
    );
    assert!(
        refused.contains("cargo xtask zmig verify caterers_addresses"),
        "the refusal says what to do: {refused}"
    );
}

#[test]
fn write_new_refuses_a_verification_older_than_a_reapplied_dual_write() {
    let (fixture, db, mut conn) = backfilled_and_verified("stale_redo");

    // dual_write reverted (its down.sql), 100 owners move while nothing syncs, dual_write back.
    revert_last(&mut conn, &fixture);
    assert!(next_pending(&mut conn, &fixture).ends_with("_dual_write"));
    move_hundred(&mut conn, 1, "Springfield");
    apply_first(&mut conn, &fixture, 1);
    assert_eq!(new_rows_in(&mut conn, 1, "Springfield"), 0);

    let refused = apply_next(&mut conn, &fixture).expect_err("write_new must refuse");
    assert_stale_refusal(&refused);
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));

    // The backfill run predates the re-created triggers: a plain `backfill` walks every key
    // again (without `--again`), mending the 100.
    let found = verify(&mut conn, MIGRATION).unwrap();
    assert_eq!(found.differing, 100, "{found:?}");
    let rerun = backfill(&db.url, MIGRATION, &options(false)).unwrap();
    assert!(rerun.finished, "{rerun:?}");
    assert_eq!(
        (rerun.owners, rerun.written),
        (i64::from(SEEDED), 100),
        "{rerun:?}"
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    apply_next(&mut conn, &fixture).expect("write_new after a fresh verification");

    // contract needs a verification made with the reverse sync in place.
    let refused = apply_next(&mut conn, &fixture).expect_err("contract must refuse");
    assert_stale_refusal(&refused);
    assert!(refused.contains("after write_new"), "{refused}");
    assert_eq!(old_columns_present(&mut conn), 5);
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    apply_next(&mut conn, &fixture).expect("contract after a verification since write_new");
    assert_eq!(old_columns_present(&mut conn), 0);
    assert_eq!(new_rows_in(&mut conn, 1, "Springfield"), 100);
}

#[test]
fn a_trigger_disabled_after_the_verification_stops_write_new_and_contract() {
    let (fixture, db, mut conn) = backfilled_and_verified("stale_disable");

    exec(
        &mut conn,
        "ALTER TABLE caterers DISABLE TRIGGER zmig_caterers_addresses_to_new_upd",
    );
    move_hundred(&mut conn, 1, "Springfield");
    exec(
        &mut conn,
        "ALTER TABLE caterers ENABLE ALWAYS TRIGGER zmig_caterers_addresses_to_new_upd",
    );
    let refused = apply_next(&mut conn, &fixture).expect_err("write_new must refuse");
    assert_stale_refusal(&refused);

    // Found, mended with --again, verified: write_new goes through.
    assert_eq!(verify(&mut conn, MIGRATION).unwrap().differing, 100);
    let mended = backfill(&db.url, MIGRATION, &options(true)).unwrap();
    assert!(mended.finished && mended.written == 100, "{mended:?}");
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    apply_next(&mut conn, &fixture).expect("write_new after a fresh verification");
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());

    // The previous release still writes the old columns during write_new's deploy; the forward
    // trigger is disabled meanwhile, then enabled again.
    exec(
        &mut conn,
        "ALTER TABLE caterers DISABLE TRIGGER zmig_caterers_addresses_to_new_upd",
    );
    move_hundred(&mut conn, 201, "Shelbyville");
    exec(
        &mut conn,
        "ALTER TABLE caterers ENABLE ALWAYS TRIGGER zmig_caterers_addresses_to_new_upd",
    );
    let refused = apply_next(&mut conn, &fixture).expect_err("contract must refuse");
    assert_stale_refusal(&refused);
    assert_eq!(old_columns_present(&mut conn), 5);
    assert_eq!(verify(&mut conn, MIGRATION).unwrap().differing, 100);

    // A trigger left disabled: refused too, whatever verify recorded.
    exec(
        &mut conn,
        "UPDATE addresses a SET city = c.city FROM caterers c
         WHERE c.id = a.caterer_id AND a.caterer_id BETWEEN 201 AND 300",
    );
    exec(
        &mut conn,
        "ALTER TABLE addresses DISABLE TRIGGER zmig_caterers_addresses_to_old_upd",
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    let refused = apply_next(&mut conn, &fixture).expect_err("contract must refuse");
    assert!(refused.contains("not verified"), "{refused}");
    assert!(
        refused.contains("not all in place and enabled"),
        "{refused}"
    );
    exec(
        &mut conn,
        "ALTER TABLE addresses ENABLE ALWAYS TRIGGER zmig_caterers_addresses_to_old_upd",
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    apply_next(&mut conn, &fixture).expect("contract after a fresh verification");
    assert_eq!(new_rows_in(&mut conn, 201, "Shelbyville"), 100);
}

#[test]
fn writes_in_replica_mode_are_synced_both_ways() {
    let (fixture, _db, mut conn) = backfilled_and_verified("stale_replica");
    assert_eq!(
        text(
            &mut conn,
            "SELECT string_agg(tgname || '=' || tgenabled::text, ' ' ORDER BY tgname) AS line
             FROM pg_trigger WHERE tgname LIKE 'zmig_caterers_addresses_%'"
        ),
        "zmig_caterers_addresses_to_new_del=A zmig_caterers_addresses_to_new_ins=A \
         zmig_caterers_addresses_to_new_upd=A"
    );

    exec(&mut conn, "SET session_replication_role = replica");
    move_hundred(&mut conn, 1, "Springfield");
    exec(&mut conn, "RESET session_replication_role");
    assert_eq!(new_rows_in(&mut conn, 1, "Springfield"), 100);
    apply_next(&mut conn, &fixture).expect("write_new: nothing bypassed the sync");

    // The reverse sync fires in replica mode too.
    exec(&mut conn, "SET session_replication_role = replica");
    exec(
        &mut conn,
        "UPDATE addresses SET city = 'Ogdenville' WHERE caterer_id BETWEEN 301 AND 400",
    );
    exec(&mut conn, "RESET session_replication_role");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM caterers WHERE id BETWEEN 301 AND 400 AND city = 'Ogdenville'"
        ),
        100
    );
    assert!(verify(&mut conn, MIGRATION).unwrap().ok());
    apply_next(&mut conn, &fixture).expect("contract: nothing bypassed the sync");
    assert_eq!(new_rows_in(&mut conn, 1, "Springfield"), 100);
}

#[test]
fn verify_records_nothing_when_the_triggers_change_while_it_runs() {
    let (_fixture, _db, mut conn) = backfilled_and_verified("stale_during");
    let recorded = |conn: &mut PgConnection| {
        count(
            conn,
            "SELECT count(*) AS n FROM zmig_verifications WHERE migration = 'caterers_addresses'",
        )
    };
    assert_eq!(recorded(&mut conn), 1);
    // The diff function runs once per chunk of keys; the first call disables a trigger and
    // enables it again, as a session doing so while verify compares would.
    exec(
        &mut conn,
        "ALTER FUNCTION zmig_caterers_addresses_diff(bigint, bigint) RENAME TO zmig_caterers_addresses_diff_real",
    );
    exec(
        &mut conn,
        "CREATE FUNCTION zmig_caterers_addresses_diff(after bigint, upto bigint)
         RETURNS TABLE (owner_key bigint, problem text) LANGUAGE plpgsql AS $$
         BEGIN
             IF after = -9223372036854775808 THEN
                 ALTER TABLE caterers DISABLE TRIGGER zmig_caterers_addresses_to_new_upd;
                 ALTER TABLE caterers ENABLE ALWAYS TRIGGER zmig_caterers_addresses_to_new_upd;
             END IF;
             RETURN QUERY SELECT * FROM zmig_caterers_addresses_diff_real(after, upto);
         END $$",
    );
    let error = verify(&mut conn, MIGRATION).expect_err("verify must not record");
    assert!(
        error.to_string().contains("changed while verify ran"),
        "{error}"
    );
    assert_eq!(recorded(&mut conn), 1);
}

#[test]
fn backfill_refuses_from_write_new_on() {
    let (fixture, db, mut conn) = backfilled_and_verified("stale_backfill");
    apply_next(&mut conn, &fixture).expect("write_new");

    // The new release's value for caterer 7; the old columns lag behind (written as the reverse
    // sync would not have: marked as zmig's own sync, so the forward trigger leaves it alone).
    exec(
        &mut conn,
        "UPDATE addresses SET city = 'New Truth' WHERE caterer_id = 7",
    );
    conn.transaction(|conn| {
        exec(
            conn,
            "SELECT set_config('zmig.syncing', 'caterers_addresses', true)",
        );
        exec(conn, "UPDATE caterers SET city = 'Old Value' WHERE id = 7");
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();

    for again in [true, false] {
        let error = backfill(&db.url, MIGRATION, &options(again))
            .expect_err("backfill must refuse from write_new on");
        let message = error.to_string();
        assert!(
            message.contains("write_new") && message.contains("nothing was changed"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
    assert_eq!(
        text(
            &mut conn,
            "SELECT city AS line FROM addresses WHERE caterer_id = 7"
        ),
        "New Truth"
    );

    // Reverted write_new: the old columns are the truth again, and `--again` may run.
    revert_last(&mut conn, &fixture);
    assert!(next_pending(&mut conn, &fixture).ends_with("_write_new"));
    let mended = backfill(&db.url, MIGRATION, &options(true)).unwrap();
    assert!(mended.finished && mended.written == 1, "{mended:?}");
}
