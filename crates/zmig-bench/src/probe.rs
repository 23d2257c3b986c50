//! What the application feels of a migration's locks: a session of its own that reads and
//! updates one car, again and again, while the migration runs, and the longest any of those
//! statements took. A statement that has to wait for a lock waits as long as the lock is held
//! (or until its `lock_timeout`), so the longest statement is the longest lock the application
//! met.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use zmig_runtime::migrate::is_lock_timeout;

/// How long the probe waits for a lock before giving up, and how long it rests between two
/// rounds of its statements.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub lock_timeout: Duration,
    pub every: Duration,
}

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Probed {
    /// The longest statement.
    pub longest: Duration,
    pub statements: u64,
    /// Statements that gave up on their `lock_timeout`: each waited at least that long.
    pub timeouts: u64,
}

impl Probed {
    pub fn longest_ms(&self) -> f64 {
        self.longest.as_secs_f64() * 1_000.0
    }
}

impl Probe {
    /// Runs `work` on this thread while the probe reads (`SELECT`) and updates (`UPDATE … SET
    /// year = year`, a write through whatever `cars` is at the time) car `car` of the database
    /// at `url` from another; returns what `work` returned and what the probe saw. An error of
    /// the probe other than a lock timeout is an error of the benchmark.
    pub fn around<T>(
        &self,
        url: &str,
        car: i64,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Probed)> {
        let mut conn = PgConnection::establish(url)?;
        conn.batch_execute(&format!(
            "SET lock_timeout = '{}ms'",
            self.lock_timeout.as_millis()
        ))?;
        let statements = [
            format!("SELECT make FROM cars WHERE id = {car}"),
            format!("UPDATE cars SET year = year WHERE id = {car}"),
        ];
        let done = AtomicBool::new(false);
        // Set however `work` ends, a panic included, or the scope would wait for the probe forever.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        std::thread::scope(|scope| {
            let prober = scope.spawn(|| -> Result<Probed> {
                let mut seen = Probed::default();
                while !done.load(Ordering::SeqCst) {
                    for sql in &statements {
                        let started = Instant::now();
                        let outcome = diesel::sql_query(sql).execute(&mut conn);
                        seen.longest = seen.longest.max(started.elapsed());
                        seen.statements += 1;
                        match outcome {
                            Ok(_) => {}
                            Err(e) if is_lock_timeout(&e.to_string()) => seen.timeouts += 1,
                            Err(e) => bail!("the probe's `{sql}` failed: {e}"),
                        }
                    }
                    std::thread::sleep(self.every);
                }
                Ok(seen)
            });
            let out = {
                let _stop = Stop(&done);
                work()
            };
            let seen = prober.join().map_err(|_| anyhow!("the probe panicked"))??;
            Ok((out?, seen))
        })
    }
}
