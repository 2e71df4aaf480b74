//! A batch whose commit the database refuses for what its writes hold: a unique index, a
//! CHECK or NOT NULL constraint of a projected table, a value too long or out of range
//! (see [`commit_caused_by_data`]). Sending the same writes again fails the same way, so
//! such a failure meets the poison policy, as a failing apply does (see `plan`): the
//! batch is planned and committed again after a doubling backoff while retries are
//! left; then the event whose writes the database refuses is searched for, by committing
//! runs of the batch's first events (half of a run that failed, the rest of it once that
//! half committed, the rest of the batch after that) down to a single event whose run
//! fails. That event is dead-lettered (its letter committed with the batch's next run,
//! its version left out of every later plan of the batch) and the rest of the batch
//! committed, or, under [`PoisonPolicy::Stop`](marten_core::projection::PoisonPolicy),
//! the projection stops with [`Error::Apply`] naming it, its sequence and the database's
//! error; the runs before it stay committed, so the projection stands right before it.
//! A commit writes each document's state after its run's events, so for a constraint on
//! an aggregate's state the event refused is the first whose run ends in a state that
//! breaks it (an event that breaks it and a later one that mends it, in one batch, are
//! not refused).
//!
//! Every run is a commit of its own, with the progress compare-and-set moving the
//! position from where the runner stands (the end of the last run committed) to the
//! run's last event (the page's end for the batch's last run): a run commits exactly
//! once, or not at all. A run's letters are those of the events up to where it moves the
//! position (and those of events the page did not place, with the first run, and those
//! of later events its documents pass over, see `passed_letters`). A run is planned as
//! a batch of its own: of the events left out so far it sees only those up to its end
//! (a later one counted as seen would have its plan read the stream up to it and fold
//! the page's events between, a later run's: the search would blame the run for them,
//! and a run committed without the later event's letter would leave it neither applied
//! nor recorded if the search were then interrupted). Failures
//! that are not the data's (the connection's, a timeout, a conflict) end the search as
//! the step's failure, which the runner retries a poll interval later from where the
//! committed runs left it; a daemon that stops ends it between runs.
//!
//! .NET Marten, by its documentation, skips (dead-letters) only errors of the projection's
//! own code, of deserialization and of unknown event types (`SkipApplyErrors`: errors
//! "not Marten or PostgreSQL related"); a PostgreSQL error at a batch's commit goes
//! through its resiliency (Polly) retries and then pauses the projection, which stays
//! behind the event until someone intervenes. Here a refusal of the data is pinned on the
//! event whose writes it is and meets the same policy as a failing apply, so that the
//! dead-letter policy keeps the projection going and the stop policy names the event.
//!
//! Owns: the retries of a refused commit and the search for its event. May use: the
//! daemon's plan (planning a run again, the backoff), commit (a run's commit, the letters
//! a batch carries), progression (a run's progress update) and ownership files, the
//! connection layer.

use std::collections::HashMap;

use marten_core::projection::poison::{on_failure, FailureAction};
use marten_core::projection::runner::{commit_caused_by_data, Turn};
use marten_core::{Error, EventEnvelope, Result, StreamId, WithSources};
use tracing::{debug, warn};

use super::Runner;
use crate::connection::Conn;
use crate::daemon::commit::{commit, place, Committed, LeftOut, Letter};
use crate::daemon::ownership::Ownership;
use crate::daemon::progression::Advance;
use crate::events::Position;
use crate::unit_of_work::OpList;

/// A planned batch whose commit the database refused, as the runner carries it on.
pub(super) struct Refused {
    /// Its events not committed yet, in the page's order (without those the poison
    /// policy left out).
    pub(super) events: Vec<EventEnvelope>,
    /// The letters of the events left out, not committed yet.
    pub(super) letters: Vec<Letter>,
    /// The events every plan of the batch leaves out, with their places in the page.
    pub(super) left_out: Vec<LeftOut>,
    /// Where the page ends: where the commit of the batch's last events moves the
    /// position.
    pub(super) end: Position,
}

/// How one attempt at committing a run of the batch's first events ended.
enum Attempt {
    /// The run is committed: the position moved past it.
    Committed,
    /// The database refused the run's writes for what they hold; nothing was written.
    Refused(Error),
    /// The progress moved under the runner (a takeover, a rebuild); nothing was written.
    ProgressMoved,
    /// The daemon stopped while the run waited to be planned again.
    Stopped,
}

impl Runner {
    /// Meets the refusal (`error`) of the commit of `batch` (planned from where `own`
    /// stands): the batch planned and committed again while retries are left, then the
    /// event it fails on searched for and the poison policy carried out on it (see the
    /// module documentation). What the step came to: worked (every event committed or
    /// dead-lettered), idle (the daemon stopped), step down (the progress moved); an
    /// error for a failure that is not the data's, or the stop policy's.
    pub(super) async fn refused(
        &mut self,
        own: &mut Ownership,
        conn: &mut Conn,
        mut batch: Refused,
        mut error: Error,
    ) -> Result<Turn> {
        let mut failures = 1;
        loop {
            let action = on_failure(failures, self.options.retries, self.options.poison);
            let FailureAction::Retry { after } = action else {
                let refused = (error, failures);
                return self.isolate(own, conn, batch, refused, action).await;
            };
            warn!(
                projection = self.slot.name(),
                error = %WithSources(&error),
                "the database refused a batch's writes; retrying in {after:?}"
            );
            if self.back_off(conn, after).await {
                return Ok(Turn::Idle);
            }
            let all = batch.events.len();
            match self.attempt(own, conn, &mut batch, all).await? {
                (Attempt::Committed, _) => return Ok(self.refused_batch_done()),
                (Attempt::Refused(e), _) => {
                    error = e;
                    failures += 1;
                }
                (Attempt::ProgressMoved, _) => return Ok(self.refused_batch_rejected()),
                (Attempt::Stopped, _) => return Ok(Turn::Idle),
            }
        }
    }

    /// Finds the event whose writes the database refuses (`error`, after `failures`
    /// attempts at the whole batch) by committing runs of the batch's first events, and
    /// carries out the poison policy's `action` on each such event, until the batch is
    /// committed to the page's end.
    async fn isolate(
        &mut self,
        own: &mut Ownership,
        conn: &mut Conn,
        mut batch: Refused,
        (error, failures): (Error, u32),
        action: FailureAction,
    ) -> Result<Turn> {
        warn!(
            projection = self.slot.name(),
            error = %WithSources(&error),
            "the database keeps refusing a batch's writes; committing its events in runs to find the event they fail on"
        );
        // A run of the batch's first events whose commit the database refused, and why.
        let mut failing = Some((batch.events.len(), error));
        // The run to try next when none is known to fail.
        let mut next = batch.events.len();
        loop {
            if *self.stop.borrow() {
                // What is committed stands; the next runner reads on from there.
                return Ok(Turn::Idle);
            }
            let known = failing.as_ref().map(|(run, _)| *run);
            let take = match failing.take() {
                // Nothing of the batch's events was in the run: the refusal is not theirs.
                Some((0, error)) => return Err(error),
                Some((1, error)) => {
                    let bad = batch.events.remove(0);
                    let refused = (error, failures);
                    if let Some(turn) = self.refuse(own, &mut batch, bad, refused, action).await? {
                        return Ok(turn);
                    }
                    next = batch.events.len();
                    continue;
                }
                Some((run, _)) => run / 2,
                None => next,
            };
            debug!(
                projection = self.slot.name(),
                events = take,
                "committing a run of a refused batch"
            );
            match self.attempt(own, conn, &mut batch, take).await? {
                (Attempt::Committed, _) if batch.events.is_empty() && own.position == batch.end => {
                    return Ok(self.refused_batch_done());
                }
                // Half a run that failed: the rest of that run holds what failed. Else
                // the rest of the batch is tried whole.
                (Attempt::Committed, _) => {
                    next = known.map_or(batch.events.len(), |run| run.saturating_sub(take));
                }
                (Attempt::Refused(e), planned) => failing = Some((planned, e)),
                (Attempt::ProgressMoved, _) => return Ok(self.refused_batch_rejected()),
                (Attempt::Stopped, _) => return Ok(Turn::Idle),
            }
        }
    }

    /// Plans the batch's first `take` events (at least one while there are any) and
    /// commits them with the letters that go with them, moving the position from where
    /// `own` stands to the run's last event (the page's end when the run is the rest of
    /// the batch). Events the plan dead-letters leave the batch. How it ended, and how
    /// many events the run held as planned; committed, the run is out of the batch.
    ///
    /// A run that is not the rest of the batch sees only the left-out events at or
    /// before its end (see [`LeftOut::seen_by`]): those after it are a later run's, and
    /// its plan neither folds them nor the page's events between on their account. A
    /// left-out event after its end that its plan still passes over (a read of a hole
    /// in its stream, up to a later version the run holds, meets it) has its letter go
    /// with the run, whose documents are then past it (see [`passed_letters`]).
    async fn attempt(
        &mut self,
        own: &mut Ownership,
        conn: &mut Conn,
        batch: &mut Refused,
        take: usize,
    ) -> Result<(Attempt, usize)> {
        let len = batch.events.len();
        let take = if len == 0 { 0 } else { take.clamp(1, len) };
        // Where the run ends in the page; `None` for the rest of the batch.
        let end = match take.checked_sub(1).and_then(|last| batch.events.get(last)) {
            Some(last) if take < len => Some(place(last)),
            _ => None,
        };
        let to = end.unwrap_or(batch.end);
        let mut run: Vec<EventEnvelope> = batch.events[..take].to_vec();
        let known = batch.left_out.len();
        let ops = if run.is_empty() {
            OpList::default()
        } else {
            let (letters, left_out) = (&mut batch.letters, &mut batch.left_out);
            match self
                .plan_run(conn, (&mut run, end), letters, left_out)
                .await?
            {
                Some(ops) => ops,
                None => return Ok((Attempt::Stopped, 0)),
            }
        };
        let sequences: Vec<i64> = run.iter().map(|e| e.sequence).collect();
        let planned = run.len();
        // Events the plan's reads of holes dead-lettered that are the batch's later ones
        // leave the batch as the run's own do (every later plan passes over them).
        let found: Vec<(&StreamId, i64)> = (batch.left_out[known..].iter())
            .filter(|l| l.at.is_none())
            .map(|l| (&l.stream, l.version))
            .collect();
        let mut later = batch.events.split_off(take);
        later.retain(|e| !found.contains(&(&e.stream_id, e.version)));
        // The events the plan dead-lettered (their letters go with this run) are out.
        batch.events = run;
        batch.events.append(&mut later);
        let early = passed_letters(&batch.events[..planned], &batch.left_out, end);
        let goes = |l: &Letter| l.goes_with(to) || early.iter().any(|at| l.is_at(*at));
        let letters: Vec<Letter> = batch.letters.iter().filter(|l| goes(l)).cloned().collect();
        let advance = Advance::new(self.slot.name(), own.position, to, own.epoch);
        let hooks = self.options.hooks.clone();
        hooks.before_commit(&self.hook_name, &sequences);
        match commit(&self.store, conn, (advance, &letters), ops).await {
            Ok(Committed::Yes) => {
                hooks.after_commit(&self.hook_name, &sequences);
                own.position = to;
                batch.letters.retain(|l| !goes(l));
                batch.events.drain(..planned);
                Ok((Attempt::Committed, planned))
            }
            Ok(Committed::ProgressMoved) => Ok((Attempt::ProgressMoved, planned)),
            Err(e) if commit_caused_by_data(&e) => Ok((Attempt::Refused(e), planned)),
            Err(e) => Err(e),
        }
    }

    /// Carries out the poison policy's `action` on `bad`, the event whose writes the
    /// database refuses with `error` (after `failures` attempts at the batch): for
    /// [`FailureAction::Stop`] the error naming it ([`Error::Apply`], its message the
    /// database's error and the event's sequence), or a step down when the runner no
    /// longer holds the projection (the refusal may have come before the progress
    /// update's own rejection); otherwise `None`, its letter added to the batch's and its
    /// version to those every plan of the batch leaves out (a later event of its stream
    /// that reads the stream's earlier versions passes over it).
    async fn refuse(
        &mut self,
        own: &Ownership,
        batch: &mut Refused,
        bad: EventEnvelope,
        (error, failures): (Error, u32),
        action: FailureAction,
    ) -> Result<Option<Turn>> {
        let message = format!(
            "{} (event at sequence {})",
            WithSources(&error),
            bad.sequence
        );
        if action == FailureAction::Stop {
            if !own.still_held(&self.store, self.slot.name()).await {
                return Ok(Some(self.refused_batch_rejected()));
            }
            return Err(Error::Apply {
                projection: self.projection.name(),
                event_type: bad.event_type.into_owned(),
                stream: bad.stream_id,
                version: bad.version,
                message,
            });
        }
        batch.left_out.push(LeftOut {
            stream: bad.stream_id.clone(),
            version: bad.version,
            at: Some(place(&bad)),
        });
        batch.letters.push(Letter::new(
            (self.projection.name(), self.slot.tenant_column()),
            (bad.sequence, Some(place(&bad))),
            &bad.event_type,
            &bad.stream_id,
            (message, failures),
        ));
        Ok(None)
    }

    /// The turn of a refused batch committed to its end (every event of it committed or
    /// dead-lettered).
    fn refused_batch_done(&mut self) -> Turn {
        self.failures = 0;
        Turn::Worked
    }

    /// The turn of a refused batch whose progress moved under the runner: discarded.
    fn refused_batch_rejected(&self) -> Turn {
        warn!(
            projection = self.slot.name(),
            "progress moved under this runner; batch discarded, stepping down"
        );
        self.options.hooks.batch_rejected(&self.hook_name);
        Turn::StepDown
    }
}

/// The places of the left-out events after `end` (a run's, `None` for the rest of the
/// batch, which sees every one) that a plan of the run's events (`run`, as planned) may
/// still pass over: a later version of the event's stream is the run's, or is a left-out
/// one the run sees, so a read of a hole in the stream up to it meets the event (an
/// inversion: the page holds the stream's versions out of their order). The run's
/// document of the stream is then past the event, which no later plan folds: its letter
/// must go with the run, else a search interrupted after the run would leave it neither
/// applied nor recorded. (Counted for every projection, so an event projection's run may
/// send such a letter before the event's own run; the letter is recorded once.)
fn passed_letters(
    run: &[EventEnvelope],
    left_out: &[LeftOut],
    end: Option<Position>,
) -> Vec<Position> {
    if end.is_none() {
        return Vec::new();
    }
    // The highest version of each stream the run sees.
    let mut reach: HashMap<&StreamId, i64> = HashMap::new();
    let seen = (left_out.iter())
        .filter(|l| l.seen_by(end))
        .map(|l| (&l.stream, l.version));
    for (stream, version) in run.iter().map(|e| (&e.stream_id, e.version)).chain(seen) {
        let highest = reach.entry(stream).or_insert(version);
        *highest = (*highest).max(version);
    }
    (left_out.iter())
        .filter(|l| !l.seen_by(end))
        .filter(|l| reach.get(&l.stream).is_some_and(|v| *v > l.version))
        .filter_map(|l| l.at)
        .collect()
}
