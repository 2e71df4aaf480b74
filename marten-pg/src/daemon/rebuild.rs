//! Rebuilding a projection: reset its position, take it from any runner and delete its
//! documents in one transaction; a running daemon then replays it from the first event.
//!
//! Owns: the reset. May use: the connection layer, the daemon's tables, the projection's
//! `clear`, the store (its async projections).

use marten_core::{Error, Result};

use super::progression;
use crate::connection::Conn;
use crate::connection::{timed_out, within, Request};
use crate::error_map::{map_db_error, Failed};
use crate::projections::asynchronous::AsyncProjection;
use crate::store::DocumentStore;

/// Resets an async projection and deletes its documents; a running daemon replays it
/// from the first event. Readers see no documents until the replay has caught up (the
/// trade-off of this simple rebuild: no blue/green copy).
pub async fn rebuild(store: &DocumentStore, projection: &str) -> Result<()> {
    progression::ensure_tables(store).await?;
    let Some(p) = store
        .projections()
        .asynchronous
        .iter()
        .find(|p| p.name() == projection)
    else {
        return Err(Error::Configuration(format!(
            "no async projection named {projection}"
        )));
    };
    let mut conn = Conn::new();
    let mut req = conn.request(store).await?;
    let answered = within(store, reset_and_clear(&mut req, projection, p.as_ref()));
    let Some(result) = answered.await else {
        req.mark_lost();
        return Err(timed_out(store));
    };
    if result.is_err() {
        req.rollback().await;
    }
    req.settle(&result);
    result
}

/// In one transaction: takes the projection from any runner (the epoch moves, so a batch
/// in flight can no longer commit: its progress update is the first statement of its
/// transaction and now finds another epoch or waits for this one), resets its position,
/// and deletes its documents.
async fn reset_and_clear(
    req: &mut Request<'_>,
    projection: &str,
    p: &dyn AsyncProjection,
) -> Result<()> {
    req.set_in_transaction(true);
    let client = req.client();
    let what = |e| map_db_error(e, Failed::Other("resetting a projection"));
    client.batch_execute("BEGIN").await.map_err(what)?;
    client
        .execute(progression::RESET, &[&projection])
        .await
        .map_err(what)?;
    p.clear(client).await?;
    client.batch_execute("COMMIT").await.map_err(what)?;
    req.set_in_transaction(false);
    Ok(())
}
