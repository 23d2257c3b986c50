//! The cars application's next release, the one that ships with the swap's finalize: its
//! `schema.rs` says what `diesel print-schema` prints once the keys are `bigint`, and its models
//! read them as `i64`. Otherwise the same code as `examples/cars`.

/// The release's code with `$key` the Rust type of `cars.id` and `trips.car_id` (both `Int8`
/// in its `schema.rs`): `i64` here, `WideInt` in [`crate::cars_wide`].
#[macro_export]
macro_rules! cars_release {
    ($key:ty) => {
        pub mod schema {
            diesel::table! {
                cars (id) {
                    id -> Int8,
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
                    km -> Int4,
                    car_id -> Int8,
                }
            }

            diesel::joinable!(trips -> cars (car_id));
            diesel::allow_tables_to_appear_in_same_query!(cars, trips);
        }

        use chrono::{DateTime, Utc};
        use diesel::pg::PgConnection;
        use diesel::prelude::*;

        use self::schema::{cars, trips};

        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, AsChangeset)]
        #[diesel(table_name = cars)]
        #[diesel(check_for_backend(diesel::pg::Pg))]
        pub struct Car {
            pub id: $key,
            pub make: String,
            pub model: String,
            pub year: i32,
            pub mileage: i32,
            pub created_at: DateTime<Utc>,
        }

        #[derive(Debug, Clone, Insertable)]
        #[diesel(table_name = cars)]
        pub struct NewCar<'a> {
            pub make: &'a str,
            pub model: &'a str,
            pub year: i32,
        }

        #[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
        #[diesel(table_name = trips)]
        #[diesel(check_for_backend(diesel::pg::Pg))]
        pub struct Trip {
            pub id: $key,
            pub car_id: $key,
            pub km: i32,
        }

        #[derive(Debug, Clone, Insertable)]
        #[diesel(table_name = trips)]
        pub struct NewTrip {
            pub car_id: $key,
            pub km: i32,
        }

        pub fn create_car(conn: &mut PgConnection, car: &NewCar) -> QueryResult<Car> {
            diesel::insert_into(cars::table)
                .values(car)
                .returning(Car::as_returning())
                .get_result(conn)
        }

        pub fn find_car(conn: &mut PgConnection, id: $key) -> QueryResult<Option<Car>> {
            cars::table
                .find(id)
                .select(Car::as_select())
                .first(conn)
                .optional()
        }

        pub fn drive(conn: &mut PgConnection, car_id: $key, km: i32) -> QueryResult<Trip> {
            conn.transaction(|conn| {
                let updated = diesel::update(cars::table.find(car_id))
                    .set(cars::mileage.eq(cars::mileage + km))
                    .execute(conn)?;
                if updated == 0 {
                    return Err(diesel::result::Error::NotFound);
                }
                diesel::insert_into(trips::table)
                    .values(&NewTrip { car_id, km })
                    .returning(Trip::as_returning())
                    .get_result(conn)
            })
        }

        pub fn rename_car(conn: &mut PgConnection, id: $key, make: &str, model: &str) -> QueryResult<Car> {
            diesel::update(cars::table.find(id))
                .set((cars::make.eq(make), cars::model.eq(model)))
                .returning(Car::as_returning())
                .get_result(conn)
        }

        pub fn save_car(conn: &mut PgConnection, car: &Car) -> QueryResult<Car> {
            diesel::update(car)
                .set(car)
                .returning(Car::as_returning())
                .get_result(conn)
        }

        pub fn delete_car(conn: &mut PgConnection, id: $key) -> QueryResult<usize> {
            conn.transaction(|conn| {
                diesel::delete(trips::table.filter(trips::car_id.eq(id))).execute(conn)?;
                diesel::delete(cars::table.find(id)).execute(conn)
            })
        }
    };
}

cars_release!(i64);
