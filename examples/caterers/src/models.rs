//! The application's Diesel models. `Caterer` carries the zmig attribute that moves its address
//! columns into `addresses`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use zmig_runtime::Zmig;

use crate::schema::caterers;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Zmig)]
#[diesel(table_name = caterers)]
#[diesel(check_for_backend(diesel::pg::Pg))]
#[zmig(
    extract(into = addresses, columns(street1, street2, city, state, zip)),
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

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = caterers)]
pub struct NewCaterer<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub street1: &'a str,
    pub street2: Option<&'a str>,
    pub city: &'a str,
    pub zip: &'a str,
    pub state: &'a str,
}
