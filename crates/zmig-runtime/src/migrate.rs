//! Applies pending Diesel migrations, retrying one that gave up waiting for a lock.
//!
//! zmig's migrations take their locks in a loop of short attempts (so a busy table never
//! queues its traffic behind them for long, and any runner, `diesel migration run` included,
//! applies them under load); past their budget they roll back whole with SQLSTATE 55P03. This
//! runner turns that into more patience: it tries again after a pause that grows and is
//! jittered (so several instances starting at once do not retry in lockstep), and gives up
//! after a bounded number of tries. It retries other migrations' lock timeouts the same way.
//! Before it starts, it measures the free disk where it can and gives it to the session
//! (`zmig.free_disk_bytes`), so that a swap's prepare refuses when its move could not fit.

use std::time::Duration;

use diesel::migration::{Migration, MigrationSource, MigrationVersion};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per migration, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// A migration that failed for good.
#[derive(Debug, thiserror::Error)]
#[error("migration {migration} failed after {attempts} attempt(s): {message}")]
pub struct MigrateError {
    pub migration: String,
    pub attempts: u32,
    pub message: String,
}

/// Whether a migration error is a lock wait that gave up (SQLSTATE 55P03, `lock_not_available`).
///
/// Diesel does not expose an error's SQLSTATE, only its message, which the server words in
/// the session's `lc_messages`. So zmig's migrations catch 55P03 themselves (their lock loops
/// match it by code) and give up with a message of their own that names it,
/// [`LOCK_NOT_AVAILABLE`], in any language; other migrations' lock timeouts are recognised by
/// PostgreSQL's English message, which [`run_pending_with_retry`] asks for where the role may.
pub fn is_lock_timeout(message: &str) -> bool {
    message.contains(LOCK_NOT_AVAILABLE)
        || message.contains("lock timeout")
        || message.contains("could not obtain lock")
}

/// How zmig's generated migrations begin the message of a lock wait that gave up (the
/// codegen's `sql::LOCK_NOT_AVAILABLE`; `tests/runtime_locale.rs` fails if they disagree: its retry is recognised by this).
pub const LOCK_NOT_AVAILABLE: &str = "lock not available (SQLSTATE 55P03)";

/// Sets the session's `lc_messages` to `C`, so the server's messages are in English, and
/// returns the setting to put back; `None` where the role may not change it (it is a
/// superuser's setting unless granted), which leaves the session as it was.
fn english_messages(conn: &mut PgConnection) -> Option<String> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let saved = diesel::sql_query("SELECT current_setting('lc_messages') AS value")
        .get_result::<Setting>(conn)
        .ok()?
        .value;
    diesel::sql_query("SELECT set_config('lc_messages', 'C', false) AS value")
        .get_result::<Setting>(conn)
        .ok()?;
    Some(saved)
}

/// Applies every pending migration of `source` in order, retrying lock timeouts per `policy`.
/// `on_retry(migration, attempt, error)` is told of each retry (for logs).
pub fn run_pending_with_retry<S: MigrationSource<Pg>>(
    conn: &mut PgConnection,
    source: S,
    policy: &RetryPolicy,
    mut on_retry: impl FnMut(&str, u32, &str),
) -> Result<Vec<MigrationVersion<'static>>, MigrateError> {
    let pending = conn.pending_migrations(source).map_err(|e| MigrateError {
        migration: "(listing pending migrations)".to_owned(),
        attempts: 1,
        message: e.to_string(),
    })?;
    let saved_messages = english_messages(conn);
    // Only a swap's prepare reads it (`<version>_<swap>_prepare`): no other deploy pays for it.
    let measured = pending
        .iter()
        .any(|m| m.name().to_string().ends_with("_prepare"))
        && measure_free_disk(conn);
    let result = apply_each(conn, pending, policy, &mut on_retry);
    if let Some(saved) = saved_messages {
        let _ = diesel::sql_query("SELECT set_config('lc_messages', $1, false)")
            .bind::<Text, _>(saved)
            .execute(conn);
    }
    if measured {
        // A pooled connection lives on: a later run measures again rather than trust this.
        let _ =
            diesel::sql_query("SELECT set_config('zmig.free_disk_bytes', '', false)").execute(conn);
    }
    result
}

/// Gives a swap's prepare migration the free space to check its disk estimate against (see
/// [`crate::disk`]): `zmig.free_disk_bytes`, measured where PostgreSQL shows this role the data
/// directory on this machine. Left alone when the session has it already (`PGOPTIONS='-c
/// zmig.free_disk_bytes=BYTES'`, for a server zmig cannot measure), and unset when it cannot be
/// measured: prepare then reports its estimate and goes on. Whether it set it.
fn measure_free_disk(conn: &mut PgConnection) -> bool {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        value: Option<String>,
    }
    let given = diesel::sql_query(
        "SELECT nullif(current_setting('zmig.free_disk_bytes', true), '') AS value",
    )
    .get_result::<Setting>(conn);
    if !matches!(given, Ok(Setting { value: None })) {
        return false;
    }
    let Ok(crate::disk::FreeDisk::Measured { bytes, .. }) =
        crate::disk::free_for_database(conn, crate::disk::DiskCheck::Measure)
    else {
        return false;
    };
    diesel::sql_query("SELECT set_config('zmig.free_disk_bytes', $1, false)")
        .bind::<Text, _>(bytes.to_string())
        .execute(conn)
        .is_ok()
}

fn apply_each(
    conn: &mut PgConnection,
    pending: Vec<Box<dyn Migration<Pg> + '_>>,
    policy: &RetryPolicy,
    on_retry: &mut impl FnMut(&str, u32, &str),
) -> Result<Vec<MigrationVersion<'static>>, MigrateError> {
    let mut applied = Vec::new();
    for migration in pending {
        let name = migration.name().to_string();
        let mut attempt = 1;
        loop {
            match conn.run_migration(&*migration) {
                Ok(version) => {
                    applied.push(version);
                    break;
                }
                Err(error) => {
                    let message = error.to_string();
                    if attempt >= policy.attempts || !is_lock_timeout(&message) {
                        return Err(MigrateError {
                            migration: name,
                            attempts: attempt,
                            message,
                        });
                    }
                    on_retry(&name, attempt, &message);
                    std::thread::sleep(delay(policy, attempt, &name));
                    attempt += 1;
                }
            }
        }
    }
    Ok(applied)
}

/// Exponential back-off with "full jitter": a random point in [delay / 2, delay].
fn delay(policy: &RetryPolicy, attempt: u32, name: &str) -> Duration {
    let exponential = policy
        .first_delay
        .saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let capped = exponential.min(policy.max_delay);
    let jitter = jitter_fraction(name, attempt);
    capped.mul_f64(0.5 + 0.5 * jitter)
}

/// A fraction in [0, 1) that differs between processes and attempts; no RNG dependency needed.
fn jitter_fraction(name: &str, attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = format!("{}:{nanos}:{attempt}:{name}", std::process::id());
    let hash = zmig_core::names::fnv1a(seed.as_bytes());
    (hash % 1_000_000) as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let policy = RetryPolicy {
            attempts: 20,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for attempt in 1..20 {
            let d = delay(&policy, attempt, "m");
            let full = (policy.first_delay * 2u32.pow((attempt - 1).min(16))).min(policy.max_delay);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn recognises_lock_timeouts_only() {
        assert!(is_lock_timeout(
            "Failed to run 2026_x with: canceling statement due to lock timeout"
        ));
        assert!(is_lock_timeout(
            "Failed to run 2026_x with: zmig m: lock not available (SQLSTATE 55P03): could not lock"
        ));
        assert!(!is_lock_timeout("relation \"caterers\" does not exist"));
    }
}
