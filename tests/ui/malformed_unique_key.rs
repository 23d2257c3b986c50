//! `unique_key` takes `true` or `false`, nothing else.

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
#[zmig(
    extract(into = logins, primary_key = gh_login, unique_key = "no", columns(gh_login)),
    stage = "expand"
)]
struct Caterer {
    id: i32,
    gh_login: String,
}

fn main() {}
