//! The PostgreSQL side of the store's cache of inline aggregate documents: the cache
//! itself (a bounded map, backend-neutral) lives in [`marten_core::projection::cache`]
//! and is re-exported here.
//!
//! Planning an append from an entry makes the append assert the entry's version and
//! asserts that the stored document is still the cached one, in the same statement flight
//! as the projected write (a guarded write, `WriteSql::one_guarded`, for a save of one
//! cached document; a [`CachedDocCheck`] before the writes otherwise, or where the plan
//! deletes the document or writes none): if anything moved the stream or touched the
//! document since, the save is rejected, nothing is written, and it plans again from a
//! locked read. A stale entry therefore costs a retry, never a lost or wrong update.
//! [`settle`] tells the cache how a save ended.

use futures_util::future::BoxFuture;
use marten_core::{Rejection, Result, TenantId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use super::ProjectionCatalog;
use crate::documents::{conjoined, DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, Failed};
use crate::json::RawJson;
use crate::tenant_key::TenantKey;
use crate::unit_of_work::Operation;
use crate::unit_of_work::UnitOfWork;

pub(crate) use marten_core::projection::cache::{AggregateCache, CacheUpdate, DEFAULT_CAPACITY};

/// The guard of a save planned from cache entries of aggregate `D`: sent after the
/// appends (which hold the streams' row locks, as every projected write of those documents
/// does) and before the projected writes, it rejects the save, retryably, unless every
/// stored document is exactly the cached one (or absent where the entry says none). A
/// save planned from the cache is then exactly the save a locked read would have planned,
/// whatever happened to the stream meanwhile (deleted and restarted by another process,
/// the document edited by hand).
pub(crate) struct CachedDocCheck<D: PgDocument> {
    ids: Vec<D::Id>,
    docs: Vec<Option<RawJson>>,
    /// The tenant whose documents a conjoined type's check reads (bound last).
    tenant: Option<TenantKey>,
    rejected: bool,
}

impl<D: PgDocument> CachedDocCheck<D> {
    /// A check of no document yet; a conjoined type's documents are `tenant`'s.
    pub(crate) fn new(tenant: Option<&TenantId>) -> Self {
        CachedDocCheck {
            ids: Vec::new(),
            docs: Vec::new(),
            tenant: if conjoined::<D>() {
                TenantKey::of(tenant)
            } else {
                None
            },
            rejected: false,
        }
    }

    /// Expects document `id` to be stored as `json` (`None`: not stored).
    pub(crate) fn push(&mut self, id: D::Id, json: Option<&[u8]>) {
        self.ids.push(id);
        self.docs.push(json.map(|j| RawJson(j.to_vec())));
    }
}

impl<D: PgDocument> Operation for CachedDocCheck<D> {
    fn sql(&self) -> SqlText<'_> {
        let reads = D::storage().reads();
        SqlText::Static(if self.ids.len() == 1 {
            &reads.unchanged_one
        } else {
            &reads.unchanged
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut out: Vec<&(dyn ToSql + Sync)> = if self.ids.len() == 1 {
            vec![&self.ids[0], &self.docs[0]]
        } else {
            vec![&self.ids, &self.docs]
        };
        if let Some(tenant) = &self.tenant {
            out.push(tenant);
        }
        out
    }

    fn target(&self) -> crate::unit_of_work::Target {
        crate::documents::document_target::<D>()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn checked(&self) -> bool {
        true
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        let differing: i64 = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))?,
            None => 0,
        };
        self.rejected = differing > 0;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn retryable(&self) -> bool {
        true
    }

    fn reset(&mut self) {
        self.rejected = false;
    }

    fn explain<'a>(&'a self, _client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        // Retryable: a save it rejects is planned again, never reported.
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Tells the store's cache how a save ended: a commit publishes what its inline
/// aggregates wrote and drops the streams it deleted or archived; a failure drops what
/// the save would have written, since it may have committed before the error.
pub(crate) fn settle(
    store: &ProjectionCatalog,
    uow: &UnitOfWork,
    updates: &mut Vec<CacheUpdate>,
    committed: bool,
) {
    let cache = store.aggregate_cache();
    let updates = std::mem::take(updates);
    if !committed {
        cache.forget(updates.iter().map(|u| &u.key));
        return;
    }
    cache.publish(updates);
    for command in uow.user.commands() {
        cache.forget_stream(&command.stream().0);
    }
}
