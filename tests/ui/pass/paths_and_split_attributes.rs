//! The forms a real codebase uses: `table_name` as a path into a schema module, a custom Diesel
//! primary key, raw identifiers, a quoted new table, and `#[zmig]` split over two attributes.

use diesel::prelude::*;
use zmig_runtime::{Migration, Stage, Zmig, ZmigModel};

mod schema {
    diesel::table! {
        caterers (code) {
            code -> Varchar,
            name -> Varchar,
            street1 -> Varchar,
            r#type -> Varchar,
            city -> Varchar,
        }
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = crate::schema::caterers, primary_key(code))]
#[zmig(extract(into = "Addresses", columns(street1, r#type as kind, city)))]
#[zmig(stage = "backfill")]
#[allow(dead_code)]
struct Caterer {
    code: String,
    name: String,
    street1: String,
    r#type: String,
    city: String,
}

fn main() {
    let Migration::Extract(info) = Caterer::MIGRATION else {
        panic!("an extract");
    };
    assert_eq!(info.name, "caterers_addresses");
    assert_eq!(info.owner_table, "caterers");
    assert_eq!(info.new_table, "Addresses");
    assert_eq!(
        info.columns,
        &[("street1", "street1"), ("type", "kind"), ("city", "city")]
    );
    assert_eq!(info.stage, Stage::Backfill);
}
