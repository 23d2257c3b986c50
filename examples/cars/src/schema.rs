// @generated automatically by Diesel CLI.

diesel::table! {
    cars (id) {
        id -> Int4,
        make -> Text,
        model -> Text,
        year -> Int4,
        mileage -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
    }
}

diesel::joinable!(trips -> cars (car_id));

diesel::allow_tables_to_appear_in_same_query!(cars, trips,);
