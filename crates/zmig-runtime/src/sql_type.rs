//! The Rust type of each Diesel SQL type, so `#[derive(Zmig)]` can declare the fields of the
//! new table's row struct from the new table's own `table!` (the owner's columns may already be
//! gone from `schema.rs`).
//!
//! For a custom SQL type of your own (`pub mod sql_types { pub struct Mood; }`), implement it:
//! `impl zmig_runtime::RustType for crate::schema::sql_types::Mood { type Rust = Mood; }`.

use diesel::sql_types::*;

/// The Rust type that represents values of this SQL type.
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
    Bool => bool,
    Binary => Vec<u8>,
    Timestamp => chrono::NaiveDateTime,
    Timestamptz => chrono::DateTime<chrono::Utc>,
    Date => chrono::NaiveDate,
    Time => chrono::NaiveTime,
    Interval => diesel::pg::data_types::PgInterval,
    Money => diesel::pg::data_types::PgMoney,
    Oid => u32,
}

impl<T: RustType + SqlType + SingleValue> RustType for Nullable<T> {
    type Rust = Option<T::Rust>;
}

impl<T: RustType + SqlType + SingleValue> RustType for Array<T> {
    type Rust = Vec<T::Rust>;
}
