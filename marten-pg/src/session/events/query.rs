//! Typed queries over the events of one type, `session.events().query::<E>()`
//! ([`EventQuery`]): the event's fields (`#[derive(Queryable)]` on the event) with the
//! typed filters of documents, and the stream, time range and count of the envelope.
//! Renders with the document queries' renderer over `d.data`, binds every value, and
//! decodes rows like every other event read. Uses the event SQL of `tables::events`.

use std::marker::PhantomData;

use marten_core::query::{Base, Filter, HasFields};
use marten_core::{Event, EventEnvelope, Result, StreamId};
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::api::Events;
use super::stream_row::reading;
use crate::events::read;
use crate::query::render::{render, Sql};
use crate::session::Tracking;
use crate::tables::events::{select_events_where, EVENTS_TABLE};
use crate::tables::tenant_match::tenant_match;

impl<'s, K: Tracking> Events<'s, K> {
    /// A typed query over the events of type `E` (stored under its name or one of its
    /// aliases; events an upcaster reads as `E` have another shape and are not matched),
    /// oldest first. `E` needs `#[derive(Queryable)]` for its fields. Archived streams'
    /// events are left out. With conjoined events only the session's tenant's events
    /// are matched.
    pub fn query<E: Event + HasFields>(self) -> EventQuery<'s, K, E> {
        EventQuery {
            events: self,
            filters: Vec::new(),
            stream: None,
            since: None,
            until: None,
            take: None,
            _e: PhantomData,
        }
    }
}

/// A query over the events of type `E`: build it with [`filter`](Self::filter),
/// [`stream`](Self::stream), [`since`](Self::since), [`until`](Self::until) and
/// [`take`](Self::take), run it with [`to_list`](Self::to_list) or
/// [`count`](Self::count).
#[must_use = "a query does nothing until it is run"]
pub struct EventQuery<'s, K: Tracking, E> {
    events: Events<'s, K>,
    filters: Vec<Filter<E>>,
    stream: Option<StreamId>,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    take: Option<i64>,
    _e: PhantomData<fn() -> E>,
}

impl<'s, K: Tracking, E: Event + HasFields> EventQuery<'s, K, E> {
    /// Keeps events whose data matches the filter built from `E`'s fields. Several calls
    /// combine with AND.
    pub fn filter(mut self, f: impl FnOnce(E::Fields<E>) -> Filter<E>) -> Self {
        self.filters.push(f(E::fields_at(Base::root())));
        self
    }

    /// Keeps the events of one stream.
    pub fn stream(mut self, stream: impl Into<StreamId>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Keeps events recorded at or after `t`.
    pub fn since(mut self, t: OffsetDateTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Keeps events recorded at or before `t`.
    pub fn until(mut self, t: OffsetDateTime) -> Self {
        self.until = Some(t);
        self
    }

    /// At most `n` events (the oldest).
    pub fn take(mut self, n: usize) -> Self {
        self.take = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// The matching events, oldest first.
    pub async fn to_list(self) -> Result<Vec<EventEnvelope>> {
        let (mut events, sql) = self.statement(false)?;
        let rows = run(&mut events, sql).await?;
        read::envelopes(events.session.parts().store.events(), &rows)
    }

    /// How many events match (`take` does not apply).
    pub async fn count(self) -> Result<i64> {
        let (mut events, sql) = self.statement(true)?;
        let rows = run(&mut events, sql).await?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(reading),
            None => Ok(0),
        }
    }

    /// The SQL of [`to_list`](Self::to_list), for logging and tests.
    pub fn to_sql(self) -> Result<String> {
        Ok(self.statement(false)?.1.text)
    }

    /// The statement: the tenant's match (conjoined events), the type names, the stream,
    /// the time range and the filters, all bound; a count, or the rows with the limit.
    fn statement(self, count: bool) -> Result<(Events<'s, K>, Sql)> {
        let tenant = self.events.tenant()?;
        let stream = self.stream.map(|s| self.events.key(s)).transpose()?;
        let mut sql = Sql::default();
        let mut parts = Vec::new();
        if let Some(t) = tenant.scope() {
            let p = sql.param(Box::new(t.clone()));
            parts.push(tenant_match(&format!("{p}::text"), true));
        }
        let names: Vec<String> = std::iter::once(E::EVENT_TYPE)
            .chain(E::ALIASES.iter().copied())
            .map(str::to_owned)
            .collect();
        let p = sql.param(Box::new(names));
        parts.push(format!("d.type = ANY({p}::text[])"));
        parts.push("NOT d.is_archived".to_owned());
        if let Some(key) = stream {
            let p = sql.param(Box::new(key));
            parts.push(format!("d.stream_id = {p}"));
        }
        if let Some(t) = self.since {
            let p = sql.param(Box::new(t));
            parts.push(format!("d.timestamp >= {p}::timestamptz"));
        }
        if let Some(t) = self.until {
            let p = sql.param(Box::new(t));
            parts.push(format!("d.timestamp <= {p}::timestamptz"));
        }
        for f in &self.filters {
            parts.push(render(f.node(), false, &mut sql));
        }
        let condition = parts.join(" AND ");
        sql.text = match (count, self.take) {
            (true, _) => format!("SELECT count(*) FROM {EVENTS_TABLE} d WHERE {condition}"),
            (false, Some(n)) => {
                let p = sql.param(Box::new(n));
                select_events_where(&condition, &format!(" LIMIT {p}::bigint"))
            }
            (false, None) => select_events_where(&condition, ""),
        };
        let sql = sql.checked()?;
        Ok((self.events, sql))
    }
}

/// Runs `sql` on the session's connection, once the event tables exist.
async fn run<K: Tracking>(events: &mut Events<'_, K>, sql: Sql) -> Result<Vec<Row>> {
    let s = events.session.parts_mut();
    read::ensure(s.store.as_ref()).await?;
    s.conn
        .run(&s.store, async |client| {
            let stmt = client.statement(&sql.text).await.map_err(reading)?;
            client.query(&stmt, &sql.refs()).await.map_err(reading)
        })
        .await
}
