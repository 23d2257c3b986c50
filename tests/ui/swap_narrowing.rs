//! Without an expression a column may only widen: `trips.id` is `Int8` in `table!`, so `Int4` is
//! refused, at the type as written.

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
#[diesel(table_name = trips)]
#[zmig(swap(columns(km: Int8, id: Int4)), stage = "prepare")]
struct Trip {
    id: i64,
    car_id: i32,
    km: i32,
}

fn main() {}
