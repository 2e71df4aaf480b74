//! Multi-stream projections: events from many streams grouped to documents by ids the
//! projection declares per event type (`identity*` methods). One event may feed several
//! documents. Documents of a multi-stream projection are shared between streams, so
//! their writes assert the version read (the projection's document type has a versioned
//! concurrency mode, enforced at registration): a racing save makes this one plan again.

use std::marker::PhantomData;

use futures_util::future::BoxFuture;
use marten_core::aggregate::fold;
use marten_core::concurrency::VersionedMode;
use marten_core::{EventEnvelope, Identities, Result};

use super::{apply_error, InlineProjection, PlanContext};
use crate::documents::load;
use crate::documents::serialize;
use crate::documents::{BasicWrite, PgDocument};

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

    async fn plan_inner(&self, ctx: &mut PlanContext<'_, '_>) -> Result<()> {
        // Events per document id, in append order.
        let mut groups: Vec<(P::Id, Vec<EventEnvelope>)> = Vec::new();
        for append in ctx.appends {
            for event in append.asserted_envelopes()? {
                if !P::handles(event.data.as_ref()) {
                    continue;
                }
                for id in P::identities(&event) {
                    match groups.iter_mut().find(|(g, _)| *g == id) {
                        Some((_, list)) => list.push(event.clone()),
                        None => groups.push((id, vec![event.clone()])),
                    }
                }
            }
        }
        if groups.is_empty() {
            return Ok(());
        }
        ctx.store.ensure::<P>().await?;
        let ids: Vec<P::Id> = groups.iter().map(|(id, _)| id.clone()).collect();
        ctx.begin().await?;
        let mut loaded: std::collections::HashMap<P::Id, load::Loaded<P>> =
            load::load_many_locked::<P>(ctx.req.client(), &ids)
                .await?
                .into_iter()
                .map(|l| (l.id.clone(), l))
                .collect();
        for (id, events) in groups {
            let current = loaded.remove(&id);
            let (start, version) = match current {
                Some(l) => (Some(l.doc), l.version),
                None => (None, None),
            };
            let existed = start.is_some();
            let state = fold(start, &events, |_, _| {})
                .map_err(|(err, i)| apply_error(P::DOCUMENT_TYPE, &events[i], err.message))?;
            match state {
                Some(mut doc) => {
                    *doc.id_mut() = id.clone();
                    let json = serialize(&doc)?;
                    if existed {
                        ctx.out
                            .push_derived_write::<P>(BasicWrite::Upsert, id, json, version);
                    } else {
                        ctx.out
                            .push_derived_write::<P>(BasicWrite::Insert, id, json, None);
                    }
                }
                None if existed => ctx.out.push_delete::<P>(id),
                None => {}
            }
        }
        Ok(())
    }
}

impl<P> InlineProjection for InlineMultiStream<P>
where
    P: Identities + PgDocument,
    P::Mode: VersionedMode,
{
    fn plan<'a>(&'a self, ctx: &'a mut PlanContext<'_, '_>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.plan_inner(ctx))
    }
}
