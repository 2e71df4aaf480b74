use std::fmt;

use crate::IdKey;

/// The result type of marten operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in marten, one variant per failure a caller may want to
/// handle. Database failures are classified by SQLSTATE and by which statement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `save_changes` was rejected: one or more queued operations failed their
    /// precondition (a stale version, an insert of an existing id, an update of a missing
    /// document). Every rejection of the batch is listed; nothing of the batch was written.
    #[error("save rejected, nothing was written: {}", DisplayRejections(.0))]
    Rejected(Vec<Rejection>),

    /// A document id that cannot be stored or looked up (for example an empty string).
    #[error("invalid id {id} for document type {document_type}: {reason}")]
    InvalidId {
        /// The document type.
        document_type: &'static str,
        /// The offending id.
        id: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A document could not be serialized to JSON.
    #[error("cannot serialize document {document_type} {id}: {source}")]
    Serialize {
        /// The document type.
        document_type: &'static str,
        /// The document id.
        id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored document no longer deserializes into its Rust type.
    #[error("cannot deserialize document {document_type} {id}: {source}")]
    Deserialize {
        /// The document type.
        document_type: &'static str,
        /// The document id.
        id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A unique index on a document field was violated.
    #[error("unique violation on {document_type}.{field}: {message}")]
    UniqueViolation {
        /// The document type.
        document_type: &'static str,
        /// The field (or constraint) whose uniqueness was violated.
        field: String,
        /// The database's detail.
        message: String,
    },

    /// A table, column or function marten needs does not exist (and the store was told not
    /// to create it).
    #[error("schema object missing: {object}")]
    SchemaObjectMissing {
        /// The missing object, schema-qualified.
        object: String,
    },

    /// The store was configured wrongly.
    #[error("invalid configuration: {0}")]
    Configuration(String),

    /// No connection could be obtained or the connection broke.
    #[error("connection failed: {0}")]
    Connection(#[source] DatabaseError),

    /// Any other database failure, with its SQLSTATE when the server reported one.
    #[error("database error: {0}")]
    Database(#[source] DatabaseError),
}

impl Error {
    /// The rejections of a rejected save, or an empty slice for other errors.
    pub fn rejections(&self) -> &[Rejection] {
        match self {
            Error::Rejected(r) => r,
            _ => &[],
        }
    }

    /// The SQLSTATE of a database error, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database(e) | Error::Connection(e) => e.code.as_deref(),
            _ => None,
        }
    }
}

struct DisplayRejections<'a>(&'a [Rejection]);

impl fmt::Display for DisplayRejections<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            fmt::Display::fmt(r, f)?;
        }
        Ok(())
    }
}

/// One operation of a batch that failed its precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The document type.
    pub document_type: &'static str,
    /// The document id.
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
        }
    }
}

/// A database failure, backend-neutral: the SQLSTATE (if the server sent one), a
/// description of what marten was doing, and the underlying error.
#[derive(Debug)]
pub struct DatabaseError {
    /// The five-character SQLSTATE, when the server reported one.
    pub code: Option<String>,
    /// What marten was doing when it failed.
    pub context: String,
    /// The underlying error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)?;
        if let Some(code) = &self.code {
            write!(f, " (SQLSTATE {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
