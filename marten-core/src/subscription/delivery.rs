//! The stable id of one delivery of an event to a subscription.

use std::fmt;

use uuid::Uuid;

use crate::{EventEnvelope, TenantId};

/// The id of the delivery of one event to one subscription: the subscription's name, the
/// event's tenant when it has one, and the event's global sequence (and id). It is the
/// same every time the event is handed to that subscription again (a retry, a batch
/// re-read after a crash, a takeover by another node), so an at-least-once consumer
/// deduplicates by it.
///
/// Displays as `name:sequence`, or `name@tenant:sequence` for an event of a tenant (the
/// tenant the subscription runs for with conjoined events, else the tenant that appended
/// the event). The tenant keeps apart the deliveries of the same subscription in several
/// databases, whose sequences each start at 1: with a database per tenant, the same
/// subscription runs in every tenant's database and hands out `mailer:1` in each, but
/// `mailer@acme:1` and `mailer@globex:1` differ. Events appended without a tenant keep
/// the `name:sequence` form. (Subscription names have no `@`; the sequence follows the
/// last `:`.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The subscription's name.
    pub subscription: &'static str,
    /// The tenant of the event (`None`: appended without one).
    pub tenant: Option<TenantId>,
    /// The event's global sequence.
    pub sequence: i64,
    /// The event's id.
    pub event_id: Uuid,
}

impl DeliveryId {
    /// The delivery of `event` to `subscription`, of the tenant that appended the event.
    pub fn new(subscription: &'static str, event: &EventEnvelope) -> Self {
        Self::for_tenant(subscription, event.tenant.as_ref(), event)
    }

    /// The delivery of `event` to `subscription` run for `tenant` (`None`: the tenant that
    /// appended the event, if any).
    pub fn for_tenant(
        subscription: &'static str,
        tenant: Option<&TenantId>,
        event: &EventEnvelope,
    ) -> Self {
        DeliveryId {
            subscription,
            tenant: tenant.or(event.tenant.as_ref()).cloned(),
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
    fn a_delivery_id_of_a_tenant_names_it() {
        let mut e = EventEnvelope::new(1, Uuid::now_v7(), StreamId::from("s"), Arc::new(Ping));
        let (acme, globex) = match (TenantId::new("acme"), TenantId::new("globex")) {
            (Ok(a), Ok(g)) => (a, g),
            other => panic!("{other:?}"),
        };
        e.tenant = Some(acme.clone());
        let in_acme = DeliveryId::new("mailer", &e);
        assert_eq!(in_acme.to_string(), "mailer@acme:1");
        e.tenant = Some(globex.clone());
        let in_globex = DeliveryId::new("mailer", &e);
        assert_eq!(in_globex.to_string(), "mailer@globex:1");
        assert_ne!(in_acme, in_globex);
        // The tenant the subscription runs for wins.
        let run = DeliveryId::for_tenant("mailer", Some(&acme), &e);
        assert_eq!(run.to_string(), "mailer@acme:1");
        e.tenant = None;
        assert_eq!(
            DeliveryId::for_tenant("mailer", None, &e).to_string(),
            "mailer:1"
        );
    }
}
