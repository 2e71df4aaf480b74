//! Storing new documents whose integer ids the store generates: [`NewIds`], the session
//! side of the store's HiLo allocator ([`DocumentStore::next_id`]).

use std::future::Future;

use marten_core::{Document, Result};

use super::{QuerySource, Session, Tracking};
use crate::documents::PgDocument;
use crate::id::HiLoId;
#[cfg(doc)]
use crate::DocumentStore;

mod sealed {
    pub trait Sealed {}
    impl<K: super::Tracking> Sealed for super::Session<K> {}
}

/// Writes of new documents whose id the store assigns: a document whose id is zero gets
/// the next id of its type from the store's HiLo allocator ([`DocumentStore::next_id`])
/// before it is queued; one with an id keeps it. Implemented for every writing session;
/// bring it into scope with `use marten::prelude::*` (or `use marten::NewIds`). Sealed.
pub trait NewIds: sealed::Sealed {
    /// Assigns an id if the document has none, then queues an insert
    /// ([`Session::insert`](marten_core::session::Session::insert)): `save_changes`
    /// rejects it if the id exists. Returns the id.
    fn insert_new<D>(&mut self, doc: D) -> impl Future<Output = Result<D::Id>> + Send
    where
        D: PgDocument<Id: HiLoId>;

    /// Assigns an id if the document has none, then queues an upsert
    /// ([`Session::store`](marten_core::session::Session::store)). Returns the id.
    fn store_new<D>(&mut self, doc: D) -> impl Future<Output = Result<D::Id>> + Send
    where
        D: PgDocument<Id: HiLoId>;
}

impl<K: Tracking> NewIds for Session<K> {
    async fn insert_new<D>(&mut self, doc: D) -> Result<D::Id>
    where
        D: PgDocument<Id: HiLoId>,
    {
        let doc = with_id(self, doc).await?;
        self.insert(doc)
    }

    async fn store_new<D>(&mut self, doc: D) -> Result<D::Id>
    where
        D: PgDocument<Id: HiLoId>,
    {
        let doc = with_id(self, doc).await?;
        self.store(doc)
    }
}

/// `doc` with an id from the store's allocator if its id is zero. A block is reserved on
/// the session's connection when no transaction is open on it (no second connection
/// needed), else on a pooled connection of its own.
async fn with_id<K: Tracking, D>(session: &mut Session<K>, mut doc: D) -> Result<D>
where
    D: PgDocument<Id: HiLoId>,
{
    if Document::id(&doc).is_unassigned() {
        let (store, conn) = session.source();
        let id = if conn.in_transaction() {
            store.next_id::<D>().await?
        } else {
            store.next_id_on::<D>(conn).await?
        };
        *doc.id_mut() = id;
    }
    Ok(doc)
}
