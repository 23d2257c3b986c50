// @generated automatically by Diesel CLI.

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
