//! The cars application's one release for the whole swap: the same code as
//! [`crate::cars_next`], with `schema.rs` saying `Int8` for `cars.id` and `trips.car_id` and the
//! models holding them as [`zmig_runtime::wide::WideInt`], which reads the `integer` they are
//! until finalize and the `bigint` they are after it. Built once, it runs from before prepare to
//! after finalize.

crate::cars_release!(zmig_runtime::wide::WideInt);
