//! Which tenants the daemon runs projections for (conjoined events): the tenants that
//! have streams, read from the streams table; the watcher in [`super::handle`] starts
//! runners for the new ones, the staleness check looks at each one's events.
//!
//! Owns: the read. May use: the connection layer, the events table's SQL, the store.

use marten_core::tenant::DEFAULT_TENANT;
use marten_core::{Result, TenantId};
use tracing::warn;

use crate::connection::{Conn, Db};
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;
use crate::tables::event_order::STREAM_TENANTS;

/// The tenants that have streams, in order, on a connection of its own.
pub(super) async fn stream_tenants(
    store: &DocumentStore,
    conn: &mut Conn,
) -> Result<Vec<TenantId>> {
    crate::events::read::ensure(store.as_ref()).await?;
    conn.run(store, async |client| tenants_on(client).await)
        .await
}

/// The tenants that have streams, in order, read on `client`. Streams written before the
/// events were conjoined (`*DEFAULT*`) and ids that are not valid tenant ids (edited by
/// hand) belong to no tenant's runner; they are logged and left out.
pub(crate) async fn tenants_on(client: Db<'_>) -> Result<Vec<TenantId>> {
    let reading = |e| map_db_error(e, Failed::Other("reading the tenants"));
    let rows = client.query(STREAM_TENANTS, &[]).await.map_err(reading)?;
    let mut tenants = Vec::with_capacity(rows.len());
    for row in &rows {
        let stored: &str = row.try_get(0).map_err(reading)?;
        match TenantId::new(stored) {
            Ok(t) => tenants.push(t),
            Err(_) if stored == DEFAULT_TENANT => {
                warn!("streams without a tenant are not projected with conjoined events");
            }
            Err(e) => warn!(error = %e, "streams of an invalid tenant id are not projected"),
        }
    }
    Ok(tenants)
}
