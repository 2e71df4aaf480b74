//! The event store: streams and events in `mt_streams` / `mt_events`, appends that ride
//! on the session's unit of work, and gap-safe reads.

mod api;
/// The append operations live with the unit of work that sends them.
pub(crate) use crate::unit_of_work::append;
pub(crate) mod read;
pub(crate) mod registry;
/// Stream ids as parameters and columns (a leaf module of the crate).
pub(crate) use crate::stream_key as stream_id;
pub mod table;
pub(crate) mod tags;

pub use api::{EventPage, Events, PendingEvent, Position, StreamRange, Writing};
pub use registry::UnknownEvents;
pub use tags::{Boundary, EventTypes, TagQuery};
