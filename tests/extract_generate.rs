//! `generate` and `generate --check` on a crate: idempotent, additive as `stage` advances, never
//! overwriting an edit, and on bad input an error naming file and line with nothing written.

use std::fs;

use zmig_tests::{fixtures, model_source, FixtureCrate};

fn at_stage(stage: &str) -> String {
    format!("#[zmig(extract(into = addresses, columns(street1, street2, city, state, zip)), stage = \"{stage}\")]")
}

fn caterers_at(label: &str, stage: &str) -> FixtureCrate {
    FixtureCrate::caterers(label, &at_stage(stage))
}

fn set_stage(fixture: &FixtureCrate, stage: &str) {
    fixture.set_models(&model_source("caterers", "Caterer", &at_stage(stage)));
}

fn folder_names(fixture: &FixtureCrate) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixture.migrations_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn generating_twice_changes_nothing() {
    let fixture = caterers_at("gen_twice", "dual_write");
    let (first, _) = fixture.generate(false).unwrap();
    assert_eq!(first.written.len(), 2, "expand and dual_write");
    let before = fixture.generated_files();
    let (second, report) = fixture.generate(false).unwrap();
    assert!(second.written.is_empty(), "{report}");
    assert_eq!(fixture.generated_files(), before);
    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");
}

#[test]
fn advancing_stage_adds_folders_and_leaves_the_others_byte_for_byte() {
    let fixture = caterers_at("gen_advance", "expand");
    fixture.generate(false).unwrap();
    let expand = fixture.generated_files();
    assert_eq!(folder_names(&fixture).len(), 2, "create + expand");

    // read_new ships no SQL: moving to it adds dual_write only.
    set_stage(&fixture, "read_new");
    let (check, report) = fixture.generate(true).unwrap();
    assert!(
        !check.ok() && report.contains("caterers_addresses_dual_write"),
        "{report}"
    );
    let (outcome, _) = fixture.generate(false).unwrap();
    assert_eq!(outcome.written.len(), 1);
    let after = fixture.generated_files();
    for (name, contents) in &expand {
        assert!(
            after.contains(&(name.clone(), contents.clone())),
            "{name} changed"
        );
    }
    set_stage(&fixture, "contract");
    fixture.generate(false).unwrap();
    let names = folder_names(&fixture);
    let suffixes: Vec<&str> = names.iter().map(|n| n.split_once('_').unwrap().1).collect();
    assert_eq!(
        suffixes,
        [
            "create_tables",
            "caterers_addresses_expand",
            "caterers_addresses_dual_write",
            "caterers_addresses_write_new",
            "caterers_addresses_contract"
        ]
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "folder names sort in phase order");
}

#[test]
fn a_file_edited_by_hand_is_reported_and_not_overwritten() {
    let fixture = caterers_at("gen_edit", "dual_write");
    fixture.generate(false).unwrap();
    let up = fixture
        .migrations_dir()
        .join("2026-11-21-120000-0002_caterers_addresses_dual_write/up.sql");
    let edited = fs::read_to_string(&up)
        .unwrap()
        .replace("lock_timeout = '1s'", "lock_timeout = '5s'");
    fs::write(&up, &edited).unwrap();

    set_stage(&fixture, "contract");
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(!outcome.ok());
    assert!(
        report.contains("edited by hand") && report.contains("up.sql"),
        "{report}"
    );
    assert!(report.contains("nothing was written"), "{report}");
    assert!(outcome.written.is_empty());
    assert_eq!(fs::read_to_string(&up).unwrap(), edited);
    assert_eq!(folder_names(&fixture).len(), 3);
    let (check, _) = fixture.generate(true).unwrap();
    assert!(!check.ok());
}

#[test]
fn check_reports_a_folder_gone_stale_when_the_attribute_changes() {
    let fixture = caterers_at("gen_stale", "dual_write");
    fixture.generate(false).unwrap();
    fixture.set_models(&model_source(
        "caterers",
        "Caterer",
        "#[zmig(extract(into = addresses, columns(street1, city, state, zip)), stage = \"dual_write\")]",
    ));
    let (check, report) = fixture.generate(true).unwrap();
    assert!(!check.ok());
    assert!(report.contains("no longer match"), "{report}");
}

#[test]
fn schema_printed_after_write_new_and_contract_keeps_the_folders_up_to_date() {
    let fixture = caterers_at("gen_snapshot", "write_new");
    fixture.generate(false).unwrap();
    // After write_new, `diesel print-schema` shows the old columns as Nullable; after contract
    // they are gone, and the new table appears. The shipped phases must not change meaning.
    let schema = fixture.root.join("src/schema.rs");
    let printed = fs::read_to_string(&schema).unwrap();
    let nullable = printed
        .replace("street1 -> Varchar", "street1 -> Nullable<Varchar>")
        .replace("city -> Varchar", "city -> Nullable<Varchar>");
    fs::write(&schema, &nullable).unwrap();
    let (check, report) = fixture.generate(true).unwrap();
    assert!(check.ok(), "{report}");

    set_stage(&fixture, "contract");
    let contracted: String = printed
        .lines()
        .filter(|l| {
            !["street1", "street2", "city", "zip", "state"]
                .iter()
                .any(|c| l.trim_start().starts_with(&format!("{c} ->")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&schema, contracted + "\ndiesel::table! {\n    addresses (id) {\n        id -> Int8,\n        caterer_id -> Int4,\n    }\n}\n").unwrap();
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(outcome.ok() && outcome.written.len() == 1, "{report}");
}

#[test]
fn a_malformed_schema_is_an_error_naming_file_and_line_and_nothing_is_written() {
    let fixture = caterers_at("gen_bad_schema", "contract");
    let schema = fixture.root.join("src/schema.rs");
    let text = fs::read_to_string(&schema)
        .unwrap()
        .replace("city -> Varchar,", "city => Varchar,");
    fs::write(&schema, text).unwrap();
    let error = fixture.generate(false).unwrap_err();
    assert!(error.contains("src/schema.rs:11:"), "{error}");
    assert_eq!(folder_names(&fixture).len(), 1, "nothing written");
}

#[test]
fn an_unknown_column_is_an_error_naming_file_and_line_and_nothing_is_written() {
    let fixture = FixtureCrate::caterers(
        "gen_bad_column",
        "#[zmig(extract(into = addresses, columns(street1, stret2)), stage = \"contract\")]",
    );
    let error = fixture.generate(false).unwrap_err();
    // The attribute is on line 5 of the generated model source.
    assert!(
        error.contains("src/models.rs:5:") && error.contains("no column `stret2`"),
        "{error}"
    );
    assert_eq!(folder_names(&fixture).len(), 1, "nothing written");
}

#[test]
fn narrowing_a_column_is_refused() {
    let fixture = FixtureCrate::caterers(
        "gen_narrow",
        "#[zmig(extract(into = addresses, columns(street1, zip: Int4)), stage = \"expand\")]",
    );
    let error = fixture.generate(false).unwrap_err();
    assert!(error.contains("only widens"), "{error}");
}

#[test]
fn every_fixture_generates_cleanly() {
    for fixture in [
        fixtures::caterers("gen_all_1"),
        fixtures::caterers_filtered("gen_all_2"),
        fixtures::users_github("gen_all_3"),
        fixtures::weird("gen_all_4"),
    ] {
        let (outcome, report) = fixture.generate(false).unwrap();
        assert!(outcome.ok() && outcome.written.len() == 4, "{report}");
    }
}

#[test]
fn two_migrations_generated_in_one_run_get_versions_of_their_own() {
    let fixture = caterers_at("gen_two", "dual_write");
    let models = format!(
        "{}\n{}",
        model_source("caterers", "Caterer", &at_stage("dual_write")),
        model_source(
            "caterers",
            "CatererContact",
            "#[zmig(extract(into = contacts, columns(email, phone)), stage = \"expand\")]"
        )
        .replace("use zmig_runtime::Zmig;\n", "")
    );
    fixture.set_models(&models);
    let (outcome, report) = fixture.generate(false).unwrap();
    assert_eq!(outcome.written.len(), 3, "{report}");
    let versions: Vec<String> = folder_names(&fixture)
        .iter()
        .map(|n| n.split_once('_').unwrap().0.to_owned())
        .collect();
    let mut unique = versions.clone();
    unique.dedup();
    assert_eq!(
        unique, versions,
        "every folder has its own version: {versions:?}"
    );
}

#[test]
fn a_clock_behind_the_latest_folder_still_adds_phases_after_it() {
    let fixture = caterers_at("gen_clock", "expand");
    fixture.generate_at(false, "2026-11-21-120000").unwrap();
    set_stage(&fixture, "dual_write");
    fixture.generate_at(false, "2026-01-01-000000").unwrap();
    let names = folder_names(&fixture);
    assert!(
        names
            .last()
            .unwrap()
            .ends_with("_caterers_addresses_dual_write"),
        "{names:?}"
    );
    assert_eq!(
        names.last().unwrap(),
        "2026-11-21-120000-0002_caterers_addresses_dual_write"
    );
}

#[test]
fn a_stage_moved_back_behind_generated_folders_is_reported() {
    let fixture = caterers_at("gen_back", "write_new");
    fixture.generate(false).unwrap();
    set_stage(&fixture, "dual_write");
    let (check, report) = fixture.generate(true).unwrap();
    assert!(!check.ok());
    assert!(
        report.contains("phase `write_new` is generated but `Caterer` is at stage `dual_write`"),
        "{report}"
    );
    let (outcome, report) = fixture.generate(false).unwrap();
    assert!(
        !outcome.ok() && report.contains("nothing was written"),
        "{report}"
    );
}
