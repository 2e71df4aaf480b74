use std::fmt::{Debug, Display};
use std::hash::Hash;

use uuid::Uuid;

mod sealed {
    pub trait Sealed {}
    impl Sealed for uuid::Uuid {}
    impl Sealed for i64 {}
    impl Sealed for i32 {}
    impl Sealed for String {}
    impl<T: crate::newtype::Newtype> Sealed for T {}
}

/// The longest `String` document or stream id, in bytes, marten accepts: PostgreSQL
/// cannot put a key much longer than 2.7 KB into a btree index (unless it compresses
/// well), so longer ids are refused before anything is sent, whatever their content.
pub const MAX_ID_BYTES: usize = 2048;

/// A type that can be a document id: `Uuid`, `i64`, `i32` or `String`, or a newtype over
/// one of them with `#[derive(DocumentId)]` (`struct OrderId(Uuid);`). Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a document id",
    label = "unsupported id type",
    note = "a document id is a `Uuid`, `i64`, `i32` or `String`, or a newtype over one of them with `#[derive(DocumentId)]`"
)]
pub trait DocumentId:
    sealed::Sealed + Clone + Eq + Hash + Debug + Display + Send + Sync + 'static
{
    /// Prepares the id of a document about to be stored: a nil `Uuid` becomes a new
    /// version-7 uuid. Returns why the id is unusable (an empty string).
    fn assign_if_empty(&mut self) -> Result<(), &'static str>;

    /// Checks an id given to a load or delete.
    fn validate(&self) -> Result<(), &'static str>;

    /// The id as a type-erased key (for the identity map and for error reports).
    fn key(&self) -> IdKey;

    /// The order in which a batch writes the rows of its documents: the same in every
    /// session, so that two saves writing the same documents lock their rows in one order
    /// (and wait for each other instead of deadlocking).
    fn write_order(&self, other: &Self) -> std::cmp::Ordering;
}

/// A document id of any supported type, used where ids of several types are kept together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKey {
    /// A `Uuid` id.
    Uuid(Uuid),
    /// An `i64` id.
    I64(i64),
    /// An `i32` id.
    I32(i32),
    /// A `String` id.
    String(String),
}

impl Display for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdKey::Uuid(u) => Display::fmt(u, f),
            IdKey::I64(i) => Display::fmt(i, f),
            IdKey::I32(i) => Display::fmt(i, f),
            IdKey::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl DocumentId for Uuid {
    fn assign_if_empty(&mut self) -> Result<(), &'static str> {
        if self.is_nil() {
            *self = Uuid::now_v7();
        }
        Ok(())
    }
    fn validate(&self) -> Result<(), &'static str> {
        Ok(())
    }
    fn key(&self) -> IdKey {
        IdKey::Uuid(*self)
    }
    fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp(other)
    }
}

impl DocumentId for i64 {
    fn assign_if_empty(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn validate(&self) -> Result<(), &'static str> {
        Ok(())
    }
    fn key(&self) -> IdKey {
        IdKey::I64(*self)
    }
    fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp(other)
    }
}

impl DocumentId for i32 {
    fn assign_if_empty(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn validate(&self) -> Result<(), &'static str> {
        Ok(())
    }
    fn key(&self) -> IdKey {
        IdKey::I32(*self)
    }
    fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp(other)
    }
}

impl DocumentId for String {
    fn assign_if_empty(&mut self) -> Result<(), &'static str> {
        self.validate()
    }
    fn validate(&self) -> Result<(), &'static str> {
        if self.is_empty() {
            Err("a string id must not be empty")
        } else if self.contains('\0') {
            Err("a string id must not contain NUL characters")
        } else if self.len() > MAX_ID_BYTES {
            Err("a string id must not be longer than 2048 bytes (PostgreSQL cannot index longer keys)")
        } else {
            Ok(())
        }
    }
    fn key(&self) -> IdKey {
        IdKey::String(self.clone())
    }
    fn write_order(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp(other)
    }
}
