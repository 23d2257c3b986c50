//! What the writer threads of the concurrency tests (`extract_backfill`, `extract_concurrent`)
//! share: the fixture shapes and their carries-rule, the five moved columns and the changes a
//! writer makes to them, and the bookkeeping of what each writer did, retrying deadlocks and
//! serialization failures.
//!
//! The random draws stay in the tests: `rand` is a dev-dependency, not one of this library's,
//! and each test draws its addresses from its own cities and states, in its own order.

use std::collections::BTreeMap;

use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::Error;
use diesel::sql_types::{Integer, Nullable, Text};

use crate::{is_retryable, FixtureCrate};

/// A transaction retried more often than this is a livelock, not bad luck.
pub const MAX_ATTEMPTS: u32 = 200;

/// What one transaction did, counted only once it has committed.
pub type Events = Vec<&'static str>;

/// What one writer did: events counted only once their transaction committed, and retries.
#[derive(Default)]
pub struct Stats {
    pub events: BTreeMap<&'static str, u64>,
    pub retries: BTreeMap<&'static str, u64>,
    /// The first retried error, with PostgreSQL's detail, for the record.
    pub first_retry: Option<String>,
}

impl Stats {
    /// Runs `op` (one transaction), again while it fails with a deadlock or serialization
    /// failure; counts its events once it succeeds.
    pub fn run(
        &mut self,
        what: &str,
        conn: &mut PgConnection,
        mut op: impl FnMut(&mut PgConnection) -> QueryResult<Events>,
    ) {
        for _ in 0..MAX_ATTEMPTS {
            match op(conn) {
                Ok(events) => {
                    for event in events {
                        self.count(event);
                    }
                    return;
                }
                Err(e) => match is_retryable(&e) {
                    Some(kind) => {
                        *self.retries.entry(kind).or_default() += 1;
                        if self.first_retry.is_none() {
                            let detail = match &e {
                                Error::DatabaseError(_, info) => {
                                    info.details().unwrap_or_default().replace('\n', " ")
                                }
                                _ => String::new(),
                            };
                            self.first_retry = Some(format!("{what}: {e} ({detail})"));
                        }
                    }
                    None => panic!("{what}: {e}"),
                },
            }
        }
        panic!("{what}: still failing after {MAX_ATTEMPTS} attempts");
    }

    /// Counts one `event`.
    pub fn count(&mut self, event: &'static str) {
        *self.events.entry(event).or_default() += 1;
    }

    pub fn merge(all: Vec<Stats>) -> Stats {
        let mut total = Stats::default();
        for stats in all {
            for (k, v) in stats.events {
                *total.events.entry(k).or_default() += v;
            }
            for (k, v) in stats.retries {
                *total.retries.entry(k).or_default() += v;
            }
            total.first_retry = total.first_retry.or(stats.first_retry);
        }
        total
    }

    pub fn get(&self, event: &str) -> u64 {
        self.events.get(event).copied().unwrap_or(0)
    }

    /// Retries of every kind.
    pub fn retries(&self) -> u64 {
        self.retries.values().sum()
    }

    pub fn assert_at_least(&self, label: &str, minimums: &[(&str, u64)]) {
        for &(event, min) in minimums {
            let n = self.get(event);
            assert!(
                n >= min,
                "{label}: only {n} `{event}` (want at least {min}); all: {:?}",
                self.events
            );
        }
    }
}

/// One of the two fixtures (plain and filtered), and how to state its carries-rule in SQL.
pub struct Shape {
    /// Names the test database and the fixture crate, and labels the output.
    pub label: &'static str,
    pub make: fn(&str) -> FixtureCrate,
    /// The extract's migration name, as the backfill and `verify` take it.
    pub migration: &'static str,
    /// The new table's owner key column.
    pub key: &'static str,
    /// Whether the fixture has the filter `street2 IS NOT NULL AND state <> 'XX'`.
    pub filtered: bool,
    /// Seeds the writers' RNGs.
    pub seed: u64,
}

impl Shape {
    /// Whether the caterer row `alias` carries an address: the moved columns that are NOT NULL
    /// in the new table are all set and (if the fixture has one) it passes the filter. Never
    /// NULL.
    pub fn carries(&self, alias: &str) -> String {
        let mut rule = format!(
            "{alias}.street1 IS NOT NULL AND {alias}.city IS NOT NULL AND {alias}.state IS NOT NULL AND {alias}.zip IS NOT NULL"
        );
        if self.filtered {
            rule.push_str(&format!(
                " AND ({alias}.street2 IS NOT NULL AND {alias}.state <> 'XX')"
            ));
        }
        format!("COALESCE(({rule}), false)")
    }
}

/// The five moved columns (`None`: NULL).
#[derive(Clone, Debug, PartialEq, QueryableByName)]
pub struct Addr {
    #[diesel(sql_type = Nullable<Text>)]
    pub street1: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub street2: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub city: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub zip: Option<String>,
}

impl Addr {
    /// No address: all five columns NULL.
    pub fn none() -> Addr {
        Addr {
            street1: None,
            street2: None,
            city: None,
            state: None,
            zip: None,
        }
    }
}

/// Binds street1, street2, city, state, zip, in that order.
pub fn bind_addr<'f>(
    q: BoxedSqlQuery<'f, Pg, SqlQuery>,
    a: &Addr,
) -> BoxedSqlQuery<'f, Pg, SqlQuery> {
    q.bind::<Nullable<Text>, _>(a.street1.clone())
        .bind::<Nullable<Text>, _>(a.street2.clone())
        .bind::<Nullable<Text>, _>(a.city.clone())
        .bind::<Nullable<Text>, _>(a.state.clone())
        .bind::<Nullable<Text>, _>(a.zip.clone())
}

/// `sql`, ready for binds of types chosen at run time.
pub fn boxed(sql: impl Into<String>) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
    diesel::sql_query(sql.into()).into_boxed::<Pg>()
}

/// A row's `id`.
#[derive(QueryableByName)]
pub struct Id {
    #[diesel(sql_type = Integer)]
    pub id: i32,
}

/// Inserts a caterer with all its columns, as the releases before write_new do; returns its
/// id.
pub fn insert_caterer(conn: &mut PgConnection, tag: &str, a: &Addr) -> QueryResult<i32> {
    let q = boxed(
        "INSERT INTO caterers (name, email, phone, street1, street2, city, state, zip)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind::<Text, _>(format!("caterer {tag}"))
    .bind::<Text, _>(format!("{tag}@example.com"))
    .bind::<Text, _>(format!("555-{tag}"));
    bind_addr(q, a).get_result::<Id>(conn).map(|row| row.id)
}

/// A change to some address columns of a caterer, as a writer of the owner table makes it
/// (every NOT NULL column stays set).
pub enum Change {
    Street2(Option<String>),
    State(String),
    Lines {
        street1: String,
        city: String,
        zip: String,
    },
    All(Addr),
}

impl Change {
    /// The assignments of an `UPDATE caterers ... SET`, to parameters from `$2` on (`$1` is
    /// left to pick the row).
    pub fn set_list(&self) -> &'static str {
        match self {
            Change::Street2(_) => "street2 = $2",
            Change::State(_) => "state = $2",
            Change::Lines { .. } => "street1 = $2, city = $3, zip = $4",
            Change::All(_) => "street1 = $2, street2 = $3, city = $4, state = $5, zip = $6",
        }
    }

    /// Binds the values of [`Change::set_list`]'s parameters, in order, after what `q` has.
    pub fn bind_values<'f>(
        &self,
        q: BoxedSqlQuery<'f, Pg, SqlQuery>,
    ) -> BoxedSqlQuery<'f, Pg, SqlQuery> {
        match self {
            Change::Street2(v) => q.bind::<Nullable<Text>, _>(v.clone()),
            Change::State(v) => q.bind::<Text, _>(v.clone()),
            Change::Lines { street1, city, zip } => q
                .bind::<Text, _>(street1.clone())
                .bind::<Text, _>(city.clone())
                .bind::<Text, _>(zip.clone()),
            Change::All(a) => bind_addr(q, a),
        }
    }
}
