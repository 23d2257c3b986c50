//! A swap of a table whose key is an identity column (`GENERATED ALWAYS AS IDENTITY`, or `BY
//! DEFAULT`), as modern schemas declare keys (issue 12, "Also"): on the cars example's generated
//! migrations against a real PostgreSQL, with writers acting as an application role that has
//! table privileges only (no privilege on the identity sequence, which a table never needs).
//!
//! - Under writers inserting (ids from the identity), updating and deleting through prepare, the
//!   move and finalize, every row ends as the writers' ledger says, and the key is an identity
//!   again afterwards: same kind, same sequence name, `bigint` bounds, continuing past the last
//!   id given out; the application role needs no grant before or after.
//! - Reverting prepare after a partial move gives the original table its identity and its rows
//!   back, and revokes the sequence privilege prepare granted for the view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};
use zmig_runtime::backfill::ProgressMode;
use zmig_runtime::swap::{move_rows, MoveOptions};
use zmig_tests::{
    count, is_retryable, migrate_to, revert_last, writer_conn, FixtureCrate, Roles, TestDb,
};

const CARS: i64 = 3_000;

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

/// The cars example's tables with `cars.id` an identity column of `kind` (`ALWAYS` or `BY
/// DEFAULT`) named as the serial's sequence was, `CARS` cars with two trips each, and the role
/// `app` that may read and write both tables and nothing else.
fn seeded(label: &str, kind: &str, roles: &Roles) -> (TestDb, FixtureCrate) {
    let fixture = FixtureCrate::cars(label, CARS_SWAP);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let db = TestDb::new(label);
    migrate_to(&db.url, &fixture, "create_tables");
    let app = roles.get(0);
    db.conn()
        .batch_execute(&format!(
            "ALTER TABLE cars ALTER COLUMN id DROP DEFAULT;
             DROP SEQUENCE cars_id_seq;
             ALTER TABLE cars ALTER COLUMN id ADD GENERATED {kind} AS IDENTITY (SEQUENCE NAME cars_id_seq);
             INSERT INTO cars (make, model, year) SELECT 'make' || g, 'model', 2000 FROM generate_series(1, {CARS}) g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % {CARS}, 10 FROM generate_series(1, {}) g;
             GRANT SELECT, INSERT, UPDATE, DELETE ON cars, trips TO \"{app}\";
             GRANT USAGE ON SEQUENCE trips_id_seq TO \"{app}\";",
            CARS * 2
        ))
        .unwrap();
    (db, fixture)
}

/// A connection acting as `role`.
fn as_role(url: &str, role: &str) -> PgConnection {
    let mut conn = writer_conn(url);
    conn.batch_execute(&format!("SET ROLE \"{role}\"")).unwrap();
    conn
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Car {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    mileage: i64,
}

fn cars(conn: &mut PgConnection) -> BTreeMap<i64, i64> {
    diesel::sql_query("SELECT id::bigint AS id, mileage::bigint AS mileage FROM cars")
        .load::<Car>(conn)
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.mileage))
        .collect()
}

/// A statement run until it commits, past serialization failures and deadlocks; any other error
/// fails the test.
fn retrying<T>(mut op: impl FnMut() -> QueryResult<T>) -> T {
    for _ in 0..200 {
        match op() {
            Ok(value) => return value,
            Err(e) if is_retryable(&e).is_some() => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("retried 200 times");
}

/// One writer as the application role, until `done`, counting its inserts in `inserted`: inserts cars taking their id from the
/// identity (`RETURNING` it), raises the mileage of cars it inserted and of seeded ones, and
/// deletes some it inserted. Returns what each car it touched must hold (`None`: deleted) and
/// the seeded cars' increments.
fn write(
    url: &str,
    role: &str,
    n: i64,
    done: &AtomicBool,
    inserted: &AtomicU64,
) -> (BTreeMap<i64, Option<i64>>, BTreeMap<i64, i64>) {
    let mut conn = as_role(url, role);
    let mut mine: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    let mut seeded: BTreeMap<i64, i64> = BTreeMap::new();
    let mut round: i64 = 0;
    while !done.load(Ordering::SeqCst) {
        round += 1;
        let id: i64 = retrying(|| {
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            diesel::sql_query(
                "INSERT INTO cars (make, model, year, mileage) VALUES ('w', 'w', 2024, 0) RETURNING id::bigint AS id",
            )
            .get_result::<Id>(&mut conn)
            .map(|r| r.id)
        });
        mine.insert(id, Some(0));
        inserted.fetch_add(1, Ordering::SeqCst);
        let raise = |conn: &mut PgConnection, id: i64| {
            retrying(|| {
                diesel::sql_query(format!(
                    "UPDATE cars SET mileage = mileage + 1 WHERE id = {id}"
                ))
                .execute(conn)
            })
        };
        if raise(&mut conn, id) == 1 {
            mine.insert(id, Some(1));
        }
        let old = 1 + (round * 7 + n * 13) % CARS;
        assert_eq!(raise(&mut conn, old), 1, "seeded car {old}");
        *seeded.entry(old).or_default() += 1;
        if round % 3 == 0 {
            let deleted = retrying(|| {
                diesel::sql_query(format!("DELETE FROM cars WHERE id = {id}")).execute(&mut conn)
            });
            assert_eq!(deleted, 1, "car {id}");
            mine.insert(id, None);
        }
    }
    (mine, seeded)
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Identity {
    #[diesel(sql_type = Text)]
    column_type: String,
    #[diesel(sql_type = Text)]
    identity: String,
    #[diesel(sql_type = Text)]
    sequence: String,
    #[diesel(sql_type = Text)]
    sequence_type: String,
    #[diesel(sql_type = BigInt)]
    sequence_max: i64,
    #[diesel(sql_type = Bool)]
    app_has_usage: bool,
}

fn identity(conn: &mut PgConnection, app: &str) -> Identity {
    diesel::sql_query(format!(
        "SELECT format_type(a.atttypid, a.atttypmod) AS column_type, a.attidentity::text AS identity,
                pg_get_serial_sequence('cars', 'id') AS sequence,
                format_type(s.seqtypid, NULL) AS sequence_type, s.seqmax AS sequence_max,
                has_sequence_privilege('{app}', pg_get_serial_sequence('cars', 'id'), 'USAGE') AS app_has_usage
         FROM pg_attribute a, pg_sequence s
         WHERE a.attrelid = 'cars'::regclass AND a.attname = 'id'
           AND s.seqrelid = pg_get_serial_sequence('cars', 'id')::regclass"
    ))
    .get_result(conn)
    .unwrap()
}

#[test]
fn an_identity_key_is_swapped_under_writers_and_is_an_identity_again() {
    let roles = Roles::new("swap_identity", &["app"]);
    let app = roles.get(0).to_owned();
    let (db, fixture) = seeded("swap_identity", "ALWAYS", &roles);
    let mut conn = db.conn();
    let before = cars(&mut conn);
    assert_eq!(
        identity(&mut conn, &app),
        Identity {
            column_type: "integer".into(),
            identity: "a".into(),
            sequence: "public.cars_id_seq".into(),
            sequence_type: "integer".into(),
            sequence_max: i32::MAX.into(),
            app_has_usage: false,
        }
    );

    let done = AtomicBool::new(false);
    let inserted = AtomicU64::new(0);
    // Each step waits for the writers to have inserted more, so their writes span every phase.
    let more = |n: u64| {
        let from = inserted.load(Ordering::SeqCst);
        while inserted.load(Ordering::SeqCst) < from + n {
            thread::sleep(Duration::from_millis(5));
        }
    };
    let (mine, seeded_raises) = thread::scope(|scope| {
        let writers: Vec<_> = (0..3)
            .map(|n| {
                let (url, app, done, inserted) = (&db.url, &app, &done, &inserted);
                scope.spawn(move || write(url, app, n, done, inserted))
            })
            .collect();
        more(100);
        migrate_to(&db.url, &fixture, "cars_bigint_prepare");
        more(100);
        let options = MoveOptions {
            workers: 2,
            batch_size: 200,
            progress: ProgressMode::Silent,
            ..MoveOptions::default()
        };
        let report = move_rows(&db.url, "cars_bigint", &options).unwrap();
        assert!(report.finished, "{report:?}");
        more(100);
        migrate_to(&db.url, &fixture, "cars_bigint_finalize");
        more(100);
        done.store(true, Ordering::SeqCst);
        let mut mine = BTreeMap::new();
        let mut raises: BTreeMap<i64, i64> = BTreeMap::new();
        for writer in writers {
            let (m, r) = writer.join().unwrap();
            mine.extend(m);
            for (id, n) in r {
                *raises.entry(id).or_default() += n;
            }
        }
        (mine, raises)
    });

    // Every row as the writers left it.
    let mut expected = before.clone();
    for (id, n) in &seeded_raises {
        *expected.get_mut(id).unwrap() += n;
    }
    for (id, mileage) in &mine {
        assert!(!before.contains_key(id), "id {id} given out twice");
        match mileage {
            Some(m) => expected.insert(*id, *m),
            None => expected.remove(id),
        };
    }
    assert_eq!(cars(&mut conn), expected);

    // An identity again: the same kind and sequence, counting in bigint, and still no grant
    // needed by the application.
    assert_eq!(
        identity(&mut conn, &app),
        Identity {
            column_type: "bigint".into(),
            identity: "a".into(),
            sequence: "public.cars_id_seq".into(),
            sequence_type: "bigint".into(),
            sequence_max: i64::MAX,
            app_has_usage: false,
        }
    );
    let mut app_conn = as_role(&db.url, &app);
    let next = count(
        &mut app_conn,
        "INSERT INTO cars (make, model, year) VALUES ('after', 'after', 2025) RETURNING id AS n",
    );
    let highest = *mine.keys().chain(before.keys()).max().unwrap();
    assert!(next > highest, "the identity gave {next} after {highest}");
    let explicit = diesel::sql_query(
        "INSERT INTO cars (id, make, model, year) VALUES (99999999, 'x', 'x', 2025)",
    )
    .execute(&mut app_conn)
    .unwrap_err()
    .to_string();
    assert!(
        explicit.contains("cannot insert a non-DEFAULT value into column \"id\""),
        "{explicit}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'cars\\_%' AND relkind = 'S'"
        ),
        1,
        "one sequence: cars_id_seq"
    );
}

#[test]
fn reverting_prepare_gives_the_identity_and_every_row_back() {
    let roles = Roles::new("swap_identity_revert", &["app"]);
    let app = roles.get(0).to_owned();
    let (db, fixture) = seeded("swap_identity_revert", "BY DEFAULT", &roles);
    let mut conn = db.conn();
    migrate_to(&db.url, &fixture, "cars_bigint_prepare");

    // During the swap, the application role inserts through the view with the identity's next
    // values, and prepare gave it the USAGE that needs.
    let mut app_conn = as_role(&db.url, &app);
    let during: Vec<i64> = (0..5)
        .map(|_| {
            count(
                &mut app_conn,
                "INSERT INTO cars (make, model, year) VALUES ('during', 'during', 2025) RETURNING id::bigint AS n",
            )
        })
        .collect();
    assert!(
        during.windows(2).all(|w| w[1] > w[0]) && during[0] > CARS,
        "{during:?}"
    );
    assert_eq!(
        count(&mut conn, "SELECT zmig_cars_bigint_move(1000) AS n"),
        1000
    );
    let before = cars(&mut conn);
    assert_eq!(before.len() as i64, CARS + 5);

    revert_last(&mut conn, &fixture);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'cars' AND relkind = 'r'"
        ),
        1,
        "cars is a table again"
    );
    assert_eq!(cars(&mut conn), before);
    assert_eq!(
        identity(&mut conn, &app),
        Identity {
            column_type: "integer".into(),
            identity: "d".into(),
            sequence: "public.cars_id_seq".into(),
            sequence_type: "integer".into(),
            sequence_max: i32::MAX.into(),
            app_has_usage: false,
        }
    );
    let next = count(
        &mut app_conn,
        "INSERT INTO cars (make, model, year) VALUES ('after', 'after', 2025) RETURNING id::bigint AS n",
    );
    assert!(next > *during.last().unwrap(), "{next} after {during:?}");
}
