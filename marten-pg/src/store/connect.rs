//! The store's connection settings and pool: the configuration from a connection string
//! or a `tokio_postgres::Config`, with the store's schema as `search_path`, and the pool
//! whose waits are bounded.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use marten_core::{Error, Result};
use tokio_postgres::NoTls;

/// Fails unless `schema` is a plain lower-case identifier.
pub(super) fn check_schema_name(schema: &str) -> Result<()> {
    if is_identifier(schema) {
        return Ok(());
    }
    Err(Error::Configuration(format!(
        "invalid schema name {schema:?}: use lower-case letters, digits and underscores, starting with a letter"
    )))
}

/// The connection settings: `config`, else the parsed `url`, with `search_path` set to
/// `schema` and `application_name` defaulting to `marten`.
pub(super) fn connection_config(
    config: Option<tokio_postgres::Config>,
    url: Option<String>,
    schema: &str,
) -> Result<tokio_postgres::Config> {
    let mut config = match (config, url) {
        (Some(c), _) => c,
        (None, Some(url)) => url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| Error::Configuration(format!("invalid connection string: {e}")))?,
        (None, None) => {
            return Err(Error::Configuration(
                "no connection string: call connection_string(..) or config(..)".to_owned(),
            ))
        }
    };
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} -c search_path={schema}"),
        _ => format!("-c search_path={schema}"),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("marten");
    }
    Ok(config)
}

/// A pool of at most `size` connections made with `config`; getting, creating and
/// recycling a connection each wait at most `wait`.
pub(super) fn pool(config: tokio_postgres::Config, size: usize, wait: Duration) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| Error::Configuration(format!("cannot build the connection pool: {e}")))
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
    }

    #[test]
    fn the_search_path_is_the_schema_and_existing_options_are_kept() {
        let config = connection_config(
            None,
            Some("postgres://u@h/db?options=-c%20statement_timeout%3D5s".to_owned()),
            "s1",
        )
        .expect("config");
        let options = config.get_options().unwrap_or_default();
        assert!(options.contains("statement_timeout"), "{options}");
        assert!(options.ends_with("-c search_path=s1"), "{options}");
        assert_eq!(config.get_application_name(), Some("marten"));
        assert!(connection_config(None, None, "s1").is_err());
        assert!(connection_config(None, Some("not a url ::".to_owned()), "s1").is_err());
    }
}
