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
}

impl<V> DocumentMetadata<V> {
    /// Creates metadata (used by backends).
    pub fn new(version: V, last_modified: OffsetDateTime) -> Self {
        Self {
            version,
            last_modified,
        }
    }
}
