//! A real project's layout for the tests that drive the real `diesel` CLI: a cargo workspace in
//! a temporary folder, `diesel.toml` and `migrations/` at its root and the models in a member
//! crate, with a database of its own. `diesel …` and `cargo xtask zmig …` run on it as a team
//! runs them; `cargo check` builds the member crate in the shared `target/zmig-patch-file`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::Connection;
use diesel_migrations::FileBasedMigrations;
use zmig_runtime::migrate::{run_pending_with_retry, RetryPolicy};

use crate::{run_cli, TestDb, UpTo};

pub struct Workspace {
    pub root: PathBuf,
    pub db: TestDb,
}

impl Workspace {
    /// An empty workspace folder named after `label`, and a database of its own.
    pub fn new(label: &str) -> Workspace {
        let root = std::env::temp_dir().join(format!("zmig-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Workspace {
            root,
            db: TestDb::new(label),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// `diesel <args>` run at the workspace root, as the team runs it: whether it succeeded and
    /// what it printed (stdout, then stderr).
    pub fn try_diesel(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new("diesel")
            .args(args)
            .arg("--database-url")
            .arg(&self.db.url)
            .current_dir(&self.root)
            .env_remove("DIESEL_CONFIG_FILE")
            .env_remove("MIGRATION_DIRECTORY")
            .output()
            .expect("running diesel");
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `diesel <args>`, which must succeed; its stdout.
    pub fn diesel(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_diesel(args);
        assert!(ok, "diesel {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    /// `cargo xtask zmig <args>` on the workspace's virtual manifest (every member using zmig).
    pub fn zmig(&self, args: &[&str]) -> (bool, String) {
        let manifest = self.path("Cargo.toml");
        let mut argv = vec!["cargo xtask", "zmig"];
        argv.extend_from_slice(args);
        argv.extend(["--manifest-path", manifest.to_str().unwrap()]);
        argv.extend(["--database-url", &self.db.url]);
        run_cli(argv)
    }

    /// `cargo check` of the workspace in `target/zmig-patch-file` (shared with the other tests
    /// of this kind, so diesel is built once): `schema` and the code using it compile.
    pub fn check_compiles(&self, stage: &str, schema: &str) {
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
            self.read(schema)
        );
    }

    /// Applies the pending migrations of `dir` up to the folder of `phase` as a deploy under
    /// traffic does: with the retrying runner, which waits out a lock timeout and tries again.
    pub fn migrate_to(&self, dir: &str, phase: &str) {
        let mut conn = PgConnection::establish(&self.db.url).unwrap();
        let policy = RetryPolicy {
            attempts: 100,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        };
        let source = UpTo {
            inner: FileBasedMigrations::from_path(self.path(dir)).unwrap(),
            phase: phase.to_owned(),
        };
        run_pending_with_retry(&mut conn, source, &policy, |_, _, _| {})
            .unwrap_or_else(|e| panic!("{phase}: {e}"));
    }

    /// `diff -u` from `from` to `to` with the labels of `file`, as a team makes its patch.
    pub fn diff_u(&self, file: &str, from: &str, to: &str) -> String {
        self.write("tmp/printed.rs", from);
        self.write("tmp/patched.rs", to);
        let output = Command::new("diff")
            .args([
                "-u",
                "--label",
                &format!("a/{file}"),
                "--label",
                &format!("b/{file}"),
            ])
            .arg(self.path("tmp/printed.rs"))
            .arg(self.path("tmp/patched.rs"))
            .output()
            .expect("running diff");
        fs::remove_dir_all(self.path("tmp")).unwrap();
        assert_eq!(output.status.code(), Some(1), "diff found no difference");
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Whether the real `diesel` CLI is on PATH.
pub fn diesel_on_path() -> bool {
    Command::new("diesel").arg("--version").output().is_ok()
}

/// `text` with `from` replaced by `to` exactly once.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in\n{text}");
    text.replacen(from, to, 1)
}

/// `printed` with `insert` placed before the `table!` of `table`.
pub fn insert_before_table(printed: &str, table: &str, insert: &str) -> String {
    let at = printed
        .find(&format!("    {table} ("))
        .unwrap_or_else(|| panic!("no table! for {table}"));
    let start = printed[..at].rfind("diesel::table! {").unwrap();
    format!("{}{insert}{}", &printed[..start], &printed[start..])
}
