//! A swap keeps the table's shape, or prepare refuses it: what the catalog knows of `cars` and of
//! the referencing `trips.car_id` besides the columns' types is the same after prepare, the move
//! and finalize as before (issue 11 item 3), on the cars example's generated migrations against
//! a real PostgreSQL:
//!
//! - the referencing foreign key's actions and match type (`ON UPDATE CASCADE ON DELETE
//!   RESTRICT`), also after reverting prepare;
//! - `REPLICA IDENTITY` (`FULL`, `NOTHING`, `USING INDEX`);
//! - storage options (`fillfactor`, autovacuum settings, the TOAST table's) and the columns'
//!   statistics targets and distinct-value estimates, the referencing column's too;
//! - table and column privileges, including those granted or revoked on the view during the
//!   swap, and while the swap runs a role with column privileges only reads through the view;
//! - comments on the table, its columns, indexes and constraints, and on the referencing column;
//! - the owner, where the migrations run as another role;
//! - membership of a publication (of the table or of a referencing table) is refused at prepare,
//!   naming the publication, with nothing changed: while the swap runs, the rows move between
//!   tables no subscriber has.
//!
//! The only differences allowed are the widened types and the referencing column's position
//! (`trips.car_id` comes last: README).

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{move_rows, MoveOptions};
use zmig_tests::{
    cars_seeded, count, exec, migrate_to, server_version_num, FixtureCrate, Roles, TestDb,
};

const CARS: i64 = 500;

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

/// A database with the cars example's tables, `CARS` cars with two trips each, and `setup`
/// applied; the fixture crate lives as long as the test.
fn seeded(label: &str, setup: &str) -> (TestDb, FixtureCrate) {
    let rows = format!(
        "INSERT INTO cars (make, model, year) SELECT 'make' || g, 'model', 2000 FROM generate_series(1, {CARS}) g;
         INSERT INTO trips (car_id, km) SELECT 1 + g % {CARS}, 10 FROM generate_series(1, {}) g;",
        CARS * 2
    );
    cars_seeded(label, CARS_SWAP, &[&rows, setup], None)
}

/// Everything the catalog says of `cars` and `trips` that a swap must keep, one line per fact,
/// sorted. Types and column positions are left out: the swap changes those on purpose.
fn shape(conn: &mut PgConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let sql = "
        WITH rel AS (SELECT oid, relname FROM pg_class WHERE oid IN ('cars'::regclass, 'trips'::regclass))
        SELECT format('foreign key %s on %s: %s, valid %s', conname, conrelid::regclass, pg_get_constraintdef(oid), convalidated) AS line
        FROM pg_constraint WHERE contype = 'f' AND (conrelid IN (SELECT oid FROM rel) OR confrelid IN (SELECT oid FROM rel))
        UNION ALL
        SELECT format('replica identity of %s: %s %s', c.relname, c.relreplident,
                      (SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indrelid = c.oid AND indisreplident))
        FROM pg_class c JOIN rel USING (oid)
        UNION ALL
        SELECT format('options of %s: %s', c.relname, (SELECT array_agg(o ORDER BY o) FROM unnest(c.reloptions) o))
        FROM pg_class c JOIN rel USING (oid)
        UNION ALL
        SELECT format('options of the toast table of %s: %s', c.relname, (SELECT array_agg(o ORDER BY o) FROM unnest(t.reloptions) o))
        FROM pg_class c JOIN rel USING (oid) JOIN pg_class t ON t.oid = c.reltoastrelid
        UNION ALL
        SELECT format('owner of %s: %s', c.relname, pg_get_userbyid(c.relowner))
        FROM pg_class c JOIN rel USING (oid)
        UNION ALL
        SELECT format('privileges on %s: %s', c.relname,
                      (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(coalesce(c.relacl, acldefault('r', c.relowner))) a))
        FROM pg_class c JOIN rel USING (oid)
        UNION ALL
        SELECT format('privileges on %s.%s: %s', rel.relname, attname, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(attacl) a))
        FROM pg_attribute JOIN rel ON rel.oid = attrelid WHERE attnum > 0 AND NOT attisdropped AND attacl IS NOT NULL
        UNION ALL
        SELECT format('nullable %s.%s: %s', rel.relname, attname, NOT attnotnull)
        FROM pg_attribute JOIN rel ON rel.oid = attrelid WHERE attnum > 0 AND NOT attisdropped
        UNION ALL
        SELECT format('statistics of %s.%s: %s %s', rel.relname, attname, attstattarget,
                      (SELECT array_agg(o ORDER BY o) FROM unnest(attoptions) o WHERE o LIKE 'n\\_distinct%'))
        FROM pg_attribute JOIN rel ON rel.oid = attrelid WHERE attnum > 0 AND NOT attisdropped
        UNION ALL
        SELECT format('comment on %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
        FROM pg_description d
        WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace))
           OR (d.classoid = 'pg_constraint'::regclass AND d.objoid IN (SELECT oid FROM pg_constraint WHERE connamespace = 'public'::regnamespace))
        ORDER BY 1";
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// Prepare, the move task, then finalize, as a deploy would.
fn swap_through(db: &TestDb, fixture: &FixtureCrate) {
    migrate_to(&db.url, fixture, "cars_bigint_prepare");
    let options = MoveOptions {
        workers: 1,
        batch_size: 200,
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    };
    move_rows(&db.url, "cars_bigint", &options).unwrap();
    migrate_to(&db.url, fixture, "cars_bigint_finalize");
}

fn assert_same_shape(before: &[String], after: &[String]) {
    let missing: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        missing.is_empty() && added.is_empty(),
        "the swap changed the table's shape\n  lost:\n    {}\n  gained:\n    {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n    "),
        added
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n    "),
    );
}

/// The error of applying the prepare migration, which must fail.
fn prepare_refused(db: &TestDb, fixture: &FixtureCrate) -> String {
    let mut conn = db.conn();
    diesel_migrations::MigrationHarness::run_pending_migrations(&mut conn, fixture.migrations())
        .expect_err("prepare refuses")
        .to_string()
}

#[test]
fn foreign_key_actions_are_kept_through_the_swap_and_its_revert() {
    let setup = "ALTER TABLE trips DROP CONSTRAINT trips_car_id_fkey;
                 ALTER TABLE trips ADD CONSTRAINT trips_car_id_fkey FOREIGN KEY (car_id) REFERENCES cars (id) MATCH FULL ON UPDATE CASCADE ON DELETE RESTRICT;
                 COMMENT ON CONSTRAINT trips_car_id_fkey ON trips IS 'a trip has its car';";

    // Reverting prepare puts the same foreign key back.
    let (db, fixture) = seeded("swap_shape_fk_revert", setup);
    let mut conn = db.conn();
    let before = shape(&mut conn);
    assert!(
        before
            .iter()
            .any(|l| l.contains("MATCH FULL ON UPDATE CASCADE ON DELETE RESTRICT")),
        "{before:#?}"
    );
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    let reverted = zmig_tests::revert_last(&mut conn, &fixture);
    assert!(reverted.ends_with("0001"), "reverted {reverted}");
    assert_same_shape(&before, &shape(&mut conn));

    let (db, fixture) = seeded("swap_shape_fk", setup);
    let mut conn = db.conn();
    let before = shape(&mut conn);
    swap_through(&db, &fixture);
    assert_same_shape(&before, &shape(&mut conn));
    // And the action acts: a changed key cascades to the trips.
    exec(&mut conn, "UPDATE cars SET id = 5000000000 WHERE id = 7");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id = 5000000000"
        ),
        2
    );
}

#[test]
fn replica_identity_storage_options_and_comments_are_kept() {
    let setup = "ALTER TABLE cars REPLICA IDENTITY FULL;
                 ALTER TABLE trips REPLICA IDENTITY FULL;
                 ALTER TABLE cars SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_threshold = 500, toast.autovacuum_enabled = false);
                 ALTER TABLE trips SET (autovacuum_vacuum_cost_delay = 5);
                 ALTER TABLE cars ALTER COLUMN make SET STATISTICS 500, ALTER COLUMN model SET (n_distinct = 100), ALTER COLUMN id SET (n_distinct = -1);
                 ALTER TABLE trips ALTER COLUMN car_id SET STATISTICS 1000, ALTER COLUMN car_id SET (n_distinct = -0.5, n_distinct_inherited = 40);
                 COMMENT ON TABLE cars IS 'every car we rent';
                 COMMENT ON COLUMN cars.id IS 'the car''s number';
                 COMMENT ON COLUMN cars.make IS 'who built it';
                 COMMENT ON COLUMN trips.car_id IS 'the car driven';
                 COMMENT ON INDEX cars_pkey IS 'by number';
                 COMMENT ON INDEX trips_car_id_idx IS 'trips of a car';
                 COMMENT ON CONSTRAINT cars_pkey ON cars IS 'one car per number';
                 COMMENT ON CONSTRAINT trips_car_id_fkey ON trips IS 'a trip has its car';
                 COMMENT ON SEQUENCE cars_id_seq IS 'numbers cars';";
    let (db, fixture) = seeded("swap_shape_storage", setup);
    let mut conn = db.conn();
    let before = shape(&mut conn);
    for fact in [
        "statistics of trips.car_id: 1000 {n_distinct=-0.5,n_distinct_inherited=40}",
        "options of cars: {autovacuum_analyze_threshold=500,autovacuum_vacuum_scale_factor=0.01,fillfactor=70}",
        "replica identity of cars: f ",
        "comment on column car_id of table trips: the car driven",
    ] {
        assert!(before.iter().any(|l| l == fact), "{fact} in {before:#?}");
    }
    swap_through(&db, &fixture);
    assert_same_shape(&before, &shape(&mut conn));
}

#[test]
fn replica_identity_nothing_and_using_the_primary_key_are_kept() {
    for (label, identity) in [
        ("swap_shape_ri_nothing", "NOTHING"),
        ("swap_shape_ri_index", "USING INDEX cars_pkey"),
    ] {
        let (db, fixture) = seeded(
            label,
            &format!("ALTER TABLE cars REPLICA IDENTITY {identity};"),
        );
        let mut conn = db.conn();
        let before = shape(&mut conn);
        swap_through(&db, &fixture);
        assert_same_shape(&before, &shape(&mut conn));
    }
}

#[test]
fn privileges_are_kept_with_those_changed_during_the_swap() {
    let roles = Roles::new("shape", &["app", "reporter", "auditor"]);
    let (app, reporter, auditor) = (roles.get(0), roles.get(1), roles.get(2));
    let setup = format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON cars TO \"{app}\";
         GRANT USAGE ON SEQUENCE cars_id_seq TO \"{app}\";
         GRANT SELECT, INSERT ON trips TO \"{app}\" WITH GRANT OPTION;
         GRANT SELECT (id, make), UPDATE (mileage) ON cars TO \"{reporter}\";
         GRANT SELECT (car_id, km), UPDATE (car_id) ON trips TO \"{reporter}\";
         GRANT REFERENCES (id) ON cars TO \"{auditor}\" WITH GRANT OPTION;
         GRANT TRIGGER ON cars TO \"{app}\" WITH GRANT OPTION;
         SET ROLE \"{app}\"; GRANT TRIGGER ON cars TO \"{reporter}\"; RESET ROLE;
         SET ROLE \"{auditor}\"; GRANT REFERENCES (id) ON cars TO \"{reporter}\"; RESET ROLE;
         REVOKE TRUNCATE ON cars FROM postgres;"
    );
    let (db, fixture) = seeded("swap_shape_grants", &setup);
    let mut conn = db.conn();
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    // While the swap runs, the roles work through the view as they did on the table.
    conn.batch_execute(&format!(
        "SET ROLE \"{reporter}\"; SELECT id, make FROM cars WHERE id = 3; SELECT car_id FROM trips LIMIT 1; RESET ROLE;
         SET ROLE \"{app}\"; INSERT INTO cars (make, model, year) VALUES ('role', 'app', 2001); UPDATE cars SET year = 2002 WHERE id = 4; RESET ROLE;"
    ))
    .unwrap();
    // Privileges changed on the view during the swap are the table's after it.
    conn.batch_execute(&format!(
        "GRANT SELECT ON cars TO \"{auditor}\";
         GRANT SELECT (model) ON cars TO \"{reporter}\";
         REVOKE DELETE ON cars FROM \"{app}\";"
    ))
    .unwrap();
    let before = {
        // What the table would show had those been granted on it: applied to a copy of the
        // original shape on a database without the swap.
        let (plain, _f) = seeded("swap_shape_grants_plain", &setup);
        let mut plain_conn = plain.conn();
        plain_conn
            .batch_execute(&format!(
                "GRANT SELECT ON cars TO \"{auditor}\";
                 GRANT SELECT (model) ON cars TO \"{reporter}\";
                 REVOKE DELETE ON cars FROM \"{app}\";"
            ))
            .unwrap();
        shape(&mut plain_conn)
    };
    let options = MoveOptions {
        workers: 1,
        batch_size: 200,
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    };
    move_rows(&db.url, "cars_bigint", &options).unwrap();
    migrate_to(&db.url, &fixture, "cars_bigint_finalize");
    assert_same_shape(&before, &shape(&mut conn));
    drop(roles);
}

#[test]
fn prepare_refuses_a_published_table_changing_nothing() {
    for (label, publication, named) in [
        (
            "swap_shape_pub_table",
            "CREATE PUBLICATION cars_feed FOR TABLE cars, trips",
            "cars_feed",
        ),
        (
            "swap_shape_pub_ref",
            "CREATE PUBLICATION trips_feed FOR TABLE trips",
            "trips_feed",
        ),
        (
            "swap_shape_pub_all",
            "CREATE PUBLICATION everything FOR ALL TABLES",
            "everything",
        ),
        (
            "swap_shape_pub_schema",
            "CREATE PUBLICATION public_feed FOR TABLES IN SCHEMA public",
            "public_feed",
        ),
    ] {
        // A schema's publication is PostgreSQL 15's; 14 has none to refuse.
        if label == "swap_shape_pub_schema" && server_version_num() < 150_000 {
            continue;
        }
        let (db, fixture) = seeded(label, &format!("{publication};"));
        let mut conn = db.conn();
        let before = shape(&mut conn);
        let message = prepare_refused(&db, &fixture);
        assert!(
            message.contains("replicated logically")
                && message.contains(&format!("publication {named} publishes")),
            "{label}: {message}"
        );
        println!("{label}: {message}");
        assert_same_shape(&before, &shape(&mut conn));
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_new', 'cars_temp') OR relname LIKE '%zmig%'"),
            0,
            "{label}: nothing created"
        );
        assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars"), CARS);
    }
}

#[test]
fn prepare_refuses_what_it_could_not_restore_changing_nothing() {
    for (label, setup, expected) in [
        (
            "swap_shape_fk_not_valid",
            "ALTER TABLE trips DROP CONSTRAINT trips_car_id_fkey;
             ALTER TABLE trips ADD CONSTRAINT trips_car_id_fkey FOREIGN KEY (car_id) REFERENCES cars NOT VALID;",
            "foreign key trips_car_id_fkey of trips is NOT VALID",
        ),
        (
            "swap_shape_ref_identity",
            "CREATE UNIQUE INDEX trips_car_trip ON trips (car_id, id);
             ALTER TABLE trips REPLICA IDENTITY USING INDEX trips_car_trip;",
            "index trips_car_trip on trips.car_id is the replica identity of trips",
        ),
    ] {
        let (db, fixture) = seeded(label, setup);
        let mut conn = db.conn();
        let before = shape(&mut conn);
        let message = prepare_refused(&db, &fixture);
        assert!(message.contains(expected), "{label}: {message}");
        assert_same_shape(&before, &shape(&mut conn));
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_new', 'cars_temp') OR relname LIKE '%zmig%'"),
            0,
            "{label}: nothing created"
        );
    }
}

/// The table belongs to a role of its own while the migrations run as another (a superuser):
/// the table after finalize, and the view during the swap, belong to the original's owner.
#[test]
fn the_owner_is_kept() {
    let roles = Roles::new("shape_owner", &["owner"]);
    let owner = roles.get(0);
    let (db, fixture) = seeded(
        "swap_shape_owner",
        &format!("ALTER TABLE cars OWNER TO \"{owner}\"; GRANT SELECT ON cars TO PUBLIC;"),
    );
    let mut conn = db.conn();
    let before = shape(&mut conn);
    assert!(
        before.contains(&format!("owner of cars: {owner}")),
        "{before:#?}"
    );
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    assert_eq!(
        count(&mut conn, &format!("SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars', 'cars_new', 'cars_temp') AND pg_get_userbyid(relowner) = '{owner}'")),
        3
    );
    let options = MoveOptions {
        workers: 1,
        batch_size: 200,
        progress: ProgressMode::Silent,
        ..MoveOptions::default()
    };
    move_rows(&db.url, "cars_bigint", &options).unwrap();
    migrate_to(&db.url, &fixture, "cars_bigint_finalize");
    assert_same_shape(&before, &shape(&mut conn));
    drop(db);
    drop(roles);
}
