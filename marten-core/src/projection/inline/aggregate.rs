//! The inline projection of a single-stream aggregate: groups a save's appends by
//! stream, takes the states it builds on (handed over by `fetch_for_writing`, held by
//! the aggregate cache, or read under lock), folds the new events into them and queues
//! the derived writes, the version requirements of plain appends and the cache updates.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use super::{advance, apply_error, AggregateReads, AppendKind, AppendView, Fetched, Plan};
use crate::aggregate::fold;
use crate::concurrency::BasicWrite;
use crate::projection::cache::{CacheKey, CacheUpdate, Cached};
use crate::{Aggregate, AggregateId, Document, EventEnvelope, Result, StreamId, Tenancy, TenantId};

/// The version and state of each stream known to the plan.
type States<A> = HashMap<<A as Document>::Id, (i64, Option<A>)>;

/// Plans aggregate `A` for the save's appends: every stream with an event `A` handles
/// gets its projected document written (or deleted) through `reads`.
pub async fn plan_aggregate<A, Q, R>(plan: &mut Plan<'_, Q>, reads: &mut R) -> Result<()>
where
    A: Aggregate,
    Q: 'static,
    R: AggregateReads<A>,
{
    let mut streams = streams_handled::<A>(plan.appends);
    advance_unhandled::<A, Q>(plan, &streams);
    if streams.is_empty() {
        return Ok(());
    }
    let (mut known, to_load) = known_states::<A, Q, R>(plan, reads, &streams);
    let archived = load_rest::<A, R>(reads, to_load, &mut known).await?;
    streams.retain(|(id, _)| !archived.contains(id));
    for (id, list) in streams {
        let (version, state) = known.remove(&id).unwrap_or((0, None));
        let existed = state.is_some();
        let (version, state) = fold_appends(plan, &list, version, state)?;
        queue_projected(plan, reads, id, version, state, existed)?;
    }
    Ok(())
}

/// The streams with at least one event `A` handles, each with all its appends in order.
fn streams_handled<A: Aggregate>(appends: &[AppendView]) -> Vec<(A::Id, Vec<&AppendView>)> {
    let mut streams: Vec<(A::Id, Vec<&AppendView>)> = Vec::new();
    for append in appends {
        let Some(id) = <A::Id as AggregateId>::from_stream_id(&append.stream) else {
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

/// Moves the cache entries of the streams the save appends to without an event `A`
/// handles: their documents do not change, so each entry's version moves on by the
/// events appended (learned if the save commits). For a plain append that is the entry's
/// guess of the stream's version; the next plan from the entry asserts it and the stored
/// document, so a wrong guess (another process appended meanwhile) costs a retry, as any
/// stale entry does, never an update. Without it, every such save would leave the entry
/// behind the stream, and the next append that `A` handles would be planned from it,
/// rejected and planned again from a locked read.
fn advance_unhandled<A: Aggregate, Q>(
    plan: &mut Plan<'_, Q>,
    handled: &[(A::Id, Vec<&AppendView>)],
) {
    if !plan.use_cache {
        return;
    }
    let tenant = cache_tenant::<A>(&plan.tenant);
    // Each stream's entry as the save's appends move it (`None`: nothing to learn).
    let mut moved: Vec<(StreamId, Option<Cached>)> = Vec::new();
    for append in plan.appends {
        let Some(id) = <A::Id as AggregateId>::from_stream_id(&append.stream) else {
            continue;
        };
        if handled.iter().any(|(h, _)| *h == id) {
            continue;
        }
        let slot = match moved.iter().position(|(s, _)| *s == append.stream) {
            Some(i) => &mut moved[i].1,
            None => {
                let key = (TypeId::of::<A>(), tenant.clone(), append.stream.clone());
                moved.push((append.stream.clone(), plan.cache.get(&key)));
                let last = moved.len() - 1;
                &mut moved[last].1
            }
        };
        // Inline entries carry no tip (only commands' entries of live aggregates do):
        // an entry with one is not this planner's to move.
        if slot.as_ref().is_some_and(|e| e.tip.is_some()) {
            *slot = None;
        }
        let Some(entry) = slot.as_mut() else {
            continue;
        };
        let runs_on = match append.kind {
            AppendKind::Start => false,
            AppendKind::Expected(v) => v == entry.version,
            AppendKind::Append => true,
        };
        match advance(&append.stream, entry.version, append.events.len()) {
            Ok(version) if runs_on => entry.version = version,
            _ => *slot = None,
        }
    }
    for (stream, entry) in moved {
        if let Some(entry) = entry {
            let key = (TypeId::of::<A>(), tenant.clone(), stream);
            plan.cache_updates.push(CacheUpdate { key, entry });
        }
    }
}

/// The states known without reading: a started stream is new, `fetch_for_writing`
/// holds the state at the version the append asserts, or the cache holds it. Returns
/// them and the streams left to read under lock. Queues a check of the cached documents
/// it used (before the projected writes, after the appends that lock the streams).
fn known_states<A: Aggregate, Q: 'static, R: AggregateReads<A>>(
    plan: &mut Plan<'_, Q>,
    reads: &mut R,
    streams: &[(A::Id, Vec<&AppendView>)],
) -> (States<A>, Vec<A::Id>) {
    let mut known: States<A> = HashMap::new();
    let mut to_load = Vec::new();
    let mut checks = Vec::new();
    for (id, list) in streams {
        let key = (
            TypeId::of::<A>(),
            cache_tenant::<A>(&plan.tenant),
            list[0].stream.clone(),
        );
        let fetched = plan.state.take_fetched::<A, Fetched<A>>(&key.2);
        match (list[0].kind, fetched) {
            (AppendKind::Start, _) => {
                known.insert(id.clone(), (0, None));
            }
            (AppendKind::Expected(v), Some(f)) if f.version == v => {
                known.insert(id.clone(), (f.version, f.state));
            }
            (kind, _) => match from_cache::<A, Q>(plan, key, kind) {
                Some(hit) => {
                    checks.push((id.clone(), hit.json));
                    known.insert(id.clone(), (hit.version, hit.state));
                }
                None => to_load.push(id.clone()),
            },
        }
    }
    if !checks.is_empty() {
        reads.check_cached(checks);
    }
    (known, to_load)
}

/// What the cache held for a stream: the version, the state and the stored JSON.
struct CacheHit<A> {
    version: i64,
    state: Option<A>,
    json: Option<Arc<[u8]>>,
}

/// The cached version, state and document JSON of `A` for the stream of `key`, if the
/// cache may be used, holds an entry and, for an expected-version append, the entry is at
/// that version. Recorded in `plan.cache_hits`. An entry that no longer deserializes is
/// dropped.
fn from_cache<A: Aggregate, Q>(
    plan: &mut Plan<'_, Q>,
    key: CacheKey,
    kind: AppendKind,
) -> Option<CacheHit<A>> {
    if !plan.use_cache {
        return None;
    }
    let entry = plan.cache.get(&key)?;
    if let AppendKind::Expected(v) = kind {
        if v != entry.version {
            return None;
        }
    }
    let state = match &entry.json {
        Some(json) => match serde_json::from_slice::<A>(json) {
            Ok(doc) => Some(doc),
            Err(_) => {
                plan.cache.forget([&key]);
                return None;
            }
        },
        None => None,
    };
    plan.cache_hits.push(key);
    Some(CacheHit {
        version: entry.version,
        state,
        json: entry.json,
    })
}

/// Reads the streams `to_load` under lock into `known`; a stream without a row is new
/// (version 0, no state). Returns the archived streams: nothing to project, their
/// appends are rejected as archived.
async fn load_rest<A: Aggregate, R: AggregateReads<A>>(
    reads: &mut R,
    to_load: Vec<A::Id>,
    known: &mut States<A>,
) -> Result<Vec<A::Id>> {
    let mut locked = if to_load.is_empty() {
        HashMap::new()
    } else {
        reads.lock_streams(&to_load).await?
    };
    let mut archived = Vec::new();
    for id in to_load {
        match locked.remove(&id) {
            Some(s) if s.archived => archived.push(id),
            Some(s) => {
                known.insert(id, (s.version, s.state));
            }
            None => {
                known.insert(id, (0, None));
            }
        }
    }
    Ok(archived)
}

/// Folds a stream's appends into its known `version` and `state`; a plain append
/// requires the stream to still be at the version the fold started from.
fn fold_appends<A: Aggregate, Q>(
    plan: &mut Plan<'_, Q>,
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
                plan.requirements.push((append.index, version));
                version
            }
        };
        let events = append.envelopes(Some(base))?;
        state = fold_events(state, &append.stream, &events)?;
        version = advance(&append.stream, base, events.len())?;
        if let Some(s) = state.as_mut() {
            s.set_version(version);
        }
    }
    Ok((version, state))
}

/// Queues the projected document of stream `id` (an upsert, or a delete when the fold
/// ended the document of a stream that had one) and what the cache learns if the save
/// commits.
fn queue_projected<A: Aggregate, Q, R: AggregateReads<A>>(
    plan: &mut Plan<'_, Q>,
    reads: &mut R,
    id: A::Id,
    version: i64,
    state: Option<A>,
    existed: bool,
) -> Result<()> {
    let stream = id.to_stream_id();
    let cached = match state {
        Some(doc) => {
            let json = R::serialize(&doc)?;
            let cached = Arc::<[u8]>::from(json.as_slice());
            reads.write(BasicWrite::Upsert.into(), id, json, None);
            Some(cached)
        }
        None if existed => {
            reads.delete(id);
            None
        }
        None => None,
    };
    let update = cache_update::<A>(cache_tenant::<A>(&plan.tenant), stream, version, cached);
    plan.cache_updates.push(update);
    Ok(())
}

/// Folds events into `start`, keeping `version` at the stream version of the last event
/// and the id at the stream id.
pub fn fold_events<A: Aggregate>(
    start: Option<A>,
    stream: &StreamId,
    events: &[EventEnvelope],
) -> Result<Option<A>> {
    let mut state = fold(start, events, |s: &mut A, e| s.set_version(e.version))
        .map_err(|(err, i)| apply_error(A::DOCUMENT_TYPE, &events[i], err.message))?;
    if let Some(s) = state.as_mut() {
        if let Some(last) = events.last() {
            s.set_version(last.version);
        }
        if let Some(id) = <A::Id as AggregateId>::from_stream_id(stream) {
            *s.id_mut() = id;
        }
    }
    Ok(state)
}

/// The tenant of `A`'s cache entries planned by a session of `session`: the session's
/// for a conjoined `A` (whose documents, and streams with conjoined events, are the
/// tenant's own), none for a single one (one document per stream for every tenant, and
/// single-tenant events: a single `A` is refused with conjoined events), so every
/// session shares the entry of a shared row.
pub fn cache_tenant<A: Document>(session: &Option<TenantId>) -> Option<TenantId> {
    match A::TENANCY {
        Tenancy::Conjoined => session.clone(),
        Tenancy::Single => None,
    }
}

/// What the cache learns of aggregate `A` on `stream`, as a session of `tenant` saw it
/// ([`cache_tenant`]): its version and stored JSON (`None` for no document).
pub fn cache_update<A: 'static>(
    tenant: Option<TenantId>,
    stream: StreamId,
    version: i64,
    json: Option<Arc<[u8]>>,
) -> CacheUpdate {
    CacheUpdate {
        key: (TypeId::of::<A>(), tenant, stream),
        entry: Cached {
            version,
            json,
            tip: None,
        },
    }
}
