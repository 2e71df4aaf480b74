//! Reading an aggregate to write to its stream: [`Events::fetch_for_writing`] and the
//! [`Writing`] handle whose appends assert the version read. Uses the read API's fold,
//! `encode` / `append_api` to queue appends and the session state for inline projections.

use std::any::TypeId;

use marten_core::{Aggregate, Error, Result, StreamId};

use super::api::Events;
use super::append_api::expecting;
use crate::documents::serialize;
use crate::documents::PgDocument;
use crate::events::pending::PendingEvent;
use crate::events::range::StreamRange;
use crate::projections::{Fetched, Lifecycle};
use crate::session::Tracking;
use crate::stream_key::StreamKey;

#[cfg(doc)]
use marten_core::RejectionKind;

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
        Ok(Writing {
            events: self,
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
