//! Reading a runner's next page ahead: while a full batch is planned and committed, the
//! page after it is read on a connection of its own, so that reading one batch overlaps
//! the work of the one before it. A page read ahead is used only by a runner whose
//! position is where the page starts (the batch before it committed); otherwise it is
//! dropped, and a read still running is abandoned (its connection is closed, as any
//! cancelled request's). A runner that ends abandons its read ahead and waits (a bounded
//! while) for the task to be torn down, so that `Daemon::stop` returns with no read task
//! of its runners left: a pooled connection it held is back in the pool or closed (one
//! with a query in flight is closed after a cancel request, which the connection layer
//! sends on its own).
//!
//! Reading early is safe: a page of the gap-safe order read before the previous batch
//! commits is that order as of an earlier moment, which can only end sooner; events that
//! become readable later come in a later page.
//!
//! Owns: the task that reads ahead. May use: the daemon's read, the connection layer.

use std::time::Duration;

use marten_core::{Result, TenantId};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::read::next_page;
use crate::connection::Conn;
use crate::events::{EventPage, Position};
use crate::store::DocumentStore;

/// The longest a runner that ends waits for its abandoned read ahead to be torn down (an
/// aborted task ends at its next await point: at once, unless something blocks the
/// runtime's thread).
const ABANDON_WAIT: Duration = Duration::from_secs(1);

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

    /// Stops the read (if it still runs) and waits, at most [`ABANDON_WAIT`], until its
    /// task is gone: its request dropped, its connection closed (with a cancel request
    /// for a query still running, see `Conn`) or given back to the pool.
    pub(super) async fn abandon(mut self) {
        self.task.abort();
        if tokio::time::timeout(ABANDON_WAIT, &mut self.task)
            .await
            .is_err()
        {
            warn!("an abandoned read ahead was not torn down in {ABANDON_WAIT:?}");
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
