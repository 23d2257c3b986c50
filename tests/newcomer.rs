//! The newcomer's path, word for word as README's "Use zmig in your project" tells it: a fresh
//! Diesel crate outside this workspace gets the README's dependency lines, xtask, cargo alias and
//! start-up code, read from README.md itself (the `<!-- newcomer:… -->` blocks) so the two
//! cannot drift. Then the README's commands (`cargo xtask zmig plan`, `generate`) run as
//! subprocesses against a database of the test's own, and the crate's `cargo run` applies what
//! generate wrote with the retrying runner.
//!
//! The crate builds in `target/newcomer`, a target dir of its own: the workspace's is locked by
//! the `cargo test` running this. The first run builds zmig and Diesel there once (a few minutes
//! on two cores); later runs reuse it and build only the two small crates. It builds offline from
//! a copy of this workspace's `Cargo.lock`, so it needs no network and the same versions as here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use zmig_tests::TestDb;

/// This checkout's root.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The README's block marked `<!-- newcomer:{name} -->`: the fenced code right below the marker,
/// without the indentation it has inside a list item.
fn snippet(readme: &str, name: &str) -> String {
    let marker = format!("<!-- newcomer:{name} -->");
    let mut lines = readme
        .lines()
        .skip_while(|line| line.trim() != marker)
        .skip(1);
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.trim_start().starts_with("```"),
        "README.md: `{marker}` must be followed by a fenced code block, found {fence:?}"
    );
    let indent = &fence[..fence.len() - fence.trim_start().len()];
    let body: Vec<&str> = lines
        .take_while(|line| !line.trim_start().starts_with("```"))
        .map(|line| line.strip_prefix(indent).unwrap_or(line.trim_start()))
        .collect();
    assert!(
        !body.is_empty(),
        "README.md: the block after `{marker}` is empty"
    );
    body.join("\n") + "\n"
}

/// `toml` (a manifest the README puts in the project's folder `dir`) with each
/// `path = "…/zmig/crates/…"` pointed at this checkout.
fn at_this_checkout(toml: &str, file: &str, dir: &[&str]) -> String {
    let mut out = String::new();
    let mut rest = toml;
    while let Some(at) = rest.find("path = \"") {
        let (before, after) = rest.split_at(at + "path = \"".len());
        out.push_str(before);
        let end = after.find('"').expect("a closing quote");
        out.push_str(in_this_checkout(&after[..end], file, dir).to_str().unwrap());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Where `written`, a path the README gives from the project's folder `dir`, leads in this
/// checkout. The README's layout is zmig cloned beside the project (`../zmig`): each path must
/// mean that from where it is used, so a path with one `..` too few or too many fails here, as
/// it would for the reader.
fn in_this_checkout(written: &str, file: &str, dir: &[&str]) -> PathBuf {
    // Where `written` leads, starting from the project's parent folder.
    let mut place: Vec<&str> = ["project"].iter().chain(dir).copied().collect();
    for part in written.split('/') {
        match part {
            ".." => assert!(
                place.pop().is_some(),
                "README.md, {file}: `{written}` leaves the folder the project and zmig share"
            ),
            "." | "" => {}
            part => place.push(part),
        }
    }
    assert!(
        place.len() > 2 && place[0] == "zmig" && place[1] == "crates",
        "README.md, {file}: `{written}` does not lead to a crate of `../zmig` from the project's {}",
        if dir.is_empty() { "root".to_owned() } else { format!("`{}/`", dir.join("/")) }
    );
    let target = place[1..]
        .iter()
        .fold(checkout(), |path, part| path.join(part));
    assert!(
        target.join("Cargo.toml").is_file(),
        "README.md, {file}: `{written}` names no crate of zmig ({} has no Cargo.toml)",
        target.display()
    );
    target
}

/// A crate whose shape is not the examples': a `users` table with a Rust keyword (`type`) and an
/// SQL reserved word (`primary`) for columns, a long name, `varchar(n)` columns and defaults.
const CREATE_USERS: &str = r#"CREATE TABLE users (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL,
    gh_login varchar(39) NOT NULL,
    gh_avatar_url_for_profile_page varchar(500) NOT NULL DEFAULT '',
    type varchar(12) NOT NULL DEFAULT 'User',
    "primary" boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// What `diesel print-schema` writes for `CREATE_USERS`.
const SCHEMA: &str = r#"// @generated automatically by Diesel CLI.

diesel::table! {
    users (id) {
        id -> Int4,
        #[max_length = 100]
        name -> Varchar,
        #[max_length = 39]
        gh_login -> Varchar,
        #[max_length = 500]
        gh_avatar_url_for_profile_page -> Varchar,
        #[sql_name = "type"]
        #[max_length = 12]
        type_ -> Varchar,
        primary -> Bool,
        created_at -> Timestamptz,
    }
}
"#;

/// The model, with its module's imports as the README says.
const MODELS: &str = r#"use diesel::prelude::*;
use zmig_runtime::Zmig;

use crate::schema::users;

#[derive(Debug, Queryable, Selectable, Identifiable, Zmig)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg))]
#[zmig(
    extract(
        into = github_account_connections,
        columns(gh_login, gh_avatar_url_for_profile_page, type_ as account_type, primary)
    ),
    stage = "dual_write"
)]
pub struct User {
    pub id: i32,
    pub name: String,
    pub gh_login: String,
    pub gh_avatar_url_for_profile_page: String,
    pub type_: String,
    pub primary: bool,
}
"#;

const DIESEL_TOML: &str =
    "[print_schema]\nfile = \"src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n";

/// The moved columns, as (column of `users`, column of the new table).
const MOVED: [(&str, &str); 4] = [
    ("gh_login", "gh_login"),
    (
        "gh_avatar_url_for_profile_page",
        "gh_avatar_url_for_profile_page",
    ),
    ("type", "account_type"),
    ("primary", "primary"),
];

/// The project folder, removed when the test ends.
struct Project(PathBuf);

impl Drop for Project {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write(root: &Path, file: &str, contents: &str) {
    let path = root.join(file);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
}

/// The target dir the fresh crates build in (and `cargo install` builds zmig in).
fn newcomer_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| checkout().join("target"))
        .join("newcomer")
}

/// Runs `command` (`cargo …`, as the README writes it) in the project; its stdout and stderr.
fn run(root: &Path, database_url: &str, command: &str) -> (String, String) {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("cargo"), "{command}");
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    run_program(root, database_url, &cargo, &words.collect::<Vec<_>>())
}

/// Runs `program` with `args` in the project, as a reader's shell would (`DATABASE_URL` set,
/// builds in [`newcomer_target`], offline); its stdout and stderr, or the test fails with them.
fn run_program(root: &Path, database_url: &str, program: &Path, args: &[&str]) -> (String, String) {
    let command = format!("{} {}", program.display(), args.join(" "));
    let target = newcomer_target();
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .env("DATABASE_URL", database_url)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        // No debug info and no incremental state: the build is only checked and run once, and
        // both cost time and disk on the first build of Diesel and zmig there.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("`{command}` took {:.1?}", started.elapsed());
    assert!(
        output.status.success(),
        "`{command}` failed in {}:\n{stdout}\n{stderr}",
        root.display()
    );
    (stdout, stderr)
}

#[derive(QueryableByName, Debug, PartialEq)]
struct ColumnShape {
    #[diesel(sql_type = Text)]
    sql_type: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
}

fn column_shape(conn: &mut PgConnection, table: &str, column: &str) -> ColumnShape {
    diesel::sql_query(
        "SELECT format_type(a.atttypid, a.atttypmod) AS sql_type, a.attnotnull AS not_null,
                pg_get_expr(d.adbin, d.adrelid) AS default_expr
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind::<Text, _>(table)
    .bind::<Text, _>(column)
    .get_result(conn)
    .unwrap_or_else(|e| panic!("{table}.{column}: {e}"))
}

/// A fresh crate outside this workspace (cargo would otherwise take it for a member of ours),
/// with the README's dependency lines, the crate's own sources and first migration, and a
/// development database with that migration applied, as the README asks. `extra_manifest` is
/// appended to its `Cargo.toml`.
fn fresh_project(readme: &str, label: &str, extra_manifest: &str) -> (Project, PathBuf, TestDb) {
    let root = std::env::temp_dir().join(format!("zmig-{label}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let project = Project(root.clone());

    let package = "[package]\nname = \"newcomer-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n";
    let manifest = at_this_checkout(&snippet(readme, "Cargo.toml"), "Cargo.toml", &[]);
    write(
        &root,
        "Cargo.toml",
        &format!("{package}{manifest}\n{extra_manifest}"),
    );
    write(&root, "src/main.rs", &snippet(readme, "src/main.rs"));
    write(&root, "src/lib.rs", "pub mod models;\npub mod schema;\n");
    write(&root, "src/schema.rs", SCHEMA);
    write(&root, "src/models.rs", MODELS);
    write(&root, "diesel.toml", DIESEL_TOML);
    let first = "migrations/2024-01-01-000000_create_users";
    write(&root, &format!("{first}/up.sql"), CREATE_USERS);
    write(&root, &format!("{first}/down.sql"), "DROP TABLE users;\n");
    // The versions this workspace builds and tests with, resolved without the network.
    fs::copy(checkout().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();

    let db = TestDb::new(label);
    let mut conn = db.conn();
    conn.run_pending_migrations(FileBasedMigrations::from_path(root.join("migrations")).unwrap())
        .unwrap();
    (project, root, db)
}

/// The plan of the crate's one migration, as both ways of running zmig print it.
fn assert_plan(plan: &str) {
    assert!(
        plan.contains("users_github_account_connections: extract (gh_login, gh_avatar_url_for_profile_page, type, primary) from users into github_account_connections"),
        "{plan}"
    );
    assert!(
        plan.contains("code is at stage `dual_write` (2 of 6)"),
        "{plan}"
    );
}

/// The folders `generate` wrote (and said it wrote in `generated`), sorted, the crate's own first.
fn assert_generated(root: &Path, generated: &str) -> Vec<String> {
    let mut folders: Vec<String> = fs::read_dir(root.join("migrations"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 3, "{folders:?}\n{generated}");
    assert_eq!(folders[0], "2024-01-01-000000_create_users");
    for (folder, phase, files) in [
        (
            &folders[1],
            "expand",
            &["down.sql", "up.sql", "zmig-owner.json"][..],
        ),
        (&folders[2], "dual_write", &["down.sql", "up.sql"][..]),
    ] {
        assert!(
            folder.ends_with(&format!("_users_github_account_connections_{phase}")),
            "{folders:?}"
        );
        assert!(
            generated.contains(&format!("wrote migrations/{folder}")),
            "{generated}"
        );
        let mut written: Vec<String> = fs::read_dir(root.join("migrations").join(folder))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        written.sort();
        assert_eq!(written, files, "{folder}");
    }
    folders
}

#[test]
fn a_fresh_crate_set_up_as_the_readme_says_plans_generates_and_migrates() {
    let started = Instant::now();
    let readme = fs::read_to_string(checkout().join("README.md")).unwrap();
    let (project, root, db) = fresh_project(&readme, "newcomer", &snippet(&readme, "workspace"));
    let mut conn = db.conn();
    let xtask = snippet(&readme, "xtask/Cargo.toml");
    write(
        &root,
        "xtask/Cargo.toml",
        &at_this_checkout(&xtask, "xtask/Cargo.toml", &["xtask"]),
    );
    for file in ["xtask/src/main.rs", ".cargo/config.toml"] {
        write(&root, file, &snippet(&readme, file));
    }

    let commands = snippet(&readme, "commands");
    let mut exported_url = false;
    let mut outputs = Vec::new();
    for line in commands.lines() {
        let command = line.split(" #").next().unwrap().trim();
        if command.is_empty() {
            continue;
        }
        if let Some(url) = command.strip_prefix("export DATABASE_URL=") {
            // The test's own database stands for the reader's.
            assert!(url.starts_with("postgres://"), "README.md: {line}");
            exported_url = true;
            continue;
        }
        outputs.push((command.to_owned(), run(&root, &db.url, command)));
    }
    assert!(
        exported_url,
        "README.md: the commands must set DATABASE_URL:\n{commands}"
    );
    let output = |wanted: &str| {
        outputs
            .iter()
            .find(|(command, _)| command == wanted)
            .map(|(_, (stdout, stderr))| format!("{stdout}{stderr}"))
            .unwrap_or_else(|| panic!("README.md: the commands do not run `{wanted}`:\n{commands}"))
    };

    assert_plan(&output("cargo xtask zmig plan"));
    let folders = assert_generated(&root, &output("cargo xtask zmig generate"));

    // The service applies what generate wrote, with the README's start-up code.
    let (applied, _) = run(&root, &db.url, "cargo run --quiet");
    let versions: Vec<String> = folders[1..]
        .iter()
        .map(|f| format!("applied {}", f.split('_').next().unwrap().replace('-', "")))
        .collect();
    assert_eq!(applied.lines().collect::<Vec<_>>(), versions, "{applied}");

    // Each moved column kept the exact type, NOT NULL and default it has in `users`, read from
    // the database: schema.rs knows no defaults.
    for (old, new) in MOVED {
        assert_eq!(
            column_shape(&mut conn, "github_account_connections", new),
            column_shape(&mut conn, "users", old),
            "github_account_connections.{new} is not what users.{old} is"
        );
    }
    drop(project);
    eprintln!("the newcomer's path took {:.1?}", started.elapsed());
}

/// README's other way (2b): no xtask, the `zmig` command installed with the README's
/// `cargo install` line, then its `zmig plan` and `zmig generate` in the project.
#[test]
fn a_fresh_crate_with_the_installed_zmig_command_plans_and_generates() {
    let readme = fs::read_to_string(checkout().join("README.md")).unwrap();
    let (project, root, db) = fresh_project(&readme, "newcomer-installed", "");

    let install = snippet(&readme, "install");
    let words: Vec<&str> = install.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--path")
        .unwrap_or_else(|| panic!("README.md: the install line names no --path:\n{install}"));
    assert_eq!(
        &words[..2],
        ["cargo", "install"],
        "README.md: the install line:\n{install}"
    );
    let crate_dir = in_this_checkout(words[at + 1], "the install line", &[]);
    assert!(
        crate_dir.ends_with("crates/zmig"),
        "{}",
        crate_dir.display()
    );
    // Installed into a folder of the test's own, not the reader's ~/.cargo/bin, and built as a
    // debug build in the fresh crates' target dir, where the other test built zmig already.
    let bin_root = root.join("installed");
    let mut args: Vec<&str> = words[1..].to_vec();
    let crate_dir = crate_dir.to_str().unwrap();
    // `words[at + 1]`, the path, is `args[at]`.
    args[at] = crate_dir;
    args.extend(["--root", bin_root.to_str().unwrap(), "--debug"]);
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    run_program(&root, &db.url, &cargo, &args);
    let zmig = bin_root.join("bin/zmig");
    assert!(zmig.is_file(), "{} was not installed", zmig.display());

    let commands = snippet(&readme, "installed-commands");
    let mut outputs = Vec::new();
    for line in commands.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split(" #").next().unwrap().split_whitespace();
        assert_eq!(words.next(), Some("zmig"), "README.md: {line}");
        let args: Vec<&str> = words.collect();
        let (stdout, stderr) = run_program(&root, &db.url, &zmig, &args);
        outputs.push((args.join(" "), format!("{stdout}{stderr}")));
    }
    let output = |wanted: &str| {
        outputs
            .iter()
            .find(|(command, _)| command == wanted)
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| {
                panic!("README.md: the commands do not run `zmig {wanted}`:\n{commands}")
            })
    };
    assert_plan(&output("plan"));
    assert_generated(&root, &output("generate"));
    drop(project);
}
