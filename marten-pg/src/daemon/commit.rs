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
//! A batch carries its dead letters as [`Letter`]s until a commit of it goes through: a
//! commit consumes its operations, and one the database refuses for what the writes hold
//! is sent again, or in parts (see `runner::refused`), each part with the letters of its
//! own events. The events it leaves out ([`LeftOut`]) are carried with their places in
//! the page, so that a plan of a part of the batch counts as seen only those that are its
//! own.
//!
//! Owns: the commit loop, the letters and left-out events a batch carries. May use: the
//! unit of work, the connection layer, the daemon's tables.

use marten_core::{Error, EventEnvelope, RejectionKind, Result, StreamId};
use tracing::debug;

use super::progression::{Advance, BatchLock, DeadLetter};
use crate::connection::Conn;
use crate::events::Position;
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

/// An event a batch leaves out, as the batch carries it until a commit records it: what
/// its [`DeadLetter`] says (made anew for each commit that sends it) and where the event
/// is in the page.
#[derive(Debug, Clone)]
pub(super) struct Letter {
    /// The projection, and the tenant column of the slot.
    slot: (&'static str, String),
    sequence: i64,
    event_type: String,
    stream: StreamId,
    error: String,
    attempts: u32,
    /// The event's place in the page's order; `None` for an event the batch did not
    /// project itself (one an aggregate read to fill a hole in its stream, one the page
    /// could not decode), whose letter goes with the batch's first commit.
    at: Option<Position>,
}

impl Letter {
    /// The letter of event `sequence` (at `at` in the page) of `stream` for `projection`
    /// (of the slot whose tenant column is `tenant`): its type, why it is left out and how
    /// many times it failed, as [`DeadLetter::new`] takes them.
    pub(super) fn new(
        (projection, tenant): (&'static str, &str),
        (sequence, at): (i64, Option<Position>),
        event_type: &str,
        stream: &StreamId,
        (error, attempts): (String, u32),
    ) -> Self {
        Letter {
            slot: (projection, tenant.to_owned()),
            sequence,
            event_type: event_type.to_owned(),
            stream: stream.clone(),
            error,
            attempts,
            at,
        }
    }

    /// Whether a commit that moves the position up to `to` records it: its event is at
    /// or before `to`, or is none of the page's.
    pub(super) fn goes_with(&self, to: Position) -> bool {
        self.at.is_none_or(|at| at <= to)
    }

    /// Whether it is the letter of the event at `at` in the page.
    pub(super) fn is_at(&self, at: Position) -> bool {
        self.at == Some(at)
    }

    /// The operation that records it.
    fn dead_letter(&self) -> DeadLetter {
        DeadLetter::new(
            (self.slot.0, &self.slot.1),
            self.sequence,
            &self.event_type,
            &self.stream,
            (self.error.clone(), self.attempts),
        )
    }
}

/// An event a batch leaves out (dead-lettered) while it is planned: every plan of the
/// batch passes over it (a read of a hole in its stream that meets it neither applies
/// nor fails on it), and a plan counts its version as seen of its stream when the event
/// is the planned events' own (see [`LeftOut::seen_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeftOut {
    /// The event's stream.
    pub(super) stream: StreamId,
    /// Its version in its stream.
    pub(super) version: i64,
    /// The event's place in the page, as its [`Letter`]'s: `None` for one the batch did
    /// not project itself (one an aggregate read to fill a hole in its stream).
    pub(super) at: Option<Position>,
}

impl LeftOut {
    /// Whether a plan of events that end at `to` in the page (`None`: they run to the
    /// page's end) counts it as seen: an event of the page at or before `to`; one the
    /// page did not place only with its end, since it may be the page's after `to`. A
    /// plan that counted an event after its own end as seen would take its stream to
    /// have been read up to it, fold the later events of the page between (a later run's)
    /// and record the document past them.
    pub(super) fn seen_by(&self, to: Option<Position>) -> bool {
        match (self.at, to) {
            (_, None) => true,
            (Some(at), Some(to)) => at <= to,
            (None, Some(_)) => false,
        }
    }
}

/// Where `event` is in the page's order.
pub(super) fn place(event: &EventEnvelope) -> Position {
    Position {
        transaction_id: event.transaction_id,
        sequence: event.sequence,
    }
}

/// Commits `advance`, then the dead letters of `letters`, then `ops` on `conn`, holding
/// the projection's rebuild lock shared.
pub(super) async fn commit(
    store: &DocumentStore,
    conn: &mut Conn,
    (advance, letters): (Advance, &[Letter]),
    mut ops: OpList,
) -> Result<Committed> {
    let mut uow = UnitOfWork::default();
    uow.push_op(Box::new(BatchLock::of(store.schema(), &advance)));
    uow.push_op(Box::new(advance));
    for letter in letters {
        uow.push_op(Box::new(letter.dead_letter()));
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
