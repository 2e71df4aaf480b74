//! Sessions: the unit a caller loads, stores and saves through.
//!
//! [`Session<K>`] is one type for the three writing kinds; `K` is a zero-sized marker
//! ([`Lightweight`], [`IdentityMap`], [`DirtyTracking`]) fixed at compile time.
//! [`QuerySession`] only reads. A session owns its state and its connection and is
//! mutated only through `&mut self`: it is `Send`, so it can move between tasks, but two
//! tasks cannot use one session at once - that race does not compile.
//!
//! May use: every layer below (query, store, projections, events, documents, the unit of
//! work, schema, connection); the daemon sits above.

pub(crate) mod events;
mod kinds;
mod loads;
mod open;
mod query;
mod save;
mod writes;

use std::marker::PhantomData;

pub use self::events::{Boundary, Events, Writing};
pub use self::kinds::{
    DirtyTrackedSession, DirtyTracking, IdentityMap, IdentitySession, Lightweight,
    LightweightSession, Tracking,
};
pub use self::query::QuerySession;
use crate::connection::Conn;
use crate::documents::PgDocument;
use crate::query::source::sealed as source_sealed;
pub use crate::query::QuerySource;
use crate::store::DocumentStore;
use crate::unit_of_work::{SessionState, UnitOfWork};

impl<K: Tracking> source_sealed::Sealed for Session<K> {}

impl<K: Tracking> QuerySource for Session<K> {
    fn source(&mut self) -> (&DocumentStore, &mut Conn) {
        (&self.store, &mut self.conn)
    }
}

impl source_sealed::Sealed for QuerySession {}

impl QuerySource for QuerySession {
    fn source(&mut self) -> (&DocumentStore, &mut Conn) {
        self.parts()
    }
}

/// Options of one session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Whether writes assert the versions the session saw (default `true`). When `false`,
    /// every write of the session behaves as if the document had concurrency `off`.
    pub concurrency_checks: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            concurrency_checks: true,
        }
    }
}

impl SessionOptions {
    /// Options with the concurrency checks turned off.
    pub fn without_concurrency_checks() -> Self {
        Self {
            concurrency_checks: false,
        }
    }
}

/// A writing session; see [`LightweightSession`], [`IdentitySession`] and
/// [`DirtyTrackedSession`].
pub struct Session<K: Tracking> {
    pub(crate) store: DocumentStore,
    /// The session's connection; it holds an open transaction between an
    /// `append_exclusive` and the next `save_changes`.
    pub(crate) conn: Conn,
    pub(crate) state: SessionState,
    pub(crate) uow: UnitOfWork,
    /// What the store's aggregate cache learns if the save in flight commits.
    cache_updates: Vec<crate::projections::cache::CacheUpdate>,
    pub(crate) event_meta: EventMeta,
    /// Tag versions consistency boundaries captured, asserted by the next save.
    pub(crate) boundaries: Vec<(marten_core::EventTag, i64)>,
    options: SessionOptions,
    _kind: PhantomData<K>,
}

/// Metadata the session stamps on the events it appends.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventMeta {
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
    pub(crate) headers: Option<serde_json::Map<String, serde_json::Value>>,
}

impl<K: Tracking> Session<K> {
    pub(crate) fn new(store: DocumentStore, options: SessionOptions) -> Self {
        Session {
            store,
            conn: Conn::new(),
            state: SessionState::default(),
            event_meta: EventMeta::default(),
            boundaries: Vec::new(),
            uow: UnitOfWork::default(),
            cache_updates: Vec::new(),
            options,
            _kind: PhantomData,
        }
    }

    /// The store this session belongs to.
    pub fn store_ref(&self) -> &DocumentStore {
        &self.store
    }

    /// Turns the concurrency checks of this session off or on.
    pub fn set_concurrency_checks(&mut self, enabled: bool) {
        self.options.concurrency_checks = enabled;
    }

    /// How many documents the queued operations touch.
    pub fn pending_changes(&self) -> usize {
        self.uow.len()
    }

    /// A typed query on documents of type `D`; see [`Query`](crate::query::Query).
    pub fn query<D: PgDocument + marten_core::query::HasFields>(
        &mut self,
    ) -> crate::query::Query<'_, Self, D> {
        crate::query::Query::new(self)
    }

    /// The event store operations of this session.
    pub fn events(&mut self) -> events::Events<'_, K> {
        events::Events { session: self }
    }

    /// Sets the correlation id stamped on events this session appends from now on.
    pub fn set_correlation_id(&mut self, id: Option<String>) {
        self.event_meta.correlation_id = id;
    }

    /// Sets the causation id stamped on events this session appends from now on.
    pub fn set_causation_id(&mut self, id: Option<String>) {
        self.event_meta.causation_id = id;
    }

    /// Adds a header stamped on events this session appends from now on.
    pub fn set_header(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.event_meta
            .headers
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
    }
}
