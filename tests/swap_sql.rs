//! The SQL zmig generates for a swap: snapshots of the cars example's folders (a change in
//! generated SQL shows up in review as a snapshot diff, and CI lints the exported copies), and a
//! swap whose every name needs quoting, with a schema, a changed type computed by an expression
//! and a nullable reference, taken through prepare, move, revert, prepare again and finalize on a
//! real database.

use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use zmig_tests::{count, exec, migrate_to, model_source, revert_last, FixtureCrate, TestDb};

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

fn snapshot_of(fixture: &FixtureCrate, lint_name: &str) -> String {
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    fixture.export_for_lint(lint_name);
    fixture
        .generated_files()
        .into_iter()
        .map(|(name, contents)| format!("==> {name} <==\n{contents}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cars_prepare_and_finalize() {
    insta::assert_snapshot!(snapshot_of(
        &FixtureCrate::cars("swap_sql_cars", CARS_SWAP),
        "cars_swap"
    ));
}

const ODD_SCHEMA: &str = r#"pub mod fleet {
    diesel::table! {
        #[sql_name = "Car Park"]
        fleet.car_park (id) {
            id -> Int4,
            #[sql_name = "Make"]
            make -> Text,
            #[sql_name = "Price Cents"]
            price_cents -> Int4,
        }
    }

    diesel::table! {
        fleet.rides (id) {
            id -> Int8,
            #[sql_name = "Car Id"]
            car_id -> Nullable<Int4>,
        }
    }

    diesel::joinable!(rides -> car_park (car_id));
    diesel::allow_tables_to_appear_in_same_query!(car_park, rides);
}
"#;

const ODD_CREATE: &str = r#"CREATE SCHEMA fleet;
CREATE TABLE fleet."Car Park" (id serial PRIMARY KEY, "Make" text NOT NULL, "Price Cents" integer NOT NULL);
CREATE TABLE fleet.rides (id bigserial PRIMARY KEY, "Car Id" integer REFERENCES fleet."Car Park");
CREATE INDEX "rides by car" ON fleet.rides ("Car Id");
ALTER TABLE fleet."Car Park" ADD CONSTRAINT "Car Park one make" UNIQUE ("Make");
"#;

const ODD_SWAP: &str = "#[zmig(swap(columns(id: Int8, price_cents: Numeric = \"\\\"Price Cents\\\"::numeric(12, 0)\"), \
     references(rides.car_id), unique(make), name = car_park_wide), stage = \"finalize\")]";

#[test]
fn names_that_need_quoting_round_trip() {
    let models = model_source("fleet::car_park", "CarPark", ODD_SWAP);
    let fixture = FixtureCrate::new(
        "swap_sql_odd",
        ODD_SCHEMA,
        &models,
        ODD_CREATE,
        "DROP SCHEMA fleet CASCADE;\n",
    );
    let snapshot = snapshot_of(&fixture, "car_park_swap");
    assert!(
        snapshot.contains("\"fleet\".\"Car Park_new\""),
        "{snapshot}"
    );
    let db = TestDb::new("swap_sql_odd");
    let mut conn = db.conn();
    migrate_to(&db.url, &fixture, "create_tables");
    conn.batch_execute(
        r#"INSERT INTO fleet."Car Park" ("Make", "Price Cents") SELECT 'make ' || g, g * 10 FROM generate_series(1, 300) g;
           INSERT INTO fleet.rides ("Car Id") SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE 1 + g % 300 END FROM generate_series(1, 600) g;"#,
    )
    .unwrap();
    let prices = r#"SELECT sum("Price Cents")::bigint AS n FROM fleet."Car Park""#;
    let before = count(&mut conn, prices);

    migrate_to(&db.url, &fixture, "car_park_wide_prepare");
    exec(
        &mut conn,
        r#"INSERT INTO fleet."Car Park" ("Make", "Price Cents") VALUES ('late', 5)"#,
    );
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT fleet.zmig_car_park_wide_move(120) AS n"#
        ),
        120
    );
    exec(
        &mut conn,
        r#"UPDATE fleet."Car Park" SET "Price Cents" = "Price Cents" + 1 WHERE id IN (1, 299)"#,
    );
    exec(
        &mut conn,
        r#"INSERT INTO fleet.rides ("Car Id") VALUES (NULL), (2)"#,
    );
    assert_eq!(count(&mut conn, prices), before + 7);
    // The unique constraint holds across the tables, under its own name: a make of a moved
    // row, of one still in the old table, of one inserted since prepare.
    for make in ["make 299", "make 3", "late"] {
        let error = diesel::sql_query(format!(
            r#"INSERT INTO fleet."Car Park" ("Make", "Price Cents") VALUES ('{make}', 1)"#
        ))
        .execute(&mut conn)
        .expect_err(make);
        let diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        ) = error
        else {
            panic!("{make}: {error}");
        };
        assert_eq!(info.constraint_name(), Some("Car Park one make"), "{make}");
    }
    // The changed column is computed by the expression in the new table (the move took the
    // highest keys, 181 to 300, so 299's update went there).
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT count(*) AS n FROM fleet."Car Park_new" WHERE pg_typeof("Price Cents") = 'numeric'::regtype AND "Price Cents" = id * 10 + (id = 299)::int"#
        ),
        120
    );
    revert_last(&mut conn, &fixture);
    assert_eq!(count(&mut conn, prices), before + 7);
    assert_eq!(
        count(&mut conn, r#"SELECT count(*) AS n FROM fleet."Car Park""#),
        301
    );

    migrate_to(&db.url, &fixture, "car_park_wide_prepare");
    while count(&mut conn, "SELECT fleet.zmig_car_park_wide_move(100) AS n") > 0 {}
    migrate_to(&db.url, &fixture, "car_park_wide_finalize");
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'fleet' AND ((table_name = 'Car Park' AND column_name = 'id' AND data_type = 'bigint') OR (table_name = 'Car Park' AND column_name = 'Price Cents' AND data_type = 'numeric') OR (table_name = 'rides' AND column_name = 'Car Id' AND data_type = 'bigint' AND is_nullable = 'YES'))"#
        ),
        3
    );
    assert_eq!(count(&mut conn, prices), before + 7);
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT count(*) AS n FROM fleet.rides WHERE "Car Id" IS NULL"#
        ),
        201
    );
    assert_eq!(
        count(
            &mut conn,
            r#"SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 'fleet' AND indexname IN ('rides by car', 'Car Park_pkey', 'Car Park one make')"#
        ),
        3
    );
}
