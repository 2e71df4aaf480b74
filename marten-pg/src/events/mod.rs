//! The event store: streams and events in `mt_streams` / `mt_events`, appends that ride
//! on the session's unit of work, and gap-safe reads.

mod api;
/// The append operations live with the unit of work that sends them.
pub(crate) use crate::unit_of_work::append;
mod append_api;
mod encode;
mod lock;
mod pending;
mod range;
pub(crate) mod read;
mod read_api;
pub(crate) mod registry;
/// Stream ids as parameters and columns (a leaf module of the crate).
pub(crate) use crate::stream_key as stream_id;
mod stream_row;
/// The SQL text of the event tables (it lives in the tables layer).
pub use crate::tables::events as table;
pub(crate) mod tags;
mod writing;

pub use api::Events;
pub use pending::PendingEvent;
pub use range::{EventPage, Position, StreamRange};
pub use registry::UnknownEvents;
pub use tags::{Boundary, EventTypes, TagQuery};
pub use writing::Writing;
