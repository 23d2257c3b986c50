//! Every part of the attribute at once: rename, widen, filter, key, primary_key and name.

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
        into = addresses,
        columns(street1, street2, gh_login as login, visits: Int8),
        key = caterer_id,
        primary_key = id,
        filter = "street1 IS NOT NULL",
        name = caterers_addresses
    ),
    stage = "dual_write"
)]
#[allow(dead_code)]
struct Caterer {
    id: i32,
    name: String,
    street1: String,
    street2: Option<String>,
    gh_login: String,
    visits: i32,
}

fn main() {
    let Migration::Extract(info) = Caterer::MIGRATION else {
        panic!("an extract");
    };
    assert_eq!(info.name, "caterers_addresses");
    assert_eq!(info.owner_table, "caterers");
    assert_eq!(info.new_table, "addresses");
    assert_eq!(
        info.columns,
        &[
            ("street1", "street1"),
            ("street2", "street2"),
            ("gh_login", "login"),
            ("visits", "visits")
        ]
    );
    assert_eq!(info.stage, Stage::DualWrite);
}
