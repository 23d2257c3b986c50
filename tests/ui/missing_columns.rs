//! `extract` without `columns(...)` is refused on `extract`.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    caterers (id) {
        id -> Int4,
        name -> Varchar,
        street1 -> Varchar,
        street2 -> Nullable<Varchar>,
        city -> Varchar,
        zip -> Varchar,
        state -> Varchar,
        gh_login -> Varchar,
        visits -> Int4,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(extract(into = addresses), stage = "expand")]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
    city: String,
}

fn main() {}
