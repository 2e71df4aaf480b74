//! What a subscription's handler reads: the batch's events and their delivery ids.

use marten_core::subscription::DeliveryId;
use marten_core::{EventEnvelope, TenantId};

/// One batch of events handed to a [`Subscription`](super::Subscription): those its
/// filter let through, in global order.
#[derive(Debug)]
pub struct SubscriptionBatch<'a> {
    pub(crate) name: &'static str,
    pub(crate) events: &'a [EventEnvelope],
    pub(crate) tenant: Option<&'a TenantId>,
}

impl<'a> SubscriptionBatch<'a> {
    /// The events, in global order (never empty).
    pub fn events(&self) -> &'a [EventEnvelope] {
        self.events
    }

    /// The tenant whose events these are, when the daemon runs the subscription per
    /// tenant (conjoined events); bind it in what you write for that tenant.
    pub fn tenant(&self) -> Option<&'a TenantId> {
        self.tenant
    }

    /// The subscription's name.
    pub fn subscription(&self) -> &'static str {
        self.name
    }

    /// The stable id of `event`'s delivery to this subscription (the same on every
    /// re-delivery): what an at-least-once consumer deduplicates by. It names the batch's
    /// tenant, else the tenant that appended the event, if any (see [`DeliveryId`]): the
    /// same subscription run in several tenant databases (`TenantedStore::start_daemons`)
    /// hands out distinct ids for their events of the same sequence.
    pub fn delivery_id(&self, event: &EventEnvelope) -> DeliveryId {
        DeliveryId::for_tenant(self.name, self.tenant, event)
    }

    /// Each event with its delivery id.
    pub fn deliveries(&self) -> impl Iterator<Item = (DeliveryId, &'a EventEnvelope)> + '_ {
        self.events.iter().map(|e| (self.delivery_id(e), e))
    }
}
