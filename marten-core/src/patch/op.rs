//! [`PatchOp`]: one patch operation as data (the field's JSON path and the serialized
//! value), [`PatchTarget`]: what a patch applies to, and [`Patch`]: the operations of one
//! patch, in order. Uses the field paths and filters of [`crate::query`].

use super::bounds::NumberKind;
use crate::query::{Filter, Path};
use crate::Document;

/// One patch operation on a field, as the backend applies it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PatchOp {
    /// Sets the field to `value` (creating the key when it is missing; a nested field
    /// whose parent object is missing or `null` is left as it is).
    Set {
        /// The field.
        path: Path,
        /// The new value, serialized.
        value: serde_json::Value,
    },
    /// Adds `by` to a number field (a missing or non-number value counts as 0).
    Increment {
        /// The field.
        path: Path,
        /// The amount, serialized.
        by: serde_json::Value,
        /// The field's number type, whose range the sum must stay within.
        kind: NumberKind,
    },
    /// Appends `value` to a list field (a missing list becomes `[value]`); with
    /// `if_missing`, only when no element equals it.
    Append {
        /// The field.
        path: Path,
        /// The element, serialized.
        value: serde_json::Value,
        /// Append only when no element equals `value`.
        if_missing: bool,
    },
    /// Removes every element of a list field equal to `value`.
    Remove {
        /// The field.
        path: Path,
        /// The element, serialized.
        value: serde_json::Value,
    },
    /// Sets an `Option` field to `None` (JSON `null`, as serde writes `None`).
    Unset {
        /// The field.
        path: Path,
    },
}

impl PatchOp {
    /// The field the operation changes.
    pub fn path(&self) -> &Path {
        match self {
            PatchOp::Set { path, .. }
            | PatchOp::Increment { path, .. }
            | PatchOp::Append { path, .. }
            | PatchOp::Remove { path, .. }
            | PatchOp::Unset { path } => path,
        }
    }

    /// The serialized value the operation binds, if it has one.
    pub fn value(&self) -> Option<&serde_json::Value> {
        match self {
            PatchOp::Set { value, .. }
            | PatchOp::Append { value, .. }
            | PatchOp::Remove { value, .. } => Some(value),
            PatchOp::Increment { by, .. } => Some(by),
            PatchOp::Unset { .. } => None,
        }
    }
}

/// What a patch applies to.
pub enum PatchTarget<D: Document> {
    /// The document with this id (nothing, if there is none).
    Id(D::Id),
    /// Every document the filter matches.
    Where(Filter<D>),
}

impl<D: Document> std::fmt::Debug for PatchTarget<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchTarget::Id(id) => f.debug_tuple("Id").field(&id.to_string()).finish(),
            PatchTarget::Where(filter) => f.debug_tuple("Where").field(filter).finish(),
        }
    }
}

/// A patch of documents of type `D`: its target, its operations in the order they apply,
/// and (for a patch by id) the version to assert.
pub struct Patch<D: Document> {
    /// What the patch applies to.
    pub target: PatchTarget<D>,
    /// The operations, applied in order.
    pub ops: Vec<PatchOp>,
    /// The version the stored document must still have (a patch by id of a document
    /// the session loaded, with concurrency checks on).
    pub expected: Option<crate::concurrency::VersionOf<D>>,
}
