//! Every generated phase applied with `diesel_migrations` on a real PostgreSQL: each one reverts
//! and re-runs (`diesel migration redo`), the sync triggers keep both shapes in step, and
//! reverting everything gives back the original table with its data.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel_migrations::MigrationHarness;
use zmig_tests::{apply_first, count, exec, fixtures, run_each_with_redo, FixtureCrate, TestDb};

fn generated(fixture: &FixtureCrate) {
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
}

/// Rows where the owner's address and its new row disagree, or an owner that should have a row
/// has none, or a new row has no owner.
fn caterer_mismatches(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM caterers c FULL JOIN addresses a ON a.caterer_id = c.id
         WHERE c.id IS NULL OR (a.caterer_id IS NULL AND c.street1 IS NOT NULL)
            OR (a.caterer_id IS NOT NULL AND (c.street1, c.street2, c.city, c.state, c.zip)
                IS DISTINCT FROM (a.street1, a.street2, a.city, a.state, a.zip))",
    )
}

fn column_is_nullable(conn: &mut PgConnection, table: &str, column: &str) -> bool {
    #[derive(QueryableByName)]
    struct Nullability {
        #[diesel(sql_type = Bool)]
        nullable: bool,
    }
    diesel::sql_query("SELECT is_nullable = 'YES' AS nullable FROM information_schema.columns WHERE table_name = $1 AND column_name = $2")
        .bind::<Text, _>(table)
        .bind::<Text, _>(column)
        .get_result::<Nullability>(conn)
        .unwrap()
        .nullable
}

#[test]
fn every_variant_applies_reverts_and_reapplies_phase_by_phase() {
    for (label, fixture) in [
        ("redo_caterers", fixtures::caterers("redo_caterers")),
        (
            "redo_filtered",
            fixtures::caterers_filtered("redo_filtered"),
        ),
        ("redo_users", fixtures::users_github("redo_users")),
        ("redo_weird", fixtures::weird("redo_weird")),
        ("redo_app", fixtures::caterers_app("redo_app")),
        ("redo_accounts", fixtures::users_accounts("redo_accounts")),
    ] {
        generated(&fixture);
        let db = TestDb::new(label);
        let mut conn = db.conn();
        let applied = run_each_with_redo(&mut conn, &fixture);
        assert_eq!(applied.len(), 5, "{label}: create + 4 phases: {applied:?}");
        // And all the way back down, newest first.
        for _ in 0..applied.len() {
            conn.revert_last_migration(fixture.migrations())
                .unwrap_or_else(|e| panic!("{label}: revert: {e}"));
        }
    }
}

#[test]
fn caterers_sync_both_ways_and_reverts_keep_the_data() {
    let fixture = fixtures::caterers("sync_caterers");
    generated(&fixture);
    let db = TestDb::new("sync_caterers");
    let mut conn = db.conn();
    let mut pending = conn
        .pending_migrations(fixture.migrations())
        .unwrap()
        .into_iter();
    let mut step = |conn: &mut PgConnection| {
        let migration = pending.next().expect("another phase");
        conn.run_migration(&*migration)
            .unwrap_or_else(|e| panic!("{}: {e}", migration.name()));
    };
    step(&mut conn); // create caterers
    exec(&mut conn, "INSERT INTO caterers (name, email, phone, street1, city, zip, state) VALUES ('before', 'b@x', '1', 'Old St', 'Boston', '02110', 'MA')");
    step(&mut conn); // expand
    step(&mut conn); // dual_write

    // dual_write: inserts, updates and deletes of owners reach the new table.
    exec(&mut conn, "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state) VALUES ('a', 'a@x', '1', '1 Main St', 'Suite 2', 'Boston', '02110', 'MA')");
    exec(
        &mut conn,
        "UPDATE caterers SET city = 'Cambridge', street2 = NULL WHERE name = 'a'",
    );
    let before = count(
        &mut conn,
        "SELECT count(*) AS n FROM addresses WHERE city = 'Cambridge' AND street2 IS NULL",
    );
    assert_eq!(before, 1);
    exec(
        &mut conn,
        "UPDATE caterers SET phone = '2' WHERE name = 'a'",
    );
    exec(&mut conn, "INSERT INTO caterers (name, email, phone, street1, city, zip, state) VALUES ('gone', 'g@x', '1', 'X', 'Y', 'Z', 'ZZ')");
    exec(&mut conn, "DELETE FROM caterers WHERE name = 'gone'");
    // The row from before dual_write is the backfill's job; copy it as the backfill would.
    exec(&mut conn, "INSERT INTO addresses (caterer_id, street1, street2, city, state, zip, created_at) SELECT id, street1, street2, city, state, zip, created_at FROM caterers WHERE name = 'before'");
    assert_eq!(caterer_mismatches(&mut conn), 0);

    step(&mut conn); // write_new
    assert!(column_is_nullable(&mut conn, "caterers", "street1"));
    // The new release inserts an owner without the old columns, then its address.
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone) VALUES ('new', 'n@x', '3')",
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses a JOIN caterers c ON c.id = a.caterer_id WHERE c.name = 'new'"), 0);
    exec(&mut conn, "INSERT INTO addresses (caterer_id, street1, city, state, zip) SELECT id, '9 New Rd', 'Austin', 'TX', '73301' FROM caterers WHERE name = 'new'");
    exec(&mut conn, "UPDATE addresses SET city = 'Dallas' FROM caterers c WHERE c.id = addresses.caterer_id AND c.name = 'new'");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM caterers WHERE name = 'new' AND city = 'Dallas' AND street1 = '9 New Rd'"), 1);
    // The previous release still writes the old columns; the new table follows, with no echo.
    exec(
        &mut conn,
        "UPDATE caterers SET zip = '02139' WHERE name = 'a'",
    );
    assert_eq!(caterer_mismatches(&mut conn), 0);
    // Deleting the new row empties the owner's old columns.
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone) VALUES ('moving', 'm@x', '4')",
    );
    exec(&mut conn, "INSERT INTO addresses (caterer_id, street1, city, state, zip) SELECT id, 'x', 'y', 'z', 'w' FROM caterers WHERE name = 'moving'");
    exec(
        &mut conn,
        "DELETE FROM addresses WHERE caterer_id = (SELECT id FROM caterers WHERE name = 'moving')",
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM caterers WHERE name = 'moving' AND street1 IS NULL AND city IS NULL"), 1);
    assert_eq!(caterer_mismatches(&mut conn), 0);
    exec(&mut conn, "DELETE FROM caterers WHERE name = 'moving'");

    step(&mut conn); // contract
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'caterers' AND column_name IN ('street1', 'street2', 'city', 'state', 'zip')"), 0);
    exec(&mut conn, "UPDATE addresses SET street2 = 'Floor 3' WHERE caterer_id = (SELECT id FROM caterers WHERE name = 'a')");

    // Back down: contract's down refills the old columns, including what changed after contract.
    conn.revert_last_migration(fixture.migrations()).unwrap();
    assert_eq!(caterer_mismatches(&mut conn), 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM caterers WHERE name = 'a' AND street2 = 'Floor 3'"
        ),
        1
    );
    // write_new's down restores NOT NULL, scanning without an exclusive lock.
    conn.revert_last_migration(fixture.migrations()).unwrap();
    assert!(!column_is_nullable(&mut conn, "caterers", "street1"));
    assert_eq!(caterer_mismatches(&mut conn), 0);
    conn.revert_last_migration(fixture.migrations()).unwrap(); // dual_write
    conn.revert_last_migration(fixture.migrations()).unwrap(); // expand
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM caterers"), 3);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_proc WHERE proname LIKE 'zmig%'"
        ),
        0
    );
}

#[test]
fn write_new_down_refuses_cleanly_when_an_owner_lacks_its_old_columns() {
    let fixture = fixtures::caterers("nn_caterers");
    generated(&fixture);
    let db = TestDb::new("nn_caterers");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 4);
    // An owner the new release created with no address: NOT NULL cannot come back.
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone) VALUES ('bare', 'b@x', '1')",
    );
    assert!(conn.revert_last_migration(fixture.migrations()).is_err());
    // Still at write_new, still usable, and the revert succeeds once the data allows it.
    assert!(column_is_nullable(&mut conn, "caterers", "street1"));
    exec(&mut conn, "DELETE FROM caterers WHERE name = 'bare'");
    conn.revert_last_migration(fixture.migrations()).unwrap();
    assert!(!column_is_nullable(&mut conn, "caterers", "street1"));
}

#[test]
fn identifiers_that_need_quoting_round_trip_through_the_triggers() {
    let fixture = fixtures::weird("rt_weird");
    generated(&fixture);
    let db = TestDb::new("rt_weird");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 3);
    exec(
        &mut conn,
        r#"INSERT INTO "Order Items" ("SKU ""Code""", type, "select", "Qty") VALUES ('A-1', 'box', 'yes', 7), ('', 'bag', NULL, 1)"#,
    );
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Detail {
        #[diesel(sql_type = Text)]
        sku: String,
        #[diesel(sql_type = Nullable<Text>)]
        whr: Option<String>,
        #[diesel(sql_type = BigInt)]
        quantity: i64,
    }
    let rows: Vec<Detail> = diesel::sql_query(r#"SELECT "SKU" AS sku, "where" AS whr, "Quantity" AS quantity FROM "Item ""Details""" ORDER BY "Order""#)
        .load(&mut conn)
        .unwrap();
    // The empty SKU fails the filter: no row for it.
    assert_eq!(
        rows,
        vec![Detail {
            sku: "A-1".into(),
            whr: Some("yes".into()),
            quantity: 7
        }]
    );
    exec(
        &mut conn,
        r#"UPDATE "Order Items" SET "SKU ""Code""" = 'B-2' WHERE type = 'bag'"#,
    );
    assert_eq!(
        count(&mut conn, r#"SELECT count(*) AS n FROM "Item ""Details""""#),
        2
    );
    exec(
        &mut conn,
        r#"UPDATE "Order Items" SET "SKU ""Code""" = '' WHERE type = 'box'"#,
    );
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT count(*) AS n FROM "Item ""Details""" WHERE "SKU" = 'B-2'"#
        ),
        1
    );
    assert_eq!(
        count(&mut conn, r#"SELECT count(*) AS n FROM "Item ""Details""""#),
        1
    );
}

#[test]
fn at_write_new_a_row_for_an_owner_outside_the_filter_is_refused_not_lost_later() {
    let fixture = fixtures::caterers_filtered("filter_guard");
    generated(&fixture);
    let db = TestDb::new("filter_guard");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 4);
    // The new release creates an owner, then writes its address.
    exec(
        &mut conn,
        "INSERT INTO caterers (name, email, phone) VALUES ('n', 'n@x', '1')",
    );
    // street2 NULL is outside `street2 IS NOT NULL AND state <> 'XX'`: the next old-release edit
    // of this owner would delete the row, so the write itself fails.
    let outside = diesel::sql_query(
        "INSERT INTO addresses (owner_id, street1, city, state, zip) SELECT id, 'a', 'b', 'CA', 'z' FROM caterers WHERE name = 'n'",
    )
    .execute(&mut conn)
    .unwrap_err()
    .to_string();
    assert!(
        outside.contains("outside the migration's filter"),
        "{outside}"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses"), 0);
    // Inside the filter it is accepted and flows back into the old columns.
    exec(&mut conn, "INSERT INTO addresses (owner_id, street1, street2, city, state, zip) SELECT id, 'a', 'Apt 1', 'b', 'CA', 'z' FROM caterers WHERE name = 'n'");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM caterers WHERE name = 'n' AND street2 = 'Apt 1'"
        ),
        1
    );
    // Moving it out of the filter through the new table is refused too.
    let moved_out = diesel::sql_query("UPDATE addresses SET state = 'XX'")
        .execute(&mut conn)
        .unwrap_err()
        .to_string();
    assert!(
        moved_out.contains("outside the migration's filter"),
        "{moved_out}"
    );
}
