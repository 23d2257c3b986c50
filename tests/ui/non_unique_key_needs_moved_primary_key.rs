//! `unique_key = false` needs a moved column as the new table's primary key, which says which
//! row is the owner's own: not the default identity key, not the owner key itself.

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
#[zmig(extract(into = addresses, unique_key = false, columns(street1, city)), stage = "expand")]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
    city: String,
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(
    extract(into = logins, key = caterer_id, primary_key = caterer_id, unique_key = false, columns(gh_login)),
    stage = "expand"
)]
struct CatererLogin {
    id: i32,
    gh_login: String,
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = caterers)]
#[zmig(
    extract(into = logins, primary_key = login, unique_key = false, columns(gh_login as login), sync = app),
    stage = "expand"
)]
struct CatererAppLogin {
    id: i32,
    gh_login: String,
}

fn main() {}
