//! Subscriptions: consumers of events that are not projections (publish to a broker,
//! send mail, fill an outbox). A [`Subscription`] is handed batches of the events its
//! [`EventFilter`] lets through, in the gap-safe global order, by the async daemon, which
//! runs it exactly as it runs an async projection: its own checkpoint row in the
//! progression table (per tenant with conjoined events), one owner at a time across
//! nodes (advisory lock and owner epoch), takeover, retries and the poison policy.
//!
//! Two ways of delivering:
//! - **exactly once**: what the handler writes through the [`SubscriptionTx`] it is
//!   handed (SQL statements, documents) commits in the transaction that advances its
//!   checkpoint, or not at all. A batch whose commit did not happen (a crash, a takeover)
//!   is handed again, and its writes were never made.
//! - **at least once**: what the handler does outside (a broker, a mail server) happens
//!   before the checkpoint advances; after a crash between the two, the batch is handed
//!   again. Each event's [`DeliveryId`] is the same every time, so a consumer
//!   deduplicates by it.
//!
//! The files: `batch` (what the handler reads), `tx` (what it writes through),
//! `statement` (one SQL statement queued on the tx), `runner` (a subscription as a piece
//! of work of the daemon's runner).
//!
//! May use: the projections layer (a subscription is planned as an async projection is),
//! the documents layer and the unit of work's operations.

mod batch;
pub(crate) mod runner;
mod statement;
mod tx;

use std::future::Future;

pub use batch::SubscriptionBatch;
pub use marten_core::subscription::{DeliveryId, EventFilter, HandlerError};
pub use statement::SqlStatement;
pub use tx::SubscriptionTx;

/// A consumer of events the async daemon runs: handed batches of the events its
/// [`filter`](Subscription::filter) lets through, in global order, with a transaction to
/// write through. Register it with
/// [`DocumentStoreBuilder::subscription`](crate::DocumentStoreBuilder::subscription).
///
/// A handler that fails is retried with backoff; an event that keeps failing meets the
/// daemon's [`PoisonPolicy`](crate::daemon::PoisonPolicy). Report the event failed on
/// with [`HandlerError::at`]; a failure that names none is charged to the batch's first
/// event. A panic is a failure of the batch.
pub trait Subscription: Send + Sync + 'static {
    /// The subscription's name: the key of its checkpoint row and advisory lock (the same
    /// namespace as the async projections' names), and of its [`DeliveryId`]s. Keep it
    /// stable.
    fn name(&self) -> &'static str;

    /// The events the subscription is handed (read once, when it is registered). Every
    /// event by default. Events left out still move the checkpoint.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// Handles one batch (never empty). What it queues on `tx` commits with the
    /// checkpoint (exactly once); what it does elsewhere happens before the checkpoint
    /// moves (at least once, deduplicate by [`SubscriptionBatch::delivery_id`]).
    fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
