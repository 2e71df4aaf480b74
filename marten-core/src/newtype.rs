//! Strong-typed ids: a newtype over a supported id type (`struct OrderId(Uuid)`) is an id
//! wherever its inner type is one. `#[derive(DocumentId)]` implements [`Newtype`] for it;
//! the blanket implementations here then make it a [`DocumentId`] and, over `Uuid` or
//! `String`, an [`AggregateId`], each delegating to the inner value. Not public API: the
//! traits are sealed, and this is the door the derive opens for its types. What is not
//! sealed (conversions into `StreamId`, the query traits, the column type) the derive
//! implements for the type itself.

use std::fmt::{Debug, Display};
use std::hash::Hash;

use crate::{AggregateId, DocumentId, IdKey, StreamId};

/// A single-field tuple struct over a document id type, implemented by
/// `#[derive(DocumentId)]`. Not public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a strong-typed id",
    label = "derive `DocumentId` for it",
    note = "`#[derive(DocumentId)] struct OrderId(Uuid);` makes a newtype over `Uuid`, `i64`, `i32` or `String` an id"
)]
pub trait Newtype: Sized + 'static {
    /// The wrapped id type.
    type Inner: DocumentId;
    /// Wraps an inner value.
    fn from_inner(inner: Self::Inner) -> Self;
    /// The inner value.
    fn inner(&self) -> &Self::Inner;
    /// The inner value, mutably (to assign a generated id).
    fn inner_mut(&mut self) -> &mut Self::Inner;
}

// The traits an id needs are bounds here rather than supertraits of `Newtype`, so a
// newtype that lacks one fails once, where it is used as an id (the derive asserts it),
// with `DocumentId`'s message.
impl<T> DocumentId for T
where
    T: Newtype + Clone + Eq + Hash + Debug + Display + Send + Sync,
{
    fn assign_if_empty(&mut self) -> Result<(), &'static str> {
        self.inner_mut().assign_if_empty()
    }
    fn validate(&self) -> Result<(), &'static str> {
        self.inner().validate()
    }
    fn key(&self) -> IdKey {
        self.inner().key()
    }
    fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        self.inner().write_order(other.inner())
    }
}

/// The inner types of strong-typed aggregate ids: the stream id types. Not public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a newtype over `{Self}` cannot be an aggregate id",
    label = "an aggregate's id is its stream's id",
    note = "a strong-typed aggregate id wraps a `Uuid` or a `String`, the stream id types"
)]
pub trait StreamIdInner: AggregateId {}

impl StreamIdInner for uuid::Uuid {}
impl StreamIdInner for String {}

impl<T> AggregateId for T
where
    T: Newtype + DocumentId,
    T::Inner: StreamIdInner,
{
    fn to_stream_id(&self) -> StreamId {
        self.inner().to_stream_id()
    }
    fn from_stream_id(id: &StreamId) -> Option<Self> {
        T::Inner::from_stream_id(id).map(T::from_inner)
    }
}
