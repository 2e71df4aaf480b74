//! Reading a runner's next page: up to a batch of events after its position in the
//! gap-safe global order, leaving out events of types the store does not know (its
//! projections could not handle them).
//!
//! Owns: nothing but the read. May use: the connection layer, the events layer's reads.

use marten_core::{Result, TenantId};

use crate::connection::Conn;
use crate::events::read::read_all;
use crate::events::{EventPage, Position};
use crate::store::DocumentStore;

/// Archived events are not projected.
const INCLUDE_ARCHIVED: bool = false;
/// Events of unknown types are skipped (counted in the page's rows, not in its events).
const SKIP_UNKNOWN: bool = true;

/// Up to `limit` events after `after` (of every tenant, or of `tenant`), read on `conn`
/// within the store's request timeout.
pub(super) async fn next_page(
    store: &DocumentStore,
    conn: &mut Conn,
    tenant: Option<&TenantId>,
    after: Position,
    limit: usize,
) -> Result<EventPage> {
    let tenant = tenant.map(|t| t.as_str().to_owned());
    conn.run(store, async |client| {
        read_all(
            store.as_ref(),
            client,
            tenant.as_ref(),
            after,
            limit,
            INCLUDE_ARCHIVED,
            SKIP_UNKNOWN,
        )
        .await
    })
    .await
}
