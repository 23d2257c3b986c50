//! Waiting in tests without sleeping on hope: polling the database for a condition a bounded
//! number of times, flags that are set even while a panic unwinds, and the pause checks of batch
//! workers as `pg_stat_activity` shows them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

/// Bounds on polling for a condition: tries, and the pause between two.
pub const POLL_TRIES: u32 = 1_500;
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// Polls `done` up to `POLL_TRIES` times, `POLL_EVERY` apart; panics with `what` if it never
/// holds.
pub fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..POLL_TRIES {
        if done() {
            return;
        }
        thread::sleep(POLL_EVERY);
    }
    panic!("gave up waiting: {what}");
}

/// Sets the flag when dropped, even while a panic unwinds, so nobody waits on it forever.
pub struct SetOnDrop<'a>(pub &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The text of the runtime's "is the run paused?" query (a backfill's or a swap's move), as
/// `pg_stat_activity` shows it.
pub const PAUSE_CHECK: &str =
    "SELECT paused, finished_at IS NOT NULL AS finished FROM zmig_backfill_runs%";

/// The database's clock, as text.
pub fn db_now(conn: &mut PgConnection) -> String {
    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = Text)]
        now: String,
    }
    diesel::sql_query("SELECT clock_timestamp()::text AS now")
        .get_result::<Now>(conn)
        .unwrap()
        .now
}

/// Sessions of this database whose last query was a pause check that began after `since`:
/// `(pid, when it began)`.
pub fn pause_checks(conn: &mut PgConnection, since: &str) -> Vec<(i32, String)> {
    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = Integer)]
        pid: i32,
        #[diesel(sql_type = Text)]
        started: String,
    }
    diesel::sql_query(
        "SELECT pid, query_start::text AS started FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE $1
           AND query_start > $2::timestamptz",
    )
    .bind::<Text, _>(PAUSE_CHECK)
    .bind::<Text, _>(since)
    .load::<Check>(conn)
    .unwrap()
    .into_iter()
    .map(|c| (c.pid, c.started))
    .collect()
}
