//! A PgBouncer of the test's own, in transaction mode, in front of the harness's server.
//!
//! [`PgBouncer::start`] writes an ini and a user list to a temporary directory, runs the
//! `pgbouncer` binary (Debian's package: `apt-get install pgbouncer`) as a child process
//! on a free port and waits until it accepts connections. It panics with the reason when
//! the binary is missing or does not start: a test that needs it fails, never skips.
//! The process is killed and the directory removed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::database_url;

/// A running PgBouncer (see the module documentation).
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    user: String,
    dbname: String,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode with `pool_size` server connections per
    /// database and user, handed out round robin (so that consecutive transactions of
    /// one client run on different server connections).
    ///
    /// # Panics
    /// When `pgbouncer` is not installed or does not start.
    pub fn start(pool_size: usize) -> PgBouncer {
        let config: tokio_postgres::Config = match database_url().parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url: {e}"),
        };
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let dbname = config.get_dbname().unwrap_or("postgres").to_owned();
        let password = config
            .get_password()
            .map(|p| format!(" password={}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let listen = free_port();
        let suffix: u32 = rand::random();
        let dir = std::env::temp_dir().join(format!("marten-pgbouncer-{suffix:08x}"));
        let write = |name: &str, text: String| {
            if let Err(e) = std::fs::write(dir.join(name), text) {
                panic!("cannot write {name} in {}: {e}", dir.display());
            }
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        write("users.txt", format!("\"{user}\" \"\"\n"));
        write(
            "pgbouncer.ini",
            format!(
                "[databases]\n* = host={host} port={port} user={user}{password}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
                 default_pool_size = {pool_size}\nmax_client_conn = 200\nserver_round_robin = 1\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        );
        let child = spawn(&dir);
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        let mut bouncer = PgBouncer {
            child,
            dir,
            addr,
            user,
            dbname,
        };
        bouncer.wait_ready();
        bouncer
    }

    /// The connection string of the server through PgBouncer (no TLS).
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}/{}?sslmode=disable",
            self.user, self.addr, self.dbname
        )
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited with {status}: {}", self.log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pgbouncer did not listen on {} within 15 s: {}",
            self.addr,
            self.log()
        );
    }

    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("pgbouncer.log"))
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `pgbouncer` on the ini in `dir`; as root (which it refuses) as user `postgres`,
/// for which the directory is made writable.
fn spawn(dir: &std::path::Path) -> Child {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = Command::new("pgbouncer");
    if root {
        use std::os::unix::fs::PermissionsExt;
        for entry in [
            dir.to_path_buf(),
            dir.join("users.txt"),
            dir.join("pgbouncer.ini"),
        ] {
            let mode = if entry == dir { 0o777 } else { 0o644 };
            if let Err(e) = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode))
            {
                panic!("cannot open {} to user postgres: {e}", entry.display());
            }
        }
        command.args(["-u", "postgres"]);
    }
    let stderr = match std::fs::File::create(dir.join("stderr.log")) {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    };
    command
        .arg(dir.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(stderr);
    match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            panic!("cannot run pgbouncer ({e}): install it (Debian: apt-get install -y pgbouncer)")
        }
    }
}

fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no free port: {e}"),
    }
}
