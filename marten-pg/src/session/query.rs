use marten_core::concurrency::VersionOf;
use marten_core::{DocumentMetadata, Result};

use crate::connection::Conn;
use crate::documents::load;
use crate::documents::PgDocument;
use crate::store::DocumentStore;

/// A read-only session: loads without tracking anything.
pub struct QuerySession {
    store: DocumentStore,
    conn: Conn,
}

impl QuerySession {
    pub(crate) fn new(store: DocumentStore) -> Self {
        Self {
            store,
            conn: Conn::new(),
        }
    }

    pub(crate) fn parts(&mut self) -> (&DocumentStore, &mut Conn) {
        (&self.store, &mut self.conn)
    }

    /// A typed query on documents of type `D`; see [`Query`](crate::query::Query).
    pub fn query<D: PgDocument + marten_core::query::HasFields>(
        &mut self,
    ) -> crate::query::Query<'_, Self, D> {
        crate::query::Query::new(self)
    }

    /// Several queries in one round trip; see [`QueryBatch`](crate::query::QueryBatch).
    pub fn batch(&mut self) -> crate::query::QueryBatch<'_, Self> {
        crate::query::QueryBatch::new(self)
    }

    /// Loads a document by id.
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<D>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_one::<D>(c, id).await)
            .await?;
        Ok(loaded.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_many::<D>(c, ids).await)
            .await?;
        Ok(loaded.into_iter().map(|l| l.doc).collect())
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
}
