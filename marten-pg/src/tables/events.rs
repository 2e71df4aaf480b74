//! All SQL text of the event store's tables (`mt_streams`, `mt_events`, the sequence):
//! appends and reads (their DDL is in [`crate::tables::event_ddl`]). Built once per stream
//! identity (`uuid` or `text` ids) and event tenancy, and kept in a static.
//!
//! Tenants: every append binds the tenant it records on its events (`tenant_id`). With
//! [`Tenancy::Conjoined`] events, every statement that finds a stream also binds the
//! tenant (a trailing parameter, its "scope"), which leads the keys it looks up; with
//! [`Tenancy::Single`] those statements are unchanged and streams are global. The tag
//! version statements bind the tenant of the tag versions in both modes. A tenant id is
//! always a parameter, never text of a statement.

use std::sync::OnceLock;

use marten_core::{StreamIdentity, Tenancy};

use crate::tables::event_order::{global_page, tenant_page};
use crate::tables::event_reserve::lock_streams;
use crate::tables::event_tags::{
    bump_tag_versions, checked, insert_tag_rows, select_events_by_tags, select_tag_versions,
    verdict, BoundaryReads, TagCtes, FEW_TAGS,
};
use crate::tables::event_tip::{tip_scope, tipped};
use crate::tables::functions::REJECTED_FLAG;
use crate::tables::stream_commands;

/// The streams table.
pub const STREAMS_TABLE: &str = "mt_streams";

/// What an append sets on its stream's row: the ordering transaction id of the stream's
/// events, which its events record as their `tx_id` (the row's `last_tx`, returned with
/// its version). A transaction that took its id before another that appended to the
/// stream and committed first (it wrote something else, then waited on the stream's row)
/// records the other's, later id: the global order `(tx_id, seq_id)` then has every
/// stream's events in version order. Recording a later id than its own keeps the order
/// gap-safe: a reader reads events whose `tx_id` is below its snapshot's horizon, and
/// every transaction whose id is below the horizon has ended, so an event recorded at
/// an id below it was written by a transaction at or below that id, which has ended
/// too; an event that becomes visible later is recorded at an id at or above its own
/// transaction's, which was still running, so at or above the horizon.
pub const LAST_TX_BUMP: &str = "last_tx = greatest(st.last_tx, pg_current_xact_id())";

/// The events table.
pub const EVENTS_TABLE: &str = "mt_events";

/// Which tags each event carries (an index lookup by tag).
pub const TAGS_TABLE: &str = "mt_event_tags";
/// The version of each tag, bumped by every tagged append, asserted by boundaries.
pub const TAG_VERSIONS_TABLE: &str = "mt_tag_versions";

/// The columns an event read selects, in the order `read::envelope` decodes them. The
/// transaction id is the stored `xid8` (read in binary), never a text cast: an output
/// column `tx_id` of type text would be what `ORDER BY tx_id` sorts by.
pub(super) const EVENT_COLUMNS: &str =
    "seq_id, id, stream_id, version, type, data, timestamp, correlation_id, \
                             causation_id, headers, tx_id, is_archived, tenant_id";

/// The columns a lean fold reads ([`EventSql::fetch_stream_lean`]), in the order
/// `read::lean_envelope` decodes them: not the sequence, which only names an event that
/// fails to decode (then read by [`EventSql::sequence_at`]).
const LEAN_COLUMNS: &str = "version, type, data";

/// The columns a lean page of the global order reads ([`EventSql::read_all_lean`]), in
/// the order `read::lean_page_envelope` decodes them: a lean fold's, the stream (pages
/// mix streams) and the transaction id (the page's position).
const LEAN_PAGE_COLUMNS: &str = "seq_id, stream_id, version, type, data, tx_id";

/// The SQL type of a stream id.
pub fn id_type(identity: StreamIdentity) -> &'static str {
    match identity {
        StreamIdentity::Uuid => "uuid",
        StreamIdentity::String => "text",
    }
}

/// The unique index of event ids (each tenant's, with conjoined events).
pub const EVENT_ID_INDEX: &str = "mt_events_id";

/// The event store's statements for one stream identity and event tenancy.
///
/// "Scoped" statements take the tenant as one more, last, parameter with conjoined
/// events only (the tenant whose streams they find); see the module docs.
pub struct EventSql {
    /// Appends of several events (or of none), inside a larger save: parameters as
    /// arrays (see `EventSql::new`); one row `version, seq_ids, flag`.
    pub many: AppendStatements,
    /// Appends of one event inside a larger save: scalar parameters, same result row.
    pub one: AppendStatements,
    /// Appends of events with tags, inside a larger save: `$10`..`$12` = tag event
    /// ordinal, type, value; the tenant is `$13` and the expected version `$14`. Their
    /// tags' versions are bumped before the stream row is taken; a rejected stream sets
    /// the rejected flag, and the save's guard rolls the bumps back.
    pub tagged: AppendStatements,
    /// [`EventSql::tagged`] as the whole save, without a tag lock (no boundary): the same
    /// parameters, but no guard follows, so the statement raises the guard's error itself
    /// when the stream is rejected (nothing is written, not even the tag bumps that ran
    /// before the stream row); one row `version, NULL` otherwise.
    pub tagged_alone: AppendStatements,
    /// Appends of at least one event that are the whole save: no guard follows, so a
    /// rejection sets no flag; the statement returns no rows and its row count is the
    /// number of events inserted (0 when the stream was rejected).
    pub many_alone: AppendStatements,
    /// [`EventSql::many_alone`] for one event, with scalar parameters.
    pub one_alone: AppendStatements,
    /// [`EventSql::one_alone`] of an event without headers, correlation or causation id:
    /// `$1`..`$6` as there, the tenant `$7`, the expected version `$8` (three NULL
    /// parameters and columns fewer to bind and insert).
    pub one_alone_bare: AppendStatements,
    /// [`EventSql::one_alone_bare`] of an append that names no stream type and records
    /// the events table's default tenant (single-tenant events, a session without a
    /// tenant) or is conjoined: `$1` stream id, `$2` event id, `$3` event type, `$4` data,
    /// then the tenant (conjoined only) and the expected version. The count is the
    /// literal 1 and the column defaults fill in the rest: the lone append's statement
    /// binds what raw SQL doing the same work would.
    pub one_alone_lean: AppendStatements,
    /// [`EventSql::many`] inserting reserved sequences (the last parameter).
    pub sequenced: AppendStatements,
    /// [`EventSql::tagged`] inserting reserved sequences (the last parameter).
    pub tagged_sequenced: AppendStatements,
    /// [`EventSql::tagged`] as the whole save, with the tag lock of its consistency
    /// boundaries in the same statement (built by `checked`): the parameters of `tagged`
    /// (through the expected version), then the lock's tag types, values, captured
    /// versions and appended flags (arrays), the tenant of the tag versions and the
    /// number of tags. A rejection raises the guard's error: nothing is written.
    pub checked: AppendStatements,
    /// `$1` tag types, `$2` tag values, `$3` the tenant of the tag versions ->
    /// `tag_type, tag_value, version`.
    pub tag_versions: String,
    /// `$1` tag types, `$2` tag values, `$3` event types (NULL = all) -> events in
    /// sequence order; scoped (`$4`).
    pub events_by_tags: String,
    /// The reads of a boundary of 1 to [`FEW_TAGS`] tags (index: tags - 1), with each tag
    /// a pair of scalar parameters (see [`BoundaryReads`]).
    pub few_tags: Vec<BoundaryReads>,
    /// `$1` event ids -> those among them already appended, in order; scoped (`$2`):
    /// with conjoined events an event id is unique within its tenant only.
    pub existing_ids: String,
    /// `$1` = id -> `version, is_archived`; scoped (`$2`).
    pub stream_version: String,
    /// `$1` = id -> `version, is_archived` and locks the row; scoped (`$2`).
    pub lock_stream: String,
    /// `$1` stream ids -> locks the rows of those that exist, in id order (see
    /// [`crate::tables::event_reserve::lock_streams`]); scoped (`$2`).
    pub lock_streams: String,
    /// `$1` = id -> `id, version, type, created, timestamp, is_archived`; scoped (`$2`).
    pub stream_state: String,
    /// `$1` id, `$2`/`$3` version range, `$4`/`$5` time range, `$6` include archived;
    /// scoped (`$7`).
    pub fetch_stream: String,
    /// [`EventSql::fetch_stream`] reading only what a fold of a type whose methods take
    /// no metadata needs: `version, type, data` (less to form, send and decode).
    pub fetch_stream_lean: String,
    /// `$1` stream ids, `$2` the version each range starts after, `$3` the version it
    /// runs through (arrays, an element per stream) -> the events of those ranges that
    /// are not archived (the columns of [`EventSql::fetch_stream`]), by stream and
    /// version; scoped (`$4`). The ranges an async aggregate's batch left holes in, read
    /// in one statement.
    pub fetch_ranges: String,
    /// `$1` = stream id, `$2` = version -> the event's `seq_id`; scoped (`$3`). Names an
    /// event a lean fold could not decode.
    pub sequence_at: String,
    /// A page of the gap-safe global order, for `read_all` and the daemon alike: `$1`
    /// transaction id (`xid8`), `$2` sequence (the position after which to read), `$3`
    /// limit, `$4` include archived. Ordered and compared by the stored
    /// `(tx_id, seq_id)`, qualified so `ORDER BY` cannot bind to an output column: the
    /// plan is a range scan of the index `mt_events_tx_seq` under the `LIMIT`, never a
    /// sort of every remaining event. Conjoined events merge the tenants' pages
    /// (`event_order::merge_tenant_pages`).
    pub read_all: String,
    /// [`EventSql::read_all`] of one tenant's events: `$5` the tenant (conjoined events
    /// only; the same range scan, filtered).
    pub read_all_of_tenant: String,
    /// [`EventSql::read_all`] reading only what a runner of projections that take no
    /// metadata needs: `seq_id, stream_id, version, type, data, tx_id`.
    pub read_all_lean: String,
    /// [`EventSql::read_all_of_tenant`], lean as [`EventSql::read_all_lean`].
    pub read_all_of_tenant_lean: String,
    /// `$1` = id, `$2` the tenant of the tag versions (conjoined: also the stream's);
    /// bumps the archived events' tags (see [`crate::tables::stream_commands`]).
    pub archive: String,
    /// `$1` = id, `$2` as [`EventSql::archive`]; bumps the deleted events' tags.
    pub delete: String,
    /// `$1` stream ids, `$2` as [`EventSql::archive`], `$3`/`$4` tag types and values ->
    /// locks the tags of those streams' events and those tags in one (type, value) order
    /// (see [`crate::tables::stream_commands::lock_tags`]).
    pub lock_command_tags: String,
}

/// One append statement per `AppendKind`, of one shape.
pub struct AppendStatements {
    /// Start a stream that must not exist.
    pub start: String,
    /// Append, creating the stream if missing.
    pub append: String,
    /// Append only if the stream is at the expected version.
    pub expected: String,
    /// [`AppendStatements::expected`], and only if the stream's event at that version is
    /// the one bound last (see `StreamRows::expected_tip`).
    pub expected_tip: String,
}

impl AppendStatements {
    /// Builds the statements by wrapping each stream-row statement with `wrap`.
    fn new(stream_rows: &StreamRows, wrap: impl Fn(&str) -> String) -> Self {
        AppendStatements {
            start: wrap(&stream_rows.start),
            append: wrap(&stream_rows.append),
            expected: wrap(&stream_rows.expected),
            expected_tip: tipped(stream_rows, wrap),
        }
    }
}

/// The statements that take or create a stream's row, one per append kind; each ends
/// where `RETURNING st.version` can follow.
pub(crate) struct StreamRows {
    pub(crate) start: String,
    pub(crate) append: String,
    pub(crate) expected: String,
    /// How the stream's events are matched to its row besides the id: by tenant with
    /// conjoined events (`e.tenant_id = st.tenant_id AND `), else nothing (see
    /// [`crate::tables::event_tip`]).
    pub(crate) tip_scope: &'static str,
}

impl EventSql {
    /// The statements for `identity` with single-tenant events, built once.
    pub fn get(identity: StreamIdentity) -> &'static EventSql {
        Self::of(identity, Tenancy::Single)
    }

    /// The statements for `identity` and the event tenancy `tenancy`, built once.
    pub fn of(identity: StreamIdentity, tenancy: Tenancy) -> &'static EventSql {
        static UUID: OnceLock<EventSql> = OnceLock::new();
        static TEXT: OnceLock<EventSql> = OnceLock::new();
        static UUID_CONJOINED: OnceLock<EventSql> = OnceLock::new();
        static TEXT_CONJOINED: OnceLock<EventSql> = OnceLock::new();
        let cell = match (identity, tenancy) {
            (StreamIdentity::Uuid, Tenancy::Single) => &UUID,
            (StreamIdentity::String, Tenancy::Single) => &TEXT,
            (StreamIdentity::Uuid, Tenancy::Conjoined) => &UUID_CONJOINED,
            (StreamIdentity::String, Tenancy::Conjoined) => &TEXT_CONJOINED,
        };
        cell.get_or_init(|| EventSql::new(identity, tenancy == Tenancy::Conjoined))
    }

    /// Append parameters: `$1` stream id, `$2` stream type, `$3` event count, `$4` event
    /// ids, `$5` type names, `$6` data, `$7` headers, `$8` correlation ids, `$9` causation
    /// ids (arrays, one element per event), `$10` the tenant recorded on the events (and,
    /// `conjoined`, the tenant of the stream and tags), `$11` expected version (expected
    /// kind only). Tagged appends put their tags at `$10`..`$12`, and shift the tenant and
    /// the expected version to `$13` and `$14`.
    ///
    /// Each append is one statement: the stream row is inserted or updated first (which
    /// takes its row lock, so appends to one stream serialize and versions stay
    /// contiguous), then the events are inserted with versions counted back from the new
    /// stream version. A stream that fails its precondition yields no row and no event is
    /// inserted; inside a larger save the statement also sets the rejected flag, which the
    /// save's guard turns into a rollback. A save of one append alone needs no flag: the
    /// statement is its own transaction and a rejection shows as a row count of 0.
    fn new(identity: StreamIdentity, conjoined: bool) -> EventSql {
        let idt = id_type(identity);
        // Tagged appends lock their tags first: their stream rows wait for the bump.
        let (plain, tagged) = (
            StreamRows::new(idt, 10, conjoined),
            StreamRows::gated(idt, 13, conjoined),
        );
        let (events_many, events_one) = (insert_events(idt, 10), insert_event(idt, 10));
        let bare = StreamRows::new(idt, 7, conjoined);
        let tagged_events = insert_events(idt, 13);
        let tags = TagCtes {
            first: bump_tag_versions(conjoined),
            after: insert_tag_rows(conjoined),
        };
        let untagged = TagCtes::default();
        // The tenant of the scoped statements: the parameter after `$n`.
        let scoped = |n: usize| scope(conjoined, n);
        EventSql {
            many: AppendStatements::new(&plain, |r| flagged(r, &events_many, &untagged)),
            one: AppendStatements::new(&plain, |r| flagged(r, &events_one, &untagged)),
            tagged: AppendStatements::new(&tagged, |r| flagged(r, &tagged_events, &tags)),
            tagged_alone: AppendStatements::new(&tagged, |r| raising(r, &tagged_events, &tags)),
            many_alone: AppendStatements::new(&plain, |r| alone(r, &events_many)),
            one_alone: AppendStatements::new(&plain, |r| alone(r, &events_one)),
            one_alone_bare: AppendStatements::new(&bare, |r| alone(r, &insert_bare_event(idt))),
            one_alone_lean: AppendStatements::new(&StreamRows::lean(idt, conjoined), |r| {
                alone(r, &insert_lean_event(idt, conjoined))
            }),
            sequenced: AppendStatements::sequenced(&plain, idt, 10, &untagged),
            tagged_sequenced: AppendStatements::sequenced(&tagged, idt, 13, &tags),
            checked: checked_statements(&tagged, &tagged_events, conjoined),
            tag_versions: select_tag_versions(),
            events_by_tags: select_events_by_tags(conjoined),
            few_tags: (1..=FEW_TAGS)
                .map(|n| BoundaryReads::new(n, conjoined))
                .collect(),
            existing_ids: format!(
                "SELECT id FROM {EVENTS_TABLE} WHERE {}id = ANY($1::uuid[]) ORDER BY id",
                scoped(1)
            ),
            stream_version: format!(
                "SELECT version, is_archived FROM {STREAMS_TABLE} WHERE {}id = $1::{idt}",
                scoped(1)
            ),
            lock_stream: format!(
                "SELECT version, is_archived FROM {STREAMS_TABLE} WHERE {}id = $1::{idt} FOR UPDATE",
                scoped(1)
            ),
            lock_streams: lock_streams(identity, conjoined),
            stream_state: format!(
                "SELECT id, version, type, created, timestamp, is_archived FROM {STREAMS_TABLE} WHERE {}id = $1::{idt}",
                scoped(1)
            ),
            fetch_stream: select_stream_events(EVENT_COLUMNS, idt, &scoped(6)),
            fetch_stream_lean: select_stream_events(LEAN_COLUMNS, idt, &scoped(6)),
            fetch_ranges: select_ranges(idt, &scoped(3)),
            sequence_at: format!(
                "SELECT seq_id FROM {EVENTS_TABLE} WHERE {}stream_id = $1::{idt} AND version = $2::bigint",
                scoped(2)
            ),
            read_all: global_page(EVENT_COLUMNS, conjoined),
            read_all_of_tenant: tenant_page(EVENT_COLUMNS),
            read_all_lean: global_page(LEAN_PAGE_COLUMNS, conjoined),
            read_all_of_tenant_lean: tenant_page(LEAN_PAGE_COLUMNS),
            archive: stream_commands::archive(idt, conjoined),
            delete: stream_commands::delete(idt, conjoined),
            lock_command_tags: stream_commands::lock_tags(idt, conjoined),
        }
    }
}

/// The tagged appends that assert a boundary's tag lock (see [`checked`]): `gated`, the
/// tagged appends' stream rows, and `events`, their event insert.
fn checked_statements(gated: &StreamRows, events: &str, conjoined: bool) -> AppendStatements {
    let rows = insert_tag_rows(conjoined);
    AppendStatements {
        start: checked(&gated.start, events, &rows, 14),
        append: checked(&gated.append, events, &rows, 14),
        expected: checked(&gated.expected, events, &rows, 15),
        expected_tip: tipped(gated, |r| checked(r, events, &rows, 15)),
    }
}

/// The tenant condition of a scoped statement whose other parameters end at `$last`
/// (`tenant_id = $<last + 1> AND `), or nothing for single-tenant events.
fn scope(conjoined: bool, last: usize) -> String {
    if conjoined {
        format!("tenant_id = ${}::text AND ", last + 1)
    } else {
        String::new()
    }
}

impl StreamRows {
    /// The stream-row statements of an append whose tenant is `$tenant_param` and whose
    /// expected version is the parameter after it. `conjoined`: the stream is the
    /// tenant's (keyed by `(tenant_id, id)`); otherwise streams are global and the
    /// statements do not name the tenant.
    fn new(idt: &str, tenant_param: usize, conjoined: bool) -> Self {
        Self::build(idt, tenant_param, conjoined, false)
    }

    /// [`StreamRows::new`] writing only when the tag lock (or bump) `ok` before it
    /// passed: the stream row is read from `ok`, so the tags are locked before the stream
    /// is.
    fn gated(idt: &str, tenant_param: usize, conjoined: bool) -> Self {
        Self::build(idt, tenant_param, conjoined, true)
    }

    /// The stream-row statements of [`EventSql::one_alone_lean`]: one event (the literal
    /// count 1), no stream type; conjoined, the tenant is `$5`. The expected version is
    /// the parameter after the last one.
    fn lean(idt: &str, conjoined: bool) -> Self {
        let (columns, values, key, scope, expected) = if conjoined {
            (
                "tenant_id, id, version, last_tx",
                format!("$5::text, $1::{idt}, 1, pg_current_xact_id()"),
                "tenant_id, id",
                "st.tenant_id = $5::text AND ",
                6,
            )
        } else {
            (
                "id, version, last_tx",
                format!("$1::{idt}, 1, pg_current_xact_id()"),
                "id",
                "",
                5,
            )
        };
        StreamRows {
            start: format!(
                "INSERT INTO {STREAMS_TABLE} AS st ({columns}) VALUES ({values}) \
                 ON CONFLICT ({key}) DO NOTHING"
            ),
            append: format!(
                "INSERT INTO {STREAMS_TABLE} AS st ({columns}) VALUES ({values}) \
                 ON CONFLICT ({key}) DO UPDATE SET version = st.version + 1, timestamp = now(), \
                 {LAST_TX_BUMP} WHERE NOT st.is_archived"
            ),
            expected: format!(
                "UPDATE {STREAMS_TABLE} AS st SET version = st.version + 1, timestamp = now(), \
                 {LAST_TX_BUMP} \
                 WHERE {scope}st.id = $1::{idt} AND st.version = ${expected}::bigint AND NOT st.is_archived"
            ),
            tip_scope: tip_scope(conjoined),
        }
    }

    fn build(idt: &str, tenant_param: usize, conjoined: bool, gated: bool) -> Self {
        let expected_param = tenant_param + 1;
        let (columns, values, key, scope) = if conjoined {
            (
                "tenant_id, id, type, version, last_tx",
                format!(
                    "${tenant_param}::text, $1::{idt}, $2::text, $3::bigint, pg_current_xact_id()"
                ),
                "tenant_id, id",
                format!("st.tenant_id = ${tenant_param}::text AND "),
            )
        } else {
            (
                "id, type, version, last_tx",
                format!("$1::{idt}, $2::text, $3::bigint, pg_current_xact_id()"),
                "id",
                String::new(),
            )
        };
        let (rows, gate) = if gated {
            (
                format!("SELECT {values} FROM ok WHERE ok.passed"),
                " AND (SELECT passed FROM ok)",
            )
        } else {
            (format!("VALUES ({values})"), "")
        };
        StreamRows {
            start: format!(
                "INSERT INTO {STREAMS_TABLE} AS st ({columns}) {rows} \
                 ON CONFLICT ({key}) DO NOTHING"
            ),
            append: format!(
                "INSERT INTO {STREAMS_TABLE} AS st ({columns}) {rows} \
                 ON CONFLICT ({key}) DO UPDATE SET version = st.version + excluded.version, timestamp = now(), \
                 {LAST_TX_BUMP} WHERE NOT st.is_archived"
            ),
            expected: format!(
                "UPDATE {STREAMS_TABLE} AS st SET version = st.version + $3::bigint, timestamp = now(), \
                 type = coalesce(st.type, $2::text), {LAST_TX_BUMP} \
                 WHERE {scope}st.id = $1::{idt} AND st.version = ${expected_param}::bigint AND NOT st.is_archived{gate}"
            ),
            tip_scope: tip_scope(conjoined),
        }
    }
}

/// Inserts the events of an append with array parameters, versions counted back from the
/// stream row `s`, recording the tenant `$tenant_param`.
fn insert_events(idt: &str, tenant_param: usize) -> String {
    format!(
        "INSERT INTO {EVENTS_TABLE} (id, stream_id, version, type, data, headers, correlation_id, causation_id, tenant_id, tx_id) \
         SELECT i.id, $1::{idt}, s.version - $3::bigint + i.ord, i.type, i.data, i.headers, i.correlation_id, i.causation_id, \
         ${tenant_param}::text, s.last_tx \
         FROM s, unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[], $9::text[]) \
         WITH ORDINALITY AS i(id, type, data, headers, correlation_id, causation_id, ord) \
         ORDER BY i.ord"
    )
}

/// Inserts the one event of an append with scalar parameters, at the stream row's version,
/// recording the tenant `$tenant_param`.
fn insert_event(idt: &str, tenant_param: usize) -> String {
    format!(
        "INSERT INTO {EVENTS_TABLE} (id, stream_id, version, type, data, headers, correlation_id, causation_id, tenant_id, tx_id) \
         SELECT $4::uuid, $1::{idt}, s.version, $5::text, $6::jsonb, $7::jsonb, $8::text, $9::text, ${tenant_param}::text, s.last_tx FROM s"
    )
}

/// [`insert_event`] of an event without metadata: the tenant is `$7`.
fn insert_bare_event(idt: &str) -> String {
    format!(
        "INSERT INTO {EVENTS_TABLE} (id, stream_id, version, type, data, tenant_id, tx_id) \
         SELECT $4::uuid, $1::{idt}, s.version, $5::text, $6::jsonb, $7::text, s.last_tx FROM s"
    )
}

/// The event of [`EventSql::one_alone_lean`]: `$2` id, `$3` type, `$4` data; conjoined,
/// the tenant `$5` (single-tenant events take the column's default tenant).
fn insert_lean_event(idt: &str, conjoined: bool) -> String {
    let (column, value) = if conjoined {
        (", tenant_id", ", $5::text")
    } else {
        ("", "")
    };
    format!(
        "INSERT INTO {EVENTS_TABLE} (id, stream_id, version, type, data{column}, tx_id) \
         SELECT $2::uuid, $1::{idt}, s.version, $3::text, $4::jsonb{value}, s.last_tx FROM s"
    )
}

/// Inside a larger save: one result row, and the rejected flag when the stream statement
/// took no row (the tags' bumps, if any, are then rolled back with the save by its guard).
/// Never the whole save when tagged: sent alone, nothing would roll the bumps back
/// ([`raising`] is that case).
pub(crate) fn flagged(stream_row: &str, events: &str, tags: &TagCtes) -> String {
    let TagCtes { first, after } = tags;
    format!(
        "WITH {first}s AS ({stream_row} RETURNING st.version, st.last_tx), e AS ({events} RETURNING seq_id, version){after} \
         SELECT (SELECT version FROM s), (SELECT array_agg(seq_id ORDER BY seq_id) FROM e), \
         CASE WHEN NOT EXISTS (SELECT 1 FROM s) THEN set_config('{REJECTED_FLAG}', 't', true) END"
    )
}

/// A tagged append that is the whole save, without a tag lock: [`flagged`]'s CTEs (the
/// tags bumped before the stream row, their rows after the events), ending in the
/// [`verdict`] that raises when the stream took no row. The bumps cannot wait for the
/// stream's verdict (the tags are locked before the stream, the order of every tagged
/// save), so the statement undoes them by failing, as its own transaction.
fn raising(stream_row: &str, events: &str, tags: &TagCtes) -> String {
    let TagCtes { first, after } = tags;
    format!(
        "WITH {first}s AS ({stream_row} RETURNING st.version, st.last_tx), e AS ({events} RETURNING seq_id, version){after}, \
         {verdict}",
        verdict = verdict(),
    )
}

/// The whole save: the event insert is the statement, its row count the result.
fn alone(stream_row: &str, events: &str) -> String {
    format!("WITH s AS ({stream_row} RETURNING st.version, st.last_tx) {events}")
}

/// See [`EventSql::fetch_stream`]: `columns` of the events; `scope` is the tenant
/// condition (or nothing).
fn select_stream_events(columns: &str, idt: &str, scope: &str) -> String {
    format!(
        "SELECT {columns} FROM {EVENTS_TABLE} WHERE {scope}stream_id = $1::{idt} \
         AND version BETWEEN $2::bigint AND $3::bigint \
         AND ($4::timestamptz IS NULL OR timestamp >= $4) AND ($5::timestamptz IS NULL OR timestamp <= $5) \
         AND (NOT is_archived OR $6::boolean) ORDER BY version"
    )
}

/// See [`EventSql::fetch_ranges`]: each range of `unnest` joined to its stream's events
/// by the unique key of versions (an index range scan per stream).
fn select_ranges(idt: &str, scope: &str) -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENTS_TABLE} \
         JOIN unnest($1::{idt}[], $2::bigint[], $3::bigint[]) AS r(r_stream, r_after, r_through) \
         ON stream_id = r_stream AND version > r_after AND version <= r_through \
         WHERE {scope}NOT is_archived ORDER BY stream_id, version"
    )
}

/// A typed query over events (`session.events().query::<E>()`): the events of `mt_events`
/// (as `d`) matching `condition`, in sequence order, with `limit` (` LIMIT $n`, or
/// nothing).
pub fn select_events_where(condition: &str, limit: &str) -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENTS_TABLE} d WHERE {condition} ORDER BY d.seq_id{limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::event_tags::TAG_LOCK;

    /// The highest `$n` a statement uses.
    fn params(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|s| {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn single_tenant_streams_stay_global_and_conjoined_ones_are_scoped() {
        let single = EventSql::of(StreamIdentity::Uuid, Tenancy::Single);
        let conjoined = EventSql::of(StreamIdentity::Uuid, Tenancy::Conjoined);
        for (s, c, n) in [
            (&single.stream_version, &conjoined.stream_version, 1),
            (&single.lock_stream, &conjoined.lock_stream, 1),
            (&single.stream_state, &conjoined.stream_state, 1),
            (&single.fetch_stream, &conjoined.fetch_stream, 6),
            (&single.fetch_stream_lean, &conjoined.fetch_stream_lean, 6),
            (&single.sequence_at, &conjoined.sequence_at, 2),
            (&single.events_by_tags, &conjoined.events_by_tags, 3),
        ] {
            assert!(!s.contains("tenant_id ="), "{s}");
            assert_eq!(params(s), n, "{s}");
            assert!(c.contains(&format!("tenant_id = ${}::text", n + 1)), "{c}");
            assert_eq!(params(c), n + 1, "{c}");
        }
        assert_eq!(params(&single.read_all), 4);
        assert_eq!(
            params(&conjoined.read_all),
            4,
            "the daemon reads every tenant"
        );
        assert_eq!(params(&conjoined.read_all_of_tenant), 5);
        assert_eq!(params(&single.read_all_lean), 4);
        assert_eq!(params(&conjoined.read_all_lean), 4);
        assert_eq!(params(&conjoined.read_all_of_tenant_lean), 5);
        assert_eq!(params(&single.tag_versions), 3);
        assert_eq!(params(TAG_LOCK), 5);
    }

    #[test]
    fn a_checked_append_binds_the_lock_after_the_append() {
        for tenancy in [Tenancy::Single, Tenancy::Conjoined] {
            let sql = EventSql::of(StreamIdentity::Uuid, tenancy);
            let checked = &sql.checked;
            assert_eq!(params(&checked.start), 19, "{}", checked.start);
            assert_eq!(params(&checked.append), 19, "{}", checked.append);
            assert_eq!(params(&checked.expected), 20, "{}", checked.expected);
            for (statement, first) in [(&checked.append, 14), (&checked.expected, 15)] {
                assert!(statement.contains(&format!("unnest(${first}::text[]")));
                // The stream row is gated by the lock: tags are locked first.
                assert!(statement.contains("ok.passed") || statement.contains("FROM ok)"));
                // Bumped once, by the lock; no second bump of the tag versions.
                assert!(!statement.contains("tv AS"), "{statement}");
                assert!(statement.contains("mt_assert_no_rejections()"));
            }
            assert!(!checked.append.contains("*DEFAULT*"));
        }
    }

    #[test]
    fn a_tagged_append_alone_binds_what_a_tagged_one_does_and_raises_when_refused() {
        for tenancy in [Tenancy::Single, Tenancy::Conjoined] {
            let sql = EventSql::of(StreamIdentity::Uuid, tenancy);
            let (alone, tagged) = (&sql.tagged_alone, &sql.tagged);
            for (a, t) in [
                (&alone.start, &tagged.start),
                (&alone.append, &tagged.append),
                (&alone.expected, &tagged.expected),
                (&alone.expected_tip, &tagged.expected_tip),
            ] {
                assert_eq!(params(a), params(t), "{a}");
                // The tags are bumped before the stream row, as in the flagged shape...
                assert!(a.starts_with("WITH tv AS"), "{a}");
                assert!(a.contains("FROM ok WHERE ok.passed") || a.contains("FROM ok)"));
                // ...and a refused stream raises: no guard follows a lone statement.
                assert!(a.contains("mt_assert_no_rejections()"), "{a}");
                assert!(!t.contains("mt_assert_no_rejections()"), "{t}");
                assert!(a.contains("tg AS (INSERT INTO mt_event_tags"), "{a}");
            }
        }
    }

    #[test]
    fn a_boundary_of_few_tags_binds_each_tag_and_then_the_tenant() {
        for tenancy in [Tenancy::Single, Tenancy::Conjoined] {
            let sql = EventSql::of(StreamIdentity::Uuid, tenancy);
            assert_eq!(sql.few_tags.len(), FEW_TAGS);
            for (i, reads) in sql.few_tags.iter().enumerate() {
                let n = i + 1;
                assert_eq!(params(&reads.versions), 2 * n + 1, "{}", reads.versions);
                assert!(reads
                    .versions
                    .contains(&format!("v.tenant_id = ${}::text", 2 * n + 1)));
                let last = format!("(${}::text, ${}::text))", 2 * n - 1, 2 * n);
                assert!(reads.versions.ends_with(&last), "{}", reads.versions);
                let conjoined = tenancy == Tenancy::Conjoined;
                let scoped = 2 * n + usize::from(conjoined) + 1;
                assert_eq!(params(&reads.events), scoped, "{}", reads.events);
                assert_eq!(reads.events.contains("tenant_id ="), conjoined);
                assert!(!reads.events.contains("*DEFAULT*"));
            }
        }
    }

    #[test]
    fn appends_bind_the_tenant_before_the_expected_version() {
        for tenancy in [Tenancy::Single, Tenancy::Conjoined] {
            let sql = EventSql::of(StreamIdentity::String, tenancy);
            for shape in [&sql.many, &sql.one, &sql.many_alone, &sql.one_alone] {
                assert_eq!(params(&shape.start), 10, "{}", shape.start);
                assert_eq!(params(&shape.append), 10, "{}", shape.append);
                assert_eq!(params(&shape.expected), 11, "{}", shape.expected);
                assert!(shape.append.contains("$10::text"), "{}", shape.append);
            }
            let bare = &sql.one_alone_bare;
            assert_eq!(params(&bare.append), 7, "{}", bare.append);
            assert_eq!(params(&bare.expected), 8, "{}", bare.expected);
            assert!(bare.append.contains("$7::text"), "{}", bare.append);
            assert!(!bare.append.contains("headers"), "{}", bare.append);
            let conjoined = tenancy == Tenancy::Conjoined;
            let lean = &sql.one_alone_lean;
            let scope = usize::from(conjoined);
            for statement in [&lean.start, &lean.append] {
                assert_eq!(params(statement), 4 + scope, "{statement}");
                assert_eq!(statement.contains("tenant_id"), conjoined, "{statement}");
                assert!(!statement.contains("type, version"), "{statement}");
            }
            assert_eq!(params(&lean.expected), 5 + scope, "{}", lean.expected);
            assert!(lean
                .expected
                .contains(&format!("st.version = ${}::bigint", 5 + scope)));
            assert_eq!(params(&sql.tagged.start), 13);
            assert_eq!(params(&sql.tagged.expected), 14);
            // Reserved sequences come last.
            assert_eq!(params(&sql.sequenced.append), 11);
            assert_eq!(params(&sql.sequenced.expected), 12);
            assert_eq!(params(&sql.tagged_sequenced.start), 14);
            assert_eq!(params(&sql.tagged_sequenced.expected), 15);
            assert_eq!(
                sql.many.append.contains("ON CONFLICT (tenant_id, id)"),
                conjoined,
                "{}",
                sql.many.append
            );
            assert_eq!(
                sql.tagged
                    .append
                    .contains("(tag_type, tag_value, seq_id, tenant_id)"),
                conjoined,
                "{}",
                sql.tagged.append
            );
        }
        // A tenant id is a parameter: no statement spells one.
        let all = EventSql::of(StreamIdentity::Uuid, Tenancy::Conjoined);
        assert!(!all.tag_versions.contains("*DEFAULT*"));
        assert!(!TAG_LOCK.contains("*DEFAULT*"));
    }
}
