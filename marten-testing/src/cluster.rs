//! A private PostgreSQL cluster of one test: `initdb` in a fresh temp directory, started
//! with `pg_ctl` on a free loopback port, stopped and removed when the value is dropped.
//!
//! Unlike [`database_url`](crate::database_url) it never uses a shared server: a test
//! that needs cluster-wide state of its own (for example transaction ids near a given
//! value, see [`PrivateCluster::start_at_xid`], or a streaming replica, see
//! [`PrivateCluster::start_replica`]) gets it here. Missing binaries are an
//! error that says what to install; a test fails with it, it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{find_binary, is_root, probe, run_pg};

/// Transactions whose commit status one `pg_xact` segment file holds: 32 pages (an SLRU
/// segment) of 8192 bytes (the default block size), 4 transactions (2 bits each) a byte.
const XACTS_PER_CLOG_SEGMENT: u32 = 32 * 8192 * 4;

/// The size of one `pg_xact` segment file.
const CLOG_SEGMENT_BYTES: usize = 32 * 8192;

/// Times a start is tried on a new free port (another process may take the port between
/// finding it and the server binding it).
const START_ATTEMPTS: usize = 3;

/// A throwaway cluster of its own; see the module docs.
pub struct PrivateCluster {
    dir: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    url: String,
}

impl PrivateCluster {
    /// Creates and starts a cluster with `initdb`'s defaults.
    pub fn start() -> Result<PrivateCluster, String> {
        Self::create(None)
    }

    /// Creates a cluster whose next transaction id is `xid` (set with `pg_resetwal -x`
    /// before the first start) and starts it. `xid` must be at least 3.
    pub fn start_at_xid(xid: u32) -> Result<PrivateCluster, String> {
        Self::create(Some(xid))
    }

    /// The connection string of the cluster (user `postgres`, database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Replaces the cluster's `pg_hba.conf` with `contents` and reloads the configuration
    /// (for tests of authentication failures).
    pub fn set_hba(&self, contents: &str) -> Result<(), String> {
        let hba = self.data.join("pg_hba.conf");
        std::fs::write(&hba, contents)
            .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        let data = self.data.to_string_lossy().into_owned();
        run_pg(&self.pg_ctl, &["-D", &data, "reload"])
    }

    /// Appends `lines` to the cluster's `postgresql.conf`; they take effect at the next
    /// [`restart`](Self::restart) (for example `ssl = on`).
    pub fn append_config(&self, lines: &str) -> Result<(), String> {
        use std::io::Write;
        let conf = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| writeln!(f, "\n{lines}"))
            .map_err(|e| format!("cannot append to {}: {e}", conf.display()))
    }

    /// Writes `contents` to the file `name` in the data directory, readable by the
    /// server's user only (as a key file must be), and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data.join(name);
        std::fs::write(&path, contents)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        give_to_postgres(&path)?;
        Ok(path)
    }

    /// Restarts the server with `pg_ctl restart -m fast` (sessions are terminated, their
    /// transactions rolled back) on the same port, and waits until it accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let data = self.data.to_string_lossy().into_owned();
        run_pg(
            &self.pg_ctl,
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"],
        )?;
        probe(&self.url)
    }

    /// Creates a streaming replica of this cluster (a hot standby: it answers reads and
    /// replays what this cluster writes) with `pg_basebackup -R`, and starts it on a
    /// free port of its own. `initdb`'s defaults already allow it (`wal_level =
    /// replica`, `max_wal_senders = 10`, replication connections from loopback trusted).
    /// Dropped, it is stopped and removed like any private cluster; drop it before
    /// its primary.
    pub fn start_replica(&self) -> Result<PrivateCluster, String> {
        let pg_basebackup = find_binary("pg_basebackup").ok_or_else(|| missing("pg_basebackup"))?;
        let mut replica = Self::empty(self.pg_ctl.clone())?;
        let data = replica.data.to_string_lossy().into_owned();
        run_pg(
            &pg_basebackup,
            &[
                "-D",
                &data,
                "-d",
                &self.url,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        )?;
        replica.start_anywhere()?;
        Ok(replica)
    }

    /// A cluster value owning a fresh directory (its data directory not created yet).
    /// From here on, dropping the value removes the directory whatever fails.
    fn empty(pg_ctl: PathBuf) -> Result<PrivateCluster, String> {
        let suffix: u32 = rand::random();
        let dir = std::env::temp_dir().join(format!(
            "marten-cluster-{}-{suffix:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cluster = PrivateCluster {
            data: dir.join("data"),
            dir,
            pg_ctl,
            url: String::new(),
        };
        give_to_postgres(&cluster.dir)?;
        Ok(cluster)
    }

    fn create(next_xid: Option<u32>) -> Result<PrivateCluster, String> {
        let initdb = find_binary("initdb").ok_or_else(|| missing("initdb"))?;
        let pg_ctl = find_binary("pg_ctl").ok_or_else(|| missing("pg_ctl"))?;
        let pg_resetwal = match next_xid {
            Some(_) => Some(find_binary("pg_resetwal").ok_or_else(|| missing("pg_resetwal"))?),
            None => None,
        };
        let mut cluster = Self::empty(pg_ctl)?;
        let data = cluster.data.to_string_lossy().into_owned();
        run_pg(
            &initdb,
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        )?;
        if let (Some(xid), Some(pg_resetwal)) = (next_xid, pg_resetwal) {
            cluster.set_next_xid(&pg_resetwal, xid)?;
        }
        cluster.start_anywhere()?;
        Ok(cluster)
    }

    /// Starts the server on a free port (another one if that one was taken meanwhile).
    fn start_anywhere(&mut self) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match self.start_on(port) {
                Ok(url) => {
                    self.url = url;
                    return Ok(());
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Sets the next transaction id of the stopped cluster. The server reads the commit
    /// log page of that id on start, so the `pg_xact` segment holding it must exist: it is
    /// created as zeros (no transaction in it has a status yet). Segment `N` (file name
    /// `N` in four or more hex digits) holds the ids `N * 1048576 ..= N * 1048576 + 1048575`.
    fn set_next_xid(&self, pg_resetwal: &Path, xid: u32) -> Result<(), String> {
        let data = self.data.to_string_lossy().into_owned();
        run_pg(pg_resetwal, &["-x", &xid.to_string(), "-D", &data])?;
        let segment = self
            .data
            .join("pg_xact")
            .join(format!("{:04X}", xid / XACTS_PER_CLOG_SEGMENT));
        if !segment.exists() {
            std::fs::write(&segment, vec![0u8; CLOG_SEGMENT_BYTES])
                .map_err(|e| format!("cannot create {}: {e}", segment.display()))?;
            give_to_postgres(&segment)?;
        }
        Ok(())
    }

    /// Starts the server on `port`; its socket directory is the cluster's directory.
    fn start_on(&self, port: u16) -> Result<String, String> {
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.dir.to_string_lossy()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let data = self.data.to_string_lossy().into_owned();
        run_pg(
            &self.pg_ctl,
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        )
        .map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{tail}")
        })?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        probe(&url).map(|()| url)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_string_lossy().into_owned();
            let _ = run_pg(
                &self.pg_ctl,
                &["-D", &data, "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The error of a missing PostgreSQL binary, saying what to install.
fn missing(name: &str) -> String {
    format!(
        "{name} not found on PATH or under /usr/lib/postgresql/*/bin: install PostgreSQL \
         (for example `apt-get install postgresql`) to run tests on a private cluster"
    )
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

/// As root, hands `path` to the `postgres` user the server runs as.
fn give_to_postgres(path: &Path) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .arg("postgres")
        .arg(path)
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown postgres {} failed", path.display()))
    }
}
