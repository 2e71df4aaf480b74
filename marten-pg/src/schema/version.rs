//! The oldest PostgreSQL marten runs on, checked when a store is built: the event store
//! records `pg_current_xact_id()` in an `xid8` column and readers compare it with
//! `pg_snapshot_xmin(pg_current_snapshot())`, all new in PostgreSQL 13 (as is
//! `gen_random_uuid()` without an extension).

use marten_core::{Error, Result};
use tokio_postgres::Client;

use crate::error_map::{map_db_error, Failed};

/// The oldest supported major version.
pub(crate) const MIN_MAJOR: u32 = 13;

/// Fails with [`Error::UnsupportedServerVersion`] on a server older than [`MIN_MAJOR`].
pub(crate) async fn check_server_version(client: &Client) -> Result<()> {
    let what = Failed::Other("reading the server version");
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num'), current_setting('server_version')",
            &[],
        )
        .await
        .map_err(|e| map_db_error(e, what))?;
    let num: String = row.try_get(0).map_err(|e| map_db_error(e, what))?;
    let text: String = row.try_get(1).map_err(|e| map_db_error(e, what))?;
    supported(&num, &text)
}

/// Whether `server_version_num` (e.g. `150004`) is new enough; `text` is the version as
/// the server shows it, for the error.
fn supported(num: &str, text: &str) -> Result<()> {
    let major = num.trim().parse::<u32>().map(|n| n / 10_000).map_err(|_| {
        Error::Configuration(format!(
            "the server reports an unreadable version number {num:?}"
        ))
    })?;
    if major >= MIN_MAJOR {
        return Ok(());
    }
    Err(Error::UnsupportedServerVersion {
        found: text.to_owned(),
        required: MIN_MAJOR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_13_are_refused_naming_both() {
        assert!(supported("130000", "13.0").is_ok());
        assert!(supported("170002", "17.2").is_ok());
        match supported("120017", "12.17 (Debian)") {
            Err(Error::UnsupportedServerVersion { found, required }) => {
                assert_eq!(found, "12.17 (Debian)");
                assert_eq!(required, 13);
            }
            other => panic!("expected a version error, got {other:?}"),
        }
        assert!(matches!(supported("x", "x"), Err(Error::Configuration(_))));
    }
}
