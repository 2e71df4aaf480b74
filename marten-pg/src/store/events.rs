//! The store's own read of the event store: the gap-safe global order of every tenant's
//! events, outside any session (what the async daemon reads, too).
//!
//! May use: the connection layer and the events layer's reads.

use marten_core::Result;

use super::DocumentStore;
use crate::connection::Conn;
use crate::events::read;
use crate::events::{EventPage, Position};

/// Every tenant's events are read.
const ALL_TENANTS: Option<&String> = None;

impl DocumentStore {
    /// Up to `limit` events after `after` in the gap-safe global order, of every tenant
    /// whatever this handle's tenant (each envelope names its own,
    /// [`EventEnvelope::tenant`](marten_core::EventEnvelope::tenant)); archived events
    /// are left out and unknown types follow the store's policy. A session's
    /// [`read_all`](crate::Events::read_all) reads its tenant's events only when the
    /// events are conjoined.
    pub async fn read_all_events(&self, after: Position, limit: usize) -> Result<EventPage> {
        let mut conn = Conn::new();
        conn.run(self, async |client| {
            let store = self.as_ref();
            read::read_all(
                store,
                client,
                ALL_TENANTS,
                after,
                limit,
                read::PageShape::PUBLIC,
            )
            .await
        })
        .await
    }
}
