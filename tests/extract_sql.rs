//! Snapshots of the SQL zmig generates for an extract: the caterers example and each attribute
//! form it does not use. A change in generated SQL shows up in review as a snapshot diff.

use zmig_tests::fixtures;
use zmig_tests::FixtureCrate;

fn snapshot_of(fixture: &FixtureCrate, lint_name: &str) -> String {
    let (outcome, _) = fixture.generate(false).expect("generate");
    assert!(outcome.ok(), "{outcome:?}");
    fixture.export_for_lint(lint_name);
    fixture
        .generated_files()
        .into_iter()
        .map(|(name, contents)| format!("==> {name} <==\n{contents}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn caterers_every_phase() {
    insta::assert_snapshot!(snapshot_of(&fixtures::caterers("sql_caterers"), "caterers"));
}

#[test]
fn filter_and_owner_key_as_primary_key() {
    insta::assert_snapshot!(snapshot_of(
        &fixtures::caterers_filtered("sql_filtered"),
        "caterers_filtered"
    ));
}

#[test]
fn renames_widening_and_moved_primary_key() {
    insta::assert_snapshot!(snapshot_of(
        &fixtures::users_github("sql_users"),
        "users_github"
    ));
}

#[test]
fn identifiers_that_need_quoting() {
    insta::assert_snapshot!(snapshot_of(&fixtures::weird("sql_weird"), "weird"));
}

#[test]
fn app_sync_mode() {
    insta::assert_snapshot!(snapshot_of(
        &fixtures::caterers_app("sql_app"),
        "caterers_app"
    ));
}

#[test]
fn non_unique_owner_key() {
    insta::assert_snapshot!(snapshot_of(
        &fixtures::users_accounts("sql_accounts"),
        "users_accounts"
    ));
}
