//! The inline projection of a single-stream aggregate: groups a save's appends by
//! stream, takes the states it builds on (see [`super::known`]), folds the new events
//! into them and queues the derived writes, the version requirements of plain appends
//! and the cache updates. Uses the plan context, documents and the events' append kinds.

use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use marten_core::{Aggregate, AggregateId, Result};

use super::known::{known_states, load_rest};
use super::{cache_update, fold_events};
use crate::documents::serialize;
use crate::documents::{BasicWrite, PgDocument};
use crate::events::append::AppendKind;
use crate::events::stream_id::StreamKey;
use crate::projections::{advance, AppendView, InlineProjection, PlanContext};

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

    async fn plan_inner(&self, ctx: &mut PlanContext<'_, '_>) -> Result<()> {
        let mut streams = streams_handled::<A>(ctx.appends);
        if streams.is_empty() {
            return Ok(());
        }
        let (mut known, to_load) = known_states::<A>(ctx, &streams);
        let archived = load_rest::<A>(ctx, &self.lock, to_load, &mut known).await?;
        streams.retain(|(id, _)| !archived.contains(id));
        for (id, list) in streams {
            let (version, state) = known.remove(&id).unwrap_or((0, None));
            let existed = state.is_some();
            let (version, state) = fold_appends(ctx, &list, version, state)?;
            queue_projected(ctx, id, version, state, existed)?;
        }
        Ok(())
    }
}

/// The streams with at least one event `A` handles, each with all its appends in order.
fn streams_handled<A: Aggregate>(appends: &[AppendView]) -> Vec<(A::Id, Vec<&AppendView>)> {
    let mut streams: Vec<(A::Id, Vec<&AppendView>)> = Vec::new();
    for append in appends {
        let Some(id) = <A::Id as AggregateId>::from_stream_id(&append.stream.0) else {
            continue;
        };
        match streams.iter_mut().find(|(s, _)| *s == id) {
            Some((_, list)) => list.push(append),
            None => streams.push((id, vec![append])),
        }
    }
    streams.retain(|(_, list)| {
        list.iter()
            .any(|a| a.events.iter().any(|e| A::handles(e.as_ref())))
    });
    streams
}

/// Folds a stream's appends into its known `version` and `state`; a plain append
/// requires the stream to still be at the version the fold started from.
fn fold_appends<A: Aggregate>(
    ctx: &mut PlanContext<'_, '_>,
    list: &[&AppendView],
    mut version: i64,
    mut state: Option<A>,
) -> Result<(i64, Option<A>)> {
    for append in list {
        let base = match append.kind {
            AppendKind::Start => {
                state = None;
                0
            }
            AppendKind::Expected(v) => v,
            AppendKind::Append => {
                ctx.requirements.push((append.index, version));
                version
            }
        };
        let events = append.envelopes(Some(base))?;
        state = fold_events(state, &append.stream.0, &events)?;
        version = advance(&append.stream.0, base, events.len())?;
        if let Some(s) = state.as_mut() {
            s.set_version(version);
        }
    }
    Ok((version, state))
}

/// Queues the projected document of stream `id` (an upsert, or a delete when the fold
/// ended the document of a stream that had one) and what the cache learns if the save
/// commits.
fn queue_projected<A: Aggregate + PgDocument>(
    ctx: &mut PlanContext<'_, '_>,
    id: A::Id,
    version: i64,
    state: Option<A>,
    existed: bool,
) -> Result<()> {
    let stream = StreamKey(id.to_stream_id());
    let cached = match state {
        Some(doc) => {
            let json = serialize(&doc)?;
            let cached = Arc::<[u8]>::from(json.as_slice());
            ctx.out
                .push_derived_write::<A>(BasicWrite::Upsert, id, json, None);
            Some(cached)
        }
        None if existed => {
            ctx.out.push_delete::<A>(id);
            None
        }
        None => None,
    };
    ctx.cache_updates
        .push(cache_update::<A>(stream, version, cached));
    Ok(())
}

impl<A: Aggregate + PgDocument> InlineProjection for InlineAggregate<A> {
    fn plan<'a>(&'a self, ctx: &'a mut PlanContext<'_, '_>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.plan_inner(ctx))
    }
}
