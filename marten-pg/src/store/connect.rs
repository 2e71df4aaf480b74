//! The store's connection settings and where its connections come from: the
//! configuration from a connection string or a `tokio_postgres::Config`, with the store's
//! schema as `search_path` (unless a pooler is in between: marten's statements are
//! schema-qualified and need none; it is there for the caller's own SQL), its TLS and its
//! pool, or a caller's pool (whose connections must have that `search_path` already:
//! checked at `build`), and behind a pooler the server's own address for connections
//! outside the pool.

use std::time::Duration;

use deadpool_postgres::Pool;
use marten_core::{Error, Result};

use crate::connection::{
    split_connection_string, within, Conn, Connector, DirectConnections, PoolSettings, Pooler,
    StatementKind, Statements, Tls, TlsSettings,
};
use crate::error_map::{map_db_error, Failed};

/// How the store gets its connections, as configured on the builder.
#[derive(Default)]
pub(super) struct ConnectionSettings {
    pub(super) connection_string: Option<String>,
    pub(super) config: Option<tokio_postgres::Config>,
    pub(super) pool: PoolSettings,
    /// Whether any pool setting was given (they do not apply to a caller's pool).
    pub(super) pool_set: bool,
    pub(super) tls: TlsSettings,
    pub(super) caller_pool: Option<Pool>,
    pub(super) pooler: Pooler,
    pub(super) direct_url: Option<String>,
    /// The read replicas, if any.
    pub(super) replica: ReplicaSettings,
}

/// The read replicas as configured on the builder.
#[derive(Default)]
pub(super) struct ReplicaSettings {
    /// Where each replica is: a connection string or a config.
    pub(super) servers: Vec<ReplicaServer>,
    /// Each one's pool size (default: the primary pool's).
    pub(super) pool_size: Option<usize>,
    /// How long a read waits for it to replay a write.
    pub(super) wait_timeout: Option<Duration>,
}

/// The default of `DocumentStoreBuilder::replica_wait_timeout`.
const DEFAULT_REPLICA_WAIT: Duration = Duration::from_secs(5);

/// Where one read replica is.
pub(super) enum ReplicaServer {
    Url(String),
    Config(Box<tokio_postgres::Config>),
}

impl ReplicaSettings {
    fn is_set(&self) -> bool {
        !self.servers.is_empty()
    }
}

impl ConnectionSettings {
    /// The store's connector: its own pool, or the caller's (checked to connect to
    /// `schema`).
    pub(super) async fn connector(
        self,
        schema: &str,
        request_timeout: Option<Duration>,
    ) -> Result<Connector> {
        let behind_pooler = self.pooler == Pooler::Transaction;
        let kind = match behind_pooler {
            true => StatementKind::Unnamed,
            false => StatementKind::Prepared,
        };
        let statements = Statements::new(schema, kind);
        let Some(pool) = self.caller_pool else {
            let path = (!behind_pooler).then_some(schema);
            let (mut config, from_url) =
                connection_config(self.config, self.connection_string, path)?;
            let tls = Tls::resolve(&self.tls, from_url, &mut config)?;
            let direct = direct(self.direct_url, behind_pooler, &self.tls, schema)?;
            let pool = &self.pool;
            let connector =
                Connector::own((config, tls), direct, pool, request_timeout, statements)?;
            return with_replica(connector, self.replica, &self.tls, pool, path);
        };
        let conflicting = [
            (behind_pooler, "pooler"),
            (self.direct_url.is_some(), "direct_url"),
            (self.connection_string.is_some(), "connection_string"),
            (self.config.is_some(), "config"),
            (self.pool_set, "pool settings"),
            (self.tls.is_set(), "TLS settings"),
            (self.replica.is_set(), "read_replica"),
        ];
        if let Some((_, what)) = conflicting.iter().find(|(set, _)| *set) {
            return Err(Error::Configuration(format!(
                "{what} cannot be combined with pool(..): configure the caller's pool instead"
            )));
        }
        let connector = Connector::caller(pool, request_timeout, statements);
        check_search_path(&connector, schema).await?;
        Ok(connector)
    }
}

/// `connector` with the read replicas of `settings`, if any: their connections made as
/// the primary's are (TLS settings, pool settings and hook, `search_path` set to
/// `schema` when given), TLS as each one's own `sslmode` says.
fn with_replica(
    mut connector: Connector,
    settings: ReplicaSettings,
    tls: &TlsSettings,
    pool: &PoolSettings,
    schema: Option<&str>,
) -> Result<Connector> {
    let mut pool = pool.clone();
    if let Some(size) = settings.pool_size {
        pool.max_size = size;
    }
    let wait = settings.wait_timeout.unwrap_or(DEFAULT_REPLICA_WAIT);
    for server in settings.servers {
        let (config, url) = match server {
            ReplicaServer::Url(url) => (None, Some(url)),
            ReplicaServer::Config(config) => (Some(*config), None),
        };
        let (mut config, from_url) = connection_config(config, url, schema)?;
        let tls = Tls::resolve(tls, from_url, &mut config)?;
        connector = connector.with_replica((config, tls), &pool, wait)?;
    }
    Ok(connector)
}

/// Fails unless `schema` is a plain lower-case identifier that is not a reserved key word.
pub(super) fn check_schema_name(schema: &str) -> Result<()> {
    if !is_identifier(schema) {
        return Err(Error::Configuration(format!(
            "invalid schema name {schema:?}: use lower-case letters, digits and underscores, starting with a letter"
        )));
    }
    if crate::validate::is_reserved_word(schema) {
        return Err(Error::Configuration(format!(
            "invalid schema name {schema:?}: it is a key word PostgreSQL reserves; choose another name"
        )));
    }
    Ok(())
}

/// The connections outside the pool behind a pooler: to `url`, with `search_path` set
/// to `schema` (required behind a pooler in transaction mode; ignored without a pooler).
fn direct(
    url: Option<String>,
    behind_pooler: bool,
    tls: &TlsSettings,
    schema: &str,
) -> Result<Option<DirectConnections>> {
    match (url, behind_pooler) {
        (Some(url), true) => {
            let (mut config, from_url) = connection_config(None, Some(url), Some(schema))?;
            let tls = Tls::resolve(tls, from_url, &mut config)?;
            Ok(Some(DirectConnections { config, tls }))
        }
        (None, true) => Err(Error::Configuration(
            "pooler(Pooler::Transaction) needs direct_url(..): schema work and the daemon's \
             locks need a connection to the server itself"
                .to_owned(),
        )),
        (Some(_), false) => Err(Error::Configuration(
            "direct_url(..) is for a store behind a pooler: set pooler(..) too".to_owned(),
        )),
        (None, false) => Ok(None),
    }
}

/// The connection settings: `config`, else the parsed `url` (without its `sslmode` and
/// `sslrootcert`, returned beside), with `search_path` set to `schema` (when given) and
/// `application_name` defaulting to `marten`.
fn connection_config(
    config: Option<tokio_postgres::Config>,
    url: Option<String>,
    schema: Option<&str>,
) -> Result<(tokio_postgres::Config, crate::connection::UrlTls)> {
    let (mut config, from_url) = match (config, url) {
        (Some(c), _) => (c, Default::default()),
        (None, Some(url)) => {
            let (rest, from_url) = split_connection_string(&url)?;
            let config = rest
                .parse::<tokio_postgres::Config>()
                .map_err(|e| Error::Configuration(format!("invalid connection string: {e}")))?;
            (config, from_url)
        }
        (None, None) => {
            return Err(Error::Configuration(
                "no connection string: call connection_string(..), config(..) or pool(..)"
                    .to_owned(),
            ))
        }
    };
    if let Some(schema) = schema {
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => {
                format!("{existing} -c search_path={schema}")
            }
            _ => format!("-c search_path={schema}"),
        };
        config.options(&options);
    }
    if config.get_application_name().is_none() {
        config.application_name("marten");
    }
    Ok((config, from_url))
}

/// Fails unless the connections of a caller's pool have `schema` first on their
/// `search_path` (marten's statements name their tables without a schema). The read
/// waits for its answer at most the request timeout: past it, the pooled connection is
/// cancelled and closed (never handed back to the pool) and the build fails with
/// [`Error::Timeout`].
async fn check_search_path(connector: &Connector, schema: &str) -> Result<()> {
    const DOING: &str = "reading the pool's search_path";
    let failed = |e| map_db_error(e, Failed::Other(DOING));
    let mut conn = Conn::new();
    let req = conn.request(connector).await?;
    let db = req.client();
    let answered = within(connector, async {
        let row = db
            .raw()
            .query_one("SELECT current_setting('search_path')", &[])
            .await
            .map_err(failed)?;
        row.try_get::<_, String>(0).map_err(failed)
    })
    .await;
    let Some(path) = answered else {
        // Unfinished: the request's guard cancels and closes the connection.
        drop(req);
        return Err(crate::schema::timed_out(connector, DOING));
    };
    req.settle(&path);
    let path = path?;
    let first = path.split(',').next().unwrap_or_default().trim();
    if first.trim_matches('"') == schema {
        return Ok(());
    }
    Err(Error::Configuration(format!(
        "the caller's pool connects with search_path {path:?}: the store needs its schema \
         {schema:?} first; set options \"-c search_path={schema}\" on the pool's config"
    )))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_lower_case_identifiers() {
        assert!(check_schema_name("tenant_1").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in ["", "1abc", "Upper", "a-b", "a b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
        for reserved in ["full", "user", "select", "order", "table"] {
            let err = check_schema_name(reserved)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains("key word"), "{reserved}: {err}");
        }
        assert!(check_schema_name("fuller").is_ok());
        assert!(check_schema_name("users").is_ok());
    }

    #[test]
    fn the_search_path_is_the_schema_and_existing_options_are_kept() {
        let (config, _) = connection_config(
            None,
            Some("postgres://u@h/db?options=-c%20statement_timeout%3D5s".to_owned()),
            Some("s1"),
        )
        .expect("config");
        let options = config.get_options().unwrap_or_default();
        assert!(options.contains("statement_timeout"), "{options}");
        assert!(options.ends_with("-c search_path=s1"), "{options}");
        assert_eq!(config.get_application_name(), Some("marten"));
        assert!(connection_config(None, None, Some("s1")).is_err());
        assert!(connection_config(None, Some("not a url ::".to_owned()), Some("s1")).is_err());
        // Behind a pooler: no startup options at all.
        let (config, _) =
            connection_config(None, Some("postgres://u@h/db".to_owned()), None).expect("config");
        assert_eq!(config.get_options(), None);
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_connection_string() {
        let (config, from_url) = connection_config(
            None,
            Some("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem".to_owned()),
            Some("s1"),
        )
        .expect("config");
        assert_eq!(config.get_dbname(), Some("db"));
        assert_eq!(from_url.root_cert.as_deref(), Some("/ca.pem"));
    }
}
