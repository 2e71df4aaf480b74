//! Saving a session: `save_changes` plans the inline projections, adds the tag lock and
//! sends the unit of work, again while a projection met a concurrent save or the
//! transaction lost a deadlock; a cancelled save forgets its queue.

use marten_core::session::{AttemptEnd, SaveAttempts, SaveBackend};
use marten_core::Result;
use tracing::warn;

use super::kinds::is_dirty_tracking;
use super::{Session, Tracking};
use crate::connection::{timed_out, within};
use crate::projections::Planned;
use crate::unit_of_work::Outcome;

impl<K: Tracking> Session<K> {
    /// Sends every queued operation (and, in a dirty-tracked session, every changed
    /// tracked document) in one transaction and one round trip. Either all of it is
    /// written or, on any error, none of it; a rejected save lists every rejected
    /// operation in [`Error::Rejected`](marten_core::Error::Rejected). The queue is emptied either way.
    pub async fn save_changes(&mut self) -> Result<()> {
        if is_dirty_tracking::<K>() {
            let checks = self.options.concurrency_checks;
            if let Err(e) = self.state.flush_dirty(&mut self.uow, checks) {
                self.uow.clear();
                self.state.finish_save(false);
                return Err(e);
            }
        }
        if self.uow.is_empty() && !self.conn.in_transaction() {
            return Ok(());
        }
        // Dropped before the save ends (its future was cancelled), the guard forgets the
        // queued operations: their outcome is unknown, and sending them again could write
        // them twice. The connection's own guard closes the connection.
        let save = SaveGuard { session: self };
        let result = save.session.attempt_save().await;
        save.finish(result.is_ok());
        result
    }

    /// Plans and sends the save until it commits, fails, or conflicts too often: the
    /// loop and its rules are marten-core's ([`marten_core::session::save`]); one attempt
    /// is this session's ([`SaveBackend`]).
    async fn attempt_save(&mut self) -> Result<()> {
        // A session already in a transaction holds exclusive stream locks: a stale
        // cache entry would roll the save back and release them. Read under lock; later
        // attempts also read under lock.
        let held = self.conn.in_transaction();
        marten_core::session::save(&mut SessionSave(self), held).await
    }

    /// Forgets every queued operation without sending it.
    pub fn discard_changes(&mut self) {
        self.uow.clear();
        self.boundaries.clear();
    }
}

/// Ends a save: on success or failure through [`finish`](Self::finish); dropped unfinished
/// (the save's future was cancelled), it forgets the save as failed.
struct SaveGuard<'s, K: Tracking> {
    session: &'s mut Session<K>,
}

impl<K: Tracking> SaveGuard<'_, K> {
    fn finish(self, committed: bool) {
        self.session.end_save(committed);
        std::mem::forget(self);
    }
}

impl<K: Tracking> Drop for SaveGuard<'_, K> {
    fn drop(&mut self) {
        warn!("save_changes was cancelled; its queued operations are discarded");
        self.session.end_save(false);
    }
}

impl<K: Tracking> Session<K> {
    /// Forgets the save's queue and tells the caches how it ended.
    fn end_save(&mut self, committed: bool) {
        crate::projections::cache::settle(
            self.store.as_ref(),
            &self.uow,
            &mut self.cache_updates,
            committed,
        );
        self.boundaries.clear();
        self.uow.clear();
        self.cache_updates.clear();
        self.state.finish_save(committed);
    }
}

/// A session being saved, as the backend of marten-core's save loop (private: callers
/// save through `save_changes`, which flushes and guards against cancellation).
struct SessionSave<'s, K: Tracking>(&'s mut Session<K>);

/// One attempt at a session's save: plan the inline projections on the session's
/// connection, add the tag lock of its boundaries, send the unit of work.
impl<K: Tracking> SaveBackend for SessionSave<'_, K> {
    async fn attempt(&mut self, attempts: &SaveAttempts) -> Result<AttemptEnd> {
        let session = &mut *self.0;
        let mut req = session.conn.request(&session.store).await?;
        session.uow.reset_attempt();
        let planning = crate::projections::plan_inline(
            session.store.as_ref(),
            &mut req,
            &mut session.uow,
            &mut session.state,
            attempts.use_cache(),
            &mut session.cache_updates,
        );
        let Some(planned) = within(&session.store, planning).await else {
            // Nothing was written: the locked reads may still wait on the server.
            req.mark_lost();
            return Err(timed_out(&session.store));
        };
        if let Some(lock) = crate::events::tags::TagLock::for_save(
            session.store.stream_identity(),
            &session.boundaries,
            session.uow.user.appends().map(|(_, a)| a),
        ) {
            session.uow.prelude.push_op(Box::new(lock));
        }
        let end = match planned {
            Ok(Planned::Ready) => {
                let outcome = session
                    .uow
                    .execute(&mut req, session.store.as_ref(), &mut session.state)
                    .await;
                req.settle(&outcome);
                match outcome {
                    Ok(Outcome::Committed) => AttemptEnd::Committed,
                    Ok(Outcome::Retry) => {
                        tracing::debug!("inline projection met a concurrent save; planning again");
                        AttemptEnd::Retry
                    }
                    // The save's own transaction was rolled back whole: nothing was
                    // written.
                    Err(e) => {
                        if attempts.retries(&e) {
                            tracing::debug!(error = %e, "the save lost a deadlock; sending it again");
                        }
                        AttemptEnd::Failed(e)
                    }
                }
            }
            Ok(Planned::Again) => {
                req.rollback().await;
                req.finish();
                tracing::debug!("a cached aggregate was stale; planning again");
                AttemptEnd::PlanAgain
            }
            Err(e) => {
                req.rollback().await;
                req.settle_error(&e);
                if attempts.retries(&e) {
                    tracing::debug!(error = %e, "the save's locked read lost a deadlock; planning again");
                }
                AttemptEnd::Failed(e)
            }
        };
        Ok(end)
    }
}
