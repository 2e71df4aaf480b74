//! The event store: streams and events in `mt_streams` / `mt_events`, appends that ride
//! on the session's unit of work, and gap-safe reads.

mod api;
pub(crate) mod append;
pub(crate) mod read;
pub(crate) mod registry;
pub(crate) mod stream_id;
pub mod table;
pub(crate) mod tags;

pub use api::{EventPage, Events, PendingEvent, Position, StreamRange, Writing};
pub use registry::UnknownEvents;
pub use tags::{Boundary, EventTypes, TagQuery};
