//! The Rust side `#[derive(Zmig)]` generates, used against a real database at each stage: the
//! row struct and readers (read_new), writers (write_new), and the `sync = app` wrappers.

use diesel::prelude::*;
use zmig_tests::{apply_first, count, exec, fixtures, FixtureCrate, TestDb};

use zmig_tests::caterers_app::schema::full::caterers;
use zmig_tests::caterers_app::{app, read_new, schema, write_new};

fn insert_caterer(conn: &mut PgConnection, name: &str, street1: &str) -> i32 {
    diesel::insert_into(caterers::table)
        .values((
            caterers::name.eq(name),
            caterers::email.eq(format!("{name}@example.com")),
            caterers::phone.eq("555"),
            caterers::street1.eq(street1),
            caterers::city.eq("Boston"),
            caterers::zip.eq("02110"),
            caterers::state.eq("MA"),
        ))
        .returning(caterers::id)
        .get_result(conn)
        .unwrap()
}

#[test]
fn read_new_readers_load_owners_with_their_new_rows() {
    let fixture = fixtures::caterers("rs_read");
    fixture.generate(false).unwrap();
    let db = TestDb::new("rs_read");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 3); // create, expand, dual_write
    let a = insert_caterer(&mut conn, "a", "1 Main St");
    let b = insert_caterer(&mut conn, "b", "2 Side St");

    let (owner, row) = read_new::Caterer::find_with_address(&mut conn, a)
        .unwrap()
        .unwrap();
    assert_eq!(owner.name, "a");
    let row = row.expect("the trigger wrote it");
    assert_eq!(
        (row.caterer_id, row.street1.as_str(), row.city.as_str()),
        (a, "1 Main St", "Boston")
    );
    assert!(read_new::Caterer::find_with_address(&mut conn, -1)
        .unwrap()
        .is_none());

    // An owner without a row (as before the backfill) reads as None, in order.
    exec(
        &mut conn,
        &format!("DELETE FROM addresses WHERE caterer_id = {b}"),
    );
    let owners: Vec<read_new::Caterer> = caterers::table
        .order(caterers::id)
        .select(read_new::Caterer::as_select())
        .load(&mut conn)
        .unwrap();
    let both = read_new::Caterer::with_address(&mut conn, owners).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].1.as_ref().map(|r| r.caterer_id), Some(a));
    assert_eq!(both[1].0.id, b);
    assert!(both[1].1.is_none());
    assert_eq!(
        read_new::Address::find_for(&mut conn, a)
            .unwrap()
            .map(|r| r.zip),
        Some("02110".to_owned())
    );
}

#[test]
fn write_new_writers_write_the_new_table_and_the_old_columns_follow() {
    let fixture = fixtures::caterers("rs_write");
    fixture.generate(false).unwrap();
    let db = TestDb::new("rs_write");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 4); // through write_new (an empty table passes the gate)

    use schema::shimmed::caterers as shimmed;
    let (owner, row) = write_new::Caterer::save_with_address(
        &mut conn,
        |conn| {
            diesel::insert_into(shimmed::table)
                .values(write_new::NewCaterer {
                    name: "n",
                    email: "n@x",
                    phone: "1",
                })
                .returning(write_new::Caterer::as_returning())
                .get_result(conn)
        },
        |owner| {
            Some(write_new::Address {
                caterer_id: owner.id,
                street1: "9 New Rd".into(),
                street2: None,
                city: "Austin".into(),
                state: "TX".into(),
                zip: "73301".into(),
            })
        },
    )
    .unwrap();
    assert_eq!(row.as_ref().map(|r| r.city.as_str()), Some("Austin"));
    // The reverse sync filled the old columns for instances still on the previous release.
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM caterers WHERE id = {} AND city = 'Austin'",
                owner.id
            )
        ),
        1
    );

    let mut moved = row.unwrap();
    moved.city = "Dallas".into();
    moved.save(&mut conn).unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses"), 1);
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM caterers WHERE id = {} AND city = 'Dallas'",
                owner.id
            )
        ),
        1
    );

    assert_eq!(
        write_new::Address::delete_for(&mut conn, owner.id).unwrap(),
        1
    );
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM caterers WHERE id = {} AND city IS NULL",
                owner.id
            )
        ),
        1
    );
}

#[test]
fn app_mode_wrappers_sync_in_the_writers_transaction() {
    let fixture = FixtureCrate::caterers(
        "rs_app",
        "#[zmig(extract(into = addresses, columns(street1, street2, city, state, zip), sync = app), stage = \"dual_write\")]",
    );
    fixture.generate(false).unwrap();
    let db = TestDb::new("rs_app");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 3);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'zmig%'"
        ),
        0,
        "app mode has no triggers"
    );

    let owner = app::Caterer::zmig_insert(&mut conn, |conn| {
        let id = insert_caterer(conn, "w", "5 Elm St");
        caterers::table
            .find(id)
            .select(app::Caterer::as_select())
            .first(conn)
    })
    .unwrap();
    assert_eq!(count(&mut conn, &format!("SELECT count(*) AS n FROM addresses WHERE caterer_id = {} AND street1 = '5 Elm St'", owner.id)), 1);

    app::Caterer::zmig_update(&mut conn, owner.id, |conn| {
        diesel::update(caterers::table.find(owner.id))
            .set(caterers::city.eq("Salem"))
            .execute(conn)
    })
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM addresses WHERE city = 'Salem'"
        ),
        1
    );

    // A failed write rolls the sync back with it.
    let failed = app::Caterer::zmig_update(&mut conn, owner.id, |conn| {
        diesel::update(caterers::table.find(owner.id))
            .set(caterers::city.eq("Lost"))
            .execute(conn)?;
        Err::<usize, _>(diesel::result::Error::RollbackTransaction)
    });
    assert!(failed.is_err());
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM addresses WHERE city = 'Salem'"
        ),
        1
    );

    // A write that bypasses the wrappers is not synced: that is app mode's trade-off.
    diesel::update(caterers::table.find(owner.id))
        .set(caterers::city.eq("Bypassed"))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM addresses WHERE city = 'Bypassed'"
        ),
        0
    );

    assert_eq!(app::Caterer::zmig_delete(&mut conn, owner.id).unwrap(), 1);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM addresses"), 0);
}

#[test]
fn with_a_non_unique_owner_key_the_readers_and_writers_deal_in_every_row_of_an_owner() {
    use zmig_tests::users_accounts_app::write_new::{Account, User};

    let fixture = fixtures::users_accounts("rs_accounts");
    fixture.generate(false).unwrap();
    let db = TestDb::new("rs_accounts");
    let mut conn = db.conn();
    apply_first(&mut conn, &fixture, 1);
    exec(&mut conn, "INSERT INTO users (name, account_id, account_name) VALUES ('ann', 1, 'own'), ('bob', 2, 'bobs')");
    apply_first(&mut conn, &fixture, 2); // expand, dual_write
    exec(&mut conn, "SELECT * FROM zmig_users_accounts_backfill(-9223372036854775808, 9223372036854775807, 1000)");
    apply_first(&mut conn, &fixture, 1); // write_new
    let ann = count(&mut conn, "SELECT id AS n FROM users WHERE name = 'ann'");
    let bob = count(&mut conn, "SELECT id AS n FROM users WHERE name = 'bob'");

    // A second account for ann: saved, saved again with a change, and her own stays hers.
    let mut second = Account {
        user_id: ann,
        account_id: 500,
        name: "second".into(),
        plan: None,
    };
    assert_eq!(second.save(&mut conn).unwrap(), second);
    second.plan = Some("team".into());
    assert_eq!(second.save(&mut conn).unwrap(), second);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM users WHERE name = 'ann' AND account_id = 1 AND account_name = 'own'"), 1);
    // Bob's save of ann's account id fails; it does not take her row over.
    let theirs = Account {
        user_id: bob,
        account_id: 500,
        name: "stolen".into(),
        plan: None,
    };
    assert!(theirs.save(&mut conn).is_err());

    let rows = Account::find_for(&mut conn, ann).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.account_id).collect::<Vec<_>>(),
        [1, 500]
    );
    assert_eq!(rows[1], second);
    let (user, rows) = User::find_with_account(&mut conn, ann).unwrap().unwrap();
    assert_eq!((user.name.as_str(), rows.len()), ("ann", 2));
    let users = users_accounts_schema_users(&mut conn);
    let with = User::with_account(&mut conn, users).unwrap();
    assert_eq!(
        with.iter()
            .map(|(u, rows)| (u.name.as_str(), rows.len()))
            .collect::<Vec<_>>(),
        [("ann", 2), ("bob", 1)]
    );
    assert_eq!(Account::delete_for(&mut conn, ann).unwrap(), 2);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM users WHERE name = 'ann' AND account_id IS NULL"
        ),
        1
    );
}

fn users_accounts_schema_users(
    conn: &mut PgConnection,
) -> Vec<zmig_tests::users_accounts_app::write_new::User> {
    use zmig_tests::users_accounts_app::schema::users;
    users::table
        .order(users::id)
        .select(zmig_tests::users_accounts_app::write_new::User::as_select())
        .load(conn)
        .unwrap()
}
