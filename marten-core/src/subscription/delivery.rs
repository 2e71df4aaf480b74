//! The stable id of one delivery of an event to a subscription.

use std::fmt;

use uuid::Uuid;

use crate::{EventEnvelope, TenantId};

/// The id of the delivery of one event to one subscription: the subscription's name, the
/// tenant whose database numbered the event when sequences of several databases could
/// meet, and the event's global sequence (and id). It is the same every time the event is
/// handed to that subscription again (a retry, a batch re-read after a crash, a takeover
/// by another node), so an at-least-once consumer deduplicates by it.
///
/// Displays as `name:sequence`, or `name@tenant:sequence` when it names a tenant. A store
/// of one database hands out `name:sequence` for every event, whatever its tenant: the
/// database's one sequence keeps them apart (with conjoined events too, whose tenants
/// share it). With a database per tenant the same subscription runs in every tenant's
/// database, each numbering its events from 1: there the id names the event's tenant,
/// `mailer@acme:1` and `mailer@globex:1`, where both would be `mailer:1`. (Subscription
/// names have no `@`; the sequence follows the last `:`.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The subscription's name.
    pub subscription: &'static str,
    /// The tenant it names (`None`: `name:sequence`).
    pub tenant: Option<TenantId>,
    /// The event's global sequence.
    pub sequence: i64,
    /// The event's id.
    pub event_id: Uuid,
}

impl DeliveryId {
    /// The delivery of `event` to `subscription`, naming no tenant: `name:sequence`.
    pub fn new(subscription: &'static str, event: &EventEnvelope) -> Self {
        Self::for_tenant(subscription, None, event)
    }

    /// The delivery of `event` to `subscription` naming `tenant` (`None`: no tenant, as
    /// [`DeliveryId::new`]), for a subscription run in that tenant's own database.
    pub fn for_tenant(
        subscription: &'static str,
        tenant: Option<&TenantId>,
        event: &EventEnvelope,
    ) -> Self {
        DeliveryId {
            subscription,
            tenant: tenant.cloned(),
            sequence: event.sequence,
            event_id: event.id,
        }
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(tenant) => write!(
                f,
                "{}@{}:{}",
                self.subscription,
                tenant.as_str(),
                self.sequence
            ),
            None => write!(f, "{}:{}", self.subscription, self.sequence),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Event, StreamId};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl Event for Ping {
        const EVENT_TYPE: &'static str = "ping";
    }

    #[test]
    fn a_delivery_id_is_the_subscription_and_the_sequence() {
        let id = Uuid::now_v7();
        let e = EventEnvelope::new(42, id, StreamId::from("s"), Arc::new(Ping));
        let d = DeliveryId::new("mailer", &e);
        assert_eq!(d.to_string(), "mailer:42");
        assert_eq!(d, DeliveryId::new("mailer", &e));
        assert_ne!(d, DeliveryId::new("broker", &e));
        assert_eq!(d.event_id, id);
        assert_eq!(d.tenant, None);
    }

    #[test]
    fn a_delivery_id_names_the_tenant_it_is_given() {
        let mut e = EventEnvelope::new(1, Uuid::now_v7(), StreamId::from("s"), Arc::new(Ping));
        let (acme, globex) = match (TenantId::new("acme"), TenantId::new("globex")) {
            (Ok(a), Ok(g)) => (a, g),
            other => panic!("{other:?}"),
        };
        // The tenant that appended the event is not named unless given.
        e.tenant = Some(acme.clone());
        assert_eq!(DeliveryId::new("mailer", &e).to_string(), "mailer:1");
        assert_eq!(
            DeliveryId::for_tenant("mailer", None, &e).to_string(),
            "mailer:1"
        );
        let in_acme = DeliveryId::for_tenant("mailer", Some(&acme), &e);
        assert_eq!(in_acme.to_string(), "mailer@acme:1");
        let in_globex = DeliveryId::for_tenant("mailer", Some(&globex), &e);
        assert_eq!(in_globex.to_string(), "mailer@globex:1");
        assert_ne!(in_acme, in_globex);
    }
}
