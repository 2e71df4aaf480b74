//! A stream append as an operation of the unit of work: one statement per append, and
//! the stream commands (archive, delete). Each binds the tenant of its session
//! ([`EventTenant`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use marten_core::{
    AnyEvent, Error, Rejection, RejectionKind, Result, StreamId, StreamIdentity, Tenancy,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use super::column::Column;
use super::{Operation, Target};
use crate::error_map::{map_db_error, Failed};
use crate::event_tenant::EventTenant;
use crate::json::RawJson;
use crate::stream_key::StreamKey;
use crate::tables::events::{EventSql, EVENTS_TABLE};
use crate::tables::functions::REJECTED_SQLSTATE;

pub(crate) use marten_core::projection::inline::AppendKind;

/// One append: events for one stream, in one statement.
pub(crate) struct StreamAppend {
    pub(crate) kind: AppendKind,
    /// The kind the caller asked for; an inline projection may turn a plain append into
    /// an expected-version one for an attempt.
    pub(crate) requested: AppendKind,
    pub(crate) identity: StreamIdentity,
    /// The tenant the events are recorded for (and, conjoined, whose stream this is).
    pub(crate) tenant: EventTenant,
    pub(crate) stream: StreamKey,
    pub(crate) stream_type: Option<String>,
    pub(crate) count: i64,
    pub(crate) ids: Column<uuid::Uuid>,
    pub(crate) types: Column<&'static str>,
    pub(crate) data: Column<RawJson>,
    pub(crate) headers: Column<Option<RawJson>>,
    pub(crate) correlation_ids: Column<Option<String>>,
    pub(crate) causation_ids: Column<Option<String>>,
    /// Tags: the ordinal (1-based) of the event carrying each, its type and value.
    pub(crate) tag_ords: Vec<i64>,
    pub(crate) tag_types: Vec<String>,
    pub(crate) tag_values: Vec<String>,
    /// The events themselves, for inline projections.
    pub(crate) events: Column<Arc<dyn AnyEvent>>,
    /// The events' global sequences, when the attempt reserved them for its inline
    /// projections (see [`crate::tables::event_reserve`]): inserted as their `seq_id`.
    pub(crate) sequences: Option<Vec<i64>>,
    rejected: bool,
    /// Sent alone (see [`Operation::alone`], [`StreamAppend::can_go_alone`]): untagged,
    /// the statement returns no rows and its row count is the number of events inserted;
    /// tagged, it returns the new stream version and raises when it is refused.
    alone: bool,
    /// The tag lock of the save's boundaries, sent in this append's statement (an
    /// attempt's: `reset` forgets it).
    check: Option<TagCheck>,
    /// The statement with the lock in it was rejected once: this save's later attempts
    /// send the lock as a statement of its own, whose answer says what was rejected.
    check_refused: bool,
    /// With an expected version: the id of the stream's event at that version, asserted
    /// too (a decision made on a cached aggregate; bound after every other parameter).
    pub(crate) tip: Option<uuid::Uuid>,
}

/// The tag lock of a save's consistency boundaries, when it rides in the statement of the
/// save's one append ([`crate::tables::events::EventSql::checked`]): every tag of the
/// boundaries and of the append, in (type, value) order, with its captured version
/// (boundaries) and whether the append writes it.
pub(crate) struct TagCheck {
    pub(crate) types: Vec<String>,
    pub(crate) values: Vec<String>,
    pub(crate) captured: Vec<Option<i64>>,
    pub(crate) appended: Vec<bool>,
    pub(crate) count: i64,
}

impl StreamAppend {
    /// An append of (probably) `capacity` events for `tenant`.
    pub(crate) fn new(
        kind: AppendKind,
        identity: StreamIdentity,
        tenant: EventTenant,
        stream: StreamId,
        capacity: usize,
    ) -> Self {
        StreamAppend {
            kind,
            requested: kind,
            identity,
            tenant,
            stream: StreamKey(stream),
            stream_type: None,
            count: 0,
            ids: Column::with_capacity(capacity),
            types: Column::with_capacity(capacity),
            data: Column::with_capacity(capacity),
            headers: Column::with_capacity(capacity),
            correlation_ids: Column::with_capacity(capacity),
            causation_ids: Column::with_capacity(capacity),
            tag_ords: Vec::new(),
            tag_types: Vec::new(),
            tag_values: Vec::new(),
            events: Column::with_capacity(capacity),
            sequences: None,
            rejected: false,
            alone: false,
            tip: None,
            check: None,
            check_refused: false,
        }
    }

    /// Whether the tag lock of the save may ride in this append's statement: a tagged
    /// append of at least one event, without reserved sequences, whose statement with
    /// the lock was not rejected before in this save.
    pub(crate) fn can_take_check(&self) -> bool {
        self.count > 0
            && !self.tag_types.is_empty()
            && self.sequences.is_none()
            && !self.check_refused
    }

    /// Sends the save's tag lock in this append's statement (this attempt only).
    pub(crate) fn take_check(&mut self, check: TagCheck) {
        self.check = Some(check);
    }

    /// Sent as the whole save, in a statement shape that needs no rejected flag: an
    /// untagged append of at least one event (a rejection shows as a row count of 0), or
    /// a tagged one (a rejection raises the guard's error, so the statement's own
    /// transaction rolls back the tag bumps it made before the stream was refused):
    /// carrying the save's tag lock ([`EventSql::checked`]) or not
    /// ([`EventSql::tagged_alone`]).
    ///
    /// Why a tagged append without a lock raises instead of going in a transaction with
    /// the guard after it: sent alone it stays one statement in one round trip (a
    /// transaction would add `BEGIN`, the guard and `COMMIT` to every successful save);
    /// and its tags cannot wait for the stream's verdict within the statement, since they
    /// are locked before the stream (the order of every tagged save). Its flagged shape
    /// ([`EventSql::tagged`]) is never sent alone: nothing would undo its bumps.
    fn can_go_alone(&self) -> bool {
        self.count > 0 && self.sequences.is_none()
    }

    /// Whether the statement's shape raises the guard's error when the stream (or the
    /// tag lock) refuses it, instead of setting the rejected flag: the shapes of a tagged
    /// append that is the whole save ([`EventSql::checked`], [`EventSql::tagged_alone`]).
    fn raises(&self) -> bool {
        self.check.is_some() || (self.alone && !self.tag_types.is_empty())
    }

    /// One event without tags or reserved sequences: sent with scalar parameters.
    fn is_single(&self) -> bool {
        self.ids.len() == 1 && self.tag_types.is_empty() && self.sequences.is_none()
    }

    /// No event carries headers, a correlation or a causation id (see
    /// [`EventSql::one_alone_bare`]).
    fn is_bare(&self) -> bool {
        self.headers.iter().all(Option::is_none)
            && self.correlation_ids.iter().all(Option::is_none)
            && self.causation_ids.iter().all(Option::is_none)
    }

    /// Sent alone as one event without metadata, no stream type and (single-tenant
    /// events) the default tenant: [`EventSql::one_alone_lean`].
    fn is_lean(&self) -> bool {
        self.alone
            && self.is_single()
            && self.is_bare()
            && self.stream_type.is_none()
            && self.tenant.scope_suffices()
    }

    /// The parameters of a one-event shape ([`EventSql::one`], [`EventSql::one_alone`] and
    /// its bare and lean forms), in their order.
    fn push_single<'a>(&'a self, params: &mut Vec<&'a (dyn ToSql + Sync)>) {
        let lean = self.is_lean();
        params.push(&self.stream);
        if !lean {
            params.extend([&self.stream_type as &(dyn ToSql + Sync), &self.count]);
        }
        params.extend([
            &self.ids[0] as &(dyn ToSql + Sync),
            &self.types[0],
            &self.data[0],
        ]);
        if lean {
            // The tenant only as the scope of conjoined events (see `is_lean`).
            if let Some(tenant) = self.tenant.scope() {
                params.push(tenant);
            }
        } else {
            // The bare statement binds no metadata.
            if !(self.alone && self.is_bare()) {
                params.extend([
                    &self.headers[0] as &(dyn ToSql + Sync),
                    &self.correlation_ids[0],
                    &self.causation_ids[0],
                ]);
            }
            params.push(self.tenant.written());
        }
        if let AppendKind::Expected(v) = &self.kind {
            params.push(v);
        }
    }

    /// The tip an expected-version append asserts, last (see [`StreamAppend::tip`]).
    fn push_tip<'a>(&'a self, params: &mut Vec<&'a (dyn ToSql + Sync)>) {
        if let (AppendKind::Expected(_), Some(tip)) = (self.kind, &self.tip) {
            params.push(tip);
        }
    }

    fn expected(&self) -> i64 {
        match self.kind {
            AppendKind::Expected(v) => v,
            _ => 0,
        }
    }
}

/// The most parameters an append's statement binds: the event columns, the tags, the
/// tenant, the expected version and either the reserved sequences or the tag lock (9 + 3 +
/// 1 + 1 + 6; an append with reserved sequences takes no lock) and the tip.
const MAX_PARAMS: usize = 21;

/// A NULL array: `unnest` pads it with NULLs, so a metadata column no event of the
/// append sets costs nothing to encode or decode.
static NO_HEADERS: Option<Vec<Option<RawJson>>> = None;
/// See [`NO_HEADERS`].
static NO_TEXT: Option<Vec<Option<String>>> = None;

/// `values`, or NULL when every value is NULL.
fn or_null<'a, T: ToSql + Sync>(
    values: &'a Column<Option<T>>,
    null: &'a Option<Vec<Option<T>>>,
) -> &'a (dyn ToSql + Sync) {
    if values.iter().all(Option::is_none) {
        null
    } else {
        values
    }
}

fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("stream"))
}

/// What appends and stream commands write: the events table of the store's identity and
/// event tenancy.
pub(super) fn stream_target(identity: StreamIdentity, tenancy: Tenancy) -> Target {
    Target::new(
        "stream",
        EVENTS_TABLE,
        crate::schema::events_schema(identity, tenancy),
    )
}

impl StreamAppend {
    /// The statement naming which of a save's event ids are already appended, and the
    /// tenant that scopes it (conjoined events: ids are unique per tenant).
    pub(crate) fn existing_ids(&self) -> (&'static String, &EventTenant) {
        let sql = EventSql::of(self.identity, self.tenant.tenancy());
        (&sql.existing_ids, &self.tenant)
    }

    /// Which of the append's event ids are already stored (for its tenant, with conjoined
    /// events), read when its rejection is explained: none for an append of no events.
    async fn stored_ids(&self, client: Db<'_>) -> Result<Vec<uuid::Uuid>> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        let (sql, tenant) = self.existing_ids();
        let rows = client
            .query(sql, &tenant.scoped(vec![&self.ids]))
            .await
            .map_err(reading_event)?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(reading_event))
            .collect()
    }
}

/// A failed read of stored events (their ids), for its error.
fn reading_event(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("event"))
}

impl Operation for StreamAppend {
    fn sql(&self) -> SqlText<'_> {
        let sql = EventSql::of(self.identity, self.tenant.tenancy());
        let tagged = !self.tag_types.is_empty();
        let shape = match (self.is_single(), self.alone) {
            _ if self.check.is_some() => &sql.checked,
            _ if self.alone && tagged => &sql.tagged_alone,
            _ if self.sequences.is_some() && tagged => &sql.tagged_sequenced,
            _ if self.sequences.is_some() => &sql.sequenced,
            _ if tagged => &sql.tagged,
            (true, true) if self.is_lean() => &sql.one_alone_lean,
            (true, true) if self.is_bare() => &sql.one_alone_bare,
            (true, true) => &sql.one_alone,
            (true, false) => &sql.one,
            (false, true) => &sql.many_alone,
            (false, false) => &sql.many,
        };
        SqlText::Static(match self.kind {
            AppendKind::Start => &shape.start,
            AppendKind::Append => &shape.append,
            AppendKind::Expected(_) if self.tip.is_some() => &shape.expected_tip,
            AppendKind::Expected(_) => &shape.expected,
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        // Room for every parameter a shape binds, so that the list never grows.
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(MAX_PARAMS);
        if self.is_single() {
            self.push_single(&mut params);
            self.push_tip(&mut params);
            return params;
        }
        params.extend([
            &self.stream as &(dyn ToSql + Sync),
            &self.stream_type,
            &self.count,
            &self.ids,
            &self.types,
            &self.data,
            or_null(&self.headers, &NO_HEADERS),
            or_null(&self.correlation_ids, &NO_TEXT),
            or_null(&self.causation_ids, &NO_TEXT),
        ]);
        if !self.tag_types.is_empty() {
            params.extend([
                &self.tag_ords as &(dyn ToSql + Sync),
                &self.tag_types,
                &self.tag_values,
            ]);
        }
        params.push(self.tenant.written());
        if let AppendKind::Expected(v) = &self.kind {
            params.push(v);
        }
        if let Some(sequences) = &self.sequences {
            params.push(sequences);
        }
        if let Some(check) = &self.check {
            params.extend([
                &check.types as &(dyn ToSql + Sync),
                &check.values,
                &check.captured,
                &check.appended,
                self.tenant.tags(),
                &check.count,
            ]);
        }
        self.push_tip(&mut params);
        params
    }

    fn target(&self) -> Target {
        stream_target(self.identity, self.tenant.tenancy())
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn checked(&self) -> bool {
        true
    }

    /// A rejected append writes nothing: sent alone, an untagged one is refused before it
    /// writes (its stream row is its first write) and a tagged one raises, undoing its tag
    /// bumps (see [`StreamAppend::can_go_alone`]). A tagged append with reserved
    /// sequences has no raising shape: it goes in a transaction with the guard (it never
    /// is the whole save anyway: reserving opens the save's transaction).
    fn atomic(&self) -> bool {
        self.tag_types.is_empty() || self.sequences.is_none()
    }

    fn alone(&mut self) {
        self.alone = self.can_go_alone();
    }

    fn counts_only(&self) -> bool {
        // A tagged append alone answers a row: its tag rows are written after its events.
        self.alone && self.tag_types.is_empty()
    }

    fn accept_count(&mut self, count: u64) -> Result<()> {
        // The events inserted; none when the stream was rejected.
        self.rejected = count == 0;
        Ok(())
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        // One summary row: the new stream version (NULL when the stream was rejected),
        // then the events' sequences and the rejected flag (in a larger save) or the
        // guard's NULL (a tagged append alone, which raises instead of answering NULL).
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let version: Option<i64> = row.try_get(0).map_err(reading)?;
        self.rejected = version.is_none();
        Ok(())
    }

    fn rejected_by(&mut self, e: &tokio_postgres::Error) -> bool {
        let raised = e.code().is_some_and(|c| c.code() == REJECTED_SQLSTATE);
        if !(raised && self.raises()) {
            return false;
        }
        // The lock or the stream refused: nothing was written.
        self.rejected = true;
        if self.check.is_some() {
            // The next attempt sends the lock apart, and its answer names what was
            // rejected. Without a lock only the stream refuses: `explain` names it.
            self.check_refused = true;
        }
        true
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn retryable(&self) -> bool {
        (self.requested == AppendKind::Append && self.kind != AppendKind::Append)
            || self.check.is_some()
    }

    fn reset(&mut self) {
        self.kind = self.requested;
        self.sequences = None;
        self.rejected = false;
        self.alone = false;
        self.check = None;
    }

    /// Says why the stream refused the append, unless the append was sent before: when
    /// any of its event ids is already stored (a save sent again after
    /// [`Error::OutcomeUnknown`] whose first attempt committed, its ids given with
    /// `PendingEvent::with_id`), the save is [`Error::DuplicateEvent`], not the stream's
    /// rejection. The stream refused it first only because its precondition (the expected
    /// version, a start, the tip) is checked before its events are inserted: with the
    /// stream as expected, the unique index of event ids would have refused it all the
    /// same, as it refuses a plain append. Any stored id, not only all of them: a save can
    /// never be written while one of its ids is stored, so its error does not depend on
    /// whether its stream also moved (the writer then names every stored id of the save).
    /// The ids' lookup goes with the stream's read, in the same round trip.
    fn explain<'a>(&'a self, client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            let sql = EventSql::of(self.identity, self.tenant.tenancy());
            let params = self.tenant.scoped(vec![&self.stream]);
            let version = client.query_opt(sql.stream_version.as_str(), &params);
            let (row, stored) = futures_util::future::join(version, self.stored_ids(client)).await;
            let stored = stored?;
            if !stored.is_empty() {
                return Err(Error::DuplicateEvent { ids: stored });
            }
            let row = row.map_err(reading)?;
            let state: Option<(i64, bool)> = match row {
                Some(r) => Some((
                    r.try_get(0).map_err(reading)?,
                    r.try_get(1).map_err(reading)?,
                )),
                None => None,
            };
            let kind = match (self.kind, state) {
                // An archived stream refuses a start too: it is there, and archived (a
                // fetch for writing reads it as new, its events being archived).
                (_, Some((_, true))) => RejectionKind::StreamArchived,
                (AppendKind::Start, _) => RejectionKind::StreamExists,
                (_, actual) => RejectionKind::UnexpectedStreamVersion {
                    expected: self.expected(),
                    actual: actual.map(|(v, _)| v),
                },
            };
            Ok(vec![Rejection::new("stream", self.stream.0.key(), kind)])
        })
    }
}

/// Archive or delete a stream (of the tenant, with conjoined events), queued like any
/// other operation.
pub(crate) struct StreamCommand {
    identity: StreamIdentity,
    tenant: EventTenant,
    stream: StreamKey,
    delete: bool,
}

impl StreamCommand {
    /// Archives `stream`.
    pub(crate) fn archive(
        identity: StreamIdentity,
        tenant: EventTenant,
        stream: StreamKey,
    ) -> Self {
        Self {
            identity,
            tenant,
            stream,
            delete: false,
        }
    }

    /// The stream archived or deleted.
    pub(crate) fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// Whether the command deletes its stream (else it archives it).
    pub(crate) fn deletes(&self) -> bool {
        self.delete
    }

    /// The kind of id of the store's streams.
    pub(crate) fn identity(&self) -> StreamIdentity {
        self.identity
    }

    /// The tenant whose stream is archived or deleted.
    pub(crate) fn tenant(&self) -> &EventTenant {
        &self.tenant
    }

    /// Deletes `stream` and its events.
    pub(crate) fn delete(identity: StreamIdentity, tenant: EventTenant, stream: StreamKey) -> Self {
        Self {
            identity,
            tenant,
            stream,
            delete: true,
        }
    }
}

impl Operation for StreamCommand {
    fn sql(&self) -> SqlText<'_> {
        let sql = EventSql::of(self.identity, self.tenant.tenancy());
        SqlText::Static(if self.delete {
            &sql.delete
        } else {
            &sql.archive
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        // The tenant of the tag versions is the stream's scope with conjoined events.
        vec![&self.stream, self.tenant.tags()]
    }

    fn target(&self) -> Target {
        stream_target(self.identity, self.tenant.tenancy())
    }

    fn len(&self) -> usize {
        1
    }
}
