//! The append API of [`Events`]: start, append (plain, expected, optimistic, exclusive),
//! archive and delete, each queued on the session's unit of work for `save_changes`.
//! Uses `encode` to build appends, `stream_row` / `lock` for the read-before-append kinds.
//! Every operation takes the session's tenant first (`Events::tenant`): with conjoined
//! events a session without one is refused before anything is queued or sent.

use marten_core::{Error, Result, StreamId, StreamIdentity};

use super::api::Events;
use super::encode::no_events;
use crate::events::pending::PendingEvent;
use crate::events::EventTenant;
use crate::projections::snapshot::queue_deletes as queue_stream_document_deletes;
use crate::session::Tracking;
use crate::stream_key::StreamKey;
use crate::unit_of_work::append::{AppendKind, StreamAppend, StreamCommand};

#[cfg(doc)]
use crate::events::range::StreamRange;
#[cfg(doc)]
use marten_core::RejectionKind;

impl<K: Tracking> Events<'_, K> {
    /// Queues an append built by [`build`](Self::build) (nothing for `None`).
    pub(super) fn queue(&mut self, append: Option<StreamAppend>) {
        if let Some(a) = append {
            self.session.parts_mut().queue.user.push_append(a);
        }
    }

    /// Checks the stream id, builds the append (for the session's tenant: `build` refuses
    /// a session without one on conjoined events) and queues it.
    fn enqueue(
        &mut self,
        kind: AppendKind,
        stream: StreamId,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
        aggregate_type: Option<&str>,
    ) -> Result<()> {
        let key = self.key(stream)?;
        if let Some(t) = aggregate_type {
            crate::validate::check_text(
                t,
                || "aggregate type".to_owned(),
                || ("stream".to_owned(), Some(key.0.to_string())),
            )?;
        }
        // Named in the error of a start without events.
        let starting = (kind == AppendKind::Start).then(|| key.0.to_string());
        let mut append = self.build(kind, key, events)?;
        if let (None, Some(stream)) = (&append, starting) {
            return Err(no_events(stream));
        }
        if let (Some(a), Some(t)) = (&mut append, aggregate_type) {
            a.stream_type = Some(t.to_owned());
        }
        self.queue(append);
        Ok(())
    }

    /// Builds and queues an append that expects the stream at `version`.
    fn enqueue_expected(
        &mut self,
        key: StreamKey,
        version: i64,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        let append = self.build(AppendKind::Expected(version), key, events)?;
        self.queue(append);
        Ok(())
    }

    /// Starts a stream; `save_changes` rejects it with
    /// [`RejectionKind::StreamExists`] if the stream exists. The events get versions
    /// 1..=n. A stream cannot be started without events: that is
    /// [`Error::InvalidInput`] at once, and nothing is queued.
    pub fn start_stream(
        &mut self,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        self.enqueue(AppendKind::Start, stream.into(), events, None)
    }

    /// Like [`start_stream`](Self::start_stream), recording the aggregate type name the
    /// stream belongs to.
    pub fn start_stream_of(
        &mut self,
        aggregate_type: &str,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        self.enqueue(
            AppendKind::Start,
            stream.into(),
            events,
            Some(aggregate_type),
        )
    }

    /// Appends events, creating the stream if it does not exist. Appending no events does
    /// nothing.
    pub fn append(
        &mut self,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        self.enqueue(AppendKind::Append, stream.into(), events, None)
    }

    /// Appends events if the stream is at `expected_version` when saved, where
    /// `expected_version` is the version the caller saw **before** this append (0: the
    /// stream must not exist yet, and this append starts it: with no events, that is
    /// [`Error::InvalidInput`] as for [`start_stream`](Self::start_stream)). Otherwise
    /// `save_changes` rejects it with [`RejectionKind::UnexpectedStreamVersion`] (or
    /// `StreamExists` for 0). With no events and a version above 0, the save asserts the
    /// version and appends nothing. A negative version, which no stream has, is
    /// [`Error::InvalidInput`] naming the stream, at once (nothing is queued).
    pub fn append_expected(
        &mut self,
        stream: impl Into<StreamId>,
        expected_version: i64,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        let stream = stream.into();
        if expected_version < 0 {
            return Err(Error::InvalidInput {
                owner: "stream".to_owned(),
                id: Some(stream.to_string()),
                field: "expected version".to_owned(),
                reason: "is negative: no stream has a version below 0 (0: not started)",
            });
        }
        self.enqueue(expecting(expected_version), stream, events, None)
    }

    /// Reads the stream's version now and appends with that version expected: the save
    /// fails if the stream moved in between. A missing stream is
    /// [`Error::StreamNotFound`].
    pub async fn append_optimistic(
        &mut self,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        let tenant = self.tenant()?;
        let key = self.key(stream.into())?;
        let version = self.current_version(&tenant, &key).await?;
        self.enqueue_expected(key, version, events)
    }

    /// Locks the stream's row now (waiting up to the store's exclusive lock timeout, then
    /// failing with [`Error::StreamLocked`]) and appends with its current version
    /// expected. The session holds the lock in an open transaction until `save_changes`
    /// commits, the save fails, or the session is dropped. A missing stream is
    /// [`Error::StreamNotFound`].
    pub async fn append_exclusive(
        &mut self,
        stream: impl Into<StreamId>,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<()> {
        let tenant = self.tenant()?;
        let key = self.key(stream.into())?;
        let version = self.lock_stream(&tenant, &key).await?;
        self.enqueue_expected(key, version, events)
    }

    /// Archives a stream (queued): its events leave normal reads and appends to it are
    /// rejected; [`StreamRange::including_archived`] still reads them.
    pub fn archive_stream(&mut self, stream: impl Into<StreamId>) -> Result<()> {
        self.enqueue_command(stream.into(), StreamCommand::archive)
    }

    /// Deletes a stream and all its events (queued), and, in the same transaction, the
    /// snapshots live aggregates keep of it and the documents inline single-stream
    /// aggregates projected from it (the stream id is their id; a conjoined aggregate's
    /// document of the session's tenant, with conjoined events; every tenant's with
    /// single-tenant ones): a stream started again under the same id never starts from
    /// the deleted one's snapshot or document, and no read serves an aggregate of a
    /// stream that is gone.
    pub fn delete_stream(&mut self, stream: impl Into<StreamId>) -> Result<()> {
        let stream = stream.into();
        self.enqueue_command(stream.clone(), StreamCommand::delete)?;
        let (tenant, key) = (self.tenant()?, self.key(stream)?);
        let parts = self.session.parts_mut();
        let projections = parts.store.projections();
        queue_stream_document_deletes(projections, &tenant, &key, &mut parts.queue.user);
        Ok(())
    }

    /// Checks the stream id and queues the stream command `make` builds for it.
    fn enqueue_command(
        &mut self,
        stream: StreamId,
        make: fn(StreamIdentity, EventTenant, StreamKey) -> StreamCommand,
    ) -> Result<()> {
        let tenant = self.tenant()?;
        let key = self.key(stream)?;
        let parts = self.session.parts_mut();
        let identity = parts.store.stream_identity();
        parts.queue.user.push_command(make(identity, tenant, key));
        Ok(())
    }
}

/// The append kind that expects the stream at `version` (0: the stream must not exist).
pub(super) fn expecting(version: i64) -> AppendKind {
    if version == 0 {
        AppendKind::Start
    } else {
        AppendKind::Expected(version)
    }
}
