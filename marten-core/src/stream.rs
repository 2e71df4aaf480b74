//! Stream ids and stream state.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

/// The id of an event stream: a `Uuid` or a `String`, as the store is configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// A `Uuid` stream id.
    Uuid(Uuid),
    /// A `String` stream id.
    String(String),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Uuid(u) => fmt::Display::fmt(u, f),
            StreamId::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl StreamId {
    /// The id as a key for rejection reports.
    pub fn key(&self) -> crate::IdKey {
        match self {
            StreamId::Uuid(u) => crate::IdKey::Uuid(*u),
            StreamId::String(s) => crate::IdKey::String(s.clone()),
        }
    }
}

impl From<Uuid> for StreamId {
    fn from(u: Uuid) -> Self {
        StreamId::Uuid(u)
    }
}

impl From<&Uuid> for StreamId {
    fn from(u: &Uuid) -> Self {
        StreamId::Uuid(*u)
    }
}

impl From<String> for StreamId {
    fn from(s: String) -> Self {
        StreamId::String(s)
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        StreamId::String(s.to_owned())
    }
}

impl From<&String> for StreamId {
    fn from(s: &String) -> Self {
        StreamId::String(s.clone())
    }
}

/// Which kind of id a store's streams have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamIdentity {
    /// `Uuid` stream ids (the default).
    #[default]
    Uuid,
    /// `String` stream ids.
    String,
}

/// What the streams table says about a stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamState {
    /// The stream id.
    pub id: StreamId,
    /// The version: the number of events appended (0 for a stream started empty).
    pub version: i64,
    /// The aggregate type recorded when the stream was started, if any.
    pub aggregate_type: Option<String>,
    /// When the stream was started.
    pub created: OffsetDateTime,
    /// When the stream last changed.
    pub updated: OffsetDateTime,
    /// Whether the stream is archived.
    pub archived: bool,
}

impl StreamState {
    /// Creates a stream state (used by backends).
    pub fn new(
        id: StreamId,
        version: i64,
        aggregate_type: Option<String>,
        created: OffsetDateTime,
        updated: OffsetDateTime,
        archived: bool,
    ) -> Self {
        Self {
            id,
            version,
            aggregate_type,
            created,
            updated,
            archived,
        }
    }
}
