//! The extract variants the tests generate, apply and snapshot: the caterers example, and the
//! attribute forms it does not use (renames, widening, filters, primary-key choices, identifiers
//! that need quoting).

use crate::{model_source, FixtureCrate};

/// The caterers example's attribute, at the last stage so every phase is generated.
pub const CATERERS: &str =
    "#[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = \"contract\")]";

pub fn caterers(label: &str) -> FixtureCrate {
    FixtureCrate::caterers(label, CATERERS)
}

/// Caterers whose address lives in the new table only while `street2` is set and the state is
/// not `XX`; the new table is keyed by the owner key, renamed `owner_id`.
pub const CATERERS_FILTERED: &str = "#[zmig(extract(into = addresses, key = owner_id, primary_key = owner_id, \
     columns(street1, street2, city, state, zip), filter = \"street2 IS NOT NULL AND state <> 'XX'\", \
     name = caterers_addr_filtered), stage = \"contract\")]";

pub fn caterers_filtered(label: &str) -> FixtureCrate {
    FixtureCrate::caterers(label, CATERERS_FILTERED)
}

const USERS_SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    /// People who sign in.
    users (id) {
        id -> Int8,
        name -> Text,
        /// GitHub login, unique.
        #[max_length = 39]
        gh_login -> Varchar,
        gh_followers -> Int4,
        gh_token -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}
"#;

const USERS_CREATE: &str = "CREATE TABLE users (\n    id bigserial PRIMARY KEY,\n    name text NOT NULL,\n    gh_login varchar(39) NOT NULL UNIQUE,\n    gh_followers integer NOT NULL,\n    gh_token text,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n";

/// GitHub columns moved out of `users`, renamed, one widened, keyed by the login.
pub const USERS_GITHUB: &str = "#[zmig(extract(into = github_accounts, \
     columns(gh_login as login, gh_followers as followers: Int8, gh_token as token), primary_key = login), \
     stage = \"contract\")]";

pub fn users_github(label: &str) -> FixtureCrate {
    FixtureCrate::new(
        label,
        USERS_SCHEMA,
        &model_source("users", "User", USERS_GITHUB),
        USERS_CREATE,
        "DROP TABLE users;\n",
    )
}

const WEIRD_SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    #[sql_name = "Order Items"]
    order_items (id) {
        id -> Int4,
        #[sql_name = "SKU \"Code\""]
        sku_code -> Text,
        r#type -> Text,
        #[sql_name = "select"]
        select_ -> Nullable<Text>,
        #[sql_name = "Qty"]
        qty -> Int2,
    }
}
"#;

const WEIRD_CREATE: &str = "CREATE TABLE \"Order Items\" (\n    id serial PRIMARY KEY,\n    \"SKU \"\"Code\"\"\" text NOT NULL,\n    type text NOT NULL,\n    \"select\" text,\n    \"Qty\" smallint NOT NULL\n);\n";

/// Reserved words, mixed case, spaces and embedded quotes in every name zmig touches.
pub const WEIRD: &str = "#[zmig(extract(into = \"Item \\\"Details\\\"\", key = \"Order\", \
     columns(sku_code as \"SKU\", r#type, select_ as \"where\", qty as \"Quantity\": Int8), \
     filter = \"\\\"SKU \\\"\\\"Code\\\"\\\"\\\" <> '' AND type IS NOT NULL\"), stage = \"contract\")]";

pub fn weird(label: &str) -> FixtureCrate {
    FixtureCrate::new(
        label,
        WEIRD_SCHEMA,
        &model_source("order_items", "OrderItem", WEIRD),
        WEIRD_CREATE,
        "DROP TABLE \"Order Items\";\n",
    )
}

/// The caterers extract with `sync = app`: the generated wrappers sync instead of triggers.
pub const CATERERS_APP: &str =
    "#[zmig(extract(into = addresses, columns(street1, street2, city, state, zip), \
     sync = app, name = caterers_addresses_app), stage = \"contract\")]";

pub fn caterers_app(label: &str) -> FixtureCrate {
    FixtureCrate::caterers(label, CATERERS_APP)
}

const USERS_ACCOUNTS_SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    /// People who sign in.
    users (id) {
        id -> Int8,
        name -> Text,
        account_id -> Int4,
        account_name -> Text,
        account_plan -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}
"#;

const USERS_ACCOUNTS_CREATE: &str = "CREATE TABLE users (\n    id bigserial PRIMARY KEY,\n    name text NOT NULL,\n    account_id integer NOT NULL UNIQUE,\n    account_name text NOT NULL,\n    account_plan text,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\n";

/// A user's account moved out of `users` into `accounts`, keyed by the moved (and widened)
/// `account_id`; the owner key `user_id` is not unique, so the new release may give a user more
/// accounts. Each user's own account is the one whose `account_id` is the user's.
pub const USERS_ACCOUNTS: &str = "#[zmig(extract(into = accounts, key = user_id, \
     primary_key = account_id, unique_key = false, \
     columns(account_id: Int8, account_name as name, account_plan as plan)), \
     stage = \"contract\")]";

pub fn users_accounts(label: &str) -> FixtureCrate {
    FixtureCrate::new(
        label,
        USERS_ACCOUNTS_SCHEMA,
        &model_source("users", "User", USERS_ACCOUNTS),
        USERS_ACCOUNTS_CREATE,
        "DROP TABLE users;\n",
    )
}
