//! The Rust type of each Diesel SQL type: what `#[derive(Zmig)]` falls back to for a field of
//! the new table's row struct when nothing better names it.
//!
//! # Where the row struct's field types come from
//!
//! For each moved column, the first of:
//!
//! 1. `rust_types(column = Type)` in the attribute, by the column's name in the new table:
//!    `extract(…, rust_types(balance = bigdecimal::BigDecimal, created_at = time::OffsetDateTime))`;
//! 2. the type of the model's own field for the column (a renamed column keeps its source
//!    field's type), unless the column is widened (`visits: Int8`): the model is the source of
//!    truth while it carries the fields, through read_new;
//! 3. `<SqlType as RustType>::Rust` of the column's type in the new table's `table!`.
//!
//! The owner key takes the type of the model's primary-key field. From write_new on the model
//! no longer carries the moved fields, so a column whose type is not the fallback's (a `time`
//! team's timestamps, a `Jsonb` column read as a struct of your own, a `Numeric` that may hold
//! `NaN`, which `BigDecimal` cannot) keeps its type through write_new and contract by naming it
//! in `rust_types`.
//!
//! # The fallback
//!
//! | SQL type | Rust type | feature of zmig-runtime |
//! |---|---|---|
//! | `Int2`, `Int4`, `Int8`, `Float4`, `Float8`, `Bool`, `Oid`, `CChar`, `PgLsn` | `i16`, `i32`, `i64`, `f32`, `f64`, `bool`, `u32`, `u8`, `u64` | |
//! | `Text`, `Varchar`, `Bpchar`, `Citext` | `String` | |
//! | `Binary` (`Bytea`) | `Vec<u8>` | |
//! | `Timestamp`, `Timestamptz`, `Date`, `Time` | `chrono::NaiveDateTime`, `chrono::DateTime<Utc>`, `chrono::NaiveDate`, `chrono::NaiveTime` | |
//! | `Interval`, `Money` | `diesel::pg::data_types::{PgInterval, PgMoney}` | |
//! | `MacAddr`, `MacAddr8` | `[u8; 6]`, `[u8; 8]` | |
//! | `Json`, `Jsonb` | `serde_json::Value` | `serde_json` |
//! | `Numeric` | `bigdecimal::BigDecimal` | `numeric` |
//! | `Uuid` | `uuid::Uuid` | `uuid` |
//! | `Inet`, `Cidr` | `ipnetwork::IpNetwork` | `network-address` |
//! | `Nullable<T>`, `Array<T>`, `Range<T>`, `Multirange<T>` | `Option<_>`, `Vec<_>`, `(Bound<_>, Bound<_>)`, `Vec<(Bound<_>, Bound<_>)>` | |
//!
//! The features are named as Diesel's and each turns Diesel's on. One SQL type has one
//! fallback, so date and time types fall back to chrono (which zmig-runtime's Diesel always
//! has); a team on the `time` crate gets its types from its model fields and `rust_types`.
//!
//! # Your own SQL types
//!
//! A custom SQL type (`diesel print-schema` writes one for each enum or domain it finds, in
//! `pub mod sql_types`) is your own type, so you may implement this trait for it, the orphan rule
//! notwithstanding:
//!
//! ```ignore
//! impl zmig_runtime::RustType for crate::schema::sql_types::Mood {
//!     type Rust = crate::models::Mood;
//! }
//! ```

use diesel::sql_types::*;

/// The Rust type that represents values of this SQL type.
#[diagnostic::on_unimplemented(
    message = "zmig does not know the Rust type of SQL type `{Self}` for the generated row struct",
    label = "this column's Rust type is not known",
    note = "help: name it in the attribute, `rust_types(column = MyType)`; or turn on zmig-runtime's feature for Diesel's type (`serde_json`, `numeric`, `uuid`, `network-address`); or, for a SQL type of your own, `impl zmig_runtime::RustType for crate::schema::sql_types::MyType {{ type Rust = …; }}`"
)]
pub trait RustType {
    type Rust;
}

macro_rules! rust_types {
    ($($sql:ty => $rust:ty),* $(,)?) => {
        $(impl RustType for $sql { type Rust = $rust; })*
    };
}

rust_types! {
    SmallInt => i16,
    Integer => i32,
    BigInt => i64,
    Float => f32,
    Double => f64,
    Text => String,
    Citext => String,
    CChar => u8,
    Bool => bool,
    Binary => Vec<u8>,
    Timestamp => chrono::NaiveDateTime,
    Timestamptz => chrono::DateTime<chrono::Utc>,
    Date => chrono::NaiveDate,
    Time => chrono::NaiveTime,
    Interval => diesel::pg::data_types::PgInterval,
    Money => diesel::pg::data_types::PgMoney,
    MacAddr => [u8; 6],
    MacAddr8 => [u8; 8],
    Oid => u32,
    PgLsn => u64,
}

#[cfg(feature = "serde_json")]
rust_types! {
    Json => serde_json::Value,
    Jsonb => serde_json::Value,
}

#[cfg(feature = "numeric")]
rust_types! {
    Numeric => bigdecimal::BigDecimal,
}

#[cfg(feature = "uuid")]
rust_types! {
    Uuid => uuid::Uuid,
}

#[cfg(feature = "network-address")]
rust_types! {
    Inet => ipnetwork::IpNetwork,
    Cidr => ipnetwork::IpNetwork,
}

impl<T: RustType + SqlType + SingleValue> RustType for Nullable<T> {
    type Rust = Option<T::Rust>;
}

impl<T: RustType + SqlType + SingleValue> RustType for Array<T> {
    type Rust = Vec<T::Rust>;
}

impl<T: RustType + SqlType + SingleValue> RustType for Range<T> {
    type Rust = (std::ops::Bound<T::Rust>, std::ops::Bound<T::Rust>);
}

impl<T: RustType + SqlType + SingleValue> RustType for Multirange<T> {
    type Rust = Vec<(std::ops::Bound<T::Rust>, std::ops::Bound<T::Rust>)>;
}
