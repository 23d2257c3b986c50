//! Every table the swap cannot carry across is refused by its prepare migration, with a message
//! naming what is in the way and why, and nothing changed (issue 12, "Also"; README "What
//! prepare refuses"). On the cars example's generated migrations against a real PostgreSQL,
//! one test per refusal: the tables are created, seeded, then given the shape the swap refuses
//! with plain SQL (`generate` reads `schema.rs` and the development database, which know
//! nothing of it, so every case reaches prepare). Applying the pending migrations must then
//! fail on prepare, with the expected message, and leave the catalog of `public` (relations,
//! columns with type, default and nullability, constraints, indexes, triggers, rules, policies,
//! inheritance, views, functions, sequences) and every table's rows exactly as they were, with
//! prepare not recorded in `__diesel_schema_migrations`.
//!
//! The refusals are raised by the guards at the top of prepare (and, for a constraint on a
//! referencing column, while prepare lists the indexes to rebuild). Prepare runs as one implicit
//! transaction (`run_in_transaction = false`, no `COMMIT` in the file), so a refusal anywhere
//! in it rolls back whatever ran before.

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use zmig_tests::{count, migrate_to, FixtureCrate, TestDb};

const CARS: i64 = 300;

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

/// The cars example with the swap generated (prepare and finalize).
fn generated(label: &str) -> FixtureCrate {
    let fixture = FixtureCrate::cars(label, CARS_SWAP);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    fixture
}

/// A database with the cars example's tables, `CARS` cars with two trips each, then `setup`.
fn seeded(label: &str, fixture: &FixtureCrate, setup: &str) -> TestDb {
    let db = TestDb::new(label);
    migrate_to(&db.url, fixture, "create_tables");
    db.conn()
        .batch_execute(&format!(
            "INSERT INTO cars (make, model, year) SELECT 'make' || g, 'model' || g % 7, 2000 + g % 20 FROM generate_series(1, {CARS}) g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % {CARS}, 10 + g % 13 FROM generate_series(1, {}) g;",
            CARS * 2
        ))
        .unwrap();
    if !setup.trim().is_empty() {
        db.conn()
            .batch_execute(setup)
            .unwrap_or_else(|e| panic!("{label}: {setup}: {e}"));
    }
    db
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
}

/// What the database holds in `public`, one line per fact, sorted: relations (kind, row
/// security, replica identity, options, privileges), columns (position, type, default,
/// nullability, identity, generation), constraints with their definition and whether
/// validated, indexes, triggers (internal ones too) with whether enabled, rules, policies,
/// inheritance, view definitions, functions with a digest of their body, sequences with their
/// last value, and each table's row count with a digest of its rows.
fn digest(conn: &mut PgConnection) -> Vec<String> {
    let mut lines: Vec<String> = diesel::sql_query(
        "SELECT format('relation %s kind %s rls %s forced %s replica identity %s options %s acl %s', relname, relkind,
                       relrowsecurity, relforcerowsecurity, relreplident, reloptions, relacl) AS line
         FROM pg_class WHERE relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('column %s.%s #%s %s default %s not null %s identity %s generated %s', c.relname, a.attname, a.attnum,
                       format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull,
                       a.attidentity, a.attgenerated)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
         UNION ALL
         SELECT format('constraint %s on %s: %s validated %s', conname, conrelid::regclass, pg_get_constraintdef(oid), convalidated)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('index %s valid %s', pg_get_indexdef(i.indexrelid), i.indisvalid)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('trigger %s on %s: %s enabled %s internal %s', t.tgname, t.tgrelid::regclass,
                       pg_get_triggerdef(t.oid), t.tgenabled, t.tgisinternal)
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('rule %s on %s: %s', rulename, tablename, definition) FROM pg_rules WHERE schemaname = 'public'
         UNION ALL
         SELECT format('policy %s on %s: %s %s %s %s', policyname, tablename, cmd, roles, qual, with_check)
         FROM pg_policies WHERE schemaname = 'public'
         UNION ALL
         SELECT format('%s inherits from %s', inhrelid::regclass, inhparent::regclass) FROM pg_inherits
         UNION ALL
         SELECT format('view %s: %s', c.relname, pg_get_viewdef(c.oid)) FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')
         UNION ALL
         SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc)) FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('sequence %s last value %s', sequencename, last_value) FROM pg_sequences WHERE schemaname = 'public'",
    )
    .load::<Line>(conn)
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect();
    #[derive(QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let tables = diesel::sql_query(
        "SELECT quote_ident(relname) AS name FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'm')",
    )
    .load::<Table>(conn)
    .unwrap();
    for Table { name } in tables {
        let rows = diesel::sql_query(format!(
            "SELECT format('rows of {name}: %s %s', count(*), md5(string_agg(t::text, '|' ORDER BY t::text))) AS line
             FROM ONLY public.{name} t"
        ))
        .get_result::<Line>(conn)
        .unwrap_or_else(|e| panic!("rows of {name}: {e}"))
        .line;
        lines.push(rows);
    }
    lines.sort();
    lines
}

fn assert_unchanged(label: &str, before: &[String], after: &[String]) {
    let lost: Vec<&str> = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|s| s.as_str())
        .collect();
    let gained: Vec<&str> = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|s| s.as_str())
        .collect();
    assert!(
        lost.is_empty() && gained.is_empty(),
        "{label}: the refused prepare changed the database\n  lost:\n    {}\n  gained:\n    {}",
        lost.join("\n    "),
        gained.join("\n    "),
    );
}

/// The version of the fixture's `*_cars_bigint_prepare` migration.
fn prepare_version(fixture: &FixtureCrate) -> String {
    let all = MigrationSource::<Pg>::migrations(&fixture.migrations()).unwrap();
    let prepare = all
        .iter()
        .find(|m| m.name().to_string().ends_with("_cars_bigint_prepare"))
        .expect("a prepare migration");
    prepare.name().version().to_string()
}

fn recorded(conn: &mut PgConnection) -> Vec<String> {
    let mut versions: Vec<String> = conn
        .applied_migrations()
        .unwrap()
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    versions.sort();
    versions
}

/// On a fresh database seeded and then given `setup`, applying the pending migrations fails on
/// prepare with a message holding every one of `expected`, and changes nothing. Returns the
/// message.
fn refused(label: &str, fixture: &FixtureCrate, setup: &str, expected: &[&str]) -> String {
    let db = seeded(label, fixture, setup);
    let mut conn = db.conn();
    let prepare = prepare_version(fixture);
    let next = conn
        .pending_migrations(fixture.migrations())
        .unwrap()
        .into_iter()
        .next()
        .expect("prepare is pending");
    assert_eq!(next.name().version().to_string(), prepare, "{label}");
    let versions_before = recorded(&mut conn);
    let before = digest(&mut conn);

    let message = conn
        .run_pending_migrations(fixture.migrations())
        .map(|applied| format!("{applied:?}"))
        .expect_err(&format!("{label}: prepare refuses"))
        .to_string();
    println!("{label}: {message}");
    for fragment in expected {
        assert!(
            message.contains(fragment),
            "{label}: expected {fragment:?} in the message\n  {message}"
        );
    }

    let mut conn = db.conn();
    assert_unchanged(label, &before, &digest(&mut conn));
    let versions_after = recorded(&mut conn);
    assert_eq!(
        versions_before, versions_after,
        "{label}: recorded migrations"
    );
    assert!(
        !versions_after.contains(&prepare),
        "{label}: prepare recorded as applied"
    );
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM __diesel_schema_migrations WHERE version = '{prepare}'"
            )
        ),
        0,
        "{label}: prepare recorded"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_new', 'cars_temp', 'zmig_swap_state') OR relname LIKE '%zmig%'"
        ),
        0,
        "{label}: nothing of the swap's created"
    );
    message
}

/// The refusals of the table's own shape: "cars cannot be swapped: <why>".
fn cannot_be_swapped(why: &str) -> [String; 2] {
    [
        "zmig swap cars_bigint: cars cannot be swapped: ".to_owned(),
        format!("cars cannot be swapped: {why}"),
    ]
}

fn refused_each(test: &str, cases: &[(&str, &str, Vec<String>)]) {
    let fixture = generated(test);
    for (label, setup, expected) in cases {
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        refused(label, &fixture, setup, &expected);
    }
}

/// The digest is not blind: on the same seeded database without any of the shapes below,
/// prepare applies, and the digest sees what it changed.
#[test]
fn without_a_refused_shape_prepare_applies_and_the_digest_sees_it() {
    let fixture = generated("swap_refusals_control");
    let db = seeded("swap_refusals_control", &fixture, "");
    let mut conn = db.conn();
    let before = digest(&mut conn);
    let prepare = prepare_version(&fixture);
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");
    let after = digest(&mut conn);
    assert!(recorded(&mut conn).contains(&prepare));
    for gained in [
        "relation cars kind v",
        "relation cars_old kind r",
        "relation zmig_swap_state kind r",
        "column trips.car_id_zmig",
        "function zmig_cars_bigint_move(integer)",
        "trigger zmig_cars_bigint_insert on cars",
    ] {
        assert!(
            after.iter().any(|l| l.starts_with(gained))
                && !before.iter().any(|l| l.starts_with(gained)),
            "{gained} in the digest after prepare only"
        );
    }
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("constraint trips_car_id_fkey"))
            && !after
                .iter()
                .any(|l| l.starts_with("constraint trips_car_id_fkey")),
        "the dropped foreign key"
    );
}

#[test]
fn a_generated_column_is_refused() {
    // An existing column cannot become generated (PostgreSQL 15): mileage is dropped and added
    // again as a stored generated column of the same name and type, as schema.rs has it.
    refused_each(
        "swap_refusals_generated",
        &[(
            "swap_refusals_generated",
            "ALTER TABLE cars DROP COLUMN mileage;
             ALTER TABLE cars ADD COLUMN mileage integer NOT NULL GENERATED ALWAYS AS ((2025 - year) * 10000) STORED;",
            cannot_be_swapped("it has a generated column").to_vec(),
        )],
    );
}

#[test]
fn a_unique_index_the_attribute_does_not_list_or_the_swap_cannot_carry_is_refused() {
    let unlisted = |index: &str, columns: &str| {
        vec![format!(
            "zmig swap cars_bigint: cars has the unique index {index} on ({columns}), which the swap attribute does not list"
        )]
    };
    let not_plain = |index: &str, definition: &str| {
        cannot_be_swapped(&format!("its unique index {index} is {definition}; zmig keeps unique across the swap's three tables only a B-tree over columns")).to_vec()
    };
    refused_each(
        "swap_refusals_unique",
        &[
            (
                "swap_refusals_unique_index",
                "CREATE UNIQUE INDEX cars_make_model_idx ON cars (make, model);",
                unlisted("cars_make_model_idx", "make, model"),
            ),
            (
                "swap_refusals_unique_constraint",
                "ALTER TABLE cars ADD CONSTRAINT cars_make_key UNIQUE (make);",
                unlisted("cars_make_key", "make"),
            ),
            (
                "swap_refusals_unique_partial",
                "CREATE UNIQUE INDEX cars_recent_make_idx ON cars (make) WHERE year > 2010;",
                not_plain("cars_recent_make_idx", "btree (make) WHERE (year > 2010)"),
            ),
            (
                "swap_refusals_unique_expression",
                "CREATE UNIQUE INDEX cars_lower_make_idx ON cars (lower(make));",
                not_plain("cars_lower_make_idx", "btree (lower(make))"),
            ),
            (
                "swap_refusals_unique_include",
                "CREATE UNIQUE INDEX cars_make_incl_idx ON cars (make) INCLUDE (model);",
                not_plain("cars_make_incl_idx", "btree (make) INCLUDE (model)"),
            ),
            (
                "swap_refusals_unique_deferrable",
                "ALTER TABLE cars ADD CONSTRAINT cars_make_key UNIQUE (make) DEFERRABLE;",
                cannot_be_swapped("the unique constraint of cars_make_key is deferrable").to_vec(),
            ),
        ],
    );
}

#[test]
fn a_listed_unique_index_the_table_lacks_is_refused() {
    // The development database has both indexes (generate asks it); production lacks one.
    let fixture = FixtureCrate::cars_with(
        "swap_refusals_unique_listed",
        "#[zmig(swap(columns(id: Int8), references(trips.car_id), unique(make, (make, model)), name = cars_bigint), stage = \"finalize\")]",
        "\nCREATE UNIQUE INDEX cars_make_idx ON cars (make);\nCREATE UNIQUE INDEX cars_make_model_idx ON cars (make, model);\n",
    );
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    refused(
        "swap_refusals_unique_listed",
        &fixture,
        "DROP INDEX cars_make_model_idx;",
        &["zmig swap cars_bigint: the swap attribute lists unique (make, model), but cars has no unique index on exactly those columns"],
    );
}

/// `trips_car_id_fkey` replaced by one with `clause`.
fn trips_fkey(clause: &str) -> String {
    format!(
        "ALTER TABLE trips DROP CONSTRAINT trips_car_id_fkey;
         ALTER TABLE trips ADD CONSTRAINT trips_car_id_fkey FOREIGN KEY (car_id) REFERENCES cars (id) {clause};"
    )
}

fn fk_action_refused() -> Vec<String> {
    vec![
        "zmig swap cars_bigint: foreign key trips_car_id_fkey of trips is ON DELETE CASCADE / SET NULL / SET DEFAULT or deferrable".to_owned(),
        "zmig enforces only NO ACTION and RESTRICT during a swap".to_owned(),
    ]
}

#[test]
fn a_foreign_key_on_delete_cascade_is_refused() {
    refused_each(
        "swap_refusals_cascade",
        &[(
            "swap_refusals_cascade",
            &trips_fkey("ON DELETE CASCADE"),
            fk_action_refused(),
        )],
    );
}

#[test]
fn a_foreign_key_on_delete_set_null_is_refused() {
    // trips.car_id is NOT NULL, which PostgreSQL only minds when a car is deleted.
    refused_each(
        "swap_refusals_set_null",
        &[(
            "swap_refusals_set_null",
            &trips_fkey("ON DELETE SET NULL"),
            fk_action_refused(),
        )],
    );
}

#[test]
fn a_foreign_key_on_delete_set_default_is_refused() {
    refused_each(
        "swap_refusals_set_default",
        &[(
            "swap_refusals_set_default",
            &trips_fkey("ON DELETE SET DEFAULT"),
            fk_action_refused(),
        )],
    );
}

#[test]
fn a_deferrable_foreign_key_is_refused() {
    refused_each(
        "swap_refusals_deferrable",
        &[
            (
                "swap_refusals_deferrable_immediate",
                &trips_fkey("DEFERRABLE INITIALLY IMMEDIATE"),
                fk_action_refused(),
            ),
            (
                "swap_refusals_deferrable_deferred",
                &trips_fkey("DEFERRABLE INITIALLY DEFERRED"),
                fk_action_refused(),
            ),
        ],
    );
}

#[test]
fn a_foreign_key_references_does_not_list_is_refused() {
    refused_each(
        "swap_refusals_unlisted",
        &[
            (
                "swap_refusals_unlisted_table",
                "CREATE TABLE rentals (id bigserial PRIMARY KEY, car_id integer NOT NULL REFERENCES cars, customer text NOT NULL);
                 INSERT INTO rentals (car_id, customer) SELECT g, 'customer' || g FROM generate_series(1, 50) g;",
                vec![
                    "zmig swap cars_bigint: foreign key rentals_car_id_fkey of rentals (car_id) points at cars but is not in references(...)".to_owned(),
                ],
            ),
            (
                // A listed table, through another column.
                "swap_refusals_unlisted_column",
                "ALTER TABLE trips ADD COLUMN spare_car_id integer REFERENCES cars;
                 UPDATE trips SET spare_car_id = car_id WHERE id % 3 = 0;",
                vec![
                    "zmig swap cars_bigint: foreign key trips_spare_car_id_fkey of trips (spare_car_id) points at cars but is not in references(...)".to_owned(),
                ],
            ),
        ],
    );
}

#[test]
fn a_view_reading_the_table_is_refused() {
    refused_each(
        "swap_refusals_view",
        &[
            (
                "swap_refusals_view",
                "CREATE VIEW car_makes AS SELECT id, make FROM cars;",
                cannot_be_swapped("views read it").to_vec(),
            ),
            (
                "swap_refusals_view_join",
                "CREATE VIEW trip_cars AS SELECT t.id, t.km, c.make FROM trips t JOIN cars c ON c.id = t.car_id;",
                cannot_be_swapped("views read it").to_vec(),
            ),
            (
                "swap_refusals_matview",
                "CREATE MATERIALIZED VIEW car_counts AS SELECT make, count(*) AS n FROM cars GROUP BY make;",
                cannot_be_swapped("views read it").to_vec(),
            ),
        ],
    );
}

#[test]
fn a_trigger_of_the_tables_own_is_refused() {
    let function = "CREATE FUNCTION cars_touch() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN NEW.mileage := NEW.mileage + 1; RETURN NEW; END $$;";
    refused_each(
        "swap_refusals_trigger",
        &[
            (
                "swap_refusals_trigger",
                &format!(
                    "{function}
                     CREATE TRIGGER cars_touch BEFORE UPDATE ON cars FOR EACH ROW EXECUTE FUNCTION cars_touch();"
                ),
                cannot_be_swapped("it has triggers of its own").to_vec(),
            ),
            (
                // Disabled, it would come back enabled on nothing: refused all the same.
                "swap_refusals_trigger_disabled",
                &format!(
                    "{function}
                     CREATE TRIGGER cars_touch BEFORE UPDATE ON cars FOR EACH ROW EXECUTE FUNCTION cars_touch();
                     ALTER TABLE cars DISABLE TRIGGER cars_touch;"
                ),
                cannot_be_swapped("it has triggers of its own").to_vec(),
            ),
        ],
    );
}

#[test]
fn a_rule_is_refused() {
    refused_each(
        "swap_refusals_rule",
        &[(
            "swap_refusals_rule",
            "CREATE RULE cars_keep AS ON DELETE TO cars DO INSTEAD NOTHING;",
            cannot_be_swapped("it has rules").to_vec(),
        )],
    );
}

#[test]
fn row_level_security_is_refused() {
    refused_each(
        "swap_refusals_rls",
        &[
            (
                "swap_refusals_rls",
                "ALTER TABLE cars ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY cars_recent ON cars USING (year > 2010);",
                cannot_be_swapped("it has row-level security").to_vec(),
            ),
            (
                "swap_refusals_rls_no_policy",
                "ALTER TABLE cars ENABLE ROW LEVEL SECURITY;",
                cannot_be_swapped("it has row-level security").to_vec(),
            ),
        ],
    );
}

#[test]
fn inheritance_is_refused() {
    refused_each(
        "swap_refusals_inherits",
        &[
            (
                "swap_refusals_inherits_child",
                "CREATE TABLE electric_cars (battery_kwh integer NOT NULL DEFAULT 60) INHERITS (cars);
                 INSERT INTO electric_cars (make, model, year) SELECT 'volt' || g, 'e', 2020 FROM generate_series(1, 20) g;",
                cannot_be_swapped("it takes part in inheritance").to_vec(),
            ),
            (
                "swap_refusals_inherits_parent",
                "CREATE TABLE vehicles (make text NOT NULL, model text NOT NULL);
                 ALTER TABLE cars INHERIT vehicles;",
                cannot_be_swapped("it takes part in inheritance").to_vec(),
            ),
        ],
    );
}

#[test]
fn columns_that_differ_from_schema_rs_are_refused() {
    let differ = |problem: &str| {
        vec![
            "zmig swap cars_bigint: the columns of cars differ from schema.rs: ".to_owned(),
            problem.to_owned(),
        ]
    };
    refused_each(
        "swap_refusals_columns",
        &[
            (
                "swap_refusals_columns_added",
                "ALTER TABLE cars ADD COLUMN color text;",
                differ("color text is not in schema.rs"),
            ),
            (
                "swap_refusals_columns_dropped",
                "ALTER TABLE cars DROP COLUMN mileage;",
                differ("mileage integer is not in the table"),
            ),
            (
                "swap_refusals_columns_retyped",
                "ALTER TABLE cars ALTER COLUMN year TYPE smallint;",
                differ("year smallint is not in schema.rs"),
            ),
            (
                "swap_refusals_columns_renamed",
                "ALTER TABLE cars RENAME COLUMN model TO model_name;",
                differ("model_name text is not in schema.rs"),
            ),
        ],
    );
}

/// An exclusion constraint on the table: during the swap each of old, temp and new would
/// enforce it only among its own rows.
#[test]
fn an_exclusion_constraint_is_refused() {
    refused_each(
        "swap_refusals_exclusion",
        &[(
            "swap_refusals_exclusion",
            "CREATE EXTENSION btree_gist;
             ALTER TABLE cars ADD CONSTRAINT cars_one_per_make EXCLUDE USING gist (make WITH =) WHERE (year > 3000);",
            vec!["zmig swap cars_bigint: cars cannot be swapped: it has an exclusion constraint, which each of the three tables would enforce only within itself".to_owned()],
        )],
    );
}

/// A constraint on a referencing column besides the foreign key the swap carries: a UNIQUE or
/// exclusion constraint (whose index depends on the constraint, not on the column, so the look
/// for indexes to rebuild never saw it), a CHECK, a foreign key to another table. Finalize's
/// `DROP COLUMN` of the original column would drop each with it; prepare refuses, naming it.
#[test]
fn a_constraint_on_a_referencing_column_is_refused() {
    let said = |name: &str, def: &str| {
        vec![format!(
            "zmig swap cars_bigint: constraint {name} on \"trips\".car_id ({def}) would be dropped with the original column at finalize"
        )]
    };
    refused_each(
        "swap_refusals_ref_constraint",
        &[
            (
                "swap_refusals_ref_unique",
                "ALTER TABLE trips ADD CONSTRAINT trips_car_id_id_key UNIQUE (car_id, id);",
                said("trips_car_id_id_key", "UNIQUE (car_id, id)"),
            ),
            (
                "swap_refusals_ref_exclusion",
                "CREATE EXTENSION btree_gist;
                 ALTER TABLE trips ADD CONSTRAINT trips_one_km_per_car EXCLUDE USING gist (car_id WITH =, km WITH <>) WHERE (km > 100);",
                said(
                    "trips_one_km_per_car",
                    "EXCLUDE USING gist (car_id WITH =, km WITH <>) WHERE ((km > 100))",
                ),
            ),
            (
                "swap_refusals_ref_check",
                "ALTER TABLE trips ADD CONSTRAINT trips_car_id_positive CHECK (car_id > 0);",
                said("trips_car_id_positive", "CHECK ((car_id > 0))"),
            ),
        ],
    );
}
