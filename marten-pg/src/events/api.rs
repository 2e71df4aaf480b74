//! The event API of a session: `session.events()`.

use std::any::TypeId;
use std::sync::Arc;

use marten_core::Aggregate;
use marten_core::{
    AnyEvent, Error, Event, EventEnvelope, Rejection, RejectionKind, Result, StreamId,
    StreamIdentity, StreamState,
};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::append::{AppendKind, StreamAppend};
use super::read;
use super::registry::EventRegistry;
use super::stream_id::StreamKey;
use super::table::EventSql;
use crate::connection::{timed_out, within, Request};
use crate::documents::PgDocument;
use crate::error_map::{map_db_error, Failed};
use crate::json::RawJson;
use crate::projections::{aggregate_stream, Fetched, Lifecycle};
use crate::schema::{AutoCreate, MigrateFn};
use crate::session::state::serialize;
use crate::session::{Session, Tracking};
use crate::unit_of_work::{join_in_order, StatementFuture};

/// An event about to be appended, with optional metadata of its own. Any `#[derive(Event)]`
/// type converts into one; build one explicitly to mix event types in one append
/// (`[PendingEvent::new(a), PendingEvent::new(b)]`) or to set metadata per event.
pub struct PendingEvent {
    pub(crate) event_type: &'static str,
    pub(crate) data: Arc<dyn AnyEvent>,
    serialize: fn(&dyn AnyEvent) -> serde_json::Result<Vec<u8>>,
    register: fn(&mut EventRegistry) -> Result<()>,
    tags: Vec<marten_core::EventTag>,
    id: Option<Uuid>,
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

fn serialize_as<E: Event>(any: &dyn AnyEvent) -> serde_json::Result<Vec<u8>> {
    match any.as_any().downcast_ref::<E>() {
        Some(e) => serde_json::to_vec(e),
        None => Err(<serde_json::Error as serde::ser::Error>::custom(
            "event type mismatch",
        )),
    }
}

impl PendingEvent {
    /// Wraps an event.
    pub fn new<E: Event>(event: E) -> Self {
        let tags = event.tags();
        PendingEvent {
            tags,
            event_type: E::EVENT_TYPE,
            data: Arc::new(event),
            serialize: serialize_as::<E>,
            register: EventRegistry::register::<E>,
            id: None,
            headers: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Sets the event's id (default: a new version-7 uuid).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Adds a header to this event (on top of the session's headers).
    pub fn with_header(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// Sets this event's correlation id (instead of the session's).
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets this event's causation id (instead of the session's).
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }
}

impl<E: Event> From<E> for PendingEvent {
    fn from(event: E) -> Self {
        PendingEvent::new(event)
    }
}

/// Which events of a stream to fetch. The default is all of them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamRange {
    /// The lowest version (inclusive).
    pub from_version: i64,
    /// The highest version (inclusive).
    pub to_version: i64,
    /// Only events stored at or after this time.
    pub from_time: Option<OffsetDateTime>,
    /// Only events stored at or before this time.
    pub to_time: Option<OffsetDateTime>,
    /// Whether events of an archived stream are returned.
    pub include_archived: bool,
}

impl Default for StreamRange {
    fn default() -> Self {
        StreamRange {
            from_version: 0,
            to_version: i64::MAX,
            from_time: None,
            to_time: None,
            include_archived: false,
        }
    }
}

impl StreamRange {
    /// All events.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events up to and including `version`.
    pub fn up_to_version(mut self, version: i64) -> Self {
        self.to_version = version;
        self
    }

    /// Events from `version` on.
    pub fn from_version(mut self, version: i64) -> Self {
        self.from_version = version;
        self
    }

    /// Events stored at or before `time`.
    pub fn up_to_time(mut self, time: OffsetDateTime) -> Self {
        self.to_time = Some(time);
        self
    }

    /// Events stored at or after `time`.
    pub fn from_time(mut self, time: OffsetDateTime) -> Self {
        self.from_time = Some(time);
        self
    }

    /// Also events of an archived stream.
    pub fn including_archived(mut self) -> Self {
        self.include_archived = true;
        self
    }
}

/// A position in the gap-safe global order: the compound key (writing transaction id,
/// sequence). Start from [`Position::START`] and continue from [`EventPage::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The id of the transaction that wrote the last event read.
    pub transaction_id: u64,
    /// The global sequence of the last event read.
    pub sequence: i64,
}

impl Position {
    /// Before every event.
    pub const START: Position = Position {
        transaction_id: 0,
        sequence: 0,
    };
}

/// A page of [`Events::read_all`].
#[derive(Debug)]
#[non_exhaustive]
pub struct EventPage {
    /// The events, in (transaction id, sequence) order.
    pub events: Vec<EventEnvelope>,
    /// Where the next read continues.
    pub next: Position,
    /// How many rows were read (events of unknown types skipped by the store's policy
    /// count here but are not in `events`).
    pub rows: usize,
}

/// Marker types naming the event store's tables for each stream identity in the store's
/// set of created objects.
struct UuidEventTables;
struct StringEventTables;

/// The `TypeId` and migration of the event tables for a stream identity.
pub(crate) fn events_schema(identity: StreamIdentity) -> (TypeId, MigrateFn) {
    match identity {
        StreamIdentity::Uuid => (TypeId::of::<UuidEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(crate::schema::migrate_events(c, s, m, StreamIdentity::Uuid))
        }),
        StreamIdentity::String => (TypeId::of::<StringEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(crate::schema::migrate_events(
                c,
                s,
                m,
                StreamIdentity::String,
            ))
        }),
    }
}

/// Why a string stream id longer than [`marten_core::MAX_ID_BYTES`] is refused.
const STREAM_ID_TOO_LONG: &str =
    "a string stream id must not be longer than 2048 bytes (PostgreSQL cannot index longer keys)";

/// The event operations of a session, borrowed from it: `session.events()`.
pub struct Events<'s, K: Tracking> {
    pub(crate) session: &'s mut Session<K>,
}

impl<K: Tracking> Events<'_, K> {
    fn key(&self, stream: StreamId) -> Result<StreamKey> {
        let identity = self.session.store.stream_identity();
        match (&stream, identity) {
            (StreamId::Uuid(_), StreamIdentity::Uuid) => Ok(StreamKey(stream)),
            (StreamId::String(s), StreamIdentity::String) if s.is_empty() => {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: "a string stream id must not be empty",
                })
            }
            (StreamId::String(s), StreamIdentity::String) if s.contains('\0') => {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: "a string stream id must not contain NUL characters",
                })
            }
            (StreamId::String(s), StreamIdentity::String)
                if s.len() > marten_core::MAX_ID_BYTES =>
            {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: STREAM_ID_TOO_LONG,
                })
            }
            (StreamId::String(_), StreamIdentity::String) => Ok(StreamKey(stream)),
            (StreamId::Uuid(_), StreamIdentity::String) => Err(Error::InvalidStreamId {
                stream,
                reason: "this store uses string stream ids",
            }),
            (StreamId::String(_), StreamIdentity::Uuid) => Err(Error::InvalidStreamId {
                stream,
                reason: "this store uses uuid stream ids",
            }),
        }
    }

    /// Builds the append, serializing every event; `None` for an empty plain append.
    fn build<I>(
        &mut self,
        kind: AppendKind,
        stream: StreamKey,
        events: I,
    ) -> Result<Option<StreamAppend>>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let store = self.session.store.clone();
        let meta = &self.session.event_meta;
        let events = events.into_iter();
        let mut append = StreamAppend::new(
            kind,
            store.stream_identity(),
            stream.0,
            events.size_hint().0,
        );
        for pending in events {
            let pending: PendingEvent = pending.into();
            store.register_event(pending.register, pending.event_type)?;
            let json = (pending.serialize)(pending.data.as_ref()).map_err(|source| {
                Error::SerializeEvent {
                    event_type: pending.event_type,
                    source,
                }
            })?;
            let event_type = pending.event_type;
            let owner = || {
                (
                    format!("event {event_type}"),
                    Some(append.stream.0.to_string()),
                )
            };
            crate::validate::check_json(&json, owner)?;
            let headers = match (&meta.headers, pending.headers) {
                (None, None) => None,
                (Some(h), None) => Some(h.clone()),
                (None, Some(h)) => Some(h),
                (Some(session), Some(own)) => {
                    let mut all = session.clone();
                    all.extend(own);
                    Some(all)
                }
            };
            let headers = match headers {
                Some(h) => {
                    let json = serde_json::to_vec(&h).map_err(|source| Error::SerializeEvent {
                        event_type: pending.event_type,
                        source,
                    })?;
                    crate::validate::check_json_field(&json, "header ", owner)?;
                    Some(RawJson(json))
                }
                None => None,
            };
            let correlation_id = pending
                .correlation_id
                .or_else(|| meta.correlation_id.clone());
            let causation_id = pending.causation_id.or_else(|| meta.causation_id.clone());
            for (field, text) in [
                ("correlation id", &correlation_id),
                ("causation id", &causation_id),
            ] {
                if let Some(text) = text {
                    crate::validate::check_text(text, || field.to_owned(), owner)?;
                }
            }
            for tag in &pending.tags {
                crate::validate::check_tag(&tag.tag_type, &tag.value)?;
            }
            let ordinal = append.ids.len() as i64 + 1;
            for tag in pending.tags {
                append.tag_ords.push(ordinal);
                append.tag_types.push(tag.tag_type);
                append.tag_values.push(tag.value);
            }
            append.ids.push(pending.id.unwrap_or_else(Uuid::now_v7));
            append.types.push(pending.event_type);
            append.data.push(RawJson(json));
            append.headers.push(headers);
            append.correlation_ids.push(correlation_id);
            append.causation_ids.push(causation_id);
            append.events.push(pending.data);
        }
        append.count = append.ids.len() as i64;
        if append.count == 0 && kind == AppendKind::Append {
            return Ok(None);
        }
        Ok(Some(append))
    }

    fn queue(&mut self, append: Option<StreamAppend>) {
        if let Some(a) = append {
            self.session.uow.push_op(Box::new(a));
        }
    }

    /// Checks the stream id, builds the append and queues it.
    fn enqueue<I>(
        &mut self,
        kind: AppendKind,
        stream: StreamId,
        events: I,
        aggregate_type: Option<&str>,
    ) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let key = self.key(stream)?;
        if let Some(t) = aggregate_type {
            crate::validate::check_text(
                t,
                || "aggregate type".to_owned(),
                || ("stream".to_owned(), Some(key.0.to_string())),
            )?;
        }
        let mut append = self.build(kind, key, events)?;
        if let (Some(a), Some(t)) = (&mut append, aggregate_type) {
            a.stream_type = Some(t.to_owned());
        }
        self.queue(append);
        Ok(())
    }

    /// Starts a stream; `save_changes` rejects it with
    /// [`RejectionKind::StreamExists`] if the stream exists. The events get versions
    /// 1..=n; a stream can be started with no events (version 0).
    pub fn start_stream<I>(&mut self, stream: impl Into<StreamId>, events: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        self.enqueue(AppendKind::Start, stream.into(), events, None)
    }

    /// Like [`start_stream`](Self::start_stream), recording the aggregate type name the
    /// stream belongs to.
    pub fn start_stream_of<I>(
        &mut self,
        aggregate_type: &str,
        stream: impl Into<StreamId>,
        events: I,
    ) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        self.enqueue(
            AppendKind::Start,
            stream.into(),
            events,
            Some(aggregate_type),
        )
    }

    /// Appends events, creating the stream if it does not exist. Appending no events does
    /// nothing.
    pub fn append<I>(&mut self, stream: impl Into<StreamId>, events: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        self.enqueue(AppendKind::Append, stream.into(), events, None)
    }

    /// Appends events if the stream is at `expected_version` when saved, where
    /// `expected_version` is the version the caller saw **before** this append (0: the
    /// stream must not exist yet). Otherwise `save_changes` rejects it with
    /// [`RejectionKind::UnexpectedStreamVersion`] (or `StreamExists` for 0).
    pub fn append_expected<I>(
        &mut self,
        stream: impl Into<StreamId>,
        expected_version: i64,
        events: I,
    ) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let kind = if expected_version == 0 {
            AppendKind::Start
        } else {
            AppendKind::Expected(expected_version)
        };
        self.enqueue(kind, stream.into(), events, None)
    }

    /// Reads the stream's version now and appends with that version expected: the save
    /// fails if the stream moved in between. A missing stream is
    /// [`Error::StreamNotFound`].
    pub async fn append_optimistic<I>(
        &mut self,
        stream: impl Into<StreamId>,
        events: I,
    ) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let key = self.key(stream.into())?;
        let state = self.stream_version(&key).await?;
        let version = match state {
            None => return Err(Error::StreamNotFound { stream: key.0 }),
            Some((_, true)) => return Err(archived(&key)),
            Some((v, false)) => v,
        };
        let append = self.build(AppendKind::Expected(version), key, events)?;
        self.queue(append);
        Ok(())
    }

    async fn stream_version(&mut self, key: &StreamKey) -> Result<Option<(i64, bool)>> {
        let s = &mut *self.session;
        read::ensure(&s.store).await?;
        let sql = EventSql::get(s.store.stream_identity());
        s.conn
            .run(&s.store, async |client| {
                let stmt = client
                    .prepare_cached(&sql.stream_version)
                    .await
                    .map_err(reading)?;
                match client.query_opt(&stmt, &[key]).await.map_err(reading)? {
                    Some(row) => Ok(Some((
                        row.try_get(0).map_err(reading)?,
                        row.try_get(1).map_err(reading)?,
                    ))),
                    None => Ok(None),
                }
            })
            .await
    }

    /// Locks the stream's row now (waiting up to the store's exclusive lock timeout, then
    /// failing with [`Error::StreamLocked`]) and appends with its current version
    /// expected. The session holds the lock in an open transaction until `save_changes`
    /// commits, the save fails, or the session is dropped. A missing stream is
    /// [`Error::StreamNotFound`].
    pub async fn append_exclusive<I>(
        &mut self,
        stream: impl Into<StreamId>,
        events: I,
    ) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let key = self.key(stream.into())?;
        let version = self.lock_stream(&key).await?;
        let append = self.build(AppendKind::Expected(version), key, events)?;
        self.queue(append);
        Ok(())
    }

    async fn lock_stream(&mut self, key: &StreamKey) -> Result<i64> {
        let s = &mut *self.session;
        let timeout = s.store.event_config().exclusive_lock_timeout;
        read::ensure(&s.store).await?;
        let sql = EventSql::get(s.store.stream_identity());
        let mut req = s.conn.request(&s.store).await?;
        let answered = within(
            &s.store,
            lock_stream_on(&mut req, &sql.lock_stream, key, timeout),
        );
        let Some(outcome) = answered.await else {
            req.mark_lost();
            return Err(timed_out(&s.store));
        };
        req.settle(&outcome);
        outcome
    }

    /// Archives a stream (queued): its events leave normal reads and appends to it are
    /// rejected; [`StreamRange::including_archived`] still reads them.
    pub fn archive_stream(&mut self, stream: impl Into<StreamId>) -> Result<()> {
        let key = self.key(stream.into())?;
        let identity = self.session.store.stream_identity();
        self.session
            .uow
            .push_op(Box::new(super::append::StreamCommand::archive(
                identity, key,
            )));
        Ok(())
    }

    /// Deletes a stream and all its events (queued).
    pub fn delete_stream(&mut self, stream: impl Into<StreamId>) -> Result<()> {
        let key = self.key(stream.into())?;
        let identity = self.session.store.stream_identity();
        self.session
            .uow
            .push_op(Box::new(super::append::StreamCommand::delete(
                identity, key,
            )));
        Ok(())
    }

    /// All events of a stream, in version order.
    pub async fn fetch_stream(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Vec<EventEnvelope>> {
        self.fetch_stream_with(stream, StreamRange::all()).await
    }

    /// The events of a stream within `range`, in version order.
    pub async fn fetch_stream_with(
        &mut self,
        stream: impl Into<StreamId>,
        range: StreamRange,
    ) -> Result<Vec<EventEnvelope>> {
        let key = self.key(stream.into())?;
        let s = &mut *self.session;
        let store = &s.store;
        s.conn
            .run(store, async |c| {
                read::fetch_stream(store, c, &key, &range).await
            })
            .await
    }

    /// The stream's version, timestamps and archived flag, or `None` if it does not exist.
    pub async fn fetch_stream_state(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<StreamState>> {
        let key = self.key(stream.into())?;
        let s = &mut *self.session;
        let store = &s.store;
        s.conn
            .run(store, async |c| read::stream_state(store, c, &key).await)
            .await
    }

    /// Up to `limit` events after `after` in the gap-safe global order: only events whose
    /// writing transaction id is below the oldest transaction still open, ordered by
    /// (transaction id, sequence). An open transaction that appended holds the reader at
    /// its gap until it commits or rolls back; nothing is ever skipped.
    pub async fn read_all(&mut self, after: Position, limit: usize) -> Result<EventPage> {
        let s = &mut *self.session;
        let store = &s.store;
        s.conn
            .run(store, async |c| {
                read::read_all(store, c, after, limit, false, false).await
            })
            .await
    }

    /// How long the oldest open writing transaction in the cluster has been open: it
    /// holds [`read_all`](Self::read_all) (and the daemon) back. `None` when there is none.
    pub async fn oldest_open_transaction(&mut self) -> Result<Option<std::time::Duration>> {
        let s = &mut *self.session;
        s.conn
            .run(&s.store, async |c| read::oldest_open_transaction(c).await)
            .await
    }
}

impl<'s, K: Tracking> Events<'s, K> {
    /// Folds a stream into aggregate `A` (live). For an inline aggregate it starts from
    /// the stored document (its snapshot) and applies only the events after it. `None`
    /// when the stream does not exist or nothing created the aggregate.
    pub async fn aggregate_stream<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<A>> {
        self.aggregate_stream_with::<A>(stream, StreamRange::all())
            .await
    }

    /// Folds the events of a stream within `range` (up to a version or a time) into `A`.
    pub async fn aggregate_stream_with<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
        range: StreamRange,
    ) -> Result<Option<A>> {
        let key = self.key(stream.into())?;
        let s = &mut *self.session;
        let store = &s.store;
        let (state, _) = s
            .conn
            .run(store, async |c| {
                aggregate_stream::<A>(store, c, &key, &range).await
            })
            .await?;
        Ok(state)
    }

    /// The current state of aggregate `A`: the inline document brought up to date with
    /// any events after it, or a live fold.
    pub async fn fetch_latest<A: Aggregate + PgDocument>(
        &mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Option<A>> {
        self.aggregate_stream::<A>(stream).await
    }

    /// Reads aggregate `A` and its stream's version to decide on and append to: appends
    /// through the returned [`Writing`] assert that version at save, so the save fails
    /// (with [`RejectionKind::UnexpectedStreamVersion`]) if the stream moved meanwhile. A
    /// stream that does not exist has version 0 and no state; appending starts it.
    pub async fn fetch_for_writing<A: Aggregate + PgDocument>(
        self,
        stream: impl Into<StreamId>,
    ) -> Result<Writing<'s, K, A>> {
        let this = self;
        let key = this.key(stream.into())?;
        let s = &mut *this.session;
        let store = &s.store;
        let (state, version) = s
            .conn
            .run(store, async |c| {
                aggregate_stream::<A>(store, c, &key, &StreamRange::all()).await
            })
            .await?;
        Ok(Writing {
            events: this,
            stream: key,
            state,
            version,
            appended: false,
        })
    }
}

/// An aggregate read for writing: its state and the stream version it was read at.
/// Appends through it assert that version at save.
pub struct Writing<'s, K: Tracking, A> {
    events: Events<'s, K>,
    stream: StreamKey,
    state: Option<A>,
    version: i64,
    appended: bool,
}

impl<K: Tracking, A: Aggregate + PgDocument> Writing<'_, K, A> {
    /// The aggregate's state (`None`: the stream does not exist or nothing created it).
    pub fn state(&self) -> Option<&A> {
        self.state.as_ref()
    }

    /// The stream's version when read (plus what was appended through this handle).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream.0
    }

    /// Queues events with the read version expected; the save fails if the stream moved.
    pub fn append<I>(&mut self, events: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let kind = if self.version == 0 {
            AppendKind::Start
        } else {
            AppendKind::Expected(self.version)
        };
        let Some(append) = self.events.build(kind, self.stream.clone(), events)? else {
            return Ok(());
        };
        let version = crate::projections::advance(&self.stream.0, self.version, append.ids.len())?;
        if self
            .events
            .session
            .store
            .projections()
            .lifecycle(TypeId::of::<A>())
            == Some(Lifecycle::Inline)
            && !self.appended
        {
            // The save's inline projection starts from this state instead of reading it
            // again (a copy: the handle keeps its own).
            let state =
                match &self.state {
                    Some(a) => Some(serde_json::from_slice::<A>(&serialize(a)?).map_err(
                        |source| Error::Deserialize {
                            document_type: A::DOCUMENT_TYPE,
                            id: a.id().to_string(),
                            source,
                        },
                    )?),
                    None => None,
                };
            self.events.session.state.put_fetched::<A, _>(
                self.stream.0.clone(),
                Fetched {
                    version: self.version,
                    state,
                },
            );
        }
        self.events.queue(Some(append));
        self.version = version;
        self.appended = true;
        Ok(())
    }
}

fn archived(key: &StreamKey) -> Error {
    Error::Rejected(vec![Rejection::new(
        "stream",
        key.0.key(),
        RejectionKind::StreamArchived,
    )])
}

fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("stream"))
}

/// Locks a stream's row in the connection's transaction (opening one if none is open),
/// waiting at most `timeout`. A failure undoes only this attempt: locks taken earlier in
/// the transaction stay.
async fn lock_stream_on(
    req: &mut Request<'_>,
    lock_sql: &str,
    key: &StreamKey,
    timeout: std::time::Duration,
) -> Result<i64> {
    let client = req.client();
    let lock = client.prepare_cached(lock_sql).await.map_err(reading)?;
    let set_timeout = client
        .prepare_cached("SELECT set_config('lock_timeout', $1, true)")
        .await
        .map_err(reading)?;
    let began = !req.in_transaction();
    if began {
        // BEGIN is about to be written.
        req.set_in_transaction(true);
    }
    // PostgreSQL takes at most i32::MAX ms (about 24.8 days): a longer timeout
    // (`Duration::MAX`) waits that long.
    let timeout_text = format!("{}ms", timeout.as_millis().clamp(1, i32::MAX as u128));
    let c: &tokio_postgres::Client = req.client();
    let timeout_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&timeout_text];
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [key];
    let mut flight: Vec<StatementFuture<'_>> = Vec::new();
    if began {
        flight.push(Box::pin(async move {
            c.batch_execute("BEGIN").await.map(|()| Vec::new())
        }));
    }
    flight.push(Box::pin(async move {
        c.batch_execute("SAVEPOINT mt_exclusive")
            .await
            .map(|()| Vec::new())
    }));
    flight.push(Box::pin(c.query(&set_timeout, &timeout_params)));
    flight.push(Box::pin(c.query(&lock, &lock_params)));
    flight.push(Box::pin(async move {
        c.batch_execute("RELEASE SAVEPOINT mt_exclusive")
            .await
            .map(|()| Vec::new())
    }));
    let results = join_in_order(flight).await;
    let mut results = results.into_iter().skip(usize::from(began));
    let savepoint = results.next();
    let _timeout = results.next();
    let locked = results.next();
    let outcome = match (savepoint, locked) {
        (Some(Err(e)), _) => Err(map_db_error(e, Failed::Transaction)),
        (_, Some(Ok(rows))) => match rows.first() {
            Some(row) => match (row.try_get::<_, i64>(0), row.try_get::<_, bool>(1)) {
                (Ok(_), Ok(true)) => Err(archived(key)),
                (Ok(version), Ok(false)) => Ok(version),
                (Err(e), _) | (_, Err(e)) => Err(reading(e)),
            },
            None => Err(Error::StreamNotFound {
                stream: key.0.clone(),
            }),
        },
        (_, Some(Err(e))) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Err(Error::StreamLocked {
                stream: key.0.clone(),
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        (_, Some(Err(e))) => Err(map_db_error(e, Failed::Reading("stream"))),
        (_, None) => Err(Error::StreamNotFound {
            stream: key.0.clone(),
        }),
    };
    if outcome.is_err() {
        if began {
            req.rollback().await;
        } else if let Err(e) = req
            .client()
            .batch_execute("ROLLBACK TO SAVEPOINT mt_exclusive")
            .await
        {
            return Err(map_db_error(e, Failed::Transaction));
        }
    }
    outcome
}
