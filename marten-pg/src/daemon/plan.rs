//! Planning a batch: the projection's writes for the events read, on the runner's
//! connection. A failing apply is retried with doubling backoff; an event that keeps
//! failing meets the poison policy: dead-lettered (left out of the batch, its dead letter
//! committed with it) or the projection stops.
//!
//! Owns: carrying out the retries and the poison policy (the decision, retry after a
//! backoff / dead-letter / stop, is [`marten_core::projection::poison`]'s). May use: the
//! projections layer (the projection plans, [`EventHooks`] forwards to the daemon's
//! hooks), the connection layer, the daemon's tables.

use std::sync::Arc;

use marten_core::projection::poison::{on_failure, FailureAction};
use marten_core::{Error, EventEnvelope, Result, StreamId};
use tracing::warn;

use super::hooks::DaemonHooks;
use super::progression::DeadLetter;
use super::runner::Runner;
use crate::connection::Conn;
use crate::events::read::sequence_at;
use crate::events::EventTenant;
use crate::projections::asynchronous::{Batch, EventHooks};
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

impl Runner {
    /// Plans a batch on `conn`, retrying failed applies and applying the poison policy to
    /// an event that keeps failing: dead-lettered, it is removed from `events` (or, an
    /// event an aggregate read to fill a hole in its stream, left out of that read) and
    /// its dead letter added to `letters`.
    pub(super) async fn plan(
        &mut self,
        conn: &mut Conn,
        events: &mut Vec<EventEnvelope>,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<OpList> {
        let name = self.projection.name();
        let mut left_out: Vec<(StreamId, i64)> = Vec::new();
        loop {
            let failed = match self.plan_once(conn, events, &left_out).await {
                Err(Error::Apply {
                    stream,
                    version,
                    message,
                    event_type,
                    ..
                }) => FailedApply {
                    event_type,
                    stream,
                    version,
                    message,
                },
                other => return other,
            };
            self.failures += 1;
            let action = on_failure(self.failures, self.options.retries, self.options.poison);
            if let FailureAction::Retry { after } = action {
                warn!(
                    projection = name,
                    stream = %failed.stream,
                    version = failed.version,
                    message = %failed.message,
                    "apply failed; retrying in {after:?}"
                );
                tokio::time::sleep(after).await;
                continue;
            }
            let sequence = self
                .poison(conn, events, &left_out, &failed, action)
                .await?;
            left_out.push((failed.stream.clone(), failed.version));
            letters.push(DeadLetter::new(
                (name, self.slot.tenant_column()),
                sequence,
                &failed.event_type,
                &failed.stream,
                (failed.message, self.failures),
            ));
            self.failures = 0;
        }
    }

    /// One attempt at planning the batch.
    async fn plan_once(
        &self,
        conn: &mut Conn,
        events: &[EventEnvelope],
        left_out: &[(StreamId, i64)],
    ) -> Result<OpList> {
        let (store, projection) = (&self.store, &self.projection);
        let hooks = SlotHooks {
            hooks: &self.options.hooks,
            shard: self.slot.shard.map(|_| self.hook_name.as_str()),
        };
        let (workers, hooks) = (self.options.workers, &hooks);
        let (tenant, shard) = (self.slot.tenant.as_ref(), self.slot.shard);
        conn.run(store, async |client| {
            let batch = Batch {
                store: store.as_ref(),
                client,
                events,
                workers,
                hooks,
                tenant,
                shard,
                left_out,
            };
            projection.plan(batch).await
        })
        .await
    }

    /// Carries out the poison policy's `action` on the event an apply keeps failing on:
    /// for [`FailureAction::Stop`] the apply error; otherwise the event's sequence, the
    /// event taken out of `events` (or, one an aggregate read to fill a hole in its
    /// stream, looked up: the caller leaves it out of the next read).
    async fn poison(
        &self,
        conn: &mut Conn,
        events: &mut Vec<EventEnvelope>,
        left_out: &[(StreamId, i64)],
        failed: &FailedApply,
        action: FailureAction,
    ) -> Result<i64> {
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
            return Ok(events.remove(bad).sequence);
        }
        if left_out.iter().any(|(s, v)| s == stream && *v == version) {
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
        Ok(found.unwrap_or(0))
    }
}
