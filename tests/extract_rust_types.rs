//! The Rust side `#[derive(Zmig)]` generates, for a column of every type `diesel print-schema`
//! writes for PostgreSQL: the readers (read_new) and writers (write_new) round-trip each value,
//! edge values included, through the new tables that the generated migrations create and sync.
//!
//! Three extracts, each within Diesel's default 16 columns a table: `accounts` → `wallets`
//! (scalars of Diesel's optional types, a Postgres enum, a rename and a widening), `profiles` →
//! `profile_lists` (arrays of each), `events` → `event_times` (dates and times, with chrono
//! and with `time`). At read_new the row structs take the model's field types; at write_new
//! the models no longer carry the fields, and the types come from `rust_types(...)` and
//! `zmig_runtime::RustType` (with zmig-runtime's `numeric`, `serde_json`, `uuid` and
//! `network-address` features, and the enum's own impl).

use std::str::FromStr;

use bigdecimal::BigDecimal;
use diesel::pg::data_types::{PgInterval, PgMoney, PgNumeric};
use diesel::prelude::*;
use ipnetwork::IpNetwork;
use serde_json::json;
use uuid::Uuid;
use zmig_tests::{count, FixtureCrate, TestDb};

/// `schema.rs` as print-schema writes it before the extracts (what `generate` reads).
const SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "mood"))]
    pub struct Mood;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Mood;

    accounts (id) {
        id -> Int8,
        name -> Text,
        balance -> Numeric,
        ratio -> Nullable<Numeric>,
        settings -> Jsonb,
        payload -> Nullable<Jsonb>,
        token -> Uuid,
        last_ip -> Nullable<Inet>,
        network -> Cidr,
        session_length -> Interval,
        fee -> Money,
        avatar -> Nullable<Bytea>,
        mood -> Mood,
        #[max_length = 39]
        gh_login -> Varchar,
        visits -> Int4,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Mood;

    profiles (id) {
        id -> Int8,
        name -> Text,
        tags -> Array<Nullable<Text>>,
        scores -> Nullable<Array<Nullable<Int4>>>,
        amounts -> Array<Nullable<Numeric>>,
        docs -> Array<Nullable<Jsonb>>,
        tokens -> Array<Nullable<Uuid>>,
        ips -> Array<Nullable<Inet>>,
        nets -> Array<Nullable<Cidr>>,
        spans -> Array<Nullable<Interval>>,
        blobs -> Array<Nullable<Bytea>>,
        fees -> Array<Nullable<Money>>,
        moods -> Array<Nullable<Mood>>,
        alt_mood -> Nullable<Mood>,
    }
}

diesel::table! {
    events (id) {
        id -> Int8,
        name -> Text,
        born -> Date,
        wakes -> Time,
        seen -> Timestamp,
        at -> Timestamptz,
        maybe_at -> Nullable<Timestamptz>,
        days -> Array<Nullable<Date>>,
        born_c -> Date,
        wakes_c -> Time,
        seen_c -> Timestamp,
        at_c -> Timestamptz,
        ats_c -> Array<Nullable<Timestamptz>>,
    }
}
"#;

const CREATE: &str = r#"CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s complicated');

CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    balance numeric(12,2) NOT NULL,
    ratio numeric,
    settings jsonb NOT NULL,
    payload jsonb,
    token uuid NOT NULL,
    last_ip inet,
    network cidr NOT NULL,
    session_length interval NOT NULL,
    fee money NOT NULL,
    avatar bytea,
    mood mood NOT NULL,
    gh_login varchar(39) NOT NULL,
    visits integer NOT NULL
);

CREATE TABLE profiles (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    tags text[] NOT NULL,
    scores integer[],
    amounts numeric[] NOT NULL,
    docs jsonb[] NOT NULL,
    tokens uuid[] NOT NULL,
    ips inet[] NOT NULL,
    nets cidr[] NOT NULL,
    spans interval[] NOT NULL,
    blobs bytea[] NOT NULL,
    fees money[] NOT NULL,
    moods mood[] NOT NULL,
    alt_mood mood
);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    born date NOT NULL,
    wakes time NOT NULL,
    seen timestamp NOT NULL,
    at timestamptz NOT NULL,
    maybe_at timestamptz,
    days date[] NOT NULL,
    born_c date NOT NULL,
    wakes_c time NOT NULL,
    seen_c timestamp NOT NULL,
    at_c timestamptz NOT NULL,
    ats_c timestamptz[] NOT NULL
);
"#;

const DROP: &str =
    "DROP TABLE events;\nDROP TABLE profiles;\nDROP TABLE accounts;\nDROP TYPE mood;\n";

const WALLETS: &str =
    "extract(into = wallets, primary_key = account_id, columns(balance, ratio, settings, payload, \
     token, last_ip, network, session_length, fee, avatar, mood, gh_login as login, visits: Int8))";
const PROFILE_LISTS: &str =
    "extract(into = profile_lists, primary_key = profile_id, columns(tags, scores, \
     amounts, docs, tokens, ips, nets, spans, blobs, fees, moods, alt_mood))";
const EVENT_TIMES: &str =
    "extract(into = event_times, primary_key = event_id, columns(born, wakes, seen, at, \
     maybe_at, days, born_c, wakes_c, seen_c, at_c, ats_c))";

/// The crate `generate` reads: the three models at contract, so every phase is generated.
fn fixture(label: &str) -> FixtureCrate {
    let models: String = [
        ("accounts", "Account", WALLETS),
        ("profiles", "Profile", PROFILE_LISTS),
        ("events", "Event", EVENT_TIMES),
    ]
    .iter()
    .map(|(table, model, extract)| {
        format!(
            "#[derive(Zmig)]\n#[diesel(table_name = {table})]\n#[zmig({extract}, stage = \"contract\")]\npub struct {model} {{\n    pub id: i64,\n}}\n\n"
        )
    })
    .collect();
    let fixture = FixtureCrate::new(
        label,
        SCHEMA,
        &format!("use zmig_runtime::Zmig;\n\n{models}"),
        CREATE,
        DROP,
    );
    fixture.generate(false).unwrap();
    fixture
}

/// Applies the first migration and every extract's folders for `phases`, in folder order.
fn apply_phases(conn: &mut PgConnection, fixture: &FixtureCrate, phases: &[&str]) {
    use diesel_migrations::MigrationHarness;
    let pending = conn.pending_migrations(fixture.migrations()).unwrap();
    let mut applied = Vec::new();
    for migration in &pending {
        let name = migration.name().to_string();
        if name.starts_with("2020-") || phases.iter().any(|p| name.ends_with(&format!("_{p}"))) {
            conn.run_migration(&**migration)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            applied.push(name);
        }
    }
    assert_eq!(applied.len(), 1 + 3 * phases.len(), "{applied:?}");
}

pub mod schema {
    pub mod sql_types {
        #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
        #[diesel(postgres_type(name = "mood"))]
        pub struct Mood;
    }

    /// The new tables, as print-schema writes them once expand ran (shared by both stages).
    #[macro_export]
    macro_rules! new_tables {
        () => {
            diesel::table! {
                use diesel::sql_types::*;
                use $crate::schema::sql_types::Mood;

                wallets (account_id) {
                    account_id -> Int8,
                    balance -> Numeric,
                    ratio -> Nullable<Numeric>,
                    settings -> Jsonb,
                    payload -> Nullable<Jsonb>,
                    token -> Uuid,
                    last_ip -> Nullable<Inet>,
                    network -> Cidr,
                    session_length -> Interval,
                    fee -> Money,
                    avatar -> Nullable<Bytea>,
                    mood -> Mood,
                    login -> Varchar,
                    visits -> Int8,
                    created_at -> Timestamp,
                    updated_at -> Timestamp,
                }
            }

            diesel::table! {
                use diesel::sql_types::*;
                use $crate::schema::sql_types::Mood;

                profile_lists (profile_id) {
                    profile_id -> Int8,
                    tags -> Array<Nullable<Text>>,
                    scores -> Nullable<Array<Nullable<Int4>>>,
                    amounts -> Array<Nullable<Numeric>>,
                    docs -> Array<Nullable<Jsonb>>,
                    tokens -> Array<Nullable<Uuid>>,
                    ips -> Array<Nullable<Inet>>,
                    nets -> Array<Nullable<Cidr>>,
                    spans -> Array<Nullable<Interval>>,
                    blobs -> Array<Nullable<Bytea>>,
                    fees -> Array<Nullable<Money>>,
                    moods -> Array<Nullable<Mood>>,
                    alt_mood -> Nullable<Mood>,
                    created_at -> Timestamp,
                    updated_at -> Timestamp,
                }
            }

            diesel::table! {
                event_times (event_id) {
                    event_id -> Int8,
                    born -> Date,
                    wakes -> Time,
                    seen -> Timestamp,
                    at -> Timestamptz,
                    maybe_at -> Nullable<Timestamptz>,
                    days -> Array<Nullable<Date>>,
                    born_c -> Date,
                    wakes_c -> Time,
                    seen_c -> Timestamp,
                    at_c -> Timestamptz,
                    ats_c -> Array<Nullable<Timestamptz>>,
                    created_at -> Timestamp,
                    updated_at -> Timestamp,
                }
            }
        };
    }

    /// Once expand ran: the owners still whole, and the new tables.
    pub mod full {
        diesel::table! {
            use diesel::sql_types::*;
            use crate::schema::sql_types::Mood;

            accounts (id) {
                id -> Int8,
                name -> Text,
                balance -> Numeric,
                ratio -> Nullable<Numeric>,
                settings -> Jsonb,
                payload -> Nullable<Jsonb>,
                token -> Uuid,
                last_ip -> Nullable<Inet>,
                network -> Cidr,
                session_length -> Interval,
                fee -> Money,
                avatar -> Nullable<Bytea>,
                mood -> Mood,
                gh_login -> Varchar,
                visits -> Int4,
            }
        }

        diesel::table! {
            use diesel::sql_types::*;
            use crate::schema::sql_types::Mood;

            profiles (id) {
                id -> Int8,
                name -> Text,
                tags -> Array<Nullable<Text>>,
                scores -> Nullable<Array<Nullable<Int4>>>,
                amounts -> Array<Nullable<Numeric>>,
                docs -> Array<Nullable<Jsonb>>,
                tokens -> Array<Nullable<Uuid>>,
                ips -> Array<Nullable<Inet>>,
                nets -> Array<Nullable<Cidr>>,
                spans -> Array<Nullable<Interval>>,
                blobs -> Array<Nullable<Bytea>>,
                fees -> Array<Nullable<Money>>,
                moods -> Array<Nullable<Mood>>,
                alt_mood -> Nullable<Mood>,
            }
        }

        diesel::table! {
            events (id) {
                id -> Int8,
                name -> Text,
                born -> Date,
                wakes -> Time,
                seen -> Timestamp,
                at -> Timestamptz,
                maybe_at -> Nullable<Timestamptz>,
                days -> Array<Nullable<Date>>,
                born_c -> Date,
                wakes_c -> Time,
                seen_c -> Timestamp,
                at_c -> Timestamptz,
                ats_c -> Array<Nullable<Timestamptz>>,
            }
        }

        crate::new_tables!();

        diesel::allow_tables_to_appear_in_same_query!(
            accounts,
            wallets,
            profiles,
            profile_lists,
            events,
            event_times
        );
    }

    /// From write_new on: the ignored-column shim leaves the owners their own columns only.
    pub mod shimmed {
        diesel::table! {
            accounts (id) {
                id -> Int8,
                name -> Text,
            }
        }

        diesel::table! {
            profiles (id) {
                id -> Int8,
                name -> Text,
            }
        }

        diesel::table! {
            events (id) {
                id -> Int8,
                name -> Text,
            }
        }

        crate::new_tables!();

        diesel::allow_tables_to_appear_in_same_query!(
            accounts,
            wallets,
            profiles,
            profile_lists,
            events,
            event_times
        );
    }
}

/// The project's own Rust type for its Postgres enum, as a Diesel team writes it.
mod mood {
    use std::io::Write;

    use diesel::deserialize::{self, FromSql, FromSqlRow};
    use diesel::expression::AsExpression;
    use diesel::pg::{Pg, PgValue};
    use diesel::serialize::{self, IsNull, Output, ToSql};

    use crate::schema::sql_types;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
    #[diesel(sql_type = sql_types::Mood)]
    pub enum Mood {
        Happy,
        Sad,
        Complicated,
    }

    impl ToSql<sql_types::Mood, Pg> for Mood {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            out.write_all(match self {
                Mood::Happy => b"happy",
                Mood::Sad => b"sad",
                Mood::Complicated => b"it's complicated",
            })?;
            Ok(IsNull::No)
        }
    }

    impl FromSql<sql_types::Mood, Pg> for Mood {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            match value.as_bytes() {
                b"happy" => Ok(Mood::Happy),
                b"sad" => Ok(Mood::Sad),
                b"it's complicated" => Ok(Mood::Complicated),
                other => Err(format!("unknown mood {:?}", String::from_utf8_lossy(other)).into()),
            }
        }
    }

    // The SQL type is the project's own, so the orphan rule allows this: the Rust type the
    // generated row struct falls back to once the model no longer carries the field.
    impl zmig_runtime::RustType for sql_types::Mood {
        type Rust = Mood;
    }
}

use mood::Mood;

/// At read_new: the models still carry every field, and the row structs take their types.
mod read_new {
    use bigdecimal::BigDecimal;
    use diesel::pg::data_types::{PgInterval, PgMoney, PgNumeric};
    use diesel::prelude::*;
    use ipnetwork::IpNetwork;
    use uuid::Uuid;
    use zmig_runtime::Zmig;

    use crate::Mood;

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::full::accounts)]
    #[zmig(
        extract(into = wallets, primary_key = account_id, columns(balance, ratio, settings, payload,
            token, last_ip, network, session_length, fee, avatar, mood, gh_login as login, visits: Int8)),
        stage = "read_new"
    )]
    pub struct Account {
        pub id: i64,
        pub name: String,
        pub balance: BigDecimal,
        // `BigDecimal` has no NaN; Diesel's own `PgNumeric` does.
        pub ratio: Option<PgNumeric>,
        pub settings: serde_json::Value,
        pub payload: Option<serde_json::Value>,
        pub token: Uuid,
        pub last_ip: Option<IpNetwork>,
        pub network: IpNetwork,
        pub session_length: PgInterval,
        pub fee: PgMoney,
        pub avatar: Option<Vec<u8>>,
        pub mood: Mood,
        pub gh_login: String,
        pub visits: i32,
    }

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::full::profiles)]
    #[zmig(
        extract(into = profile_lists, primary_key = profile_id, columns(tags, scores, amounts, docs,
            tokens, ips, nets, spans, blobs, fees, moods, alt_mood)),
        stage = "read_new"
    )]
    pub struct Profile {
        pub id: i64,
        pub name: String,
        pub tags: Vec<Option<String>>,
        pub scores: Option<Vec<Option<i32>>>,
        pub amounts: Vec<Option<BigDecimal>>,
        pub docs: Vec<Option<serde_json::Value>>,
        pub tokens: Vec<Option<Uuid>>,
        pub ips: Vec<Option<IpNetwork>>,
        pub nets: Vec<Option<IpNetwork>>,
        pub spans: Vec<Option<PgInterval>>,
        pub blobs: Vec<Option<Vec<u8>>>,
        pub fees: Vec<Option<PgMoney>>,
        pub moods: Vec<Option<Mood>>,
        pub alt_mood: Option<Mood>,
    }

    /// `time` for the first dates and times, chrono for the `_c` ones: a model uses either.
    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::full::events)]
    #[zmig(
        extract(into = event_times, primary_key = event_id, columns(born, wakes, seen, at, maybe_at,
            days, born_c, wakes_c, seen_c, at_c, ats_c)),
        stage = "read_new"
    )]
    pub struct Event {
        pub id: i64,
        pub name: String,
        pub born: time::Date,
        pub wakes: time::Time,
        pub seen: time::PrimitiveDateTime,
        pub at: time::OffsetDateTime,
        pub maybe_at: Option<time::OffsetDateTime>,
        pub days: Vec<Option<time::Date>>,
        pub born_c: chrono::NaiveDate,
        pub wakes_c: chrono::NaiveTime,
        pub seen_c: chrono::NaiveDateTime,
        pub at_c: chrono::DateTime<chrono::Utc>,
        pub ats_c: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    }
}

/// At write_new: the models have lost the moved fields. What the fallback cannot know is named
/// in `rust_types`: the NaN-capable numeric, and every `time` type (the fallback is chrono).
mod write_new {
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::shimmed::accounts)]
    #[zmig(
        extract(into = wallets, primary_key = account_id, columns(balance, ratio, settings, payload,
            token, last_ip, network, session_length, fee, avatar, mood, gh_login as login, visits: Int8),
            rust_types(ratio = Option<diesel::pg::data_types::PgNumeric>)),
        stage = "write_new"
    )]
    pub struct Account {
        pub id: i64,
        pub name: String,
    }

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::shimmed::profiles)]
    #[zmig(
        extract(into = profile_lists, primary_key = profile_id, columns(tags, scores, amounts, docs,
            tokens, ips, nets, spans, blobs, fees, moods, alt_mood)),
        stage = "write_new"
    )]
    pub struct Profile {
        pub id: i64,
        pub name: String,
    }

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Zmig)]
    #[diesel(table_name = crate::schema::shimmed::events)]
    #[zmig(
        extract(into = event_times, primary_key = event_id, columns(born, wakes, seen, at, maybe_at,
            days, born_c, wakes_c, seen_c, at_c, ats_c),
            rust_types(born = time::Date, wakes = time::Time, seen = time::PrimitiveDateTime,
                at = time::OffsetDateTime, maybe_at = Option<time::OffsetDateTime>,
                days = Vec<Option<time::Date>>)),
        stage = "write_new"
    )]
    pub struct Event {
        pub id: i64,
        pub name: String,
    }
}

// ---- values: an ordinary row and one at the edges of each type ----

fn decimal(text: &str) -> BigDecimal {
    BigDecimal::from_str(text).unwrap()
}

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

fn date(y: i32, m: u8, d: u8) -> time::Date {
    time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap()
}

fn moment(y: i32, m: u8, d: u8, h: u8, min: u8, s: u8, micro: u32) -> time::PrimitiveDateTime {
    time::PrimitiveDateTime::new(
        date(y, m, d),
        time::Time::from_hms_micro(h, min, s, micro).unwrap(),
    )
}

fn chrono_moment(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn accounts() -> Vec<read_new::Account> {
    let ordinary = read_new::Account {
        id: 1,
        name: "ordinary".into(),
        balance: decimal("1234.50"),
        // 1.5: one base-10000 digit before the point, one after.
        ratio: Some(PgNumeric::Positive {
            weight: 0,
            scale: 1,
            digits: vec![1, 5000],
        }),
        settings: json!({"theme": "dark", "alerts": true}),
        payload: Some(json!([1, "two", null])),
        token: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        last_ip: Some(net("192.168.0.7/24")),
        network: net("10.0.0.0/8"),
        session_length: PgInterval::new(90_000_000, 1, 0),
        fee: PgMoney(199),
        avatar: Some(vec![0x89, b'P', b'N', b'G']),
        mood: Mood::Happy,
        gh_login: "octocat".into(),
        visits: 3,
    };
    let edges = read_new::Account {
        id: 2,
        name: "edges: 'quoted' \"names\", ünïcode, \\backslash".into(),
        // The limits of numeric(12,2).
        balance: decimal("-9999999999.99"),
        ratio: Some(PgNumeric::NaN),
        settings: json!({"nested": {"deeper": [{"deepest": [[], {}, null, -0.5, 12345678901234567890u64]}]},
                         "quote": "it's \"fine\"", "": ""}),
        payload: None,
        token: Uuid::from_u128(u128::MAX),
        last_ip: Some(net("2001:db8::1/128")),
        network: net("2001:db8::/32"),
        session_length: PgInterval::new(-1, -400, 1_200),
        fee: PgMoney(i64::MAX),
        avatar: Some(Vec::new()),
        mood: Mood::Complicated,
        gh_login: "a".repeat(39),
        visits: i32::MAX,
    };
    let nulls = read_new::Account {
        id: 3,
        name: "nulls".into(),
        balance: decimal("0.01"),
        ratio: None,
        settings: json!([]),
        payload: Some(json!({})),
        token: Uuid::nil(),
        last_ip: None,
        network: net("0.0.0.0/0"),
        session_length: PgInterval::new(0, 0, 0),
        fee: PgMoney(i64::MIN),
        avatar: None,
        mood: Mood::Sad,
        gh_login: String::new(),
        visits: i32::MIN,
    };
    vec![ordinary, edges, nulls]
}

fn profiles() -> Vec<read_new::Profile> {
    let full = read_new::Profile {
        id: 1,
        name: "full".into(),
        tags: vec![
            Some("a".into()),
            None,
            Some("{braces},\"quotes\"".into()),
            Some(String::new()),
        ],
        scores: Some(vec![Some(i32::MIN), None, Some(i32::MAX)]),
        amounts: vec![
            Some(decimal("0.000001")),
            None,
            Some(decimal("-123456789012345678901234567890.5")),
        ],
        docs: vec![
            Some(json!({"a": {"b": [1, {"c": null}]}})),
            None,
            Some(json!("text")),
        ],
        tokens: vec![Some(Uuid::nil()), None, Some(Uuid::from_u128(42))],
        ips: vec![Some(net("127.0.0.1/32")), None, Some(net("::1/128"))],
        nets: vec![Some(net("192.168.0.0/16")), None],
        spans: vec![Some(PgInterval::new(1, 2, 3)), None],
        blobs: vec![Some(vec![0, 255, 0]), None, Some(Vec::new())],
        fees: vec![Some(PgMoney(-1)), None],
        moods: vec![Some(Mood::Sad), None, Some(Mood::Complicated)],
        alt_mood: Some(Mood::Happy),
    };
    // Every array empty, the nullable ones null.
    let empty = read_new::Profile {
        id: 2,
        name: "empty".into(),
        tags: Vec::new(),
        scores: None,
        amounts: Vec::new(),
        docs: Vec::new(),
        tokens: Vec::new(),
        ips: Vec::new(),
        nets: Vec::new(),
        spans: Vec::new(),
        blobs: Vec::new(),
        fees: Vec::new(),
        moods: Vec::new(),
        alt_mood: None,
    };
    let empty_not_null = read_new::Profile {
        id: 3,
        name: "empty, not null".into(),
        scores: Some(Vec::new()),
        ..empty.clone()
    };
    vec![full, empty, empty_not_null]
}

fn events() -> Vec<read_new::Event> {
    let ordinary = read_new::Event {
        id: 1,
        name: "ordinary".into(),
        born: date(1990, 6, 15),
        wakes: time::Time::from_hms(7, 30, 0).unwrap(),
        seen: moment(2026, 12, 2, 14, 0, 0, 0),
        at: moment(2026, 12, 2, 14, 0, 0, 123_456).assume_utc(),
        maybe_at: None,
        days: vec![Some(date(2026, 1, 1)), None],
        born_c: chrono::NaiveDate::from_ymd_opt(1990, 6, 15).unwrap(),
        wakes_c: chrono::NaiveTime::from_hms_opt(7, 30, 0).unwrap(),
        seen_c: chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_micro_opt(14, 0, 0, 1)
            .unwrap(),
        at_c: chrono_moment("2026-12-02T14:00:00.654321Z"),
        ats_c: vec![Some(chrono_moment("2026-01-01T00:00:00Z")), None],
    };
    // Leap days, the last microsecond of a day, the first and last years, an offset that is
    // not UTC (PostgreSQL stores the instant; it reads back in UTC).
    let edges = read_new::Event {
        id: 2,
        name: "edges".into(),
        born: date(2024, 2, 29),
        wakes: time::Time::from_hms_micro(23, 59, 59, 999_999).unwrap(),
        seen: moment(1, 1, 1, 0, 0, 0, 0),
        at: moment(9999, 12, 31, 23, 59, 59, 999_999).assume_utc(),
        maybe_at: Some(
            moment(2000, 2, 29, 12, 0, 0, 0)
                .assume_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap())
                .to_offset(time::UtcOffset::UTC),
        ),
        days: Vec::new(),
        born_c: chrono::NaiveDate::from_ymd_opt(2000, 2, 29).unwrap(),
        wakes_c: chrono::NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap(),
        seen_c: chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .and_hms_micro_opt(23, 59, 59, 999_999)
            .unwrap(),
        at_c: chrono_moment("1970-01-01T00:00:00Z"),
        ats_c: Vec::new(),
    };
    vec![ordinary, edges]
}

/// What `find_with_*` read from the new table is what the model holds, field by field.
fn assert_wallet(owner: &read_new::Account, row: &read_new::Wallet) {
    assert_eq!(row.account_id, owner.id);
    assert_eq!(row.balance, owner.balance);
    assert_eq!(row.ratio, owner.ratio);
    assert_eq!(row.settings, owner.settings);
    assert_eq!(row.payload, owner.payload);
    assert_eq!(row.token, owner.token);
    assert_eq!(row.last_ip, owner.last_ip);
    assert_eq!(row.network, owner.network);
    assert_eq!(row.session_length, owner.session_length);
    assert_eq!(row.fee, owner.fee);
    assert_eq!(row.avatar, owner.avatar);
    assert_eq!(row.mood, owner.mood);
    assert_eq!(row.login, owner.gh_login);
    // Widened: the row struct has the new table's `Int8`, not the model's `i32`.
    let visits: i64 = row.visits;
    assert_eq!(visits, i64::from(owner.visits));
}

fn assert_profile_list(owner: &read_new::Profile, row: &read_new::ProfileList) {
    let read_new::ProfileList {
        profile_id,
        tags,
        scores,
        amounts,
        docs,
        tokens,
        ips,
        nets,
        spans,
        blobs,
        fees,
        moods,
        alt_mood,
    } = row.clone();
    assert_eq!(profile_id, owner.id);
    assert_eq!(
        (tags, scores, amounts, docs, tokens, ips),
        (
            owner.tags.clone(),
            owner.scores.clone(),
            owner.amounts.clone(),
            owner.docs.clone(),
            owner.tokens.clone(),
            owner.ips.clone()
        )
    );
    assert_eq!(
        (nets, spans, blobs, fees, moods, alt_mood),
        (
            owner.nets.clone(),
            owner.spans.clone(),
            owner.blobs.clone(),
            owner.fees.clone(),
            owner.moods.clone(),
            owner.alt_mood
        )
    );
}

fn assert_event_time(owner: &read_new::Event, row: &read_new::EventTime) {
    let read_new::EventTime {
        event_id,
        born,
        wakes,
        seen,
        at,
        maybe_at,
        days,
        born_c,
        wakes_c,
        seen_c,
        at_c,
        ats_c,
    } = row.clone();
    assert_eq!(event_id, owner.id);
    assert_eq!(
        (born, wakes, seen, at, maybe_at, days),
        (
            owner.born,
            owner.wakes,
            owner.seen,
            owner.at,
            owner.maybe_at,
            owner.days.clone()
        )
    );
    assert_eq!(
        (born_c, wakes_c, seen_c, at_c, ats_c),
        (
            owner.born_c,
            owner.wakes_c,
            owner.seen_c,
            owner.at_c,
            owner.ats_c.clone()
        )
    );
}

#[test]
fn read_new_readers_return_every_type_as_the_model_holds_it() {
    let fixture = fixture("rt_read");
    let db = TestDb::new("rt_read");
    let mut conn = db.conn();
    apply_phases(&mut conn, &fixture, &["expand", "dual_write"]);

    use schema::full::{accounts, events, profiles};
    // Written as the application does until write_new: to the owner, which the triggers copy.
    let accounts_in = accounts();
    diesel::insert_into(accounts::table)
        .values(&accounts_in)
        .execute(&mut conn)
        .unwrap();
    let profiles_in = profiles();
    diesel::insert_into(profiles::table)
        .values(&profiles_in)
        .execute(&mut conn)
        .unwrap();
    let events_in = events();
    diesel::insert_into(events::table)
        .values(&events_in)
        .execute(&mut conn)
        .unwrap();

    for account in &accounts_in {
        let (owner, row) = read_new::Account::find_with_wallet(&mut conn, account.id)
            .unwrap()
            .unwrap();
        assert_eq!(&owner, account, "the owner reads back as written");
        assert_wallet(account, &row.expect("the trigger wrote the new row"));
    }
    let many = read_new::Wallet::find_for_many(&mut conn, &[1, 2, 3]).unwrap();
    assert_eq!(many.len(), 3);

    let owners: Vec<read_new::Profile> = profiles::table
        .order(profiles::id)
        .select(read_new::Profile::as_select())
        .load(&mut conn)
        .unwrap();
    assert_eq!(owners, profiles_in);
    for (owner, row) in read_new::Profile::with_profile_list(&mut conn, owners).unwrap() {
        assert_profile_list(&owner, &row.expect("the trigger wrote the new row"));
    }

    for event in &events_in {
        let row = read_new::EventTime::find_for(&mut conn, event.id)
            .unwrap()
            .unwrap();
        assert_event_time(event, &row);
    }
    let (owner, _) = read_new::Event::find_with_event_time(&mut conn, 2)
        .unwrap()
        .unwrap();
    assert_eq!(owner, events_in[1]);
}

#[test]
fn write_new_writers_round_trip_every_type_through_the_new_tables() {
    let fixture = fixture("rt_write");
    let db = TestDb::new("rt_write");
    let mut conn = db.conn();
    // The tables are empty, so write_new's verify gate passes without a backfill.
    apply_phases(&mut conn, &fixture, &["expand", "dual_write", "write_new"]);

    use schema::shimmed::{accounts, events, profiles};
    for account in accounts() {
        let row = write_new::Wallet {
            account_id: account.id,
            balance: account.balance.clone(),
            ratio: account.ratio.clone(),
            settings: account.settings.clone(),
            payload: account.payload.clone(),
            token: account.token,
            last_ip: account.last_ip,
            network: account.network,
            session_length: account.session_length,
            fee: account.fee,
            avatar: account.avatar.clone(),
            mood: account.mood,
            login: account.gh_login.clone(),
            visits: i64::from(account.visits),
        };
        let (owner, saved) = write_new::Account::save_with_wallet(
            &mut conn,
            |conn| {
                diesel::insert_into(accounts::table)
                    .values(write_new::Account {
                        id: account.id,
                        name: account.name.clone(),
                    })
                    .returning(write_new::Account::as_returning())
                    .get_result(conn)
            },
            |_| Some(row.clone()),
        )
        .unwrap();
        assert_eq!(saved.as_ref(), Some(&row), "save returns what it wrote");
        assert_eq!(
            write_new::Wallet::find_for(&mut conn, owner.id).unwrap(),
            Some(row.clone())
        );
        // Saving again replaces the row, through the same types.
        let changed = write_new::Wallet {
            settings: json!({"changed": [row.settings.clone()]}),
            ..row.clone()
        };
        assert_eq!(changed.save(&mut conn).unwrap(), changed);
    }
    // The reverse sync copied every value back into the old columns, which the previous
    // release still reads: compared in SQL, so nothing here depends on a Rust type.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM accounts a JOIN wallets w ON w.account_id = a.id \
             WHERE (a.balance, a.settings, a.token, a.network, a.session_length, a.fee, a.mood, a.gh_login) \
                 = (w.balance, w.settings, w.token, w.network, w.session_length, w.fee, w.mood, w.login) \
               AND a.ratio IS NOT DISTINCT FROM w.ratio AND a.payload::text IS NOT DISTINCT FROM w.payload::text \
               AND a.last_ip IS NOT DISTINCT FROM w.last_ip AND a.avatar IS NOT DISTINCT FROM w.avatar"
        ),
        3
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM wallets WHERE ratio = 'NaN' AND balance = -9999999999.99"
        ),
        1
    );

    for profile in profiles() {
        let row = write_new::ProfileList {
            profile_id: profile.id,
            tags: profile.tags.clone(),
            scores: profile.scores.clone(),
            amounts: profile.amounts.clone(),
            docs: profile.docs.clone(),
            tokens: profile.tokens.clone(),
            ips: profile.ips.clone(),
            nets: profile.nets.clone(),
            spans: profile.spans.clone(),
            blobs: profile.blobs.clone(),
            fees: profile.fees.clone(),
            moods: profile.moods.clone(),
            alt_mood: profile.alt_mood,
        };
        let (_, saved) = write_new::Profile::save_with_profile_list(
            &mut conn,
            |conn| {
                diesel::insert_into(profiles::table)
                    .values(write_new::Profile {
                        id: profile.id,
                        name: profile.name.clone(),
                    })
                    .returning(write_new::Profile::as_returning())
                    .get_result(conn)
            },
            |_| Some(row.clone()),
        )
        .unwrap();
        assert_eq!(saved, Some(row.clone()));
        assert_eq!(
            write_new::ProfileList::find_for(&mut conn, profile.id).unwrap(),
            Some(row)
        );
    }
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM profiles p JOIN profile_lists l ON l.profile_id = p.id \
             WHERE (p.tags, p.amounts, p.docs::text[], p.tokens, p.ips, p.nets, p.spans, p.blobs, p.fees, p.moods) \
                 = (l.tags, l.amounts, l.docs::text[], l.tokens, l.ips, l.nets, l.spans, l.blobs, l.fees, l.moods) \
               AND p.scores IS NOT DISTINCT FROM l.scores AND p.alt_mood IS NOT DISTINCT FROM l.alt_mood"
        ),
        3
    );

    for event in events() {
        let row = write_new::EventTime {
            event_id: event.id,
            born: event.born,
            wakes: event.wakes,
            seen: event.seen,
            at: event.at,
            maybe_at: event.maybe_at,
            days: event.days.clone(),
            born_c: event.born_c,
            wakes_c: event.wakes_c,
            seen_c: event.seen_c,
            at_c: event.at_c,
            ats_c: event.ats_c.clone(),
        };
        diesel::insert_into(events::table)
            .values(write_new::Event {
                id: event.id,
                name: event.name.clone(),
            })
            .execute(&mut conn)
            .unwrap();
        assert_eq!(row.save(&mut conn).unwrap(), row);
        let (owner, read) = write_new::Event::find_with_event_time(&mut conn, event.id)
            .unwrap()
            .unwrap();
        assert_eq!(owner.name, event.name);
        assert_eq!(read, Some(row));
    }
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM events e JOIN event_times t ON t.event_id = e.id \
             WHERE (e.born, e.wakes, e.seen, e.at, e.days, e.born_c, e.wakes_c, e.seen_c, e.at_c, e.ats_c) \
                 = (t.born, t.wakes, t.seen, t.at, t.days, t.born_c, t.wakes_c, t.seen_c, t.at_c, t.ats_c) \
               AND e.maybe_at IS NOT DISTINCT FROM t.maybe_at"
        ),
        2
    );

    // Deleting through the generated writer empties the old columns too.
    assert_eq!(write_new::EventTime::delete_for(&mut conn, 1).unwrap(), 1);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM events WHERE id = 1 AND born IS NULL"
        ),
        1
    );
}
