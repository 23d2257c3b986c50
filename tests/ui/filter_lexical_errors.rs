//! What cannot be one expression of the row is a compile error on the filter (or the swap's
//! computed column) itself: a comment, unbalanced parentheses or quotes, dollar quoting, a
//! prefixed string. Whether the expression depends on the row alone is PostgreSQL's to say, at
//! generate and as each migration runs.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    caterers (id) {
        id -> Int4,
        street1 -> Varchar,
        city -> Varchar,
    }
}

diesel::table! {
    kitchens (id) {
        id -> Int4,
        street1 -> Varchar,
        city -> Varchar,
    }
}

diesel::table! {
    shops (id) {
        id -> Int4,
        street1 -> Varchar,
        city -> Varchar,
    }
}

diesel::table! {
    cars (id) {
        id -> Int4,
        mileage -> Int4,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(
    extract(into = addresses, columns(street1, city), filter = "street1 IS NOT NULL -- AND city = 'x'"),
    stage = "expand"
)]
struct Caterer {
    id: i32,
    street1: String,
    city: String,
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = kitchens)]
#[zmig(
    extract(into = kitchen_addresses, columns(street1, city), filter = "(lower(city) = 'x'"),
    stage = "expand"
)]
struct Kitchen {
    id: i32,
    street1: String,
    city: String,
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = shops)]
#[zmig(
    extract(into = shop_addresses, columns(street1, city), filter = "city = $$x$$"),
    stage = "expand"
)]
struct Shop {
    id: i32,
    street1: String,
    city: String,
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = cars)]
#[zmig(
    swap(columns(id: Int8, mileage: Int8 = "mileage::bigint /* km */"), name = cars_bigint),
    stage = "prepare"
)]
struct Car {
    id: i32,
    mileage: i32,
}

fn main() {}
