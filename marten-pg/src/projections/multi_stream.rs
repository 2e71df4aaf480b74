//! Multi-stream projections on PostgreSQL: registered as an [`InlineProjection`],
//! planned by marten-core ([`plan_multi_stream`]); the documents it builds on are read
//! here, under lock in the save's transaction.

use std::marker::PhantomData;

use futures_util::future::BoxFuture;
use marten_core::concurrency::VersionedMode;
use marten_core::projection::inline::{plan_multi_stream, AppendView, DocumentReads};
use marten_core::session::Loaded;
use marten_core::{Identities, Result, StreamId};

use super::{InlineProjection, Planner, SavePlan};
use crate::documents::load;
use crate::documents::PgDocument;

/// The inline projection of multi-stream document type `P`.
pub(crate) struct InlineMultiStream<P> {
    _p: PhantomData<fn() -> P>,
}

impl<P> InlineMultiStream<P>
where
    P: Identities + PgDocument,
    P::Mode: VersionedMode,
{
    pub(crate) fn new() -> Self {
        InlineMultiStream { _p: PhantomData }
    }
}

impl<P> InlineProjection for InlineMultiStream<P>
where
    P: Identities + PgDocument,
    P::Mode: VersionedMode,
{
    fn uses_metadata(&self, appends: &[AppendView]) -> bool {
        P::USES_METADATA && super::handles_any::<P>(appends)
    }

    fn document(&self) -> Option<(std::any::TypeId, crate::schema::MigrateFn)> {
        Some((
            std::any::TypeId::of::<P>(),
            crate::documents::migrate_fn::<P>(),
        ))
    }

    fn plan<'a>(
        &'a self,
        plan: &'a mut SavePlan<'_>,
        pg: &'a mut Planner<'_, '_>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(plan_multi_stream::<P, _, _>(plan, pg))
    }
}

impl<P: PgDocument> DocumentReads<P> for Planner<'_, '_> {
    async fn lock_documents(&mut self, ids: &[P::Id]) -> Result<Vec<Loaded<P>>> {
        self.store.ensure::<P>().await?;
        self.begin().await?;
        load::load_many_locked::<P>(self.req.client(), self.out.tenant.as_ref(), ids).await
    }

    async fn stream_version(&mut self, stream: &StreamId) -> Result<Option<i64>> {
        Planner::stream_version(self, stream).await
    }
}
