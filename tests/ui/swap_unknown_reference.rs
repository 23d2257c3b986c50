//! A referencing table or column that is not in the schema module is rustc's own error, on the
//! name as written.

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
#[zmig(swap(columns(id: Int8), references(tripz.car_id, trips.carid)), stage = "prepare")]
struct Car {
    id: i32,
    make: String,
    model: String,
}

fn main() {}
