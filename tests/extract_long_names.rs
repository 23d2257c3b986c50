//! Long table names: the default migration name `<owner>_<new table>` obeys the 40-character
//! rule of a written one (generate refuses it, saying what to write, and writes nothing), and
//! with the name it suggests, tables whose names are close to PostgreSQL's 63 bytes go through
//! every phase, the backfill and verify, each object zmig creates under a name of its own.

use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::{apply_first, count, exec, migrate_to, model_source, FixtureCrate, TestDb};

/// 58 and 56 bytes: each fits PostgreSQL's 63, their `<owner>_<new>` is 115.
const OWNER: &str = "customer_subscription_billing_period_line_item_adjustments";
const NEW: &str = "customer_subscription_billing_period_line_item_addresses";

fn schema() -> String {
    format!(
        "// @generated automatically by Diesel CLI.\n\ndiesel::table! {{\n    {OWNER} (id) {{\n        id -> Int4,\n        label -> Text,\n        street -> Text,\n        city -> Nullable<Text>,\n    }}\n}}\n"
    )
}

fn create_sql() -> String {
    format!(
        "CREATE TABLE {OWNER} (\n    id serial PRIMARY KEY,\n    label text NOT NULL,\n    street text NOT NULL,\n    city text\n);\n"
    )
}

fn attribute(name: Option<&str>) -> String {
    let name = name.map(|n| format!(", name = {n}")).unwrap_or_default();
    format!("#[zmig(extract(into = {NEW}, columns(street, city){name}), stage = \"contract\")]")
}

#[test]
fn long_table_names_get_a_named_migration_that_works_through_every_phase() {
    assert!(OWNER.len() <= 63 && NEW.len() <= 63);
    let fixture = FixtureCrate::new(
        "long_names",
        &schema(),
        &model_source(OWNER, "Adjustment", &attribute(None)),
        &create_sql(),
        &format!("DROP TABLE {OWNER};\n"),
    );

    // The default name is refused where the attribute is, with the name to write instead.
    let refused = fixture.generate(false).unwrap_err();
    let default = format!("{OWNER}_{NEW}");
    assert!(
        refused.contains(&format!("default name `{default}`"))
            && refused.contains("is 115 characters")
            && refused.contains("src/models.rs"),
        "{refused}"
    );
    assert_eq!(
        fixture.generated_files().len(),
        0,
        "nothing written on a refusal"
    );
    let suggested = refused
        .split("like `name = ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no suggested name in: {refused}"))
        .to_owned();
    assert!(suggested.len() <= 40, "{suggested}");

    fixture.set_models(&model_source(
        OWNER,
        "Adjustment",
        &attribute(Some(&suggested)),
    ));
    fixture.generate(false).unwrap();

    let db = TestDb::new("long_names");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 2); // create + expand
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {OWNER} (label, street, city)
             SELECT 'l' || g, g || ' Main St', CASE WHEN g % 3 = 0 THEN NULL ELSE 'Boston' END
             FROM generate_series(1, 3000) g"
        ),
    );
    migrate_to(&db.url, &fixture, "dual_write");

    // Every function and trigger zmig created has a name of its own, none cut by PostgreSQL.
    let functions = count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM pg_proc WHERE proname LIKE 'zmig\\_{suggested}\\_%'"),
    );
    let distinct = count(
        &mut conn,
        &format!(
            "SELECT count(DISTINCT proname) AS n FROM pg_proc WHERE proname LIKE 'zmig\\_{suggested}\\_%'"
        ),
    );
    assert!(
        functions >= 4 && functions == distinct,
        "{functions} functions, {distinct} names"
    );
    for function in ["backfill", "diff", "key_range"] {
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM pg_proc WHERE proname = 'zmig_{suggested}_{function}'"),
            ),
            1,
            "zmig_{suggested}_{function}"
        );
    }
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(DISTINCT tgname) AS n FROM pg_trigger WHERE tgrelid = '{OWNER}'::regclass AND NOT tgisinternal"
            ),
        ),
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = '{OWNER}'::regclass AND NOT tgisinternal"
            ),
        ),
    );

    // Rows written under dual_write are synced; the backfill copies the rest.
    exec(
        &mut conn,
        &format!("UPDATE {OWNER} SET street = 'moved ' || id WHERE id % 10 = 0"),
    );
    let report = backfill(
        &db.url,
        &suggested,
        &BackfillOptions {
            workers: 2,
            batch_size: 500,
            progress: ProgressMode::Silent,
            ..BackfillOptions::default()
        },
    )
    .unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(
        count(&mut conn, &format!("SELECT count(*) AS n FROM {NEW}")),
        3000
    );
    let verified = verify(&mut conn, &suggested).unwrap();
    assert_eq!(verified.differing, 0, "{verified:?}");

    // write_new's gate accepts that verification; contract drops the old columns.
    migrate_to(&db.url, &fixture, "contract");
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM {NEW} n JOIN {OWNER} o ON o.id = n.\"customer_subscription_billing_period_line_item_adjustment_id\"
                 WHERE n.street = CASE WHEN o.id % 10 = 0 THEN 'moved ' || o.id ELSE o.id || ' Main St' END"
            ),
        ),
        3000
    );
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = '{OWNER}' AND column_name IN ('street', 'city')"
            ),
        ),
        0
    );
}
