//! Saving a session: `save_changes` plans the inline projections, adds the tag lock and
//! sends the unit of work, again while a projection met a concurrent save or the
//! transaction lost a deadlock; a cancelled save forgets its queue.

use marten_core::{Error, Result};
use tracing::warn;

use super::kinds::is_dirty_tracking;
use super::{Session, Tracking};
use crate::connection::{timed_out, within};
use crate::projections::Planned;
use crate::unit_of_work::Outcome;

/// How many times a save is planned and sent before it gives up on conflicts.
const MAX_SAVE_ATTEMPTS: u32 = 10;

impl<K: Tracking> Session<K> {
    /// Sends every queued operation (and, in a dirty-tracked session, every changed
    /// tracked document) in one transaction and one round trip. Either all of it is
    /// written or, on any error, none of it; a rejected save lists every rejected
    /// operation in [`Error::Rejected`]. The queue is emptied either way.
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

    /// Plans and sends the save until it commits, fails, or conflicts too often.
    async fn attempt_save(&mut self) -> Result<()> {
        // A session already in a transaction holds exclusive stream locks: a stale
        // cache entry would roll the save back and release them. Read under lock.
        let held = self.conn.in_transaction();
        let mut use_cache = !held;
        let mut conflict = None;
        for _attempt in 0..MAX_SAVE_ATTEMPTS {
            let mut req = self.conn.request(&self.store).await?;
            self.uow.reset_attempt();
            let planning = crate::projections::plan_inline(
                self.store.as_ref(),
                &mut req,
                &mut self.uow,
                &mut self.state,
                use_cache,
                &mut self.cache_updates,
            );
            let Some(planned) = within(&self.store, planning).await else {
                // Nothing was written: the locked reads may still wait on the server.
                req.mark_lost();
                return Err(timed_out(&self.store));
            };
            // Later attempts read under lock.
            use_cache = false;
            if let Some(lock) = crate::events::tags::TagLock::for_save(
                self.store.stream_identity(),
                &self.boundaries,
                self.uow.user.appends().map(|(_, a)| a),
            ) {
                self.uow.prelude.push_op(Box::new(lock));
            }
            match planned {
                Ok(Planned::Ready) => {}
                Ok(Planned::Again) => {
                    req.rollback().await;
                    req.finish();
                    tracing::debug!("a cached aggregate was stale; planning again");
                    continue;
                }
                Err(e) => {
                    req.rollback().await;
                    req.settle_error(&e);
                    if !held && lost_to_a_concurrent_transaction(&e) {
                        tracing::debug!(error = %e, "the save's locked read lost a deadlock; planning again");
                        conflict = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
            let outcome = self
                .uow
                .execute(&mut req, self.store.as_ref(), &mut self.state)
                .await;
            req.settle(&outcome);
            match outcome {
                Ok(Outcome::Committed) => return Ok(()),
                Ok(Outcome::Retry) => {
                    tracing::debug!("inline projection met a concurrent save; planning again");
                }
                // The save's own transaction was rolled back whole: nothing was written.
                Err(e) if !held && lost_to_a_concurrent_transaction(&e) => {
                    tracing::debug!(error = %e, "the save lost a deadlock; sending it again");
                    conflict = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(conflict.unwrap_or(Error::ProjectionConflict {
            attempts: MAX_SAVE_ATTEMPTS,
        }))
    }

    /// Forgets every queued operation without sending it.
    pub fn discard_changes(&mut self) {
        self.uow.clear();
        self.boundaries.clear();
    }
}

/// A deadlock (40P01) or serialization failure (40001): the server rolled the
/// transaction back, so a save that began it wrote nothing and may be sent again.
fn lost_to_a_concurrent_transaction(e: &Error) -> bool {
    matches!(e, Error::Conflict { .. })
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
