//! Inline planning: what the projections of one save attempt build on and produce,
//! independent of the database. A save's pending appends as owned views
//! ([`AppendView`]); the shared state of a plan ([`Plan`]: the states `fetch_for_writing`
//! handed over, the version requirements of plain appends, the aggregate cache); the
//! planners of single-stream aggregates ([`plan_aggregate`]) and multi-stream documents
//! ([`plan_multi_stream`]). What a planner needs from the database - locked reads and
//! the list its writes are queued on - it asks of the backend through [`PlanOutput`],
//! [`AggregateReads`] and [`DocumentReads`], implemented per document type. A failed
//! apply names its event ([`apply_error`]), at the version a plain append would have
//! given it when nothing reserved one ([`name_version`]).

mod aggregate;
mod multi_stream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::cache::{AggregateCache, CacheKey, CacheUpdate};
use crate::concurrency::{VersionOf, WriteOf};
use crate::session::{Loaded, SessionState};
use crate::{AnyEvent, Document, Error, EventEnvelope, Result, StreamId};

pub use aggregate::{cache_tenant, cache_update, fold_events, plan_aggregate};
pub use multi_stream::plan_multi_stream;

/// What an append asserts about its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendKind {
    /// The stream must not exist.
    Start,
    /// No assertion; the stream is created if missing.
    Append,
    /// The stream must be at this version (the version before the append).
    Expected(i64),
}

/// A pending append as a projection sees it: owned, read-only.
#[derive(Clone)]
pub struct AppendView {
    /// Where the append sits in the session's operations.
    pub index: usize,
    /// The stream appended to.
    pub stream: StreamId,
    /// What the append asserts.
    pub kind: AppendKind,
    /// The events' ids.
    pub ids: Vec<Uuid>,
    /// The events' type names as the append stores them (an event appended under an
    /// upcaster's old name keeps that name here: its envelope's
    /// [`stored_type`](EventEnvelope::stored_type)).
    pub types: Vec<&'static str>,
    /// The events as a read of them gives them back: one appended under an upcaster's
    /// old name is the upcast event, whose type names the envelope's
    /// [`event_type`](EventEnvelope::event_type).
    pub events: Vec<Arc<dyn AnyEvent>>,
    /// The metadata the events are appended with.
    pub metadata: AppendMetadata,
    /// What the save's transaction reserved for the events (see [`Reserved`]); `None`
    /// when no projection of the save reads the events' metadata.
    pub reserved: Option<Reserved>,
}

/// What a save reserves for an append's events before its projections run, when one of
/// them reads the events' metadata: the events' global sequences (drawn from the store's
/// sequence in the save's transaction, and inserted as the events' `seq_id`), the id of
/// the save's transaction, and the version of the stream before a plain append (read
/// under lock; `None` for a start, an expected-version append or an archived stream).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Each event's global sequence, in order.
    pub sequences: Vec<i64>,
    /// The id of the save's transaction.
    pub transaction_id: u64,
    /// The start time of the save's transaction: the timestamp the events are stored
    /// with.
    pub timestamp: Option<OffsetDateTime>,
    /// The stream version before a plain append.
    pub base: Option<i64>,
}

/// The metadata of a pending append's events, as their envelopes carry it: each event's
/// correlation and causation ids and headers (one entry per event; missing entries are
/// none) and the tenant appending them.
#[derive(Clone, Debug, Default)]
pub struct AppendMetadata {
    /// The tenant appending the events (`None`: appended without one).
    pub tenant: Option<crate::TenantId>,
    /// Each event's correlation id.
    pub correlation_ids: Vec<Option<String>>,
    /// Each event's causation id.
    pub causation_ids: Vec<Option<String>>,
    /// Each event's headers (a JSON object).
    pub headers: Vec<Option<serde_json::Value>>,
}

impl AppendView {
    /// Envelopes for the events, numbered from the stream version the append asserts,
    /// or, for a plain append, from the version reserved for it (none when nothing was
    /// reserved: its version is not known before it is written).
    pub fn asserted_envelopes(&self) -> Result<Vec<EventEnvelope>> {
        let base = match self.kind {
            AppendKind::Start => Some(0),
            AppendKind::Expected(v) => Some(v),
            AppendKind::Append => self.reserved.as_ref().and_then(|r| r.base),
        };
        self.envelopes(base)
    }

    /// Envelopes for the events, numbered from `base` (the stream version before them),
    /// with their metadata. The global sequences and the transaction id are the ones
    /// [`Reserved`] for the append (0 when nothing was reserved: they are assigned by the
    /// insert), and so is the timestamp (now when nothing was reserved). A `base` so high the versions overflow is an
    /// error naming the stream.
    pub fn envelopes(&self, base: Option<i64>) -> Result<Vec<EventEnvelope>> {
        let now = OffsetDateTime::now_utc();
        let mut out = Vec::with_capacity(self.events.len());
        let described = self.ids.iter().zip(&self.types);
        for (i, (data, (id, event_type))) in self.events.iter().zip(described).enumerate() {
            let reserved = self.reserved.as_ref();
            let sequence = reserved.and_then(|r| r.sequences.get(i)).copied();
            let mut e = EventEnvelope::new(
                sequence.unwrap_or(0),
                *id,
                self.stream.clone(),
                data.clone(),
            );
            e.transaction_id = reserved.map_or(0, |r| r.transaction_id);
            e.version = match base {
                Some(b) => advance(&self.stream, b, i + 1)?,
                None => 0,
            };
            // `new` named the event's own type; a stored name that differs (an
            // upcaster's old name) shows in `stored_type`, as a read shows it.
            if *event_type != e.event_type {
                e.stored_type = std::borrow::Cow::Borrowed(event_type);
            }
            e.timestamp = reserved.and_then(|r| r.timestamp).unwrap_or(now);
            let meta = &self.metadata;
            e.correlation_id = meta.correlation_ids.get(i).cloned().flatten();
            e.causation_id = meta.causation_ids.get(i).cloned().flatten();
            e.headers = meta.headers.get(i).cloned().flatten();
            e.tenant = meta.tenant.clone();
            out.push(e);
        }
        Ok(out)
    }
}

/// The stream version after `count` events appended at version `base`. A version that
/// would overflow (a stream row or an expected version of `i64::MAX`) is
/// [`Error::CorruptData`] naming the stream, never a panic.
pub fn advance(stream: &StreamId, base: i64, count: usize) -> Result<i64> {
    i64::try_from(count)
        .ok()
        .and_then(|n| base.checked_add(n))
        .ok_or_else(|| Error::CorruptData {
            owner: "stream".to_owned(),
            id: Some(stream.to_string()),
            detail: format!("version {base} cannot advance by {count} events"),
        })
}

/// The stream version `event`, one of the events of the save's `appends` (by stream and
/// id), is appended at when the save commits: its place among the appends to its stream,
/// counted from `stored` (the stream's version before the save; `None`: no stream yet)
/// up to the first append that asserts a version (a start, an expected version). For
/// naming an event whose envelope does not know its version (0: a plain append of a save
/// that reserved none, see [`AppendView::asserted_envelopes`]). `None` when `event` is
/// none of the appends' events.
pub fn version_in_save(
    appends: &[AppendView],
    event: &EventEnvelope,
    stored: Option<i64>,
) -> Option<i64> {
    let mut running = None;
    for append in appends.iter().filter(|a| a.stream == event.stream_id) {
        let base = match append.kind {
            AppendKind::Start => 0,
            AppendKind::Expected(v) => v,
            AppendKind::Append => running.or(stored).unwrap_or(0),
        };
        if let Some(i) = append.ids.iter().position(|id| *id == event.id) {
            return advance(&append.stream, base, i + 1).ok();
        }
        running = advance(&append.stream, base, append.events.len()).ok();
    }
    None
}

/// `error`, when it is a failed apply of `event` (one of the save's `appends`) at version
/// 0 (an envelope that does not know its version: a plain append of a save that reserved
/// none), naming the version the event would have been appended at: `stored`, a read of
/// its stream's stored version awaited only then, and [`version_in_save`]. A read that
/// fails leaves the error as it is (logged): the apply's failure is what the save
/// reports.
pub async fn name_version(
    error: Error,
    appends: &[AppendView],
    event: &EventEnvelope,
    stored: impl Future<Output = Result<Option<i64>>>,
) -> Error {
    let Error::Apply {
        projection,
        event_type,
        stream,
        version: 0,
        message,
    } = error
    else {
        return error;
    };
    let version = match stored.await {
        Ok(stored) => version_in_save(appends, event, stored).unwrap_or(0),
        Err(e) => {
            tracing::warn!(
                stream = %stream,
                error = %crate::WithSources(&e),
                "cannot read the stream's version to name a failed event"
            );
            0
        }
    };
    Error::Apply {
        projection,
        event_type,
        stream,
        version,
        message,
    }
}

/// The error of a failed apply, naming the projection, the event and its stream.
pub fn apply_error(projection: &'static str, event: &EventEnvelope, message: String) -> Error {
    Error::Apply {
        projection,
        event_type: event.event_type.clone().into_owned(),
        stream: event.stream_id.clone(),
        version: event.version,
        message,
    }
}

/// What `fetch_for_writing` loaded, kept in the session for the save's inline projection.
pub struct Fetched<A> {
    /// The stream version read.
    pub version: i64,
    /// The aggregate's state at that version.
    pub state: Option<A>,
}

/// What the projections of one save attempt share, besides the backend.
pub struct Plan<'a, Q> {
    /// The save's pending appends.
    pub appends: &'a [AppendView],
    /// The session's state: the states `fetch_for_writing` handed over.
    pub state: &'a mut SessionState<Q>,
    /// Plain appends that must assert a version for this attempt: (index, version).
    pub requirements: Vec<(usize, i64)>,
    /// Whether projections may plan from the aggregate cache (the first attempt of a
    /// save only: a retry reads under lock).
    pub use_cache: bool,
    /// The session's tenant: part of the cache keys of conjoined aggregates
    /// ([`cache_tenant`]).
    pub tenant: Option<crate::TenantId>,
    /// The store's aggregate cache.
    pub cache: &'a AggregateCache,
    /// The cache entries this attempt planned from.
    pub cache_hits: Vec<CacheKey>,
    /// What the cache learns if the save commits.
    pub cache_updates: Vec<CacheUpdate>,
}

/// Where a planner queues the writes it derives for documents of type `D`.
pub trait PlanOutput<D: Document> {
    /// Serializes a document as the backend stores it.
    fn serialize(doc: &D) -> Result<Vec<u8>>;
    /// Queues a derived write of `json` for `id`, asserting `expected` when given.
    fn write(&mut self, kind: WriteOf<D>, id: D::Id, json: Vec<u8>, expected: Option<VersionOf<D>>);
    /// Queues a delete by id.
    fn delete(&mut self, id: D::Id);
}

/// Documents as the aggregate cache holds them: each id with its stored JSON (`None`:
/// not stored).
pub type CachedDocs<D> = Vec<(<D as Document>::Id, Option<Arc<[u8]>>)>;

/// A stream as the locked read found it: its version, its aggregate document, whether
/// it is archived.
pub struct LockedStream<A> {
    /// The stream's version.
    pub version: i64,
    /// The stored aggregate document, if any.
    pub state: Option<A>,
    /// Whether the stream is archived.
    pub archived: bool,
}

/// The reads the aggregate planner needs for aggregate `A`, inside the save's
/// transaction.
pub trait AggregateReads<A: Document>: PlanOutput<A> {
    /// Locks the rows of the existing streams among `ids` until the save ends and reads
    /// them with their aggregate documents (a stream without a row is missing).
    fn lock_streams(
        &mut self,
        ids: &[A::Id],
    ) -> impl Future<Output = Result<HashMap<A::Id, LockedStream<A>>>> + Send;
    /// Queues a check, sent before the projected writes, that each document is still
    /// stored as the cache holds it (`None`: not stored); a failed check plans again.
    fn check_cached(&mut self, cached: CachedDocs<A>);
}

/// The reads the multi-stream planner needs for documents of type `P`, inside the
/// save's transaction.
pub trait DocumentReads<P: Document>: PlanOutput<P> {
    /// Locks and reads the documents among `ids` that exist, until the save ends.
    fn lock_documents(
        &mut self,
        ids: &[P::Id],
    ) -> impl Future<Output = Result<Vec<Loaded<P>>>> + Send;
    /// The stored version of `stream` (`None`: no such stream), read, without a lock,
    /// only to name the version of a failed event that nothing reserved a version for
    /// (see [`version_in_save`]).
    fn stream_version(
        &mut self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;
}

#[cfg(test)]
mod tests;
