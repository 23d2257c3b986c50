//! Without `name = ...` a migration is named `<owner table>_<new table>`; that name obeys the
//! same 40-character rule as a written one, or PostgreSQL would cut the names formed from it.

use diesel::prelude::*;
use zmig_runtime::Zmig;

diesel::table! {
    customer_subscription_billing_periods (id) {
        id -> Int4,
        amount -> Int8,
        note -> Nullable<Text>,
    }
}

#[derive(Queryable, Selectable, Zmig)]
#[diesel(table_name = customer_subscription_billing_periods)]
#[zmig(
    extract(into = billing_period_adjustments, columns(amount, note)),
    stage = "expand"
)]
struct BillingPeriod {
    id: i32,
    amount: i64,
    note: Option<String>,
}

fn main() {}
