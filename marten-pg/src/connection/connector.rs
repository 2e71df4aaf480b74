//! Where connections come from: the pool (bounded wait; the store's own or the
//! caller's), connections outside the pool (schema work, advisory locks), the read
//! replica's pool (reads that asked for it, see `replica.rs`), and the time limits every
//! request obeys.
//!
//! A caller's pool is waited for boundedly too, whatever timeouts it was built with: at
//! most its own wait timeout, else the store's default pool wait or the request timeout,
//! whichever is shorter, ending in [`Error::PoolExhausted`] as a wait on the store's own
//! pool does. Its connections outside the pool are taken out of it (the store does not
//! know how to make them), so they wait for it the same way.
//!
//! The connections the store makes (its pool's, the read replicas', those outside the
//! pool) use TCP keepalives that find a peer gone without a word (a host that died, a
//! partition, a flow a NAT or firewall dropped) within about a minute of idleness:
//! probes after [`KEEPALIVE_IDLE`] without traffic, every [`KEEPALIVE_INTERVAL`], the
//! connection closed after [`KEEPALIVE_RETRIES`] unanswered ones; the pool then drops it
//! as closed instead of writing a request to it. tokio-postgres leaves the system's
//! defaults (on Linux: the first probe after two hours, nine probes 75 s apart). Each is
//! set only when the connection string or `Config` did not set it (`keepalives_idle`,
//! `keepalives_interval`, `keepalives_retries`; an idle time of exactly two hours, which
//! is tokio-postgres's default, counts as not set); `keepalives=0` turns them all off.
//! The probes also keep an idle flow alive in address translation tables, whose idle
//! timeouts are minutes. (Windows keeps its own count of probes.)

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Pool, PoolError, TimeoutType, Timeouts};
use marten_core::{Error, Result};
use tracing::warn;

use super::anchor::Anchor;
use super::cancel::CancelRequest;
use super::deadlines::{Deadlines, Within};
use super::pool::{AfterConnect, OwnPool, PoolSettings};
use super::statements::Statements;
use super::tls::{connect_error, tracked, Tls};
use super::Pooled;
use crate::error_map::{map_db_error, map_pool_error, Failed};

/// How long a connection the store makes is idle before TCP keepalive probes start
/// (unless its settings say otherwise; see the module documentation).
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// The time between two keepalive probes.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How many unanswered keepalive probes close the connection.
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;
/// tokio-postgres's keepalive idle time when none is set: one equal to it was not set.
const TOKIO_POSTGRES_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// `config` with the store's keepalive defaults for what it does not set (see the module
/// documentation): nothing when it turned keepalives off.
fn keepalive_defaults(config: &mut tokio_postgres::Config) {
    if !config.get_keepalives() {
        return;
    }
    if config.get_keepalives_idle() == TOKIO_POSTGRES_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
}

/// The store's source of connections and its time limits.
pub(crate) struct Connector {
    pool: Pools,
    /// How the store makes connections itself; `None` for a caller's pool, whose
    /// connections outside the pool are taken out of it.
    own: Option<OwnConnections>,
    request_timeout: Option<Duration>,
    statements: Arc<Statements>,
    /// The read replicas, if any: reads that ask for one go there, each session to one
    /// of them in turn.
    replicas: Replicas,
    /// The timer that keeps the waits left on tokio timers from waking the runtime (see
    /// `anchor.rs`); a replica's connector shares its primary's.
    _anchor: Anchor,
}

/// Where pooled connections come from.
enum Pools {
    /// The store's own pool.
    Own(OwnPool),
    /// A caller's pool.
    Caller(Pool),
}

/// The read replicas of a store and the turn of the next session.
#[derive(Default)]
struct Replicas {
    list: Vec<Replica>,
    next: std::sync::atomic::AtomicUsize,
}

/// A read replica: a pool of its own (the primary's statements, TLS and time limits) and
/// how long a read waits for it to replay a write.
pub(crate) struct Replica {
    /// Where the replica's connections come from.
    pub(crate) connector: Connector,
    /// How long a read waits for the replica to replay a write before failing with
    /// [`Error::ReplicaBehind`].
    pub(crate) wait_timeout: Duration,
}

/// The settings of the connections a store makes itself.
struct OwnConnections {
    config: tokio_postgres::Config,
    tls: Tls,
    /// Where connections outside the pool go, when not where the pool's go (behind a
    /// pooler: straight to the server).
    direct: Option<DirectConnections>,
    create_timeout: Duration,
    after_connect: Option<AfterConnect>,
}

/// The server's own address for connections outside the pool (schema work, the
/// daemon's session locks), when the pool's connections go through a pooler.
pub(crate) struct DirectConnections {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Tls,
}

/// A connection outside the pool. It closes when dropped.
pub(crate) enum Dedicated {
    /// Made by the store, over the TLS it keeps for the connection's cancel request.
    Own(tokio_postgres::Client, Tls),
    /// Taken out of a caller's pool for good.
    Taken(ClientWrapper),
}

impl Deref for Dedicated {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        match self {
            Dedicated::Own(client, _) => client,
            Dedicated::Taken(client) => client,
        }
    }
}

impl Dedicated {
    /// The cancel request for what runs on this connection, over the TLS it was made
    /// with (a caller's pool's: not known).
    pub(crate) fn cancel_request(&self) -> CancelRequest {
        match self {
            Dedicated::Own(client, tls) => CancelRequest::new(client.cancel_token(), Some(tls)),
            Dedicated::Taken(client) => CancelRequest::new(client.cancel_token(), None),
        }
    }
}

impl Connector {
    /// A connector with a pool of its own, whose connections are made with `config`
    /// over `tls` (with the store's keepalive defaults).
    /// `direct`: where connections outside the pool go instead. Statements are sent as
    /// `statements` says.
    pub(crate) fn own(
        (mut config, tls): (tokio_postgres::Config, Tls),
        direct: Option<DirectConnections>,
        settings: &PoolSettings,
        request_timeout: Option<Duration>,
        statements: Statements,
    ) -> Result<Self> {
        keepalive_defaults(&mut config);
        let direct = direct.map(|mut direct| {
            keepalive_defaults(&mut direct.config);
            direct
        });
        let pool = Pools::Own(settings.build(config.clone(), &tls, request_timeout));
        Ok(Self {
            pool,
            own: Some(OwnConnections {
                config,
                tls,
                direct,
                create_timeout: settings.create_timeout(),
                after_connect: settings.after_connect.clone(),
            }),
            request_timeout,
            statements: Arc::new(statements),
            replicas: Replicas::default(),
            _anchor: Anchor::start(),
        })
    }

    /// This connector with one more read replica, whose pooled connections are made with
    /// `config` over `tls` (with the store's keepalive defaults) and `settings` (no
    /// connections outside the pool: schema work and locks never go to a replica). It
    /// sends this connector's statements and obeys its request timeout; reads wait at
    /// most `wait_timeout` for it to replay a write.
    pub(crate) fn with_replica(
        mut self,
        (mut config, tls): (tokio_postgres::Config, Tls),
        settings: &PoolSettings,
        wait_timeout: Duration,
    ) -> Result<Self> {
        keepalive_defaults(&mut config);
        let pool = Pools::Own(settings.build(config.clone(), &tls, self.request_timeout));
        let connector = Connector {
            pool,
            own: Some(OwnConnections {
                config,
                tls,
                direct: None,
                create_timeout: settings.create_timeout(),
                after_connect: settings.after_connect.clone(),
            }),
            request_timeout: self.request_timeout,
            statements: self.statements.clone(),
            replicas: Replicas::default(),
            _anchor: Anchor::default(),
        };
        self.replicas.list.push(Replica {
            connector,
            wait_timeout,
        });
        Ok(self)
    }

    /// Whether the store has a read replica.
    pub(crate) fn has_replica(&self) -> bool {
        !self.replicas.list.is_empty()
    }

    /// The read replica at `index` (see [`next_replica`](Self::next_replica)).
    pub(crate) fn replica(&self, index: usize) -> Option<&Replica> {
        self.replicas.list.get(index)
    }

    /// The index of the replica whose turn it is (round robin), if there is one.
    pub(crate) fn next_replica(&self) -> Option<usize> {
        let count = self.replicas.list.len();
        let turn = self
            .replicas
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (count > 0).then(|| turn % count)
    }

    /// A connector over a caller's pool.
    pub(crate) fn caller(
        pool: Pool,
        request_timeout: Option<Duration>,
        statements: Statements,
    ) -> Self {
        Self {
            pool: Pools::Caller(pool),
            own: None,
            request_timeout,
            statements: Arc::new(statements),
            replicas: Replicas::default(),
            _anchor: Anchor::start(),
        }
    }

    /// The store's statements.
    pub(crate) fn statements(&self) -> &Arc<Statements> {
        &self.statements
    }

    /// Gets a connection from the pool, waiting at most the pool's wait timeout
    /// ([`Error::PoolExhausted`]; for a caller's pool see the module documentation).
    pub(crate) async fn pooled(&self) -> Result<Pooled> {
        let pool = match &self.pool {
            Pools::Own(pool) => return pool.get().await.map(Pooled::Own),
            Pools::Caller(pool) => pool,
        };
        let started = Instant::now();
        caller_get(pool, self.caller_wait(pool))
            .await
            .map(Pooled::Caller)
            .map_err(|e| map_pool_error(e, pool.status().max_size, started.elapsed()))
    }

    /// How long a checkout from the caller's `pool` waits for a free connection: its own
    /// wait timeout when it has one, else the store's default pool wait, or the request
    /// timeout when that is shorter.
    fn caller_wait(&self, pool: &Pool) -> Duration {
        pool.timeouts().wait.unwrap_or_else(|| {
            let default = PoolSettings::default().wait;
            self.request_timeout
                .map_or(default, |limit| limit.min(default))
        })
    }

    /// Opens a connection outside the pool with the pool's settings (for a caller's
    /// pool: takes one out of it, waiting for it as [`pooled`](Self::pooled) does). It
    /// closes when dropped.
    pub(crate) async fn dedicated(&self) -> Result<Dedicated> {
        let Some(own) = &self.own else {
            return match self.pooled().await {
                Ok(pooled) => Ok(pooled.detach()),
                Err(e) => {
                    if matches!(e, Error::PoolExhausted { .. }) {
                        warn!(
                            "no connection of the caller's pool came free for work outside the \
                             pool (schema work of a type's first use, a daemon lock): all of them \
                             are in use, perhaps one by the session that asked; register the \
                             session's document types on the builder or enlarge the pool"
                        );
                    }
                    Err(e)
                }
            };
        };
        let (config, tls) = match &own.direct {
            Some(direct) => (&direct.config, &direct.tls),
            None => (&own.config, &own.tls),
        };
        let connect = tokio::time::timeout(own.create_timeout, tls.connect(config));
        let client = match tracked(connect).await {
            (Ok(Ok(client)), _) => client,
            (Ok(Err(e)), progress) => return Err(connect_error(e, tls.mode(), progress)),
            (Err(_), _) => {
                return Err(Error::Timeout {
                    what: "a new database connection".to_owned(),
                })
            }
        };
        if let Some(hook) = &own.after_connect {
            // Bounded like the pool's connections, whose create timeout covers the hook.
            match tokio::time::timeout(own.create_timeout, hook(&client)).await {
                Ok(ran) => ran.map_err(|e| {
                    map_db_error(e, Failed::Other("running the after-connect hook"))
                })?,
                Err(_) => {
                    return Err(Error::Timeout {
                        what: "the after-connect hook of a new database connection".to_owned(),
                    })
                }
            }
        }
        Ok(Dedicated::Own(client, tls.clone()))
    }

    /// Whether the store makes its connections itself (its own pool), as opposed to
    /// taking them out of a caller's pool, where a connection outside the pool is one
    /// fewer in it.
    pub(crate) fn makes_connections(&self) -> bool {
        self.own.is_some()
    }

    /// How long a request waits for its answers.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// A request's `answers` awaited within the request timeout: `None` when it passed.
    pub(crate) fn within<F: std::future::Future>(&self, answers: F) -> Within<'static, F> {
        let limit = self
            .request_timeout
            .map(|limit| (Deadlines::global(), limit));
        Within::new(answers, limit)
    }

    /// Closes the pool (and the replica's): idle connections are dropped, no new ones
    /// are made.
    pub(crate) fn close(&self) {
        match &self.pool {
            Pools::Own(pool) => pool.close(),
            Pools::Caller(pool) => pool.close(),
        }
        for replica in &self.replicas.list {
            replica.connector.close();
        }
    }
}

/// A connection of the caller's `pool`, waiting at most `wait` for a free one. Making or
/// recycling one is bounded by the pool's own timeouts, else by `wait` too. A pool built
/// without a runtime cannot time anything: its whole checkout is bounded by `wait`, and a
/// checkout that runs out of it counts as a wait for a free connection.
async fn caller_get(
    pool: &Pool,
    wait: Duration,
) -> std::result::Result<deadpool_postgres::Object, PoolError> {
    let configured = pool.timeouts();
    let timeouts = Timeouts {
        wait: Some(wait),
        create: configured.create.or(Some(wait)),
        recycle: configured.recycle.or(Some(wait)),
    };
    match pool.timeout_get(&timeouts).await {
        Err(PoolError::NoRuntimeSpecified) => tokio::time::timeout(wait, pool.get())
            .await
            .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait))),
        got => got,
    }
}

impl AsRef<Connector> for Connector {
    fn as_ref(&self) -> &Connector {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> tokio_postgres::Config {
        match text.parse() {
            Ok(config) => config,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn keepalives(
        config: &tokio_postgres::Config,
    ) -> (bool, Duration, Option<Duration>, Option<u32>) {
        (
            config.get_keepalives(),
            config.get_keepalives_idle(),
            config.get_keepalives_interval(),
            config.get_keepalives_retries(),
        )
    }

    #[test]
    fn keepalive_defaults_find_a_dead_peer_within_a_minute() {
        let idle_to_closed = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_RETRIES;
        assert!(
            idle_to_closed <= Duration::from_secs(60),
            "{idle_to_closed:?}"
        );
    }

    #[test]
    fn keepalive_defaults_apply_to_what_was_not_set() {
        let defaults = (
            true,
            KEEPALIVE_IDLE,
            Some(KEEPALIVE_INTERVAL),
            Some(KEEPALIVE_RETRIES),
        );
        for text in [
            "postgres://u@h/db",
            "host=h user=u dbname=db",
            "postgres://u@h/db?keepalives=1",
        ] {
            let mut config = parsed(text);
            keepalive_defaults(&mut config);
            assert_eq!(keepalives(&config), defaults, "{text}");
        }
        let mut config = tokio_postgres::Config::new();
        keepalive_defaults(&mut config);
        assert_eq!(keepalives(&config), defaults, "a Config built in code");
    }

    #[test]
    fn keepalive_settings_given_are_kept() {
        let mut config = parsed(
            "postgres://u@h/db?keepalives_idle=300&keepalives_interval=20&keepalives_retries=5",
        );
        keepalive_defaults(&mut config);
        assert_eq!(
            keepalives(&config),
            (
                true,
                Duration::from_secs(300),
                Some(Duration::from_secs(20)),
                Some(5)
            )
        );
        // Each one given is kept; the others get the defaults.
        let mut config = parsed("host=h keepalives_idle=120");
        keepalive_defaults(&mut config);
        assert_eq!(
            keepalives(&config),
            (
                true,
                Duration::from_secs(120),
                Some(KEEPALIVE_INTERVAL),
                Some(KEEPALIVE_RETRIES)
            )
        );
        let mut config = tokio_postgres::Config::new();
        config.keepalives_retries(0);
        keepalive_defaults(&mut config);
        assert_eq!(config.get_keepalives_retries(), Some(0));
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        // Turned off: left off, nothing else set.
        let mut config = parsed("postgres://u@h/db?keepalives=0");
        keepalive_defaults(&mut config);
        assert_eq!(
            keepalives(&config),
            (false, TOKIO_POSTGRES_KEEPALIVE_IDLE, None, None)
        );
    }

    /// `text` parsed, with its TLS resolved as the store does.
    fn with_tls(text: &str) -> (tokio_postgres::Config, Tls) {
        let mut config = parsed(text);
        match Tls::resolve(&Default::default(), Default::default(), &mut config) {
            Ok(tls) => (config, tls),
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn every_connection_the_store_makes_gets_the_keepalive_defaults() {
        let (config, tls) = with_tls("host=direct");
        let direct = DirectConnections { config, tls };
        let statements = Statements::new("s", super::super::StatementKind::Prepared);
        let settings = PoolSettings::default();
        let connector = Connector::own(
            with_tls("host=pool keepalives_idle=90"),
            Some(direct),
            &settings,
            None,
            statements,
        )
        .and_then(|c| c.with_replica(with_tls("host=replica"), &settings, Duration::ZERO));
        let connector = match connector {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let own = connector.own.as_ref().map(|own| &own.config);
        let pool = match &connector.pool {
            Pools::Own(pool) => Some(pool.config()),
            Pools::Caller(_) => None,
        };
        for config in [own, pool] {
            let config = config.map(keepalives);
            let given = (
                true,
                Duration::from_secs(90),
                Some(KEEPALIVE_INTERVAL),
                Some(KEEPALIVE_RETRIES),
            );
            assert_eq!(config, Some(given));
        }
        let defaults = (
            true,
            KEEPALIVE_IDLE,
            Some(KEEPALIVE_INTERVAL),
            Some(KEEPALIVE_RETRIES),
        );
        let direct = connector.own.as_ref().and_then(|own| own.direct.as_ref());
        assert_eq!(direct.map(|d| keepalives(&d.config)), Some(defaults));
        let replica = connector.replica(0).map(|r| &r.connector);
        let replica_own = replica
            .and_then(|r| r.own.as_ref())
            .map(|o| keepalives(&o.config));
        assert_eq!(replica_own, Some(defaults));
        let replica_pool = replica.and_then(|r| match &r.pool {
            Pools::Own(pool) => Some(keepalives(pool.config())),
            Pools::Caller(_) => None,
        });
        assert_eq!(replica_pool, Some(defaults));
    }
}
