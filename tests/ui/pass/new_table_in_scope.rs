//! With a bare `table_name`, the new table is found however the owner's `table!` came into
//! scope: a glob import of the schema module, or an import naming both tables.

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            gh_login -> Text,
        }
    }

    diesel::table! {
        github_accounts (user_id) {
            user_id -> Int8,
            gh_login -> Text,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(users, github_accounts);
}

mod glob {
    use crate::schema::*;
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Queryable, Selectable, Zmig)]
    #[diesel(table_name = users)]
    #[zmig(extract(into = github_accounts, primary_key = user_id, columns(gh_login)), stage = "read_new")]
    pub struct User {
        pub id: i64,
        pub gh_login: String,
    }
}

mod named {
    use crate::schema::{github_accounts, users};
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Queryable, Selectable, Zmig)]
    #[diesel(table_name = users)]
    #[zmig(extract(into = github_accounts, primary_key = user_id, columns(gh_login)), stage = "write_new")]
    pub struct User {
        pub id: i64,
    }

    // The import is used by the generated code only; naming it here keeps `unused_imports` quiet
    // whatever the derive expands to.
    #[allow(dead_code)]
    fn uses() -> (github_accounts::table, users::table) {
        (github_accounts::table, users::table)
    }
}

fn main() {
    let _ = glob::GithubAccount {
        user_id: 1,
        gh_login: "octo".into(),
    };
    let _ = named::GithubAccount {
        user_id: 1,
        gh_login: "octo".into(),
    };
}
