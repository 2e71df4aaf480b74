//! The read-only session, [`QuerySession<B>`]: loads and queries without tracking
//! anything, on a connection of its own.

use std::future::Future;

use super::backend::{Backend, CompiledQueryBackend, DocumentBackend, QueryBackend};
use crate::concurrency::VersionOf;
use crate::{Document, DocumentMetadata, Result};

/// A read-only session on backend `B`: loads without tracking anything.
pub struct QuerySession<B: Backend> {
    store: B::Store,
    conn: B::Conn,
}

impl<B: Backend> QuerySession<B> {
    /// A query session on `store` (backends open sessions from their store).
    pub fn new(store: B::Store) -> Self {
        QuerySession {
            conn: B::connection(&store),
            store,
        }
    }

    /// The store and the session's connection, for its backend.
    #[doc(hidden)]
    pub fn parts_mut(&mut self) -> (&B::Store, &mut B::Conn) {
        (&self.store, &mut self.conn)
    }

    /// The store this session belongs to.
    pub fn store_ref(&self) -> &B::Store {
        &self.store
    }

    /// A typed query on documents of type `D`.
    pub fn query<D: Document>(&mut self) -> <B as QueryBackend<D>>::ReadQuery<'_>
    where
        B: QueryBackend<D>,
    {
        B::read_query(self)
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
        B::read_compiled(self, query)
    }

    /// Several queries in one round trip.
    pub fn batch(&mut self) -> B::Batch<'_> {
        B::batch(self)
    }

    /// Loads a document by id.
    pub async fn load<D: Document>(&mut self, id: &D::Id) -> Result<Option<D>>
    where
        B: DocumentBackend<D>,
    {
        let loaded = B::load(&self.store, &mut self.conn, id).await?;
        Ok(loaded.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: Document>(&mut self, ids: &[D::Id]) -> Result<Vec<D>>
    where
        B: DocumentBackend<D>,
    {
        let loaded = B::load_many(&self.store, &mut self.conn, ids).await?;
        Ok(loaded.into_iter().map(|l| l.doc).collect())
    }

    /// Reads the stored version and last-modified time of a document, and whether it is
    /// marked deleted (a soft-deleted type's marked document has metadata too).
    pub async fn metadata<D: Document>(
        &mut self,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>>
    where
        B: DocumentBackend<D>,
    {
        B::metadata(&self.store, &mut self.conn, id).await
    }
}
