//! The inline projection of a single-stream aggregate on PostgreSQL: registered as an
//! [`InlineProjection`], planned by marten-core ([`plan_aggregate`]), with the reads it
//! asks for - the streams and their documents under lock, the check of cached documents
//! - answered here.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use marten_core::concurrency::{VersionOf, WriteOf};
use marten_core::projection::inline::{
    plan_aggregate, AggregateReads, AppendView, CachedDocs, LockedStream, PlanOutput,
};
use marten_core::{Aggregate, Result, Tenancy};

use super::locked::lock_streams;
use crate::documents::PgDocument;
use crate::projections::cache::CachedDocCheck;
use crate::projections::snapshot::StreamDocuments;
use crate::projections::{handles_any, InlineProjection, Planner, SavePlan};

/// The inline projection of aggregate `A`.
pub(crate) struct InlineAggregate<A> {
    /// `$1` = stream ids -> `id, version, is_archived` of each existing stream, locking
    /// the rows in id order until the save commits.
    lock: String,
    /// [`InlineAggregate::lock`] of one tenant's streams (conjoined events): `$2` = the
    /// tenant.
    lock_of_tenant: String,
    /// The aggregate's documents, deleted with their stream.
    documents: Arc<StreamDocuments>,
    _a: PhantomData<fn() -> A>,
}

impl<A: Aggregate + PgDocument> InlineAggregate<A> {
    pub(crate) fn new() -> Self {
        let id_type = <A::Id as crate::PgId>::SQL_TYPE;
        let lock = |tenant: &str| {
            format!(
                "SELECT id, version, is_archived FROM {} WHERE id = ANY($1::{id_type}[]){tenant} ORDER BY id FOR UPDATE",
                crate::tables::events::STREAMS_TABLE,
            )
        };
        InlineAggregate {
            lock: lock(""),
            lock_of_tenant: lock(" AND tenant_id = $2"),
            documents: Arc::new(StreamDocuments::of::<A>()),
            _a: PhantomData,
        }
    }
}

impl<A: Aggregate + PgDocument> InlineProjection for InlineAggregate<A> {
    fn uses_metadata(&self, appends: &[AppendView]) -> bool {
        A::USES_METADATA && handles_any::<A>(appends)
    }

    fn document(&self) -> Option<(std::any::TypeId, crate::schema::MigrateFn)> {
        Some((
            std::any::TypeId::of::<A>(),
            crate::documents::migrate_fn::<A>(),
        ))
    }

    fn stream_documents(&self) -> Option<&Arc<StreamDocuments>> {
        Some(&self.documents)
    }

    fn plan<'a>(
        &'a self,
        plan: &'a mut SavePlan<'_>,
        pg: &'a mut Planner<'_, '_>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // With conjoined events, the session's tenant's streams.
            let scoped = pg.store.events().events_tenancy() == Tenancy::Conjoined;
            let lock = if scoped {
                &self.lock_of_tenant
            } else {
                &self.lock
            };
            let mut reads = Reads::<A> {
                pg,
                lock,
                scoped,
                guard: None,
            };
            plan_aggregate::<A, _, _>(plan, &mut reads).await?;
            reads.check_unwritten();
            Ok(())
        })
    }
}

/// A cached document of `A`: its id and its JSON (`None`: none stored).
type CachedDoc<A> = (<A as marten_core::Document>::Id, Option<Arc<[u8]>>);

/// The reads of aggregate `A`'s plan: the save's planner and the locking statement
/// (`scoped`: it takes the tenant as its second parameter).
struct Reads<'p, 'a, 'r, A: Aggregate> {
    pg: &'p mut Planner<'a, 'r>,
    lock: &'p str,
    scoped: bool,
    /// The one cached document the plan used, held until its projected write, which it
    /// then guards (one statement instead of a check and a write).
    guard: Option<CachedDoc<A>>,
}

impl<A: Aggregate + PgDocument> Reads<'_, '_, '_, A> {
    /// Queues the check of the cached document held for `id` (any held one: `None`).
    fn check_held(&mut self, id: Option<&A::Id>) {
        if let Some(held) = self.guard.take_if(|(g, _)| id.is_none_or(|id| g == id)) {
            self.check(vec![held]);
        }
    }

    /// Queues the check of a cached document the plan did not write (its stream was
    /// archived, or its fold left no document).
    fn check_unwritten(&mut self) {
        self.check_held(None);
    }

    fn check(&mut self, cached: CachedDocs<A>) {
        let mut check = CachedDocCheck::<A>::new(self.pg.out.tenant.as_ref());
        for (id, json) in cached {
            check.push(id, json.as_deref());
        }
        self.pg.out.push_op(Box::new(check));
    }
}

impl<A: Aggregate + PgDocument> PlanOutput<A> for Reads<'_, '_, '_, A> {
    fn serialize(doc: &A) -> Result<Vec<u8>> {
        <Planner<'_, '_> as PlanOutput<A>>::serialize(doc)
    }

    fn write(
        &mut self,
        kind: WriteOf<A>,
        id: A::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<A>>,
    ) {
        let guard = self
            .guard
            .take_if(|(held, _)| *held == id && expected.is_none());
        match guard {
            Some((_, replaces)) => {
                self.pg
                    .out
                    .push_guarded_write::<A>(kind, id, json, replaces.as_deref());
            }
            None => {
                self.check_held(Some(&id));
                PlanOutput::<A>::write(self.pg, kind, id, json, expected);
            }
        }
    }

    fn delete(&mut self, id: A::Id) {
        self.check_held(Some(&id));
        PlanOutput::<A>::delete(self.pg, id);
    }
}

impl<A: Aggregate + PgDocument> AggregateReads<A> for Reads<'_, '_, '_, A> {
    async fn lock_streams(&mut self, ids: &[A::Id]) -> Result<HashMap<A::Id, LockedStream<A>>> {
        lock_streams::<A>(self.pg, self.lock, self.scoped, ids).await
    }

    /// One cached document is held to guard its write; several are checked at once
    /// (one statement for them all, ahead of the writes).
    fn check_cached(&mut self, mut cached: CachedDocs<A>) {
        if cached.len() == 1 && self.guard.is_none() {
            self.guard = cached.pop();
        } else {
            self.check_unwritten();
            self.check(cached);
        }
    }
}
