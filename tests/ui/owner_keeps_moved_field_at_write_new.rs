//! From write_new on the owner model stops reading and writing the old columns.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    caterers (id) {
        id -> Int4,
        name -> Varchar,
    }
}

diesel::table! {
    addresses (id) {
        id -> Int8,
        caterer_id -> Int4,
        street1 -> Varchar,
        city -> Varchar,
    }
}

diesel::allow_tables_to_appear_in_same_query!(addresses, caterers);

#[derive(Queryable, Zmig)]
#[zmig(extract(into = addresses, columns(street1, city)), stage = "write_new")]
#[diesel(table_name = caterers)]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
}

fn main() {}
