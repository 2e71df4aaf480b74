//! Sessions: the unit a caller loads, stores and saves through.
//!
//! [`Session<K>`] is one type for the three writing kinds; `K` is a zero-sized marker
//! ([`Lightweight`], [`IdentityMap`], [`DirtyTracking`]) fixed at compile time.
//! [`QuerySession`] only reads. A session owns its state and its connection and is
//! mutated only through `&mut self`: it is `Send`, so it can move between tasks, but two
//! tasks cannot use one session at once - that race does not compile.

use crate::documents::load;
pub(crate) mod events;

pub use events::{Boundary, Events, Writing};
mod open;
mod query;

use std::marker::PhantomData;
use std::sync::Arc;

use marten_core::concurrency::{NumericMode, VersionOf, VersionedMode};
use marten_core::{DocumentId, DocumentMetadata, Error, Result};
use tracing::warn;

pub use query::QuerySession;

use crate::connection::{timed_out, within, Conn};
use crate::documents::{PgDocument, WriteKind};
use crate::projections::Planned;
use crate::query::source::sealed as source_sealed;
pub use crate::query::QuerySource;
use crate::store::DocumentStore;
use crate::unit_of_work::{Outcome, UnitOfWork};

/// How often a save whose inline projections met a concurrent save is planned again.
const MAX_SAVE_ATTEMPTS: u32 = 10;
use crate::documents::serialize;
use crate::unit_of_work::SessionState;
use load::{check_id, Loaded};
use marten_core::session::Tracked;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Lightweight {}
    impl Sealed for super::IdentityMap {}
    impl Sealed for super::DirtyTracking {}
}

/// How a session remembers loaded documents. Sealed: [`Lightweight`], [`IdentityMap`],
/// [`DirtyTracking`].
pub trait Tracking: sealed::Sealed + Send + Sync + 'static {
    /// Whether loads are answered from the session's identity map.
    #[doc(hidden)]
    const IDENTITY: bool;
}

/// No identity map: every load queries.
#[derive(Debug)]
pub struct Lightweight;
/// Identity map: a second load of the same id is answered without a query.
#[derive(Debug)]
pub struct IdentityMap;
/// Dirty tracking: the session owns loaded documents and saves the changed ones.
#[derive(Debug)]
pub struct DirtyTracking;

impl Tracking for Lightweight {
    const IDENTITY: bool = false;
}
impl Tracking for IdentityMap {
    const IDENTITY: bool = true;
}
impl Tracking for DirtyTracking {
    const IDENTITY: bool = true;
}

/// A session without identity map.
pub type LightweightSession = Session<Lightweight>;
/// A session with an identity map.
pub type IdentitySession = Session<IdentityMap>;
/// A session that saves changes to loaded documents.
pub type DirtyTrackedSession = Session<DirtyTracking>;

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

    /// The version this session last saw for a document (by load, by
    /// `store_with_version` or by a save), if any.
    pub fn version_of<D: PgDocument>(&mut self, id: &D::Id) -> Option<VersionOf<D>> {
        self.state.doc_state::<D>().versions.get(id).copied()
    }

    fn expected<D: PgDocument>(&mut self, id: &D::Id) -> Option<VersionOf<D>> {
        if self.options.concurrency_checks {
            self.state.doc_state::<D>().versions.get(id).copied()
        } else {
            None
        }
    }

    /// Prepares a document for a write: assigns a new id to a nil `Uuid`, checks the id,
    /// serializes it, and keeps it in the identity map or the tracker.
    fn prepare<D: PgDocument>(&mut self, mut doc: D) -> Result<(D::Id, Vec<u8>)> {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
        let id = doc.id().clone();
        let json = serialize(&doc)?;
        if K::IDENTITY {
            let state = self.state.doc_state::<D>();
            state
                .identity
                .insert(id.clone(), Arc::from(json.as_slice()));
            if state.tracked.contains_key(&id) || is_dirty_tracking::<K>() {
                state.tracked.insert(
                    id.clone(),
                    Tracked {
                        doc,
                        snapshot: json.clone(),
                    },
                );
            }
        }
        Ok((id, json))
    }

    fn queue<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        doc: D,
        expected: Option<Option<VersionOf<D>>>,
    ) -> Result<D::Id> {
        let (id, json) = self.prepare(doc)?;
        let expected = match expected {
            Some(given) => given,
            None => self.expected::<D>(&id),
        };
        self.uow.push_write::<D>(kind, id.clone(), json, expected);
        Ok(id)
    }

    /// Queues an upsert. If the session knows the document's version (it loaded it, or
    /// stored it with a version, or saved it), the write succeeds only if that version is
    /// still the stored one. A nil `Uuid` id is replaced by a new version-7 uuid; the id
    /// is returned.
    pub fn store<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(WriteKind::Upsert, doc, None)
    }

    /// Queues an upsert that asserts `version` is the stored version (for a document
    /// this session did not load). Only for optimistic and numeric documents.
    pub fn store_with_version<D: PgDocument>(
        &mut self,
        doc: D,
        version: VersionOf<D>,
    ) -> Result<D::Id>
    where
        D::Mode: VersionedMode,
    {
        let checked = self.options.concurrency_checks.then_some(version);
        self.queue(WriteKind::Upsert, doc, Some(checked))
    }

    /// Queues an insert; `save_changes` rejects it if the id exists.
    pub fn insert<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(WriteKind::Insert, doc, Some(None))
    }

    /// Queues an update; `save_changes` rejects it if the document does not exist (or, with
    /// a known version, if the version moved).
    pub fn update<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(WriteKind::Update, doc, None)
    }

    /// Queues a delete by id.
    pub fn delete<D: PgDocument>(&mut self, id: &D::Id) -> Result<()> {
        check_id::<D>(id)?;
        let state = self.state.doc_state::<D>();
        state.identity.remove(id);
        state.tracked.remove(id);
        self.uow.push_delete::<D>(id.clone());
        Ok(())
    }

    /// Numeric documents: writes the document at `revision`; `save_changes` rejects it if
    /// the stored revision is already `revision` or higher.
    pub fn update_revision<D: PgDocument>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        D::Mode: NumericMode,
    {
        self.queue(WriteKind::UpdateRevision, doc, Some(Some(revision)))
    }

    /// Numeric documents: like [`update_revision`](Self::update_revision), but a revision
    /// that is not newer is silently skipped.
    pub fn try_update_revision<D: PgDocument>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        D::Mode: NumericMode,
    {
        self.queue(WriteKind::TryUpdateRevision, doc, Some(Some(revision)))
    }

    /// Reads the stored version and last-modified time of a document.
    pub async fn metadata<D: PgDocument>(
        &mut self,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
        self.store.ensure::<D>().await?;
        self.conn
            .run(&self.store, async |c| load::metadata::<D>(c, id).await)
            .await
    }

    async fn fetch<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<Loaded<D>>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_one::<D>(c, id).await)
            .await?;
        if let Some(l) = &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    async fn fetch_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<Loaded<D>>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_many::<D>(c, ids).await)
            .await?;
        for l in &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    fn remember<D: PgDocument>(&mut self, loaded: &Loaded<D>) {
        let state = self.state.doc_state::<D>();
        if let Some(v) = loaded.version {
            state.versions.insert(loaded.id.clone(), v);
        }
        if K::IDENTITY {
            state
                .identity
                .insert(loaded.id.clone(), Arc::from(loaded.json.as_slice()));
        }
    }

    /// Sends every queued operation (and, in a dirty-tracked session, every changed
    /// tracked document) in one transaction and one round trip. Either all of it is
    /// written or, on any error, none of it; a rejected save lists every rejected
    /// operation in [`Error::Rejected`]. The queue is emptied either way.
    pub async fn save_changes(&mut self) -> Result<()> {
        if is_dirty_tracking::<K>() {
            let checks = self.options.concurrency_checks;
            if let Err(e) = self.state.flush_dirty(&mut self.uow, checks) {
                self.uow.clear();
                self.state.finish_save(false);
                return Err(e);
            }
        }
        if self.uow.is_empty() && !self.conn.in_transaction() {
            return Ok(());
        }
        // Dropped before the save ends (its future was cancelled), the guard forgets the
        // queued operations: their outcome is unknown, and sending them again could write
        // them twice. The connection's own guard closes the connection.
        let save = SaveGuard { session: self };
        let result = save.session.attempt_save().await;
        save.finish(result.is_ok());
        result
    }

    /// Plans and sends the save until it commits, fails, or conflicts too often.
    async fn attempt_save(&mut self) -> Result<()> {
        // A session already in a transaction holds exclusive stream locks: a stale
        // cache entry would roll the save back and release them. Read under lock.
        let held = self.conn.in_transaction();
        let mut use_cache = !held;
        let mut conflict = None;
        for _attempt in 0..MAX_SAVE_ATTEMPTS {
            let mut req = self.conn.request(&self.store).await?;
            self.uow.reset_attempt();
            let planning = crate::projections::plan_inline(
                self.store.as_ref(),
                &mut req,
                &mut self.uow,
                &mut self.state,
                use_cache,
                &mut self.cache_updates,
            );
            let Some(planned) = within(&self.store, planning).await else {
                // Nothing was written: the locked reads may still wait on the server.
                req.mark_lost();
                return Err(timed_out(&self.store));
            };
            // Later attempts read under lock.
            use_cache = false;
            if let Some(lock) = crate::events::tags::TagLock::for_save(
                self.store.stream_identity(),
                &self.boundaries,
                self.uow.user.appends().map(|(_, a)| a),
            ) {
                self.uow.prelude.push_op(Box::new(lock));
            }
            match planned {
                Ok(Planned::Ready) => {}
                Ok(Planned::Again) => {
                    req.rollback().await;
                    req.finish();
                    tracing::debug!("a cached aggregate was stale; planning again");
                    continue;
                }
                Err(e) => {
                    req.rollback().await;
                    req.settle_error(&e);
                    if !held && lost_to_a_concurrent_transaction(&e) {
                        tracing::debug!(error = %e, "the save's locked read lost a deadlock; planning again");
                        conflict = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
            let outcome = self
                .uow
                .execute(&mut req, self.store.as_ref(), &mut self.state)
                .await;
            req.settle(&outcome);
            match outcome {
                Ok(Outcome::Committed) => return Ok(()),
                Ok(Outcome::Retry) => {
                    tracing::debug!("inline projection met a concurrent save; planning again");
                }
                // The save's own transaction was rolled back whole: nothing was written.
                Err(e) if !held && lost_to_a_concurrent_transaction(&e) => {
                    tracing::debug!(error = %e, "the save lost a deadlock; sending it again");
                    conflict = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(conflict.unwrap_or(Error::ProjectionConflict {
            attempts: MAX_SAVE_ATTEMPTS,
        }))
    }

    /// Forgets every queued operation without sending it.
    pub fn discard_changes(&mut self) {
        self.uow.clear();
        self.boundaries.clear();
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

/// A deadlock (40P01) or serialization failure (40001): the server rolled the
/// transaction back, so a save that began it wrote nothing and may be sent again.
fn lost_to_a_concurrent_transaction(e: &Error) -> bool {
    matches!(e, Error::Conflict { .. })
}

fn is_dirty_tracking<K: Tracking>() -> bool {
    std::any::TypeId::of::<K>() == std::any::TypeId::of::<DirtyTracking>()
}

/// Ends a save: on success or failure through [`finish`](Self::finish); dropped unfinished
/// (the save's future was cancelled), it forgets the save as failed.
struct SaveGuard<'s, K: Tracking> {
    session: &'s mut Session<K>,
}

impl<K: Tracking> SaveGuard<'_, K> {
    fn finish(self, committed: bool) {
        self.session.end_save(committed);
        std::mem::forget(self);
    }
}

impl<K: Tracking> Drop for SaveGuard<'_, K> {
    fn drop(&mut self) {
        warn!("save_changes was cancelled; its queued operations are discarded");
        self.session.end_save(false);
    }
}

impl<K: Tracking> Session<K> {
    /// Forgets the save's queue and tells the caches how it ended.
    fn end_save(&mut self, committed: bool) {
        crate::projections::cache::settle(
            self.store.as_ref(),
            &self.uow,
            &mut self.cache_updates,
            committed,
        );
        self.boundaries.clear();
        self.uow.clear();
        self.cache_updates.clear();
        self.state.finish_save(committed);
    }
}

fn decode_json<D: PgDocument>(id: &D::Id, json: &[u8]) -> Result<D> {
    serde_json::from_slice(json).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: id.to_string(),
        source,
    })
}

impl Session<Lightweight> {
    /// Loads a document by id (one query every time).
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<D>> {
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        Ok(self
            .fetch_many::<D>(ids)
            .await?
            .into_iter()
            .map(|l| l.doc)
            .collect())
    }
}

impl Session<IdentityMap> {
    /// Loads a document by id; a second load of the same id (or of a stored document) is
    /// answered from the identity map without a query.
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<D>> {
        check_id::<D>(id)?;
        if let Some(json) = self.state.doc_state::<D>().identity.get(id).cloned() {
            return decode_json::<D>(id, &json).map(Some);
        }
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads several documents, querying only for ids not yet in the identity map.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.state.doc_state::<D>().identity.get(id).cloned() {
                Some(json) => out.push(decode_json::<D>(id, &json)?),
                None => missing.push(id.clone()),
            }
        }
        out.extend(
            self.fetch_many::<D>(&missing)
                .await?
                .into_iter()
                .map(|l| l.doc),
        );
        Ok(out)
    }
}

impl Session<DirtyTracking> {
    /// Loads a document into the session and lends it out: change it in place and
    /// `save_changes` writes it. A second load of the same id makes no query.
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<&mut D>> {
        check_id::<D>(id)?;
        if !self.state.doc_state::<D>().tracked.contains_key(id) {
            let Some(loaded) = self.fetch::<D>(id).await? else {
                return Ok(None);
            };
            let snapshot = serialize(&loaded.doc)?;
            self.state.doc_state::<D>().tracked.insert(
                loaded.id,
                Tracked {
                    doc: loaded.doc,
                    snapshot,
                },
            );
        }
        Ok(self
            .state
            .doc_state::<D>()
            .tracked
            .get_mut(id)
            .map(|t| &mut t.doc))
    }

    /// Loads several documents into the session (see [`load`](Self::load)).
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<&mut D>> {
        let missing: Vec<D::Id> = {
            let tracked = &self.state.doc_state::<D>().tracked;
            ids.iter()
                .filter(|id| !tracked.contains_key(*id))
                .cloned()
                .collect()
        };
        for loaded in self.fetch_many::<D>(&missing).await? {
            let snapshot = serialize(&loaded.doc)?;
            self.state.doc_state::<D>().tracked.insert(
                loaded.id,
                Tracked {
                    doc: loaded.doc,
                    snapshot,
                },
            );
        }
        let wanted: std::collections::HashSet<&D::Id> = ids.iter().collect();
        Ok(self
            .state
            .doc_state::<D>()
            .tracked
            .iter_mut()
            .filter(|(id, _)| wanted.contains(id))
            .map(|(_, t)| &mut t.doc)
            .collect())
    }

    /// A tracked document, without a query.
    pub fn get_mut<D: PgDocument>(&mut self, id: &D::Id) -> Option<&mut D> {
        self.state
            .doc_state::<D>()
            .tracked
            .get_mut(id)
            .map(|t| &mut t.doc)
    }
}
