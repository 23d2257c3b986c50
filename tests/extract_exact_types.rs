//! Moved columns keep their exact type (modifiers, domains, arrays, collations), their default
//! and their comment, which `schema.rs` does not carry: `generate` reads them from the
//! development database and records them, and every migration refuses a database whose
//! columns are not the ones it was generated from, with nothing changed.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_migrations::MigrationHarness;
use zmig_tests::{apply_first, count, exec, model_source, run_pending, FixtureCrate, TestDb};

/// A `users` table shaped like a production one: typmods, a domain, an array, a collation,
/// defaults, comments, a reserved word, an enum; the schema.rs `diesel print-schema` prints
/// for it.
const CREATE: &str = r#"
CREATE DOMAIN us_postal_code AS character varying(10) CHECK (VALUE ~ '^[0-9]{5}(-[0-9]{4})?$');
CREATE TYPE account_tier AS ENUM ('free', 'pro');
CREATE TABLE users (
    id serial PRIMARY KEY,
    name text NOT NULL,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    bio character varying(500),
    last_seen_at timestamp(3) without time zone,
    tags text[] NOT NULL DEFAULT '{}',
    postal_code us_postal_code,
    nickname text COLLATE "C",
    "type" text NOT NULL DEFAULT 'person',
    tier account_tier NOT NULL DEFAULT 'free',
    gh_id integer,
    created_at timestamp(3) with time zone NOT NULL DEFAULT now()
);
COMMENT ON COLUMN users.balance IS 'Prepaid credit in dollars, two decimals.';
"#;

const SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "account_tier"))]
    pub struct AccountTier;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::AccountTier;

    users (id) {
        id -> Int4,
        name -> Text,
        /// Prepaid credit in dollars, two decimals.
        balance -> Numeric,
        #[max_length = 500]
        bio -> Nullable<Varchar>,
        last_seen_at -> Nullable<Timestamp>,
        tags -> Array<Nullable<Text>>,
        #[max_length = 10]
        postal_code -> Nullable<Varchar>,
        nickname -> Nullable<Text>,
        #[sql_name = "type"]
        type_ -> Text,
        tier -> AccountTier,
        gh_id -> Nullable<Int4>,
        created_at -> Timestamptz,
    }
}
"#;

const MOVED: [&str; 9] = [
    "balance",
    "bio",
    "last_seen_at",
    "tags",
    "postal_code",
    "nickname",
    "type",
    "tier",
    "gh_id",
];

fn fixture(label: &str, stage: &str) -> FixtureCrate {
    let attribute = format!(
        "#[zmig(extract(into = profiles, columns(balance, bio, last_seen_at, tags, postal_code, \
         nickname, type_, tier, gh_id: Int8)), stage = \"{stage}\")]"
    );
    FixtureCrate::new(
        label,
        SCHEMA,
        &model_source("users", "User", &attribute),
        CREATE,
        "DROP TABLE users;\nDROP TYPE account_tier;\nDROP DOMAIN us_postal_code;\n",
    )
}

#[derive(QueryableByName, Debug, PartialEq)]
struct ColumnFacts {
    #[diesel(sql_type = Text)]
    sql_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

fn facts(conn: &mut PgConnection, table: &str, column: &str) -> ColumnFacts {
    diesel::sql_query(
        "SELECT format_type(a.atttypid, a.atttypmod) AS sql_type, co.collname::text AS collation,
                a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
                col_description(a.attrelid, a.attnum::int) AS comment
         FROM pg_attribute a
         LEFT JOIN pg_collation co ON co.oid = a.attcollation AND co.collname <> 'default'
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = $1::regclass AND a.attname = $2",
    )
    .bind::<Text, _>(table)
    .bind::<Text, _>(column)
    .get_result(conn)
    .unwrap_or_else(|e| panic!("{table}.{column}: {e}"))
}

#[test]
fn moved_columns_keep_their_exact_type_default_collation_and_comment() {
    let fixture = fixture("exact_types", "write_new");
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new("exact_types");
    let mut conn = db.conn();
    // create, expand, dual_write.
    apply_first(&mut conn, &fixture, 3);

    for column in MOVED {
        let old = facts(&mut conn, "users", column);
        let new = facts(&mut conn, "profiles", column);
        if column == "gh_id" {
            // Widened by the attribute, and only that.
            assert_eq!(new.sql_type, "bigint");
            assert_eq!(old.sql_type, "integer");
            continue;
        }
        assert_eq!(new.sql_type, old.sql_type, "{column}: type");
        assert_eq!(new.collation, old.collation, "{column}: collation");
        assert_eq!(new.not_null, old.not_null, "{column}: NOT NULL");
        assert_eq!(new.default_expr, old.default_expr, "{column}: default");
        if column == "balance" {
            assert_eq!(new.comment, old.comment, "the owner's comment moves along");
        } else {
            // Never Diesel's "Its SQL type is …" placeholder of the old column.
            assert_eq!(
                new.comment.as_deref(),
                Some(format!("Was users.{column}.").as_str())
            );
        }
    }
    assert_eq!(
        facts(&mut conn, "profiles", "gh_id").comment.as_deref(),
        Some("Was users.gh_id (integer), widened to bigint.")
    );
    assert_eq!(
        facts(&mut conn, "profiles", "created_at").sql_type,
        "timestamp(3) with time zone",
        "the mirrored timestamp keeps its precision too"
    );

    // Values at the limits of each type go through the dual_write sync unchanged; a default of
    // the owner fills the new table the same way.
    exec(
        &mut conn,
        "INSERT INTO users (name, balance, bio, last_seen_at, tags, postal_code, nickname, tier, gh_id)
         VALUES ('a', 9999999999.99, repeat('x', 500), '2026-01-01 10:00:00.123', '{}', '12345-6789', 'Zoë', 'pro', 2147483647),
                ('b', 'NaN', NULL, NULL, '{a,NULL,\"c d\"}', NULL, NULL, 'free', NULL),
                ('c', -0.01, '', '1970-01-01 00:00:00', '{}', '00000', 'a', 'free', -2147483648)",
    );
    exec(&mut conn, "INSERT INTO users (name) VALUES ('defaults')");
    let differing = "SELECT count(*) AS n FROM users u FULL JOIN profiles p ON p.user_id = u.id
         WHERE (u.balance, u.bio, u.last_seen_at, u.tags, u.postal_code, u.nickname, u.type, u.tier, u.gh_id::bigint)
               IS DISTINCT FROM (p.balance, p.bio, p.last_seen_at, p.tags, p.postal_code, p.nickname, p.type, p.tier, p.gh_id)";
    assert_eq!(count(&mut conn, differing), 0);

    // write_new: the new release writes the new table, and the reverse sync brings its values
    // back into the old columns. The new column rounds as the old one does, so both agree.
    run_pending(&mut conn, &fixture);
    exec(
        &mut conn,
        "UPDATE profiles SET balance = 12.345, bio = repeat('y', 500) WHERE user_id = (SELECT id FROM users WHERE name = 'c')",
    );
    assert_eq!(count(&mut conn, differing), 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM users WHERE name = 'c' AND balance = 12.35"
        ),
        1
    );
    // A value the old column cannot hold is refused by the new one as well, so the reverse sync
    // never fails the new release's write with an overflow the old column would have raised.
    let overflow = diesel::sql_query(
        "UPDATE profiles SET balance = 123456789012.5 WHERE user_id = (SELECT id FROM users WHERE name = 'a')",
    )
    .execute(&mut conn)
    .unwrap_err()
    .to_string();
    assert!(overflow.contains("numeric field overflow"), "{overflow}");
    let long = diesel::sql_query("UPDATE profiles SET bio = repeat('z', 501)")
        .execute(&mut conn)
        .unwrap_err()
        .to_string();
    assert!(long.contains("too long"), "{long}");
}

#[test]
fn each_migration_refuses_a_database_whose_columns_are_not_the_planned_ones() {
    let fixture = fixture("exact_guard", "dual_write");
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");

    // Production widened `bio` by hand after the development database was printed.
    let db = TestDb::new("exact_guard");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        "ALTER TABLE users ALTER COLUMN bio TYPE character varying(600)",
    );
    let error = conn
        .run_pending_migrations(fixture.migrations())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("bio is character varying(600), expected character varying(500)"),
        "{error}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'profiles'"
        ),
        0,
        "nothing changed"
    );

    // Once the column is back as planned, expand applies; then a column whose collation changed
    // stops dual_write before it creates a trigger.
    exec(
        &mut conn,
        "ALTER TABLE users ALTER COLUMN bio TYPE character varying(500)",
    );
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        "ALTER TABLE users ALTER COLUMN nickname TYPE text COLLATE \"POSIX\"",
    );
    let error = conn
        .run_pending_migrations(fixture.migrations())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            r#"nickname is text COLLATE pg_catalog."POSIX", expected text COLLATE pg_catalog."C""#
        ),
        "{error}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'zmig_%'"
        ),
        0,
        "nothing changed"
    );
}

#[test]
fn generate_without_the_database_or_against_another_one_refuses_and_writes_nothing() {
    let fixture = fixture("exact_nodb", "expand");
    let project = zmig_codegen::project::load(&fixture.root).unwrap();
    let mut out = Vec::new();
    let outcome = zmig_codegen::cli::generate(&[project], false, "2026-11-21-120000", &mut out)
        .expect("generate");
    let report = String::from_utf8(out).unwrap();
    assert!(!outcome.ok());
    assert!(report.contains("needs the database"), "{report}");
    assert!(report.contains("DATABASE_URL"), "{report}");
    assert!(report.contains("nothing was written"), "{report}");
    assert_eq!(fixture.generated_files(), Vec::new());

    // A database that lacks a column schema.rs declares: named with its line.
    let db = TestDb::new("exact_other");
    exec(
        &mut db.conn(),
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)",
    );
    let mut catalog = zmig_runtime::catalog::PgCatalog::new(&db.url);
    let error = zmig_codegen::project::load_with(&fixture.root, Some(&mut catalog))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "src/schema.rs:17:1: `users`.`balance` is in schema.rs but not in the database at"
        ),
        "{error}"
    );
    // And one that has no such table.
    let empty = TestDb::new("exact_empty");
    let mut catalog = zmig_runtime::catalog::PgCatalog::new(&empty.url);
    let error = zmig_codegen::project::load_with(&fixture.root, Some(&mut catalog))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`users` is in schema.rs but not in the database at"),
        "{error}"
    );
    assert_eq!(fixture.generated_files(), Vec::new());
}

/// Types whose `=` is missing (json, json[], xml, point) or does not mean "the same value"
/// (numeric's `1.0 = 1.00`, interval's `'1 day' = '24 hours'`, float's `-0 = 0`): the sync and
/// verify compare them by their text form, so each sync applies, each change reaches the other
/// side, and verify sees a difference `=` would call equal.
const CREATE_DOCS: &str = r#"
CREATE TABLE docs (
    id serial PRIMARY KEY,
    title text NOT NULL,
    payload json,
    payloads json[],
    markup xml,
    spot point,
    amount numeric,
    span interval,
    ratio double precision,
    meta jsonb
);
"#;

const SCHEMA_DOCS: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    docs (id) {
        id -> Int4,
        title -> Text,
        payload -> Nullable<Json>,
        payloads -> Nullable<Array<Nullable<Json>>>,
        markup -> Nullable<Xml>,
        spot -> Nullable<Point>,
        amount -> Nullable<Numeric>,
        span -> Nullable<Interval>,
        ratio -> Nullable<Float8>,
        meta -> Nullable<Jsonb>,
    }
}
"#;

#[test]
fn types_whose_equality_is_not_identity_sync_and_verify_by_their_text() {
    let attribute = "#[zmig(extract(into = doc_bodies, columns(payload, payloads, markup, spot, \
                     amount, span, ratio, meta)), stage = \"write_new\")]";
    let fixture = FixtureCrate::new(
        "exact_text_compare",
        SCHEMA_DOCS,
        &model_source("docs", "Doc", attribute),
        CREATE_DOCS,
        "DROP TABLE docs;\n",
    );
    let (outcome, report) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new("exact_text_compare");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(
        &mut conn,
        r#"INSERT INTO docs (title, payload, payloads, markup, spot, amount, span, ratio, meta)
           VALUES ('seeded', '{"a": [1, {"b": null}]}', ARRAY['{"x": 1}'::json, NULL], '<p>hi</p>',
                   '(1,2)', 1.0, '1 day', 0, '{"k": {"n": [1, 2]}}'),
                  ('empty', NULL, '{}', NULL, NULL, 'NaN', NULL, 'NaN', '{}')"#,
    );
    // expand, dual_write (whose triggers compare these columns), then the backfill's batch.
    apply_first(&mut conn, &fixture, 2);
    zmig_runtime::backfill::create_bookkeeping_tables(&mut conn).unwrap();
    let options = zmig_runtime::backfill::BackfillOptions {
        progress: zmig_runtime::backfill::ProgressMode::Silent,
        yield_to_traffic: false,
        ..Default::default()
    };
    let done = zmig_runtime::backfill::backfill(&db.url, "docs_doc_bodies", &options).unwrap();
    assert!(done.finished, "{done:?}");
    let verified = zmig_runtime::verify::verify(&mut conn, "docs_doc_bodies").unwrap();
    assert_eq!(verified.differing, 0, "{verified:?}");

    // Every column compared as text between the two tables: identical.
    let differing = "SELECT count(*) AS n FROM docs d FULL JOIN doc_bodies b ON b.doc_id = d.id
         WHERE (d.payload::text, d.payloads::text, d.markup::text, d.spot::text, d.amount::text,
                d.span::text, d.ratio::text, d.meta::text)
               IS DISTINCT FROM (b.payload::text, b.payloads::text, b.markup::text, b.spot::text,
                b.amount::text, b.span::text, b.ratio::text, b.meta::text)";
    assert_eq!(count(&mut conn, differing), 0);

    // Changes that `=` calls no change at all reach the new table through dual_write's sync.
    exec(
        &mut conn,
        r#"UPDATE docs SET amount = 1.00, span = '24 hours', ratio = '-0',
                          payload = '{"a":[1,{"b":null}]}', markup = '<p>hi </p>', spot = '(1,2.5)'
           WHERE title = 'seeded'"#,
    );
    assert_eq!(count(&mut conn, differing), 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM doc_bodies WHERE amount::text = '1.00' AND span::text = '24:00:00' AND ratio::text = '-0'"
        ),
        1
    );

    // A difference only the text form shows is one verify reports, and a batch mends.
    exec(&mut conn, "UPDATE doc_bodies SET amount = 1.000");
    let verified = zmig_runtime::verify::verify(&mut conn, "docs_doc_bodies").unwrap();
    assert_eq!(verified.differing, 2, "{verified:?}");
    let again = zmig_runtime::backfill::BackfillOptions {
        again: true,
        ..options
    };
    zmig_runtime::backfill::backfill(&db.url, "docs_doc_bodies", &again).unwrap();
    assert_eq!(count(&mut conn, differing), 0);

    // write_new: the new release's writes flow back into the old columns the same way.
    run_pending(&mut conn, &fixture);
    exec(
        &mut conn,
        r#"UPDATE doc_bodies SET amount = 2.50, span = '2 days', payloads = ARRAY['[]'::json],
                                 meta = '{"k": []}' WHERE doc_id = (SELECT id FROM docs WHERE title = 'empty')"#,
    );
    exec(
        &mut conn,
        "UPDATE doc_bodies SET amount = 2.5 WHERE doc_id = (SELECT id FROM docs WHERE title = 'empty')",
    );
    assert_eq!(count(&mut conn, differing), 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM docs WHERE title = 'empty' AND amount::text = '2.5' AND payloads::text = ARRAY['[]'::json]::text"
        ),
        1
    );
}
