//! Single-stream aggregates: live folds (from the inline snapshot when there is one) and
//! the inline projection that keeps the aggregate document in step with its stream.

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use deadpool_postgres::Object;
use futures_util::future::BoxFuture;
use marten_core::aggregate::fold;
use marten_core::{Aggregate, AggregateId, Document, Error, EventEnvelope, Result, StreamId};

use super::cache::{CacheKey, CacheUpdate, Cached, CachedDocCheck};
use super::{apply_error, AppendView, InlineProjection, Lifecycle, PlanContext};
use crate::connection::Pipeline;
use crate::documents::serialize;
use crate::documents::{DocumentStorage, PgDocument, WriteKind};
use crate::error_map::{map_db_error, Failed};
use crate::events::append::AppendKind;
use crate::events::read;
use crate::events::stream_id::StreamKey;
use crate::events::StreamRange;
use crate::json::JsonRef;
use crate::session::load;
use crate::store::DocumentStore;

fn reading<A: Document>(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading(A::DOCUMENT_TYPE))
}

/// Folds events into `start`, keeping `version` at the stream version of the last event
/// and the id at the stream id.
fn fold_events<A: Aggregate>(
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

/// Folds a stream (within `range`) into `A`, starting from its inline snapshot when `A`
/// is an inline projection and the snapshot is not past the range. Returns the state and
/// the version of the last event read (the snapshot's when no event follows it; 0 for no
/// stream).
pub(crate) async fn aggregate_stream<A: Aggregate + PgDocument>(
    store: &DocumentStore,
    client: &Object,
    stream: &StreamKey,
    range: &StreamRange,
) -> Result<(Option<A>, i64)> {
    store.learn_events(A::event_types());
    let mut start: Option<A> = None;
    let mut snapshot_json = None;
    let mut from_version = range.from_version;
    let inline = store.projections().lifecycle(TypeId::of::<A>()) == Some(Lifecycle::Inline);
    if inline && range.from_version <= 1 && range.to_time.is_none() && range.from_time.is_none() {
        if let Some(id) = <A::Id as AggregateId>::from_stream_id(&stream.0) {
            store.ensure::<A>().await?;
            if let Some(snapshot) = load::load_one::<A>(client, &id).await? {
                let stored = snapshot.doc.version();
                let next = stored.checked_add(1).filter(|_| stored >= 0);
                let Some(next) = next else {
                    return Err(Error::CorruptData {
                        owner: A::DOCUMENT_TYPE.to_owned(),
                        id: Some(id.to_string()),
                        detail: format!(
                            "its stored version {stored} is not a stream version events can follow"
                        ),
                    });
                };
                if stored <= range.to_version {
                    from_version = next;
                    start = Some(snapshot.doc);
                    snapshot_json = Some(snapshot.json);
                }
            }
        }
    }
    let snapshot_version = start.as_ref().map_or(0, Aggregate::version);
    let whole = range.to_version == i64::MAX;
    let mut range = range.clone();
    range.from_version = from_version;
    let events = read::fetch_stream(store, client, stream, &range).await?;
    if let (Some(json), true, true) = (snapshot_json, whole, events.is_empty()) {
        // The stored document is the whole stream folded: a plain append can plan from it.
        store.aggregate_cache().publish(vec![CacheUpdate {
            key: (TypeId::of::<A>(), stream.clone()),
            entry: Cached {
                version: snapshot_version,
                json: Some(Arc::from(json)),
            },
        }]);
    }
    let version = events.last().map_or(snapshot_version, |e| e.version);
    let state = fold_events(start, &stream.0, &events)?;
    Ok((state, version))
}

/// What `fetch_for_writing` loaded, kept in the session for the save's inline projection.
pub(crate) struct Fetched<A> {
    pub(crate) version: i64,
    pub(crate) state: Option<A>,
}

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
                crate::events::table::STREAMS_TABLE,
            ),
            _a: PhantomData,
        }
    }

    /// Locks the streams until the save commits and reads their versions and documents.
    /// The documents are read by a second statement of the same flight, which starts
    /// after the locks are held: its snapshot sees the last committed projection (a
    /// joined read in the locking statement would see the one from before the wait).
    async fn load(
        &self,
        ctx: &mut PlanContext<'_, '_>,
        ids: &[A::Id],
    ) -> Result<HashMap<A::Id, (i64, Option<A>, bool)>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        ctx.store.ensure::<A>().await?;
        let begin = !ctx.req.in_transaction();
        let lock = ctx
            .req
            .client()
            .prepare_cached(&self.lock)
            .await
            .map_err(reading::<A>)?;
        let docs = ctx
            .req
            .client()
            .prepare_cached(&A::storage().reads().load_many)
            .await
            .map_err(reading::<A>)?;
        if begin {
            // BEGIN is about to be written.
            ctx.req.set_in_transaction(true);
        }
        let c: &tokio_postgres::Client = ctx.req.client();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        // BEGIN, the lock and the read in one flight.
        let mut pipe = Pipeline::new(c, 3);
        let begun = begin.then(|| pipe.command("BEGIN"));
        let streams = pipe.query(&lock, &params);
        let docs = pipe.query(&docs, &params);
        let mut answers = pipe.send().await;
        if let Some(Err(e)) = begun.map(|h| answers.take(h)) {
            return Err(crate::error_map::map_db_error(
                e,
                crate::error_map::Failed::Transaction,
            ));
        }
        let (streams, docs) = (answers.take(streams), answers.take(docs));
        for row in streams.map_err(reading::<A>)? {
            let id: A::Id = row.try_get(0).map_err(reading::<A>)?;
            let version: i64 = row.try_get(1).map_err(reading::<A>)?;
            let archived: bool = row.try_get(2).map_err(reading::<A>)?;
            out.insert(id, (version, None, archived));
        }
        for row in docs.map_err(reading::<A>)? {
            let id: A::Id = row.try_get(0).map_err(reading::<A>)?;
            let json: JsonRef<'_> = row.try_get(1).map_err(reading::<A>)?;
            let doc = serde_json::from_slice::<A>(json.0).map_err(|source| Error::Deserialize {
                document_type: A::DOCUMENT_TYPE,
                id: id.to_string(),
                source,
            })?;
            if let Some(entry) = out.get_mut(&id) {
                entry.1 = Some(doc);
            }
        }
        Ok(out)
    }

    async fn plan_inner(&self, ctx: &mut PlanContext<'_, '_>) -> Result<()> {
        // The streams with at least one event `A` handles, each with all its appends.
        let mut streams: Vec<(A::Id, Vec<&AppendView>)> = Vec::new();
        for append in ctx.appends {
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
        if streams.is_empty() {
            return Ok(());
        }
        // States fetch_for_writing already holds, at the version the append asserts, or
        // the store's cache holds; the rest are read under lock.
        let mut known: HashMap<A::Id, (i64, Option<A>)> = HashMap::new();
        let mut to_load = Vec::new();
        let mut check = CachedDocCheck::<A>::new();
        for (id, list) in &streams {
            let key = (TypeId::of::<A>(), list[0].stream.clone());
            let fetched = ctx.state.take_fetched::<A, Fetched<A>>(&key.1 .0);
            match (list[0].kind, fetched) {
                (AppendKind::Start, _) => {
                    known.insert(id.clone(), (0, None));
                }
                (AppendKind::Expected(v), Some(f)) if f.version == v => {
                    known.insert(id.clone(), (f.version, f.state));
                }
                (kind, _) => match from_cache::<A>(ctx, key, kind) {
                    Some(hit) => {
                        check.push(id.clone(), hit.json.as_deref());
                        known.insert(id.clone(), (hit.version, hit.state));
                    }
                    None => to_load.push(id.clone()),
                },
            }
        }
        if !check.is_empty() {
            // Before the projected writes, after the appends that lock the streams.
            ctx.out.push_op(Box::new(check));
        }
        let mut loaded = self.load(ctx, &to_load).await?;
        let mut archived = Vec::new();
        for id in to_load {
            match loaded.remove(&id) {
                // Nothing to project: the append is rejected as archived.
                Some((_, _, true)) => archived.push(id),
                Some((version, state, false)) => {
                    known.insert(id, (version, state));
                }
                None => {
                    known.insert(id, (0, None));
                }
            }
        }
        streams.retain(|(id, _)| !archived.contains(id));
        for (id, list) in streams {
            let (mut version, mut state) = known.remove(&id).unwrap_or((0, None));
            let existed = state.is_some();
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
                version = super::advance(&append.stream.0, base, events.len())?;
                if let Some(s) = state.as_mut() {
                    s.set_version(version);
                }
            }
            let key: CacheKey = (TypeId::of::<A>(), StreamKey(id.to_stream_id()));
            let cached = match state {
                Some(doc) => {
                    let json = serialize(&doc)?;
                    let cached = Arc::<[u8]>::from(json.as_slice());
                    ctx.out
                        .push_derived_write::<A>(WriteKind::Upsert, id, json, None);
                    Some(cached)
                }
                None if existed => {
                    ctx.out.push_delete::<A>(id);
                    None
                }
                None => None,
            };
            ctx.cache_updates.push(CacheUpdate {
                key,
                entry: Cached {
                    version,
                    json: cached,
                },
            });
        }
        Ok(())
    }
}

/// What the cache held for a stream: the version, the state and the stored JSON.
struct CacheHit<A> {
    version: i64,
    state: Option<A>,
    json: Option<Arc<[u8]>>,
}

/// The cached version, state and document JSON of `A` for the stream of `key`, if the
/// cache may be used, holds an entry and, for an expected-version append, the entry is at
/// that version. Recorded in `ctx.cache_hits`. An entry that no longer deserializes is
/// dropped.
fn from_cache<A: Aggregate>(
    ctx: &mut PlanContext<'_, '_>,
    key: CacheKey,
    kind: AppendKind,
) -> Option<CacheHit<A>> {
    if !ctx.use_cache {
        return None;
    }
    let cache = ctx.store.aggregate_cache();
    let entry = cache.get(&key)?;
    if let AppendKind::Expected(v) = kind {
        if v != entry.version {
            return None;
        }
    }
    let state = match &entry.json {
        Some(json) => match serde_json::from_slice::<A>(json) {
            Ok(doc) => Some(doc),
            Err(_) => {
                cache.forget([&key]);
                return None;
            }
        },
        None => None,
    };
    ctx.cache_hits.push(key);
    Some(CacheHit {
        version: entry.version,
        state,
        json: entry.json,
    })
}

impl<A: Aggregate + PgDocument> InlineProjection for InlineAggregate<A> {
    fn plan<'a>(&'a self, ctx: &'a mut PlanContext<'_, '_>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.plan_inner(ctx))
    }
}
