//! A team's own `[print_schema] patch_file` through all six stages of an extract, in a real
//! project's layout (diesel.toml and migrations/ at the workspace root, the models in a member
//! crate), with the real `diesel` CLI against a real database: at every stage `diesel migration
//! run` applies what `generate` wrote, `diesel print-schema` prints exactly the committed
//! schema.rs (the team's patch still applied), `generate --check` passes, the crate compiles, and
//! the team's patch file is never written; at contract diesel.toml is byte for byte what it was.
//!
//! The team's patch is shaped like a real one: it removes a table whose `tsvector` column needs a
//! crate the project does not use, makes an array's elements NOT NULL, and adds a view's
//! `table!` (print-schema prints no views here). Doc comments are on (`with_docs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use zmig_tests::{exec, run_cli, TestDb};

const CREATE: &str = "CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE users (
    id serial PRIMARY KEY,
    name text NOT NULL,
    gh_login varchar(39) NOT NULL,
    gh_id integer NOT NULL,
    gh_avatar text,
    keywords text[] NOT NULL DEFAULT '{}',
    mood mood NOT NULL DEFAULT 'happy',
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'People who sign in.';
COMMENT ON COLUMN users.gh_login IS 'Their GitHub login.';
CREATE TABLE search_index (
    id serial PRIMARY KEY,
    document tsvector NOT NULL
);
CREATE VIEW active_users AS SELECT id, name FROM users;
";

const DROP: &str =
    "DROP VIEW active_users;\nDROP TABLE search_index;\nDROP TABLE users;\nDROP TYPE mood;\n";

/// The team's diesel.toml, before it names its patch.
const DIESEL_TOML: &str = "# For documentation on how to configure this file,
# see https://diesel.rs/guides/configuring-diesel-cli

[print_schema]
file = \"crates/app/src/schema.rs\"
with_docs = true
allow_tables_to_appear_in_same_query_config = \"none\"
custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]

[migrations_directory]
dir = \"migrations\"
";

/// The line the team adds once its patch exists, with its own comment.
const PATCH_LINE: &str =
    "# Ours: drops search_index (tsvector), keywords without NULLs, the active_users view.
patch_file = \"crates/app/src/schema.patch\"
";

const VIEW: &str = "
diesel::table! {
    /// Active users (a view: print-schema does not print it).
    active_users (id) {
        id -> Int4,
        name -> Text,
    }
}
";

/// Code that uses what the team's patch makes of schema.rs: it does not compile without it
/// (`keywords` would load `Vec<Option<String>>`, `active_users` would not exist).
const LIB_RS: &str = "pub mod schema;

use diesel::prelude::*;

pub fn keywords(conn: &mut PgConnection) -> QueryResult<Vec<(String, Vec<String>)>> {
    use schema::users::dsl::*;
    users.select((name, keywords)).load(conn)
}

pub fn active(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    schema::active_users::table
        .select(schema::active_users::name)
        .load(conn)
}
";

fn model(stage: &str) -> String {
    format!(
        "use zmig_runtime::Zmig;

#[derive(Zmig)]
#[diesel(table_name = crate::schema::users)]
#[zmig(extract(into = users_github, columns(gh_login, gh_id, gh_avatar)), stage = \"{stage}\")]
pub struct User {{
    pub id: i32,
}}
"
    )
}

struct Workspace {
    root: PathBuf,
    db: TestDb,
}

impl Workspace {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// `diesel <args>` run at the workspace root, as the team runs it; its stdout.
    fn diesel(&self, args: &[&str]) -> String {
        let output = Command::new("diesel")
            .args(args)
            .arg("--database-url")
            .arg(&self.db.url)
            .current_dir(&self.root)
            .env_remove("DIESEL_CONFIG_FILE")
            .env_remove("MIGRATION_DIRECTORY")
            .output()
            .expect("running diesel");
        assert!(
            output.status.success(),
            "diesel {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `cargo xtask zmig <args>` on the workspace's virtual manifest (every member using zmig).
    fn zmig(&self, args: &[&str]) -> (bool, String) {
        let manifest = self.path("Cargo.toml");
        let mut argv = vec!["cargo xtask", "zmig"];
        argv.extend_from_slice(args);
        argv.extend(["--manifest-path", manifest.to_str().unwrap()]);
        argv.extend(["--database-url", &self.db.url]);
        run_cli(argv)
    }

    /// `cargo check` of the member crate: schema.rs and the code using it compile.
    fn check_compiles(&self, stage: &str) {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/zmig-patch-file");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["check", "--offline", "--quiet", "--manifest-path"])
            .arg(self.path("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target)
            .output()
            .expect("running cargo check");
        assert!(
            output.status.success(),
            "{stage}: the member crate does not compile:\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.read("crates/app/src/schema.rs")
        );
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `text` with `from` replaced by `to` exactly once.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in\n{text}");
    text.replacen(from, to, 1)
}

/// What the team's patch does to print-schema's output.
fn team_edits(printed: &str) -> String {
    let start = printed
        .find(
            "diesel::table! {\n    use diesel::sql_types::*;\n    use super::sql_types::Tsvector;",
        )
        .expect("search_index");
    let end = start + printed[start..].find("\n}\n\n").unwrap() + "\n}\n\n".len();
    let without_search = format!("{}{}", &printed[..start], &printed[end..]);
    let tsvector_start = without_search
        .find("\n    /// The `pg_catalog.tsvector` SQL type")
        .unwrap();
    let tsvector_end =
        without_search.find("pub struct Tsvector;\n").unwrap() + "pub struct Tsvector;\n".len();
    let without_type = format!(
        "{}\n{}",
        &without_search[..tsvector_start],
        &without_search[tsvector_end..]
    );
    let fixed = edit(
        &without_type,
        "        keywords -> Array<Nullable<Text>>,",
        "        keywords -> Array<Text>,",
    );
    let users_end = fixed
        .find("        created_at -> Timestamptz,\n    }\n}\n")
        .unwrap()
        + "        created_at -> Timestamptz,\n    }\n}\n".len();
    format!("{}{VIEW}{}", &fixed[..users_end], &fixed[users_end..])
}

/// `diff -u` from `from` to `to`, as the team made its patch.
fn diff_u(ws: &Workspace, from: &str, to: &str) -> String {
    ws.write("tmp/printed.rs", from);
    ws.write("tmp/patched.rs", to);
    let output = Command::new("diff")
        .args([
            "-u",
            "--label",
            "a/crates/app/src/schema.rs",
            "--label",
            "b/crates/app/src/schema.rs",
        ])
        .arg(ws.path("tmp/printed.rs"))
        .arg(ws.path("tmp/patched.rs"))
        .output()
        .expect("running diff");
    fs::remove_dir_all(ws.path("tmp")).unwrap();
    assert_eq!(output.status.code(), Some(1), "diff found no difference");
    String::from_utf8(output.stdout).unwrap()
}

fn diesel_on_path() -> bool {
    Command::new("diesel").arg("--version").output().is_ok()
}

fn users_columns(schema: &str) -> Vec<String> {
    zmig_codegen::schema::parse_schema(Path::new("schema.rs"), schema)
        .unwrap()
        .table("users")
        .unwrap()
        .columns
        .iter()
        .map(|c| c.sql_name.clone())
        .collect()
}

#[test]
fn a_team_patch_file_stays_applied_through_every_stage_with_the_real_diesel_cli() {
    if !diesel_on_path() {
        eprintln!(
            "skipped: `diesel` is not on PATH (cargo install diesel_cli --no-default-features --features postgres)"
        );
        return;
    }
    let root = std::env::temp_dir().join(format!("zmig-patch-file-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let ws = Workspace {
        root,
        db: TestDb::new("patch_file"),
    };
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
    // zmig-runtime is optional so the check compiles diesel and schema.rs only; `generate`
    // finds the crate through the dependency all the same.
    ws.write(
        "crates/app/Cargo.toml",
        &format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
             diesel = {{ version = \"2.3\", default-features = false, features = [\"postgres\"] }}\n\
             zmig-runtime = {{ path = {runtime:?}, optional = true }}\n"
        ),
    );
    ws.write("crates/app/src/lib.rs", LIB_RS);
    ws.write("crates/app/src/models.rs", &model("read_new"));
    ws.write("diesel.toml", DIESEL_TOML);
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/up.sql",
        CREATE,
    );
    ws.write(
        "migrations/2020-01-01-000000-0000_create_tables/down.sql",
        DROP,
    );

    // The team's setup: migrations run, print-schema's output patched and the patch named.
    ws.diesel(&["migration", "run"]);
    let printed = ws.read("crates/app/src/schema.rs");
    let patch = diff_u(&ws, &printed, &team_edits(&printed));
    ws.write("crates/app/src/schema.patch", &patch);
    let toml = DIESEL_TOML.replace(
        "custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]\n",
        &format!(
            "custom_type_derives = [\"diesel::query_builder::QueryId\", \"Clone\"]\n{PATCH_LINE}"
        ),
    );
    ws.write("diesel.toml", &toml);
    let schema = ws.diesel(&["print-schema"]);
    assert_eq!(
        schema,
        team_edits(&printed),
        "diesel applies the team's patch"
    );
    ws.write("crates/app/src/schema.rs", &schema);
    ws.check_compiles("before zmig");

    let mut patch = patch;
    for stage in [
        "expand",
        "dual_write",
        "backfill",
        "read_new",
        "write_new",
        "contract",
    ] {
        ws.write("crates/app/src/models.rs", &model(stage));
        let (ok, report) = ws.zmig(&["generate"]);
        assert!(ok, "{stage}: {report}");
        let (ok, report) = ws.zmig(&["generate", "--check"]);
        assert!(ok, "{stage}: {report}");
        let committed = ws.read("crates/app/src/schema.rs");

        ws.diesel(&["migration", "run"]);
        if stage == "dual_write" {
            exec(
                &mut ws.db.conn(),
                "INSERT INTO users (name, gh_login, gh_id, gh_avatar, keywords) VALUES \
                 ('Ada', 'ada', 1, NULL, '{math}'), ('Linus', 'torvalds', 2, 'https://a/2', '{}')",
            );
        }
        // `migration run` printed schema.rs through the patch diesel.toml names; print-schema
        // prints it again, the same.
        let after = ws.read("crates/app/src/schema.rs");
        assert_eq!(ws.diesel(&["print-schema"]), after, "{stage}");
        match stage {
            // zmig wrote schema.rs before the migration ran: what diesel prints after, but for
            // the foreign key write_new's migration adds (print-schema prints its joinable).
            "write_new" => assert_eq!(
                after,
                format!("{committed}\ndiesel::joinable!(users_github -> users (user_id));\n"),
                "{stage}"
            ),
            "contract" => assert_eq!(after, committed, "{stage}"),
            _ => {}
        }
        let (ok, report) = ws.zmig(&["generate", "--check"]);
        assert!(ok, "{stage} after diesel migration run: {report}");

        // The team's patch: untouched, and still applied.
        assert_eq!(ws.read("crates/app/src/schema.patch"), patch, "{stage}");
        assert!(
            after.contains("    active_users (id) {\n"),
            "{stage}:\n{after}"
        );
        assert!(
            after.contains("        keywords -> Array<Text>,\n"),
            "{stage}"
        );
        assert!(
            !after.contains("search_index") && !after.contains("Tsvector"),
            "{stage}"
        );
        let columns = users_columns(&after);
        let moved_out = matches!(stage, "write_new" | "contract");
        for moved in ["gh_login", "gh_id", "gh_avatar"] {
            assert_eq!(
                !columns.contains(&moved.to_owned()),
                moved_out,
                "{stage}: {columns:?}"
            );
        }
        if stage == "expand" {
            assert!(after.contains("    users_github ("), "{after}");
        }

        let diesel_toml = ws.read("diesel.toml");
        if stage == "write_new" {
            assert!(
                diesel_toml.contains(
                    "# zmig's patch includes your own, which contract names here again: patch_file = \"crates/app/src/schema.patch\"\n\
                     patch_file = \"crates/app/src/zmig-schema.patch\"\n"
                ),
                "{diesel_toml}"
            );
            assert!(ws.path("crates/app/src/zmig-schema.patch").is_file());
            ws.check_compiles(stage);

            // The team edits its patch (the view's doc): zmig's is stale until generate
            // rebuilds it, and print-schema then prints the edit.
            patch = patch.replace(
                "+    /// Active users (a view: print-schema does not print it).",
                "+    /// Users active now (a view: print-schema does not print it).",
            );
            ws.write("crates/app/src/schema.patch", &patch);
            let (ok, report) = ws.zmig(&["generate", "--check"]);
            assert!(
                !ok && report.contains("zmig-schema.patch is not up to date"),
                "{report}"
            );
            let (ok, report) = ws.zmig(&["generate"]);
            assert!(ok, "{report}");
            let regenerated = ws.read("crates/app/src/schema.rs");
            assert!(
                regenerated.contains("/// Users active now"),
                "{regenerated}"
            );
            assert_eq!(ws.diesel(&["print-schema"]), regenerated);
            assert_eq!(ws.read("crates/app/src/schema.patch"), patch);
        } else {
            // Before write_new and from contract on, diesel.toml is the team's own.
            assert_eq!(diesel_toml, toml, "{stage}");
            assert!(
                !ws.path("crates/app/src/zmig-schema.patch").exists(),
                "{stage}"
            );
        }
        if matches!(stage, "expand" | "contract") {
            ws.check_compiles(stage);
        }
    }
    // Every folder went to the workspace root's migrations/, where diesel ran them.
    assert!(!ws.path("crates/app/migrations").exists());
    let applied = ws.diesel(&["migration", "list"]);
    assert_eq!(applied.matches("[X]").count(), 5, "{applied}");
    assert_eq!(applied.matches("[ ]").count(), 0, "{applied}");
}
