//! [`Order`]: a sort key of a query (built by `Field::asc` / `desc`). Uses `path` and
//! `node`.

use std::marker::PhantomData;

use super::node::ValueKind;
use super::path::Path;

/// A sort key of a query on `R`.
pub struct Order<R> {
    /// The field.
    pub path: Path,
    /// How it compares.
    pub kind: ValueKind,
    /// Descending.
    pub descending: bool,
    _r: PhantomData<fn(&R)>,
}

impl<R> Order<R> {
    pub(super) fn new(path: Path, kind: ValueKind, descending: bool) -> Self {
        Order {
            path,
            kind,
            descending,
            _r: PhantomData,
        }
    }
}
