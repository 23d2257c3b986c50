//! With a bare `table_name`, the new table is found however the owner's `table!` came into
//! scope: a glob import of the schema module, or an import naming both tables. The second model
//! is at write_new, so its row struct's types are `RustType`'s fallbacks, for a few more types.

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            gh_login -> Text,
            profile -> Nullable<Json>,
            active -> Tstzrange,
            mac -> Macaddr,
            email -> Citext,
        }
    }

    diesel::table! {
        github_accounts (user_id) {
            user_id -> Int8,
            gh_login -> Text,
            profile -> Nullable<Json>,
            active -> Tstzrange,
            mac -> Macaddr,
            email -> Citext,
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
    #[zmig(
        extract(into = github_accounts, primary_key = user_id, columns(gh_login, profile, active, mac, email)),
        stage = "write_new"
    )]
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
    // The fallbacks: Json → serde_json::Value, a range → its bounds, MacAddr → bytes, Citext → String.
    let _ = named::GithubAccount {
        user_id: 1,
        gh_login: "octo".into(),
        profile: Some(serde_json::json!({"plan": "pro"})),
        active: (
            std::ops::Bound::Included(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
            std::ops::Bound::Unbounded,
        ),
        mac: [0x00, 0x1b, 0x44, 0x11, 0x3a, 0xb7],
        email: String::from("octo@example.com"),
    };
}
