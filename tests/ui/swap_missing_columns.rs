//! `swap` without `columns(...)` is refused on `swap`.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    cars (id) {
        id -> Int4,
        make -> Text,
        model -> Text,
        year -> Int4,
        mileage -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
    }
}

diesel::joinable!(trips -> cars (car_id));
diesel::allow_tables_to_appear_in_same_query!(cars, trips);

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = cars)]
#[zmig(swap(references(trips.car_id), name = cars_bigint), stage = "prepare")]
struct Car {
    id: i32,
    make: String,
    model: String,
}

fn main() {}
