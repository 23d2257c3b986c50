//! A real pgbouncer in transaction pooling mode in front of the test server, started on a free
//! port for one test and stopped when dropped. Debian's package (`apt-get install pgbouncer`,
//! which `.ci/run` does); without it the tests that need it are skipped with a printed reason.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::waits::poll_until;

pub struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

const BINARIES: [&str; 2] = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"];

impl Pgbouncer {
    /// pgbouncer for the server at `server_url` (host and port are read from it), pooling in
    /// transaction mode with at most `pool_size` server connections per database, so clients
    /// share them. `None`, with the reason printed, where pgbouncer is not installed.
    pub fn start(label: &str, server_url: &str, pool_size: u32) -> Option<Pgbouncer> {
        let Some(binary) = BINARIES.iter().find(|b| Path::new(b).exists()) else {
            eprintln!(
                "SKIPPED {label}: pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
            );
            return None;
        };
        let (host, server_port) = host_and_port(server_url);
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("zmig-pgbouncer-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 * = host={host} port={server_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 200\n\
                 server_reset_query =\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        // pgbouncer refuses to run as root; `-u` makes it drop to the server's own user.
        let mut command = Command::new(binary);
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Pgbouncer { child, dir, port };
        poll_until("pgbouncer to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(bouncer)
    }

    /// `database` on the server, through this pgbouncer.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// pgbouncer's log so far, for a failing assertion's message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Host and port of a `postgres://user@host:port/db` URL (port 5432 when it has none).
fn host_and_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(5432)),
        None => (host_port.to_owned(), 5432),
    }
}
