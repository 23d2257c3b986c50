//! A swap's disk: the move's estimate of what it will add at its peak, its refusal when the free
//! space cannot hold that (nothing moved, the figure and the way out in the message), and the
//! fill of a referencing table reusing the space its rewritten rows free, so the table ends near
//! its size before instead of about twice it; the move giving the old table's pages back as it
//! goes, so the three tables peak near one copy, and the new table's primary key index built
//! last (again after a killed build). Sizes, not times.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::disk::{DiskCheck, FreeDisk};
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy};
use zmig_runtime::swap::{self, move_rows, MoveOptions};
use zmig_tests::{cars_swap_prepared, count, migrate_to, FixtureCrate, TestDb, UpTo};

const SWAP: &str = "cars_bigint";
const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

fn prepared(label: &str, cars: i64, trips: i64) -> (TestDb, FixtureCrate) {
    cars_swap_prepared(label, CARS_SWAP, cars, trips)
}

fn options(disk_check: DiskCheck) -> MoveOptions {
    MoveOptions {
        progress: ProgressMode::Silent,
        yield_to_traffic: false,
        disk_check,
        ..MoveOptions::default()
    }
}

fn bytes(conn: &mut PgConnection, table: &str) -> i64 {
    count(
        conn,
        &format!("SELECT pg_total_relation_size('{table}')::bigint AS n"),
    )
}

#[test]
fn the_move_refuses_when_free_disk_cannot_hold_its_estimate_and_moves_nothing() {
    let (db, _fixture) = prepared("swap_disk_refuse", 2_000, 2_000);
    let mut conn = db.conn();
    let status = swap::status(&mut conn, SWAP).unwrap().unwrap();
    // Every row still in old: the new table will take about what old takes, and trips grows.
    assert!(
        status.disk.needed_bytes >= bytes(&mut conn, "cars_old"),
        "{status:?}"
    );
    assert!(status.disk.swapped_bytes >= bytes(&mut conn, "cars_old"));
    assert_eq!(status.disk.referencing_bytes, bytes(&mut conn, "trips"));

    let error = move_rows(&db.url, SWAP, &options(DiskCheck::Assume(1_000)))
        .expect_err("1,000 bytes free cannot hold the move");
    // Typed, for a caller that handles it rather than reporting it.
    assert!(
        matches!(
            error,
            zmig_runtime::Error::NotReady {
                reason: zmig_runtime::NotReady::DiskShort,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        "needs about",
        "more disk at its peak",
        "nothing was moved",
        "--assume-free-disk",
        "--skip-disk-check",
    ] {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM cars_new"), 0);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM cars_old"),
        2_000
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS NOT NULL"
        ),
        0
    );

    // Told there is room, or not to check, it moves.
    let plenty = (status.disk.needed_bytes as u64) * 2;
    let report = move_rows(&db.url, SWAP, &options(DiskCheck::Assume(plenty))).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(report.moved, 2_000);
    let done = swap::status(&mut conn, SWAP).unwrap().unwrap();
    assert_eq!(done.disk.needed_bytes, 0, "{done:?}");
    assert!(
        done.disk
            .summary()
            .contains("the move needs about 0 B more"),
        "{}",
        done.disk.summary()
    );
    // This server is local and the tests connect as a superuser: free space is measured, or
    // the summary says why not.
    match &done.disk.free {
        FreeDisk::Measured { bytes, .. } => assert!(*bytes > 0),
        FreeDisk::Unknown(why) => assert!(!why.is_empty()),
        FreeDisk::Assumed(_) => panic!("status assumes nothing"),
    }
}

#[test]
fn the_fill_reuses_the_space_it_frees_so_the_referencing_table_ends_near_its_size() {
    const ROWS: i64 = 100_000;
    let (db, _fixture) = prepared("swap_disk_fill", ROWS, ROWS);
    let mut conn = db.conn();
    let before = count(&mut conn, "SELECT pg_relation_size('trips') AS n");
    let key_before = count(&mut conn, "SELECT pg_relation_size('trips_pkey') AS n");
    // What an ALTER leaves: the rows rewritten compactly with the wider column.
    conn.batch_execute(
        "CREATE TABLE trips_altered AS SELECT id, car_id, km FROM trips;
         ALTER TABLE trips_altered ALTER COLUMN car_id TYPE bigint;",
    )
    .unwrap();
    let altered = count(&mut conn, "SELECT pg_relation_size('trips_altered') AS n");
    let options = options(DiskCheck::Skip);
    let report = move_rows(&db.url, SWAP, &options).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(report.refs_synced, ROWS, "{report:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS DISTINCT FROM car_id"
        ),
        0
    );
    // Every row was rewritten, 8 bytes wider: with no space reused the heap holds both versions
    // of every row, 2.2 times its size before; reused (VACUUM as it goes), 1.16 to 1.19 times
    // what an ALTER leaves, the free space spread below the last pages; those pages' rows then
    // moved into it, and the end given back: within a few pages of the ALTER's (1.003 to 1.005
    // alone, up to 1.03 beside the other tests; without the compaction this fails).
    let after = count(&mut conn, "SELECT pg_relation_size('trips') AS n");
    let ratio = after as f64 / altered as f64;
    println!("trips: {before} → {after} bytes; after an ALTER {altered} ({ratio:.3} of it)");
    assert!(
        ratio <= 1.06,
        "the heap of trips grew from {before} to {after} bytes, {ratio:.3} times the {altered} an ALTER leaves"
    );
    // Its other indexes, which took a second entry for most rows, were rebuilt after the fill:
    // the primary key is its size again (about twice without), and no copy of a rebuild is left.
    let key_after = count(&mut conn, "SELECT pg_relation_size('trips_pkey') AS n");
    assert!(
        key_after as f64 <= key_before as f64 * 1.15,
        "trips_pkey grew from {key_before} to {key_after} bytes"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 'trips'::regclass AND (NOT i.indisvalid OR c.relname ~ '_cc')"
        ),
        0
    );
}

#[test]
fn rows_a_vacuum_full_moved_behind_the_fill_are_still_filled() {
    let (db, _fixture) = prepared("swap_disk_sweep", 1_000, 10_000);
    let mut conn = db.conn();
    // Half the fill, slice by slice and page by page from the start; its new row versions land at
    // the end.
    let filled = count(&mut conn, "SELECT zmig_cars_bigint_sync_refs(5000) AS n");
    // It stops at the first page boundary past 5,000 rows.
    assert!((5_000..10_000).contains(&filled), "{filled}");
    // VACUUM FULL writes the live rows anew in the order it reads them: the rows not filled
    // yet, which were behind the fill's page, now fill the first pages, which it has passed.
    conn.batch_execute("VACUUM FULL trips").unwrap();
    assert!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS NULL
               AND ctid < format('(%s,0)', (SELECT min(after) FROM zmig_swap_state WHERE swap = 'cars_bigint' AND item LIKE 'ref:%/%' AND NOT finished))::tid"
        ) > 0,
        "no unfilled row moved behind the fill: the test no longer tests the sweep"
    );
    let report = move_rows(&db.url, SWAP, &options(DiskCheck::Skip)).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(report.refs_synced, 10_000 - filled, "{report:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM trips WHERE car_id_zmig IS DISTINCT FROM car_id"
        ),
        0
    );
    assert!(swap::verify(&mut conn, SWAP).unwrap().ok());
}

/// The move takes the highest keys first, so the old table empties from the end of its heap and
/// its VACUUMs give the pages back as it goes; the new table has only `zmig_key` while rows move
/// in, and its primary key index is built last, after the emptied old table's indexes were
/// rebuilt small. So the three tables never hold much more than one copy of the table and two of
/// its key's index, and at the end of the move the old table's files are a few pages.
#[test]
fn the_move_gives_the_old_tables_pages_back_and_builds_the_primary_key_last() {
    const ROWS: i64 = 200_000;
    let (db, _fixture) = prepared("swap_disk_peak", ROWS, 1_000);
    let mut conn = db.conn();
    let before = bytes(&mut conn, "cars_old");
    let key_index = count(&mut conn, "SELECT pg_relation_size('cars_pkey') AS n");

    // A session of its own samples the three tables' size until the move is over.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let mut conn = db.conn();
        std::thread::spawn(move || {
            let mut largest = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                largest = largest.max(count(
                    &mut conn,
                    "SELECT (pg_total_relation_size('cars_old') + pg_total_relation_size('cars_temp') \
                     + pg_total_relation_size('cars_new'))::bigint AS n",
                ));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            largest
        })
    };
    let options = MoveOptions {
        batch_size: 2_000,
        max_batch_size: 2_000,
        ..options(DiskCheck::Skip)
    };
    let report = move_rows(&db.url, SWAP, &options).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let largest = sampler.join().unwrap();
    assert!(report.finished, "{report:?}");

    // The old table's files went back: its heap and its indexes are a few pages.
    let old = bytes(&mut conn, "cars_old");
    assert!(old <= 128 * 1024, "cars_old still takes {old} bytes");
    // The new table's primary key index is built, valid, and compact (sorted, not split by
    // keys arriving highest first); zmig_key took them as appends, so it is compact too.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_index WHERE indexrelid = 'cars_new_pkey'::regclass AND indisvalid AND indisunique"
        ),
        1
    );
    for index in ["cars_new_pkey", "cars_new_zmig_key"] {
        let size = count(
            &mut conn,
            &format!("SELECT pg_relation_size('{index}') AS n"),
        );
        assert!(
            (size as f64) <= key_index as f64 * 1.15,
            "{index} takes {size} bytes, the original's primary key {key_index}"
        );
    }
    // The peak: one copy of the heap, the old primary key and zmig_key, and what was moved
    // since the last VACUUM (a twentieth). Moving in key order with the primary key built
    // beside it peaked at about 2.4 times.
    let ratio = largest as f64 / before as f64;
    assert!(
        ratio <= 1.45,
        "the three tables peaked at {largest} bytes, {ratio:.2} times the {before} before"
    );
    let end = count(
        &mut conn,
        "SELECT (pg_total_relation_size('cars_old') + pg_total_relation_size('cars_temp') \
         + pg_total_relation_size('cars_new'))::bigint AS n",
    );
    assert!(
        (end as f64) <= before as f64 * 1.35,
        "the three tables take {end} bytes after the move, {before} before"
    );
    assert!(swap::verify(&mut conn, SWAP).unwrap().ok());
}

/// A build of the new table's primary key index that was killed leaves an invalid index under
/// its name: the next move drops it and builds it again, and finalize then makes it the
/// primary key.
#[test]
fn an_interrupted_primary_key_build_is_dropped_and_built_again() {
    let (db, fixture) = prepared("swap_disk_key_index", 3_000, 100);
    let mut conn = db.conn();
    let options = MoveOptions {
        batch_size: 500,
        max_batch_size: 500,
        ..options(DiskCheck::Skip)
    };
    // Moved, but the index not built yet: a concurrent build failing (here on a unique
    // expression every row shares) leaves an invalid index, as a killed one does.
    while count(&mut conn, "SELECT zmig_cars_bigint_move(1000) AS n") > 0 {}
    let failed =
        conn.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY cars_new_pkey ON cars_new ((1))");
    assert!(failed.is_err(), "the build was expected to fail");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_index WHERE indexrelid = 'cars_new_pkey'::regclass AND NOT indisvalid"
        ),
        1
    );
    let report = move_rows(&db.url, SWAP, &options).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_index i WHERE i.indexrelid = 'cars_new_pkey'::regclass \
             AND i.indisvalid AND i.indisunique AND pg_get_indexdef(i.indexrelid) LIKE '%(id)'"
        ),
        1
    );
    migrate_to(&db.url, &fixture, "cars_bigint_finalize");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_constraint WHERE conrelid = 'cars'::regclass AND contype = 'p' AND conname = 'cars_pkey'"
        ),
        1
    );
}

/// Applies the fixture's migrations up to `phase` with zmig's runner on a connection whose
/// session `options` are given (as `PGOPTIONS` would), returning the runner's error.
fn migrate_with_options(
    url: &str,
    options: &str,
    fixture: &FixtureCrate,
    phase: &str,
) -> Result<(), String> {
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{url}{separator}options={}",
        options.replace(' ', "%20").replace('=', "%3D")
    );
    let mut conn = PgConnection::establish(&url).unwrap();
    let source = UpTo {
        inner: fixture.migrations(),
        phase: phase.to_owned(),
    };
    run_pending_with_retry(&mut conn, source, &RetryPolicy::default(), |_, _, _| {})
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Before prepare changes anything, it checks what the move will need at its peak against the
/// free space the session has (`zmig.free_disk_bytes`, which zmig's runner measures, or as
/// given): too little, and it refuses with both figures and the ways out, the table untouched;
/// skipped on request; measured by the runner, it goes through.
#[test]
fn prepare_refuses_when_the_free_disk_cannot_hold_the_move_and_changes_nothing() {
    let label = "swap_disk_prepare";
    let fixture = FixtureCrate::cars(label, CARS_SWAP);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    migrate_to(&db.url, &fixture, "create_tables");
    let mut conn = db.conn();
    conn.batch_execute(
        "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, 20000) AS g;
         INSERT INTO trips (car_id, km) SELECT 1 + g % 20000, 10 FROM generate_series(1, 20000) AS g;",
    )
    .unwrap();
    conn.batch_execute("VACUUM ANALYZE cars, trips").unwrap();

    let refused = migrate_with_options(
        &db.url,
        "-c zmig.free_disk_bytes=100000",
        &fixture,
        "cars_bigint_prepare",
    )
    .unwrap_err();
    for needle in [
        "zmig swap cars_bigint: the move will need about",
        "more disk at its peak, and 98 kB is free; nothing was changed",
        "zmig.free_disk_bytes=BYTES",
        "zmig.skip_disk_check=on",
    ] {
        assert!(refused.contains(needle), "{needle:?} not in: {refused}");
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pg_class WHERE relname IN ('cars_old', 'cars_new', 'cars_temp') OR (relname = 'cars' AND relkind <> 'r')"),
        0,
        "the refused prepare changed the tables"
    );

    migrate_with_options(
        &db.url,
        "-c zmig.free_disk_bytes=100000 -c zmig.skip_disk_check=on",
        &fixture,
        "cars_bigint_prepare",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'v'"
        ),
        1
    );
}

/// zmig's runner measures the free space (this machine's server shows the test's superuser its
/// data directory) and gives it to the session: an estimate that fits goes through.
#[test]
fn free_disk_is_measured_for_the_database_and_a_prepare_that_fits_goes_through() {
    let (db, _fixture) = prepared("swap_disk_runner", 2_000, 100);
    let mut conn = db.conn();
    let free = zmig_runtime::disk::free_for_database(&mut conn, DiskCheck::Measure).unwrap();
    assert!(
        matches!(free, FreeDisk::Measured { bytes, .. } if bytes > 0),
        "{free:?}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'v'"
        ),
        1
    );
}
