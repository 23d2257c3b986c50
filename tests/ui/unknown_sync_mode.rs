//! `sync` is `trigger` or `app`.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    caterers (id) {
        id -> Int4,
        name -> Varchar,
        street1 -> Varchar,
        city -> Varchar,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(extract(into = addresses, columns(street1, city), sync = application), stage = "expand")]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
    city: String,
}

fn main() {}
