//! Applies pending Diesel migrations, retrying one that gave up on its `lock_timeout`.
//!
//! zmig's migrations wait at most a second for a lock and then roll back whole, so that a busy
//! table never queues its traffic behind a migration. This runner turns that into patience:
//! it tries again after a pause that grows and is jittered (so several instances starting at
//! once do not retry in lockstep), and gives up after a bounded number of tries.

use std::time::Duration;

use diesel::migration::{MigrationSource, MigrationVersion};
use diesel::pg::{Pg, PgConnection};
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

/// Whether a migration error is a lock wait that gave up (SQLSTATE 55P03). Diesel does not
/// expose the SQLSTATE of this error, so this reads PostgreSQL's (English) message.
pub fn is_lock_timeout(message: &str) -> bool {
    message.contains("lock timeout") || message.contains("could not obtain lock")
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
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325
        ^ u64::from(std::process::id())
        ^ (u64::from(nanos) << 20)
        ^ u64::from(attempt);
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
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
        assert!(!is_lock_timeout("relation \"caterers\" does not exist"));
    }
}
