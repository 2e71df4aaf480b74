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
    /// Whether the store is one of a `TenantedStore`'s tenant databases, whose sequences
    /// start at 1 in each: then the delivery ids name the event's tenant.
    pub(crate) tenant_database: bool,
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
    /// re-delivery): what an at-least-once consumer deduplicates by (see [`DeliveryId`]).
    ///
    /// In a store of one database it is `name:sequence`, whatever the event's tenant:
    /// the database's one sequence keeps every delivery apart (also with conjoined
    /// events, whose tenants share it). In the databases of a `TenantedStore`
    /// (`TenantedStore::start_daemons`), each numbering its events from 1, it names the
    /// tenant of the event (`name@tenant:sequence`; the batch's tenant for an event
    /// appended without one), so the same subscription run in several tenant databases
    /// hands out distinct ids for their events of the same sequence.
    pub fn delivery_id(&self, event: &EventEnvelope) -> DeliveryId {
        let tenant = if self.tenant_database {
            event.tenant.as_ref().or(self.tenant)
        } else {
            None
        };
        DeliveryId::for_tenant(self.name, tenant, event)
    }

    /// Each event with its delivery id.
    pub fn deliveries(&self) -> impl Iterator<Item = (DeliveryId, &'a EventEnvelope)> + '_ {
        self.events.iter().map(|e| (self.delivery_id(e), e))
    }
}
