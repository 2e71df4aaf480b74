//! The server, the schemas the benchmark creates and drops, and the connections of both
//! sides with the same `synchronous_commit` setting.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

/// The local server (trust auth) unless `DATABASE_URL` names another.
pub fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether `MARTEN_BENCH_LOG_STATEMENTS=1` asks the server to log every statement of
/// both sides with its duration (`log_min_duration_statement=0`, superuser only): a
/// profile of the server's time per statement, read from the server's log.
fn log_statements() -> bool {
    std::env::var("MARTEN_BENCH_LOG_STATEMENTS").is_ok_and(|v| v == "1")
}

/// marten's connection string: the server with `synchronous_commit` set to `sync`.
pub fn marten_url(sync: &str) -> String {
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let log = if log_statements() {
        "%20-c%20log_min_duration_statement%3D0"
    } else {
        ""
    };
    format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}{log}")
}

/// A peer's connection: `synchronous_commit` set to `sync` and, with `schema`, the schema
/// first on the `search_path` (how disintegrate and hand-written SQL find their
/// unqualified tables). No TLS, as marten's side.
pub fn peer_options(sync: &str, schema: Option<&str>) -> PgConnectOptions {
    let mut options = PgConnectOptions::from_str(&base_url())
        .expect("DATABASE_URL")
        .ssl_mode(PgSslMode::Disable)
        .options([("synchronous_commit", sync)]);
    if let Some(schema) = schema {
        options = options.options([("search_path", schema)]);
    }
    if log_statements() {
        options = options.options([("log_min_duration_statement", "0")]);
    }
    options
}

/// A sqlx pool of at most `max` connections as the peers' docs build it (sqlx's
/// defaults otherwise, among them `test_before_acquire(true)`: a ping before every
/// checkout) on [`peer_options`].
pub async fn peer_pool(sync: &str, schema: Option<&str>, max: u32) -> PgPool {
    pool_options(max)
        .connect_with(peer_options(sync, schema))
        .await
        .expect("connect")
}

/// sqlx's pool options with at most `max` connections, one kept open.
pub fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max).min_connections(1)
}

/// The schemas of one pass, dropped (with everything in them) when the pass ends.
pub struct Schemas {
    /// The connection that creates and drops them.
    admin: PgPool,
    /// The schemas created so far.
    names: Vec<String>,
}

impl Schemas {
    /// No schema yet; connects the administrative pool.
    pub async fn new() -> Schemas {
        Schemas {
            admin: peer_pool("on", None, 1).await,
            names: Vec::new(),
        }
    }

    /// Creates the schema `name` afresh (dropping a leftover of an interrupted run).
    pub async fn create(&mut self, name: &str) -> String {
        self.drop_one(name).await;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&self.admin)
            .await
            .expect("create schema");
        self.names.push(name.to_owned());
        name.to_owned()
    }

    /// Drops the schema `name` and everything in it, if it exists.
    async fn drop_one(&self, name: &str) {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&self.admin)
            .await
            .expect("drop schema");
    }

    /// Drops every schema this pass created, unless `MARTEN_BENCH_KEEP_SCHEMAS=1` keeps
    /// them to look at (the next run drops them before it creates them again).
    pub async fn drop_all(self) {
        let keep = std::env::var("MARTEN_BENCH_KEEP_SCHEMAS").is_ok_and(|v| v == "1");
        for name in self.names.iter().filter(|_| !keep) {
            self.drop_one(name).await;
        }
        self.admin.close().await;
    }
}

/// Asserts that `pool`'s connections run with `synchronous_commit` = `sync`.
pub async fn check_sync(pool: &PgPool, sync: &str) {
    let actual: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
        .expect("show");
    assert_eq!(actual, sync, "synchronous_commit of a peer's connection");
}
