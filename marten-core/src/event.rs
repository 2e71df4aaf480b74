//! Events: serde types with a stable type name, and the envelope a read event comes in.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{StreamId, TenantId};

#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event type",
    note = "derive it: `#[derive(Event, Serialize, Deserialize)]`"
)]
/// An event: a serde type with a stable name, stored in the events table under that name
/// and deserialized by it. Implement it with `#[derive(Event)]`; the name defaults to the
/// type name in snake case and is set with `#[event(name = "...")]`.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored type name. Keep it stable: renaming it orphans stored events (unless
    /// the old name is kept in [`Event::ALIASES`]).
    const EVENT_TYPE: &'static str;

    /// Former type names that still read as this type (`#[event(aliases = ["..."])]`):
    /// events stored under them deserialize into this type as they are. Appends always
    /// write [`Event::EVENT_TYPE`].
    const ALIASES: &'static [&'static str] = &[];

    /// The tags this event carries (its `#[tag]` fields).
    fn tags(&self) -> Vec<crate::EventTag> {
        Vec::new()
    }
}

/// Any event, type-erased, for envelopes that hold events of several types.
pub trait AnyEvent: Any + Send + Sync {
    /// The stored type name.
    fn event_type(&self) -> &'static str;
    /// For downcasting to the concrete event type.
    fn as_any(&self) -> &dyn Any;
}

impl<E: Event> AnyEvent for E {
    fn event_type(&self) -> &'static str {
        E::EVENT_TYPE
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl fmt::Debug for dyn AnyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.event_type())
    }
}

/// Deserializes a stored event of one type.
pub type DecodeFn = fn(&[u8]) -> serde_json::Result<Arc<dyn AnyEvent>>;

/// The [`DecodeFn`] of `E`.
pub fn decode<E: Event>(json: &[u8]) -> serde_json::Result<Arc<dyn AnyEvent>> {
    Ok(Arc::new(serde_json::from_slice::<E>(json)?))
}

/// How to read stored events of one type: its name, Rust type and decoder.
#[derive(Clone, Copy)]
pub struct EventDecoder {
    /// The stored type name.
    pub name: &'static str,
    /// The Rust type.
    pub type_id: std::any::TypeId,
    /// The decoder.
    pub decode: DecodeFn,
    /// Former names of the type ([`Event::ALIASES`]), read with the same decoder.
    pub aliases: &'static [&'static str],
    /// The Rust type's name ([`std::any::type_name`]), for configuration errors that
    /// name the types claiming one stored name.
    pub type_name: &'static str,
}

impl EventDecoder {
    /// The decoder of `E`.
    pub fn of<E: Event>() -> Self {
        EventDecoder {
            name: E::EVENT_TYPE,
            type_id: std::any::TypeId::of::<E>(),
            decode: decode::<E>,
            aliases: E::ALIASES,
            type_name: std::any::type_name::<E>(),
        }
    }
}

/// An event as stored: the event and its metadata.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventEnvelope {
    /// The global sequence number (unique, increasing in insertion order; gaps are
    /// possible where a transaction rolled back). An inline projection whose apply
    /// methods take the metadata gets the real sequence: the save reserves it before
    /// planning (see `Apply::USES_METADATA`); 0 for one that does not take it.
    pub sequence: i64,
    /// The event's id.
    pub id: Uuid,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// The event's version within its stream, from 1.
    pub version: i64,
    /// The type name of [`EventEnvelope::data`]: the current name of its type, also for
    /// an event stored under an alias or an upcaster's old name (see
    /// [`EventEnvelope::stored_type`]). Borrowed from the type (no allocation per event).
    pub event_type: Cow<'static, str>,
    /// The type name as stored in the event's row: differs from
    /// [`EventEnvelope::event_type`] when the event was read through an alias or upcast
    /// from an older shape. Borrowed from the type unless it differs.
    pub stored_type: Cow<'static, str>,
    /// When the event was stored.
    pub timestamp: OffsetDateTime,
    /// The correlation id, if one was set.
    pub correlation_id: Option<String>,
    /// The causation id, if one was set.
    pub causation_id: Option<String>,
    /// Headers, if any were set (a JSON object).
    pub headers: Option<serde_json::Value>,
    /// The event's ordering transaction id: the id of the transaction that wrote it, or
    /// a later one its stream's previous events recorded, so that a stream's events are
    /// in version order in the global order (also in an inline projection's envelopes
    /// when the sequence is, 0 otherwise).
    pub transaction_id: u64,
    /// Whether the event's stream is archived.
    pub archived: bool,
    /// The tenant that appended the event (`None`: appended without one).
    pub tenant: Option<TenantId>,
    /// The event itself.
    pub data: Arc<dyn AnyEvent>,
}

impl EventEnvelope {
    /// Creates an envelope with empty metadata (used by backends, which fill the rest).
    pub fn new(sequence: i64, id: Uuid, stream_id: StreamId, data: Arc<dyn AnyEvent>) -> Self {
        EventEnvelope {
            sequence,
            id,
            stream_id,
            version: 0,
            event_type: Cow::Borrowed(data.event_type()),
            stored_type: Cow::Borrowed(data.event_type()),
            timestamp: OffsetDateTime::UNIX_EPOCH,
            correlation_id: None,
            causation_id: None,
            headers: None,
            transaction_id: 0,
            archived: false,
            tenant: None,
            data,
        }
    }

    /// The event as `E`, if it is one.
    pub fn data_as<E: Event>(&self) -> Option<&E> {
        self.data.as_any().downcast_ref::<E>()
    }

    /// Whether the event is an `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.data.as_any().is::<E>()
    }
}
