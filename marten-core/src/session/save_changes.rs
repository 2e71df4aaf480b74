//! `save_changes` and `discard_changes`: flush the dirty-tracked documents, run the save
//! loop ([`save`](super::save::save)) with the backend's attempts, and end the save
//! however it ends - a cancelled save forgets its queue.

use tracing::field::Empty;
use tracing::{warn, Instrument};

use super::attempts::{AttemptEnd, SaveAttempts};
use super::backend::Backend;
use super::kinds::Tracking;
use super::parts::{Parts, Session};
use super::save::{save, SaveBackend};
use crate::Result;

impl<B: Backend, K: Tracking> Session<B, K> {
    /// Sends every queued operation (and, in a dirty-tracked session, every changed
    /// tracked document) in one transaction and one round trip. Either all of it is
    /// written or, on any error, none of it; a rejected save lists every rejected
    /// operation in [`Error::Rejected`](crate::Error::Rejected). The queue is emptied
    /// either way.
    ///
    /// A changed tracked document that cannot be serialized fails the save before
    /// anything is sent, with [`Error::Serialize`](crate::Error::Serialize) naming its
    /// type and id. It stays tracked, and fails every later save until it is fixed in
    /// place (through `get_mut`) or the session's pending changes are
    /// discarded ([`discard_changes`](Self::discard_changes), which undoes it).
    pub async fn save_changes(&mut self) -> Result<()> {
        let parts = self.parts_mut();
        if K::DIRTY {
            let checks = parts.options.concurrency_checks;
            if let Err(e) = parts.state.flush_dirty(&mut parts.queue, checks) {
                B::clear(&mut parts.queue);
                parts.boundaries.clear();
                parts.state.finish_save(false);
                // The save failed as a whole: the exclusive locks it was to commit under
                // end with it, as when a sent save fails.
                if B::in_transaction(&parts.conn) {
                    B::end_transaction(parts).await;
                }
                return Err(e);
            }
        }
        // An empty save still ends a transaction the session holds, or reports its loss.
        let open = B::in_transaction(&parts.conn) || B::transaction_lost(&parts.conn);
        if B::nothing_queued(&parts.queue) && !open {
            return Ok(());
        }
        // A session already in a transaction holds exclusive stream locks: a stale
        // cache entry would roll the save back and release them, so its attempts read
        // under lock.
        let held = B::in_transaction(&parts.conn);
        let span = save_span(parts);
        // Dropped before the save ends (its future was cancelled), the guard forgets the
        // queued operations: their outcome is unknown, and sending them again could write
        // them twice. The backend's connection closes itself.
        let guard = SaveGuard { parts };
        let mut attempts = Attempts {
            parts: &mut *guard.parts,
            made: 0,
        };
        // Pinned in place: the save's (large) future is built where it runs, neither
        // moved through the span's wrapper nor allocated per save.
        let result = {
            let saving = std::pin::pin!(save(&mut attempts, held));
            saving.instrument(span.clone()).await
        };
        span.record("marten.attempts", attempts.made);
        guard.finish(result.is_ok());
        result
    }

    /// Forgets every pending change without sending it, as Marten's
    /// `EjectAllPendingChanges`: the queued operations (documents, events, patches,
    /// deletes), the captured consistency boundaries and, in a dirty-tracked session,
    /// the in-place changes of the tracked documents - the next `save_changes` writes
    /// none of it.
    ///
    /// A document written, deleted or patched since the last save is not held by the
    /// session any more (its next load reads the database). A tracked document changed
    /// in place goes back to the state it was loaded or last saved in: the discarded
    /// change is undone, so no later save writes it. A tracked document that could not
    /// be serialized ([`Error::Serialize`](crate::Error::Serialize)) is undone too, so it
    /// does not fail later saves.
    ///
    /// An open transaction (an `append_exclusive` or `fetch_for_exclusive_writing`)
    /// stays open, and its stream locks held, until the next `save_changes` (which
    /// commits it, with nothing else in it, or reports
    /// [`Error::TransactionLost`](crate::Error::TransactionLost) if it ended meanwhile)
    /// or until the session is dropped (its connection is then closed, which ends the
    /// transaction on the server).
    pub fn discard_changes(&mut self) {
        let parts = self.parts_mut();
        B::clear(&mut parts.queue);
        parts.boundaries.clear();
        parts.state.discard_changes();
    }
}

/// The span of one `save_changes`: the backend's system and namespace, the number of
/// queued operations, and (recorded when the save ends) the attempts it took - each
/// attempt is one round trip. Its fields are computed only when a subscriber wants it.
fn save_span<B: Backend>(parts: &Parts<B>) -> tracing::Span {
    tracing::info_span!(
        "save_changes",
        db.system = B::SYSTEM,
        db.operation = "save_changes",
        db.namespace = B::namespace(&parts.store),
        marten.operations = B::queued(&parts.queue),
        marten.attempts = Empty,
    )
}

/// Ends a save: on success or failure through [`finish`](Self::finish); dropped unfinished
/// (the save's future was cancelled), it forgets the save as failed.
struct SaveGuard<'s, B: Backend> {
    parts: &'s mut Parts<B>,
}

impl<B: Backend> SaveGuard<'_, B> {
    fn finish(self, committed: bool) {
        end_save(self.parts, committed);
        std::mem::forget(self);
    }
}

impl<B: Backend> Drop for SaveGuard<'_, B> {
    fn drop(&mut self) {
        warn!("save_changes was cancelled; its queued operations are discarded");
        end_save(self.parts, false);
    }
}

/// Forgets the save's queue and tells the caches and the session state how it ended.
fn end_save<B: Backend>(parts: &mut Parts<B>, committed: bool) {
    B::end_save(parts, committed);
    parts.boundaries.clear();
    B::clear(&mut parts.queue);
    parts.state.finish_save(committed);
}

/// A session's parts being saved, as the [`SaveBackend`] of the save loop: each attempt
/// is the backend's, counted in `made`.
struct Attempts<'s, B: Backend> {
    parts: &'s mut Parts<B>,
    made: u32,
}

impl<B: Backend> SaveBackend for Attempts<'_, B> {
    fn attempt(
        &mut self,
        attempts: &SaveAttempts,
    ) -> impl std::future::Future<Output = Result<AttemptEnd>> + Send {
        self.made += 1;
        B::attempt_save(self.parts, attempts)
    }
}
