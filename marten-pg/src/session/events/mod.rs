//! The event store as a session sees it: `session.events()` ([`Events`]) to start,
//! append to, lock, archive, delete and read streams, `fetch_for_writing` ([`Writing`])
//! and the consistency boundaries of `fetch_for_writing_by_tags` ([`Boundary`]).
//!
//! One concern per file: `api` (the handle and its stream-id check), `encode` (events
//! into an append), `append_api` (the appends), `stream_row` and `lock` (a stream's
//! version, read or locked), `read_api` (reads and live aggregation), `query` (typed
//! queries over the events of one type), `writing`, `command` (`write_to_aggregate`), `boundary`,
//! `boundary_command` (`write_to_boundary`). May use the event store's lower layers (`crate::events`, the unit of
//! work, the tables), the projections (to fold aggregates) and the store.

mod api;
mod append_api;
pub(crate) mod boundary;
mod boundary_command;
mod command;
mod encode;
mod lock;
mod query;
mod read_api;
mod stream_row;
mod writing;

pub use api::Events;
pub use boundary::Boundary;
pub use query::EventQuery;
pub use writing::Writing;
