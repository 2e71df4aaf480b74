//! Planning a batch: the projection's writes for the events read, on the runner's
//! connection. A batch whose planning fails because of its events or the projection's
//! own data (a failing apply, an invalid document id, a document that does not serialize
//! or no longer deserializes: see [`caused_by_data`]) is planned again with doubling
//! backoff; an event that keeps failing meets the poison policy: dead-lettered (left out
//! of the batch, its dead letter committed with it) or the projection stops. A failure
//! that names no event (a document's) is pinned on the first event whose planning fails
//! (planning ever shorter runs of the batch's first events). Any other failure (the
//! database's, the connection's) is the step's, which the runner retries.
//!
//! The runner's connection is given back to the pool while the batch waits to be planned
//! again, and the wait ends when the daemon stops (the batch is then given up, nothing of
//! it committed). The tables of the documents a batch writes are made sure of outside
//! the planning request: those the projection is known to write before it plans, those
//! planned after it, with the runner's connection set aside over a caller's pool (see
//! `Runner::ensure_written`), so a pool of as many connections as runners never waits
//! for itself. A batch whose commit the database refuses (see `runner::refused`) is
//! planned again, whole or in parts, with the events already left out of it kept out.
//! A plan of a part of a batch (a run of its first events, or a prefix while a failure
//! is pinned) sees only the left-out events at or before its own end: the others (the
//! page's later ones, and those the page did not place) it only passes over, so that it
//! never folds the events of the page after its end on their account (see
//! [`LeftOut::seen_by`]).
//!
//! Owns: carrying out the retries and the poison policy (the decision, retry after a
//! backoff / dead-letter / stop, is [`marten_core::projection::poison`]'s, which failures
//! it meets [`marten_core::projection::runner`]'s). May use: the projections layer (the
//! projection plans, [`EventHooks`] forwards to the daemon's hooks, the aggregate's
//! stream order is told the projection it plans for), the connection layer, the letters
//! a batch carries to its commit (`commit`).

use std::any::TypeId;
use std::sync::Arc;
use std::time::Duration;

use marten_core::projection::poison::{on_failure, FailureAction};
use marten_core::projection::runner::caused_by_data;
use marten_core::{Error, EventEnvelope, Result, StreamId, WithSources};
use tracing::{debug, warn};

use super::commit::{place, LeftOut, Letter};
use super::hooks::DaemonHooks;
use super::runner::{idle, Runner};
use crate::connection::Conn;
use crate::events::read::sequence_at;
use crate::events::{EventTenant, Position};
use crate::projections::asynchronous::{Batch, EventHooks};
use crate::projections::event_projection::planning;
use crate::schema::MigrateFn;
use crate::stream_key::StreamKey;
use crate::unit_of_work::OpList;

/// The daemon's hooks, as the projections call them around each event.
impl EventHooks for Arc<dyn DaemonHooks> {
    fn before_event(&self, projection: &str, event: &EventEnvelope) {
        DaemonHooks::before_event(self.as_ref(), projection, event);
    }

    fn after_event(&self, projection: &str, event: &EventEnvelope) {
        DaemonHooks::after_event(self.as_ref(), projection, event);
    }
}

/// The daemon's hooks as a slot's projection calls them: a shard's events are told under
/// the shard's name (`Tally#2/3`), as its batches are.
struct SlotHooks<'a> {
    hooks: &'a Arc<dyn DaemonHooks>,
    /// The shard's name, for a shard's slot.
    shard: Option<&'a str>,
}

impl EventHooks for SlotHooks<'_> {
    fn before_event(&self, projection: &str, event: &EventEnvelope) {
        EventHooks::before_event(self.hooks, self.shard.unwrap_or(projection), event);
    }

    fn after_event(&self, projection: &str, event: &EventEnvelope) {
        EventHooks::after_event(self.hooks, self.shard.unwrap_or(projection), event);
    }
}

/// An apply that failed: the event it failed on and why.
struct FailedApply {
    event_type: String,
    stream: StreamId,
    version: i64,
    message: String,
}

impl FailedApply {
    /// The failure an apply error names; another error is given back.
    fn of(error: Error) -> std::result::Result<Self, Error> {
        match error {
            Error::Apply {
                stream,
                version,
                message,
                event_type,
                ..
            } => Ok(FailedApply {
                event_type,
                stream,
                version,
                message,
            }),
            other => Err(other),
        }
    }

    /// `error`, which names no event, pinned on `event`: its message names the event's
    /// sequence.
    fn pinned(error: &Error, event: &EventEnvelope) -> Self {
        FailedApply {
            event_type: event.event_type.clone().into_owned(),
            stream: event.stream_id.clone(),
            version: event.version,
            message: format!(
                "{} (event at sequence {})",
                WithSources(error),
                event.sequence
            ),
        }
    }
}

impl Runner {
    /// Plans a batch on `conn`, planning it again after a failure its events or the
    /// projection's data caused ([`caused_by_data`]) and applying the poison policy to an
    /// event that keeps failing: dead-lettered, it is removed from `events` (or, an
    /// event an aggregate read to fill a hole in its stream, left out of that read), its
    /// stream, version and place added to `left_out` (the events of the batch that every
    /// read of it leaves out, kept by the caller for every time it plans the batch) and
    /// its dead letter to `letters`. `None` when the daemon stopped while the batch waited to be
    /// planned again. Between attempts `conn` holds no connection.
    pub(super) async fn plan(
        &mut self,
        conn: &mut Conn,
        events: &mut Vec<EventEnvelope>,
        letters: &mut Vec<Letter>,
        left_out: &mut Vec<LeftOut>,
    ) -> Result<Option<OpList>> {
        self.plan_run(conn, (events, None), letters, left_out).await
    }

    /// Plans `events` as [`Runner::plan`] does, for events that end at `to` in the page
    /// (`None`: at its end; else they are a run of its first events, and a plan sees only
    /// the left-out events at or before `to`, see [`LeftOut::seen_by`]).
    pub(super) async fn plan_run(
        &mut self,
        conn: &mut Conn,
        (events, to): (&mut Vec<EventEnvelope>, Option<Position>),
        letters: &mut Vec<Letter>,
        left_out: &mut Vec<LeftOut>,
    ) -> Result<Option<OpList>> {
        let name = self.projection.name();
        loop {
            let error = match self
                .plan_once(conn, (events.as_slice(), to), left_out)
                .await
            {
                Ok(ops) => return Ok(Some(ops)),
                Err(e) if caused_by_data(&e) => e,
                Err(e) => return Err(e),
            };
            self.failures += 1;
            let action = on_failure(self.failures, self.options.retries, self.options.poison);
            if let FailureAction::Retry { after } = action {
                warn!(
                    projection = name,
                    error = %WithSources(&error),
                    "planning a batch failed on its events; retrying in {after:?}"
                );
                if self.back_off(conn, after).await {
                    return Ok(None);
                }
                continue;
            }
            let failed = match FailedApply::of(error) {
                Ok(failed) => failed,
                Err(error) => {
                    self.pin(conn, (events.as_slice(), to), left_out, error)
                        .await?
                }
            };
            let (sequence, at) = self.poison(conn, events, left_out, &failed, action).await?;
            left_out.push(LeftOut {
                stream: failed.stream.clone(),
                version: failed.version,
                at,
            });
            letters.push(Letter::new(
                (name, self.slot.tenant_column()),
                (sequence, at),
                &failed.event_type,
                &failed.stream,
                (failed.message, self.failures),
            ));
            self.failures = 0;
        }
    }

    /// Waits `after` before a failed batch is planned again, with `conn`'s connection
    /// given back to the pool meanwhile (the node's other runners use it); the wait ends
    /// early when the daemon stops. Whether the daemon stopped.
    pub(super) async fn back_off(&self, conn: &mut Conn, after: Duration) -> bool {
        // Nothing is open on it between attempts (a plan only reads, a commit that failed
        // rolled back): back to the pool.
        *conn = self.conn();
        if !*self.stop.borrow() {
            idle(&self.stop, after).await;
        }
        *self.stop.borrow()
    }

    /// The failure of the first event whose planning fails, for a failure of the batch
    /// (`error`) that names no event (a document that does not serialize, a stored one
    /// that no longer deserializes): the batch's first events are planned, half as many
    /// each time, down to the shortest run that still fails; its failure is pinned on the
    /// last event of that run (or is the event an apply error of that run names). A
    /// failure of another kind on the way (the database's), or of a batch without
    /// events, is returned. `events` end at `to` in the page (`None`: at its end); each
    /// shorter run ends at its last event, and sees only the left-out events up to it, so
    /// that it folds nothing of the events after it on their account.
    async fn pin(
        &self,
        conn: &mut Conn,
        (events, to): (&[EventEnvelope], Option<Position>),
        left_out: &[LeftOut],
        mut error: Error,
    ) -> Result<FailedApply> {
        // Planning the first `works` events works; planning the first `fails` fails with
        // `error`.
        let (mut works, mut fails) = (0, events.len());
        while fails - works > 1 {
            let mid = works + (fails - works) / 2;
            let end = match mid.checked_sub(1).and_then(|last| events.get(last)) {
                Some(last) if mid < events.len() => Some(place(last)),
                _ => to,
            };
            match self.plan_once(conn, (&events[..mid], end), left_out).await {
                Ok(_) => works = mid,
                Err(e) if caused_by_data(&e) => {
                    fails = mid;
                    error = e;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(event) = fails.checked_sub(1).and_then(|last| events.get(last)) else {
            return Err(error);
        };
        Ok(FailedApply::of(error).unwrap_or_else(|e| FailedApply::pinned(&e, event)))
    }

    /// One attempt at planning `events`, which end at `to` in the page (`None`: at its
    /// end): the left-out events it sees (see [`LeftOut::seen_by`]) count as seen, the
    /// others are only passed over.
    async fn plan_once(
        &self,
        conn: &mut Conn,
        (events, to): (&[EventEnvelope], Option<Position>),
        left_out: &[LeftOut],
    ) -> Result<OpList> {
        let (mut seen, mut passed_over) = (Vec::new(), Vec::new());
        for l in left_out {
            let entry = (l.stream.clone(), l.version);
            if l.seen_by(to) {
                seen.push(entry);
            } else {
                passed_over.push(entry);
            }
        }
        let (left_out, passed_over) = (seen.as_slice(), passed_over.as_slice());
        let (store, projection) = (&self.store, &self.projection);
        let hooks = SlotHooks {
            hooks: &self.options.hooks,
            shard: self.slot.shard.map(|_| self.hook_name.as_str()),
        };
        let (workers, hooks) = (self.options.workers, &hooks);
        let (tenant, shard) = (self.slot.tenant.as_ref(), self.slot.shard);
        self.ensure_written(conn, "known", projection.documents())
            .await?;
        let ops = conn
            .run(store, async |client| {
                let batch = Batch {
                    store: store.as_ref(),
                    client,
                    events,
                    workers,
                    hooks,
                    tenant,
                    shard,
                    left_out,
                    passed_over,
                };
                planning(projection.name(), projection.plan(batch)).await
            })
            .await?;
        let planned: Vec<(TypeId, MigrateFn)> =
            ops.operations().map(|op| op.target().schema).collect();
        self.ensure_written(conn, "planned", planned).await?;
        Ok(ops)
    }

    /// Makes sure of the tables of the document `types` the projection writes (with their
    /// migrations; `which`: known before planning, or planned), those not made sure of
    /// yet, before `conn` writes or reads them. Over a caller's pool, whose connection for
    /// the schema work comes out of the same pool, `conn`'s connection is set aside first
    /// (back to the pool: nothing is open on it between a batch's read, plan and commit),
    /// so the work never waits for the connection the runner itself holds: with every
    /// connection of the pool held by a runner, it would wait out the pool's wait, and
    /// the batch would back off and fail the same way for ever (see
    /// [`Catalog::ensure_for`](crate::schema::Catalog::ensure_for)).
    async fn ensure_written(
        &self,
        conn: &mut Conn,
        which: &'static str,
        types: Vec<(TypeId, MigrateFn)>,
    ) -> Result<()> {
        let catalog = self.store.catalog();
        for (type_id, migrate) in types {
            if catalog.is_ensured(type_id) {
                continue;
            }
            debug!(
                projection = self.projection.name(),
                which,
                caller_pool = catalog.shares_callers_pool(),
                "making sure of the table of a document type the projection writes"
            );
            catalog.ensure_for(conn, type_id, migrate).await?;
        }
        Ok(())
    }

    /// Carries out the poison policy's `action` on the event an apply keeps failing on:
    /// for [`FailureAction::Stop`] the apply error; otherwise the event's sequence and
    /// place in the page, the event taken out of `events` (or, one an aggregate read to
    /// fill a hole in its stream, its sequence looked up and no place: the caller leaves
    /// it out of the next read).
    async fn poison(
        &self,
        conn: &mut Conn,
        events: &mut Vec<EventEnvelope>,
        left_out: &[LeftOut],
        failed: &FailedApply,
        action: FailureAction,
    ) -> Result<(i64, Option<Position>)> {
        let (stream, version) = (&failed.stream, failed.version);
        if action == FailureAction::Stop {
            return Err(Error::Apply {
                projection: self.projection.name(),
                event_type: failed.event_type.clone(),
                stream: stream.clone(),
                version,
                message: failed.message.clone(),
            });
        }
        if let Some(bad) = events
            .iter()
            .position(|e| e.stream_id == *stream && e.version == version)
        {
            let bad = events.remove(bad);
            return Ok((bad.sequence, Some(place(&bad))));
        }
        if left_out
            .iter()
            .any(|l| l.stream == *stream && l.version == version)
        {
            return Err(Error::Configuration(format!(
                "poison event of {stream} v{version} not in batch"
            )));
        }
        let tenant =
            EventTenant::of_session(self.store.events_tenancy(), self.slot.tenant.as_ref())?;
        let key = StreamKey(stream.clone());
        let found = conn
            .run(&self.store, async |client| {
                sequence_at(self.store.as_ref(), client, &tenant, &key, version).await
            })
            .await?;
        // An event gone since it was read (its stream deleted) is recorded at 0.
        Ok((found.unwrap_or(0), None))
    }
}
