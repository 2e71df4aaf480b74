//! Reading an aggregate to write to its stream: [`Events::fetch_for_writing`] and the
//! [`Writing`] handle whose appends assert the version read. Uses the read API's fold,
//! `encode` / `append_api` to queue appends and the session state for inline projections.

use std::any::TypeId;

use marten_core::{Aggregate, Error, Rejection, RejectionKind, Result, StreamId};

use super::api::Events;
use super::append_api::expecting;
use crate::documents::serialize;
use crate::documents::PgDocument;
use crate::events::pending::PendingEvent;
use crate::events::range::StreamRange;
use crate::projections::{Fetched, Lifecycle};
use crate::session::Tracking;
use crate::stream_key::StreamKey;

impl<'s, K: Tracking> Events<'s, K> {
    /// Reads aggregate `A` and its stream's version to decide on and append to: appends
    /// through the returned [`Writing`] assert that version at save, so the save fails
    /// (with [`RejectionKind::UnexpectedStreamVersion`]) if the stream moved meanwhile. A
    /// stream that does not exist has version 0 and no state; appending starts it.
    pub async fn fetch_for_writing<A: Aggregate + PgDocument>(
        mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Writing<'s, K, A>> {
        let key = self.key(stream.into())?;
        let (state, version) = self.fold::<A>(&key, &StreamRange::all()).await?;
        Ok(Writing::new(self, key, state, version))
    }

    /// [`fetch_for_writing`](Self::fetch_for_writing) for a caller that already knows
    /// the version it decided on (from a read model or a client): fails at once with
    /// [`Error::Rejected`] ([`RejectionKind::UnexpectedStreamVersion`]) if the stream is
    /// not at `expected_version` now (0: it must not exist), and the save asserts it
    /// again.
    pub async fn fetch_for_writing_expected<A: Aggregate + PgDocument>(
        self,
        stream: impl Into<StreamId>,
        expected_version: i64,
    ) -> Result<Writing<'s, K, A>> {
        let writing = self.fetch_for_writing::<A>(stream).await?;
        if writing.version == expected_version {
            return Ok(writing);
        }
        Err(Error::Rejected(vec![Rejection::new(
            "stream",
            writing.stream.0.key(),
            RejectionKind::UnexpectedStreamVersion {
                expected: expected_version,
                actual: (writing.version > 0).then_some(writing.version),
            },
        )]))
    }

    /// [`fetch_for_writing`](Self::fetch_for_writing) under the stream's exclusive lock:
    /// the stream's row is locked first (waiting up to the store's exclusive lock
    /// timeout, then failing with [`Error::StreamLocked`]) and the aggregate is read
    /// under the lock, so no other writer can append until this session's save commits,
    /// fails or the session is dropped: the decision cannot be overtaken. A stream that
    /// does not exist yet has nothing to lock: it reads as version 0 and no state, and
    /// the save's start of it is rejected ([`RejectionKind::StreamExists`]) if another
    /// writer started it first. An archived stream is rejected
    /// ([`RejectionKind::StreamArchived`]). If the fold fails, the lock is released
    /// again, unless the session held other exclusive locks before (its transaction then
    /// goes on until the session saves or is dropped).
    pub async fn fetch_for_exclusive_writing<A: Aggregate + PgDocument>(
        mut self,
        stream: impl Into<StreamId>,
    ) -> Result<Writing<'s, K, A>> {
        let tenant = self.tenant()?;
        let key = self.key(stream.into())?;
        let mark = self.transaction_mark();
        match self.lock_stream(&tenant, &key).await {
            Ok(_) | Err(Error::StreamNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let began = self.began_since(&mark);
        // Under the lock nothing moves the stream between the lock and this read.
        match self.fold::<A>(&key, &StreamRange::all()).await {
            Ok((state, version)) => Ok(Writing::new(self, key, state, version)),
            Err(e) => {
                // No decision to protect: a fold that failed (an apply or an upcaster
                // refusing an event) ends the transaction this fetch began, and its lock.
                self.end_transaction_begun(mark, began).await;
                Err(e)
            }
        }
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

impl<'s, K: Tracking, A> Writing<'s, K, A> {
    fn new(events: Events<'s, K>, stream: StreamKey, state: Option<A>, version: i64) -> Self {
        Writing {
            events,
            stream,
            state,
            version,
            appended: false,
        }
    }
}

impl<'s, K: Tracking, A: Aggregate + PgDocument> Writing<'s, K, A> {
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
    pub fn append(&mut self, events: impl IntoIterator<Item: Into<PendingEvent>>) -> Result<()> {
        let kind = expecting(self.version);
        let Some(append) = self.events.build(kind, self.stream.clone(), events)? else {
            return Ok(());
        };
        let version = crate::projections::advance(&self.stream.0, self.version, append.ids.len())?;
        if !self.appended && self.is_inline() {
            self.hand_state_to_save()?;
        }
        self.events.queue(Some(append));
        self.version = version;
        self.appended = true;
        Ok(())
    }

    /// The event operations the handle was read through (its appends stay queued).
    pub(super) fn into_events(self) -> Events<'s, K> {
        self.events
    }

    /// Whether `A` is an inline projection (folded in the save's transaction).
    fn is_inline(&self) -> bool {
        self.events
            .session
            .store_ref()
            .projections()
            .lifecycle(TypeId::of::<A>())
            == Some(Lifecycle::Inline)
    }

    /// Lets the save's inline projection start from this state instead of reading it
    /// again (a copy: the handle keeps its own).
    fn hand_state_to_save(&mut self) -> Result<()> {
        let state = match &self.state {
            Some(a) => Some(copy_of(a)?),
            None => None,
        };
        self.events.session.parts_mut().state.put_fetched::<A, _>(
            self.stream.0.clone(),
            Fetched {
                version: self.version,
                state,
            },
        );
        Ok(())
    }
}

/// A copy of an aggregate through its JSON (aggregates need not be `Clone`).
fn copy_of<A: Aggregate + PgDocument>(a: &A) -> Result<A> {
    serde_json::from_slice::<A>(&serialize(a)?).map_err(|source| Error::Deserialize {
        document_type: A::DOCUMENT_TYPE,
        id: a.id().to_string(),
        source,
    })
}
