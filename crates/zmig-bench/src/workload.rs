//! The application's writes, as a Diesel service issues them: single-row statements through
//! Diesel's typed query builder (prepared once per connection and cached), each in its own
//! transaction (autocommit), in a closed loop: the next write starts when the previous one has
//! committed. Values come from a seeded generator, so the baseline and zmig see the same writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::fixture::caterers;

/// The kinds of write the benchmarks make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `UPDATE caterers SET street1 = …, updated_at = now() WHERE id = …`: a moved column.
    Moved,
    /// `UPDATE caterers SET phone = …, updated_at = now() WHERE id = …`: no moved column.
    Other,
    /// `INSERT INTO caterers (…) VALUES (…)`: a new owner with an address.
    Insert,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Moved => "moved",
            Kind::Other => "other",
            Kind::Insert => "insert",
        }
    }
}

/// Which writes a loop makes.
#[derive(Debug, Clone, Copy)]
pub enum Mix {
    Only(Kind),
    /// 40 % moved-column updates, 40 % other-column updates, 20 % inserts.
    Mixed,
}

/// A small, fast, seedable generator (SplitMix64): good enough to pick rows and values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const STREETS: [&str; 16] = [
    "Maple", "Oak", "Cedar", "Pine", "Elm", "Willow", "Birch", "Harbor", "Lincoln", "Madison",
    "Church", "Mill", "Market", "Union", "Highland", "Prospect",
];
const SUFFIXES: [&str; 6] = ["St", "Ave", "Rd", "Blvd", "Ln", "Dr"];
const CITIES: [&str; 8] = [
    "Boston", "Austin", "Denver", "Tulsa", "Reno", "Salem", "Dayton", "Fresno",
];
const STATES: [&str; 8] = ["MA", "TX", "CO", "OK", "NV", "OR", "OH", "CA"];

fn street(rng: &mut Rng) -> String {
    format!(
        "{} {} {}",
        1 + rng.below(9_999),
        rng.pick(&STREETS),
        rng.pick(&SUFFIXES)
    )
}

fn phone(rng: &mut Rng) -> String {
    format!("+1 {}-555-{:04}", 200 + rng.below(800), rng.below(10_000))
}

/// One writer: a connection, a generator, and the owners it may update (`1..=rows`).
pub struct Writer {
    conn: PgConnection,
    rng: Rng,
    rows: i64,
}

/// What a loop did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ops: u64,
    pub elapsed: Duration,
    /// Latency of every write, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Writes retried after a deadlock or serialization failure.
    pub retries: u64,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Merges the outcomes of writers that ran side by side: their writes add up over the
    /// longest of their times.
    pub fn merge(outcomes: Vec<Outcome>) -> Outcome {
        let mut all = Outcome::default();
        for outcome in outcomes {
            all.ops += outcome.ops;
            all.elapsed = all.elapsed.max(outcome.elapsed);
            all.latencies_ms.extend(outcome.latencies_ms);
            all.retries += outcome.retries;
        }
        all
    }

    /// Adds `later`, which ran after `self` (not beside it): writes and times add up.
    pub fn merge_in_turn(mut self, later: Outcome) -> Outcome {
        self.ops += later.ops;
        self.elapsed += later.elapsed;
        self.latencies_ms.extend(later.latencies_ms);
        self.retries += later.retries;
        self
    }

    /// The latencies, sorted, for quantiles.
    pub fn sorted_latencies(&self) -> Vec<f64> {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }
}

impl Writer {
    pub fn new(conn: PgConnection, seed: u64, rows: i64) -> Writer {
        Writer {
            conn,
            rng: Rng::new(seed),
            rows: rows.max(1),
        }
    }

    /// Restarts the generator, so a later loop makes the same writes as an earlier one.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    fn write(&mut self, kind: Kind) -> QueryResult<()> {
        use caterers::dsl;
        let id = 1 + self.rng.below(self.rows as u64) as i32;
        match kind {
            Kind::Moved => {
                let value = street(&mut self.rng);
                diesel::update(dsl::caterers.find(id))
                    .set((dsl::street1.eq(value), dsl::updated_at.eq(diesel::dsl::now)))
                    .execute(&mut self.conn)?;
            }
            Kind::Other => {
                let value = phone(&mut self.rng);
                diesel::update(dsl::caterers.find(id))
                    .set((dsl::phone.eq(value), dsl::updated_at.eq(diesel::dsl::now)))
                    .execute(&mut self.conn)?;
            }
            Kind::Insert => {
                let n = self.rng.next_u64() % 1_000_000_000;
                let street2 = (self.rng.below(3) != 0).then(|| format!("Suite {}", n % 500));
                diesel::insert_into(dsl::caterers)
                    .values((
                        dsl::name.eq(format!("New caterer {n}")),
                        dsl::email.eq(format!("new{n}@example.com")),
                        dsl::phone.eq(phone(&mut self.rng)),
                        dsl::street1.eq(street(&mut self.rng)),
                        dsl::street2.eq(street2),
                        dsl::city.eq(self.rng.pick(&CITIES)),
                        dsl::zip.eq(format!("{:05}", self.rng.below(100_000))),
                        dsl::state.eq(self.rng.pick(&STATES)),
                    ))
                    .execute(&mut self.conn)?;
            }
        }
        Ok(())
    }

    fn choose(&mut self, mix: Mix) -> Kind {
        match mix {
            Mix::Only(kind) => kind,
            Mix::Mixed => match self.rng.below(10) {
                0..=3 => Kind::Moved,
                4..=7 => Kind::Other,
                _ => Kind::Insert,
            },
        }
    }

    /// Writes in a closed loop until `deadline` passes or `stop` is set (and at least once);
    /// every write is timed.
    pub fn run(&mut self, mix: Mix, deadline: Instant, stop: &AtomicBool) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let started = Instant::now();
        let mut attempts = 0u32;
        // At least one write, however short the window: every loop has a latency to report.
        while outcome.ops == 0 || (Instant::now() < deadline && !stop.load(Ordering::Relaxed)) {
            let kind = self.choose(mix);
            let began = Instant::now();
            match self.write(kind) {
                Ok(()) => {
                    outcome.ops += 1;
                    outcome
                        .latencies_ms
                        .push(began.elapsed().as_secs_f64() * 1_000.0);
                    attempts = 0;
                }
                Err(error) if retryable(&error) && attempts < 100 => {
                    attempts += 1;
                    outcome.retries += 1;
                }
                Err(error) => bail!("a {} write failed: {error}", kind.key()),
            }
        }
        outcome.elapsed = started.elapsed();
        Ok(outcome)
    }
}

/// Deadlocks and serialization failures are worth another try; anything else is a failure.
fn retryable(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => info.message().contains("deadlock detected"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[a.below(10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
