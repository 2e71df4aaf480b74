//! The event store: streams and events in `mt_streams` / `mt_events`, appends that ride
//! on the session's unit of work, and gap-safe reads.

mod api;
pub(crate) mod append;
mod append_api;
mod encode;
mod lock;
mod pending;
mod range;
pub(crate) mod read;
mod read_api;
pub(crate) mod registry;
mod schema_hook;
pub(crate) mod stream_id;
mod stream_row;
pub mod table;
pub(crate) mod tags;
mod writing;

pub use api::Events;
pub use pending::PendingEvent;
pub use range::{EventPage, Position, StreamRange};
pub use registry::UnknownEvents;
pub use tags::{Boundary, EventTypes, TagQuery};
pub use writing::Writing;
