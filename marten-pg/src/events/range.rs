//! What a read asks for and gets back: [`StreamRange`] (which events of a stream),
//! [`Position`] in the gap-safe global order and an [`EventPage`] of it. Plain data.

use std::any::TypeId;

use marten_core::{Error, EventEnvelope, StreamId};
use time::OffsetDateTime;

/// Which events of a stream to fetch. The default is all of them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamRange {
    /// The lowest version (inclusive).
    pub from_version: i64,
    /// The highest version (inclusive).
    pub to_version: i64,
    /// Only events stored at or after this time.
    pub from_time: Option<OffsetDateTime>,
    /// Only events stored at or before this time.
    pub to_time: Option<OffsetDateTime>,
    /// Whether events of an archived stream are returned.
    pub include_archived: bool,
}

impl Default for StreamRange {
    fn default() -> Self {
        StreamRange {
            from_version: 0,
            to_version: i64::MAX,
            from_time: None,
            to_time: None,
            include_archived: false,
        }
    }
}

impl StreamRange {
    /// All events.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events up to and including `version`.
    pub fn up_to_version(mut self, version: i64) -> Self {
        self.to_version = version;
        self
    }

    /// Events from `version` on.
    pub fn from_version(mut self, version: i64) -> Self {
        self.from_version = version;
        self
    }

    /// Events stored at or before `time`.
    pub fn up_to_time(mut self, time: OffsetDateTime) -> Self {
        self.to_time = Some(time);
        self
    }

    /// Events stored at or after `time`.
    pub fn from_time(mut self, time: OffsetDateTime) -> Self {
        self.from_time = Some(time);
        self
    }

    /// Also events of an archived stream.
    pub fn including_archived(mut self) -> Self {
        self.include_archived = true;
        self
    }
}

/// A position in the gap-safe global order: the compound key (writing transaction id,
/// sequence). Start from [`Position::START`] and continue from [`EventPage::next`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    /// The ordering transaction id of the last event read (see
    /// [`EventEnvelope::transaction_id`](marten_core::EventEnvelope::transaction_id)).
    pub transaction_id: u64,
    /// The global sequence of the last event read.
    pub sequence: i64,
}

impl Position {
    /// Before every event.
    pub const START: Position = Position {
        transaction_id: 0,
        sequence: 0,
    };
}

/// A page of [`Events::read_all`](crate::Events::read_all).
#[derive(Debug)]
#[non_exhaustive]
pub struct EventPage {
    /// The events, in (transaction id, sequence) order.
    pub events: Vec<EventEnvelope>,
    /// Where the next read continues.
    pub next: Position,
    /// How many rows were read (events of unknown types skipped by the store's policy
    /// count here but are not in `events`).
    pub rows: usize,
    /// Events of registered types whose stored body could not be decoded, when the read
    /// collects them (the daemon's; a public read fails on the first instead). They
    /// count in `rows`, not in `events`.
    pub(crate) unreadable: Vec<Unreadable>,
}

/// An event of a registered type that a page read but could not decode (its stored JSON
/// does not deserialize, or its upcaster refuses it).
#[derive(Debug)]
pub(crate) struct Unreadable {
    /// Its global sequence.
    pub(crate) sequence: i64,
    /// The type name it is stored under.
    pub(crate) stored_type: String,
    /// The Rust type it reads as and that type's current name.
    pub(crate) read_as: Option<(TypeId, &'static str)>,
    /// Its stream.
    pub(crate) stream: StreamId,
    /// Why it could not be decoded ([`Error::DeserializeEvent`] or [`Error::Upcast`]).
    pub(crate) error: Error,
}
