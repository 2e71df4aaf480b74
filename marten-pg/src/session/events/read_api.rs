//! The read API of [`Events`]: a stream's events and state, the gap-safe global order,
//! and aggregates folded from a stream, each within the session's tenant with conjoined
//! events. Runs on the session's connection; the SQL and decoding are in `read`, the
//! folds in `crate::projections`.

use std::any::TypeId;
use std::time::Duration;

use crate::connection::Db;
use marten_core::{Aggregate, EventEnvelope, Result, StreamId, StreamState};

use super::api::Events;
use crate::documents::PgDocument;
use crate::events::range::{EventPage, Position, StreamRange};
use crate::events::read;
use crate::projections::aggregate_stream;
use crate::session::Tracking;
use crate::store::DocumentStore;
use crate::stream_key::StreamKey;

impl<K: Tracking> Events<'_, K> {
    /// Runs `f` with the store on the session's connection. Over a caller's pool the
    /// event tables are made sure of first, with the session's connection set aside (see
    /// [`crate::schema::Catalog::ensure_for`]), so a first read never waits for the
    /// connection the session holds.
    async fn on_connection<T>(
        &mut self,
        f: impl AsyncFnOnce(&DocumentStore, Db<'_>) -> Result<T>,
    ) -> Result<T> {
        let s = self.session.parts_mut();
        let store = &s.store;
        if store.catalog().shares_callers_pool() {
            let (type_id, migrate) = store.events().tables();
            store
                .ensure_erased_in(&mut s.conn, type_id, migrate)
                .await?;
        }
        s.conn.run(store, async |c| f(store, c).await).await
    }

    /// All events of a stream, in version order.
    pub async fn fetch_stream(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Vec<EventEnvelope>> {
        self.fetch_stream_with(stream, StreamRange::all()).await
    }

    /// The events of a stream within `range`, in version order.
    pub async fn fetch_stream_with(
        &mut self,
        stream: impl Into<StreamId>,
        range: StreamRange,
    ) -> Result<Vec<EventEnvelope>> {
        let tenant = self.tenant()?;
        let key = self.key(stream.into())?;
        self.on_connection(async |store, c| {
            Ok(read::fetch_stream(store.as_ref(), c, &tenant, &key, &range)
                .await?
                .events)
        })
        .await
    }

    /// The stream's version, timestamps and archived flag, or `None` if it does not exist.
    pub async fn fetch_stream_state(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<StreamState>> {
        let tenant = self.tenant()?;
        let key = self.key(stream.into())?;
        self.on_connection(async |store, c| {
            read::stream_state(store.as_ref(), c, &tenant, &key).await
        })
        .await
    }

    /// Up to `limit` events after `after` in the gap-safe global order: only events whose
    /// writing transaction id is below the oldest transaction still open, ordered by
    /// (transaction id, sequence). An open transaction that appended holds the reader at
    /// its gap until it commits or rolls back; nothing is ever skipped.
    ///
    /// With conjoined events only the session's tenant's events are read: the global
    /// order's index is scanned and filtered by tenant, so a page costs more where other
    /// tenants wrote many events in between. [`DocumentStore::read_all_events`] reads
    /// every tenant's.
    pub async fn read_all(&mut self, after: Position, limit: usize) -> Result<EventPage> {
        let tenant = self.tenant()?;
        self.on_connection(async |store, c| {
            let store = store.as_ref();
            let scope = tenant.scope();
            read::read_all(store, c, scope, after, limit, read::PageShape::PUBLIC).await
        })
        .await
    }

    /// How long the oldest open writing transaction in the cluster has been open: it
    /// holds [`read_all`](Self::read_all) (and the daemon) back. `None` when there is none.
    pub async fn oldest_open_transaction(&mut self) -> Result<Option<Duration>> {
        self.on_connection(async |_, c| read::oldest_open_transaction(c).await)
            .await
    }

    /// Folds a stream into aggregate `A` (live). For an inline aggregate it starts from
    /// the stored document (its snapshot) and applies only the events after it. `None`
    /// when the stream does not exist or nothing created the aggregate.
    pub async fn aggregate_stream<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<A>> {
        self.aggregate_stream_with::<A>(stream, StreamRange::all())
            .await
    }

    /// Folds the events of a stream within `range` (up to a version or a time) into `A`.
    pub async fn aggregate_stream_with<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
        range: StreamRange,
    ) -> Result<Option<A>> {
        let key = self.key(stream.into())?;
        let (state, _) = self.fold::<A>(&key, &range).await?;
        Ok(state)
    }

    /// The current state of aggregate `A`: the inline document brought up to date with
    /// any events after it, or a live fold.
    pub async fn fetch_latest<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<A>> {
        self.aggregate_stream::<A>(stream).await
    }

    /// Folds the stream's events within `range` into `A`: its state and the stream
    /// version it was read at. A snapshot the fold asks for (a live aggregate with a
    /// snapshot policy) is written right after, as a statement of its own, unless the
    /// session's connection is inside a transaction (an exclusive lock held until the
    /// save), where a failed statement would abort it: the next read outside one writes
    /// it. A snapshot that fails to write is logged, never returned.
    pub(super) async fn fold<A: Aggregate + PgDocument>(
        &mut self,
        key: &StreamKey,
        range: &StreamRange,
    ) -> Result<(Option<A>, i64)> {
        let tenant = self.tenant()?;
        // Over a caller's pool, `A`'s table (the fold may start from its stored document
        // or its snapshot) is made sure of with the session's connection set aside, as
        // the event tables are by `on_connection`.
        let s = self.session.parts_mut();
        if s.store.catalog().shares_callers_pool() {
            // Its snapshot table (the snapshot column) first, which covers its table.
            let snapshot = s.store.projections().snapshot(TypeId::of::<A>()).cloned();
            if let Some(policy) = snapshot {
                let catalog = s.store.catalog();
                policy
                    .ensure(catalog, &mut s.conn, TypeId::of::<A>())
                    .await?;
            }
            s.store.ensure_in::<A>(&mut s.conn).await?;
        }
        let folded = self
            .on_connection(async |store, c| {
                aggregate_stream::<A>(store.as_ref(), c, store.tenant(), &tenant, key, range).await
            })
            .await?;
        if let Some(snapshot) = folded.snapshot {
            if !self.session.parts().conn.in_transaction() {
                let written = self
                    .on_connection(async |_, c| {
                        snapshot.write(c).await;
                        Ok(())
                    })
                    .await;
                if let Err(error) = written {
                    tracing::warn!(%error, "aggregate snapshot not written");
                }
            }
        }
        Ok((folded.state, folded.version))
    }
}
