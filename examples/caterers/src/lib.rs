//! The caterers example: a Diesel application whose `caterers` table keeps its address in five
//! columns, and the zmig attribute that moves them into `addresses` without downtime.

pub mod models;
pub mod schema;

/// The example's migrations, for tests and for services that embed them.
pub const MIGRATIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
