//! The retrying runner recognises a lock wait that gave up by what it is, SQLSTATE 55P03, not by
//! PostgreSQL's English wording (issue 11, item 10): on a server whose `lc_messages` is German,
//! a migration that times out on a lock is retried until it gets it, whether it is one of zmig's
//! (its lock loop names the SQLSTATE in a message of its own) or a team's own, by a superuser
//! (the runner asks for English messages) and by an ordinary role (which may not).
//!
//! The server is a cluster of this test's own, started with `lc_messages = 'de_DE.utf8'`; it
//! needs that locale on the machine (`localedef -i de_DE -f UTF-8 de_DE.UTF-8`, which `.ci/run`
//! does), and is skipped with the reason printed where it is missing or the server was built
//! without translated messages (the npm registry's builds `.ci/pg-major` runs).

use std::fs;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::FileBasedMigrations;
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy, LOCK_NOT_AVAILABLE};
use zmig_tests::cluster::Cluster;
use zmig_tests::{fixtures, UpTo};

const LOCALE: &str = "de_DE.utf8";

/// A German-speaking cluster, or `None` (with the reason printed) where the locale is missing.
fn german_cluster(label: &str) -> Option<Cluster> {
    let locales = Command::new("locale").arg("-a").output().unwrap();
    if !String::from_utf8_lossy(&locales.stdout)
        .lines()
        .any(|l| l == LOCALE)
    {
        eprintln!(
            "SKIPPED {label}: the {LOCALE} locale is not on this machine \
             (localedef -i de_DE -f UTF-8 de_DE.UTF-8; .ci/run does)"
        );
        return None;
    }
    let cluster = Cluster::start(label, &[&format!("lc_messages = '{LOCALE}'")]);
    // A server built without message translations (NLS) speaks English in any locale.
    let mut conn = PgConnection::establish(&cluster.url("postgres")).unwrap();
    let message = conn.batch_execute("SELECT 1 / 0").unwrap_err().to_string();
    if !message.contains("durch Null") {
        eprintln!("SKIPPED {label}: this PostgreSQL build has no translated messages ({message})");
        return None;
    }
    Some(cluster)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 50,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
    }
}

/// Holds `lock` on `table` from another session for `hold`; returns once it is held.
fn hold_lock(url: &str, table: &str, lock: &str, hold: Duration) -> thread::JoinHandle<()> {
    let (url, sql) = (
        url.to_owned(),
        format!("BEGIN; LOCK TABLE {table} IN {lock} MODE;"),
    );
    let (held, is_held) = mpsc::channel();
    let holder = thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.batch_execute(&sql).unwrap();
        held.send(()).unwrap();
        thread::sleep(hold);
        conn.batch_execute("COMMIT").unwrap();
    });
    is_held.recv().unwrap();
    holder
}

#[test]
fn a_teams_own_migration_that_times_out_on_a_lock_is_retried_in_german() {
    let Some(cluster) = german_cluster("locale_own") else {
        return;
    };
    let mut admin = PgConnection::establish(&cluster.url("postgres")).unwrap();
    admin.batch_execute("CREATE DATABASE app").unwrap();
    let url = cluster.url("app");
    let mut conn = PgConnection::establish(&url).unwrap();
    conn.batch_execute("CREATE TABLE busy (id int)").unwrap();

    let dir = std::env::temp_dir().join(format!("zmig-locale-own-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let folder = dir.join("2026-01-01-000000-0000_add_note");
    fs::create_dir_all(&folder).unwrap();
    let up = "SET LOCAL lock_timeout = '100ms';\nALTER TABLE busy ADD COLUMN note text;\n";
    fs::write(folder.join("up.sql"), up).unwrap();
    fs::write(
        folder.join("down.sql"),
        "ALTER TABLE busy DROP COLUMN note;\n",
    )
    .unwrap();

    // The server does speak German: the same statement's timeout, read as the runner reads it.
    let holder = hold_lock(&url, "busy", "ACCESS SHARE", Duration::from_millis(300));
    let german = conn
        .transaction(|conn| conn.batch_execute(up))
        .expect_err("the lock is held")
        .to_string();
    holder.join().unwrap();
    assert!(
        !german.contains("lock timeout") && german.contains("Sperre"),
        "not German: {german}"
    );

    let holder = hold_lock(&url, "busy", "ACCESS SHARE", Duration::from_secs(2));
    let mut retries = Vec::new();
    let applied = run_pending_with_retry(
        &mut conn,
        FileBasedMigrations::from_path(&dir).unwrap(),
        &policy(),
        |_, _, message| retries.push(message.to_owned()),
    );
    holder.join().unwrap();
    let applied = applied.unwrap_or_else(|e| panic!("not retried: {e}\n{}", cluster.log()));
    assert_eq!(applied.len(), 1);
    assert!(!retries.is_empty(), "the lock was held, so it was retried");
    // The runner put the session's language back.
    let language: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_setting('lc_messages')",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(language, LOCALE);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn zmigs_own_migration_is_retried_in_german_by_a_role_that_cannot_choose_english() {
    let Some(cluster) = german_cluster("locale_zmig") else {
        return;
    };
    let mut admin = PgConnection::establish(&cluster.url("postgres")).unwrap();
    admin.batch_execute("CREATE ROLE app LOGIN").unwrap();
    admin
        .batch_execute("CREATE DATABASE app OWNER app")
        .unwrap();
    let as_app = cluster.url("app").replace("postgres@", "app@");
    let as_super = cluster.url("app");
    let fixture = fixtures::caterers("locale_zmig");
    fixture.generate(false).unwrap();
    let upto = |phase: &str| UpTo {
        inner: fixture.migrations(),
        phase: phase.to_owned(),
    };
    let mut conn = PgConnection::establish(&as_app).unwrap();
    run_pending_with_retry(&mut conn, upto("expand"), &policy(), |_, _, _| {}).unwrap();
    // The role may not ask for English.
    let refused = conn
        .batch_execute("SET lc_messages = 'C'")
        .expect_err("lc_messages is a superuser's setting");
    println!("as app: {refused}");

    // A session holds the table for longer than the lock loop's budget: the dual_write
    // migration gives up once, nothing changed, and is applied on a later try.
    let holder = hold_lock(
        &as_super,
        "caterers",
        "ROW EXCLUSIVE",
        Duration::from_secs(10),
    );
    let mut retries = Vec::new();
    let applied = run_pending_with_retry(&mut conn, upto("dual_write"), &policy(), |_, _, m| {
        retries.push(m.to_owned())
    });
    holder.join().unwrap();
    let applied = applied.unwrap_or_else(|e| panic!("not retried: {e}"));
    assert_eq!(applied.len(), 1);
    assert!(
        retries.iter().any(|m| m.contains(LOCK_NOT_AVAILABLE)),
        "{retries:?}"
    );
    // The lock loop's message is zmig's, with the migration and the table named.
    println!("{}", retries[0]);
    assert!(retries[0].contains("caterers_addresses") && retries[0].contains("\"caterers\""));
}
