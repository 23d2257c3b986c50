//! Without an expression a column may only widen, and only to the types a widening ends at:
//! anything else is refused by the attribute, with the form that takes an expression.

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
#[zmig(swap(columns(km: Int2)), stage = "prepare")]
struct Trip {
    id: i64,
    car_id: i32,
    km: i32,
}

fn main() {}
