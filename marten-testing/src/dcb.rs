//! Dynamic consistency boundaries paused mid-read, for tests that race writers against
//! a boundary read. Uses only marten-pg's public API and its `private` seam.

use std::future::Future;

use marten_core::{Apply, Result};
use marten_pg::{Boundary, Events, TagQuery, Tracking};

/// Reads a boundary like `events.fetch_for_writing_by_tags(query)`, awaiting `pause`
/// after the tag versions' statement is sent and before the events' statement is.
///
/// Whatever `pause` does (append and save tagged events on another session, wait at a
/// barrier with other readers) happens after the versions are captured and before the
/// events are read, so a test can check that a boundary's versions are never fresher
/// than its events.
pub async fn fetch_for_writing_by_tags_pausing<'s, K: Tracking, S: Apply>(
    events: Events<'s, K>,
    query: TagQuery,
    pause: impl Future<Output = ()> + Send,
) -> Result<Boundary<'s, K, S>> {
    marten_pg::private::fetch_for_writing_by_tags_between(events, query, pause).await
}
