//! The event store below the sessions: events as appended ([`PendingEvent`]), ranges and
//! positions, the registry of event types, gap-safe reads of `mt_events`, tag
//! queries with the tag lock, and (from `crate::event_tenant`) the tenant an event operation works for. The session-facing API (`session.events()`) is in
//! [`crate::session`]; the append operations live with the unit of work.
//!
//! May use: the unit of work (the append operations), schema, connection, error map,
//! tables, documents and leaf helpers; never projections, the store, sessions or the daemon.

/// The append operations live with the unit of work that sends them.
pub(crate) use crate::unit_of_work::append;
mod catalog;
pub(crate) mod pending;
pub(crate) mod range;
pub(crate) mod read;
pub(crate) mod registry;
/// Stream ids as parameters and columns (a leaf module of the crate).
pub(crate) use crate::stream_key as stream_id;
/// The SQL text of the event tables (it lives in the tables layer).
pub use crate::tables::events as table;
pub(crate) mod tags;

pub(crate) use crate::event_tenant::EventTenant;
pub(crate) use catalog::{EventCatalog, EventConfig};
pub use pending::PendingEvent;
pub use range::{EventPage, Position, StreamRange};
pub use registry::UnknownEvents;
pub use tags::{EventTypes, TagQuery};
