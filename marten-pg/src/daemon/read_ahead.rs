//! Reading a runner's next page ahead: while a full batch is planned and committed, the
//! page after it is read on a connection of its own, so that reading one batch overlaps
//! the work of the one before it. A page read ahead is used only by a runner whose
//! position is where the page starts (the batch before it committed); otherwise it is
//! dropped, and a read still running is abandoned (its connection is closed, as any
//! cancelled request's).
//!
//! Reading early is safe: a page of the gap-safe order read before the previous batch
//! commits is that order as of an earlier moment, which can only end sooner; events that
//! become readable later come in a later page.
//!
//! Owns: the task that reads ahead. May use: the daemon's read, the connection layer.

use marten_core::{Result, TenantId};
use tokio::task::JoinHandle;
use tracing::debug;

use super::read::next_page;
use crate::connection::Conn;
use crate::events::{EventPage, Position};
use crate::store::DocumentStore;

/// A page being read (or read) ahead, from `from` on.
pub(super) struct ReadAhead {
    from: Position,
    task: JoinHandle<Result<EventPage>>,
}

impl ReadAhead {
    /// Starts reading up to `limit` events after `from` (of every tenant, or of `tenant`;
    /// `lean` as the runner reads).
    pub(super) fn start(
        store: &DocumentStore,
        tenant: Option<&TenantId>,
        from: Position,
        limit: usize,
        lean: bool,
    ) -> Self {
        let (store, tenant) = (store.clone(), tenant.cloned());
        let task = tokio::spawn(async move {
            let mut conn = Conn::new();
            next_page(&store, &mut conn, tenant.as_ref(), from, limit, lean).await
        });
        ReadAhead { from, task }
    }

    /// The page, if it starts at `position` and was read; `None` otherwise, and the
    /// runner reads the page itself. A read ahead that failed (a pool that had no
    /// connection to spare in time, say) is not an error of the runner's: its own read
    /// says what is wrong, if anything still is.
    pub(super) async fn take(mut self, position: Position) -> Option<EventPage> {
        if self.from != position {
            return None;
        }
        match (&mut self.task).await {
            Ok(Ok(page)) => Some(page),
            Ok(Err(e)) => {
                debug!(error = %e, "reading ahead failed; reading the page again");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
