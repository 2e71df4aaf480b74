//! The stable id of one delivery of an event to a subscription.

use std::fmt;

use uuid::Uuid;

use crate::EventEnvelope;

/// The id of the delivery of one event to one subscription: the subscription's name and
/// the event's global sequence (and id). It is the same every time the event is handed
/// to that subscription again (a retry, a batch re-read after a crash, a takeover by
/// another node), so an at-least-once consumer deduplicates by it. Displays as
/// `name:sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The subscription's name.
    pub subscription: &'static str,
    /// The event's global sequence.
    pub sequence: i64,
    /// The event's id.
    pub event_id: Uuid,
}

impl DeliveryId {
    /// The delivery of `event` to `subscription`.
    pub fn new(subscription: &'static str, event: &EventEnvelope) -> Self {
        DeliveryId {
            subscription,
            sequence: event.sequence,
            event_id: event.id,
        }
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.subscription, self.sequence)
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
    }
}
