//! A filter (and a swap's computed column, `= "expr"`) may depend on the row alone: immutable
//! operators and functions of its columns, no subquery, no aggregate or window function.
//! PostgreSQL decides, not a list of names: `generate` asks the development database and
//! refuses, at the attribute's line and writing nothing, what it refuses; each migration that
//! compiles the SQL asks the database it runs on again and stops with nothing changed. Valid SQL
//! of every shape the grammar has (`extract(… from …)`, `substring(… from … for …)`,
//! `trim(both … from …)`, `::timestamp with time zone`) is accepted and syncs as it says.

use std::fs;
use std::path::Path;

use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use zmig_runtime::backfill::{backfill, create_bookkeeping_tables, BackfillOptions};
use zmig_runtime::verify::verify;
use zmig_tests::{apply_first, count, exec, model_source, run_pending, FixtureCrate, TestDb};

/// `zip_prefix` is immutable here, in the development database; a test redefines it as volatile
/// in another database to show the migration asking again. It is PL/pgSQL: PostgreSQL inlines a
/// one-line SQL function and judges its body, whatever the function is declared.
const CREATE: &str = r#"
CREATE SEQUENCE x;
CREATE FUNCTION zip_prefix(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN left($1, 2); END $$;
CREATE TABLE places (
    id serial PRIMARY KEY,
    name text NOT NULL,
    city text,
    zip text,
    opened_at timestamp,
    created_at timestamptz NOT NULL DEFAULT now(),
    zone text
);
"#;

const DROP: &str = "DROP TABLE places;\nDROP FUNCTION zip_prefix(text);\nDROP SEQUENCE x;\n";

const SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    places (id) {
        id -> Int4,
        name -> Text,
        city -> Nullable<Text>,
        zip -> Nullable<Text>,
        opened_at -> Nullable<Timestamp>,
        created_at -> Timestamptz,
        zone -> Nullable<Text>,
    }
}
"#;

const MIGRATION: &str = "places_addresses";

fn attribute(filter: &str, stage: &str) -> String {
    format!(
        "#[zmig(extract(into = addresses, key = place_id, columns(city, zip), filter = {filter:?}), \
         stage = \"{stage}\")]"
    )
}

fn fixture(label: &str, filter: &str, stage: &str) -> FixtureCrate {
    FixtureCrate::new(
        label,
        SCHEMA,
        &model_source("places", "Place", &attribute(filter, stage)),
        CREATE,
        DROP,
    )
}

#[test]
fn a_filter_that_does_not_depend_on_the_row_alone_is_refused_at_generate_and_nothing_is_written() {
    let immutable = "functions in index predicate must be marked IMMUTABLE";
    let cases = [
        ("pg_sleep(1) IS NOT NULL", immutable),
        ("random() < 0.5", immutable),
        ("nextval('x') > 0", immutable),
        ("pg_terminate_backend(pg_backend_pid())", immutable),
        (
            "set_config('zmig.syncing', 'places_addresses', true) IS NOT NULL",
            immutable,
        ),
        ("created_at > now() - interval '3 seconds'", immutable),
        // On timestamptz, the year depends on the session's time zone: STABLE only.
        ("extract(year from created_at) >= 2020", immutable),
        (
            "count(*) > 0",
            "aggregate functions are not allowed in index predicates",
        ),
        (
            "row_number() OVER () > 1",
            "window functions are not allowed in index predicates",
        ),
        ("city", "argument of WHERE must be type boolean"),
    ];
    let fixture = fixture("filter_hostile", "city IS NOT NULL", "expand");
    for (filter, reason) in cases {
        fixture.set_models(&model_source(
            "places",
            "Place",
            &attribute(filter, "expand"),
        ));
        let error = fixture
            .generate(false)
            .expect_err(&format!("`{filter}` was accepted"));
        assert!(error.contains(reason), "{filter}: {error}");
        assert!(
            error.contains(&format!(
                "zmig {MIGRATION}: the filter `{filter}` must depend on the row alone"
            )),
            "{filter}: {error}"
        );
        // The attribute's line in the model's file.
        assert!(error.contains("src/models.rs:5:"), "{filter}: {error}");
        assert_eq!(fixture.generated_files(), Vec::new(), "{filter}");
    }

    // A subquery is refused before the database is asked: it reads other rows.
    fixture.set_models(&model_source(
        "places",
        "Place",
        &attribute("EXISTS (SELECT 1 FROM places)", "expand"),
    ));
    let error = fixture.generate(false).unwrap_err();
    assert!(error.contains("a subquery reads other rows"), "{error}");
    assert!(error.contains("src/models.rs:5:"), "{error}");
    assert_eq!(fixture.generated_files(), Vec::new());

    // `zone` is a word of `AT TIME ZONE` to zmig, a column to PostgreSQL here: the database
    // catches the misreading (it would leave the column unread from the trigger's row) and
    // quoting the name says what it is.
    fixture.set_models(&model_source(
        "places",
        "Place",
        &attribute("zone IS NOT NULL", "expand"),
    ));
    let error = fixture.generate(false).unwrap_err();
    assert!(
        error.contains("zmig read its columns wrongly (some column is not read from the row: column \"zone\" does not exist)"),
        "{error}"
    );
    assert_eq!(fixture.generated_files(), Vec::new());
    fixture.set_models(&model_source(
        "places",
        "Place",
        &attribute("\"zone\" IS NOT NULL", "expand"),
    ));
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
}

/// `(filter, rows)`: rows of `places (name, city, zip, opened_at, created_at)`; those named
/// `in…` match the filter, those named `out…` do not.
const VALID: [(&str, &str); 5] = [
    (
        "extract(year from opened_at) >= 2020",
        "('in 2021', 'a', '1', '2021-03-01 10:00', now()), ('out 2019', 'b', '2', '2019-12-31 23:59', now()), \
         ('out never', 'c', '3', NULL, now())",
    ),
    (
        "substring(zip from 1 for 2) = '12'",
        "('in 12345', 'a', '12345', NULL, now()), ('out 21345', 'b', '21345', NULL, now()), \
         ('out no zip', 'c', NULL, NULL, now())",
    ),
    (
        "trim(both ' ' from city) <> ''",
        "('in paris', '  Paris ', '1', NULL, now()), ('out blank', '   ', '2', NULL, now())",
    ),
    (
        "created_at > '2020-01-01 00:00:00+00'::timestamp with time zone",
        "('in now', 'a', '1', NULL, now()), ('out 2019', 'b', '2', NULL, '2019-06-01 00:00:00+00')",
    ),
    (
        "zip_prefix(zip) = '12' AND opened_at::date > date '2000-01-01'",
        "('in 12', 'a', '12999', '2001-01-01', now()), ('out 99', 'b', '99999', '2001-01-01', now()), \
         ('out old', 'c', '12999', '1999-01-01', now())",
    ),
];

fn synced(conn: &mut PgConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut names: Vec<String> = diesel::sql_query(
        "SELECT p.name FROM places p JOIN addresses a ON a.place_id = p.id \
         WHERE (a.city, a.zip) IS NOT DISTINCT FROM (p.city, p.zip)",
    )
    .load::<Name>(conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    names.sort();
    names
}

fn matching(conn: &mut PgConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut names: Vec<String> =
        diesel::sql_query("SELECT name FROM places WHERE name LIKE 'in %'")
            .load::<Name>(conn)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
    names.sort();
    names
}

#[test]
fn valid_sql_of_every_shape_is_accepted_and_the_sync_and_backfill_follow_it() {
    for (i, (filter, rows)) in VALID.iter().enumerate() {
        let fixture = fixture(&format!("filter_valid_{i}"), filter, "dual_write");
        let (outcome, report) = fixture
            .generate(false)
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert!(outcome.ok(), "{filter}: {report}");

        let db = TestDb::new(&format!("filter_valid_{i}"));
        let mut conn = db.conn();
        // The rows exist before the sync: the backfill copies them.
        apply_first(&mut conn, &fixture, 2);
        let insert =
            format!("INSERT INTO places (name, city, zip, opened_at, created_at) VALUES {rows}");
        exec(&mut conn, &insert);
        run_pending(&mut conn, &fixture);
        create_bookkeeping_tables(&mut conn).unwrap();
        backfill(&db.url, MIGRATION, &BackfillOptions::default())
            .unwrap_or_else(|e| panic!("{filter}: backfill: {e:#}"));
        let expected = matching(&mut conn);
        assert!(!expected.is_empty());
        assert_eq!(synced(&mut conn), expected, "{filter}: backfilled");
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM addresses"),
            expected.len() as i64,
            "{filter}: only the matching owners have a row"
        );

        // The same rows again, written through the triggers.
        exec(&mut conn, "DELETE FROM places");
        exec(&mut conn, &insert);
        assert_eq!(synced(&mut conn), expected, "{filter}: synced");
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM addresses"),
            expected.len() as i64,
            "{filter}"
        );
        // An owner that leaves the filter loses its row.
        exec(
            &mut conn,
            "UPDATE places SET name = 'out now', city = '', zip = NULL, opened_at = NULL, \
             created_at = '2019-01-01 00:00:00+00' WHERE name = (SELECT min(name) FROM places WHERE name LIKE 'in %')",
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM addresses"),
            expected.len() as i64 - 1,
            "{filter}: left the filter"
        );
        let verified = verify(&mut conn, MIGRATION).unwrap();
        assert!(verified.ok(), "{filter}: {verified:?}");
    }
}

#[test]
fn expand_refuses_a_filter_a_function_of_the_database_makes_volatile_and_changes_nothing() {
    let fixture = fixture("filter_runtime", "zip_prefix(zip) = '12'", "dual_write");
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");

    // This database defines the function the filter calls as volatile.
    let db = TestDb::new("filter_runtime");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(&mut conn, "ALTER FUNCTION zip_prefix(text) VOLATILE");
    let error = conn
        .run_pending_migrations(fixture.migrations())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "zmig places_addresses: the filter `zip_prefix(zip) = '12'` must depend on the row alone, \
             and PostgreSQL says: functions in index predicate must be marked IMMUTABLE"
        ),
        "{error}"
    );
    let nothing =
        "SELECT count(*) AS n FROM pg_class WHERE relname IN ('addresses', 'zmig_row_check')";
    assert_eq!(count(&mut conn, nothing), 0, "nothing changed");

    // Immutable again: expand applies. Volatile once more: dual_write stops before its triggers.
    exec(&mut conn, "ALTER FUNCTION zip_prefix(text) IMMUTABLE");
    apply_first(&mut conn, &fixture, 1);
    exec(&mut conn, "ALTER FUNCTION zip_prefix(text) VOLATILE");
    let error = conn
        .run_pending_migrations(fixture.migrations())
        .unwrap_err()
        .to_string();
    assert!(error.contains("must be marked IMMUTABLE"), "{error}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'zmig_%'"
        ),
        0,
        "nothing changed"
    );
    exec(&mut conn, "ALTER FUNCTION zip_prefix(text) IMMUTABLE");
    run_pending(&mut conn, &fixture);
}

// The swap's computed column, `column: Type = "expr"`: the same rule.

fn cars(label: &str, columns: &str) -> FixtureCrate {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cars");
    let first = example.join("migrations/2026-11-01-000000-0000_create_cars_and_trips");
    let create = fs::read_to_string(first.join("up.sql")).unwrap()
        + "\nCREATE FUNCTION km_of(integer) RETURNS bigint LANGUAGE plpgsql IMMUTABLE \
           AS $$ BEGIN RETURN $1::bigint * 1609 / 1000; END $$;\n";
    let drop = "DROP FUNCTION km_of(integer);\n".to_owned()
        + &fs::read_to_string(first.join("down.sql")).unwrap();
    let attribute = format!(
        "#[zmig(swap(columns(id: Int8, {columns}), references(trips.car_id), name = cars_wide), stage = \"prepare\")]"
    );
    FixtureCrate::new(
        label,
        &fs::read_to_string(example.join("src/schema.rs")).unwrap(),
        &model_source("cars", "Car", &attribute),
        &create,
        &drop,
    )
}

#[test]
fn a_swap_expression_is_held_to_the_same_rule_at_generate_and_in_prepare() {
    for (expression, reason) in [
        (
            "mileage + (random() * 10)::int",
            "functions in index expression must be marked IMMUTABLE",
        ),
        (
            "(SELECT max(mileage) FROM cars)",
            "a subquery reads other rows",
        ),
        (
            "extract(epoch from created_at)::bigint",
            "functions in index expression must be marked IMMUTABLE",
        ),
    ] {
        let fixture = cars(
            "swap_expr_hostile",
            &format!("mileage: Int8 = {expression:?}"),
        );
        let error = fixture
            .generate(false)
            .expect_err(&format!("`{expression}` was accepted"));
        assert!(error.contains(reason), "{expression}: {error}");
        assert!(error.contains("src/models.rs:5:"), "{expression}: {error}");
        assert_eq!(fixture.generated_files(), Vec::new(), "{expression}");
    }

    // Accepted where the database says the function is immutable; refused by prepare, with
    // nothing changed, where it is not.
    let fixture = cars("swap_expr_runtime", "mileage: Int8 = \"km_of(mileage)\"");
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new("swap_expr_runtime");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        "INSERT INTO cars (make, model, year, mileage) VALUES ('a', 'b', 2020, 1000)",
    );
    exec(&mut conn, "ALTER FUNCTION km_of(integer) VOLATILE");
    let error = conn
        .run_pending_migrations(fixture.migrations())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "zmig cars_wide: the expression `km_of(mileage)` must depend on the row alone, and \
             PostgreSQL says: functions in index expression must be marked IMMUTABLE"
        ),
        "{error}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'r'"
        ),
        1,
        "cars is still the table"
    );
    exec(&mut conn, "ALTER FUNCTION km_of(integer) IMMUTABLE");
    run_pending(&mut conn, &fixture);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'v'"
        ),
        1,
        "prepared"
    );
}
