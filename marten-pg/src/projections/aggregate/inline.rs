//! The inline projection of a single-stream aggregate on PostgreSQL: registered as an
//! [`InlineProjection`], planned by marten-core ([`plan_aggregate`]), with the reads it
//! asks for - the streams and their documents under lock, the check of cached documents
//! - answered here.

use std::collections::HashMap;
use std::marker::PhantomData;

use futures_util::future::BoxFuture;
use marten_core::concurrency::{VersionOf, WriteOf};
use marten_core::projection::inline::{
    plan_aggregate, AggregateReads, CachedDocs, LockedStream, PlanOutput,
};
use marten_core::{Aggregate, Result};

use super::locked::lock_streams;
use crate::documents::PgDocument;
use crate::projections::cache::CachedDocCheck;
use crate::projections::{InlineProjection, Planner, SavePlan};

/// The inline projection of aggregate `A`.
pub(crate) struct InlineAggregate<A> {
    /// `$1` = stream ids -> `id, version, is_archived` of each existing stream, locking
    /// the rows in id order until the save commits.
    lock: String,
    _a: PhantomData<fn() -> A>,
}

impl<A: Aggregate + PgDocument> InlineAggregate<A> {
    pub(crate) fn new() -> Self {
        let id_type = <A::Id as crate::PgId>::SQL_TYPE;
        InlineAggregate {
            lock: format!(
                "SELECT id, version, is_archived FROM {} WHERE id = ANY($1::{id_type}[]) ORDER BY id FOR UPDATE",
                crate::tables::events::STREAMS_TABLE,
            ),
            _a: PhantomData,
        }
    }
}

impl<A: Aggregate + PgDocument> InlineProjection for InlineAggregate<A> {
    fn plan<'a>(
        &'a self,
        plan: &'a mut SavePlan<'_>,
        pg: &'a mut Planner<'_, '_>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut reads = Reads::<A> {
                pg,
                lock: &self.lock,
                _a: PhantomData,
            };
            plan_aggregate::<A, _, _>(plan, &mut reads).await
        })
    }
}

/// The reads of aggregate `A`'s plan: the save's planner and the locking statement.
struct Reads<'p, 'a, 'r, A> {
    pg: &'p mut Planner<'a, 'r>,
    lock: &'p str,
    _a: PhantomData<fn() -> A>,
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
        PlanOutput::<A>::write(self.pg, kind, id, json, expected);
    }

    fn delete(&mut self, id: A::Id) {
        PlanOutput::<A>::delete(self.pg, id);
    }
}

impl<A: Aggregate + PgDocument> AggregateReads<A> for Reads<'_, '_, '_, A> {
    async fn lock_streams(&mut self, ids: &[A::Id]) -> Result<HashMap<A::Id, LockedStream<A>>> {
        lock_streams::<A>(self.pg, self.lock, ids).await
    }

    fn check_cached(&mut self, cached: CachedDocs<A>) {
        let mut check = CachedDocCheck::<A>::new();
        for (id, json) in cached {
            check.push(id, json.as_deref());
        }
        self.pg.out.push_op(Box::new(check));
    }
}
