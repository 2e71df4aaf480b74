//! The store's own pool: its settings (size, the time limits of waiting for and making a
//! connection, the maximum lifetime of a connection, the hook run on every new connection:
//! [`AfterConnect`]) and the pool itself.
//!
//! A checkout takes a permit of a semaphore of the pool's size (a bounded wait, in
//! arrival order) and the idle connection used last; a lease dropped gives its connection
//! back (when it is still open) and then its permit. The connection is checked before
//! reuse without a round trip: open, and within its lifetime. Each connection keeps its
//! own prepared statements, keyed by the number of the store's statement text, so finding
//! one hashes a number, not the text.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marten_core::{DatabaseError, Error, Result};
use rustc_hash::FxHashMap;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_postgres::{Client, Statement};

use super::tls::{connect_error, tracked, Tls};
use crate::error_map::{map_db_error, Failed};

/// The future an [`AfterConnect`] hook returns.
pub type AfterConnectFuture<'c> =
    Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>>;

/// A hook run on every new connection before its first use (pooled connections and
/// the store's connections outside the pool alike), for example to `SET` a setting.
/// A failure discards the connection and fails the request that wanted it.
pub type AfterConnect =
    Arc<dyn for<'c> Fn(&'c tokio_postgres::Client) -> AfterConnectFuture<'c> + Send + Sync>;

/// The settings of the store's own pool.
#[derive(Clone)]
pub(crate) struct PoolSettings {
    /// The maximum number of connections.
    pub(crate) max_size: usize,
    /// How long a caller waits for a free connection.
    pub(crate) wait: Duration,
    /// How long making a connection may take (`None`: as `wait`).
    pub(crate) create: Option<Duration>,
    /// Kept from the builder (`pool_recycle_timeout`): the check before reuse makes no
    /// round trip, so there is nothing for it to bound.
    pub(crate) recycle: Option<Duration>,
    /// How long a connection is used before it is closed and replaced.
    pub(crate) max_lifetime: Option<Duration>,
    /// Run on every new connection.
    pub(crate) after_connect: Option<AfterConnect>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_size: 16,
            wait: Duration::from_secs(30),
            create: None,
            recycle: None,
            max_lifetime: None,
            after_connect: None,
        }
    }
}

impl PoolSettings {
    /// How long making a connection may take.
    pub(crate) fn create_timeout(&self) -> Duration {
        self.create.unwrap_or(self.wait)
    }

    /// A pool of connections made with `config` over `tls`.
    pub(crate) fn build(&self, config: tokio_postgres::Config, tls: &Tls) -> OwnPool {
        OwnPool {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::with_capacity(self.max_size)),
                permits: Semaphore::new(self.max_size.min(Semaphore::MAX_PERMITS)),
                settings: self.clone(),
                config,
                tls: tls.clone(),
            }),
        }
    }
}

/// How many named statements one connection keeps prepared on the server. A connection
/// whose cache reaches it starts over: the statements are closed on the server as they
/// are dropped, and the ones still in use are prepared again on their next use. Far
/// above the texts a program's own statements make, so it only ever trims the caches of
/// callers sending ever new texts (`sql_query`, `where_sql`) through one pool.
pub(crate) const PER_CONNECTION: usize = 2048;

/// The store's own pool of connections.
pub(crate) struct OwnPool {
    shared: Arc<Shared>,
}

/// What the pool and its leases share.
struct Shared {
    /// The idle connections, the one given back last at the end (last in, first out: a
    /// request gets the connection used last, whose server process is warm and awake,
    /// and connections beyond the current load stay idle).
    idle: Mutex<Vec<PoolConn>>,
    /// One permit per connection the pool may have out or idle; closed with the pool.
    permits: Semaphore,
    settings: PoolSettings,
    config: tokio_postgres::Config,
    tls: Tls,
}

/// A connection of the pool and the statements prepared on it.
struct PoolConn {
    client: Client,
    made: Instant,
    statements: Mutex<FxHashMap<u64, Statement>>,
}

/// The error of a checkout from a closed pool.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store's connection pool is closed")
    }
}

impl std::error::Error for Closed {}

impl OwnPool {
    /// A connection: an idle one, or a new one while the pool has fewer than its size.
    /// Waits at most the wait timeout for a permit ([`Error::PoolExhausted`]) and the
    /// create timeout for a new connection and its after-connect hook ([`Error::Timeout`]).
    pub(crate) async fn get(&self) -> Result<Lease> {
        let shared = &self.shared;
        match shared.permits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {
                let started = Instant::now();
                let wait = shared.settings.wait;
                match tokio::time::timeout(wait, shared.permits.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) => return Err(closed()),
                    Err(_) => {
                        return Err(Error::PoolExhausted {
                            size: shared.settings.max_size,
                            waited_ms: u64::try_from(started.elapsed().as_millis())
                                .unwrap_or(u64::MAX),
                        })
                    }
                }
            }
        }
        // The permit is the lease's from here: dropped without a connection (the
        // caller's future was cancelled while connecting, or connecting failed), it
        // gives the permit back.
        let mut lease = Lease {
            conn: None,
            shared: shared.clone(),
        };
        while let Some(conn) = shared.pop_idle() {
            if conn.reusable(shared.settings.max_lifetime) {
                lease.conn = Some(conn);
                return Ok(lease);
            }
        }
        lease.conn = Some(shared.connect().await?);
        Ok(lease)
    }

    /// Closes the pool: idle connections are dropped (closing them), leases out close
    /// theirs when dropped, and checkouts fail.
    pub(crate) fn close(&self) {
        self.shared.permits.close();
        let idle = std::mem::take(&mut *self.shared.idle());
        drop(idle);
    }
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PoolConn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pop_idle(&self) -> Option<PoolConn> {
        self.idle().pop()
    }

    /// A new connection, its after-connect hook run, within the create timeout.
    async fn connect(&self) -> Result<PoolConn> {
        let limit = self.settings.create_timeout();
        let made = tokio::time::timeout(limit, async {
            let client = match tracked(self.tls.connect(&self.config)).await {
                (Ok(client), _) => client,
                (Err(e), progress) => return Err(connect_error(e, self.tls.mode(), progress)),
            };
            if let Some(hook) = &self.settings.after_connect {
                hook(&client).await.map_err(|e| {
                    map_db_error(e, Failed::Other("running the after-connect hook"))
                })?;
            }
            Ok(client)
        })
        .await;
        match made {
            Ok(client) => Ok(PoolConn {
                client: client?,
                made: Instant::now(),
                statements: Mutex::default(),
            }),
            Err(_) => Err(Error::Timeout {
                what: "a new database connection".to_owned(),
            }),
        }
    }
}

fn closed() -> Error {
    Error::Connection(DatabaseError {
        code: None,
        context: "getting a connection from the pool".to_owned(),
        source: Box::new(Closed),
    })
}

impl PoolConn {
    /// Whether the connection may be used again: open, and younger than `max_lifetime`.
    fn reusable(&self, max_lifetime: Option<Duration>) -> bool {
        !self.client.is_closed() && max_lifetime.is_none_or(|max| self.made.elapsed() < max)
    }
}

/// A connection out of the pool. Dropped, it gives the connection back (unless it was
/// closed, or the pool was) and then its permit.
pub(crate) struct Lease {
    conn: Option<PoolConn>,
    shared: Arc<Shared>,
}

impl Lease {
    /// The connection's client.
    pub(crate) fn client(&self) -> &Client {
        match &self.conn {
            Some(conn) => &conn.client,
            // `OwnPool::get` fills the lease before handing it out; only `detach` and
            // the drop empty it, and both consume it.
            None => unreachable!("a lease without a connection"),
        }
    }

    /// The TLS the connection was made with (its cancel request needs it).
    pub(crate) fn tls(&self) -> &Tls {
        &self.shared.tls
    }

    /// The statement of `sql` (the store's text number `id`) prepared on this
    /// connection: from its cache, or prepared now and kept.
    pub(crate) async fn prepared(
        &self,
        id: u64,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        let Some(conn) = &self.conn else {
            unreachable!("a lease without a connection")
        };
        let cached = conn.cache().get(&id).cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = conn.client.prepare(sql).await?;
        let mut cache = conn.cache();
        if cache.len() >= PER_CONNECTION {
            cache.clear();
        }
        cache.insert(id, statement.clone());
        Ok(statement)
    }

    /// The connection taken out of the pool for good (it closes when dropped); the
    /// permit goes back.
    pub(crate) fn detach(mut self) -> Client {
        match self.conn.take() {
            Some(conn) => conn.client,
            None => unreachable!("a lease without a connection"),
        }
    }
}

impl PoolConn {
    fn cache(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Statement>> {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                // Checked under the lock `close` drains with: a connection given back while
                // the pool closes is either drained or dropped here, never left idle.
                let mut idle = self.shared.idle();
                if !self.shared.permits.is_closed() {
                    idle.push(conn);
                }
            }
        }
        self.shared.permits.add_permits(1);
    }
}
