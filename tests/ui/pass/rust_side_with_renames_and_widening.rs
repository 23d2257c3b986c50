//! At read_new the row struct takes its field names and types from the new table: renamed
//! columns under their new names, widened ones with their wider type, under `model = …`.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    users (id) {
        id -> Int8,
        name -> Text,
        gh_login -> Varchar,
        gh_followers -> Int4,
        gh_token -> Nullable<Text>,
    }
}

diesel::table! {
    github_accounts (login) {
        login -> Varchar,
        user_id -> Int8,
        followers -> Int8,
        token -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(github_accounts, users);

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = users)]
#[zmig(
    extract(
        into = github_accounts,
        columns(gh_login as login, gh_followers as followers: Int8, gh_token as token),
        primary_key = login,
        model = GithubAccount
    ),
    stage = "write_new"
)]
#[allow(dead_code)]
struct User {
    id: i64,
    name: String,
}

fn main() {
    let account = GithubAccount { user_id: 7_i64, login: "octo".to_owned(), followers: 1_i64 << 40, token: None };
    let _: fn(&mut diesel::pg::PgConnection, i64) -> QueryResult<Option<(User, Option<GithubAccount>)>> =
        User::find_with_github_account;
    let _ = (account.save_signature(), GithubAccount::delete_for);
}

trait SaveSignature {
    fn save_signature(&self) -> fn(&GithubAccount, &mut diesel::pg::PgConnection) -> QueryResult<GithubAccount>;
}

impl SaveSignature for GithubAccount {
    fn save_signature(&self) -> fn(&GithubAccount, &mut diesel::pg::PgConnection) -> QueryResult<GithubAccount> {
        GithubAccount::save
    }
}
