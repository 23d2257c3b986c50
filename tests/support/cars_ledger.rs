//! The cars example's rows in the shape the swap tests' writers keep their ledgers: each car's
//! columns and the distances of its trips, so that the database and the ledgers compare row by
//! row (`tests/swap_end_to_end.rs`, `tests/swap_revert.rs`).

use std::collections::BTreeMap;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

/// A car as the ledgers record it: its columns and the distances of its trips, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarLog {
    pub make: String,
    pub model: String,
    pub year: i32,
    pub mileage: i32,
    pub trips: Vec<i32>,
}

/// Cars by id.
pub type CarsLedger = BTreeMap<i64, CarLog>;

#[derive(QueryableByName)]
struct CarRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    make: String,
    #[diesel(sql_type = Text)]
    model: String,
    #[diesel(sql_type = Integer)]
    year: i32,
    #[diesel(sql_type = Integer)]
    mileage: i32,
}

#[derive(QueryableByName)]
struct TripRow {
    #[diesel(sql_type = BigInt)]
    car_id: i64,
    #[diesel(sql_type = Integer)]
    km: i32,
}

/// The database in the ledgers' shape: every car (through the view during a swap, `id` read
/// as `bigint` whatever its type), with its trips; a trip of a missing car fails the test.
pub fn cars_in_database(conn: &mut PgConnection) -> CarsLedger {
    let mut cars: CarsLedger =
        diesel::sql_query("SELECT id::bigint AS id, make, model, year, mileage FROM cars")
            .load::<CarRow>(conn)
            .unwrap()
            .into_iter()
            .map(|r| {
                let car = CarLog {
                    make: r.make,
                    model: r.model,
                    year: r.year,
                    mileage: r.mileage,
                    trips: vec![],
                };
                (r.id, car)
            })
            .collect();
    let trips = diesel::sql_query("SELECT car_id::bigint AS car_id, km FROM trips")
        .load::<TripRow>(conn)
        .unwrap();
    for trip in trips {
        cars.get_mut(&trip.car_id)
            .unwrap_or_else(|| panic!("a trip of car {} which does not exist", trip.car_id))
            .trips
            .push(trip.km);
    }
    for car in cars.values_mut() {
        car.trips.sort_unstable();
    }
    cars
}
