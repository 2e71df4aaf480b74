//! Reading events from the database: a stream, the global gap-safe order, stream state,
//! and the decoding of event rows. Uses the event SQL (`table`) and the store's registry.

use std::borrow::Cow;
use std::time::Duration;

use crate::connection::{Db, Stmt};
use marten_core::tenant::DEFAULT_TENANT;
use marten_core::{Error, EventEnvelope, Result, StreamState, TenantId};
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::range::{EventPage, Position, StreamRange, Unreadable};
use super::registry::{in_stream, UNREAD_SEQUENCE};
use super::stream_id::{StreamIdColumn, StreamKey};
use super::{EventCatalog, EventTenant};
use crate::error_map::{map_db_error, Failed};
use crate::json::JsonRef;
use crate::tables::event_order::OLDEST_OPEN_TRANSACTION;
use crate::tables::events::{EventSql, EVENTS_TABLE};
use crate::xid8::Xid8;

/// The column of an event row's stream version: of the full columns
/// (`tables::events::EVENT_COLUMNS`), and of a lean fold's (`LEAN_COLUMNS`).
const VERSION: usize = 3;
const LEAN_VERSION: usize = 0;
/// The column of an event row's stream of the full columns.
const STREAM: usize = 2;

fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("event"))
}

/// Makes sure the event tables exist (per the schema mode).
pub(crate) async fn ensure(store: &EventCatalog) -> Result<()> {
    let (type_id, migrate) = store.tables();
    store.ensure_erased(type_id, migrate).await
}

/// Makes sure the event tables exist and prepares (cached) the statement `pick` chooses.
async fn prepare(
    store: &EventCatalog,
    client: Db<'_>,
    pick: fn(&EventSql) -> &String,
) -> Result<Stmt> {
    ensure(store).await?;
    client.statement(pick(store.sql())).await.map_err(reading)
}

/// Decodes one event row; `None` when its type is unknown and the store skips those.
fn envelope(store: &EventCatalog, row: &Row) -> Result<Option<EventEnvelope>> {
    envelope_with(store, row, false)
}

/// Decodes one event row; with `skip_unknown`, an event of an unregistered type is left
/// out whatever the store's policy (the daemon: its projections cannot handle it). Every
/// read path comes through here, so aliases and upcasters apply to all of them.
fn envelope_with(
    store: &EventCatalog,
    row: &Row,
    skip_unknown: bool,
) -> Result<Option<EventEnvelope>> {
    let sequence: i64 = row.try_get(0).map_err(reading)?;
    let event_type: String = row.try_get(4).map_err(reading)?;
    let json: JsonRef<'_> = row.try_get(5).map_err(reading)?;
    if skip_unknown && !store.with_registry(|r| r.knows(&event_type)) {
        return Ok(None);
    }
    let stream: StreamIdColumn = row.try_get(STREAM).map_err(reading)?;
    let decoded = store.with_registry(|r| r.decode(&event_type, sequence, json.0));
    let Some(data) = decoded.map_err(|e| in_stream(e, &stream.0))? else {
        return Ok(None);
    };
    let headers: Option<JsonRef<'_>> = row.try_get(9).map_err(reading)?;
    let headers = match headers {
        Some(h) => Some(
            serde_json::from_slice(h.0).map_err(|source| Error::DeserializeEvent {
                event_type: event_type.clone(),
                sequence,
                stream: Some(stream.0.clone()),
                source,
            })?,
        ),
        None => None,
    };
    let Xid8(transaction_id) = row.try_get(10).map_err(reading)?;
    let mut env = EventEnvelope::new(sequence, row.try_get(1).map_err(reading)?, stream.0, data);
    env.version = row.try_get(VERSION).map_err(reading)?;
    // `event_type` stays the decoded type's current name (set by `new`); an alias or an
    // upcaster's old name shows in `stored_type`.
    if env.stored_type != event_type {
        env.stored_type = Cow::Owned(event_type);
    }
    env.timestamp = row.try_get::<_, OffsetDateTime>(6).map_err(reading)?;
    env.correlation_id = row.try_get(7).map_err(reading)?;
    env.causation_id = row.try_get(8).map_err(reading)?;
    env.headers = headers;
    env.transaction_id = transaction_id;
    env.archived = row.try_get(11).map_err(reading)?;
    env.tenant = tenant_of(row.try_get(12).map_err(reading)?, sequence)?;
    Ok(Some(env))
}

/// Decodes one row of [`EventSql::fetch_stream_lean`] of `stream`: the event with its
/// version and type, and no other metadata (what a fold of a type whose methods take no
/// metadata uses; its sequence is [`UNREAD_SEQUENCE`]); `None` when its type is unknown
/// and the store skips those. A decoding error names the event once
/// [`with_sequence`] read its sequence.
fn lean_envelope(
    store: &EventCatalog,
    stream: &StreamKey,
    row: &Row,
) -> Result<Option<EventEnvelope>> {
    let version = row.try_get(LEAN_VERSION).map_err(reading)?;
    let event_type: &str = row.try_get(1).map_err(reading)?;
    let json: JsonRef<'_> = row.try_get(2).map_err(reading)?;
    lean_decoded(store, UNREAD_SEQUENCE, version, event_type, json, || {
        Ok(stream.0.clone())
    })
}

/// `err`, from decoding `row` of a lean read of `stream`, with the sequence of the event
/// it names read now (the lean read does not read sequences). Any other error, or a
/// sequence that cannot be read, leaves `err` as it is.
async fn with_sequence(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    row: &Row,
    mut err: Error,
) -> Error {
    let (Error::DeserializeEvent { sequence, .. }
    | Error::Upcast { sequence, .. }
    | Error::UnknownEventType { sequence, .. }) = &mut err
    else {
        return err;
    };
    let Ok(version) = row.try_get::<_, i64>(0) else {
        return err;
    };
    if let Ok(Some(found)) = sequence_at(store, client, tenant, stream, version).await {
        *sequence = found;
    }
    err
}

/// The global sequence of `stream`'s event at `version` (of `tenant`), if there is one.
pub(crate) async fn sequence_at(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    version: i64,
) -> Result<Option<i64>> {
    let stmt = prepare(store, client, |sql| &sql.sequence_at).await?;
    let params = tenant.scoped(vec![stream, &version]);
    let rows = client.query(&stmt, &params).await.map_err(reading)?;
    match rows.first() {
        Some(row) => row.try_get::<_, i64>(0).map(Some).map_err(reading),
        None => Ok(None),
    }
}

/// Decodes one row of [`EventSql::read_all_lean`]: as [`lean_envelope`], with the
/// event's stream and transaction id; `skip_unknown` as [`envelope_with`]'s.
fn lean_page_envelope(
    store: &EventCatalog,
    row: &Row,
    skip_unknown: bool,
) -> Result<Option<EventEnvelope>> {
    let sequence: i64 = row.try_get(0).map_err(reading)?;
    let event_type: &str = row.try_get(3).map_err(reading)?;
    if skip_unknown && !store.with_registry(|r| r.knows(event_type)) {
        return Ok(None);
    }
    let json: JsonRef<'_> = row.try_get(4).map_err(reading)?;
    let version = row.try_get(2).map_err(reading)?;
    let stream = || {
        let stream: StreamIdColumn = row.try_get(1).map_err(reading)?;
        Ok(stream.0)
    };
    let Some(mut env) = lean_decoded(store, sequence, version, event_type, json, stream)? else {
        return Ok(None);
    };
    let Xid8(transaction_id) = row.try_get(5).map_err(reading)?;
    env.transaction_id = transaction_id;
    Ok(Some(env))
}

/// The envelope of a lean read's row: the decoded event with its sequence, version,
/// type and stream, defaults for the rest; `None` when its type is unknown and the store
/// skips those.
fn lean_decoded(
    store: &EventCatalog,
    sequence: i64,
    version: i64,
    event_type: &str,
    json: JsonRef<'_>,
    stream: impl FnOnce() -> Result<marten_core::StreamId>,
) -> Result<Option<EventEnvelope>> {
    let stream = stream()?;
    let decoded = store.with_registry(|r| r.decode(event_type, sequence, json.0));
    let Some(data) = decoded.map_err(|e| in_stream(e, &stream))? else {
        return Ok(None);
    };
    let mut env = EventEnvelope::new(sequence, uuid::Uuid::nil(), stream, data);
    env.version = version;
    // `new` set the decoded type's name; only an alias or an upcaster's old name differs.
    if env.stored_type != event_type {
        env.stored_type = Cow::Owned(event_type.to_owned());
    }
    Ok(Some(env))
}

/// The tenant recorded on an event: `None` for [`DEFAULT_TENANT`]; a stored id that is not
/// a valid tenant id (a row edited by hand) is [`Error::CorruptData`].
fn tenant_of(stored: &str, sequence: i64) -> Result<Option<TenantId>> {
    if stored == DEFAULT_TENANT {
        return Ok(None);
    }
    TenantId::new(stored)
        .map(Some)
        .map_err(|e| Error::CorruptData {
            owner: "event".to_owned(),
            id: Some(sequence.to_string()),
            detail: format!("{EVENTS_TABLE}.tenant_id: {e}"),
        })
}

/// Decodes event rows, leaving out events of unknown types the store skips.
pub(crate) fn envelopes(store: &EventCatalog, rows: &[Row]) -> Result<Vec<EventEnvelope>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(e) = envelope(store, row)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// A stream's events as read: those decoded, and the version of the last row read,
/// decoded or left out (an unknown type the store skips). A fold has reached that
/// version of the stream, whatever it applied.
pub(crate) struct StreamEvents {
    pub(crate) events: Vec<EventEnvelope>,
    pub(crate) through: Option<i64>,
}

/// The stream version of a row of a stream read (`lean`: of [`EventSql::fetch_stream_lean`]).
fn row_version(row: &Row, lean: bool) -> Result<i64> {
    row.try_get(if lean { LEAN_VERSION } else { VERSION })
        .map_err(reading)
}

/// The version of the last of `rows` (`None` without rows).
fn last_version(rows: &[Row], lean: bool) -> Result<Option<i64>> {
    rows.last().map(|r| row_version(r, lean)).transpose()
}

/// The events of a stream of `tenant` in version order, within `range`.
pub(crate) async fn fetch_stream(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
) -> Result<StreamEvents> {
    let rows = stream_rows(store, client, tenant, stream, range, |sql| {
        &sql.fetch_stream
    })
    .await?;
    Ok(StreamEvents {
        events: envelopes(store, &rows)?,
        through: last_version(&rows, false)?,
    })
}

/// [`fetch_stream`] for a fold whose methods take no metadata: each envelope carries the
/// event, its sequence, version, type and stream, and defaults for the rest.
pub(crate) async fn fetch_stream_lean(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
) -> Result<StreamEvents> {
    let rows = stream_rows(store, client, tenant, stream, range, |sql| {
        &sql.fetch_stream_lean
    })
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        match lean_envelope(store, stream, row) {
            Ok(Some(e)) => out.push(e),
            Ok(None) => {}
            Err(e) => return Err(with_sequence(store, client, tenant, stream, row, e).await),
        }
    }
    Ok(StreamEvents {
        events: out,
        through: last_version(&rows, true)?,
    })
}

/// Version ranges of several streams, each read after its `after` version through its
/// `through` version ([`fetch_ranges`]).
#[derive(Default)]
pub(crate) struct VersionRanges {
    streams: Vec<StreamKey>,
    after: Vec<i64>,
    through: Vec<i64>,
}

impl VersionRanges {
    /// Adds the versions `after + 1 ..= through` of `stream`.
    pub(crate) fn push(&mut self, stream: StreamKey, (after, through): (i64, i64)) {
        self.streams.push(stream);
        self.after.push(after);
        self.through.push(through);
    }

    /// Whether no range was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// What [`fetch_ranges`] read: the events decoded, and those of registered types whose
/// stored body could not be decoded, each with its stream version (the caller meets the
/// daemon's poison policy for those its projection handles).
#[derive(Default)]
pub(crate) struct RangeEvents {
    /// The events decoded, by stream and version.
    pub(crate) events: Vec<EventEnvelope>,
    /// The events that could not be decoded (their stored JSON does not deserialize, or
    /// their upcaster refuses them), by stream and version: `(version, event)`.
    pub(crate) unreadable: Vec<(i64, Unreadable)>,
}

/// The events of every range of `ranges` (streams of `tenant`), by stream and version,
/// in one statement, as the daemon reads them: events of unregistered types are left out
/// (the daemon's pages leave them out too), and events of registered types that cannot
/// be decoded are collected in [`RangeEvents::unreadable`], never dropped, so the caller
/// meets the poison policy for them as a page's runner does. An async aggregate reads
/// these when a batch's events of its streams leave holes (see
/// [`marten_core::projection::stream_order`]).
pub(crate) async fn fetch_ranges(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    ranges: &VersionRanges,
) -> Result<RangeEvents> {
    let stmt = prepare(store, client, |sql| &sql.fetch_ranges).await?;
    let params = tenant.scoped(vec![&ranges.streams, &ranges.after, &ranges.through]);
    let rows = client.query(&stmt, &params).await.map_err(reading)?;
    let mut out = RangeEvents {
        events: Vec::with_capacity(rows.len()),
        unreadable: Vec::new(),
    };
    for row in &rows {
        match envelope_with(store, row, true) {
            Ok(decoded) => out.events.extend(decoded),
            Err(e) => {
                let version = row_version(row, false)?;
                out.unreadable
                    .push((version, unreadable_event(store, row, STREAM, e)?));
            }
        }
    }
    Ok(out)
}

/// How many envelopes [`fold_stream`] decodes before handing them on.
const CHUNK: usize = 64;

/// The events of a stream of `tenant` within `range`, read at once and decoded
/// [`CHUNK`] at a time: `each` takes each chunk, in version order, with the version of
/// the chunk's last row (decoded or left out as an unknown type). `lean`: decoded as
/// [`fetch_stream_lean`] does. A fold keeps one chunk of envelopes alive instead of the
/// whole stream's, so what it decodes is still in the cache when it is applied and the
/// memory it takes does not grow with the stream.
pub(crate) async fn fold_stream(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
    lean: bool,
    mut each: impl FnMut(&[EventEnvelope], i64) -> Result<()>,
) -> Result<()> {
    let pick: fn(&EventSql) -> &String = if lean {
        |sql| &sql.fetch_stream_lean
    } else {
        |sql| &sql.fetch_stream
    };
    let rows = stream_rows(store, client, tenant, stream, range, pick).await?;
    let mut chunk = Vec::with_capacity(CHUNK.min(rows.len()));
    for rows in rows.chunks(CHUNK) {
        chunk.clear();
        for row in rows {
            let decoded = if lean {
                match lean_envelope(store, stream, row) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        return Err(with_sequence(store, client, tenant, stream, row, e).await)
                    }
                }
            } else {
                envelope(store, row)?
            };
            chunk.extend(decoded);
        }
        if let Some(through) = last_version(rows, lean)? {
            each(&chunk, through)?;
        }
    }
    Ok(())
}

/// The rows of a stream read (`pick`: which columns) of `tenant` within `range`.
async fn stream_rows(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
    pick: fn(&EventSql) -> &String,
) -> Result<Vec<Row>> {
    let stmt = prepare(store, client, pick).await?;
    let params = tenant.scoped(vec![
        stream,
        &range.from_version,
        &range.to_version,
        &range.from_time,
        &range.to_time,
        &range.include_archived,
    ]);
    client.query(&stmt, &params).await.map_err(reading)
}

/// What a page of the global order reads and how its rows are decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageShape {
    /// Archived events are read too.
    pub(crate) include_archived: bool,
    /// Events of unregistered types are left out whatever the store's policy (the
    /// daemon: its projections could not handle them).
    pub(crate) skip_unknown: bool,
    /// Only each event's sequence, stream, version, type, data and transaction id are
    /// read ([`EventSql::read_all_lean`]); its other fields are defaults. For readers
    /// that use no other metadata: a daemon runner of a projection whose apply methods
    /// take none, with hooks that read none.
    pub(crate) lean: bool,
    /// An event of a registered type whose stored body cannot be decoded is collected in
    /// [`EventPage::unreadable`] and the read goes on (the daemon: its poison policy
    /// decides); otherwise the read fails with the decoding error.
    pub(crate) collect_unreadable: bool,
}

impl PageShape {
    /// What the public reads of the global order read: every field, archived events left
    /// out, events of unknown types as the store's policy says.
    pub(crate) const PUBLIC: PageShape = PageShape {
        include_archived: false,
        skip_unknown: false,
        lean: false,
        collect_unreadable: false,
    };
}

/// Up to `limit` events after `after`, in the gap-safe global order: of every tenant, or
/// (`tenant`, conjoined events) of one; `shape` says what is read.
pub(crate) async fn read_all(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: Option<&String>,
    after: Position,
    limit: usize,
    shape: PageShape,
) -> Result<EventPage> {
    let pick: fn(&EventSql) -> &String = match (tenant.is_some(), shape.lean) {
        (false, false) => |sql| &sql.read_all,
        (true, false) => |sql| &sql.read_all_of_tenant,
        (false, true) => |sql| &sql.read_all_lean,
        (true, true) => |sql| &sql.read_all_of_tenant_lean,
    };
    let stmt = prepare(store, client, pick).await?;
    let tx = Xid8(after.transaction_id);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&tx, &after.sequence, &limit, &shape.include_archived];
    if let Some(t) = &tenant {
        params.push(t);
    }
    let rows = client.query(&stmt, &params).await.map_err(reading)?;
    let (tx_column, skip) = (if shape.lean { 5 } else { 10 }, shape.skip_unknown);
    let stream_column = if shape.lean { 1 } else { STREAM };
    let mut next = after;
    let mut events = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in &rows {
        let Xid8(transaction_id) = row.try_get(tx_column).map_err(reading)?;
        next = Position {
            transaction_id,
            sequence: row.try_get(0).map_err(reading)?,
        };
        let decoded = if shape.lean {
            lean_page_envelope(store, row, skip)
        } else {
            envelope_with(store, row, skip)
        };
        match decoded {
            Ok(decoded) => events.extend(decoded),
            Err(e) if shape.collect_unreadable => {
                unreadable.push(unreadable_event(store, row, stream_column, e)?);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(EventPage {
        events,
        next,
        rows: rows.len(),
        unreadable,
    })
}

/// The event of page row `row` that could not be decoded with `error`, its stream read
/// from column `stream_column`; any other error (a column that cannot be read, an unknown
/// type the read does not skip) is returned as it is.
fn unreadable_event(
    store: &EventCatalog,
    row: &Row,
    stream_column: usize,
    error: Error,
) -> Result<Unreadable> {
    let (Error::DeserializeEvent {
        event_type,
        sequence,
        ..
    }
    | Error::Upcast {
        event_type,
        sequence,
        ..
    }) = &error
    else {
        return Err(error);
    };
    let (stored_type, sequence) = (event_type.clone(), *sequence);
    let stream: StreamIdColumn = row.try_get(stream_column).map_err(reading)?;
    Ok(Unreadable {
        sequence,
        read_as: store.with_registry(|r| r.read_as(&stored_type)),
        stored_type,
        stream: stream.0,
        error,
    })
}

/// What the streams table says about a stream of `tenant`.
pub(crate) async fn stream_state(
    store: &EventCatalog,
    client: Db<'_>,
    tenant: &EventTenant,
    stream: &StreamKey,
) -> Result<Option<StreamState>> {
    let stmt = prepare(store, client, |sql| &sql.stream_state).await?;
    let params = tenant.scoped(vec![stream]);
    let Some(row) = client.query_opt(&stmt, &params).await.map_err(reading)? else {
        return Ok(None);
    };
    let id: StreamIdColumn = row.try_get(0).map_err(reading)?;
    Ok(Some(StreamState::new(
        id.0,
        row.try_get(1).map_err(reading)?,
        row.try_get(2).map_err(reading)?,
        row.try_get(3).map_err(reading)?,
        row.try_get(4).map_err(reading)?,
        row.try_get(5).map_err(reading)?,
    )))
}

/// The age of the oldest open writing transaction in the cluster, which holds gap-safe
/// readers back; `None` when there is none.
pub(crate) async fn oldest_open_transaction(client: Db<'_>) -> Result<Option<Duration>> {
    let row = client
        .query_one(OLDEST_OPEN_TRANSACTION, &[])
        .await
        .map_err(reading)?;
    let secs: Option<f64> = row.try_get(0).map_err(reading)?;
    // A negative, NaN or unrepresentable age (a clock step) is no age, not a panic.
    Ok(secs.map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)))
}
