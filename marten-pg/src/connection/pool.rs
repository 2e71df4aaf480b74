//! The store's own pool: its size, the time limits of waiting for, making and recycling
//! a connection, the maximum lifetime of a connection, and the hook run on every new
//! connection ([`AfterConnect`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime,
};
use marten_core::{Error, Result};

use super::tls::Tls;

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
    /// How long checking an idle connection before reuse may take (`None`: as `wait`).
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
    pub(crate) fn build(&self, config: tokio_postgres::Config, tls: &Tls) -> Result<Pool> {
        let manager = tls.manager(
            config,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Last in, first out: a request gets the connection used last, whose server
        // process is warm and awake, and connections beyond the current load stay idle;
        // first in, first out would rotate every request through all of them.
        let mut builder = Pool::builder(manager)
            .max_size(self.max_size)
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.wait))
            .create_timeout(Some(self.create_timeout()))
            .recycle_timeout(Some(self.recycle.unwrap_or(self.wait)));
        if let Some(hook) = self.after_connect.clone() {
            builder = builder.post_create(Hook::async_fn(move |client: &mut ClientWrapper, _| {
                let hook = hook.clone();
                Box::pin(async move { hook(client).await.map_err(HookError::Backend) })
            }));
        }
        if let Some(max) = self.max_lifetime {
            builder = builder.pre_recycle(Hook::sync_fn(move |_, metrics| {
                if metrics.age() >= max {
                    Err(HookError::message("past its maximum lifetime"))
                } else {
                    Ok(())
                }
            }));
        }
        builder
            .build()
            .map_err(|e| Error::Configuration(format!("cannot build the connection pool: {e}")))
    }
}
