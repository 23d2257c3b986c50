//! The fill of a swap's referencing column (`trips.car_id_zmig`), on a real database, against the
//! prepare migration zmig generates for the cars example:
//!
//! - Its pages are cut into slices, each with its state row: a second worker fills other slices
//!   while the first holds one (no wait), says -1 once only the other's slice is left, and the
//!   worker that finds every slice done closes the fill (the NOT NULL check validated, the
//!   reference finished) once the other committed.
//! - The trips' update trigger runs only for an update that changes `car_id` or of a row not
//!   filled yet: not for the fill's own updates, nor for other columns once filled.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use zmig_tests::{cars_swap_prepared, count};

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

fn fill(conn: &mut PgConnection, rows: i64) -> i64 {
    count(
        conn,
        &format!("SELECT zmig_cars_bigint_sync_refs({rows}) AS n"),
    )
}

fn unfilled(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS DISTINCT FROM car_id",
    )
}

fn slices(conn: &mut PgConnection, finished: bool) -> i64 {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM zmig_swap_state
             WHERE swap = 'cars_bigint' AND item LIKE 'ref:trips.car_id/%' AND finished = {finished}"
        ),
    )
}

fn reference_finished(conn: &mut PgConnection) -> bool {
    count(
        conn,
        "SELECT finished::int::bigint AS n FROM zmig_swap_state WHERE swap = 'cars_bigint' AND item = 'ref:trips.car_id'",
    ) == 1
}

#[test]
fn two_workers_fill_slices_side_by_side_and_the_last_closes_the_fill() {
    const TRIPS: i64 = 20_000;
    let (db, _fixture) = cars_swap_prepared("swap_fill_slices", CARS_SWAP, 1_000, TRIPS);
    let mut first = db.conn();
    let mut second = db.conn();
    // A worker waiting for another's slice would wait here; it must not.
    second.batch_execute("SET lock_timeout = '2s'").unwrap();
    assert_eq!(
        slices(&mut first, false),
        16,
        "every slice has pages to fill"
    );

    // The first worker's batch, not committed: it holds its slice.
    first.batch_execute("BEGIN").unwrap();
    let by_first = fill(&mut first, 100);
    assert!(by_first >= 100, "{by_first}");

    // The second fills every other slice, then says the rest is another worker's.
    let mut by_second = 0;
    let last = loop {
        let n = fill(&mut second, 5_000);
        if n <= 0 {
            break n;
        }
        by_second += n;
    };
    assert_eq!(last, -1, "only the first worker's slice is left");
    assert_eq!(slices(&mut second, false), 1);
    assert!(!reference_finished(&mut second));
    assert!(
        by_second > TRIPS * 14 / 16 && by_second < TRIPS - by_first,
        "{by_second}"
    );

    // Once the first commits, the second fills the rest of that slice and closes the fill.
    first.batch_execute("COMMIT").unwrap();
    let rest = fill(&mut second, 5_000);
    assert_eq!(by_first + by_second + rest, TRIPS);
    assert_eq!(fill(&mut second, 5_000), 0, "nothing left");
    assert_eq!(
        fill(&mut first, 5_000),
        0,
        "nothing left for the other either"
    );
    assert_eq!(unfilled(&mut first), 0);
    assert_eq!(slices(&mut first, false), 0);
    assert!(reference_finished(&mut first));
    assert_eq!(
        count(
            &mut first,
            "SELECT convalidated::int::bigint AS n FROM pg_constraint WHERE conname = 'zmig_cars_bigint_trips_car_id_nn'"
        ),
        1,
        "the closing call validated the NOT NULL check"
    );
}

/// Calls of the trips' trigger function in the transaction so far.
fn trigger_calls(conn: &mut PgConnection) -> i64 {
    count(
        conn,
        "SELECT coalesce(pg_stat_get_xact_function_calls('zmig_cars_bigint_ref_trips_car_id'::regproc), 0) AS n",
    )
}

#[test]
fn the_update_trigger_runs_only_where_the_shadow_column_needs_it() {
    let (db, _fixture) = cars_swap_prepared("swap_fill_trigger", CARS_SWAP, 100, 1_000);
    let mut conn = db.conn();
    conn.batch_execute("BEGIN; SET LOCAL track_functions = 'pl'")
        .unwrap();
    // Not filled yet: an update of another column fills it.
    conn.batch_execute("UPDATE trips SET km = km + 1 WHERE id = 1")
        .unwrap();
    assert_eq!(trigger_calls(&mut conn), 1);
    assert_eq!(
        count(&mut conn, "SELECT car_id_zmig AS n FROM trips WHERE id = 1"),
        count(
            &mut conn,
            "SELECT car_id::bigint AS n FROM trips WHERE id = 1"
        )
    );
    // The fill's own updates do not run it.
    let filled = fill(&mut conn, 100_000);
    assert_eq!(filled, 999);
    assert_eq!(trigger_calls(&mut conn), 1);
    assert_eq!(unfilled(&mut conn), 0);
    // Filled: other columns do not run it; a new car_id does, and is checked.
    conn.batch_execute("UPDATE trips SET km = km + 1 WHERE id <= 500")
        .unwrap();
    assert_eq!(trigger_calls(&mut conn), 1);
    conn.batch_execute("UPDATE trips SET car_id = 7 WHERE id = 2")
        .unwrap();
    assert_eq!(trigger_calls(&mut conn), 2);
    assert_eq!(
        count(&mut conn, "SELECT car_id_zmig AS n FROM trips WHERE id = 2"),
        7
    );
    conn.batch_execute("SAVEPOINT missing").unwrap();
    let error = conn
        .batch_execute("UPDATE trips SET car_id = 999999 WHERE id = 3")
        .unwrap_err()
        .to_string();
    assert!(error.contains("violates the foreign key"), "{error}");
    conn.batch_execute("ROLLBACK TO SAVEPOINT missing; COMMIT")
        .unwrap();
    assert_eq!(unfilled(&mut conn), 0);
}
