//! What a session needs from a database, as traits a backend implements: [`Backend`]
//! (its store handle, connection and queue, and one attempt at a save) and, per document
//! type, [`DocumentBackend`] (queue a write, load by id) and [`QueryBackend`] (the typed
//! query), and per compiled query type [`CompiledQueryBackend`]. Every method is static: a session is monomorphic over its backend and its
//! documents, and nothing on a load or save path dispatches at run time.

use std::future::Future;

use super::attempts::{AttemptEnd, SaveAttempts};
use super::kinds::Tracking;
use super::parts::{Parts, Session};
use super::query_session::QuerySession;
use super::state::DirtyQueue;
use crate::concurrency::{VersionOf, WriteOf};
use crate::patch::Patch;
use crate::query::Filter;
use crate::{Document, DocumentMetadata, Result, TenantId};

/// The database a session works on. Implemented by a backend crate (marten-pg's
/// `Postgres`); applications use it only as a type parameter.
pub trait Backend: Sized + Send + Sync + 'static {
    /// The shared store handle a session holds.
    type Store: Clone + Send + Sync + 'static;
    /// The session's connection: at most one, with the transaction it may hold.
    type Conn: Send + Sync;
    /// The queued unit of work a save sends.
    type Queue: Default + Send + Sync + 'static;
    /// What a save in flight learns for the store's caches, kept until the save ends.
    type Scratch: Default + Send + Sync;
    /// The event operations of a session (`session.events()`).
    type Events<'s, K: Tracking>
    where
        Self: 's;
    /// Several queries of a query session in one round trip (`query_session.batch()`).
    type Batch<'s>
    where
        Self: 's;

    /// The database system, as OpenTelemetry's `db.system` names it (`"postgresql"`):
    /// the `db.system` field of the `save_changes` span.
    const SYSTEM: &'static str;

    /// Where the store's data lives (a schema or database name): the `db.namespace`
    /// field of the `save_changes` span.
    fn namespace(store: &Self::Store) -> &str;
    /// A session's connection, not yet connected.
    fn connection(store: &Self::Store) -> Self::Conn;
    /// A session's empty unit of work (it may remember the store's tenant).
    fn queue(_store: &Self::Store) -> Self::Queue {
        Self::Queue::default()
    }
    /// The tenant the store handle is scoped to, if any: a session on it touches the
    /// conjoined documents of that tenant only, and without one it touches none.
    fn tenant(_store: &Self::Store) -> Option<&TenantId> {
        None
    }
    /// Whether the connection holds an open transaction (an exclusive append's lock).
    fn in_transaction(conn: &Self::Conn) -> bool;
    /// Whether a transaction the connection held (an exclusive append's lock) was lost
    /// and the loss is still to be reported by a save
    /// ([`Error::TransactionLost`](crate::Error::TransactionLost)): an empty save
    /// reports it too.
    fn transaction_lost(_conn: &Self::Conn) -> bool {
        false
    }
    /// How many documents the queued operations touch.
    fn queued(queue: &Self::Queue) -> usize;
    /// Whether nothing is queued.
    fn nothing_queued(queue: &Self::Queue) -> bool;
    /// Forgets every queued operation.
    fn clear(queue: &mut Self::Queue);
    /// Makes one attempt at a save: plans the inline projections, sends the queue in one
    /// transaction and says how it ended. An `Err` ends the save at once.
    fn attempt_save(
        parts: &mut Parts<Self>,
        attempts: &SaveAttempts,
    ) -> impl Future<Output = Result<AttemptEnd>> + Send;
    /// Tells the store's caches how the save ended (`committed` or not) and forgets what
    /// the save learned.
    fn end_save(parts: &mut Parts<Self>, committed: bool);
    /// Ends the connection's open transaction, and the exclusive locks it holds, without
    /// committing it: a save that failed before anything of it was sent.
    fn end_transaction(parts: &mut Parts<Self>) -> impl Future<Output = ()> + Send;
    /// The event operations of `session`.
    fn events<K: Tracking>(session: &mut Session<Self, K>) -> Self::Events<'_, K>;
    /// A batch of queries on `session`.
    fn batch(session: &mut QuerySession<Self>) -> Self::Batch<'_>;
}

/// A loaded document with its stored version and its JSON text.
pub struct Loaded<D: Document> {
    /// The id it was loaded by.
    pub id: D::Id,
    /// The document.
    pub doc: D,
    /// Its stored version (`None` for a mode without versions).
    pub version: Option<VersionOf<D>>,
    /// Its stored JSON.
    pub json: Vec<u8>,
}

/// A backend that stores documents of type `D`: it queues their writes and loads them.
#[diagnostic::on_unimplemented(
    message = "`{D}` is not a document this store can hold",
    label = "not a document of this backend",
    note = "derive it with `#[derive(Document)]`"
)]
pub trait DocumentBackend<D: Document>: Backend<Queue: DirtyQueue<D>> {
    /// Serializes a document as the backend stores it, refusing what it cannot store
    /// ([`Error::InvalidInput`](crate::Error::InvalidInput) naming the type and id).
    fn serialize(doc: &D) -> Result<Vec<u8>>;
    /// Queues a write of `json` for `id`, asserting `expected` when given.
    fn queue_write(
        queue: &mut Self::Queue,
        kind: WriteOf<D>,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    );
    /// Queues a delete by id (a soft-deleted type's row is marked deleted).
    fn queue_delete(queue: &mut Self::Queue, id: D::Id);
    /// Queues a delete by id that removes the row, marked deleted or not. By default
    /// [`queue_delete`](Self::queue_delete), for a backend whose deletes always remove.
    fn queue_hard_delete(queue: &mut Self::Queue, id: D::Id) {
        Self::queue_delete(queue, id);
    }
    /// Loads one document by id on the session's connection.
    fn load(
        store: &Self::Store,
        conn: &mut Self::Conn,
        id: &D::Id,
    ) -> impl Future<Output = Result<Option<Loaded<D>>>> + Send;
    /// Loads the documents with the given ids that exist, in no particular order.
    fn load_many(
        store: &Self::Store,
        conn: &mut Self::Conn,
        ids: &[D::Id],
    ) -> impl Future<Output = Result<Vec<Loaded<D>>>> + Send;
    /// Reads the stored version and last-modified time of a document, and whether it is
    /// marked deleted (a soft-deleted type's marked document has metadata too).
    fn metadata(
        store: &Self::Store,
        conn: &mut Self::Conn,
        id: &D::Id,
    ) -> impl Future<Output = Result<Option<DocumentMetadata<VersionOf<D>>>>> + Send;
}

/// A backend that runs typed queries on documents of type `D`.
#[diagnostic::on_unimplemented(
    message = "`{D}` cannot be queried",
    label = "not a queryable document of this backend",
    note = "derive it with `#[derive(Document)]`, which also derives its query fields"
)]
pub trait QueryBackend<D: Document>: Backend {
    /// The query builder, borrowing the session.
    type Query<'s, K: Tracking>
    where
        Self: 's;
    /// The query builder, borrowing a query session.
    type ReadQuery<'s>
    where
        Self: 's;
    /// A query on documents of type `D` through `session`.
    fn query<K: Tracking>(session: &mut Session<Self, K>) -> Self::Query<'_, K>;
    /// A query on documents of type `D` through a query session.
    fn read_query(session: &mut QuerySession<Self>) -> Self::ReadQuery<'_>;
}

/// A backend that runs compiled queries of type `Q` (a query type whose fields are its
/// parameters, its statement built once and reused with new values).
#[diagnostic::on_unimplemented(
    message = "`{Q}` is not a compiled query of this store",
    label = "not a compiled query",
    note = "implement `marten::CompiledQuery` for it: its document type, what it returns and how it builds its query from its fields"
)]
pub trait CompiledQueryBackend<Q>: Backend {
    /// What a run of `Q` returns.
    type Output;
    /// Runs `query` on `session`'s connection.
    fn run_compiled<K: Tracking>(
        session: &mut Session<Self, K>,
        query: &Q,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
    /// Runs `query` on a query session's connection.
    fn read_compiled(
        session: &mut QuerySession<Self>,
        query: &Q,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// A backend that patches and deletes documents of type `D` in the database, by id or by
/// a filter, without loading them.
#[diagnostic::on_unimplemented(
    message = "`{D}` cannot be patched by this store",
    label = "not a patchable document of this backend",
    note = "derive it with `#[derive(Document)]`, which also derives its field paths"
)]
pub trait PatchBackend<D: Document>: DocumentBackend<D> {
    /// Queues `patch` as one statement (in queue order with the session's other
    /// operations). Fails, queuing nothing, with a value the backend cannot store or a
    /// filter it cannot render.
    fn queue_patch(queue: &mut Self::Queue, patch: Patch<D>) -> Result<()>;
    /// Queues one statement deleting (as `kind` says) every document `filter` matches.
    fn queue_delete_where(
        queue: &mut Self::Queue,
        filter: Filter<D>,
        kind: DeleteKind,
    ) -> Result<()>;
}

/// What a delete by filter does to the documents it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteKind {
    /// Deletes them: removes the rows, or marks them deleted for a soft-deleted type
    /// (the rows not marked yet).
    Delete,
    /// Removes the rows, marked deleted or not.
    HardDelete,
    /// Marks the rows marked deleted live again (soft-deleted types).
    UndoDelete,
}
