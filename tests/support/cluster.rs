//! A PostgreSQL cluster of one test's own: `initdb` into a temporary folder, started on a free
//! port with the settings the test asks for, stopped (immediately) and removed when dropped.
//! For tests that must restart or break a server, or need a setting the shared server does not
//! have (a message language, say), without touching the shared one.
//!
//! The binaries are the machine's PostgreSQL (`pg_config --bindir`, else the newest under
//! `/usr/lib/postgresql`), or those in `ZMIG_PG_BINDIR`. Run as root, the cluster belongs to
//! the `postgres` user, since PostgreSQL refuses to run as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pgbouncer::{free_port, is_root};

pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// A new cluster named after `label`, started with `settings` (`postgresql.conf` lines).
    pub fn start(label: &str, settings: &[&str]) -> Cluster {
        let bindir = bindir();
        let dir = std::env::temp_dir().join(format!("zmig-cluster-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(Command::new("chown").args(["postgres"]).arg(&dir));
        }
        let data = dir.join("data");
        run(as_server_user(&bindir, "initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data));
        let port = free_port();
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let mut existing = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        fs::write(data.join("postgresql.conf"), existing).unwrap();
        run(as_server_user(&bindir, "pg_ctl")
            .args(["-w", "-l"])
            .arg(dir.join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Cluster { dir, bindir, port }
    }

    /// `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log so far, for a failing assertion's message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bindir, "pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Where the server binaries are.
fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("ZMIG_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (/usr/lib/postgresql, or set ZMIG_PG_BINDIR)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().expect("initdb under /usr/lib/postgresql")
}

/// `program` from `bindir`, run as the `postgres` user when this process is root.
fn as_server_user(bindir: &Path, program: &str) -> Command {
    let path = bindir.join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
