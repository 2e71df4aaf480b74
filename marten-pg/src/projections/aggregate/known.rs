//! The states the inline aggregate projection builds on: those `fetch_for_writing`
//! already holds, those the store's aggregate cache holds, and the rest read under lock
//! (the stream rows locked until the save commits). Uses the plan context, the cache,
//! the connection's pipeline, document storage and the error map.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Object;
use marten_core::{Aggregate, Document, Error, Result};
use tokio_postgres::{Row, Statement};

use super::Fetched;
use crate::connection::Pipeline;
use crate::documents::{DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, reading_documents as reading, Failed};
use crate::events::append::AppendKind;
use crate::json::JsonRef;
use crate::projections::cache::{CacheKey, CachedDocCheck};
use crate::projections::{AppendView, PlanContext};

/// The version and state of each stream known to the plan.
pub(super) type States<A> = HashMap<<A as Document>::Id, (i64, Option<A>)>;

/// What the locked read found per stream: version, document, whether archived.
type Locked<A> = HashMap<<A as Document>::Id, (i64, Option<A>, bool)>;

/// The states known without reading: a started stream is new, `fetch_for_writing`
/// holds the state at the version the append asserts, or the store's cache holds it.
/// Returns them and the streams left to read under lock. Queues a check of the cached
/// documents it used (before the projected writes, after the appends that lock the
/// streams).
pub(super) fn known_states<A: Aggregate + PgDocument>(
    ctx: &mut PlanContext<'_, '_>,
    streams: &[(A::Id, Vec<&AppendView>)],
) -> (States<A>, Vec<A::Id>) {
    let mut known: States<A> = HashMap::new();
    let mut to_load = Vec::new();
    let mut check = CachedDocCheck::<A>::new();
    for (id, list) in streams {
        let key = (TypeId::of::<A>(), list[0].stream.0.clone());
        let fetched = ctx.state.take_fetched::<A, Fetched<A>>(&key.1);
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
        ctx.out.push_op(Box::new(check));
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

/// Reads the streams `to_load` under lock (`lock` is the locking statement) into
/// `known`; a stream without a row is new (version 0, no state). Returns the archived
/// streams: nothing to project, their appends are rejected as archived.
pub(super) async fn load_rest<A: Aggregate + PgDocument>(
    ctx: &mut PlanContext<'_, '_>,
    lock: &str,
    to_load: Vec<A::Id>,
    known: &mut States<A>,
) -> Result<Vec<A::Id>> {
    let mut loaded = load::<A>(ctx, lock, &to_load).await?;
    let mut archived = Vec::new();
    for id in to_load {
        match loaded.remove(&id) {
            Some((_, _, true)) => archived.push(id),
            Some((version, state, false)) => {
                known.insert(id, (version, state));
            }
            None => {
                known.insert(id, (0, None));
            }
        }
    }
    Ok(archived)
}

/// Locks the streams until the save commits and reads their versions and documents.
/// The documents are read by a second statement of the same flight, which starts
/// after the locks are held: its snapshot sees the last committed projection (a
/// joined read in the locking statement would see the one from before the wait).
async fn load<A: Aggregate + PgDocument>(
    ctx: &mut PlanContext<'_, '_>,
    lock: &str,
    ids: &[A::Id],
) -> Result<Locked<A>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ctx.store.ensure::<A>().await?;
    let begin = !ctx.req.in_transaction();
    let lock = prepare::<A>(ctx.req.client(), lock).await?;
    let docs = prepare::<A>(ctx.req.client(), &A::storage().reads().load_many).await?;
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
        return Err(map_db_error(e, Failed::Transaction));
    }
    let (streams, docs) = (answers.take(streams), answers.take(docs));
    read_locked::<A>(streams, docs)
}

async fn prepare<A: Document>(client: &Object, sql: &str) -> Result<Statement> {
    client.prepare_cached(sql).await.map_err(reading::<A>)
}

/// Decodes the answers of the locked read: the stream rows (`id, version, is_archived`)
/// and the documents of those streams (`id, data`).
fn read_locked<A: Aggregate + PgDocument>(
    streams: std::result::Result<Vec<Row>, tokio_postgres::Error>,
    docs: std::result::Result<Vec<Row>, tokio_postgres::Error>,
) -> Result<Locked<A>> {
    let mut out = HashMap::new();
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
