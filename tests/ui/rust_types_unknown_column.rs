//! `rust_types(...)` names moved columns by their name in the new table.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    users (id) {
        id -> Int8,
        gh_login -> Text,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = users)]
#[zmig(
    extract(into = github_accounts, columns(gh_login as login), rust_types(gh_login = String, id = i64)),
    stage = "backfill"
)]
struct User {
    id: i64,
    gh_login: String,
}

fn main() {}
