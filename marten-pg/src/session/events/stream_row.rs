//! A stream's row read before an append: its version and archived flag now, and what they
//! mean for the append (missing, archived, or the version to expect), within the
//! session's tenant with conjoined events. The locking read is in `lock.rs`. Uses the
//! event SQL and the session's connection.

use marten_core::{Error, Rejection, RejectionKind, Result};
use tokio_postgres::Row;

use super::api::Events;
use crate::error_map::{map_db_error, Failed};
use crate::events::read;
use crate::events::EventTenant;
use crate::session::Tracking;
use crate::stream_key::StreamKey;

impl<K: Tracking> Events<'_, K> {
    /// The stream's version now, to expect at save: a missing stream is
    /// [`Error::StreamNotFound`], an archived one is rejected.
    pub(super) async fn current_version(
        &mut self,
        tenant: &EventTenant,
        key: &StreamKey,
    ) -> Result<i64> {
        let s = self.session.parts_mut();
        read::ensure(s.store.as_ref()).await?;
        let sql = s.store.events().sql();
        let params = tenant.scoped(vec![key]);
        let row = s
            .conn
            .run(&s.store, async |client| {
                let stmt = client
                    .statement(&sql.stream_version)
                    .await
                    .map_err(reading)?;
                match client.query_opt(&stmt, &params).await.map_err(reading)? {
                    Some(row) => version_row(&row).map(Some),
                    None => Ok(None),
                }
            })
            .await?;
        expected_version(key, row)
    }
}

/// Decodes a `stream_version` / `lock_stream` row: `(version, is_archived)`.
pub(super) fn version_row(row: &Row) -> Result<(i64, bool)> {
    Ok((
        row.try_get(0).map_err(reading)?,
        row.try_get(1).map_err(reading)?,
    ))
}

/// The version an append to the stream expects, given its row (`None`: no such stream).
pub(super) fn expected_version(key: &StreamKey, row: Option<(i64, bool)>) -> Result<i64> {
    match row {
        None => Err(Error::StreamNotFound {
            stream: key.0.clone(),
        }),
        Some((_, true)) => Err(archived(key)),
        Some((version, false)) => Ok(version),
    }
}

/// The rejection of an append to an archived stream.
fn archived(key: &StreamKey) -> Error {
    Error::Rejected(vec![Rejection::new(
        "stream",
        key.0.key(),
        RejectionKind::StreamArchived,
    )])
}

/// A failed read of a stream's row.
pub(super) fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("stream"))
}
