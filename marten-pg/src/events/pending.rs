//! [`PendingEvent`]: one event about to be appended, with its own metadata and the
//! functions that serialize and register its type. Uses only the event registry.

use std::sync::Arc;

use marten_core::{AnyEvent, Event, Result};
use uuid::Uuid;

use super::registry::EventRegistry;

/// An event about to be appended, with optional metadata of its own. Any `#[derive(Event)]`
/// type converts into one; build one explicitly to mix event types in one append
/// (`[PendingEvent::new(a), PendingEvent::new(b)]`) or to set metadata per event.
pub struct PendingEvent {
    pub(crate) event_type: &'static str,
    pub(crate) data: Arc<dyn AnyEvent>,
    pub(crate) serialize: fn(&dyn AnyEvent) -> serde_json::Result<Vec<u8>>,
    pub(crate) register: fn(&mut EventRegistry) -> Result<()>,
    pub(crate) tags: Vec<marten_core::EventTag>,
    pub(crate) id: Option<Uuid>,
    pub(crate) headers: Option<serde_json::Map<String, serde_json::Value>>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
}

fn serialize_as<E: Event>(any: &dyn AnyEvent) -> serde_json::Result<Vec<u8>> {
    match any.as_any().downcast_ref::<E>() {
        Some(e) => {
            // Room for a typical event at once, not grown from empty a few bytes at a time.
            let mut json = Vec::with_capacity(128);
            serde_json::to_writer(&mut json, e)?;
            Ok(json)
        }
        None => Err(<serde_json::Error as serde::ser::Error>::custom(
            "event type mismatch",
        )),
    }
}

impl PendingEvent {
    /// Wraps an event.
    pub fn new<E: Event>(event: E) -> Self {
        let tags = event.tags();
        PendingEvent {
            tags,
            event_type: E::EVENT_TYPE,
            data: Arc::new(event),
            serialize: serialize_as::<E>,
            register: EventRegistry::register::<E>,
            id: None,
            headers: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Sets the event's id (default: a new version-7 uuid).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Adds a header to this event (on top of the session's headers).
    pub fn with_header(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// Sets this event's correlation id (instead of the session's).
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets this event's causation id (instead of the session's).
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }
}

impl<E: Event> From<E> for PendingEvent {
    fn from(event: E) -> Self {
        PendingEvent::new(event)
    }
}
