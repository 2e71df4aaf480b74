//! The writing session, [`Session<B, K>`]: its parts ([`Parts`], what the backend `B`
//! sees), how it is opened, and the settings a caller changes on it. Loads are in
//! `loads`, writes in `writes`, `save_changes` in `save_changes`.

use std::future::Future;
use std::marker::PhantomData;

use super::backend::{Backend, CompiledQueryBackend, QueryBackend};
use super::kinds::Tracking;
use super::options::{EventMeta, SessionOptions};
use super::state::SessionState;
use crate::{Document, EventTag, Result};

/// A session's parts, as its backend sees them: the store handle, the connection, the
/// queued unit of work and what the session remembers.
pub struct Parts<B: Backend> {
    /// The store the session belongs to.
    pub store: B::Store,
    /// The session's connection; it holds an open transaction between an exclusive append
    /// and the next save.
    pub conn: B::Conn,
    /// Versions seen, the identity map and the dirty-tracked documents.
    pub state: SessionState<B::Queue>,
    /// The queued unit of work.
    pub queue: B::Queue,
    /// What the save in flight learns for the store's caches.
    pub scratch: B::Scratch,
    /// What the session stamps on the events it appends.
    pub event_meta: EventMeta,
    /// Tag versions the consistency boundaries captured, asserted by the next save.
    pub boundaries: Vec<(EventTag, i64)>,
    /// The session's options.
    pub options: SessionOptions,
}

/// A writing session on backend `B`. `K` is a zero-sized marker
/// ([`Lightweight`](super::Lightweight), [`IdentityMap`](super::IdentityMap),
/// [`DirtyTracking`](super::DirtyTracking)) fixed at compile time. A session owns its
/// state and its connection and is mutated only through `&mut self`: it is `Send`, so it
/// can move between tasks, but two tasks cannot use one session at once - that race does
/// not compile.
pub struct Session<B: Backend, K: Tracking> {
    parts: Parts<B>,
    _kind: PhantomData<K>,
}

impl<B: Backend, K: Tracking> Session<B, K> {
    /// A session on `store` with `options` (backends open sessions from their store).
    pub fn new(store: B::Store, options: SessionOptions) -> Self {
        Session {
            parts: Parts {
                conn: B::connection(&store),
                queue: B::queue(&store),
                store,
                state: SessionState::default(),
                scratch: B::Scratch::default(),
                event_meta: EventMeta::default(),
                boundaries: Vec::new(),
                options,
            },
            _kind: PhantomData,
        }
    }

    /// The session's parts, for its backend.
    #[doc(hidden)]
    pub fn parts(&self) -> &Parts<B> {
        &self.parts
    }

    /// The session's parts, mutably, for its backend.
    #[doc(hidden)]
    pub fn parts_mut(&mut self) -> &mut Parts<B> {
        &mut self.parts
    }

    /// The store this session belongs to.
    pub fn store_ref(&self) -> &B::Store {
        &self.parts.store
    }

    /// Turns the concurrency checks of this session off or on.
    pub fn set_concurrency_checks(&mut self, enabled: bool) {
        self.parts.options.concurrency_checks = enabled;
    }

    /// How many documents the queued operations touch.
    pub fn pending_changes(&self) -> usize {
        B::queued(&self.parts.queue)
    }

    /// A typed query on documents of type `D`.
    pub fn query<D: Document>(&mut self) -> <B as QueryBackend<D>>::Query<'_, K>
    where
        B: QueryBackend<D>,
    {
        B::query(self)
    }

    /// Runs a compiled query (`Q`'s statement built on its first run, then reused with the
    /// values of `query`).
    pub fn query_compiled<'a, Q>(
        &'a mut self,
        query: &'a Q,
    ) -> impl Future<Output = Result<<B as CompiledQueryBackend<Q>>::Output>> + Send + 'a
    where
        B: CompiledQueryBackend<Q>,
    {
        B::run_compiled(self, query)
    }

    /// The event store operations of this session.
    pub fn events(&mut self) -> B::Events<'_, K> {
        B::events(self)
    }

    /// Sets the correlation id stamped on events this session appends from now on.
    pub fn set_correlation_id(&mut self, id: Option<String>) {
        self.parts.event_meta.correlation_id = id;
    }

    /// Sets the causation id stamped on events this session appends from now on.
    pub fn set_causation_id(&mut self, id: Option<String>) {
        self.parts.event_meta.causation_id = id;
    }

    /// Adds a header stamped on events this session appends from now on.
    pub fn set_header(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.parts
            .event_meta
            .headers
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
    }
}
