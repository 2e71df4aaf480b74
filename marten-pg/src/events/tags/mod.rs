//! Dynamic consistency boundaries: tag queries, the boundary a session reads for writing,
//! and the tag lock that asserts it at save.
//!
//! Every tagged append bumps the version of each of its tags in `mt_tag_versions`.
//! `fetch_for_writing_by_tags` reads the versions of the queried tags first and the
//! matching events second, in one flight of two statements (so the versions are never
//! fresher than the events). Saving through the boundary asserts every captured version,
//! in (tag_type, tag_value) order, and bumps it: a racer that read the same versions then
//! finds them moved and its save is rejected.
//!
//! This module owns the helpers its parts share (the error of a failed tag read, the
//! check of a stored version); it may use the event tables' SQL and the error map.
//! - [`query`]: what a boundary covers ([`TagQuery`], [`EventTypes`]); pure, no I/O.
//! - reading a boundary for writing (`Boundary`) is a session's, in `crate::session::events`.
//! - [`lock`]: the tag lock statement of a save (`TagLock`).
//! - [`cache`]: the boundaries commands decided on, kept for the next command.

pub(crate) mod cache;
pub(crate) mod lock;
pub(crate) mod query;

use marten_core::{Error, EventTag, Result};

use crate::error_map::{map_db_error, Failed};
use crate::tables::events::TAG_VERSIONS_TABLE;

pub(crate) use lock::TagLock;
pub use query::{EventTypes, TagQuery};

/// A failed read of the tag tables.
pub(crate) fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("tag"))
}

/// A stored tag version: NULL or negative (a row edited by hand) is
/// [`Error::CorruptData`] naming the tag.
pub(crate) fn tag_version(tag: &EventTag, stored: Option<i64>) -> Result<i64> {
    match stored {
        Some(v) if v >= 0 => Ok(v),
        other => Err(Error::CorruptData {
            owner: format!("tag {:?}", tag.tag_type),
            id: Some(format!("{:?}", tag.value)),
            detail: match other {
                Some(v) => format!("{TAG_VERSIONS_TABLE}.version is negative ({v})"),
                None => format!("{TAG_VERSIONS_TABLE}.version is NULL"),
            },
        }),
    }
}
