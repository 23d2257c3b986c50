//! The ignored-column shim: at write_new `generate` leaves the moved columns out of `schema.rs`
//! and keeps `diesel print-schema` doing so with a patch named in `diesel.toml`; at contract (or
//! back before write_new) it takes the patch away again. Checked against the files and against
//! what a real database looks like after the write_new migration.

use std::fs;
use std::path::Path;

use diesel::prelude::*;
use zmig_codegen::project;
use zmig_codegen::schema::parse_schema;
use zmig_codegen::shim::{self, PATCH_HEADER};
use zmig_tests::{model_source, run_pending, FixtureCrate, TestDb};

const MOVED: [&str; 5] = ["street1", "street2", "city", "state", "zip"];

/// A diesel.toml with the comments and layout a user's has; zmig must keep them.
const DIESEL_TOML: &str = "# For documentation on how to configure this file,\n\
# see https://diesel.rs/guides/configuring-diesel-cli\n\
\n\
[print_schema]\n\
file = \"src/schema.rs\"   # where print-schema writes\n\
custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]\n\
\n\
[migrations_directory]\n\
dir = \"migrations\"\n";

fn at_stage(stage: &str) -> String {
    format!("#[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = \"{stage}\")]")
}

fn caterers_at(label: &str, stage: &str) -> FixtureCrate {
    let fixture = FixtureCrate::caterers(label, &at_stage(stage));
    fs::write(fixture.root.join("diesel.toml"), DIESEL_TOML).unwrap();
    fixture
}

fn set_stage(fixture: &FixtureCrate, stage: &str) {
    fixture.set_models(&model_source("caterers", "Caterer", &at_stage(stage)));
}

fn read(fixture: &FixtureCrate, file: &str) -> String {
    fs::read_to_string(fixture.root.join(file)).unwrap()
}

fn patch_path(fixture: &FixtureCrate) -> std::path::PathBuf {
    fixture.root.join("src/zmig-schema.patch")
}

/// The `table!` column names of `table` in a schema.rs text, in order.
fn table_columns(schema_rs: &str, table: &str) -> Vec<(String, bool)> {
    parse_schema(Path::new("src/schema.rs"), schema_rs)
        .unwrap()
        .table(table)
        .unwrap()
        .columns
        .iter()
        .map(|c| (c.sql_name.clone(), c.nullable))
        .collect()
}

/// What `diesel print-schema` printed for the example before any zmig migration, with the moved
/// columns as write_new leaves them: nullable.
fn printed_after_write_new(original: &str) -> String {
    ["street1", "city", "zip", "state"]
        .iter()
        .fold(original.to_owned(), |text, c| {
            text.replace(
                &format!("        {c} -> Varchar,"),
                &format!("        {c} -> Nullable<Varchar>,"),
            )
        })
}

/// Every file the shim or the folders may touch, to compare before and after.
fn all_files(fixture: &FixtureCrate) -> Vec<(String, String)> {
    let mut files = fixture.generated_files();
    for file in ["src/schema.rs", "diesel.toml", "src/zmig-schema.patch"] {
        if let Ok(text) = fs::read_to_string(fixture.root.join(file)) {
            files.push((file.to_owned(), text));
        }
    }
    files
}

/// What diesel does with the patch when it prints the schema.
fn diesel_applies(patch: &str, printed: &str) -> String {
    shim::apply_patch(patch, printed).unwrap()
}

#[test]
fn write_new_writes_the_patch_the_diesel_toml_line_and_the_shimmed_schema() {
    let fixture = caterers_at("shim_write_new", "write_new");
    let original = read(&fixture, "src/schema.rs");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(outcome.written.len(), 3, "expand, dual_write, write_new");
    assert_eq!(outcome.shim_written.len(), 3, "{report}");
    assert!(
        report.contains("zmig-schema.patch (the patch `diesel print-schema` applies"),
        "{report}"
    );

    // schema.rs: the owner table without the moved columns, everything else as it was.
    let schema = read(&fixture, "src/schema.rs");
    let columns: Vec<String> = table_columns(&schema, "caterers")
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        columns,
        ["id", "name", "email", "phone", "created_at", "updated_at"]
    );
    let kept: String = original
        .lines()
        .filter(|l| {
            !MOVED
                .iter()
                .any(|c| l.trim_start().starts_with(&format!("{c} ->")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(schema, kept);

    // The patch: zmig's, and what print-schema prints after write_new becomes schema.rs.
    let patch = fs::read_to_string(patch_path(&fixture)).unwrap();
    assert!(patch.starts_with(PATCH_HEADER), "{patch}");
    assert_eq!(
        diesel_applies(&patch, &printed_after_write_new(&original)),
        schema
    );

    // diesel.toml: the line added under [print_schema], every comment and value kept.
    let toml = read(&fixture, "diesel.toml");
    assert_eq!(
        toml,
        DIESEL_TOML.replace(
            "\"Clone\"]\n",
            "\"Clone\"]\n# zmig's ignored-column shim (write_new until contract); `cargo xtask zmig generate` manages this line.\npatch_file = \"src/zmig-schema.patch\"\n"
        ),
        "{toml}"
    );
}

#[test]
fn a_second_generate_changes_nothing_and_check_passes_until_schema_rs_is_edited_back() {
    let fixture = caterers_at("shim_twice", "write_new");
    let original = read(&fixture, "src/schema.rs");
    fixture.generate(false).unwrap();
    let before = all_files(&fixture);

    let (second, report) = fixture.generate(false).unwrap();
    assert!(second.ok(), "{report}");
    assert!(
        second.written.is_empty() && second.shim_written.is_empty(),
        "{report}"
    );
    assert!(report.contains("nothing to write"), "{report}");
    assert_eq!(all_files(&fixture), before);

    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");

    // Someone puts the columns back (print-schema without the patch would, too).
    fs::write(fixture.root.join("src/schema.rs"), &original).unwrap();
    let (check, report) = fixture.generate(true).unwrap();
    assert!(!check.ok(), "{report}");
    assert!(
        report.contains("schema.rs is not up to date (`caterers` without street1"),
        "{report}"
    );
    assert_eq!(
        read(&fixture, "src/schema.rs"),
        original,
        "--check writes nothing"
    );

    // generate puts the shim back exactly as it was.
    fixture.generate(false).unwrap();
    assert_eq!(all_files(&fixture), before);

    // A missing patch or diesel.toml line fails the check too.
    fs::remove_file(patch_path(&fixture)).unwrap();
    let (check, report) = fixture.generate(true).unwrap();
    assert!(
        !check.ok() && report.contains("zmig-schema.patch is not up to date"),
        "{report}"
    );
    fixture.generate(false).unwrap();
    fs::write(fixture.root.join("diesel.toml"), DIESEL_TOML).unwrap();
    let (check, report) = fixture.generate(true).unwrap();
    assert!(
        !check.ok() && report.contains("diesel.toml is not up to date"),
        "{report}"
    );
    fixture.generate(false).unwrap();
    assert_eq!(all_files(&fixture), before);
}

#[test]
fn contract_removes_the_patch_and_the_line_and_keeps_the_columns_out() {
    let fixture = caterers_at("shim_contract", "write_new");
    fixture.generate(false).unwrap();
    let shimmed = read(&fixture, "src/schema.rs");

    set_stage(&fixture, "contract");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(outcome.written.len(), 1, "contract");
    assert!(!patch_path(&fixture).exists(), "{report}");
    assert!(report.contains("removed"), "{report}");
    assert_eq!(read(&fixture, "diesel.toml"), DIESEL_TOML);
    assert_eq!(read(&fixture, "src/schema.rs"), shimmed);

    let before = all_files(&fixture);
    let (again, report) = fixture.generate(false).unwrap();
    assert!(again.shim_written.is_empty(), "{report}");
    assert_eq!(all_files(&fixture), before);
    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");
}

#[test]
fn straight_to_contract_rewrites_schema_rs_without_a_patch() {
    let fixture = caterers_at("shim_straight", "contract");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert!(!patch_path(&fixture).exists());
    assert_eq!(read(&fixture, "diesel.toml"), DIESEL_TOML);
    let columns = table_columns(&read(&fixture, "src/schema.rs"), "caterers");
    assert!(
        columns.iter().all(|(c, _)| !MOVED.contains(&c.as_str())),
        "{columns:?}"
    );
}

#[test]
fn back_before_write_new_the_patch_goes_and_the_columns_stay_out() {
    let fixture = caterers_at("shim_back", "write_new");
    fixture.generate(false).unwrap();
    let shimmed = read(&fixture, "src/schema.rs");
    // The write_new migration never ran: its folder is deleted and the stage set back.
    let write_new = fs::read_dir(fixture.migrations_dir())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("_write_new"))
        .unwrap();
    fs::remove_dir_all(write_new.path()).unwrap();
    set_stage(&fixture, "read_new");

    let (check, report) = fixture.generate(true).unwrap();
    assert!(!check.ok() && report.contains("should be gone"), "{report}");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert!(!patch_path(&fixture).exists());
    assert_eq!(read(&fixture, "diesel.toml"), DIESEL_TOML);
    // print-schema puts the columns back when it next runs; zmig does not guess them.
    assert_eq!(read(&fixture, "src/schema.rs"), shimmed);
}

/// The team's own patch: print-schema's header line marked, and a view print-schema does not
/// print (both far from the moved columns, as a real patch is).
const THEIRS: &str = "--- a/src/schema.rs\n+++ b/src/schema.rs\n@@ -1,4 +1,4 @@\n-// @generated automatically by Diesel CLI.\n+// @generated automatically by Diesel CLI, then patched by src/schema.patch.\n \n diesel::table! {\n     caterers (id) {\n";

/// diesel.toml naming the team's patch, with a comment of theirs above the line and after it.
fn with_their_patch(toml: &str) -> String {
    toml.replace(
        "file = \"src/schema.rs\"   # where print-schema writes\n",
        "file = \"src/schema.rs\"   # where print-schema writes\n# Ours: marks the file as patched.\npatch_file = \"src/schema.patch\" # keep\n",
    )
}

#[test]
fn a_team_patch_file_is_included_from_write_new_and_named_again_at_contract() {
    let fixture = caterers_at("shim_theirs", "read_new");
    let toml = with_their_patch(DIESEL_TOML);
    fs::write(fixture.root.join("diesel.toml"), &toml).unwrap();
    fs::write(fixture.root.join("src/schema.patch"), THEIRS).unwrap();
    // schema.rs is what print-schema prints with their patch.
    let printed = read(&fixture, "src/schema.rs");
    let patched = diesel_applies(THEIRS, &printed);
    fs::write(fixture.root.join("src/schema.rs"), &patched).unwrap();

    // Before write_new the setting is left alone.
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(read(&fixture, "diesel.toml"), toml);

    set_stage(&fixture, "write_new");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert!(
        report.contains("your src/schema.patch and the columns write_new stopped using"),
        "{report}"
    );
    // diesel.toml names zmig's patch in place of theirs, keeps their comments and names theirs.
    assert_eq!(
        read(&fixture, "diesel.toml"),
        toml.replace(
            "# Ours: marks the file as patched.\npatch_file = \"src/schema.patch\" # keep\n",
            "# Ours: marks the file as patched.\n\
             # zmig's ignored-column shim (write_new until contract); `cargo xtask zmig generate` manages this line.\n\
             # zmig's patch includes your own, which contract names here again: patch_file = \"src/schema.patch\"\n\
             patch_file = \"src/zmig-schema.patch\" # keep\n"
        )
    );
    assert_eq!(
        read(&fixture, "src/schema.patch"),
        THEIRS,
        "never rewritten"
    );
    let schema = read(&fixture, "src/schema.rs");
    assert!(schema.starts_with("// @generated automatically by Diesel CLI, then patched"));
    assert!(
        table_columns(&schema, "caterers")
            .iter()
            .all(|(c, _)| !MOVED.contains(&c.as_str())),
        "{schema}"
    );
    // One diff from what print-schema prints after write_new, with no patch, to schema.rs.
    let ours = fs::read_to_string(patch_path(&fixture)).unwrap();
    assert!(ours.starts_with(PATCH_HEADER), "{ours}");
    assert!(ours.contains("\n# zmig's patch includes your own, which contract names here again: patch_file = \"src/schema.patch\"\n"), "{ours}");
    assert_eq!(
        diesel_applies(&ours, &printed_after_write_new(&printed)),
        schema
    );

    // Stable, and --check passes.
    let before = all_files(&fixture);
    let (again, report) = fixture.generate(false).unwrap();
    assert!(again.shim_written.is_empty(), "{report}");
    assert_eq!(all_files(&fixture), before);
    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");

    // They edit their patch: zmig's is stale until generate rebuilds it from theirs.
    let edited = THEIRS.replace("then patched by", "patched by");
    fs::write(fixture.root.join("src/schema.patch"), &edited).unwrap();
    let (check, report) = fixture.generate(true).unwrap();
    assert!(
        !check.ok()
            && report.contains("zmig-schema.patch is not up to date")
            && report.contains("schema.rs is not up to date"),
        "{report}"
    );
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let schema = read(&fixture, "src/schema.rs");
    assert!(
        schema
            .starts_with("// @generated automatically by Diesel CLI, patched by src/schema.patch."),
        "{schema}"
    );
    let ours = fs::read_to_string(patch_path(&fixture)).unwrap();
    assert_eq!(
        diesel_applies(&ours, &printed_after_write_new(&printed)),
        schema
    );
    assert_eq!(
        read(&fixture, "src/schema.patch"),
        edited,
        "never rewritten"
    );

    // Contract: zmig's patch goes, diesel.toml names theirs again, exactly as it was.
    set_stage(&fixture, "contract");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    assert!(
        report.contains("`[print_schema] patch_file = \"src/schema.patch\"`: your own patch again"),
        "{report}"
    );
    assert!(!patch_path(&fixture).exists());
    assert_eq!(read(&fixture, "diesel.toml"), toml);
    assert_eq!(read(&fixture, "src/schema.patch"), edited);
    assert_eq!(read(&fixture, "src/schema.rs"), schema);
    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");
}

#[test]
fn a_team_patch_that_does_not_give_schema_rs_is_refused_and_nothing_is_written() {
    let fixture = caterers_at("shim_theirs_stale", "write_new");
    fs::write(
        fixture.root.join("diesel.toml"),
        with_their_patch(DIESEL_TOML),
    )
    .unwrap();
    // schema.rs was printed without it: zmig cannot tell what print-schema prints unpatched.
    fs::write(fixture.root.join("src/schema.patch"), THEIRS).unwrap();
    // Write the folders first (read_new), so only the shim is at stake.
    set_stage(&fixture, "read_new");
    fixture.generate(false).unwrap();
    set_stage(&fixture, "write_new");
    let before = all_files(&fixture);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(!outcome.ok(), "{report}");
    assert!(
        report.contains("src/schema.rs:1:1: this is not what `diesel print-schema` prints with your patch src/schema.patch")
            && report.contains("help: run `diesel print-schema`")
            && report.contains("nothing was written"),
        "{report}"
    );
    assert_eq!(all_files(&fixture), before);
    assert_eq!(read(&fixture, "src/schema.patch"), THEIRS);
    assert!(!patch_path(&fixture).exists());

    // Their patch file is gone: named, nothing written.
    fs::remove_file(fixture.root.join("src/schema.patch")).unwrap();
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(
        !outcome.ok() && report.contains("names your patch `src/schema.patch`, but"),
        "{report}"
    );
    assert_eq!(read(&fixture, "diesel.toml"), with_their_patch(DIESEL_TOML));
}

#[derive(QueryableByName, Debug, PartialEq)]
struct DbColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    udt: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    nullable: bool,
}

fn db_columns(conn: &mut PgConnection, table: &str) -> Vec<DbColumn> {
    diesel::sql_query(
        "SELECT column_name::text AS name, udt_name::text AS udt, is_nullable = 'YES' AS nullable \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
         ORDER BY ordinal_position",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .load(conn)
    .unwrap()
}

/// The `caterers` block as `diesel print-schema` prints it from the database (for the types
/// this table has), in the layout of the example's schema.rs.
fn print_caterers(columns: &[DbColumn]) -> String {
    let mut out = String::from(
        "// @generated automatically by Diesel CLI.\n\ndiesel::table! {\n    caterers (id) {\n",
    );
    for column in columns {
        let ty = match column.udt.as_str() {
            "int4" => "Int4",
            "varchar" => "Varchar",
            "timestamp" => "Timestamp",
            other => panic!("no Diesel name here for {other}"),
        };
        let ty = if column.nullable {
            format!("Nullable<{ty}>")
        } else {
            ty.to_owned()
        };
        out.push_str(&format!("        {} -> {ty},\n", column.name));
    }
    out + "    }\n}\n"
}

#[test]
fn the_shim_matches_the_database_after_the_write_new_migration() {
    let db = TestDb::new("shim_db");
    let fixture = caterers_at("shim_db", "write_new");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok(), "{report}");
    let mut conn = db.conn();
    run_pending(&mut conn, &fixture);
    let columns = db_columns(&mut conn, "caterers");

    // schema.rs lists exactly the database's columns less the moved ones.
    let schema = read(&fixture, "src/schema.rs");
    let in_schema: Vec<String> = table_columns(&schema, "caterers")
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let in_db: Vec<String> = columns
        .iter()
        .map(|c| c.name.clone())
        .filter(|c| !MOVED.contains(&c.as_str()))
        .collect();
    assert_eq!(in_schema, in_db);

    // The moved columns are nullable in the database, as zmig's idea of print-schema assumed.
    let project = project::load(&fixture.root).unwrap();
    let shim = shim::shim_schema(
        Path::new("src/schema.rs"),
        &schema,
        &shim::hidden_columns(&project),
    )
    .unwrap();
    let assumed = table_columns(&shim.printed, "caterers");
    for column in columns.iter().filter(|c| MOVED.contains(&c.name.as_str())) {
        assert!(
            column.nullable,
            "{} is NOT NULL in the database",
            column.name
        );
        assert!(
            assumed.contains(&(column.name.clone(), true)),
            "{assumed:?}"
        );
    }
    // Column for column, nullability included, it is what print-schema prints from the database,
    // and the patch on disk turns that into schema.rs.
    let printed = print_caterers(&columns);
    assert_eq!(shim.printed, printed);
    let patch = fs::read_to_string(patch_path(&fixture)).unwrap();
    assert_eq!(diesel_applies(&patch, &printed), schema);

    // print-schema also prints the new table (before `caterers`) and its joinable; the patch
    // still applies where the lines moved.
    let addresses: Vec<String> = db_columns(&mut conn, "addresses")
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(
        addresses.contains(&"caterer_id".to_owned()),
        "{addresses:?}"
    );
    let block = "diesel::table! {\n    addresses (id) {\n        id -> Int8,\n        caterer_id -> Int4,\n    }\n}\n\n";
    let with_new_table = |text: &str| {
        text.replacen(
            "diesel::table! {\n",
            &format!("{block}diesel::table! {{\n"),
            1,
        ) + "\ndiesel::joinable!(addresses -> caterers (caterer_id));\n"
    };
    assert_eq!(
        diesel_applies(&patch, &with_new_table(&printed)),
        with_new_table(&schema)
    );
}
