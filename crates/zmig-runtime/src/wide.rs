//! A Rust type for code that runs on both sides of a swap.
//!
//! A swap widens `cars.id` from `integer` to `bigint` at finalize. Diesel decodes a column by
//! its `table!` type: code built with `id -> Int4` fails on the first eight-byte value it reads
//! after finalize, and code built with `id -> Int8` and an `i64` field fails on the four-byte
//! values before it. [`WideInt`] is an `i64` that Diesel reads from either width and sends as a
//! `bigint`, which PostgreSQL also takes for an `integer` column (an assignment cast, or the
//! cross-type `=` its integer indexes serve). A release whose `schema.rs` says `Int8` for the
//! swapped columns and the columns referencing them, as `diesel print-schema` prints them after
//! finalize, and whose models hold them as `WideInt`, runs before prepare, during the swap and
//! after finalize: prepare, the move and finalize then ship with no code change.
//!
//! ```ignore
//! diesel::table! {
//!     cars (id) {
//!         id -> Int8,       // `integer` until finalize: WideInt reads both
//!         make -> Text,
//!     }
//! }
//!
//! #[derive(Queryable, Selectable, Identifiable, AsChangeset)]
//! #[diesel(table_name = cars)]
//! pub struct Car {
//!     pub id: WideInt,
//!     pub make: String,
//! }
//!
//! cars::table.find(WideInt(7)).first::<Car>(conn)?;
//! ```
//!
//! Why a type of its own and not a bare `i64` with a SQL type of zmig's: Rust's orphan rules let
//! no crate but Diesel bind an `i64` to a SQL type (Diesel's blanket `AsExpression` impl
//! reserves it), so the `i64` is wrapped; it converts both ways, compares with `i64` and prints
//! as one.
//!
//! A value that does not fit `integer` fails as it would in plain SQL while the column is still
//! `integer` (`integer out of range`): that is why it is being widened.

use std::fmt;
use std::io::Write;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::BigInt;

/// An `i64` that Diesel reads from an `integer` or a `bigint` column and writes as `bigint`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = BigInt)]
pub struct WideInt(pub i64);

impl FromSql<BigInt, Pg> for WideInt {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let bytes = value.as_bytes();
        match bytes.len() {
            4 => Ok(WideInt(i64::from(i32::from_be_bytes(bytes.try_into()?)))),
            8 => Ok(WideInt(i64::from_be_bytes(bytes.try_into()?))),
            n => Err(
                format!("WideInt reads an integer or a bigint (4 or 8 bytes), not {n} bytes")
                    .into(),
            ),
        }
    }
}

impl ToSql<BigInt, Pg> for WideInt {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&self.0.to_be_bytes())?;
        Ok(IsNull::No)
    }
}

impl From<i64> for WideInt {
    fn from(value: i64) -> Self {
        WideInt(value)
    }
}

impl From<i32> for WideInt {
    fn from(value: i32) -> Self {
        WideInt(i64::from(value))
    }
}

impl From<WideInt> for i64 {
    fn from(value: WideInt) -> Self {
        value.0
    }
}

impl PartialEq<i64> for WideInt {
    fn eq(&self, other: &i64) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for WideInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for WideInt {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(WideInt)
    }
}

/// Whether `error` is PostgreSQL refusing to run a statement this connection prepared before
/// the swap changed the type of a column it returns (`cached plan must not change result type`).
/// Diesel caches prepared statements per connection, so a release built on [`WideInt`] meets
/// this once per cached statement on the table, when prepare (or finalize) changes its type: on
/// it, call [`forget_prepared_statements`] and run the transaction again. (PostgreSQL words the
/// message in the session's `lc_messages`; this recognises the English one.)
pub fn is_stale_prepared_statement(error: &diesel::result::Error) -> bool {
    matches!(error, diesel::result::Error::DatabaseError(_, info)
        if info.message().contains("cached plan must not change result type"))
}

/// Drops the connection's cached prepared statements, so each query is prepared afresh for the
/// table as it is now (the statements' names are never reused).
pub fn forget_prepared_statements(conn: &mut diesel::pg::PgConnection) {
    use diesel::connection::{CacheSize, Connection};
    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    conn.set_prepared_statement_cache_size(CacheSize::Unbounded);
}
