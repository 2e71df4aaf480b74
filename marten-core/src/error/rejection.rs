//! [`Rejection`]: one operation of a save that failed its precondition, why
//! ([`RejectionKind`]), and its message. Uses [`IdKey`] of the crate root.

use std::fmt;

use crate::IdKey;

/// One operation of a batch that failed its precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The document type, or `"stream"` for an event stream.
    pub document_type: &'static str,
    /// The document id, or the stream id.
    pub id: IdKey,
    /// What went wrong.
    pub kind: RejectionKind,
}

impl Rejection {
    /// Creates a rejection (used by backends).
    pub fn new(document_type: &'static str, id: IdKey, kind: RejectionKind) -> Self {
        Self {
            document_type,
            id,
            kind,
        }
    }
}

/// Why an operation was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The stored version differs from the one the session expected (optimistic or
    /// numeric concurrency). `actual` is `None` when the document no longer exists.
    VersionMismatch {
        /// The version the session expected, as text.
        expected: String,
        /// The version found after the rollback, as text.
        actual: Option<String>,
    },
    /// A numeric `update_revision` asked for a revision not above the stored one.
    RevisionNotNewer {
        /// The requested revision.
        requested: i64,
        /// The stored revision.
        actual: i64,
    },
    /// `insert` of an id that already exists.
    AlreadyExists,
    /// `update` of a document that does not exist.
    NotFound,
    /// `start_stream` (or `append_expected(.., 0, ..)`) of a stream that already exists.
    StreamExists,
    /// `append_expected` / `append_optimistic`: the stream's version is not the one the
    /// caller saw. `actual` is `None` when the stream does not exist.
    UnexpectedStreamVersion {
        /// The version the caller saw before appending.
        expected: i64,
        /// The stream's version after the rollback.
        actual: Option<i64>,
    },
    /// An append to an archived stream.
    StreamArchived,
    /// An async projection's progress moved since its batch started (another runner took
    /// the projection over): the batch was discarded. `id` is the projection name.
    ProgressMoved,
    /// A consistency boundary's tag moved since it was read: an event with this tag was
    /// appended in between (DCB concurrency). `id` is the tag value.
    DcbConcurrency {
        /// The tag type.
        tag_type: String,
        /// The tag's version when the boundary was read (0: no event had the tag).
        expected: i64,
        /// The tag's version after the rollback.
        actual: i64,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, id) = (self.document_type, &self.id);
        match &self.kind {
            RejectionKind::VersionMismatch { expected, actual } => write!(
                f,
                "concurrency check failed for {t} {id}: expected version {expected}, found {}",
                actual.as_deref().unwrap_or("no document")
            ),
            RejectionKind::RevisionNotNewer { requested, actual } => write!(
                f,
                "revision {requested} for {t} {id} is not newer than the stored revision {actual}"
            ),
            RejectionKind::AlreadyExists => write!(f, "document {t} {id} already exists"),
            RejectionKind::NotFound => write!(f, "document {t} {id} does not exist"),
            RejectionKind::StreamExists => write!(f, "stream {id} already exists"),
            RejectionKind::UnexpectedStreamVersion { expected, actual } => match actual {
                // Read after the rollback: the stream was where the append expected it,
                // so what moved it was an earlier write of the same save (or the stream
                // is not the one decided on: deleted and started again meanwhile).
                Some(a) if a == expected => write!(
                    f,
                    "stream {id} was at the expected version {expected}, but an earlier \
                     write of the same save moved it (or the stream was started anew)"
                ),
                Some(a) => write!(
                    f,
                    "stream {id} is at version {a}, not the expected {expected}"
                ),
                None => write!(
                    f,
                    "stream {id} does not exist (expected version {expected})"
                ),
            },
            RejectionKind::StreamArchived => write!(f, "stream {id} is archived"),
            RejectionKind::ProgressMoved => write!(f, "projection {id} progressed elsewhere; batch discarded"),
            RejectionKind::DcbConcurrency {
                tag_type,
                expected,
                actual,
            } => write!(
                f,
                "consistency boundary moved: tag {tag_type}={id} is at version {actual}, read at {expected}"
            ),
        }
    }
}
