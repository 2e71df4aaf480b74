//! The store's own pool: its settings (size, the time limits of waiting for and making a
//! connection, the maximum lifetime of a connection, the idle time past which a
//! connection is checked before reuse, the hook run on every new connection:
//! [`AfterConnect`]) and the pool itself.
//!
//! A checkout takes a permit of a semaphore of the pool's size (a bounded wait, in
//! arrival order) and the idle connection used last; a lease dropped gives its connection
//! back (when it is still open, noting when it went idle) and then its permit. An idle
//! connection is reused when it is open and within its lifetime. One that sat idle longer
//! than [`IDLE_CHECK_AFTER`] (or the builder's `pool_idle_check_after`) must first answer
//! a round trip (a `Sync` message, the cheapest the protocol has) within a short time
//! ([`CHECK_TIMEOUT`], the request timeout if shorter, or the builder's
//! `pool_recycle_timeout`): a connection whose peer vanished without closing it (a
//! failover, a partition, a flow a NAT or firewall forgot) looks open, and a request
//! written to it would wait out the whole request timeout, a save ending as
//! `OutcomeUnknown` though the server never saw it. A connection that fails its check is
//! closed and the next one is tried; one that does not answer in time is cancelled and
//! closed together with every connection idle longer than it (whatever silenced it
//! silenced them too, and each would cost another wait). The checks and the making of a
//! new connection share the create timeout, so a checkout stays bounded by the wait and
//! create timeouts. A connection used again within the threshold costs no round trip and
//! no more than one reading of the clock, at the checkout; its idle time is counted from
//! there, so a connection held longer than the threshold is checked at its next checkout.
//!
//! Each connection keeps its own prepared statements, keyed by the number of the store's
//! statement text, so finding one hashes a number, not the text.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marten_core::{DatabaseError, Error, Result};
use rustc_hash::FxHashMap;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_postgres::{Client, Statement};
use tracing::debug;

use super::cancel::{cancel_then_drop, CancelRequest};
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
    /// How long the check of a connection idle past `idle_check` waits for its answer
    /// (the builder's `pool_recycle_timeout`; `None`: [`CHECK_TIMEOUT`], or the request
    /// timeout when that is shorter).
    pub(crate) recycle: Option<Duration>,
    /// How long a connection is used before it is closed and replaced.
    pub(crate) max_lifetime: Option<Duration>,
    /// A connection idle longer than this answers a round trip before it is reused
    /// (`None`: never checked).
    pub(crate) idle_check: Option<Duration>,
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
            idle_check: Some(IDLE_CHECK_AFTER),
            after_connect: None,
        }
    }
}

/// The default idle time past which a pooled connection is checked with a round trip
/// before reuse. A pool used at least this often never checks; a connection idle longer
/// pays one round trip, a small price against the time it sat unused. The silent deaths
/// the check is for mostly strike idle connections (address translation and firewall
/// flows forgotten after minutes, servers that end idle sessions), and a failover or a
/// partition met by a connection idle longer is found in [`CHECK_TIMEOUT`] instead of the
/// request timeout. It is also when the store's TCP keepalives start probing (see
/// `connector.rs`), which close a connection whose peer is gone within about a minute of
/// idleness.
pub(crate) const IDLE_CHECK_AFTER: Duration = Duration::from_secs(30);

/// How long the check of an idle connection waits for its answer by default (the request
/// timeout when that is shorter). An idle server process answers at once; a healthy
/// network takes a round trip.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl PoolSettings {
    /// How long making a connection may take.
    pub(crate) fn create_timeout(&self) -> Duration {
        self.create.unwrap_or(self.wait)
    }

    /// How long the check of an idle connection waits for its answer, for a store whose
    /// requests wait at most `request_timeout`.
    fn check_timeout(&self, request_timeout: Option<Duration>) -> Duration {
        self.recycle.unwrap_or_else(|| {
            request_timeout.map_or(CHECK_TIMEOUT, |limit| limit.min(CHECK_TIMEOUT))
        })
    }

    /// Whether a checkout needs the time: to compare ages with the maximum lifetime or
    /// idle times with the check's threshold.
    fn reads_clock(&self) -> bool {
        self.idle_check.is_some() || self.max_lifetime.is_some()
    }

    /// A pool of connections made with `config` over `tls`, for a store whose requests
    /// wait at most `request_timeout` (which bounds the check of an idle connection).
    pub(crate) fn build(
        &self,
        config: tokio_postgres::Config,
        tls: &Tls,
        request_timeout: Option<Duration>,
    ) -> OwnPool {
        OwnPool {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::with_capacity(self.max_size)),
                permits: Semaphore::new(self.max_size.min(Semaphore::MAX_PERMITS)),
                check_timeout: self.check_timeout(request_timeout),
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
    /// How long the check of a connection idle past the threshold waits for its answer.
    check_timeout: Duration,
    config: tokio_postgres::Config,
    tls: Tls,
}

/// A connection of the pool and the statements prepared on it.
struct PoolConn {
    client: Client,
    made: Instant,
    /// When it was last handed out (or made), kept while the pool reads the clock: its idle
    /// time is counted from there.
    idle_since: Instant,
    statements: Mutex<FxHashMap<u64, Statement>>,
}

/// What a checkout does with an idle connection.
enum Fitness {
    /// Hand it out.
    Ready,
    /// Close it: closed already, or past its lifetime.
    Retire,
    /// Idle past the threshold: hand it out once it answered a round trip.
    Check,
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
    /// Waits at most the wait timeout for a permit ([`Error::PoolExhausted`]), then at
    /// most the create timeout for the checks of idle connections past the idle threshold
    /// and a new connection with its after-connect hook ([`Error::Timeout`]).
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
            retired: false,
        };
        let settings = &shared.settings;
        // One reading of the clock serves every idle connection looked at, and only when
        // lifetimes or idle times are limited; it is read again only after a check.
        let mut now = settings.reads_clock().then(Instant::now);
        // What is left of the create timeout, which the checks and a new connection share.
        let mut budget = settings.create_timeout();
        while let Some(conn) = shared.pop_idle() {
            match conn.fitness(now, settings) {
                Fitness::Ready => {
                    lease.conn = Some(stamped(conn, now));
                    return Ok(lease);
                }
                Fitness::Retire => {
                    debug!("closing a pooled connection that is closed or past its lifetime");
                    drop(conn);
                }
                Fitness::Check => {
                    let started = now.unwrap_or_else(Instant::now);
                    let checked = shared.check(conn, budget).await;
                    let after = Instant::now();
                    budget = budget.saturating_sub(after.saturating_duration_since(started));
                    now = Some(after);
                    if let Some(conn) = checked {
                        lease.conn = Some(stamped(conn, now));
                        return Ok(lease);
                    }
                }
            }
        }
        if budget.is_zero() {
            return Err(Error::Timeout {
                what: "a database connection (the checks of idle connections took the \
                       create timeout)"
                    .to_owned(),
            });
        }
        lease.conn = Some(shared.connect(budget).await?);
        Ok(lease)
    }

    /// The settings its connections are made with.
    #[cfg(test)]
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.shared.config
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

    /// `conn`, idle past the threshold, if it answers a round trip within the check
    /// timeout (and `budget`). One that fails is closed; one that does not answer in time
    /// is cancelled and closed, and so is every connection that went idle before it.
    async fn check(&self, conn: PoolConn, budget: Duration) -> Option<PoolConn> {
        let wait = self.check_timeout.min(budget);
        let answered = tokio::time::timeout(wait, conn.client.check_connection()).await;
        match answered {
            Ok(Ok(())) => return Some(conn),
            Ok(Err(e)) => {
                debug!(error = %e, "closing an idle pooled connection that failed its check");
                return None;
            }
            Err(_) => {}
        }
        let since = conn.idle_since;
        debug!(
            waited = ?wait,
            "closing an idle pooled connection that did not answer its check in time"
        );
        let cancel = CancelRequest::new(conn.client.cancel_token(), Some(&self.tls));
        cancel_then_drop(cancel, conn);
        // Idle at least as long: whatever silenced the one checked (a partition, a
        // failover) silenced them too, and each would cost another wait.
        let older: Vec<PoolConn> = self
            .idle()
            .extract_if(.., |c| c.idle_since <= since)
            .collect();
        if !older.is_empty() {
            debug!(
                count = older.len(),
                "closing the pooled connections idle longer than one that did not answer"
            );
        }
        drop(older);
        None
    }

    /// A new connection, its after-connect hook run, within `limit` (the create timeout,
    /// or what the checks of idle connections left of it).
    async fn connect(&self, limit: Duration) -> Result<PoolConn> {
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
            Ok(client) => {
                let client = client?;
                let made = Instant::now();
                Ok(PoolConn {
                    client,
                    made,
                    idle_since: made,
                    statements: Mutex::default(),
                })
            }
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
    /// Whether the connection may be handed out at `now` (`None`: neither lifetimes nor
    /// idle times are limited): open, younger than the maximum lifetime, and idle no
    /// longer than the check's threshold (else it is checked first).
    fn fitness(&self, now: Option<Instant>, settings: &PoolSettings) -> Fitness {
        if self.client.is_closed() {
            return Fitness::Retire;
        }
        let Some(now) = now else {
            return Fitness::Ready;
        };
        let age = now.saturating_duration_since(self.made);
        if settings.max_lifetime.is_some_and(|max| age >= max) {
            return Fitness::Retire;
        }
        let idle = now.saturating_duration_since(self.idle_since);
        if settings.idle_check.is_some_and(|after| idle > after) {
            return Fitness::Check;
        }
        Fitness::Ready
    }
}

/// A connection out of the pool. Dropped, it gives the connection back (unless it was
/// closed, or the pool was) and then its permit.
pub(crate) struct Lease {
    conn: Option<PoolConn>,
    shared: Arc<Shared>,
    /// The permit went to a [`Retiring`] connection ([`Lease::retire`]): the drop gives
    /// back neither.
    retired: bool,
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

    /// Forgets the statements prepared on this connection (they are closed on the
    /// server as they are dropped, and prepared again on their next use): one of them was
    /// refused because the shape of its result changed (see [`Pooled::forget_statements`]).
    ///
    /// [`Pooled::forget_statements`]: super::Pooled::forget_statements
    pub(crate) fn forget_statements(&self) {
        if let Some(conn) = &self.conn {
            let forgotten = std::mem::take(&mut *conn.cache());
            debug!(
                count = forgotten.len(),
                "forgetting the prepared statements of a connection"
            );
        }
    }

    /// The connection taken out of the pool to be closed, keeping its permit until it is
    /// dropped: a connection being cancelled (kept open until its cancel request was
    /// delivered, up to the cancel timeout) still counts against the pool's size, so a
    /// storm of timed-out requests does not open more than the pool's size of connections
    /// (and reach the server's `max_connections`).
    pub(crate) fn retire(mut self) -> Retiring {
        self.retired = true;
        match self.conn.take() {
            Some(conn) => Retiring {
                client: Some(conn.client),
                shared: self.shared.clone(),
            },
            None => unreachable!("a lease without a connection"),
        }
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

/// `conn` handed out at `now` (when the pool reads the clock): its idle time is counted
/// from its checkout, so giving it back reads no clock (a connection held past the idle
/// threshold is checked once more than needed at its next checkout).
fn stamped(mut conn: PoolConn, now: Option<Instant>) -> PoolConn {
    if let Some(now) = now {
        conn.idle_since = now;
    }
    conn
}

impl PoolConn {
    fn cache(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Statement>> {
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection taken out of the pool to be closed ([`Lease::retire`]), holding its
/// permit: dropped, it closes the connection and then gives the permit back.
pub(crate) struct Retiring {
    client: Option<Client>,
    shared: Arc<Shared>,
}

impl Drop for Retiring {
    fn drop(&mut self) {
        drop(self.client.take());
        self.shared.permits.add_permits(1);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.retired {
            return;
        }
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
