//! The [`Error`] enum of marten and its [`Result`] alias. The helper types its variants
//! carry live beside it: `rejection` ([`Rejection`], [`RejectionKind`]), `database`
//! ([`DatabaseError`]), `conflict` ([`ConflictKind`]), `tls` ([`TlsFailure`]); `classify` holds the methods that
//! inspect an error (`is_retryable`, `sqlstate`, ...), `display` the message helpers.
//! Uses [`StreamId`] of the crate root.

mod classify;
mod conflict;
mod database;
mod display;
pub use display::WithSources;
mod rejection;
mod schema;
mod tls;

pub use conflict::ConflictKind;
pub use database::DatabaseError;
pub use rejection::{Rejection, RejectionKind};
pub use schema::SchemaDifference;
pub use tls::TlsFailure;

use display::{in_stream, with_id, Joined};

use crate::StreamId;

/// The result type of marten operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in marten, one variant per failure a caller may want to
/// handle. Database failures are classified by SQLSTATE and by which statement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `save_changes` was rejected: one or more queued operations failed their
    /// precondition (a stale version, an insert of an existing id, an update of a missing
    /// document). Every rejection of the batch is listed; nothing of the batch was written.
    #[error("save rejected, nothing was written: {}", Joined(.0, "; "))]
    Rejected(Vec<Rejection>),

    /// A document id that cannot be stored or looked up (for example an empty string).
    #[error("invalid id {id} for document type {document_type}: {reason}")]
    InvalidId {
        /// The document type.
        document_type: &'static str,
        /// The offending id.
        id: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A document could not be serialized to JSON.
    #[error("cannot serialize document {document_type} {id}")]
    Serialize {
        /// The document type.
        document_type: &'static str,
        /// The document id.
        id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored document no longer deserializes into its Rust type.
    #[error("cannot deserialize document {document_type} {id}")]
    Deserialize {
        /// The document type.
        document_type: &'static str,
        /// The document id.
        id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A unique index on a document field was violated.
    #[error("unique violation on {document_type}.{field}: {message}")]
    UniqueViolation {
        /// The document type.
        document_type: &'static str,
        /// The field (or constraint) whose uniqueness was violated.
        field: String,
        /// The database's detail.
        message: String,
    },

    /// `append_optimistic` or `append_exclusive` on a stream that does not exist.
    #[error("stream {stream} does not exist")]
    StreamNotFound {
        /// The stream.
        stream: StreamId,
    },

    /// `append_exclusive` could not lock the stream within the configured timeout
    /// (another session holds it).
    #[error("stream {stream} is locked by another session (waited {waited_ms} ms)")]
    StreamLocked {
        /// The stream.
        stream: StreamId,
        /// How long the append waited for the lock.
        waited_ms: u64,
    },

    /// A stream id of the wrong kind for the store (a `String` id on a `Uuid` store, or
    /// the reverse), or an empty string id.
    #[error("invalid stream id {stream}: {reason}")]
    InvalidStreamId {
        /// The stream.
        stream: StreamId,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A stored event's type name is not registered with the store.
    #[error(
        "unknown event type {event_type:?} at sequence {sequence}: register it with .event::<T>()"
    )]
    UnknownEventType {
        /// The stored type name.
        event_type: String,
        /// The event's global sequence.
        sequence: i64,
    },

    /// An event could not be serialized to JSON.
    #[error("cannot serialize event {event_type} for stream {stream}")]
    SerializeEvent {
        /// The event type name.
        event_type: &'static str,
        /// The stream it was to be appended to.
        stream: StreamId,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event no longer deserializes into its registered type.
    #[error("cannot deserialize event {event_type} at sequence {sequence}{}", in_stream(.stream))]
    DeserializeEvent {
        /// The event type name.
        event_type: String,
        /// The event's global sequence.
        sequence: i64,
        /// The stream it belongs to (`None` where the read did not know it).
        stream: Option<StreamId>,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event of an older shape could not be upcast to its current type: the
    /// upcaster registered for its stored type name failed, or what it produced does not
    /// deserialize into the current type.
    #[error("cannot upcast event {event_type:?} at sequence {sequence}{} to {target:?}: {message}", in_stream(.stream))]
    Upcast {
        /// The stored (old) type name.
        event_type: String,
        /// The current type name the upcaster produces.
        target: &'static str,
        /// The event's global sequence.
        sequence: i64,
        /// The stream it belongs to (`None` where the read did not know it).
        stream: Option<StreamId>,
        /// What went wrong.
        message: String,
    },

    /// An apply method of an aggregate or projection failed; nothing of the save (or
    /// the projection batch) was written.
    #[error("{projection} failed to apply event {event_type} (stream {stream}, version {version}): {message}")]
    Apply {
        /// The aggregate or projection type.
        projection: &'static str,
        /// The event type name.
        event_type: String,
        /// The stream.
        stream: StreamId,
        /// The event's stream version.
        version: i64,
        /// The apply method's error.
        message: String,
    },

    /// Inline projections kept meeting racing saves on the same streams or documents;
    /// the save was planned and retried this many times and nothing was written.
    #[error(
        "inline projections conflicted with concurrent saves {attempts} times; nothing was written"
    )]
    ProjectionConflict {
        /// How many attempts were made.
        attempts: u32,
    },

    /// A sharded async projection's shard count differs from the one recorded for it,
    /// and the daemon may not change it: the old count's shards stand at different
    /// positions (drain them, or rebuild the projection), or another deployment changed
    /// the count while this node ran the projection.
    #[error(
        "async projection {projection} is recorded with {recorded} shard(s), this daemon runs it with {configured}: {reason}"
    )]
    ShardCountChanged {
        /// The projection.
        projection: String,
        /// The count recorded in the progression table (1: unsharded).
        recorded: u32,
        /// The count this daemon was configured with (1: unsharded).
        configured: u32,
        /// Why the count was not changed, and what to do.
        reason: String,
    },

    /// Something did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
    },

    /// `single()` found more than one matching document.
    #[error("more than one {document_type} document matches")]
    NotSingle {
        /// The document type.
        document_type: &'static str,
    },

    /// A table, column or function marten needs does not exist (and the store was told not
    /// to create it).
    #[error("schema object missing: {object}")]
    SchemaObjectMissing {
        /// The missing object, schema-qualified.
        object: String,
    },

    /// The database schema differs from what the store's registered types need
    /// (`DocumentStore::assert_schema`): every difference, each naming its object and its
    /// expected and found shape.
    #[error("the database schema differs from the registered types: {}", Joined(.differences, "; "))]
    SchemaMismatch {
        /// The differences, in the order of the store's schema script.
        differences: Vec<SchemaDifference>,
    },

    /// The PostgreSQL server is older than marten needs (it uses `xid8`,
    /// `pg_current_xact_id()` and `pg_snapshot_xmin()`, new in PostgreSQL 13).
    #[error("PostgreSQL {found} is not supported: marten needs PostgreSQL {required} or later")]
    UnsupportedServerVersion {
        /// The server's version, as it reports it (`server_version`).
        found: String,
        /// The oldest major version marten supports.
        required: u32,
    },

    /// A tenant id that cannot be used (empty, too long, with a control character, or
    /// the reserved default tenant's id).
    #[error("invalid tenant id {tenant:?}: {reason}")]
    InvalidTenant {
        /// The refused id (cut at 128 characters).
        tenant: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A session opened without a tenant touched data that is conjoined by tenant (a
    /// document type with `#[document(tenancy = "conjoined")]`, or the events of a store
    /// whose events are conjoined). Nothing was read or written; open the session with
    /// a tenant (`store.lightweight_session_for(tenant)` and the like).
    #[error("{owner} is conjoined by tenant: open the session with a tenant (`lightweight_session_for(tenant)`)")]
    TenantRequired {
        /// What was touched: a document type, or `events`.
        owner: String,
    },

    /// A tenant the store does not know (a database-per-tenant store with no database
    /// for it).
    #[error("unknown tenant {tenant:?}: no database is configured for it")]
    UnknownTenant {
        /// The tenant.
        tenant: String,
    },

    /// The store was configured wrongly.
    #[error("invalid configuration: {0}")]
    Configuration(String),

    /// Every pooled connection stayed in use for the whole wait: the pool is too small
    /// for the load, or sessions hold their connections too long.
    #[error("connection pool exhausted: all {size} connections stayed in use for {waited_ms} ms")]
    PoolExhausted {
        /// The pool's maximum size.
        size: usize,
        /// How long the caller waited.
        waited_ms: u64,
    },

    /// Two document types would share a database object: the same table, or index or
    /// column names that PostgreSQL truncates (to 63 bytes) to the same name. The second
    /// type would read or overwrite the first one's rows, so the store refuses it, at
    /// `build` for registered types and at first use for others. `first` and `second` are
    /// the same type when two of its own fields collide.
    #[error("document types {first} and {second} would share the database object {name}: give one of them another table (or field) name")]
    NameConflict {
        /// The type that has the name (registered or used first).
        first: &'static str,
        /// The type refused.
        second: &'static str,
        /// The shared name, as PostgreSQL stores it.
        name: String,
    },

    /// A query that cannot be run as written (a raw SQL fragment whose placeholders do
    /// not match its parameters); nothing was sent to the database.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// No connection could be obtained, or the connection broke before anything of the
    /// operation could have taken effect: the network failed (SQLSTATE class 08 or an I/O
    /// error), or the server is shutting down, crashed or still starting (57P01, 57P02,
    /// 57P03). Nothing of a save that fails with it was written; retrying is safe.
    #[error("connection failed")]
    Connection(#[source] DatabaseError),

    /// A TLS connection to the server could not be set up (see [`TlsFailure`] for what
    /// failed); the source names the host and the `sslmode`. Retrying with the same
    /// settings will not help.
    #[error("TLS connection failed: {kind}")]
    Tls {
        /// What failed.
        kind: TlsFailure,
        /// The connection failure, with the TLS library's error as its source.
        #[source]
        source: DatabaseError,
    },

    /// The server refused the credentials (SQLSTATE class 28: wrong password, unknown
    /// role, no `pg_hba.conf` entry). Retrying with the same settings will not help.
    #[error("authentication failed")]
    Authentication(#[source] DatabaseError),

    /// The transaction lost a race with a concurrent one and was rolled back (a
    /// serialization failure, 40001, or a deadlock, 40P01). Nothing was written; running
    /// the operation again may succeed.
    #[error("transaction conflict ({kind}): rolled back, retry it")]
    Conflict {
        /// Which kind of conflict.
        kind: ConflictKind,
        /// The server's error.
        #[source]
        source: DatabaseError,
    },

    /// A statement was cancelled by the server: its `statement_timeout` expired or a cancel
    /// request arrived (SQLSTATE 57014). Its transaction was rolled back.
    #[error("statement canceled (statement timeout or cancel request)")]
    Canceled(#[source] DatabaseError),

    /// A lock could not be taken within `lock_timeout`, or at once for `NOWAIT`
    /// (SQLSTATE 55P03). Nothing was written; retrying later may succeed.
    #[error("lock not available")]
    LockNotAvailable(#[source] DatabaseError),

    /// The server (or the role) has no connection slot left (SQLSTATE 53300).
    #[error("too many connections")]
    TooManyConnections(#[source] DatabaseError),

    /// The connection was lost after a save's `COMMIT` (or its one autocommit statement)
    /// was sent and before the answer was read: the save may or may not have been
    /// written, and if it was, all of it was. Read the data back before deciding to
    /// retry; retrying blindly can write it twice.
    #[error(
        "connection lost after the commit was sent: the save may or may not have been written"
    )]
    OutcomeUnknown(#[source] DatabaseError),

    /// The session's open transaction, and the exclusive stream locks it held
    /// (`append_exclusive`, `fetch_for_exclusive_writing`), ended without a commit before
    /// the session saved: its connection was lost, closed by the server, or closed after
    /// one of the session's requests timed out, failed on the connection or was
    /// cancelled. The save was not sent (nothing of it was written) and its queued
    /// operations are discarded, as with any failed save: take the locks again and
    /// redo the work. Saving without them would break what the locks promised.
    #[error(
        "the session's transaction and its exclusive stream locks were lost before the save \
         ({cause}); nothing was written"
    )]
    TransactionLost {
        /// How the session found the transaction gone.
        cause: &'static str,
    },

    /// Any other database failure, with its SQLSTATE when the server reported one.
    #[error("database error")]
    Database(#[source] DatabaseError),

    /// An async projection's runner stopped: a poison event under
    /// [`PoisonPolicy::Stop`](crate::projection::PoisonPolicy::Stop), or a panic
    /// outside any apply method.
    #[error("async projection {projection} stopped: {message}")]
    ProjectionStopped {
        /// The projection.
        projection: String,
        /// Why it stopped.
        message: String,
    },

    /// Input refused before anything was sent to the database: text PostgreSQL cannot
    /// store (a NUL character in a document, an event, its metadata or its tags), or a
    /// tag that is empty or too long to index. Nothing of the save was written.
    #[error("invalid input for {owner}{}: {field} {reason}; nothing was sent", with_id(.id))]
    InvalidInput {
        /// What the input belongs to: a document type, `event <type>`, `tag <type>`,
        /// `stream`.
        owner: String,
        /// The document or stream id, when there is one.
        id: Option<String>,
        /// Where in the input: a JSON path in a document or event (`title`, `tags[2]`,
        /// `meta["key"]`), `header "key"`, `correlation id`, `causation id`, `value`.
        field: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Stored data marten cannot use, found when reading it: an aggregate whose version
    /// cannot advance (`i64::MAX`) or is negative, a tag version that is NULL or
    /// negative, a row edited by hand or by another program. Nothing was written.
    #[error("stored data of {owner}{} is unusable: {detail}", with_id(.id))]
    CorruptData {
        /// What the data belongs to: a document type, `stream`, `tag <type>`.
        owner: String,
        /// The document, stream or tag value, when there is one.
        id: Option<String>,
        /// What is wrong with it.
        detail: String,
    },

    /// Events with these ids were appended before (event ids are unique; with conjoined
    /// events, unique per tenant, and only the session's tenant's are named): the save was
    /// refused and nothing of it was written. Sending a save again after
    /// [`Error::OutcomeUnknown`] with the same event ids (`PendingEvent::with_id`) ends
    /// here when the first attempt did commit.
    #[error("events already appended: {}; nothing of this save was written", Joined(.ids, ", "))]
    DuplicateEvent {
        /// The ids of this save's events that were already stored.
        ids: Vec<uuid::Uuid>,
    },

    /// A read that asked for the store's read replica to have replayed a write (a write
    /// token, or the session's own last save) gave up: the replica had not replayed that
    /// position of the primary's write-ahead log within the store's replica wait timeout.
    /// Nothing was read. Retrying later, or reading from the primary, may succeed.
    #[error(
        "the read replica had not replayed write {position} after {waited_ms} ms (replayed: {})",
        .replayed.as_deref().unwrap_or("nothing")
    )]
    ReplicaBehind {
        /// The write position awaited (a log sequence number, `16/B374D848`).
        position: String,
        /// The position the replica had replayed at the last check, if it reported one.
        replayed: Option<String>,
        /// How long the read waited.
        waited_ms: u64,
    },
}

#[cfg(test)]
mod tests;
