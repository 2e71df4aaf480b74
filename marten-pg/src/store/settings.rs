//! The builder's connection settings: where the server is, TLS, the pool (the
//! store's own, or the caller's), and the read replica.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::connect::ReplicaServer;
use super::DocumentStoreBuilder;
use crate::connection::{AfterConnectFuture, Pooler, SslMode, TlsBackend};

impl DocumentStoreBuilder {
    /// The PostgreSQL connection string (`postgres://user@host:port/db?sslmode=..` or
    /// key=value). Besides what `tokio_postgres` reads, it may carry `sslmode=verify-ca`
    /// or `verify-full` and `sslrootcert=<PEM file>` (or `sslrootcert=system`, which
    /// implies `verify-full` against the system's roots), as libpq's do.
    pub fn connection_string(mut self, url: impl Into<String>) -> Self {
        self.connection.connection_string = Some(url.into());
        self
    }

    /// A ready `tokio_postgres::Config` instead of a connection string. Its `ssl_mode`
    /// is used unless [`ssl_mode`](Self::ssl_mode) says otherwise.
    pub fn config(mut self, config: tokio_postgres::Config) -> Self {
        self.connection.config = Some(config);
        self
    }

    /// How connections use TLS; wins over the connection string's `sslmode` (default:
    /// the connection string's, else [`SslMode::Prefer`]).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.connection.tls.mode = Some(mode);
        self
    }

    /// A root certificate (PEM; several may be given, in one text or in several calls)
    /// the server's certificate must be signed by, instead of the system's and the
    /// Mozilla roots. With one, `prefer` and `require` check the chain too, as libpq does
    /// when it has a root certificate. An unreadable PEM fails `build`.
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.connection.tls.roots_pem.push(pem.into());
        self
    }

    /// The TLS library (default [`TlsBackend::Rustls`]).
    pub fn tls_backend(mut self, backend: TlsBackend) -> Self {
        self.connection.tls.backend = backend;
        self
    }

    /// Uses the caller's pool instead of making one. Its connections must have the
    /// store's schema first on their `search_path` (the connections the store takes out
    /// of it for schema work and the daemon rely on it): build the pool from a config with
    /// `options("-c search_path=<schema>")`; `build` checks one connection and fails
    /// with [`Error::Configuration`](marten_core::Error::Configuration) otherwise. The
    /// pool's own settings (TLS, size, timeouts, hooks) apply; the builder's connection,
    /// TLS and pool settings cannot be combined with it. Connections the store keeps
    /// outside the pool (schema work, the daemon's locks) are taken out of it for good.
    /// Its recycling method should be `Fast` or `Verified`: `Clean` resets the
    /// `search_path` of a connection that was changed with `SET`.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.connection.caller_pool = Some(pool);
        self
    }

    /// What stands between the pool and the server (default [`Pooler::None`]). With
    /// [`Pooler::Transaction`] (PgBouncer in transaction mode, hosted poolers) the pool's
    /// connections send no startup `options` and statements go unnamed (parsed on every
    /// use), and connections outside the pool (schema work, the daemon's session
    /// advisory locks) go to [`direct_url`](Self::direct_url), which is then required.
    /// Not with a caller's [`pool`](Self::pool).
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.connection.pooler = pooler;
        self
    }

    /// The server's own connection string, past the pooler, for the connections the
    /// store keeps outside its pool: schema work and the daemon's projection locks
    /// (session advisory locks, which a pooler in transaction mode cannot keep). TLS as
    /// its own `sslmode` and the builder's TLS settings say.
    pub fn direct_url(mut self, url: impl Into<String>) -> Self {
        self.connection.direct_url = Some(url.into());
        self
    }

    /// The maximum number of pooled connections (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.connection.pool.max_size = size.max(1);
        self.connection.pool_set = true;
        self
    }

    /// How long a session waits for a pooled connection before failing with
    /// [`Error::PoolExhausted`](marten_core::Error::PoolExhausted) (default 30 s). It is
    /// also the default of the create timeout.
    pub fn pool_wait_timeout(mut self, wait: Duration) -> Self {
        self.connection.pool.wait = wait;
        self.connection.pool_set = true;
        self
    }

    /// How long making a new connection (TCP, TLS, authentication, the after-connect
    /// hook's start) may take before failing with
    /// [`Error::Timeout`](marten_core::Error::Timeout) (default: the wait timeout).
    pub fn pool_create_timeout(mut self, timeout: Duration) -> Self {
        self.connection.pool.create = Some(timeout);
        self.connection.pool_set = true;
        self
    }

    /// How long the check of a pooled connection idle past `pool_idle_check_after` waits
    /// for its answer before the connection is cancelled and closed (default 5 s, or the
    /// request timeout if shorter).
    pub fn pool_recycle_timeout(mut self, timeout: Duration) -> Self {
        self.connection.pool.recycle = Some(timeout);
        self.connection.pool_set = true;
        self
    }

    /// How long a pooled connection is used: an older one is closed when it comes back
    /// to be reused, and a new one is made (default: for ever). For servers or proxies
    /// that should see connections move, and to pick up changed server settings.
    pub fn connection_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.connection.pool.max_lifetime = Some(lifetime);
        self.connection.pool_set = true;
        self
    }

    /// Runs `hook` on every new connection before its first use, pooled or not (for
    /// example to `SET` a setting). A failing hook discards the connection and fails the
    /// request that wanted it with the hook's error.
    ///
    /// ```no_run
    /// # async fn demo(url: String) -> marten_core::Result<()> {
    /// let store = marten_pg::DocumentStore::builder()
    ///     .connection_string(url)
    ///     .after_connect(|client| {
    ///         Box::pin(async move { client.batch_execute("SET statement_timeout = '5s'").await })
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c tokio_postgres::Client) -> AfterConnectFuture<'c> + Send + Sync + 'static,
    {
        self.connection.pool.after_connect = Some(std::sync::Arc::new(hook));
        self.connection.pool_set = true;
        self
    }

    /// A read replica of the server (a streaming standby), by its connection string:
    /// sessions that ask for it read there ([`DocumentStore::query_session_on_replica`],
    /// [`ReplicaReads`](crate::ReplicaReads)); every write, every read inside a
    /// session's transaction, schema work and the daemon stay on the primary. Its
    /// connections are made as the primary's are: the TLS settings (TLS as its own
    /// `sslmode` says), the pool settings (size:
    /// [`read_replica_pool_size`](Self::read_replica_pool_size)), the time limits, the
    /// after-connect hook and the schema's `search_path`. Called again, it adds another
    /// replica: sessions take them in turn, each keeping the one it first read from. Not
    /// with a caller's [`pool`](Self::pool).
    ///
    /// [`DocumentStore::query_session_on_replica`]: crate::DocumentStore::query_session_on_replica
    pub fn read_replica(mut self, url: impl Into<String>) -> Self {
        let server = ReplicaServer::Url(url.into());
        self.connection.replica.servers.push(server);
        self
    }

    /// A read replica by a ready `tokio_postgres::Config` (see
    /// [`read_replica`](Self::read_replica)).
    pub fn read_replica_config(mut self, config: tokio_postgres::Config) -> Self {
        let server = ReplicaServer::Config(Box::new(config));
        self.connection.replica.servers.push(server);
        self
    }

    /// The maximum number of pooled connections to each read replica (default: the
    /// primary pool's size).
    pub fn read_replica_pool_size(mut self, size: usize) -> Self {
        self.connection.replica.pool_size = Some(size.max(1));
        self
    }

    /// How long a replica read that must see a write (read-your-writes, or a
    /// [`WriteToken`](crate::WriteToken)) waits for the replica to replay it before failing
    /// with [`Error::ReplicaBehind`](marten_core::Error::ReplicaBehind) (default 5 s). The
    /// wait holds no connection between its checks; it may overrun the timeout by one
    /// check, which the pool's wait and the request timeout bound.
    pub fn replica_wait_timeout(mut self, timeout: Duration) -> Self {
        self.connection.replica.wait_timeout = Some(timeout);
        self
    }
}
