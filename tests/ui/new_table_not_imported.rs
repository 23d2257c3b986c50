//! `table_name = users` names the owner's `table!` as imported here; the new table must be in
//! scope too, and when it is not the error is zmig's, naming the import.

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
            gh_login -> Varchar,
        }
    }

    diesel::table! {
        oauth_github (user_id) {
            user_id -> Int8,
            gh_login -> Varchar,
        }
    }
}

mod models {
    use crate::schema::users;
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Queryable, Selectable, Zmig)]
    #[diesel(table_name = users)]
    #[zmig(extract(into = oauth_github, key = user_id, columns(gh_login)), stage = "read_new")]
    pub struct User {
        pub id: i64,
        pub name: String,
        pub gh_login: String,
    }
}

fn main() {}
