//! The oldest PostgreSQL marten runs on, checked when a store is built: the event store
//! records `pg_current_xact_id()` in an `xid8` column and readers compare it with
//! `pg_snapshot_xmin(pg_current_snapshot())`, all new in PostgreSQL 13 (as is
//! `gen_random_uuid()` without an extension). Checked with it: the server reads string
//! literals with `standard_conforming_strings` on (the default since PostgreSQL 9.1),
//! as marten's scanner of raw SQL fragments does.

use marten_core::{Error, Result};

use super::SchemaConn;
use crate::error_map::{map_db_error, Failed};

/// The oldest supported major version.
pub(crate) const MIN_MAJOR: u32 = 13;

/// The server's version (as a number and as it shows it) and the connection's
/// `standard_conforming_strings`.
const SETTINGS: &str = "SELECT current_setting('server_version_num'), \
     current_setting('server_version'), current_setting('standard_conforming_strings')";

/// Fails with [`Error::UnsupportedServerVersion`] on a server older than [`MIN_MAJOR`],
/// and with [`Error::Configuration`] on a connection whose `standard_conforming_strings`
/// is off. The read is a step of `conn`: without an answer within the request timeout it
/// fails with [`Error::Timeout`] and the connection is given up.
pub(crate) async fn check_server_version(conn: &SchemaConn<'_>) -> Result<()> {
    let what = Failed::Other("reading the server version");
    let client = conn.client();
    let row = conn
        .step("reading the server version", async {
            client
                .query_one(SETTINGS, &[])
                .await
                .map_err(|e| map_db_error(e, what))
        })
        .await?;
    let num: String = row.try_get(0).map_err(|e| map_db_error(e, what))?;
    let text: String = row.try_get(1).map_err(|e| map_db_error(e, what))?;
    let strings: String = row.try_get(2).map_err(|e| map_db_error(e, what))?;
    supported(&num, &text)?;
    conforming(&strings)
}

/// Refuses a connection that reads a backslash in `'..'` as an escape: where the
/// server and marten's scanner of `where_sql` fragments disagree on where a literal
/// ends, a fragment could end the parenthesis it is wrapped in (and widen a tenant's
/// match) inside what the scanner took for a literal.
fn conforming(setting: &str) -> Result<()> {
    if setting == "on" {
        return Ok(());
    }
    Err(Error::Configuration(format!(
        "the connection's standard_conforming_strings is {setting:?}: marten reads raw SQL \
         as PostgreSQL does with it on (the default); turn it on for marten's connections"
    )))
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

    #[test]
    fn strings_must_conform() {
        assert!(conforming("on").is_ok());
        match conforming("off") {
            Err(Error::Configuration(reason)) => {
                assert!(reason.contains("standard_conforming_strings"), "{reason}")
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}
