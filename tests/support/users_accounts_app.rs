//! The users application of the non-unique owner key fixture ([`crate::fixtures::users_accounts`])
//! at write_new, as the tests compile it: `schema.rs` as the shim leaves it (the moved columns
//! gone from `users`; columns the tests do not use left out) and the `User` model with the Rust
//! side `#[derive(Zmig)]` generates for a user with any number of accounts.

pub mod schema {
    diesel::table! {
        accounts (account_id) {
            user_id -> Int8,
            account_id -> Int8,
            name -> Text,
            plan -> Nullable<Text>,
        }
    }

    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }

    diesel::joinable!(accounts -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(accounts, users,);
}

pub mod write_new {
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::users_accounts_app::schema::users)]
    #[zmig(
        extract(into = accounts, key = user_id, primary_key = account_id, unique_key = false,
                columns(account_id: Int8, account_name as name, account_plan as plan)),
        stage = "write_new"
    )]
    pub struct User {
        pub id: i64,
        pub name: String,
    }
}
