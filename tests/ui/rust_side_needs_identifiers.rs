//! From read_new on the derive generates Rust for the new table: its names must be identifiers.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    caterers (id) {
        id -> Int4,
        name -> Varchar,
        street1 -> Varchar,
        city -> Varchar,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(extract(into = "Postal Addresses", columns(street1, city)), stage = "read_new")]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
    city: String,
}

fn main() {}
