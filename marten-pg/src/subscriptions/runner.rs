//! A subscription as a piece of work of the daemon's runner: an async projection whose
//! plan hands the filtered events to the handler and returns what it queued on its
//! transaction, which the runner commits with the checkpoint. The runner, its ownership,
//! gap-safe reads, retries, poison policy and per-tenant slots are the projections'.
//!
//! Owns: the filtering, the handler call (a panic is a failure of the batch) and the
//! hooks around it. May use: the projections layer's async projection trait.

use std::panic::AssertUnwindSafe;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use marten_core::subscription::EventFilter;
use marten_core::{Error, EventEnvelope, Result, TenantId};

use super::{Subscription, SubscriptionBatch, SubscriptionTx};
use crate::connection::Db;
use crate::projections::apply_error;
use crate::projections::asynchronous::{AsyncProjection, Batch};
use crate::unit_of_work::OpList;

/// The daemon's runner of subscription `S`, with its filter (read once).
pub(crate) struct AsyncSubscription<S> {
    subscription: S,
    filter: EventFilter,
}

impl<S: Subscription> AsyncSubscription<S> {
    pub(crate) fn new(subscription: S) -> Self {
        let filter = subscription.filter();
        AsyncSubscription {
            subscription,
            filter,
        }
    }

    /// Hands `events` (filtered, not empty) to the handler; its queued writes.
    async fn handle(
        &self,
        events: &[EventEnvelope],
        tenant: Option<&TenantId>,
        tenant_database: bool,
    ) -> Result<OpList> {
        let name = self.subscription.name();
        let batch = SubscriptionBatch {
            name,
            events,
            tenant,
            tenant_database,
        };
        let mut tx = SubscriptionTx::new(tenant);
        let handled = AssertUnwindSafe(self.subscription.handle(&batch, &mut tx))
            .catch_unwind()
            .await;
        match handled {
            // A write the handler could not queue is a failure of the batch, too.
            Ok(Ok(())) => tx.into_list().map_err(|e| match events.first() {
                Some(first) => apply_error(name, first, e.to_string()),
                None => e,
            }),
            Ok(Err(e)) => Err(e.into_error(name, events).unwrap_or_else(|| {
                Error::Configuration(format!("subscription {name} failed on an empty batch"))
            })),
            Err(panic) => {
                let message = marten_core::aggregate::panic_message(&*panic);
                Err(match events.first() {
                    Some(first) => apply_error(name, first, message),
                    None => Error::Configuration(format!("subscription {name}: {message}")),
                })
            }
        }
    }
}

impl<S: Subscription> AsyncProjection for AsyncSubscription<S> {
    fn name(&self) -> &'static str {
        self.subscription.name()
    }

    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>> {
        let Batch {
            store,
            events,
            hooks,
            tenant,
            ..
        } = batch;
        Box::pin(async move {
            let name = self.subscription.name();
            let handed: Vec<EventEnvelope> = events
                .iter()
                .filter(|e| self.filter.accepts(e))
                .cloned()
                .collect();
            if handed.is_empty() {
                return Ok(OpList::for_tenant(tenant.cloned()));
            }
            for e in &handed {
                hooks.before_event(name, e);
            }
            let list = self
                .handle(&handed, tenant, store.is_tenant_database())
                .await?;
            for e in &handed {
                hooks.after_event(name, e);
            }
            // The tables of its writes are made sure of by the daemon, with the runner's
            // connection set aside (see `AsyncProjection::plan`).
            Ok(list)
        })
    }

    fn clear<'a>(
        &'a self,
        _client: Db<'a>,
        _tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>> {
        // A subscription keeps nothing of marten's: a rebuild hands every event again.
        Box::pin(async { Ok(()) })
    }

    /// The types its filter lets through.
    fn handles_type(&self, _type_id: std::any::TypeId, name: &'static str) -> bool {
        self.filter.admits_type(name)
    }
}
