//! [`ConflictKind`]: which race an [`Error::Conflict`](super::Error::Conflict) lost.
//! Uses nothing else.

use std::fmt;

/// The kind of an [`Error::Conflict`](super::Error::Conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A serialization failure (SQLSTATE 40001).
    Serialization,
    /// A deadlock the server broke by aborting this transaction (SQLSTATE 40P01).
    Deadlock,
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictKind::Serialization => "serialization failure",
            ConflictKind::Deadlock => "deadlock",
        })
    }
}
