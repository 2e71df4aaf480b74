use time::OffsetDateTime;

/// What the store knows about a stored document besides its data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DocumentMetadata<V> {
    /// The stored version: a `Uuid` (optimistic), an `i64` revision (numeric) or
    /// `NoVersion` (off).
    pub version: V,
    /// When the document was last written.
    pub last_modified: OffsetDateTime,
    /// Whether the document is marked deleted (a soft-deleted type's; always `false` for
    /// other types).
    pub deleted: bool,
    /// When it was marked deleted (`None` when it is not).
    pub deleted_at: Option<OffsetDateTime>,
}

impl<V> DocumentMetadata<V> {
    /// Creates the metadata of a live document (used by backends).
    pub fn new(version: V, last_modified: OffsetDateTime) -> Self {
        Self {
            version,
            last_modified,
            deleted: false,
            deleted_at: None,
        }
    }

    /// This metadata with the document's soft-delete state: marked deleted or not, and
    /// when (used by backends).
    pub fn with_deleted(self, deleted: bool, deleted_at: Option<OffsetDateTime>) -> Self {
        Self {
            deleted,
            deleted_at,
            ..self
        }
    }
}
