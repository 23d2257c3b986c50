//! The cars example: a Diesel application whose `cars.id` is an `integer` running out of
//! values, and the zmig attribute that widens it (and `trips.car_id`, which references it) to
//! `bigint` by swapping the table behind a view, without downtime.

pub mod models;
pub mod schema;

/// The example's migrations, for tests and for services that embed them.
pub const MIGRATIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
