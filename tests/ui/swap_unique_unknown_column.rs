//! A column of `unique(...)` that is not in the table's `table!` is rustc's own error, on the
//! name as written (once, though two entries name it).

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

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = cars)]
#[zmig(swap(columns(id: Int8), unique(vin, (make, vin))), stage = "prepare")]
struct Car {
    id: i32,
    make: String,
    model: String,
}

fn main() {}
