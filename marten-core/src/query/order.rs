//! Sort keys: [`Order`] and the `asc` / `desc` methods of an [`Orderable`] [`Field`].
//! Uses `path`, `node` and the `Orderable` bound.

use std::marker::PhantomData;

use super::bounds::Orderable;
use super::node::ValueKind;
use super::path::{Field, Path};

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
    fn new(path: Path, kind: ValueKind, descending: bool) -> Self {
        Order {
            path,
            kind,
            descending,
            _r: PhantomData,
        }
    }
}

impl<R: 'static, T: 'static> Field<R, T> {
    /// Sort ascending by this field.
    pub fn asc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, false)
    }

    /// Sort descending by this field.
    pub fn desc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, true)
    }
}
