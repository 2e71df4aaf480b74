//! Which events a subscription is handed.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::{Event, EventEnvelope, StreamId};

/// A predicate over an envelope.
type Predicate = Arc<dyn Fn(&EventEnvelope) -> bool + Send + Sync>;

/// The events a subscription is handed: every event by default, narrowed by event types,
/// stream ids and a predicate of your own (an event must pass every narrowing given).
/// Events left out still move the subscription's checkpoint past them.
///
/// ```
/// # use marten_core::subscription::EventFilter;
/// # use marten_core::StreamId;
/// let f = EventFilter::all()
///     .event_type("order_placed")
///     .stream(StreamId::from("order-1"))
///     .matching(|e| e.tenant.is_none());
/// # let _ = f;
/// ```
#[derive(Clone, Default)]
pub struct EventFilter {
    types: Option<HashSet<String>>,
    streams: Option<HashSet<StreamId>>,
    predicate: Option<Predicate>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Also lets events of type `E` through (the first type given narrows the filter to
    /// the types given).
    pub fn event<E: Event>(self) -> Self {
        self.event_type(E::EVENT_TYPE)
    }

    /// Also lets events of stored type name `name` through (see
    /// [`EventEnvelope::event_type`]).
    pub fn event_type(mut self, name: impl Into<String>) -> Self {
        self.types
            .get_or_insert_with(HashSet::new)
            .insert(name.into());
        self
    }

    /// Also lets the events of stream `id` through (the first stream given narrows the
    /// filter to the streams given).
    pub fn stream(mut self, id: impl Into<StreamId>) -> Self {
        self.streams
            .get_or_insert_with(HashSet::new)
            .insert(id.into());
        self
    }

    /// Lets through only events `predicate` accepts (replaces an earlier predicate).
    pub fn matching(
        mut self,
        predicate: impl Fn(&EventEnvelope) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether events of type `event_type` (a type's current name) can pass the filter:
    /// the filter names no types, or names this one.
    pub fn admits_type(&self, event_type: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(event_type))
    }

    /// Whether `event` passes the filter.
    pub fn accepts(&self, event: &EventEnvelope) -> bool {
        self.admits_type(event.event_type.as_ref())
            && self
                .streams
                .as_ref()
                .is_none_or(|s| s.contains(&event.stream_id))
            && self.predicate.as_ref().is_none_or(|p| p(event))
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFilter")
            .field("types", &self.types)
            .field("streams", &self.streams)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Placed;
    impl Event for Placed {
        const EVENT_TYPE: &'static str = "placed";
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Shipped;
    impl Event for Shipped {
        const EVENT_TYPE: &'static str = "shipped";
    }

    fn env(stream: &str, data: Arc<dyn crate::AnyEvent>) -> EventEnvelope {
        EventEnvelope::new(1, Uuid::now_v7(), StreamId::from(stream), data)
    }

    #[test]
    fn every_narrowing_must_pass() {
        let (p, s) = (env("a", Arc::new(Placed)), env("b", Arc::new(Shipped)));
        assert!(EventFilter::all().accepts(&p) && EventFilter::all().accepts(&s));
        let placed = EventFilter::all().event::<Placed>();
        assert!(placed.accepts(&p) && !placed.accepts(&s));
        let both = placed.clone().event::<Shipped>();
        assert!(both.accepts(&p) && both.accepts(&s));
        let on_b = both.clone().stream("b");
        assert!(!on_b.accepts(&p) && on_b.accepts(&s));
        let none = both.matching(|e| e.sequence > 1);
        assert!(!none.accepts(&p) && !none.accepts(&s));
    }
}
