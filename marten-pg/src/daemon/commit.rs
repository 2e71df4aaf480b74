//! Committing a batch: the progress update and the planned writes in one unit of work,
//! sent on the runner's connection in one transaction and one round trip.
//!
//! The projection's rebuild lock ([`BatchLock`], shared) is queued first, then the
//! progress update ([`Advance`]), then the batch's dead letters, then its projected
//! writes. The lock keeps a rebuild of the projection and the batch apart: a rebuild
//! (holding it exclusively) waits for a batch in flight, and a batch that comes while a
//! rebuild runs waits for it to end, so the rebuild sees every slot that has committed
//! anything and no slot commits between its reset and its delete (see `super::rebuild`).
//! Batches of the projection's slots hold it side by side. It is one more statement in
//! the same pipeline: no round trip of its own.
//!
//! The progress update is the exactly-once
//! compare-and-set: it moves the position only from where the batch started and only
//! for the epoch the runner claimed, so a runner that lost the projection writes nothing
//! that could commit. Going before the writes, it also locks the progression row before
//! any projected document, in the order a rebuild takes them (no deadlock).
//!
//! A commit that loses a deadlock or a serialization conflict is sent again, as a
//! session's save is; a timed-out or lost commit is settled by the unit of work (its
//! outcome is looked up, or reported unknown). A dropped commit future leaves nothing
//! open: its [`Request`](crate::connection::Request) guard closes the connection.
//!
//! Owns: the commit loop. May use: the unit of work, the connection layer, the daemon's
//! tables.

use marten_core::{Error, RejectionKind, Result};
use tracing::debug;

use super::progression::{Advance, BatchLock, DeadLetter};
use crate::connection::Conn;
use crate::store::DocumentStore;
use crate::unit_of_work::{OpList, Outcome, SessionState, UnitOfWork};

/// How often a commit that met a concurrent transaction is sent (as a session's save).
const MAX_ATTEMPTS: u32 = 10;

/// How a batch's commit ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Committed {
    /// The writes and the new position are committed.
    Yes,
    /// The progress update was rejected: another runner moved the position (or a rebuild
    /// reset it). Nothing was written.
    ProgressMoved,
}

/// Commits `advance`, then the batch's dead `letters`, then `ops` on `conn`, holding
/// the projection's rebuild lock shared.
pub(super) async fn commit(
    store: &DocumentStore,
    conn: &mut Conn,
    (advance, letters): (Advance, Vec<DeadLetter>),
    mut ops: OpList,
) -> Result<Committed> {
    let mut uow = UnitOfWork::default();
    uow.push_op(Box::new(BatchLock::of(store.schema(), &advance)));
    uow.push_op(Box::new(advance));
    for letter in letters {
        uow.push_op(Box::new(letter));
    }
    uow.user.append(&mut ops);
    let mut state = SessionState::default();
    let mut conflict = None;
    for _attempt in 0..MAX_ATTEMPTS {
        let mut req = conn.request(store).await?;
        uow.reset_attempt();
        let outcome = uow.execute(&mut req, store.as_ref(), &mut state).await;
        req.settle(&outcome);
        match outcome {
            Ok(Outcome::Committed) => return Ok(Committed::Yes),
            Ok(Outcome::Retry) => debug!("a batch's commit met a concurrent save; sending again"),
            // The transaction was rolled back whole: nothing was written.
            Err(e @ Error::Conflict { .. }) => {
                debug!(error = %e, "a batch's commit lost a deadlock; sending it again");
                conflict = Some(e);
            }
            Err(Error::Rejected(r)) if r.iter().any(|r| r.kind == RejectionKind::ProgressMoved) => {
                return Ok(Committed::ProgressMoved);
            }
            Err(e) => return Err(e),
        }
    }
    Err(conflict.unwrap_or(Error::ProjectionConflict {
        attempts: MAX_ATTEMPTS,
    }))
}
