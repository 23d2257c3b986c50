//! The one release that runs across a swap: `schema.rs` says `Int8` for the key and the column
//! referencing it before prepare, and the model holds the key as `WideInt`. The derive takes a
//! `table!` already at the new type (`generate` reads the old one from the database).

use diesel::prelude::*;
use zmig_runtime::wide::WideInt;
use zmig_runtime::{Migration, Stage, Zmig, ZmigModel};

mod schema {
    diesel::table! {
        cars (id) {
            id -> Int8,
            make -> Text,
        }
    }

    diesel::table! {
        trips (id) {
            id -> Int8,
            car_id -> Int8,
        }
    }

    diesel::joinable!(trips -> cars (car_id));
    diesel::allow_tables_to_appear_in_same_query!(cars, trips);
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = crate::schema::cars)]
#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = "prepare")]
#[allow(dead_code)]
struct Car {
    id: WideInt,
    make: String,
}

fn main() {
    let Migration::Swap(info) = Car::MIGRATION else {
        panic!("a swap");
    };
    assert_eq!(info.columns, &[("id", "Int8")]);
    assert_eq!(info.stage, Stage::Prepare);
}
