//! `#[derive(Zmig)]` goes on the model struct only.

use zmig_runtime::Zmig;

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

#[derive(Zmig)]
#[zmig(extract(into = addresses, columns(street1, city)), stage = "expand")]
enum Caterer {
    Local,
    National,
}

fn main() {}
