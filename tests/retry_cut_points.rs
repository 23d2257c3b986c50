//! Every generated migration that commits more than once can be run again from every point at
//! which it can stop (issue 11, item 5). A migration outside a transaction (`run_in_transaction =
//! false`) runs its transactions one after another; a crash, a kill or a lock timeout in
//! transaction k+1 leaves the first k committed and diesel's record of the migration unwritten,
//! so the runner (diesel's or zmig's) runs the whole file again. For each such file of both
//! strategies, up and down, and each k: the first k transactions are committed as the file
//! says, then the migration is applied through diesel's harness; it must succeed and leave
//! exactly the database an uninterrupted run leaves (catalog and rows).

use std::fs;

use diesel::connection::SimpleConnection;
use diesel::migration::Migration;
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::swap::move_rows;
use zmig_runtime::verify::verify;
use zmig_tests::{fixtures, server_url, FixtureCrate, TestDb};

/// The transactions of a migration file run outside one: its text cut after each `COMMIT;`.
fn transactions(sql: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    for line in sql.lines() {
        parts.last_mut().unwrap().push_str(line);
        parts.last_mut().unwrap().push('\n');
        if line.trim() == "COMMIT;" {
            parts.push(String::new());
        }
    }
    if parts.last().is_some_and(|p| p.trim().is_empty()) {
        parts.pop();
    }
    parts
}

/// What a migration leaves: every object zmig touches in `public` (columns with type, default,
/// nullability and identity; relations' privileges; sequences with their type, position and
/// bound; constraints with their definition and whether validated; indexes; triggers
/// and whether enabled; functions with a digest of their body; views), zmig's bookkeeping rows,
/// and a digest of each table's rows.
fn state(conn: &mut PgConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let mut lines: Vec<String> = diesel::sql_query(
        "SELECT format('column %s.%s %s default %s not null %s identity %s', c.relname, a.attname,
                       format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull,
                       a.attidentity) AS line
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
         UNION ALL
         SELECT format('constraint %s on %s: %s validated %s', conname, conrelid::regclass, pg_get_constraintdef(oid), convalidated)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('trigger %s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled) FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
         UNION ALL
         SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc)) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
         UNION ALL
         SELECT format('relation %s kind %s', relname, relkind) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'S')
         UNION ALL
         SELECT format('privileges of %s: %s', relname, relacl) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'S') AND relacl IS NOT NULL
         UNION ALL
         SELECT format('sequence %s %s last %s max %s', sequencename, data_type, last_value, max_value)
         FROM pg_sequences WHERE schemaname = 'public'",
    )
    .load::<Line>(conn)
    .unwrap()
    .into_iter()
    .map(|l| l.line)
    .collect();
    let tables: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("relation "))
        .filter(|l| l.ends_with("kind r"))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    for table in tables {
        // Bookkeeping that records when or how often, not what: left out.
        if table.starts_with("zmig_backfill") || table == "zmig_verifications" {
            continue;
        }
        // Diesel's record of what ran, without when.
        let rows = if table == "__diesel_schema_migrations" {
            "(SELECT version FROM __diesel_schema_migrations)"
        } else {
            &format!("\"{table}\"")
        };
        let digest = diesel::sql_query(format!(
            "SELECT format('rows of {table}: %s %s', count(*), md5(string_agg(t::text, '|' ORDER BY t::text))) AS line FROM {rows} t"
        ))
        .get_result::<Line>(conn)
        .unwrap()
        .line;
        lines.push(digest);
    }
    lines.sort();
    lines
}

/// A copy of `db` (which must have no open connections), dropped with the returned value.
fn copy_of(db: &TestDb, label: &str) -> TestDb {
    let copy = TestDb::new(label);
    let mut admin = PgConnection::establish(&server_url()).unwrap();
    for sql in [
        format!("DROP DATABASE \"{}\"", copy.name),
        format!("CREATE DATABASE \"{}\" TEMPLATE \"{}\"", copy.name, db.name),
    ] {
        admin.batch_execute(&sql).unwrap();
    }
    copy
}

enum Direction {
    Up,
    Down,
}

/// For the migration named `*_{phase}` of `fixture`, in `direction`, from the state `base` (just
/// before it): each cut point, then a run through diesel's harness, ends as an uninterrupted
/// run does. Returns the number of cut points tried.
fn each_cut_point(
    fixture: &FixtureCrate,
    base: &TestDb,
    phase: &str,
    direction: Direction,
) -> usize {
    let migrations = fixture.migrations();
    let all = diesel::migration::MigrationSource::<Pg>::migrations(&migrations).unwrap();
    let migration = all
        .iter()
        .find(|m| m.name().to_string().ends_with(&format!("_{phase}")))
        .unwrap_or_else(|| panic!("no {phase}"));
    let folder = fixture.migrations_dir().join(migration.name().to_string());
    let file = match direction {
        Direction::Up => "up.sql",
        Direction::Down => "down.sql",
    };
    let sql = fs::read_to_string(folder.join(file)).unwrap();
    let parts = transactions(&sql);
    let apply = |conn: &mut PgConnection, m: &dyn Migration<Pg>| match direction {
        Direction::Up => conn.run_migration(m).map(|_| ()),
        Direction::Down => conn.revert_migration(m).map(|_| ()),
    };

    let whole = copy_of(base, "cut_whole");
    let expected = {
        let mut conn = whole.conn();
        apply(&mut conn, &**migration).unwrap_or_else(|e| panic!("{phase} {file}: {e}"));
        state(&mut conn)
    };
    // Sent as diesel sends it (one query), the file makes the server warn of nothing: the
    // COMMIT that ends each implicit transaction would say "there is no transaction in
    // progress" on the operator's screen (psql prints what diesel's runner does not show).
    let quiet = copy_of(base, "cut_quiet");
    let psql = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &quiet.url,
            "-c",
            &sql,
        ])
        .output()
        .expect("psql");
    let warnings = String::from_utf8_lossy(&psql.stderr).into_owned();
    assert!(
        psql.status.success() && !warnings.contains("WARNING"),
        "{phase} {file} through psql:\n{warnings}"
    );
    for k in 1..parts.len() {
        let cut = copy_of(base, "cut");
        let mut conn = cut.conn();
        let committed: String = parts[..k].concat();
        conn.batch_execute(&committed)
            .unwrap_or_else(|e| panic!("{phase} {file}: the first {k} transactions: {e}"));
        apply(&mut conn, &**migration).unwrap_or_else(|e| {
            panic!(
                "{phase} {file}, run again after its first {k} of {} transactions committed: {e}",
                parts.len()
            )
        });
        let after = state(&mut conn);
        let missing: Vec<_> = expected.iter().filter(|l| !after.contains(l)).collect();
        let extra: Vec<_> = after.iter().filter(|l| !expected.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{phase} {file}, run again after {k} transactions, differs from an uninterrupted run:\n\
             missing {missing:#?}\nextra {extra:#?}"
        );
    }
    parts.len() - 1
}

fn apply_through(conn: &mut PgConnection, fixture: &FixtureCrate, phase: &str) {
    loop {
        let pending = conn.pending_migrations(fixture.migrations()).unwrap();
        let Some(next) = pending.into_iter().next() else {
            panic!("no {phase}");
        };
        let name = next.name().to_string();
        conn.run_migration(&*next)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with(&format!("_{phase}")) {
            return;
        }
    }
}

fn silent() -> BackfillOptions {
    BackfillOptions {
        progress: ProgressMode::Silent,
        ..BackfillOptions::default()
    }
}

#[test]
fn every_cut_point_of_the_extracts_migrations_can_be_run_again() {
    let fixture = fixtures::caterers("cut_extract");
    fixture.generate(false).unwrap();
    let db = TestDb::new("cut_extract");
    let mut cuts = 0;
    {
        let mut conn = db.conn();
        apply_through(&mut conn, &fixture, "tables");
        conn.batch_execute(
            "INSERT INTO caterers (name, email, phone, street1, street2, city, zip, state)
             SELECT 'c' || g, g || '@x', '1', g || ' Main St', CASE WHEN g % 3 = 0 THEN 'Apt ' || g END, 'Boston', '02110', 'MA'
             FROM generate_series(1, 500) g",
        )
        .unwrap();
        apply_through(&mut conn, &fixture, "dual_write");
        backfill(&db.url, "caterers_addresses", &silent()).unwrap();
        assert!(verify(&mut conn, "caterers_addresses").unwrap().ok());
    }
    // write_new up, from the state before it.
    cuts += each_cut_point(&fixture, &db, "write_new", Direction::Up);
    {
        let mut conn = db.conn();
        apply_through(&mut conn, &fixture, "write_new");
        // The new release's writes, so reverting has values to carry back.
        conn.batch_execute("UPDATE addresses SET city = 'Cambridge' WHERE caterer_id % 5 = 0")
            .unwrap();
    }
    cuts += each_cut_point(&fixture, &db, "write_new", Direction::Down);
    {
        let mut conn = db.conn();
        apply_through(&mut conn, &fixture, "contract");
    }
    cuts += each_cut_point(&fixture, &db, "contract", Direction::Down);
    assert!(
        cuts >= 4,
        "{cuts} cut points: the files no longer commit more than once?"
    );
}

const CARS_SWAP: &str =
    "#[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"finalize\")]";

#[test]
fn every_cut_point_of_the_swaps_migrations_can_be_run_again() {
    swap_cut_points("cut_swap", CARS_SWAP, "", "");
}

/// The same with the key an identity column, to which a role may insert: prepare's down takes
/// back the sequence grant prepare made and finalize makes the new column an identity again,
/// each in the transaction that can be cut (the state compared holds identities, privileges and
/// sequences).
#[test]
fn every_cut_point_of_the_swaps_migrations_of_an_identity_key_can_be_run_again() {
    swap_cut_points(
        "cut_swap_identity",
        CARS_SWAP,
        "",
        "ALTER TABLE cars ALTER COLUMN id DROP DEFAULT;
         DROP SEQUENCE cars_id_seq;
         ALTER TABLE cars ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME cars_id_seq);
         GRANT INSERT ON cars TO PUBLIC;",
    );
}

/// The same with a unique constraint besides the primary key, which the swap keeps with claims:
/// prepare's down and finalize drop them, and finalize gives the constraint its name back.
#[test]
fn every_cut_point_of_the_swaps_migrations_of_a_table_with_a_unique_constraint_can_be_run_again() {
    swap_cut_points(
        "cut_swap_unique",
        "#[zmig(swap(columns(id: Int8), references(trips.car_id), unique(make), name = cars_bigint), stage = \"finalize\")]",
        "\nALTER TABLE cars ADD CONSTRAINT cars_make_key UNIQUE (make);\n",
        "",
    );
}

/// Cuts prepare's down (after part of the rows moved and some inserted since) and finalize at
/// each commit, on the cars example with the swap `attribute`, `more_sql` at the end of its
/// first migration and `setup` applied to its tables first.
fn swap_cut_points(label: &str, attribute: &str, more_sql: &str, setup: &str) {
    let fixture = FixtureCrate::cars_with(label, attribute, more_sql);
    fixture.generate(false).unwrap();
    let db = TestDb::new(label);
    let mut cuts = 0;
    {
        let mut conn = db.conn();
        apply_through(&mut conn, &fixture, "tables");
        if !setup.is_empty() {
            conn.batch_execute(setup).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO cars (make, model, year) SELECT 'make ' || g, 'model', 2000 FROM generate_series(1, 500) g;
             INSERT INTO trips (car_id, km) SELECT 1 + g % 500, 10 FROM generate_series(1, 800) g;",
        )
        .unwrap();
        apply_through(&mut conn, &fixture, "prepare");
        // Part of the rows moved, some inserted since: prepare's down has both to take back.
        conn.batch_execute(
            "INSERT INTO cars (make, model, year) SELECT 'late ' || g, 'model', 2024 FROM generate_series(1, 50) g;",
        )
        .unwrap();
    }
    cuts += each_cut_point(&fixture, &db, "prepare", Direction::Down);
    move_rows(&db.url, "cars_bigint", &silent()).unwrap();
    cuts += each_cut_point(&fixture, &db, "finalize", Direction::Up);
    assert!(
        cuts >= 2,
        "{cuts} cut points: the files no longer commit more than once?"
    );
}
