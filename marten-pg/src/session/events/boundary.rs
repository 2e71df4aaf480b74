//! Reading a consistency boundary for writing: the versions of the queried tags, then the
//! matching events, folded into a state; appends made through the [`Boundary`] make the
//! save assert those versions. With conjoined events the tags, their versions and the
//! events are the session's tenant's. May use the session's connection, the event
//! tables' SQL and reads, and the pipelined flight of the unit of work.

use std::future::Future;

use marten_core::aggregate::fold;
use marten_core::{Apply, Error, EventEnvelope, EventTag, Result, StreamId, StreamIdentity};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tracing::Instrument;

use super::Events;
use crate::connection::{timed_out, within};
use crate::connection::{Pipeline, Rows};
use crate::events::read;
use crate::events::tags::query::TagQuery;
use crate::events::tags::{reading, tag_version};
use crate::events::EventTenant;
use crate::events::PendingEvent;
use crate::session::{Postgres, Tracking};
use marten_core::session::Parts;

/// A consistency boundary read for writing: the matching events, the state folded from
/// them, and the version of every queried tag when read.
pub struct Boundary<'s, K: Tracking, S> {
    events: Events<'s, K>,
    state: Option<S>,
    matched: Vec<EventEnvelope>,
    versions: Vec<(EventTag, i64)>,
    asserted: bool,
}

impl<K: Tracking, S: Apply> Boundary<'_, K, S> {
    /// The state folded from the matching events.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// The matching events, in sequence order.
    pub fn events(&self) -> &[EventEnvelope] {
        &self.matched
    }

    /// The version of each queried tag when read (0: no event had it).
    pub fn versions(&self) -> &[(EventTag, i64)] {
        &self.versions
    }

    fn assert_once(&mut self) {
        if !self.asserted {
            self.asserted = true;
            let parts = self.events.session.parts_mut();
            parts.boundaries.extend(self.versions.iter().cloned());
        }
    }

    /// Queues events in a new stream of their own; the save asserts the boundary.
    pub fn append(&mut self, events: impl IntoIterator<Item: Into<PendingEvent>>) -> Result<()> {
        let stream = new_stream(self.events.session.parts().store.stream_identity());
        self.append_to(stream, events)
    }

    /// Queues events on a given stream; the save asserts the boundary. Appending no
    /// events queues nothing and asserts nothing (there is nothing to protect).
    pub fn append_to(
        &mut self,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        let events: Vec<PendingEvent> = events.into_iter().map(Into::into).collect();
        let any = !events.is_empty();
        self.events.append(stream, events)?;
        if any {
            self.assert_once();
        }
        Ok(())
    }
}

impl<'s, K: Tracking> Events<'s, K> {
    /// Reads a consistency boundary: the version of each queried tag, then the events
    /// matching the query, folded into `S`. Append through the returned [`Boundary`]; the
    /// save fails with [`RejectionKind::DcbConcurrency`](marten_core::RejectionKind) if
    /// any event with one of these tags was appended in between.
    pub async fn fetch_for_writing_by_tags<S: Apply>(
        self,
        query: TagQuery,
    ) -> Result<Boundary<'s, K, S>> {
        fetch_boundary(self, query, async {}).await
    }
}

/// Reads a boundary as [`Events::fetch_for_writing_by_tags`] does, awaiting
/// `between_reads` after the versions' statement is sent and before the events' statement
/// is. Only marten's tests pass anything but a ready future (through `crate::private`),
/// to race writers in that window.
pub(crate) async fn fetch_boundary<'s, K: Tracking, S: Apply>(
    mut events: Events<'s, K>,
    query: TagQuery,
    between_reads: impl Future<Output = ()> + Send,
) -> Result<Boundary<'s, K, S>> {
    let read = read_boundary(&mut events, &query, between_reads).await?;
    Ok(Boundary {
        events,
        state: read.state,
        matched: read.matched,
        versions: read.versions,
        asserted: false,
    })
}

/// A boundary as read: the state folded from the matching events, the events, and the
/// version of every queried tag.
pub(super) struct ReadBoundary<S> {
    pub(super) state: Option<S>,
    pub(super) matched: Vec<EventEnvelope>,
    pub(super) versions: Vec<(EventTag, i64)>,
}

/// Reads the boundary of `query` on the session's connection (see [`fetch_boundary`]).
pub(super) async fn read_boundary<K: Tracking, S: Apply>(
    events: &mut Events<'_, K>,
    query: &TagQuery,
    between_reads: impl Future<Output = ()> + Send,
) -> Result<ReadBoundary<S>> {
    let tenant = events.tenant()?;
    let tags = checked_tags(query)?;
    let s = events.session.parts_mut();
    let span = crate::trace::boundary(s.store.schema(), tags.len());
    let reading = async {
        s.store.learn_events(S::event_types())?;
        read::ensure(s.store.as_ref()).await?;
        // Limited to some types: also match the aliases and old names that read as them.
        let types = query
            .event_type_names()
            .map(|names| s.store.events().with_registry(|r| r.stored_names_of(names)));
        read_versions_then_events(s, &tenant, &tags, types, between_reads).await
    };
    let (version_rows, event_rows) = reading.instrument(span.clone()).await?;
    span.record("marten.events", event_rows.len());
    let versions = versions_of(&tags, &version_rows)?;
    let matched = read::envelopes(s.store.as_ref(), &event_rows)?;
    let state = fold(None, &matched, |_: &mut S, _| {}).map_err(|(err, i)| {
        crate::projections::apply_error(std::any::type_name::<S>(), &matched[i], err.message)
    })?;
    Ok(ReadBoundary {
        state,
        matched,
        versions,
    })
}

/// A new stream id of `identity`, for events a boundary appends to a stream of their own.
pub(super) fn new_stream(identity: StreamIdentity) -> StreamId {
    match identity {
        StreamIdentity::Uuid => StreamId::Uuid(uuid::Uuid::now_v7()),
        StreamIdentity::String => StreamId::String(uuid::Uuid::now_v7().to_string()),
    }
}

/// The query's tags, deduplicated and in order; at least one, each a valid tag.
pub(super) fn checked_tags(query: &TagQuery) -> Result<Vec<EventTag>> {
    let tags = query.tags();
    if tags.is_empty() {
        return Err(Error::Configuration(
            "a tag query needs at least one tag".to_owned(),
        ));
    }
    for tag in &tags {
        crate::validate::check_tag(&tag.tag_type, &tag.value)?;
    }
    Ok(tags)
}

/// The rows of the tags' versions and of the matching events, read in one flight on the
/// session's connection: versions first; the events' statement starts after it, so it
/// sees at least every event the versions count.
async fn read_versions_then_events(
    s: &mut Parts<Postgres>,
    tenant: &EventTenant,
    tags: &[EventTag],
    event_types: Option<Vec<String>>,
    between_reads: impl Future<Output = ()> + Send,
) -> Result<(Vec<Row>, Vec<Row>)> {
    let types: Vec<String>;
    let values: Vec<String>;
    let sql = s.store.events().sql();
    // A few tags: bound as scalars (statements with generic plans); more: as arrays.
    let few = sql.few_tags.get(tags.len().wrapping_sub(1));
    let mut version_params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(2 * tags.len() + 2);
    let (versions_sql, events_sql) = match few {
        Some(reads) => {
            for t in tags {
                version_params.push(&t.tag_type);
                version_params.push(&t.value);
            }
            (&reads.versions, &reads.events)
        }
        None => {
            types = tags.iter().map(|t| t.tag_type.clone()).collect();
            values = tags.iter().map(|t| t.value.clone()).collect();
            version_params.push(&types);
            version_params.push(&values);
            (&sql.tag_versions, &sql.events_by_tags)
        }
    };
    let mut event_params = version_params.clone();
    event_params.push(&event_types);
    let event_params = tenant.scoped(event_params);
    version_params.push(tenant.tags());
    let req = s.conn.request(&s.store).await?;
    let c = req.client();
    // One bound for all of it: preparing the statements (a Parse waits for the locks of
    // the tables it names, as the queries do) and the queries themselves.
    let reads = async {
        let versions_stmt = c.statement(versions_sql).await?;
        let events_stmt = c.statement(events_sql).await?;
        let mut pipe = Pipeline::new(c, 2);
        let versions = pipe.query(&versions_stmt, &version_params);
        let events = pipe.push(async {
            between_reads.await;
            c.query(&events_stmt, &event_params).await
        });
        Ok::<_, tokio_postgres::Error>((versions, events, pipe.send().await))
    };
    let Some(read) = within(&s.store, reads).await else {
        // Unfinished: the request's guard cancels and closes the connection.
        drop(req);
        return Err(timed_out(&s.store));
    };
    let (versions, events, mut answers) = match read {
        Ok(read) => read,
        Err(e) => {
            let e = reading(e);
            req.settle_error(&e);
            return Err(e);
        }
    };
    req.finish();
    let version_rows = answers.take(versions).map_err(reading)?;
    let event_rows = answers.take::<Rows>(events).map_err(reading)?;
    Ok((version_rows, event_rows))
}

/// The version of each tag (0 when no row has it) from the versions' rows.
fn versions_of(tags: &[EventTag], rows: &[Row]) -> Result<Vec<(EventTag, i64)>> {
    let mut versions: Vec<(EventTag, i64)> = tags.iter().map(|t| (t.clone(), 0)).collect();
    for row in rows {
        let tag = EventTag::named(
            row.try_get::<_, String>(0).map_err(reading)?,
            row.try_get::<_, String>(1).map_err(reading)?,
        );
        let v = tag_version(&tag, row.try_get(2).map_err(reading)?)?;
        if let Some(entry) = versions.iter_mut().find(|(t, _)| *t == tag) {
            entry.1 = v;
        }
    }
    Ok(versions)
}
