//! Dynamic consistency boundaries: tag queries, the boundary a session reads for writing,
//! and the tag lock that asserts it at save.
//!
//! Every tagged append bumps the version of each of its tags in `mt_tag_versions`.
//! `fetch_for_writing_by_tags` reads the versions of the queried tags first and the
//! matching events second, in one flight of two statements (so the versions are never
//! fresher than the events). Saving through the boundary asserts every captured version,
//! in (tag_type, tag_value) order, and bumps it: a racer that read the same versions then
//! finds them moved and its save is rejected.

use std::any::TypeId;
use std::future::Future;

use futures_util::future::BoxFuture;
use marten_core::aggregate::fold;
use marten_core::{
    Apply, Error, Event, EventEnvelope, EventTag, Rejection, RejectionKind, Result, StreamId,
    StreamIdentity, Tag,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::api::{events_schema, Events, PendingEvent};
use super::append::StreamAppend;
use super::read;
use super::table::{EventSql, TAG_LOCK, TAG_VERSIONS_TABLE};
use crate::connection::{timed_out, within};
use crate::error_map::{map_db_error, Failed};
use crate::schema::MigrateFn;
use crate::session::Tracking;
use crate::unit_of_work::Operation;
use crate::unit_of_work::{join_in_order, StatementFuture};

/// Which events a boundary covers: any of its tags, optionally only some event types.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TagQuery {
    tags: Vec<EventTag>,
    event_types: Option<Vec<&'static str>>,
}

impl TagQuery {
    /// An empty query; add tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events carrying this typed tag.
    pub fn tag<T: Tag>(mut self, value: T) -> Self {
        self.tags.push(EventTag::of(&value));
        self
    }

    /// Events carrying this tag, given by type name and value (for plain `#[tag]` fields).
    pub fn tag_named(mut self, tag_type: impl Into<String>, value: impl ToString) -> Self {
        self.tags.push(EventTag::named(tag_type, value));
        self
    }

    /// Only events of these types: `.event_types::<(CourseDefined, StudentSubscribed)>()`.
    pub fn event_types<T: EventTypes>(mut self) -> Self {
        self.event_types = Some(T::names());
        self
    }

    /// The tags, deduplicated and in (type, value) order.
    pub fn tags(&self) -> Vec<EventTag> {
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        tags
    }
}

/// A tuple of event types, for [`TagQuery::event_types`].
pub trait EventTypes {
    /// The stored type names.
    fn names() -> Vec<&'static str>;
}

macro_rules! event_tuples {
    ($($t:ident),+) => {
        impl<$($t: Event),+> EventTypes for ($($t,)+) {
            fn names() -> Vec<&'static str> {
                vec![$($t::EVENT_TYPE),+]
            }
        }
    };
}

event_tuples!(A);
event_tuples!(A, B);
event_tuples!(A, B, C);
event_tuples!(A, B, C, D);
event_tuples!(A, B, C, D, E);
event_tuples!(A, B, C, D, E, F);
event_tuples!(A, B, C, D, E, F, G);
event_tuples!(A, B, C, D, E, F, G, H);

fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("tag"))
}

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
            self.events
                .session
                .boundaries
                .extend(self.versions.iter().cloned());
        }
    }

    /// Queues events in a new stream of their own; the save asserts the boundary.
    pub fn append<I>(&mut self, events: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        let stream = match self.events.session.store.stream_identity() {
            StreamIdentity::Uuid => StreamId::Uuid(uuid::Uuid::now_v7()),
            StreamIdentity::String => StreamId::String(uuid::Uuid::now_v7().to_string()),
        };
        self.append_to(stream, events)
    }

    /// Queues events on a given stream; the save asserts the boundary.
    pub fn append_to<I>(&mut self, stream: impl Into<StreamId>, events: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<PendingEvent>,
    {
        self.assert_once();
        self.events.append(stream, events)
    }
}

impl<'s, K: Tracking> Events<'s, K> {
    /// Reads a consistency boundary: the version of each queried tag, then the events
    /// matching the query, folded into `S`. Append through the returned [`Boundary`]; the
    /// save fails with [`RejectionKind::DcbConcurrency`] if any event with one of these
    /// tags was appended in between.
    pub async fn fetch_for_writing_by_tags<S: Apply>(
        self,
        query: TagQuery,
    ) -> Result<Boundary<'s, K, S>> {
        self.fetch_for_writing_by_tags_pausing(query, async {})
            .await
    }

    /// [`fetch_for_writing_by_tags`](Self::fetch_for_writing_by_tags) that awaits `pause`
    /// between reading the versions and reading the events (tests race there).
    #[doc(hidden)]
    pub async fn fetch_for_writing_by_tags_pausing<S: Apply>(
        self,
        query: TagQuery,
        pause: impl Future<Output = ()> + Send,
    ) -> Result<Boundary<'s, K, S>> {
        let this = self;
        let tags = query.tags();
        if tags.is_empty() {
            return Err(Error::Configuration(
                "a tag query needs at least one tag".to_owned(),
            ));
        }
        for tag in &tags {
            crate::validate::check_tag(&tag.tag_type, &tag.value)?;
        }
        let types: Vec<String> = tags.iter().map(|t| t.tag_type.clone()).collect();
        let values: Vec<String> = tags.iter().map(|t| t.value.clone()).collect();
        let event_types: Option<Vec<&str>> = query.event_types.clone();
        let s = &mut *this.session;
        s.store.learn_events(S::event_types());
        read::ensure(&s.store).await?;
        let sql = EventSql::get(s.store.stream_identity());
        let req = s.conn.request(&s.store).await?;
        let client = req.client();
        let prepared = async {
            let versions = client.prepare_cached(&sql.tag_versions).await?;
            let events = client.prepare_cached(&sql.events_by_tags).await?;
            Ok::<_, tokio_postgres::Error>((versions, events))
        }
        .await;
        let (versions_stmt, events_stmt) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let e = reading(e);
                req.settle_error(&e);
                return Err(e);
            }
        };
        let c: &Client = client;
        let version_params: [&(dyn ToSql + Sync); 2] = [&types, &values];
        let event_params: [&(dyn ToSql + Sync); 3] = [&types, &values, &event_types];
        // Versions first; the events' statement starts after it, so it sees at least
        // every event the versions count.
        let (version_rows, event_rows) = {
            let flight: Vec<StatementFuture<'_>> = vec![
                Box::pin(c.query(&versions_stmt, &version_params)),
                Box::pin(async {
                    pause.await;
                    c.query(&events_stmt, &event_params).await
                }),
            ];
            let Some(results) = within(&s.store, join_in_order(flight)).await else {
                drop(req);
                return Err(timed_out(&s.store));
            };
            let mut results = results.into_iter();
            (results.next(), results.next())
        };
        req.finish();
        let version_rows = version_rows.unwrap_or(Ok(Vec::new())).map_err(reading)?;
        let event_rows = event_rows.unwrap_or(Ok(Vec::new())).map_err(reading)?;
        let mut versions: Vec<(EventTag, i64)> = tags.iter().map(|t| (t.clone(), 0)).collect();
        for row in &version_rows {
            let tag = EventTag::named(
                row.try_get::<_, String>(0).map_err(reading)?,
                row.try_get::<_, String>(1).map_err(reading)?,
            );
            let v = tag_version(&tag, row.try_get(2).map_err(reading)?)?;
            if let Some(entry) = versions.iter_mut().find(|(t, _)| *t == tag) {
                entry.1 = v;
            }
        }
        let matched = read::envelopes(&s.store, &event_rows)?;
        let state = fold(None, &matched, |_: &mut S, _| {}).map_err(|(err, i)| {
            crate::projections::apply_error(std::any::type_name::<S>(), &matched[i], err.message)
        })?;
        Ok(Boundary {
            events: this,
            state,
            matched,
            versions,
            asserted: false,
        })
    }
}

/// A stored tag version: NULL or negative (a row edited by hand) is
/// [`Error::CorruptData`] naming the tag.
fn tag_version(tag: &EventTag, stored: Option<i64>) -> Result<i64> {
    match stored {
        Some(v) if v >= 0 => Ok(v),
        other => Err(Error::CorruptData {
            owner: format!("tag {:?}", tag.tag_type),
            id: Some(format!("{:?}", tag.value)),
            detail: match other {
                Some(v) => format!("{TAG_VERSIONS_TABLE}.version is negative ({v})"),
                None => format!("{TAG_VERSIONS_TABLE}.version is NULL"),
            },
        }),
    }
}

/// The tag lock of a save (see the module docs), placed before every other statement.
pub(crate) struct TagLock {
    identity: StreamIdentity,
    types: Vec<String>,
    values: Vec<String>,
    captured: Vec<Option<i64>>,
    count: i64,
    written: Vec<(String, String)>,
    rejected: bool,
}

impl TagLock {
    /// The lock for a save's boundaries and tagged appends; `None` when a single tagged
    /// append (which bumps its own tags in order) or nothing needs none.
    pub(crate) fn for_save<'a>(
        identity: StreamIdentity,
        boundaries: &[(EventTag, i64)],
        appends: impl Iterator<Item = &'a StreamAppend>,
    ) -> Option<TagLock> {
        let appends: Vec<&StreamAppend> = appends.filter(|a| !a.tag_types.is_empty()).collect();
        if boundaries.is_empty() && appends.len() < 2 {
            return None;
        }
        let mut all: std::collections::BTreeMap<EventTag, Option<i64>> =
            std::collections::BTreeMap::new();
        for a in appends {
            for (t, v) in a.tag_types.iter().zip(&a.tag_values) {
                all.entry(EventTag::named(t.clone(), v)).or_insert(None);
            }
        }
        for (tag, captured) in boundaries {
            all.insert(tag.clone(), Some(*captured));
        }
        let mut lock = TagLock {
            identity,
            types: Vec::new(),
            values: Vec::new(),
            captured: Vec::new(),
            count: 0,
            written: Vec::new(),
            rejected: false,
        };
        for (tag, captured) in all {
            lock.types.push(tag.tag_type);
            lock.values.push(tag.value);
            lock.captured.push(captured);
        }
        lock.count = lock.types.len() as i64;
        Some(lock)
    }
}

impl Operation for TagLock {
    fn sql(&self) -> &'static str {
        TAG_LOCK
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.types, &self.values, &self.captured, &self.count]
    }

    fn len(&self) -> usize {
        0
    }

    fn checked(&self) -> bool {
        true
    }

    fn atomic(&self) -> bool {
        false
    }

    fn document_type(&self) -> &'static str {
        "tag"
    }

    fn table(&self) -> &'static str {
        TAG_VERSIONS_TABLE
    }

    fn schema(&self) -> (TypeId, MigrateFn) {
        events_schema(self.identity)
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let types: Option<Vec<String>> = row.try_get(0).map_err(reading)?;
        let values: Option<Vec<String>> = row.try_get(1).map_err(reading)?;
        self.written = types
            .unwrap_or_default()
            .into_iter()
            .zip(values.unwrap_or_default())
            .collect();
        self.rejected = (self.written.len() as i64) < self.count;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn reset(&mut self) {
        self.written.clear();
        self.rejected = false;
    }

    fn explain<'a>(&'a self, client: &'a Client) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            let sql = EventSql::get(self.identity);
            let rows = client
                .query(sql.tag_versions.as_str(), &[&self.types, &self.values])
                .await
                .map_err(reading)?;
            let mut out = Vec::new();
            for i in 0..self.types.len() {
                let key = (self.types[i].clone(), self.values[i].clone());
                let Some(expected) = self.captured[i] else {
                    continue;
                };
                if self.written.contains(&key) {
                    continue;
                }
                let mut actual = 0;
                for r in &rows {
                    if r.try_get::<_, String>(0).map_err(reading)? == key.0
                        && r.try_get::<_, String>(1).map_err(reading)? == key.1
                    {
                        let tag = EventTag::named(key.0.clone(), &key.1);
                        actual = tag_version(&tag, r.try_get(2).map_err(reading)?)?;
                    }
                }
                out.push(Rejection::new(
                    "tag",
                    marten_core::IdKey::String(key.1.clone()),
                    RejectionKind::DcbConcurrency {
                        tag_type: key.0,
                        expected,
                        actual,
                    },
                ));
            }
            Ok(out)
        })
    }
}
