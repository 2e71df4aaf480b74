//! The traits that tie a document type to its mode's storage.

use marten_core::concurrency::VersionOf;
use marten_core::{Document, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::write_batch::WriteBatch;
use crate::tables::documents::{ReadSql, WriteSql};
use crate::PgId;

/// A document PostgreSQL can store. Implemented by `#[derive(Document)]`, which selects
/// [`Self::Storage`]: [`OptimisticStorage`](super::OptimisticStorage),
/// [`NumericStorage`](super::NumericStorage) or [`OffStorage`](super::OffStorage).
/// Do not implement it by hand.
pub trait PgDocument: Document<Id: PgId> {
    /// The storage of this document's concurrency mode.
    type Storage: DocumentStorage<Self>;
    /// The storage, built once per document type (its SQL text included).
    fn storage() -> &'static Self::Storage;
}

/// What a write does; which kinds a document offers depends on its mode and is enforced
/// by the session's method bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Insert or update.
    Upsert,
    /// Insert; an existing id is rejected.
    Insert,
    /// Update; a missing document is rejected.
    Update,
    /// Numeric: write at a given revision, rejected unless above the stored one.
    UpdateRevision,
    /// Numeric: write at a given revision if above the stored one, else nothing.
    TryUpdateRevision,
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// The storage of one concurrency mode for one document type: its SQL text and how its
/// parameters are bound and its versions read. Sealed; one implementation per mode.
pub trait DocumentStorage<D: PgDocument>: sealed::Sealed + Send + Sync + Sized + 'static {
    /// Builds the storage and its SQL text (called once per type).
    fn new() -> Self;
    /// The DDL that creates the table (and adds missing mode columns), idempotent.
    #[doc(hidden)]
    fn ddl(schema: &str) -> Vec<String>;
    /// The columns the mode needs.
    #[doc(hidden)]
    fn columns() -> &'static [&'static str];
    /// The reads and deletes.
    #[doc(hidden)]
    fn reads(&self) -> &ReadSql;
    /// The SQL of a write kind. Kinds a mode does not offer are not reachable through the
    /// session API.
    #[doc(hidden)]
    fn write_sql(&self, kind: WriteKind) -> &WriteSql;
    /// Whether a write of this kind may be rejected (and so needs the batch guard).
    #[doc(hidden)]
    fn checked(kind: WriteKind) -> bool;
    /// The version a new write stores, when the client chooses it (optimistic).
    #[doc(hidden)]
    fn fresh_version() -> Option<VersionOf<D>>;
    /// Appends the mode's parameters for `batch` in statement order.
    #[doc(hidden)]
    fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>);
    /// Reads a version column (`None` for a mode without versions).
    #[doc(hidden)]
    fn read_version(row: &Row, idx: usize) -> Result<Option<VersionOf<D>>>;
    /// Reads the array of versions a write returned.
    #[doc(hidden)]
    fn read_versions(row: &Row, idx: usize) -> Result<Vec<VersionOf<D>>>;
}
