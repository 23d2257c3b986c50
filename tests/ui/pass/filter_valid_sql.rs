//! Valid SQL of every shape the expression grammar has compiles: the derive checks only what
//! could not be one expression (PostgreSQL judges the rest at generate).

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    places (id) {
        id -> Int4,
        city -> Varchar,
        zip -> Varchar,
        opened_at -> Timestamp,
        created_at -> Timestamptz,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = places)]
#[zmig(
    extract(
        into = addresses,
        columns(city, zip),
        filter = "extract(year from opened_at) >= 2020 AND substring(zip from 1 for 2) = '12' \
                  AND trim(both ' ' from city) <> '' \
                  AND created_at > '2020-01-01'::timestamp with time zone"
    ),
    stage = "expand"
)]
#[allow(dead_code)]
struct Place {
    id: i32,
    city: String,
    zip: String,
}

fn main() {}
