//! The view shim: `schema.rs` through a swap with the real `diesel` CLI. From prepare until
//! finalize is generated the database holds a view where the table was, and print-schema prints
//! no views; `generate` keeps `diesel migration run` (which reprints schema.rs) writing exactly
//! the committed schema.rs: the swapped table's `table!` with its joinables and its place in
//! `allow_tables_to_appear_in_same_query!`, none of `<t>_old`, `<t>_new`, `<t>_temp`, the
//! shadow columns or zmig's bookkeeping tables (`zmig_*`, also those the move creates). The
//! member crate compiles at every stage. Once finalize is generated and run, schema.rs is what
//! print-schema prints natively (the new types) and diesel.toml is the team's again.
//!
//! Three shapes: the cars example; a team with a patch of its own, an `except_tables` filter of
//! its own, several tables referencing the swapped one (one nullable) and a foreign key of the
//! swapped table itself; and the one-release way, where schema.rs says `Int8` before prepare.

use std::fs;
use std::path::Path;

use zmig_tests::diesel_workspace::{diesel_on_path, Workspace};
use zmig_tests::run_cli;

const CARS: &str = "CREATE TABLE cars (
    id serial PRIMARY KEY,
    make text NOT NULL,
    model text NOT NULL,
    year integer NOT NULL,
    mileage integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trips (
    id bigserial PRIMARY KEY,
    car_id integer NOT NULL REFERENCES cars,
    km integer NOT NULL
);

CREATE INDEX trips_car_id_idx ON trips (car_id);
";

const CARS_DOWN: &str = "DROP TABLE trips;\nDROP TABLE cars;\n";

const DIESEL_TOML: &str = "# For documentation on how to configure this file,
# see https://diesel.rs/guides/configuring-diesel-cli

[print_schema]
file = \"crates/app/src/schema.rs\"
custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]

[migrations_directory]
dir = \"migrations\"
";

const SCHEMA: &str = "crates/app/src/schema.rs";

/// Code that needs `cars` in schema.rs, its joinable with trips, and both in one query.
const CARS_LIB: &str = "pub mod schema;

use diesel::prelude::*;

pub fn trips_with_cars(conn: &mut PgConnection) -> QueryResult<Vec<(String, i32)>> {
    use schema::{cars, trips};
    trips::table
        .inner_join(cars::table)
        .select((cars::make, trips::km))
        .load(conn)
}

pub fn car_count(conn: &mut PgConnection) -> QueryResult<i64> {
    schema::cars::table.count().get_result(conn)
}
";

fn model(table: &str, attribute: &str, stage: &str) -> String {
    format!(
        "use zmig_runtime::Zmig;

#[derive(Zmig)]
#[diesel(table_name = crate::schema::{table})]
#[zmig({attribute}, stage = \"{stage}\")]
pub struct Model {{
    pub id: i32,
}}
"
    )
}

const CARS_SWAP: &str = "swap(columns(id: Int8), references(trips.car_id), name = cars_bigint)";

/// A workspace with the member crate `app` (`lib`), its first migration run and schema.rs as
/// `diesel migration run` printed it.
fn set_up(label: &str, create: &str, down: &str, diesel_toml: &str, lib: &str) -> Workspace {
    let ws = Workspace::new(label);
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/zmig-runtime")
        .canonicalize()
        .unwrap();
    ws.write(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/app\"]\n",
    );
    ws.write(
        "Cargo.lock",
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap(),
    );
    ws.write(
        "crates/app/Cargo.toml",
        &format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
             diesel = {{ version = \"2.3\", default-features = false, features = [\"postgres\"] }}\n\
             zmig-runtime = {{ path = {runtime:?}, optional = true }}\n"
        ),
    );
    ws.write("crates/app/src/lib.rs", lib);
    ws.write("diesel.toml", diesel_toml);
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/up.sql",
        create,
    );
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/down.sql",
        down,
    );
    ws.diesel(&["migration", "run"]);
    ws
}

fn skip_without_diesel() -> bool {
    if diesel_on_path() {
        return false;
    }
    eprintln!(
        "skipped: `diesel` is not on PATH (cargo install diesel_cli --no-default-features --features postgres)"
    );
    true
}

fn generate(ws: &Workspace, stage: &str) {
    let (ok, report) = ws.zmig(&["generate"]);
    assert!(ok, "{stage}: {report}");
    let (ok, report) = ws.zmig(&["generate", "--check"]);
    assert!(ok, "{stage}: {report}");
}

/// No trace of the swap's own tables, its shadow columns or zmig's bookkeeping in `schema`.
fn assert_no_swap_objects(schema: &str, stage: &str) {
    for gone in ["cars_new", "cars_old", "cars_temp", "_zmig", "zmig_"] {
        assert!(!schema.contains(gone), "{stage}: {gone} in\n{schema}");
    }
}

/// Through prepare, the move and finalize, `schema.rs` stays `before` until finalize ran; the
/// crate compiles at every stage. Returns diesel.toml as generate left it during the swap.
fn through_the_swap(
    ws: &Workspace,
    table: &str,
    attribute: &str,
    before: &str,
    toml: &str,
) -> String {
    ws.write(
        "crates/app/src/models.rs",
        &model(table, attribute, "prepare"),
    );
    generate(ws, "prepare");
    assert_eq!(ws.read(SCHEMA), before, "generate leaves schema.rs alone");
    let during = ws.read("diesel.toml");

    // The prepare migration runs and diesel reprints schema.rs: the same, and the code compiles.
    ws.diesel(&["migration", "run"]);
    ws.check_compiles("prepare", SCHEMA);
    let after = ws.read(SCHEMA);
    assert_eq!(
        after, before,
        "prepare: diesel migration run rewrote schema.rs"
    );
    assert_eq!(ws.diesel(&["print-schema"]), before);
    assert_no_swap_objects(&after, "prepare");
    assert_ne!(during, toml, "diesel.toml names zmig's filter and patch");
    let (ok, report) = ws.zmig(&["generate", "--check"]);
    assert!(ok, "prepare after diesel migration run: {report}");

    // The move creates zmig's bookkeeping tables (the run log): print-schema leaves them out.
    ws.write("crates/app/src/models.rs", &model(table, attribute, "move"));
    generate(ws, "move");
    let (ok, report) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "backfill",
        "cars_bigint",
        "--database-url",
        &ws.db.url,
    ]);
    assert!(ok, "move: {report}");
    assert_eq!(ws.diesel(&["print-schema"]), before, "after the move");
    ws.diesel(&["migration", "run"]);
    assert_eq!(ws.read(SCHEMA), before);
    assert_eq!(ws.read("diesel.toml"), during);

    // Finalize generated: zmig's patch and filter go; once it ran print-schema prints the table.
    ws.write(
        "crates/app/src/models.rs",
        &model(table, attribute, "finalize"),
    );
    generate(ws, "finalize");
    assert_eq!(
        ws.read("diesel.toml"),
        toml,
        "finalize: diesel.toml as before"
    );
    assert!(!ws.path("crates/app/src/zmig-schema.patch").exists());
    ws.diesel(&["migration", "run"]);
    let finalized = ws.read(SCHEMA);
    assert_eq!(ws.diesel(&["print-schema"]), finalized);
    assert!(
        finalized.contains("    cars (id) {\n        id -> Int8,\n"),
        "{finalized}"
    );
    assert!(
        finalized.contains("        car_id -> Int8,\n"),
        "{finalized}"
    );
    assert!(!finalized.contains("cars_new") && !finalized.contains("car_id_zmig"));
    let (ok, report) = ws.zmig(&["generate", "--check"]);
    assert!(ok, "after finalize ran: {report}");
    during
}

#[test]
fn the_cars_swap_keeps_schema_rs_through_diesel_migration_run() {
    if skip_without_diesel() {
        return;
    }
    let ws = set_up("swap-shim-cars", CARS, CARS_DOWN, DIESEL_TOML, CARS_LIB);
    let before = ws.read(SCHEMA);
    assert!(
        before.contains("diesel::joinable!(trips -> cars (car_id));"),
        "{before}"
    );
    ws.check_compiles("before the swap", SCHEMA);

    let during = through_the_swap(&ws, "cars", CARS_SWAP, &before, DIESEL_TOML);
    assert!(
        during.contains(
            "# zmig's view shim (a swap, prepare until finalize) wrote this filter: [\"^zmig_\", \"^cars_old$\", \"^cars_new$\", \"^cars_temp$\"]\n\
             filter = { except_tables = [\"^zmig_\", \"^cars_old$\", \"^cars_new$\", \"^cars_temp$\"] }\n"
        ),
        "{during}"
    );
    assert!(
        during.contains("patch_file = \"crates/app/src/zmig-schema.patch\"\n"),
        "{during}"
    );
}

/// The one release before prepare: schema.rs says `Int8` for `cars.id` and `trips.car_id` (what
/// print-schema prints after finalize) while the database still has `integer`. `plan` and
/// `generate` take today's types from the database (prepare records `integer`), and schema.rs
/// keeps `Int8` through `diesel migration run` at every stage.
#[test]
fn the_one_release_way_plans_from_the_database_and_keeps_int8_in_schema_rs() {
    if skip_without_diesel() {
        return;
    }
    let ws = set_up("swap-shim-wide", CARS, CARS_DOWN, DIESEL_TOML, CARS_LIB);
    let native = ws.read(SCHEMA);
    let wide = native
        .replacen(
            "    cars (id) {\n        id -> Int4,",
            "    cars (id) {\n        id -> Int8,",
            1,
        )
        .replacen("        car_id -> Int4,", "        car_id -> Int8,", 1);
    assert_ne!(wide, native);
    ws.write(SCHEMA, &wide);
    ws.check_compiles("the one release", SCHEMA);

    ws.write(
        "crates/app/src/models.rs",
        &model("cars", CARS_SWAP, "prepare"),
    );
    let (ok, report) = ws.zmig(&["plan"]);
    assert!(ok, "{report}");
    assert!(
        report
            .contains("cars_bigint: swap cars behind a view (id → bigint, trips.car_id → bigint)"),
        "{report}"
    );

    let during = through_the_swap(&ws, "cars", CARS_SWAP, &wide, DIESEL_TOML);
    assert!(during.contains("filter = { except_tables"), "{during}");
    let prepare = fs::read_dir(ws.path("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_cars_bigint_prepare"))
        .expect("prepare's folder");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(prepare.join("zmig-swap.json")).unwrap()).unwrap();
    assert_eq!(record["columns"][0]["old_type"], "integer", "{record}");
    assert_eq!(record["references"][0]["old_type"], "integer", "{record}");
    // After finalize print-schema prints the types the one release said all along. The widened
    // reference is the shadow column finalize renamed, so it is printed last in its table now.
    let finalized = ws.read(SCHEMA);
    let block = |s: &str, name: &str| {
        let start = s.find(name).unwrap();
        s[start..start + s[start..].find("}\n").unwrap()].to_owned()
    };
    assert_eq!(
        block(&finalized, "    cars (id) {"),
        block(&wide, "    cars (id) {")
    );
    assert_eq!(
        block(&finalized, "    trips (id) {"),
        "    trips (id) {\n        id -> Int8,\n        km -> Int4,\n        car_id -> Int8,\n    "
    );
}

const FLEET: &str = "CREATE TABLE owners (
    id serial PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE cars (
    id serial PRIMARY KEY,
    owner_id integer NOT NULL REFERENCES owners,
    make text NOT NULL
);

CREATE TABLE trips (
    id bigserial PRIMARY KEY,
    car_id integer NOT NULL REFERENCES cars,
    km integer NOT NULL
);

CREATE TABLE services (
    id serial PRIMARY KEY,
    car_id integer REFERENCES cars,
    note text NOT NULL
);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    entry text NOT NULL
);

CREATE VIEW owner_names AS SELECT id, name FROM owners;
";

const FLEET_DOWN: &str = "DROP VIEW owner_names;\nDROP TABLE audit_log;\nDROP TABLE services;\nDROP TABLE trips;\nDROP TABLE cars;\nDROP TABLE owners;\n";

/// A team's own filter (its audit log stays out of schema.rs) and, below, its own patch.
const FLEET_TOML: &str = "[print_schema]
file = \"crates/app/src/schema.rs\"
# Ours: the audit log is written by triggers, never by the application.
filter = { except_tables = [\"^audit_\"] }

[migrations_directory]
dir = \"migrations\"
";

const FLEET_PATCH_LINE: &str = "# Ours: the owner_names view, and a doc on owners.
patch_file = \"crates/app/src/schema.patch\"
";

const OWNER_NAMES: &str = "diesel::table! {
    /// Owners by name (a view: print-schema does not print it).
    owner_names (id) {
        id -> Int4,
        name -> Text,
    }
}

";

/// Code that needs `cars` with both joinables it is the parent of, the one it is the child of,
/// and what the team's patch adds.
const FLEET_LIB: &str = "pub mod schema;

use diesel::prelude::*;

pub fn trips_with_owners(conn: &mut PgConnection) -> QueryResult<Vec<(String, i32)>> {
    use schema::{cars, owners, trips};
    trips::table
        .inner_join(cars::table.inner_join(owners::table))
        .select((owners::name, trips::km))
        .load(conn)
}

pub fn services_with_cars(conn: &mut PgConnection) -> QueryResult<Vec<(String, Option<String>)>> {
    use schema::{cars, services};
    services::table
        .left_join(cars::table)
        .select((services::note, cars::make.nullable()))
        .load(conn)
}

pub fn owner_names(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    schema::owner_names::table
        .select(schema::owner_names::name)
        .load(conn)
}
";

const FLEET_SWAP: &str =
    "swap(columns(id: Int8), references(trips.car_id, services.car_id), name = cars_bigint)";

/// What the team's patch does to print-schema's output.
fn fleet_edits(printed: &str) -> String {
    // Beside tables whose lines finalize leaves alone: a hunk whose context holds a column the
    // swap changes applies until finalize and must be made again after it, as schema.rs is.
    let with_view =
        zmig_tests::diesel_workspace::insert_before_table(printed, "owners", OWNER_NAMES);
    zmig_tests::diesel_workspace::edit(
        &with_view,
        "diesel::table! {\n    owners (id) {\n",
        "diesel::table! {\n    /// Who owns the cars.\n    owners (id) {\n",
    )
}

/// A shape that is not the example's: the team's own `except_tables` and patch file stay
/// applied through the swap (zmig's patch includes the team's; the filter is the team's plus
/// zmig's), two tables reference the swapped one (one of them nullable) and it has a foreign
/// key of its own (its joinable with `owners` goes from print-schema's output too).
#[test]
fn a_team_filter_and_patch_and_two_references_through_the_swap() {
    if skip_without_diesel() {
        return;
    }
    let ws = set_up("swap-shim-fleet", FLEET, FLEET_DOWN, FLEET_TOML, FLEET_LIB);
    let printed = ws.read(SCHEMA);
    assert!(!printed.contains("audit_log"), "{printed}");
    let patch = ws.diff_u(SCHEMA, &printed, &fleet_edits(&printed));
    ws.write("crates/app/src/schema.patch", &patch);
    let toml = FLEET_TOML.replace(
        "filter = { except_tables = [\"^audit_\"] }\n",
        &format!("filter = {{ except_tables = [\"^audit_\"] }}\n{FLEET_PATCH_LINE}"),
    );
    ws.write("diesel.toml", &toml);
    ws.diesel(&["migration", "run"]);
    let before = ws.read(SCHEMA);
    assert_eq!(
        before,
        fleet_edits(&printed),
        "diesel applies the team's patch"
    );
    for joinable in [
        "diesel::joinable!(cars -> owners (owner_id));",
        "diesel::joinable!(services -> cars (car_id));",
        "diesel::joinable!(trips -> cars (car_id));",
    ] {
        assert!(before.contains(joinable), "{joinable} in\n{before}");
    }
    ws.check_compiles("before the swap", SCHEMA);

    let during = through_the_swap(&ws, "cars", FLEET_SWAP, &before, &toml);
    assert!(
        during.contains(
            "# zmig's view shim (a swap, prepare until finalize) added to except_tables: [\"^zmig_\", \"^cars_old$\", \"^cars_new$\", \"^cars_temp$\"]\n\
             filter = { except_tables = [\"^audit_\", \"^zmig_\", \"^cars_old$\", \"^cars_new$\", \"^cars_temp$\"] }\n"
        ),
        "{during}"
    );
    assert!(
        during.contains(
            "# zmig's patch includes your own, which finalize names here again: patch_file = \"crates/app/src/schema.patch\"\n\
             patch_file = \"crates/app/src/zmig-schema.patch\"\n"
        ),
        "{during}"
    );
    // Its hunks stay clear of what finalize changes: no warning when finalize was generated.
    let (ok, report) = ws.zmig(&["generate"]);
    assert!(ok && !report.contains("no longer applies"), "{report}");
    // The team's patch: never written, still applied after finalize.
    assert_eq!(ws.read("crates/app/src/schema.patch"), patch);
    let finalized = ws.read(SCHEMA);
    assert!(
        finalized.contains("    owner_names (id) {\n"),
        "{finalized}"
    );
    assert!(!finalized.contains("audit_log"), "{finalized}");
    ws.check_compiles("after finalize", SCHEMA);
}

/// A team patch with a hunk beside a reference (a doc on `trips`, whose context holds
/// `car_id`): it applies until finalize, and `generate` says, when it writes finalize, that it
/// will not apply once finalize ran; diesel then indeed refuses it.
#[test]
fn a_team_patch_that_finalize_breaks_is_reported_when_finalize_is_generated() {
    if skip_without_diesel() {
        return;
    }
    let ws = set_up("swap-shim-breaks", FLEET, FLEET_DOWN, FLEET_TOML, FLEET_LIB);
    let printed = ws.read(SCHEMA);
    let team = zmig_tests::diesel_workspace::edit(
        &fleet_edits(&printed),
        "diesel::table! {\n    trips (id) {\n",
        "diesel::table! {\n    /// Trips driven.\n    trips (id) {\n",
    );
    let patch = ws.diff_u(SCHEMA, &printed, &team);
    ws.write("crates/app/src/schema.patch", &patch);
    let toml = FLEET_TOML.replace(
        "filter = { except_tables = [\"^audit_\"] }\n",
        &format!("filter = {{ except_tables = [\"^audit_\"] }}\n{FLEET_PATCH_LINE}"),
    );
    ws.write("diesel.toml", &toml);
    ws.diesel(&["migration", "run"]);
    let before = ws.read(SCHEMA);
    assert_eq!(before, team);

    ws.write(
        "crates/app/src/models.rs",
        &model("cars", FLEET_SWAP, "prepare"),
    );
    let (ok, report) = ws.zmig(&["generate"]);
    assert!(ok && !report.contains("no longer applies"), "{report}");
    ws.diesel(&["migration", "run"]);
    assert_eq!(ws.read(SCHEMA), before, "the patch applies during the swap");

    ws.write(
        "crates/app/src/models.rs",
        &model("cars", FLEET_SWAP, "finalize"),
    );
    let (ok, report) = ws.zmig(&["generate"]);
    assert!(ok, "{report}");
    assert!(
        report.contains(
            "crates/app/src/schema.patch: once `cars_bigint`'s finalize ran, your patch crates/app/src/schema.patch no longer applies"
        ),
        "{report}"
    );
    let (ok, stdout, stderr) = ws.try_diesel(&["migration", "run"]);
    assert!(
        !ok && stderr.contains("Failed to apply patch"),
        "{stdout}{stderr}"
    );
}
