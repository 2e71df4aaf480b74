//! The PostgreSQL harness shared by marten's tests, examples and benches.
//!
//! [`database_url`] finds a server: `DATABASE_URL` when set; otherwise
//! `postgres://postgres@127.0.0.1:5432/postgres` when it answers; otherwise a throwaway
//! cluster started with the `initdb` / `pg_ctl` found on `PATH` or under
//! `/usr/lib/postgresql/*/bin` (kept in `$TMPDIR/marten-throwaway-pg` and reused by later
//! runs). If none of these works the error says what to install or set. A test that needs
//! the database fails with that reason; it never skips itself.
//!
//! [`TestSchema`] gives each test its own schema, dropped when the value is dropped (also
//! when the test panics), so tests run in parallel and leave nothing behind.
//!
//! [`PrivateCluster`] starts a cluster of one test's own (for cluster-wide state such as
//! the next transaction id), removed when the value is dropped.
//!
//! [`trace`] and [`dcb`] are the tests' seams into marten: daemon hooks that write traces
//! for the race detector, and a boundary read that pauses between its two statements.

#![warn(missing_docs)]

pub mod cancel;
mod cluster;
pub mod daemon;
pub mod dcb;
pub mod fault;
mod pgbouncer;
mod proxy;
pub mod tasks;
pub mod trace;

pub use cluster::PrivateCluster;
pub use fault::FaultProxy;
pub use pgbouncer::PgBouncer;
pub use proxy::CountingProxy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The default local server tried when `DATABASE_URL` is not set.
pub const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The port of the throwaway cluster.
const THROWAWAY_PORT: u16 = 54329;

static URL: OnceLock<Result<String, String>> = OnceLock::new();

/// The connection string of a reachable PostgreSQL, found as the module docs describe.
/// The answer is computed once per process.
///
/// # Panics
/// Never; see [`try_database_url`] for the error.
pub fn database_url() -> String {
    match try_database_url() {
        Ok(url) => url,
        Err(reason) => panic!("{reason}"),
    }
}

/// Like [`database_url`], returning the reason when no database can be had.
pub fn try_database_url() -> Result<String, String> {
    URL.get_or_init(find_database).clone()
}

fn find_database() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.trim().is_empty() {
            return match probe(&url) {
                Ok(()) => Ok(url),
                Err(e) => Err(format!(
                    "DATABASE_URL is set to {url:?} but connecting failed: {e}"
                )),
            };
        }
    }
    let local_error = match probe(LOCAL_URL) {
        Ok(()) => return Ok(LOCAL_URL.to_owned()),
        Err(e) => e,
    };
    match start_throwaway() {
        Ok(url) => Ok(url),
        Err(e) => Err(format!(
            "no PostgreSQL found.\n  - DATABASE_URL is not set (set it to a postgres:// connection string)\n  \
             - {LOCAL_URL} did not answer: {local_error}\n  - starting a throwaway cluster failed: {e}\n\
             Install PostgreSQL (for example `apt-get install postgresql`) so `initdb` and `pg_ctl` are available, \
             or start a server and set DATABASE_URL."
        )),
    }
}

/// Connects once and runs `SELECT 1`, on a private runtime so it works from any context.
pub(crate) fn probe(url: &str) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            let (client, conn) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "timed out after 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let handle = tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            drop(client);
            let _ = handle.await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "probe thread panicked".to_owned())?
}

pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary; as root (which PostgreSQL refuses) it runs as `postgres`.
pub(crate) fn run_pg(bin: &Path, args: &[&str]) -> Result<(), String> {
    let output = if is_root() {
        Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(bin)
            .args(args)
            .output()
    } else {
        Command::new(bin).args(args).output()
    }
    .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed: {}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Starts (or reuses) the throwaway cluster and returns its connection string. This is
/// what [`database_url`] falls back to; it is public so the fallback itself can be tested.
pub fn start_throwaway() -> Result<String, String> {
    let initdb = find_binary("initdb")
        .ok_or("initdb not found on PATH or under /usr/lib/postgresql/*/bin")?;
    let pg_ctl = find_binary("pg_ctl")
        .ok_or("pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")?;
    let dir = std::env::temp_dir().join("marten-throwaway-pg");
    let data = dir.join("data");
    let url = format!("postgres://postgres@127.0.0.1:{THROWAWAY_PORT}/postgres");
    if probe(&url).is_ok() {
        return Ok(url);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if is_root() {
        let _ = Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(&dir)
            .status();
    }
    let data_s = data.to_string_lossy().into_owned();
    if !data.join("PG_VERSION").exists() {
        run_pg(
            &initdb,
            &["-D", &data_s, "-U", "postgres", "--auth=trust", "--no-sync"],
        )?;
    }
    let opts = format!(
        "-p {THROWAWAY_PORT} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
        dir.to_string_lossy()
    );
    let log = dir.join("log").to_string_lossy().into_owned();
    run_pg(
        &pg_ctl,
        &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
    )?;
    probe(&url).map(|()| url)
}

/// Stops the throwaway cluster if it runs (`pg_ctl stop -m fast`).
pub fn stop_throwaway() -> Result<(), String> {
    let pg_ctl = find_binary("pg_ctl").ok_or("pg_ctl not found")?;
    let data = std::env::temp_dir()
        .join("marten-throwaway-pg")
        .join("data");
    if !data.join("postmaster.pid").exists() {
        return Ok(());
    }
    run_pg(
        &pg_ctl,
        &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
    )
}

/// A schema of its own for one test, dropped (with everything in it) on drop.
pub struct TestSchema {
    name: String,
    url: String,
}

impl TestSchema {
    /// A new unique schema name for the test `label`. The schema itself is created by
    /// whoever uses it first (the document store creates its schema).
    pub fn new(label: &str) -> TestSchema {
        let url = database_url();
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let suffix: u32 = rand::random();
        TestSchema {
            name: format!("t_{clean}_{suffix:08x}"),
            url,
        }
    }

    /// The schema name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection string of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port` of the server, for a [`CountingProxy`].
    pub fn host_port(&self) -> String {
        let config: tokio_postgres::Config = match self.url.parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url {:?}: {e}", self.url),
        };
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// The connection string of the server, reached through `proxy`.
    pub fn url_via(&self, proxy: &CountingProxy) -> String {
        self.url_via_addr(proxy.addr())
    }

    /// The connection string of the server, reached through a proxy listening on `addr`,
    /// without TLS (`sslmode=disable`): the proxies count, delay and cut the protocol's
    /// own bytes, which TLS would hide.
    pub fn url_via_addr(&self, addr: std::net::SocketAddr) -> String {
        let config: tokio_postgres::Config = match self.url.parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url {:?}: {e}", self.url),
        };
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or("postgres");
        format!("postgres://{user}@{addr}/{db}?sslmode=disable")
    }

    /// A raw connection whose `search_path` is this schema (for checks behind marten's
    /// back). The connection task runs on the current runtime.
    pub async fn raw_client(&self) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = match self.url.parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url {:?}: {e}", self.url),
        };
        config.options(format!("-c search_path={}", self.name));
        let (client, conn) = match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => panic!("cannot connect to {}: {e}", self.url),
        };
        tokio::spawn(conn);
        client
    }
}

/// Ends the sessions that hold locks on relations of schema `$1`: a test that failed
/// while its tasks held transactions open would otherwise block the schema's drop, and
/// the drop would block the test's runtime, for ever.
const END_LOCK_HOLDERS: &str = "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()";

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        let name = self.name.clone();
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let handle = tokio::spawn(conn);
                    if client.batch_execute(&sql).await.is_err() {
                        let _ = client.execute(END_LOCK_HOLDERS, &[&name]).await;
                        let _ = client.batch_execute(&sql).await;
                    }
                    drop(client);
                    let _ = handle.await;
                }
            });
        })
        .join();
    }
}
