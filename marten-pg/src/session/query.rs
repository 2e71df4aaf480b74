use deadpool_postgres::Object;
use marten_core::concurrency::VersionOf;
use marten_core::{DocumentMetadata, Result};

use super::load;
use crate::documents::PgDocument;
use crate::store::DocumentStore;

/// A read-only session: loads without tracking anything.
pub struct QuerySession {
    store: DocumentStore,
    conn: Option<Object>,
    in_doubt: bool,
    in_transaction: bool,
}

impl QuerySession {
    pub(crate) fn new(store: DocumentStore) -> Self {
        Self {
            store,
            conn: None,
            in_doubt: false,
            in_transaction: false,
        }
    }

    async fn client(&mut self) -> Result<&Object> {
        if self.conn.is_none() {
            self.conn = Some(self.store.connection().await?);
        }
        match &self.conn {
            Some(c) => Ok(c),
            None => unreachable!("connection was just set"),
        }
    }

    pub(crate) fn parts(&mut self) -> (&DocumentStore, &mut Option<Object>, &mut bool, &mut bool) {
        (
            &self.store,
            &mut self.conn,
            &mut self.in_doubt,
            &mut self.in_transaction,
        )
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
        let store = self.store.clone();
        let client = self.client().await?;
        store.ensure::<D>(client).await?;
        Ok(load::load_one::<D>(client, id).await?.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        let store = self.store.clone();
        let client = self.client().await?;
        store.ensure::<D>(client).await?;
        Ok(load::load_many::<D>(client, ids)
            .await?
            .into_iter()
            .map(|l| l.doc)
            .collect())
    }

    /// Reads the stored version and last-modified time of a document.
    pub async fn metadata<D: PgDocument>(
        &mut self,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
        let store = self.store.clone();
        let client = self.client().await?;
        store.ensure::<D>(client).await?;
        load::metadata::<D>(client, id).await
    }
}
