//! A non-unique owner key: the new table keyed by a moved column, an owner may have several rows.

use diesel::prelude::*;
use zmig_runtime::{Migration, Stage, Zmig, ZmigModel};

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
    extract(
        into = logins,
        key = caterer_id,
        primary_key = login,
        unique_key = false,
        columns(gh_login as login, visits: Int8)
    ),
    stage = "dual_write"
)]
#[allow(dead_code)]
struct Caterer {
    id: i32,
    gh_login: String,
    visits: i32,
}

fn main() {
    let Migration::Extract(info) = Caterer::MIGRATION else {
        panic!("an extract");
    };
    assert_eq!(info.new_table, "logins");
    assert_eq!(info.stage, Stage::DualWrite);
}
