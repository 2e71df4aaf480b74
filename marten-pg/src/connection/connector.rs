//! Where connections come from: the pool (bounded wait), connections outside the pool
//! (schema work, advisory locks), and the time limits every request obeys.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use marten_core::{Error, Result};
use tokio_postgres::NoTls;

use crate::error_map::{map_db_error, map_pool_error, Failed};

/// The store's source of connections and its time limits.
pub(crate) struct Connector {
    pool: Pool,
    /// The pool's connection settings, for connections outside the pool.
    config: tokio_postgres::Config,
    pool_size: usize,
    pool_wait: Duration,
    request_timeout: Option<Duration>,
}

impl Connector {
    /// A connector over `pool`, whose connections were made with `config`.
    pub(crate) fn new(
        pool: Pool,
        config: tokio_postgres::Config,
        pool_size: usize,
        pool_wait: Duration,
        request_timeout: Option<Duration>,
    ) -> Self {
        Self {
            pool,
            config,
            pool_size,
            pool_wait,
            request_timeout,
        }
    }

    /// Gets a connection from the pool, waiting at most the pool's wait timeout
    /// ([`Error::PoolExhausted`]).
    pub(crate) async fn pooled(&self) -> Result<Object> {
        let started = Instant::now();
        self.pool
            .get()
            .await
            .map_err(|e| map_pool_error(e, self.pool_size, started.elapsed()))
    }

    /// Opens a connection outside the pool with the pool's settings. It closes when the
    /// client is dropped.
    pub(crate) async fn dedicated(&self) -> Result<tokio_postgres::Client> {
        let connect = self.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(self.pool_wait, connect).await {
            Ok(connected) => connected.map_err(|e| map_db_error(e, Failed::Other("connecting")))?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: "a new database connection".to_owned(),
                })
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "dedicated connection ended");
            }
        });
        Ok(client)
    }

    /// How long a request waits for its answers.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// Closes the pool: idle connections are dropped, no new ones are made.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}

impl AsRef<Connector> for Connector {
    fn as_ref(&self) -> &Connector {
        self
    }
}
