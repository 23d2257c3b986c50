//! The application's Diesel models and the writes it makes. `Car` carries the zmig attribute that
//! widens `cars.id` to bigint, and `trips.car_id` with it, by swapping the table behind a view.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zmig_runtime::Zmig;

use crate::schema::{cars, trips};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, AsChangeset, Zmig)]
#[diesel(table_name = cars)]
#[diesel(check_for_backend(diesel::pg::Pg))]
#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = "prepare")]
pub struct Car {
    pub id: i32,
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

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = trips)]
#[diesel(belongs_to(Car))]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Trip {
    pub id: i64,
    pub car_id: i32,
    pub km: i32,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = trips)]
pub struct NewTrip {
    pub car_id: i32,
    pub km: i32,
}

/// Inserts a car; the database fills `id`, `mileage` and `created_at`.
pub fn create_car(conn: &mut PgConnection, car: &NewCar) -> QueryResult<Car> {
    diesel::insert_into(cars::table)
        .values(car)
        .returning(Car::as_returning())
        .get_result(conn)
}

pub fn find_car(conn: &mut PgConnection, id: i32) -> QueryResult<Option<Car>> {
    cars::table
        .find(id)
        .select(Car::as_select())
        .first(conn)
        .optional()
}

/// Records a trip and adds its distance to the car's mileage, both or neither.
/// `NotFound` when there is no such car.
pub fn drive(conn: &mut PgConnection, car_id: i32, km: i32) -> QueryResult<Trip> {
    conn.transaction(|conn| {
        // The car first: its row lock orders concurrent trips of one car.
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

pub fn rename_car(conn: &mut PgConnection, id: i32, make: &str, model: &str) -> QueryResult<Car> {
    diesel::update(cars::table.find(id))
        .set((cars::make.eq(make), cars::model.eq(model)))
        .returning(Car::as_returning())
        .get_result(conn)
}

/// Writes every column of `car` back (a full-struct update, as forms and admin tools do).
pub fn save_car(conn: &mut PgConnection, car: &Car) -> QueryResult<Car> {
    diesel::update(car)
        .set(car)
        .returning(Car::as_returning())
        .get_result(conn)
}

/// Deletes a car and its trips; the number of cars deleted (0 or 1).
pub fn delete_car(conn: &mut PgConnection, id: i32) -> QueryResult<usize> {
    conn.transaction(|conn| {
        diesel::delete(trips::table.filter(trips::car_id.eq(id))).execute(conn)?;
        diesel::delete(cars::table.find(id)).execute(conn)
    })
}

pub fn trips_of(conn: &mut PgConnection, car: &Car) -> QueryResult<Vec<Trip>> {
    Trip::belonging_to(car)
        .select(Trip::as_select())
        .order(trips::id)
        .load(conn)
}
