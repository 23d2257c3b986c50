//! The disk a swap takes while it runs: a session of its own samples, every few tens of
//! milliseconds, `pg_total_relation_size` of every table the swap involves (the swapped table's
//! old, temp and new tables, or the table itself before prepare and after finalize, and each
//! referencing table), and keeps the largest sum seen for each. The end of a step alone would
//! miss the peak: the move frees space as it goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Result};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// How often the sampler looks.
const EVERY: Duration = Duration::from_millis(50);

/// The largest sizes seen, in bytes, with indexes and TOAST.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    /// The swapped table: `cars` while it is a table, `cars_old` + `cars_temp` + `cars_new` while
    /// it is a view over them.
    pub swapped: i64,
    /// The referencing table, `trips`.
    pub referencing: i64,
    pub samples: u64,
}

impl Peak {
    /// The larger of each, over both.
    pub fn take(&mut self, other: Peak) {
        self.swapped = self.swapped.max(other.swapped);
        self.referencing = self.referencing.max(other.referencing);
        self.samples += other.samples;
    }
}

/// One sample. `to_regclass` of a table that is not there (yet, or any more) is NULL, and its
/// size then counts 0; a view has no storage of its own. Each table counts once: a sample that
/// waited for prepare's lock on `cars` measures it after the commit, when `cars_old` names the
/// same table.
const SAMPLE: &str = "SELECT
    (SELECT coalesce(sum(pg_total_relation_size(t)), 0) FROM (SELECT DISTINCT t FROM unnest(ARRAY[
        to_regclass('cars'), to_regclass('cars_old'), to_regclass('cars_temp'), to_regclass('cars_new')]) t
     WHERE t IS NOT NULL) s)::bigint AS swapped,
    coalesce(pg_total_relation_size(to_regclass('trips')), 0)::bigint AS referencing";

fn sample(conn: &mut PgConnection) -> QueryResult<Peak> {
    #[derive(QueryableByName)]
    struct Sizes {
        #[diesel(sql_type = BigInt)]
        swapped: i64,
        #[diesel(sql_type = BigInt)]
        referencing: i64,
    }
    let sizes = diesel::sql_query(SAMPLE).get_result::<Sizes>(conn)?;
    Ok(Peak {
        swapped: sizes.swapped,
        referencing: sizes.referencing,
        samples: 1,
    })
}

/// Runs `work` on this thread while another samples the sizes on the database at `url`; returns
/// what `work` returned and the peak, a sample taken after `work` included. A sample that fails
/// (a table dropped between `to_regclass` and its size, as finalize does) is skipped.
pub fn around<T>(url: &str, work: impl FnOnce() -> Result<T>) -> Result<(T, Peak)> {
    let mut conn = PgConnection::establish(url)?;
    let done = AtomicBool::new(false);
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = Peak::default();
            loop {
                let last = done.load(Ordering::SeqCst);
                if let Ok(now) = sample(&mut conn) {
                    peak.take(now);
                }
                if last {
                    return peak;
                }
                std::thread::sleep(EVERY);
            }
        });
        let out = {
            let _stop = Stop(&done);
            work()
        };
        let peak = sampler
            .join()
            .map_err(|_| anyhow!("the disk sampler panicked"))?;
        Ok((out?, peak))
    })
}
