//! The cars example's swap: the key widens to bigint and the column that references it with it.

use diesel::prelude::*;
use zmig_runtime::{Migration, Stage, Zmig, ZmigModel};

mod schema {
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
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = crate::schema::cars)]
#[zmig(
    swap(
        columns(id: Int8, mileage: Int2 = "least(mileage, 32767)::smallint"),
        references(trips.car_id),
        name = cars_bigint
    ),
    stage = "prepare"
)]
#[allow(dead_code)]
struct Car {
    id: i32,
    make: String,
    model: String,
    year: i32,
    mileage: i32,
    created_at: chrono::DateTime<chrono::Utc>,
}

fn main() {
    let Migration::Swap(info) = Car::MIGRATION else {
        panic!("a swap");
    };
    assert_eq!(info.name, "cars_bigint");
    assert_eq!(info.table, "cars");
    assert_eq!(info.columns, &[("id", "Int8"), ("mileage", "Int2")]);
    assert_eq!(info.stage, Stage::Prepare);
}
