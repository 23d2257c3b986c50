//! Issue 10's proof: an extract on a production-shaped project, end to end.
//!
//! The project is laid out as real teams lay it out: a cargo workspace with `diesel.toml` and
//! `migrations/` at its root and the models in a member crate, a schema of nineteen tables and
//! a view (custom enum types in `sql_types`, `#[max_length]`, `#[sql_name]` for a keyword, doc
//! comments), and the team's own `[print_schema] patch_file` (an array's elements made NOT
//! NULL, the view's `table!`). Its `users` table has `numeric(12,2)`, `varchar(n)`, jsonb, uuid,
//! `text[]`, timestamptz, defaults and a keyword column; eight of its GitHub columns move to
//! `github_accounts` with a rename, a widening, a filter and a non-unique owner key.
//!
//! Through all six stages, four writers insert, update and delete (plain SQL on the owner for
//! the releases before write_new, the generated writers after), with values at the limits of
//! each type; after every stage the database is compared row by row with their logs, and the
//! generated readers with the logs. Every generated folder runs with the real `diesel` CLI
//! (`migration redo`), `diesel print-schema` reproduces the committed `schema.rs` at every stage,
//! and the `schema.rs` the test compiles its readers and writers against (the fixtures under
//! `tests/fixtures/production/`) is exactly what diesel prints.
//!
//! A mutation check shows the comparison fails when a moved column loses its typmod.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::data_types::PgNumeric;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zmig_runtime::backfill::{backfill, BackfillOptions, ProgressMode};
use zmig_runtime::verify::verify;
use zmig_tests::diesel_workspace::{diesel_on_path, edit, insert_before_table, Workspace};
use zmig_tests::writes::boxed;
use zmig_tests::{count, exec, is_retryable, writer_conn, TestDb};

/// The team's code at read_new: `schema.rs` as diesel prints it once expand ran, and the model.
mod at_read_new {
    #[allow(dead_code, unused_imports)]
    pub mod schema {
        include!("fixtures/production/schema_read_new.rs");
    }
    pub mod models {
        include!("fixtures/production/models_read_new.rs");
    }
}

/// The team's code from write_new on: `schema.rs` with zmig's shim applied, and the model.
mod at_write_new {
    #[allow(dead_code, unused_imports)]
    pub mod schema {
        include!("fixtures/production/schema_write_new.rs");
    }
    pub mod models {
        include!("fixtures/production/models_write_new.rs");
    }
}

const MIGRATION: &str = "users_github_accounts";
const SEEDED: i32 = 3_000;
const WRITERS: usize = 4;
/// Operations each writer does at least per stage (and goes on while the stage's work runs).
const OPS_PER_STAGE: usize = 150;
const MEMBER_SCHEMA: &str = "crates/app/src/schema.rs";
const TEAM_PATCH: &str = "crates/app/src/schema.patch";

const CREATE: &str = r#"CREATE TYPE user_kind AS ENUM ('person', 'organization', 'bot');
CREATE TYPE team_role AS ENUM ('owner', 'maintainer');
CREATE TYPE dependency_kind AS ENUM ('normal', 'build', 'dev');

CREATE TABLE users (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL,
    email varchar(254),
    "type" varchar(20) NOT NULL DEFAULT 'person',
    kind user_kind NOT NULL DEFAULT 'person',
    gh_id integer NOT NULL UNIQUE,
    gh_login varchar(39) NOT NULL,
    gh_avatar varchar(500),
    gh_balance numeric(12,2) NOT NULL DEFAULT 0,
    gh_settings jsonb NOT NULL DEFAULT '{}',
    gh_node_id uuid DEFAULT gen_random_uuid(),
    gh_topics text[] NOT NULL DEFAULT '{}',
    gh_synced_at timestamptz DEFAULT now(),
    is_admin boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'People and organisations who sign in.';
COMMENT ON COLUMN users.gh_login IS 'Their GitHub login.';
COMMENT ON COLUMN users.gh_balance IS 'GitHub Sponsors balance in dollars, two decimals.';

CREATE TABLE emails (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users ON DELETE CASCADE,
    email varchar(254) NOT NULL,
    verified boolean NOT NULL DEFAULT false,
    token text NOT NULL DEFAULT md5(random()::text),
    token_generated_at timestamptz
);
CREATE TABLE api_tokens (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users ON DELETE CASCADE,
    name varchar(64) NOT NULL,
    token bytea NOT NULL,
    scopes text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked boolean NOT NULL DEFAULT false
);
CREATE TABLE teams (
    id serial PRIMARY KEY,
    login varchar(100) NOT NULL UNIQUE,
    github_id integer NOT NULL,
    name text,
    avatar text,
    org_id integer
);
CREATE TABLE team_members (
    team_id integer NOT NULL REFERENCES teams ON DELETE CASCADE,
    user_id integer NOT NULL REFERENCES users ON DELETE CASCADE,
    role team_role NOT NULL DEFAULT 'maintainer',
    PRIMARY KEY (team_id, user_id)
);
CREATE TABLE crates (
    id serial PRIMARY KEY,
    name varchar(64) NOT NULL UNIQUE,
    description text,
    homepage text,
    documentation text,
    repository text,
    keywords text[] NOT NULL DEFAULT '{}',
    max_upload_size integer,
    max_features smallint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN crates.keywords IS 'Never has NULL elements.';
CREATE TABLE versions (
    id serial PRIMARY KEY,
    crate_id integer NOT NULL REFERENCES crates ON DELETE CASCADE,
    num varchar(255) NOT NULL,
    features jsonb NOT NULL DEFAULT '{}',
    yanked boolean NOT NULL DEFAULT false,
    license varchar(255),
    crate_size integer,
    published_by integer REFERENCES users,
    checksum char(64) NOT NULL,
    links varchar(255),
    rust_version varchar(32),
    downloads bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (crate_id, num)
);
CREATE TABLE version_downloads (
    version_id integer NOT NULL REFERENCES versions ON DELETE CASCADE,
    downloads integer NOT NULL DEFAULT 1,
    counted integer NOT NULL DEFAULT 0,
    date date NOT NULL DEFAULT CURRENT_DATE,
    processed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (version_id, date)
);
CREATE TABLE dependencies (
    id serial PRIMARY KEY,
    version_id integer NOT NULL REFERENCES versions ON DELETE CASCADE,
    crate_id integer NOT NULL REFERENCES crates,
    req varchar NOT NULL,
    optional boolean NOT NULL,
    default_features boolean NOT NULL,
    features text[] NOT NULL,
    target varchar,
    kind dependency_kind NOT NULL DEFAULT 'normal',
    explicit_name varchar
);
CREATE TABLE categories (
    id serial PRIMARY KEY,
    category varchar NOT NULL UNIQUE,
    slug varchar NOT NULL UNIQUE,
    description varchar NOT NULL DEFAULT '',
    crates_cnt integer NOT NULL DEFAULT 0,
    path text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE keywords (
    id serial PRIMARY KEY,
    keyword text NOT NULL UNIQUE,
    crates_cnt integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE crates_categories (
    crate_id integer NOT NULL REFERENCES crates ON DELETE CASCADE,
    category_id integer NOT NULL REFERENCES categories ON DELETE CASCADE,
    PRIMARY KEY (crate_id, category_id)
);
CREATE TABLE crates_keywords (
    crate_id integer NOT NULL REFERENCES crates ON DELETE CASCADE,
    keyword_id integer NOT NULL REFERENCES keywords ON DELETE CASCADE,
    PRIMARY KEY (crate_id, keyword_id)
);
CREATE TABLE crate_owners (
    crate_id integer NOT NULL REFERENCES crates ON DELETE CASCADE,
    owner_id integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by integer REFERENCES users,
    deleted boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    owner_kind integer NOT NULL,
    email_notifications boolean NOT NULL DEFAULT true,
    PRIMARY KEY (crate_id, owner_id, owner_kind)
);
CREATE TABLE follows (
    user_id integer NOT NULL REFERENCES users ON DELETE CASCADE,
    crate_id integer NOT NULL REFERENCES crates ON DELETE CASCADE,
    PRIMARY KEY (user_id, crate_id)
);
CREATE TABLE reserved_crate_names (name text PRIMARY KEY);
CREATE TABLE background_jobs (
    id bigserial PRIMARY KEY,
    job_type text NOT NULL,
    data jsonb NOT NULL,
    retries integer NOT NULL DEFAULT 0,
    last_retry timestamptz NOT NULL DEFAULT '1970-01-01',
    created_at timestamptz NOT NULL DEFAULT now(),
    priority smallint NOT NULL DEFAULT 0
);
CREATE TABLE publish_limit_buckets (
    user_id integer PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    tokens integer NOT NULL,
    last_refill timestamp(3) without time zone NOT NULL DEFAULT now()
);
CREATE TABLE metadata (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    total_downloads bigint NOT NULL
);
CREATE VIEW recent_crate_downloads AS
    SELECT crate_id, sum(downloads)::bigint AS downloads FROM versions GROUP BY crate_id;
"#;

const DROP: &str = "DROP VIEW recent_crate_downloads;
DROP TABLE metadata, publish_limit_buckets, background_jobs, reserved_crate_names, follows,
    crate_owners, crates_keywords, crates_categories, keywords, categories, dependencies,
    version_downloads, versions, crates, team_members, teams, api_tokens, emails, users;
DROP TYPE dependency_kind;
DROP TYPE team_role;
DROP TYPE user_kind;
";

/// The team's diesel.toml, before it names its patch. Without its `filter`, print-schema would
/// print zmig's bookkeeping tables into schema.rs once the backfill created them (see
/// `zmig_bookkeeping_tables_stay_out_of_schema_rs`).
const DIESEL_TOML: &str = "# For documentation on how to configure this file,
# see https://diesel.rs/guides/configuring-diesel-cli

[print_schema]
file = \"crates/app/src/schema.rs\"
with_docs = true
custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]
# zmig's bookkeeping tables (the backfill's and verify's) stay out of schema.rs.
filter = { except_tables = [\"^zmig_\"] }

[migrations_directory]
dir = \"migrations\"
";

/// The line the team adds once its patch exists, with its own comment.
const PATCH_LINE: &str = "# Ours: keywords without NULLs, the recent_crate_downloads view.
patch_file = \"crates/app/src/schema.patch\"
";

const VIEW: &str = "diesel::table! {
    /// Downloads per crate (a view: print-schema does not print it).
    recent_crate_downloads (crate_id) {
        crate_id -> Int4,
        downloads -> Int8,
    }
}

";

/// Code of the member crate that needs the team's patch to compile (`keywords` would load
/// `Vec<Option<String>>`, the view would not exist).
const LIB_RS: &str = "pub mod schema;

use diesel::prelude::*;

pub fn keywords(conn: &mut PgConnection) -> QueryResult<Vec<(String, Vec<String>)>> {
    use schema::crates::dsl::*;
    crates.select((name, keywords)).load(conn)
}

pub fn recent(conn: &mut PgConnection) -> QueryResult<Vec<(i32, i64)>> {
    use schema::recent_crate_downloads::dsl::*;
    recent_crate_downloads.select((crate_id, downloads)).load(conn)
}
";

/// What the team's patch does to print-schema's output.
fn team_edits(printed: &str) -> String {
    let fixed = edit(
        printed,
        "        keywords -> Array<Nullable<Text>>,",
        "        keywords -> Array<Text>,",
    );
    insert_before_table(&fixed, "reserved_crate_names", VIEW)
}

/// The member crate's models.rs at `stage`: the read_new model before write_new, the
/// write_new model from then on; the attribute is the same but for the stage.
fn models_at(stage: &str) -> String {
    let (source, at) = match stage {
        "write_new" | "contract" => (
            include_str!("fixtures/production/models_write_new.rs"),
            "write_new",
        ),
        _ => (
            include_str!("fixtures/production/models_read_new.rs"),
            "read_new",
        ),
    };
    edit(
        source,
        &format!("stage = \"{at}\""),
        &format!("stage = \"{stage}\""),
    )
}

/// Checks `actual` against the fixture `name`; with `ZMIG_BLESS=1` rewrites it instead
/// (the test then fails: it was compiled against the old one).
fn fixture_matches(name: &str, actual: &str, blessed: &mut Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/production")
        .join(name);
    let committed = fs::read_to_string(&path).unwrap_or_default();
    if committed == actual {
        return;
    }
    if std::env::var_os("ZMIG_BLESS").is_some() {
        fs::write(&path, actual).unwrap();
        blessed.push(name.to_owned());
    } else {
        assert_same_text(
            actual,
            &committed,
            &format!("{name}: not what diesel prints (ZMIG_BLESS=1 rewrites it)"),
        );
    }
}

/// Panics with a line diff when `actual` is not `expected` (schemas are long).
fn assert_same_text(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let dir = std::env::temp_dir().join(format!("zmig-production-diff-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("expected"), expected).unwrap();
    fs::write(dir.join("actual"), actual).unwrap();
    let diff = std::process::Command::new("diff")
        .arg("-u")
        .arg(dir.join("expected"))
        .arg(dir.join("actual"))
        .output()
        .expect("running diff");
    let _ = fs::remove_dir_all(&dir);
    panic!("{what}:\n{}", String::from_utf8_lossy(&diff.stdout));
}

// ---------------------------------------------------------------------------------------------
// The writers' logs
// ---------------------------------------------------------------------------------------------

/// The eight moved columns as text, as PostgreSQL reads them back (`topics` as a JSON array).
#[derive(Debug, Clone, PartialEq)]
struct Gh {
    gh_id: i64,
    login: String,
    avatar: Option<String>,
    balance: String,
    settings: String,
    node_id: Option<String>,
    topics: String,
    synced_at: Option<String>,
}

impl Gh {
    fn ghost(&self) -> bool {
        self.login.starts_with("ghost-")
    }
}

/// The same values as Rust compares them (numerics by value, `None` for NaN; JSON by value).
#[derive(Debug, PartialEq)]
struct Typed {
    gh_id: i64,
    login: String,
    avatar: Option<String>,
    balance: Option<BigDecimal>,
    settings: serde_json::Value,
    node_id: Option<uuid::Uuid>,
    topics: Vec<Option<String>>,
    synced_at: Option<DateTime<Utc>>,
}

fn typed(g: &Gh) -> Typed {
    Typed {
        gh_id: g.gh_id,
        login: g.login.clone(),
        avatar: g.avatar.clone(),
        balance: (g.balance != "NaN").then(|| BigDecimal::from_str(&g.balance).unwrap()),
        settings: serde_json::from_str(&g.settings).unwrap(),
        node_id: g
            .node_id
            .as_deref()
            .map(|u| uuid::Uuid::parse_str(u).unwrap()),
        topics: serde_json::from_str(&g.topics).unwrap(),
        synced_at: g.synced_at.as_deref().map(parse_timestamp),
    }
}

fn parse_timestamp(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn timestamp_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn numeric(text: &str) -> PgNumeric {
    if text == "NaN" {
        PgNumeric::NaN
    } else {
        PgNumeric::from(&BigDecimal::from_str(text).unwrap())
    }
}

fn numeric_text(n: &PgNumeric) -> String {
    match n {
        PgNumeric::NaN => "NaN".to_owned(),
        n => BigDecimal::try_from(n).unwrap().to_string(),
    }
}

/// A generated row struct (of either stage's code) as a log entry.
macro_rules! gh_of {
    ($row:expr) => {{
        let row = &$row;
        Gh {
            gh_id: row.gh_id,
            login: row.login.clone(),
            avatar: row.gh_avatar.clone(),
            balance: numeric_text(&row.gh_balance),
            settings: row.gh_settings.to_string(),
            node_id: row.gh_node_id.map(|u| u.to_string()),
            topics: serde_json::to_string(&row.gh_topics).unwrap(),
            synced_at: row.gh_synced_at.map(timestamp_text),
        }
    }};
}

/// The new release's row for `user_id` holding `g`.
fn row_of(user_id: i32, g: &Gh) -> at_write_new::models::GithubAccount {
    let t = typed(g);
    at_write_new::models::GithubAccount {
        user_id,
        gh_id: g.gh_id,
        login: t.login,
        gh_avatar: t.avatar,
        gh_balance: numeric(&g.balance),
        gh_settings: t.settings,
        gh_node_id: t.node_id,
        gh_topics: t.topics,
        gh_synced_at: t.synced_at,
    }
}

/// What a user must look like: its name, its old columns (`None`: all NULL, once the new
/// release deleted its rows) and its rows in `github_accounts` by `gh_id` (its own, the one
/// whose `gh_id` is its old one, and the extra ones the new release gave it).
#[derive(Debug, Clone)]
struct UserLog {
    name: String,
    old: Option<Gh>,
    rows: BTreeMap<i64, Gh>,
}

impl UserLog {
    /// An old-release write of `g` to the old columns: the trigger follows the own row, which
    /// exists while the filter holds.
    fn old_write(&mut self, g: Gh) {
        if g.ghost() {
            self.rows.remove(&g.gh_id);
        } else {
            self.rows.insert(g.gh_id, g.clone());
        }
        self.old = Some(g);
    }

    fn own_row(&self) -> Option<&Gh> {
        self.old.as_ref().and_then(|g| self.rows.get(&g.gh_id))
    }
}

type Log = BTreeMap<i32, UserLog>;

/// One writer's state across stages: the users it owns and the next `gh_id` it hands out.
struct Writer {
    log: Log,
    next_gh: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// SQL on the owner table, old columns included (expand through read_new; the previous
    /// release during write_new's deploy).
    Old,
    /// The generated writers on `github_accounts`, the owner without its old columns.
    New,
}

fn pick<T: Clone>(rng: &mut StdRng, choices: &[T]) -> T {
    choices[rng.gen_range(0..choices.len())].clone()
}

/// Values for the moved columns, at the limits of each type as often as not.
fn random_gh(rng: &mut StdRng, gh_id: i64, tag: &str, ghost_ok: bool) -> Gh {
    let login = match rng.gen_range(0..10) {
        0 if ghost_ok => format!("ghost-{tag}"),
        1 => format!("{tag:x<39}").chars().take(39).collect(),
        _ => format!("l-{tag}"),
    };
    let avatar = match rng.gen_range(0..5) {
        0 => None,
        1 => Some("é".repeat(500)),
        2 => Some(String::new()),
        3 => Some("a".repeat(500)),
        _ => Some(format!("https://avatars.example/{tag}")),
    };
    let balance = match rng.gen_range(0..7) {
        0 => "9999999999.99".to_owned(),
        1 => "-9999999999.99".to_owned(),
        2 => "NaN".to_owned(),
        3 => "0.00".to_owned(),
        _ => format!(
            "{}.{:02}",
            rng.gen_range(-99_999..99_999),
            rng.gen_range(0..100)
        ),
    };
    let settings = pick(
        rng,
        &[
            "{}".to_owned(),
            "[]".to_owned(),
            r#"{"deep": {"l1": {"l2": {"l3": [true, false, null, 1.5, "x\"y"]}}}}"#.to_owned(),
            format!(
                r#"{{"tag": "{tag}", "n": {}, "list": [1, [2, [3, {{}}]]]}}"#,
                gh_id
            ),
        ],
    );
    let node_id = rng
        .gen_bool(0.7)
        .then(|| uuid::Uuid::from_u128(rng.gen()).to_string());
    let topics = pick(
        rng,
        &[
            "[]".to_owned(),
            r#"["rust", "web"]"#.to_owned(),
            r#"[null, "a b", "\"q\"", "{braces}", ""]"#.to_owned(),
            format!(r#"["{tag}"]"#),
        ],
    );
    let synced_at = match rng.gen_range(0..5) {
        0 => None,
        1 => Some("9999-12-31 23:59:59.999999+00".to_owned()),
        2 => Some("1970-01-01 00:00:00+00".to_owned()),
        _ => Some(format!(
            "2026-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            rng.gen_range(1..13),
            rng.gen_range(1..29),
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60),
            rng.gen_range(0..1_000_000)
        )),
    };
    Gh {
        gh_id,
        login,
        avatar,
        balance,
        settings,
        node_id,
        topics,
        synced_at,
    }
}

/// Runs `op` in a transaction, retrying deadlocks and serialization failures.
fn retrying<T>(
    conn: &mut PgConnection,
    mut op: impl FnMut(&mut PgConnection) -> QueryResult<T>,
) -> T {
    for _ in 0..200 {
        match conn.transaction(|conn| op(conn)) {
            Ok(value) => return value,
            Err(error) if is_retryable(&error).is_some() => continue,
            Err(error) => panic!("writer failed: {error}"),
        }
    }
    panic!("a transaction kept failing");
}

/// SQL for the text array of `topics`, a JSON array, as `text[]`.
fn topics_sql(param: usize) -> String {
    format!(
        "ARRAY(SELECT e FROM jsonb_array_elements_text(${param}::jsonb) WITH ORDINALITY AS x(e, o) ORDER BY o)"
    )
}

/// The previous release's insert of a user with all its columns; its id.
fn old_insert(conn: &mut PgConnection, name: &str, g: &Gh) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Integer)]
        id: i32,
    }
    boxed(format!(
        "INSERT INTO users (name, email, gh_id, gh_login, gh_avatar, gh_balance, gh_settings, \
         gh_node_id, gh_topics, gh_synced_at) \
         VALUES ($1, $1 || '@example.com', $2::int, $3, $4, $5::numeric, $6::jsonb, $7::uuid, {}, \
         $9::timestamptz) RETURNING id",
        topics_sql(8)
    ))
    .bind::<Text, _>(name.to_owned())
    .bind::<Text, _>(g.gh_id.to_string())
    .bind::<Text, _>(g.login.clone())
    .bind::<Nullable<Text>, _>(g.avatar.clone())
    .bind::<Text, _>(g.balance.clone())
    .bind::<Text, _>(g.settings.clone())
    .bind::<Nullable<Text>, _>(g.node_id.clone())
    .bind::<Text, _>(g.topics.clone())
    .bind::<Nullable<Text>, _>(g.synced_at.clone())
    .get_result::<Id>(conn)
    .map(|r| r.id)
}

/// The previous release's update of every moved column but `gh_id`.
fn old_update(conn: &mut PgConnection, id: i32, g: &Gh) -> QueryResult<usize> {
    boxed(format!(
        "UPDATE users SET gh_login = $2, gh_avatar = $3, gh_balance = $4::numeric, \
         gh_settings = $5::jsonb, gh_node_id = $6::uuid, gh_topics = {}, \
         gh_synced_at = $8::timestamptz, updated_at = now() WHERE id = $1",
        topics_sql(7)
    ))
    .bind::<Integer, _>(id)
    .bind::<Text, _>(g.login.clone())
    .bind::<Nullable<Text>, _>(g.avatar.clone())
    .bind::<Text, _>(g.balance.clone())
    .bind::<Text, _>(g.settings.clone())
    .bind::<Nullable<Text>, _>(g.node_id.clone())
    .bind::<Text, _>(g.topics.clone())
    .bind::<Nullable<Text>, _>(g.synced_at.clone())
    .execute(conn)
}

/// One writer's work for one stage: at least `OPS_PER_STAGE` operations, and on until `until`.
fn write(
    url: &str,
    t: usize,
    seed: u64,
    release: Release,
    writer: &mut Writer,
    start: &Barrier,
    until: &AtomicBool,
) {
    let mut conn = writer_conn(url);
    let mut rng = StdRng::seed_from_u64(seed);
    start.wait();
    let mut ops = 0;
    while ops < OPS_PER_STAGE || !until.load(Ordering::SeqCst) {
        ops += 1;
        let tag = format!("t{t}s{seed}o{ops}");
        let log = &mut writer.log;
        let target =
            (!log.is_empty()).then(|| *log.keys().nth(rng.gen_range(0..log.len())).unwrap());
        let roll = rng.gen_range(0..100);
        match release {
            Release::Old => {
                // The previous release only writes users that still have their old columns.
                let target = target.filter(|id| log[id].old.is_some());
                match (roll, target) {
                    (0..=19, _) | (_, None) => {
                        writer.next_gh += 1;
                        let g = random_gh(&mut rng, writer.next_gh, &tag, true);
                        let name = format!("user {tag}");
                        let id = retrying(&mut conn, |conn| old_insert(conn, &name, &g));
                        let mut entry = UserLog {
                            name,
                            old: None,
                            rows: BTreeMap::new(),
                        };
                        entry.old_write(g);
                        log.insert(id, entry);
                    }
                    (20..=64, Some(id)) => {
                        let own = log[&id].old.as_ref().unwrap().gh_id;
                        let mut g = random_gh(&mut rng, own, &tag, true);
                        if rng.gen_bool(0.3) {
                            // Only some columns change; the others keep what they had.
                            let before = log[&id].old.clone().unwrap();
                            g.login = before.login;
                            g.avatar = before.avatar;
                            g.node_id = before.node_id;
                        }
                        retrying(&mut conn, |conn| old_update(conn, id, &g));
                        log.get_mut(&id).unwrap().old_write(g);
                    }
                    (65..=84, Some(id)) => {
                        let name = format!("renamed {tag}");
                        retrying(&mut conn, |conn| {
                            boxed("UPDATE users SET name = $2, \"type\" = 'organization' WHERE id = $1")
                                .bind::<Integer, _>(id)
                                .bind::<Text, _>(name.clone())
                                .execute(conn)
                        });
                        log.get_mut(&id).unwrap().name = name;
                    }
                    (_, Some(id)) => {
                        retrying(&mut conn, |conn| {
                            boxed("DELETE FROM users WHERE id = $1")
                                .bind::<Integer, _>(id)
                                .execute(conn)
                        });
                        log.remove(&id);
                    }
                }
            }
            Release::New => {
                use at_write_new::models::{GithubAccount, User};
                use at_write_new::schema::{github_accounts, users};
                // The new release edits the rows of users whose own row exists.
                let with_own = target.filter(|id| log[id].own_row().is_some());
                match (roll, with_own, target) {
                    (0..=19, ..) | (_, _, None) => {
                        writer.next_gh += 1;
                        let g = random_gh(&mut rng, writer.next_gh, &tag, false);
                        let name = format!("user {tag}");
                        let (owner, saved) = retrying(&mut conn, |conn| {
                            let owner: User = diesel::insert_into(users::table)
                                .values((
                                    users::name.eq(&name),
                                    users::email.eq(format!("{tag}@example.com")),
                                ))
                                .returning(User::as_returning())
                                .get_result(conn)?;
                            let saved = row_of(owner.id, &g).save(conn)?;
                            Ok((owner, saved))
                        });
                        let saved = gh_of!(saved);
                        log.insert(
                            owner.id,
                            UserLog {
                                name: owner.name,
                                old: Some(saved.clone()),
                                rows: BTreeMap::from([(saved.gh_id, saved)]),
                            },
                        );
                    }
                    (20..=54, Some(id), _) => {
                        let own = log[&id].own_row().unwrap().gh_id;
                        let g = random_gh(&mut rng, own, &tag, false);
                        let saved = retrying(&mut conn, |conn| row_of(id, &g).save(conn));
                        let saved = gh_of!(saved);
                        let entry = log.get_mut(&id).unwrap();
                        entry.old = Some(saved.clone());
                        entry.rows.insert(own, saved);
                    }
                    (55..=64, Some(id), _) => {
                        writer.next_gh += 1;
                        let g = random_gh(&mut rng, writer.next_gh, &tag, false);
                        let saved = retrying(&mut conn, |conn| row_of(id, &g).save(conn));
                        let saved = gh_of!(saved);
                        log.get_mut(&id).unwrap().rows.insert(saved.gh_id, saved);
                    }
                    (65..=74, Some(id), _) => {
                        let entry = &log[&id];
                        let own = entry.own_row().unwrap().gh_id;
                        let extra = entry.rows.keys().copied().find(|k| *k != own);
                        if let Some(extra) = extra {
                            if rng.gen_bool(0.5) {
                                let g = random_gh(&mut rng, extra, &tag, false);
                                let saved = retrying(&mut conn, |conn| row_of(id, &g).save(conn));
                                log.get_mut(&id).unwrap().rows.insert(extra, gh_of!(saved));
                            } else {
                                retrying(&mut conn, |conn| {
                                    diesel::delete(github_accounts::table.find(extra)).execute(conn)
                                });
                                log.get_mut(&id).unwrap().rows.remove(&extra);
                            }
                        }
                    }
                    (75..=79, Some(id), _) => {
                        retrying(&mut conn, |conn| GithubAccount::delete_for(conn, id));
                        let entry = log.get_mut(&id).unwrap();
                        entry.rows.clear();
                        entry.old = None;
                    }
                    (80..=92, _, Some(id)) => {
                        let name = format!("renamed {tag}");
                        retrying(&mut conn, |conn| {
                            diesel::update(users::table.find(id))
                                .set(users::name.eq(&name))
                                .execute(conn)
                        });
                        log.get_mut(&id).unwrap().name = name;
                    }
                    (_, _, Some(id)) => {
                        retrying(&mut conn, |conn| {
                            diesel::delete(users::table.find(id)).execute(conn)
                        });
                        log.remove(&id);
                    }
                }
            }
        }
    }
}

/// Runs the writers for one stage while `work` runs on this thread; writers go on until it has
/// returned and they have each done their minimum. `releases[t]` is writer `t`'s code.
fn stage<T>(
    url: &str,
    writers: &mut [Writer],
    releases: [Release; WRITERS],
    seed: u64,
    work: impl FnOnce() -> T,
) -> T {
    let start = Barrier::new(writers.len() + 1);
    let until = AtomicBool::new(false);
    thread::scope(|scope| {
        for (t, writer) in writers.iter_mut().enumerate() {
            let (start, until, release) = (&start, &until, releases[t]);
            scope
                .spawn(move || write(url, t, seed * 100 + t as u64, release, writer, start, until));
        }
        start.wait();
        let out = work();
        until.store(true, Ordering::SeqCst);
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Row-by-row comparison
// ---------------------------------------------------------------------------------------------

fn all_users(writers: &[Writer]) -> Vec<(i32, &UserLog)> {
    writers
        .iter()
        .flat_map(|w| w.log.iter().map(|(id, u)| (*id, u)))
        .collect()
}

/// Text columns for `unnest`: one `Vec` per column.
fn columns_of(gh: &[Option<&Gh>]) -> [Vec<Option<String>>; 8] {
    let mut out: [Vec<Option<String>>; 8] = Default::default();
    for g in gh {
        let values = match g {
            Some(g) => [
                Some(g.gh_id.to_string()),
                Some(g.login.clone()),
                g.avatar.clone(),
                Some(g.balance.clone()),
                Some(g.settings.clone()),
                g.node_id.clone(),
                Some(g.topics.clone()),
                g.synced_at.clone(),
            ],
            None => Default::default(),
        };
        for (column, value) in out.iter_mut().zip(values) {
            column.push(value);
        }
    }
    out
}

/// The moved columns' values from the unnested text columns `t`, with their types.
const TYPED: &str = "t.gh_id::bigint, t.login, t.avatar, t.balance::numeric, t.settings::jsonb, \
    t.node_id::uuid, CASE WHEN t.topics IS NULL THEN NULL ELSE ARRAY(SELECT e FROM \
    jsonb_array_elements_text(t.topics::jsonb) WITH ORDINALITY AS x(e, o) ORDER BY o) END, \
    t.synced_at::timestamptz";

const UNNEST: &str = "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[]) WITH ORDINALITY AS t(gh_id, login, avatar, balance, \
    settings, node_id, topics, synced_at, n)";

fn lines(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// Fills the temporary tables `expected_users` and `expected_rows` from the logs.
fn load_expected(conn: &mut PgConnection, users: &[(i32, &UserLog)]) {
    exec(
        conn,
        "CREATE TEMP TABLE IF NOT EXISTS expected_users (id int, name text, gh_id bigint, \
         login text, avatar text, balance numeric, settings jsonb, node_id uuid, topics text[], \
         synced_at timestamptz)",
    );
    exec(
        conn,
        "CREATE TEMP TABLE IF NOT EXISTS expected_rows (user_id int, gh_id bigint, \
         login text, avatar text, balance numeric, settings jsonb, node_id uuid, topics text[], \
         synced_at timestamptz)",
    );
    exec(conn, "TRUNCATE expected_users, expected_rows");

    let ids: Vec<i32> = users.iter().map(|(id, _)| *id).collect();
    let names: Vec<String> = users.iter().map(|(_, u)| u.name.clone()).collect();
    let old: Vec<Option<&Gh>> = users.iter().map(|(_, u)| u.old.as_ref()).collect();
    let [c0, c1, c2, c3, c4, c5, c6, c7] = columns_of(&old);
    boxed(format!(
        "INSERT INTO expected_users SELECT ($1::int[])[t.n], ($10::text[])[t.n], {TYPED} FROM {UNNEST}"
    ))
    .bind::<Array<Integer>, _>(ids)
    .bind::<Array<Nullable<Text>>, _>(c0)
    .bind::<Array<Nullable<Text>>, _>(c1)
    .bind::<Array<Nullable<Text>>, _>(c2)
    .bind::<Array<Nullable<Text>>, _>(c3)
    .bind::<Array<Nullable<Text>>, _>(c4)
    .bind::<Array<Nullable<Text>>, _>(c5)
    .bind::<Array<Nullable<Text>>, _>(c6)
    .bind::<Array<Nullable<Text>>, _>(c7)
    .bind::<Array<Text>, _>(names)
    .execute(conn)
    .unwrap();

    let rows: Vec<(i32, &Gh)> = users
        .iter()
        .flat_map(|(id, u)| u.rows.values().map(move |g| (*id, g)))
        .collect();
    let owners: Vec<i32> = rows.iter().map(|(id, _)| *id).collect();
    let values: Vec<Option<&Gh>> = rows.iter().map(|(_, g)| Some(*g)).collect();
    let [c0, c1, c2, c3, c4, c5, c6, c7] = columns_of(&values);
    boxed(format!(
        "INSERT INTO expected_rows SELECT ($1::int[])[t.n], {TYPED} FROM {UNNEST}"
    ))
    .bind::<Array<Integer>, _>(owners)
    .bind::<Array<Nullable<Text>>, _>(c0)
    .bind::<Array<Nullable<Text>>, _>(c1)
    .bind::<Array<Nullable<Text>>, _>(c2)
    .bind::<Array<Nullable<Text>>, _>(c3)
    .bind::<Array<Nullable<Text>>, _>(c4)
    .bind::<Array<Nullable<Text>>, _>(c5)
    .bind::<Array<Nullable<Text>>, _>(c6)
    .bind::<Array<Nullable<Text>>, _>(c7)
    .execute(conn)
    .unwrap();
}

/// Every difference between the database and the logs. `old_columns`: whether the owner still
/// has its old columns (until contract), which must then hold each user's own values;
/// `complete`: whether every expected row of `github_accounts` must exist (once the backfill
/// ran; before, the rows that exist must be exact and none may be unexpected).
fn mismatches(
    conn: &mut PgConnection,
    users: &[(i32, &UserLog)],
    old_columns: bool,
    complete: bool,
) -> Vec<String> {
    load_expected(conn, users);
    let old = "(u.gh_id, u.gh_login, u.gh_avatar, u.gh_balance, u.gh_settings, u.gh_node_id, \
               u.gh_topics, u.gh_synced_at)";
    let logged = "(e.gh_id, e.login, e.avatar, e.balance, e.settings, e.node_id, e.topics, \
                  e.synced_at)";
    let (old_differs, old_text) = if old_columns {
        (
            format!("{old} IS DISTINCT FROM {logged}"),
            format!("{old}::text"),
        )
    } else {
        ("false".to_owned(), "''".to_owned())
    };
    let mut problems = lines(
        conn,
        &format!(
            "SELECT format('user %s: %s', coalesce(e.id, u.id), CASE
                 WHEN u.id IS NULL THEN 'lost'
                 WHEN e.id IS NULL THEN 'exists, but its writer deleted it'
                 WHEN u.name IS DISTINCT FROM e.name THEN format('name %s, log says %s', u.name, e.name)
                 ELSE format('old columns %s, log says %s', {old_text}, {logged}::text) END) AS line
             FROM expected_users e FULL JOIN users u ON u.id = e.id
             WHERE u.id IS NULL OR e.id IS NULL OR u.name IS DISTINCT FROM e.name OR {old_differs}
             ORDER BY 1 LIMIT 20"
        ),
    );
    let new = "(g.user_id, g.login, g.gh_avatar, g.gh_balance, g.gh_settings, g.gh_node_id, \
               g.gh_topics, g.gh_synced_at)";
    let logged = "(e.user_id, e.login, e.avatar, e.balance, e.settings, e.node_id, e.topics, \
                  e.synced_at)";
    problems.extend(lines(
        conn,
        &format!(
            "SELECT format('github_accounts %s: %s', coalesce(e.gh_id, g.gh_id), CASE
                 WHEN g.gh_id IS NULL THEN format('missing (user %s)', e.user_id)
                 WHEN e.gh_id IS NULL THEN format('unexpected (user %s)', g.user_id)
                 ELSE format('%s, log says %s', {new}::text, {logged}::text) END) AS line
             FROM expected_rows e FULL JOIN github_accounts g ON g.gh_id = e.gh_id
             WHERE (g.gh_id IS NULL AND {complete}) OR e.gh_id IS NULL
                OR (g.gh_id IS NOT NULL AND e.gh_id IS NOT NULL AND {new} IS DISTINCT FROM {logged})
             ORDER BY 1 LIMIT 20"
        ),
    ));
    problems
}

fn compare(conn: &mut PgConnection, writers: &[Writer], old: bool, complete: bool, when: &str) {
    let problems = mismatches(conn, &all_users(writers), old, complete);
    assert!(
        problems.is_empty(),
        "{when}: mismatches, e.g.\n{}",
        problems.join("\n")
    );
}

/// The generated readers of the read_new release against the logs: each user's old columns
/// through the model, its rows through `with_github_account`, a sample through
/// `find_with_github_account` and `GithubAccount::find_for`.
fn readers_agree_at_read_new(conn: &mut PgConnection, writers: &[Writer], when: &str) {
    use at_read_new::models::{GithubAccount, User};
    use at_read_new::schema::users;
    let expected: BTreeMap<i32, &UserLog> = all_users(writers).into_iter().collect();
    let owners: Vec<User> = users::table
        .order(users::id)
        .select(User::as_select())
        .load(conn)
        .unwrap();
    assert_eq!(owners.len(), expected.len(), "{when}");
    let with = User::with_github_account(conn, owners).unwrap();
    for (user, rows) in &with {
        let log = expected[&user.id];
        let old = Gh {
            gh_id: user.gh_id.into(),
            login: user.gh_login.clone(),
            avatar: user.gh_avatar.clone(),
            balance: numeric_text(&user.gh_balance),
            settings: user.gh_settings.to_string(),
            node_id: user.gh_node_id.map(|u| u.to_string()),
            topics: serde_json::to_string(&user.gh_topics).unwrap(),
            synced_at: user.gh_synced_at.map(timestamp_text),
        };
        assert_eq!(
            typed(&old),
            typed(log.old.as_ref().unwrap()),
            "{when}: user {}",
            user.id
        );
        let read: Vec<Typed> = rows.iter().map(|r| typed(&gh_of!(r))).collect();
        let logged: Vec<Typed> = log.rows.values().map(typed).collect();
        assert_eq!(
            read, logged,
            "{when}: with_github_account of user {}",
            user.id
        );
    }
    for (user, _) in with.iter().step_by(25) {
        let (found, rows) = User::find_with_github_account(conn, user.id)
            .unwrap()
            .unwrap();
        assert_eq!(&found, user, "{when}");
        assert_eq!(rows, GithubAccount::find_for(conn, user.id).unwrap());
    }
}

/// The generated readers of the write_new release against the logs.
fn readers_agree_at_write_new(conn: &mut PgConnection, writers: &[Writer], when: &str) {
    use at_write_new::models::{GithubAccount, User};
    use at_write_new::schema::users;
    let expected: BTreeMap<i32, &UserLog> = all_users(writers).into_iter().collect();
    let owners: Vec<User> = users::table
        .order(users::id)
        .select(User::as_select())
        .load(conn)
        .unwrap();
    assert_eq!(owners.len(), expected.len(), "{when}");
    let with = User::with_github_account(conn, owners).unwrap();
    let mut extra = 0;
    for (user, rows) in &with {
        let log = expected[&user.id];
        assert_eq!(user.name, log.name, "{when}");
        let read: Vec<Typed> = rows.iter().map(|r| typed(&gh_of!(r))).collect();
        let logged: Vec<Typed> = log.rows.values().map(typed).collect();
        assert_eq!(
            read, logged,
            "{when}: with_github_account of user {}",
            user.id
        );
        extra += rows.len().saturating_sub(1);
    }
    assert!(extra > 0, "{when}: no user has a second account");
    for (user, _) in with.iter().step_by(25) {
        let (found, rows) = User::find_with_github_account(conn, user.id)
            .unwrap()
            .unwrap();
        assert_eq!(&found, user, "{when}");
        assert_eq!(rows, GithubAccount::find_for(conn, user.id).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// The project
// ---------------------------------------------------------------------------------------------

/// The seeded users: values at the limits of every moved type.
fn seed_sql() -> String {
    format!(
        r#"INSERT INTO users (name, email, "type", kind, gh_id, gh_login, gh_avatar, gh_balance,
                   gh_settings, gh_node_id, gh_topics, gh_synced_at)
SELECT 'user ' || g, 'u' || g || '@example.com',
       CASE WHEN g % 7 = 0 THEN 'organization' ELSE 'person' END,
       CASE WHEN g % 7 = 0 THEN 'organization'::user_kind ELSE 'person'::user_kind END,
       CASE WHEN g = {SEEDED} THEN 2147483647 ELSE g END,
       CASE WHEN g % 10 = 0 THEN 'ghost-' || g WHEN g % 13 = 0 THEN rpad('l' || g, 39, 'x')
            ELSE 'login' || g END,
       CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN repeat('é', 500) WHEN 2 THEN ''
            ELSE 'https://avatars.example/' || g END,
       CASE g % 5 WHEN 0 THEN 9999999999.99 WHEN 1 THEN -9999999999.99 WHEN 2 THEN 'NaN'::numeric
            WHEN 3 THEN 0 ELSE round(g * 1.37, 2) END,
       CASE g % 3 WHEN 0 THEN '{{}}'::jsonb WHEN 1 THEN jsonb_build_object('a',
            jsonb_build_object('b', jsonb_build_array(1, 'two', NULL, jsonb_build_object('c', g))))
            ELSE '[]'::jsonb END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE md5(g::text)::uuid END,
       CASE g % 3 WHEN 0 THEN '{{}}'::text[] WHEN 1 THEN ARRAY['rust', NULL, 'a "quoted" one']
            ELSE ARRAY['x' || g] END,
       CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '9999-12-31 23:59:59.999999+00'::timestamptz
            WHEN 2 THEN '1970-01-01 00:00:00+00' ELSE '2026-03-04 05:06:07.891011+00' END
FROM generate_series(1, {SEEDED}) AS g"#
    )
}

/// The users as they are now, as the writers' starting logs (user `id % WRITERS` to writer).
fn logs_from_database(conn: &mut PgConnection) -> Vec<Writer> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        id: i32,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        gh_id: i64,
        #[diesel(sql_type = Text)]
        gh_login: String,
        #[diesel(sql_type = Nullable<Text>)]
        gh_avatar: Option<String>,
        #[diesel(sql_type = Text)]
        gh_balance: String,
        #[diesel(sql_type = Text)]
        gh_settings: String,
        #[diesel(sql_type = Nullable<Text>)]
        gh_node_id: Option<String>,
        #[diesel(sql_type = Text)]
        gh_topics: String,
        #[diesel(sql_type = Nullable<Text>)]
        gh_synced_at: Option<String>,
    }
    exec(conn, "SET TimeZone = 'UTC'");
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, name, gh_id::bigint AS gh_id, gh_login, gh_avatar, gh_balance::text AS gh_balance,
                gh_settings::text AS gh_settings, gh_node_id::text AS gh_node_id,
                to_jsonb(gh_topics)::text AS gh_topics, gh_synced_at::text AS gh_synced_at
         FROM users",
    )
    .load(conn)
    .unwrap();
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|t| Writer {
            log: Log::new(),
            next_gh: 100_000_000 * (t as i64 + 1),
        })
        .collect();
    for row in rows {
        let mut entry = UserLog {
            name: row.name,
            old: None,
            rows: BTreeMap::new(),
        };
        entry.old_write(Gh {
            gh_id: row.gh_id,
            login: row.gh_login,
            avatar: row.gh_avatar,
            balance: row.gh_balance,
            settings: row.gh_settings,
            node_id: row.gh_node_id,
            topics: row.gh_topics,
            synced_at: row.gh_synced_at,
        });
        writers[row.id as usize % WRITERS].log.insert(row.id, entry);
    }
    writers
}

/// The team's project before zmig: the workspace, its first migration run by diesel, the
/// team's patch made from print-schema's output and named in diesel.toml. Returns diesel.toml
/// and the patch.
fn set_up(ws: &Workspace) -> (String, String) {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/zmig-runtime")
        .canonicalize()
        .unwrap();
    ws.write(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/app\"]\n",
    );
    // The workspace's lock pins the crates this machine has, so the check runs offline.
    ws.write(
        "Cargo.lock",
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap(),
    );
    // zmig-runtime is optional so the check compiles diesel and schema.rs only (the test
    // binary compiles the models against the same schema.rs); `generate` finds the crate
    // through the dependency all the same.
    ws.write(
        "crates/app/Cargo.toml",
        &format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
             diesel = {{ version = \"2.3\", default-features = false, features = [\"postgres\"] }}\n\
             zmig-runtime = {{ path = {runtime:?}, optional = true }}\n"
        ),
    );
    ws.write("crates/app/src/lib.rs", LIB_RS);
    ws.write("crates/app/src/models.rs", &models_at("expand"));
    ws.write("diesel.toml", DIESEL_TOML);
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/up.sql",
        CREATE,
    );
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/down.sql",
        DROP,
    );
    ws.diesel(&["migration", "run"]);
    let printed = ws.read(MEMBER_SCHEMA);
    let patched = team_edits(&printed);
    let patch = ws.diff_u(MEMBER_SCHEMA, &printed, &patched);
    ws.write(TEAM_PATCH, &patch);
    let toml = edit(
        DIESEL_TOML,
        "custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]\n",
        &format!(
            "custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]\n{PATCH_LINE}"
        ),
    );
    ws.write("diesel.toml", &toml);
    let schema = ws.diesel(&["print-schema"]);
    assert_eq!(schema, patched, "diesel applies the team's patch");
    ws.write(MEMBER_SCHEMA, &schema);
    // The shape the proof asks of the schema.
    let tables = schema.matches("diesel::table! {").count();
    assert!(tables >= 16, "{tables} tables");
    for shape in [
        "pub mod sql_types {",
        "pub struct UserKind;",
        "#[max_length = 500]",
        "#[sql_name = \"type\"]",
        "/// Their GitHub login.",
        "    recent_crate_downloads (crate_id) {",
    ] {
        assert!(schema.contains(shape), "{shape} in\n{schema}");
    }
    (toml, patch)
}

/// After `generate` and the stage's migrations: `diesel migration redo` of the stage's folder,
/// `diesel print-schema` reproducing what `generate` committed, `generate --check`, the team's
/// patch untouched and still applied.
fn diesel_round(ws: &Workspace, stage: &str, committed: &str, redo: bool, patch: &str) -> String {
    if redo {
        ws.diesel(&["migration", "redo"]);
    }
    ws.diesel(&["migration", "run"]);
    let after = ws.read(MEMBER_SCHEMA);
    assert_same_text(&ws.diesel(&["print-schema"]), &after, stage);
    match stage {
        // zmig wrote schema.rs before the migration ran: what diesel prints after, but for
        // the joinable of the foreign key write_new's migration adds.
        "write_new" => assert_same_text(
            &edit(
                &after,
                "diesel::joinable!(github_accounts -> users (user_id));\n",
                "",
            ),
            committed,
            stage,
        ),
        "contract" => assert_same_text(&after, committed, stage),
        _ => {}
    }
    let (ok, report) = ws.zmig(&["generate", "--check"]);
    assert!(ok, "{stage} after diesel migration run: {report}");
    assert_eq!(ws.read(TEAM_PATCH), patch, "{stage}: the team's patch");
    assert!(
        after.contains("    recent_crate_downloads (crate_id) {\n"),
        "{stage}"
    );
    assert!(
        after.contains("        keywords -> Array<Text>,\n"),
        "{stage}"
    );
    after
}

fn generate(ws: &Workspace, stage: &str) -> String {
    ws.write("crates/app/src/models.rs", &models_at(stage));
    let (ok, report) = ws.zmig(&["generate"]);
    assert!(ok, "{stage}: {report}");
    let (ok, report) = ws.zmig(&["generate", "--check"]);
    assert!(ok, "{stage}: {report}");
    ws.read(MEMBER_SCHEMA)
}

#[test]
fn a_production_shaped_extract_through_every_stage_under_live_writers() {
    if !diesel_on_path() {
        eprintln!(
            "skipped: `diesel` is not on PATH (cargo install diesel_cli --no-default-features --features postgres)"
        );
        return;
    }
    let ws = Workspace::new("production");
    let url = ws.db.url.clone();
    let (toml, patch) = set_up(&ws);
    ws.check_compiles("before zmig", MEMBER_SCHEMA);
    let mut conn = ws.db.conn();
    exec(&mut conn, &seed_sql());
    let mut writers = logs_from_database(&mut conn);
    let old = [Release::Old; WRITERS];
    let new = [Release::New; WRITERS];
    let mixed = [Release::Old, Release::New, Release::Old, Release::New];
    let mut blessed = Vec::new();

    // expand: the application is unchanged.
    let committed = generate(&ws, "expand");
    stage(&url, &mut writers, old, 1, || {
        ws.migrate_to("migrations", "expand")
    });
    compare(&mut conn, &writers, true, false, "after expand");
    let schema = diesel_round(&ws, "expand", &committed, true, &patch);
    fixture_matches("schema_read_new.rs", &schema, &mut blessed);
    ws.check_compiles("expand", MEMBER_SCHEMA);
    assert_eq!(ws.read("diesel.toml"), toml);

    // dual_write: the triggers go in under traffic.
    let committed = generate(&ws, "dual_write");
    stage(&url, &mut writers, old, 2, || {
        ws.migrate_to("migrations", "dual_write")
    });
    compare(&mut conn, &writers, true, false, "after dual_write");
    diesel_round(&ws, "dual_write", &committed, true, &patch);
    compare(&mut conn, &writers, true, false, "after dual_write's redo");

    // backfill: two workers under traffic; then verify.
    let committed = generate(&ws, "backfill");
    let done = stage(&url, &mut writers, old, 3, || {
        let options = BackfillOptions {
            workers: 2,
            progress: ProgressMode::Silent,
            ..BackfillOptions::default()
        };
        backfill(&url, MIGRATION, &options).unwrap()
    });
    assert!(done.finished, "{done:?}");
    let report = verify(&mut conn, MIGRATION).unwrap();
    assert!(report.ok(), "{report:?}");
    compare(&mut conn, &writers, true, true, "after the backfill");
    assert_same_text(
        &diesel_round(&ws, "backfill", &committed, false, &patch),
        &schema,
        "backfill",
    );

    // read_new: the new code reads through the generated readers while the writers write.
    let committed = generate(&ws, "read_new");
    stage(&url, &mut writers, old, 4, || {
        use at_read_new::models::User;
        use at_read_new::schema::users;
        let mut reader = PgConnection::establish(&url).unwrap();
        let owners: Vec<User> = users::table
            .order(users::id)
            .limit(1_000)
            .select(User::as_select())
            .load(&mut reader)
            .unwrap();
        assert_eq!(
            User::with_github_account(&mut reader, owners)
                .unwrap()
                .len(),
            1_000
        );
    });
    compare(&mut conn, &writers, true, true, "after read_new");
    readers_agree_at_read_new(&mut conn, &writers, "after read_new");
    assert_same_text(
        &diesel_round(&ws, "read_new", &committed, false, &patch),
        &schema,
        "read_new",
    );

    // write_new: the migration ships under the previous release's traffic; then the new release
    // rolls out beside instances of the previous one, then alone.
    let committed = generate(&ws, "write_new");
    stage(&url, &mut writers, old, 5, || {
        ws.migrate_to("migrations", "write_new")
    });
    compare(
        &mut conn,
        &writers,
        true,
        true,
        "after the write_new migration",
    );
    let shimmed = diesel_round(&ws, "write_new", &committed, true, &patch);
    fixture_matches("schema_write_new.rs", &shimmed, &mut blessed);
    ws.check_compiles("write_new", MEMBER_SCHEMA);
    compare(&mut conn, &writers, true, true, "after write_new's redo");
    stage(&url, &mut writers, mixed, 6, || {});
    compare(&mut conn, &writers, true, true, "during write_new's deploy");
    stage(&url, &mut writers, new, 7, || {});
    compare(&mut conn, &writers, true, true, "after write_new");
    readers_agree_at_write_new(&mut conn, &writers, "after write_new");
    assert_eq!(verify(&mut conn, MIGRATION).unwrap().differing, 0);

    // contract: the old columns go while the new code keeps writing.
    let committed = generate(&ws, "contract");
    stage(&url, &mut writers, new, 8, || {
        ws.migrate_to("migrations", "contract")
    });
    compare(&mut conn, &writers, false, true, "after contract");
    let contracted = diesel_round(&ws, "contract", &committed, true, &patch);
    compare(&mut conn, &writers, false, true, "after contract's redo");
    readers_agree_at_write_new(&mut conn, &writers, "after contract");
    assert_same_text(
        &contracted,
        &shimmed,
        "the write_new code compiles against contract's schema.rs",
    );
    ws.check_compiles("contract", MEMBER_SCHEMA);
    assert_eq!(
        ws.read("diesel.toml"),
        toml,
        "diesel.toml is the team's again"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_name = 'users' AND column_name LIKE 'gh\\_%'"
        ),
        0
    );
    let applied = ws.diesel(&["migration", "list"]);
    assert_eq!(applied.matches("[X]").count(), 5, "{applied}");
    assert_eq!(applied.matches("[ ]").count(), 0, "{applied}");
    assert!(
        blessed.is_empty(),
        "rewrote {blessed:?}: build and run again to compile against them"
    );
}

/// A copy of the workspace's migrations in `dir`, with `edit` applied to the `up.sql` of the
/// folder whose name ends with `_<phase>`.
fn copy_migrations(ws: &Workspace, dir: &str, phase: &str, edit: impl Fn(&str) -> String) {
    for folder in fs::read_dir(ws.path("migrations")).unwrap().flatten() {
        let name = folder.file_name().to_string_lossy().into_owned();
        for file in fs::read_dir(folder.path()).unwrap().flatten() {
            let text = fs::read_to_string(file.path()).unwrap();
            let text = if name.ends_with(&format!("_{phase}")) && file.file_name() == "up.sql" {
                edit(&text)
            } else {
                text
            };
            ws.write(
                &format!("{dir}/{name}/{}", file.file_name().to_string_lossy()),
                &text,
            );
        }
    }
}

/// The new release writes `balance` to the own row of the one user; what the comparison and
/// verify then say.
fn write_balance(conn: &mut PgConnection, writer: &mut Writer, balance: &str) -> Vec<String> {
    let (id, entry) = writer.log.iter_mut().next().unwrap();
    let mut g = entry.old.clone().unwrap();
    g.balance = balance.to_owned();
    let saved = gh_of!(row_of(*id, &g).save(conn).unwrap());
    entry.old = Some(saved.clone());
    entry.rows.insert(saved.gh_id, saved);
    mismatches(conn, &all_users(std::slice::from_ref(writer)), true, true)
}

#[test]
fn the_checks_fail_when_a_moved_column_loses_its_typmod() {
    if !diesel_on_path() {
        eprintln!(
            "skipped: `diesel` is not on PATH (cargo install diesel_cli --no-default-features --features postgres)"
        );
        return;
    }
    let ws = Workspace::new("production_typmod");
    set_up(&ws);
    generate(&ws, "write_new");
    let apply = |dir: &str, db: &TestDb| {
        let migrations = FileBasedMigrations::from_path(ws.path(dir)).unwrap();
        db.conn()
            .run_pending_migrations(migrations)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let user = |conn: &mut PgConnection| {
        let g = Gh {
            gh_id: 7,
            login: "l-7".to_owned(),
            avatar: None,
            balance: "1.00".to_owned(),
            settings: "{}".to_owned(),
            node_id: None,
            topics: "[]".to_owned(),
            synced_at: None,
        };
        let id = old_insert(conn, "user 7", &g).unwrap();
        let mut entry = UserLog {
            name: "user 7".to_owned(),
            old: None,
            rows: BTreeMap::new(),
        };
        entry.old_write(g);
        Writer {
            log: Log::from([(id, entry)]),
            next_gh: 8,
        }
    };

    // As generated: a value with more decimals rounds alike in both tables, and one too big
    // for the old column is refused by the new one too.
    copy_migrations(&ws, "as_generated", "expand", str::to_owned);
    let db = TestDb::new("typmod_kept");
    apply("as_generated", &db).unwrap();
    let mut conn = db.conn();
    let mut writer = user(&mut conn);
    assert_eq!(
        write_balance(&mut conn, &mut writer, "12.345"),
        Vec::<String>::new()
    );
    assert_eq!(
        writer
            .log
            .values()
            .next()
            .unwrap()
            .old
            .as_ref()
            .unwrap()
            .balance,
        "12.35"
    );
    assert_eq!(verify(&mut conn, MIGRATION).unwrap().differing, 0);
    let mut g = writer.log.values().next().unwrap().old.clone().unwrap();
    g.balance = "123456789012.5".to_owned();
    let id = *writer.log.keys().next().unwrap();
    let error = row_of(id, &g).save(&mut conn).unwrap_err().to_string();
    assert!(error.contains("numeric field overflow"), "{error}");

    // The database's column lost its typmod after generate read it: expand refuses, and
    // changes nothing.
    copy_migrations(&ws, "typmod_dropped_in_db", "create_tables", |sql| {
        sql.replace("gh_balance numeric(12,2)", "gh_balance numeric")
    });
    let db = TestDb::new("typmod_db");
    let error = apply("typmod_dropped_in_db", &db).unwrap_err();
    assert!(error.contains("gh_balance"), "{error}");
    assert_eq!(
        count(
            &mut db.conn(),
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'github_accounts'"
        ),
        0,
        "nothing changed"
    );

    // The new table's column without its typmod (what zmig generated before issue 10): the
    // new release's write of 12.345 stays 12.345 in the new table and syncs back as 12.35,
    // which the comparison and verify both report.
    copy_migrations(&ws, "typmod_dropped_in_new_table", "expand", |sql| {
        let at = sql.find("CREATE TABLE").expect("CREATE TABLE in expand");
        let (head, tail) = sql.split_at(at);
        format!("{head}{}", tail.replacen("numeric(12,2)", "numeric", 1))
    });
    let db = TestDb::new("typmod_new");
    match apply("typmod_dropped_in_new_table", &db) {
        // A guard that checks the new table's columns too refuses it outright.
        Err(error) => assert!(error.contains("gh_balance"), "{error}"),
        Ok(()) => {
            let mut conn = db.conn();
            let mut writer = user(&mut conn);
            let problems = write_balance(&mut conn, &mut writer, "12.345");
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("12.35") && p.contains("12.345")),
                "the comparison misses the rounded value: {problems:?}"
            );
            assert!(verify(&mut conn, MIGRATION).unwrap().differing > 0);
        }
    }
}
