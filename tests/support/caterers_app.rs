//! The caterers application at each stage of its extract, as the tests compile it: `schema.rs`
//! once expand ran (`full`) and as the ignored-column shim leaves it from write_new on
//! (`shimmed`), and the `Caterer` model with the Rust side `#[derive(Zmig)]` generates at
//! read_new, at write_new, and at dual_write with `sync = app`.

/// `schema.rs` as print-schema writes it once expand ran, and as zmig's shim leaves it from
/// write_new on (the moved columns gone from `caterers`).
pub mod schema {
    pub mod full {
        diesel::table! {
            addresses (id) {
                id -> Int8,
                caterer_id -> Int4,
                street1 -> Varchar,
                street2 -> Nullable<Varchar>,
                city -> Varchar,
                state -> Varchar,
                zip -> Varchar,
                created_at -> Timestamp,
                updated_at -> Timestamp,
            }
        }

        diesel::table! {
            caterers (id) {
                id -> Int4,
                name -> Varchar,
                email -> Varchar,
                phone -> Varchar,
                street1 -> Varchar,
                street2 -> Nullable<Varchar>,
                city -> Varchar,
                zip -> Varchar,
                state -> Varchar,
                created_at -> Timestamp,
                updated_at -> Timestamp,
            }
        }

        diesel::joinable!(addresses -> caterers (caterer_id));
        diesel::allow_tables_to_appear_in_same_query!(addresses, caterers,);
    }

    pub mod shimmed {
        diesel::table! {
            addresses (id) {
                id -> Int8,
                caterer_id -> Int4,
                street1 -> Varchar,
                street2 -> Nullable<Varchar>,
                city -> Varchar,
                state -> Varchar,
                zip -> Varchar,
                created_at -> Timestamp,
                updated_at -> Timestamp,
            }
        }

        diesel::table! {
            caterers (id) {
                id -> Int4,
                name -> Varchar,
                email -> Varchar,
                phone -> Varchar,
                created_at -> Timestamp,
                updated_at -> Timestamp,
            }
        }

        diesel::joinable!(addresses -> caterers (caterer_id));
        diesel::allow_tables_to_appear_in_same_query!(addresses, caterers,);
    }
}

pub mod read_new {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;
    use zmig_runtime::Zmig;
    // Async services import diesel-async's `RunQueryDsl` beside Diesel's: the generated code
    // must compile with both in scope (`tests/extract_async.rs` runs these models' `_async`
    // twins).
    #[allow(unused_imports)]
    use zmig_runtime::diesel_async::RunQueryDsl;

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::caterers_app::schema::full::caterers)]
    #[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = "read_new")]
    pub struct Caterer {
        pub id: i32,
        pub name: String,
        pub email: String,
        pub phone: String,
        pub street1: String,
        pub street2: Option<String>,
        pub city: String,
        pub zip: String,
        pub state: String,
        pub created_at: NaiveDateTime,
        pub updated_at: NaiveDateTime,
    }
}

pub mod write_new {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;
    use zmig_runtime::Zmig;
    // Async services import diesel-async's `RunQueryDsl` beside Diesel's: the generated code
    // must compile with both in scope (`tests/extract_async.rs` runs these models' `_async`
    // twins).
    #[allow(unused_imports)]
    use zmig_runtime::diesel_async::RunQueryDsl;

    /// At write_new the owner model has lost its address fields.
    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::caterers_app::schema::shimmed::caterers)]
    #[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = "write_new")]
    pub struct Caterer {
        pub id: i32,
        pub name: String,
        pub email: String,
        pub phone: String,
        pub created_at: NaiveDateTime,
        pub updated_at: NaiveDateTime,
    }

    #[derive(Insertable)]
    #[diesel(table_name = crate::caterers_app::schema::shimmed::caterers)]
    pub struct NewCaterer<'a> {
        pub name: &'a str,
        pub email: &'a str,
        pub phone: &'a str,
    }
}

pub mod app {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::caterers_app::schema::full::caterers)]
    #[zmig(
        extract(into = addresses, columns(street1, street2, city, state, zip), sync = app),
        stage = "dual_write"
    )]
    pub struct Caterer {
        pub id: i32,
        pub name: String,
        pub email: String,
        pub phone: String,
        pub street1: String,
        pub street2: Option<String>,
        pub city: String,
        pub zip: String,
        pub state: String,
        pub created_at: NaiveDateTime,
        pub updated_at: NaiveDateTime,
    }
}

/// An address as the concurrent writers' ledgers record it (tests/extract_end_to_end.rs and its
/// async twin, tests/extract_async.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub street1: String,
    pub street2: Option<String>,
    pub city: String,
    pub state: String,
    pub zip: String,
}

impl Addr {
    pub fn random(rng: &mut impl rand::Rng, tag: &str) -> Addr {
        Addr {
            street1: format!("{} {tag} St", rng.gen_range(1..999)),
            street2: rng
                .gen_bool(0.3)
                .then(|| format!("Suite {}", rng.gen_range(1..99))),
            city: ["Boston", "Austin", "Denver", "Reno"][rng.gen_range(0..4)].to_owned(),
            state: ["MA", "TX", "CO", "NV"][rng.gen_range(0..4)].to_owned(),
            zip: format!("{:05}", rng.gen_range(0..99_999)),
        }
    }

    pub fn into_row(self, caterer_id: i32) -> write_new::Address {
        write_new::Address {
            caterer_id,
            street1: self.street1,
            street2: self.street2,
            city: self.city,
            state: self.state,
            zip: self.zip,
        }
    }
}
