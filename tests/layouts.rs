//! Where `generate` writes: the `diesel.toml` diesel_cli reads for the crate that holds the
//! models (the crate's own, else the nearest one above it up to the workspace root), with its
//! `migrations_directory` and `print_schema.file` read from its own folder; and, when diesel
//! would run no migrations zmig could write, an error naming what is missing with nothing
//! written. Real files in a throwaway workspace; the swap needs no database to generate.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use zmig_codegen::cli::generate;
use zmig_codegen::project;
use zmig_tests::{run_cli, TIMESTAMP};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A cargo workspace in a temporary folder, removed on drop: a virtual manifest at the root and
/// a member crate `crates/app` that depends on zmig and declares the cars example's swap.
struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn new(label: &str) -> Workspace {
        let root = std::env::temp_dir().join(format!(
            "zmig-layout-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        let workspace = Workspace { root };
        workspace.write(
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"crates/app\"]\n",
        );
        let runtime = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/zmig-runtime")
            .canonicalize()
            .unwrap();
        workspace.write(
            "crates/app/Cargo.toml",
            &format!(
                "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nzmig-runtime = {{ path = {runtime:?} }}\n"
            ),
        );
        workspace.write(
            "crates/app/src/lib.rs",
            "pub mod models;\npub mod schema;\n",
        );
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cars");
        workspace.write(
            "crates/app/src/models.rs",
            "use zmig_runtime::Zmig;\n\n#[derive(Zmig)]\n#[diesel(table_name = crate::schema::cars)]\n\
             #[zmig(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint), stage = \"prepare\")]\n\
             pub struct Car {\n    pub id: i32,\n}\n",
        );
        let schema = fs::read_to_string(example.join("src/schema.rs")).unwrap();
        workspace.write("crates/app/src/schema.rs", &schema);
        workspace
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn member(&self) -> PathBuf {
        self.path("crates/app")
    }

    /// `generate` on the member crate, as the CLI runs it once it found the crate.
    fn generate(&self) -> Result<(zmig_codegen::cli::Outcome, String), String> {
        let project = project::load(&self.member()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let outcome =
            generate(&[project], false, TIMESTAMP, &mut out).map_err(|e| format!("{e:#}"))?;
        Ok((outcome, String::from_utf8(out).unwrap()))
    }

    /// The names of the folders in `rel`, sorted; empty when it does not exist.
    fn folders(&self, rel: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.path(rel)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Every file under the workspace, relative path → contents, to show nothing was written.
    fn all_files(&self) -> Vec<(String, String)> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            for entry in fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().display().to_string();
                    out.push((rel, fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.root, &self.root, &mut files);
        files.sort();
        files
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const PREPARE: &str = "2026-11-21-120000-0001_cars_bigint_prepare";

/// The real project's layout: diesel.toml and migrations/ at the workspace root, schema.rs in
/// the member crate, named from diesel.toml's folder.
const ROOT_DIESEL_TOML: &str = "[print_schema]\nfile = \"crates/app/src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n";

#[test]
fn a_workspace_root_diesel_toml_sends_the_member_crates_migrations_to_the_root() {
    let ws = Workspace::new("root_toml");
    ws.write("diesel.toml", ROOT_DIESEL_TOML);
    fs::create_dir_all(ws.path("migrations")).unwrap();

    let project = project::load(&ws.member()).unwrap();
    assert_eq!(project.diesel_toml, Some(ws.path("diesel.toml")));
    assert_eq!(project.config_dir(), ws.root);
    assert_eq!(project.migrations_dir, ws.path("migrations"));
    assert_eq!(project.schema_file, ws.path("crates/app/src/schema.rs"));

    let (outcome, report) = ws.generate().unwrap();
    assert!(outcome.ok() && outcome.written.len() == 1, "{report}");
    assert_eq!(ws.folders("migrations"), [PREPARE]);
    assert!(
        !ws.path("crates/app/migrations").exists(),
        "nothing in the member crate, where diesel never runs"
    );
    assert!(ws.path(&format!("migrations/{PREPARE}/up.sql")).is_file());
}

#[test]
fn without_migrations_directory_the_folder_diesel_would_find_is_used() {
    // diesel.toml names only the schema; diesel then runs the first `migrations/` folder it
    // finds going up, here at the workspace root beside it.
    let ws = Workspace::new("default_dir");
    ws.write(
        "diesel.toml",
        "[print_schema]\nfile = \"crates/app/src/schema.rs\"\n",
    );
    fs::create_dir_all(ws.path("migrations")).unwrap();
    let (outcome, report) = ws.generate().unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(ws.folders("migrations"), [PREPARE]);

    // No diesel.toml at all: the crate's own `migrations/` comes first, as diesel finds it
    // from the crate.
    let ws = Workspace::new("no_toml");
    fs::create_dir_all(ws.path("migrations")).unwrap();
    fs::create_dir_all(ws.path("crates/app/migrations")).unwrap();
    let project = project::load(&ws.member()).unwrap();
    assert_eq!(project.diesel_toml, None);
    assert_eq!(project.migrations_dir, ws.path("crates/app/migrations"));
    assert_eq!(project.schema_file, ws.path("crates/app/src/schema.rs"));
    let (outcome, report) = ws.generate().unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(ws.folders("crates/app/migrations"), [PREPARE]);
    assert!(ws.folders("migrations").is_empty());
}

#[test]
fn the_crates_own_diesel_toml_wins_over_the_workspace_roots() {
    let ws = Workspace::new("crate_wins");
    ws.write("diesel.toml", ROOT_DIESEL_TOML);
    fs::create_dir_all(ws.path("migrations")).unwrap();
    // The crate's own, with paths relative to the crate: a folder of its own, schema.rs moved.
    ws.write(
        "crates/app/diesel.toml",
        "[print_schema]\nfile = \"src/db/schema.rs\"\n\n[migrations_directory]\ndir = \"db/migrations\"\n",
    );
    let schema = fs::read_to_string(ws.path("crates/app/src/schema.rs")).unwrap();
    fs::remove_file(ws.path("crates/app/src/schema.rs")).unwrap();
    ws.write("crates/app/src/db/schema.rs", &schema);

    let project = project::load(&ws.member()).unwrap();
    assert_eq!(project.diesel_toml, Some(ws.path("crates/app/diesel.toml")));
    assert_eq!(project.schema_file, ws.path("crates/app/src/db/schema.rs"));
    let (outcome, report) = ws.generate().unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(ws.folders("crates/app/db/migrations"), [PREPARE]);
    assert!(
        ws.folders("migrations").is_empty(),
        "the root's is not read"
    );
}

#[test]
fn paths_in_diesel_toml_are_read_from_its_folder_parent_steps_and_absolute_paths_included() {
    let ws = Workspace::new("relative");
    // The member's diesel.toml points up into the workspace, the way some teams share one
    // migrations folder between crates.
    ws.write(
        "crates/app/diesel.toml",
        "[print_schema]\nfile = \"../../schema/app.rs\"\n\n[migrations_directory]\ndir = \"../../db/migrations\"\n",
    );
    let schema = fs::read_to_string(ws.path("crates/app/src/schema.rs")).unwrap();
    ws.write("schema/app.rs", &schema);
    fs::remove_file(ws.path("crates/app/src/schema.rs")).unwrap();
    let (outcome, report) = ws.generate().unwrap();
    assert!(outcome.ok(), "{report}");
    assert_eq!(ws.folders("db/migrations"), [PREPARE]);

    let absolute = ws.path("elsewhere/migrations");
    ws.write(
        "crates/app/diesel.toml",
        &format!(
            "[print_schema]\nfile = \"../../schema/app.rs\"\n\n[migrations_directory]\ndir = {:?}\n",
            absolute.display().to_string()
        ),
    );
    let project = project::load(&ws.member()).unwrap();
    assert_eq!(project.migrations_dir, absolute);
}

#[test]
fn nowhere_for_diesel_to_run_migrations_is_an_error_and_nothing_is_written() {
    // No diesel.toml and no migrations/ anywhere up to the workspace root.
    let ws = Workspace::new("nowhere");
    let before = ws.all_files();
    let error = ws.generate().unwrap_err();
    assert!(
        error.starts_with(
            "error: Cargo.toml:1:1: this crate has zmig models, but there is no diesel.toml in "
        ) && error.contains(&format!("up to the workspace root {}", ws.root.display()))
            && error.contains("no `migrations/` folder there")
            && error.contains("help: run `diesel setup`"),
        "{error}"
    );
    assert_eq!(ws.all_files(), before, "nothing written");

    // A diesel.toml without `[migrations_directory]`, and no folder diesel would find.
    ws.write(
        "diesel.toml",
        "[print_schema]\nfile = \"crates/app/src/schema.rs\"\n",
    );
    let before = ws.all_files();
    let error = ws.generate().unwrap_err();
    let toml = ws.path("diesel.toml");
    assert!(
        error.starts_with(&format!(
            "error: {}:1:1: this diesel.toml has no `[migrations_directory] dir`",
            toml.display()
        )) && error.contains("[migrations_directory]\n    dir = \"migrations\""),
        "{error}"
    );
    assert_eq!(ws.all_files(), before, "nothing written");

    // A diesel.toml above the workspace root is not the project's: not read.
    let outer = Workspace::new("outer");
    let inner = outer.path("inner");
    fs::rename(&ws.root, &inner).unwrap();
    outer.write(
        "diesel.toml",
        "[migrations_directory]\ndir = \"migrations\"\n",
    );
    fs::remove_file(inner.join("diesel.toml")).unwrap();
    let error = project::load(&inner.join("crates/app"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("there is no diesel.toml in "), "{error}");
}

#[test]
fn the_command_line_finds_the_member_crate_and_writes_at_the_workspace_root() {
    let ws = Workspace::new("cli");
    ws.write("diesel.toml", ROOT_DIESEL_TOML);
    fs::create_dir_all(ws.path("migrations")).unwrap();
    // A virtual manifest: every member that depends on zmig.
    let manifest = ws.path("Cargo.toml");
    let manifest = manifest.to_str().unwrap();
    let (ok, plan) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "plan",
        "--manifest-path",
        manifest,
    ]);
    assert!(
        ok && plan.contains("cars_bigint: swap cars behind a view"),
        "{plan}"
    );
    let (ok, report) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "generate",
        "--manifest-path",
        manifest,
    ]);
    assert!(ok, "{report}");
    let folders = ws.folders("migrations");
    assert!(
        folders.len() == 1 && folders[0].ends_with("_cars_bigint_prepare"),
        "{folders:?}\n{report}"
    );
    let (ok, check) = run_cli(vec![
        "cargo xtask",
        "zmig",
        "generate",
        "--check",
        "--manifest-path",
        manifest,
    ]);
    assert!(ok, "{check}");
}
