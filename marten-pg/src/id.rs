//! How each document id type is bound and read, and its PostgreSQL column type.

use marten_core::DocumentId;
use postgres_types::{FromSqlOwned, ToSql, Type};

mod sealed {
    pub trait Sealed {}
    impl Sealed for uuid::Uuid {}
    impl Sealed for i64 {}
    impl Sealed for i32 {}
    impl Sealed for String {}
    impl<T: super::PgNewtype> Sealed for T {}
}

/// A newtype id (`#[derive(DocumentId)]`) stored as its inner type: the derive implements
/// it next to `marten_core`'s `Newtype`, and `ToSql` / `FromSql` delegating to the inner
/// value. Not public API.
#[doc(hidden)]
pub trait PgNewtype: marten_core::newtype::Newtype<Inner: PgId> + ToSql + FromSqlOwned {}

/// A document id PostgreSQL can store. Sealed; implemented for `Uuid`, `i64`, `i32`,
/// `String` and newtypes over them (`#[derive(DocumentId)]`), which are stored as their
/// inner type.
pub trait PgId: DocumentId + ToSql + FromSqlOwned + Sync + sealed::Sealed {
    /// The column type of the id.
    const SQL_TYPE: &'static str;
    /// The column type as the binary `COPY` format names it.
    #[doc(hidden)]
    const PG_TYPE: Type;

    /// Whether the store's HiLo allocator is to assign this id: an integer id (or integer
    /// newtype id) that is zero ([`HiLoId::is_unassigned`]), never any other. For bulk
    /// inserts, which take any id type. Not public API.
    #[doc(hidden)]
    fn awaits_hilo(&self) -> bool {
        false
    }

    /// Sets the id to `value` from the HiLo allocator; `false` when the value does not
    /// fit the type (nothing is set) or the type has no generated ids. Not public API.
    #[doc(hidden)]
    fn set_generated(&mut self, _value: i64) -> bool {
        false
    }
}

impl PgId for uuid::Uuid {
    const SQL_TYPE: &'static str = "uuid";
    const PG_TYPE: Type = Type::UUID;
}

impl PgId for i64 {
    const SQL_TYPE: &'static str = "bigint";
    const PG_TYPE: Type = Type::INT8;
    fn awaits_hilo(&self) -> bool {
        *self == 0
    }
    fn set_generated(&mut self, value: i64) -> bool {
        *self = value;
        true
    }
}

impl PgId for i32 {
    const SQL_TYPE: &'static str = "integer";
    const PG_TYPE: Type = Type::INT4;
    fn awaits_hilo(&self) -> bool {
        *self == 0
    }
    fn set_generated(&mut self, value: i64) -> bool {
        match i32::try_from(value).ok() {
            Some(id) => {
                *self = id;
                true
            }
            None => false,
        }
    }
}

impl PgId for String {
    const SQL_TYPE: &'static str = "text";
    const PG_TYPE: Type = Type::TEXT;
}

impl<T: PgNewtype + DocumentId + Sync> PgId for T {
    const SQL_TYPE: &'static str = <T::Inner as PgId>::SQL_TYPE;
    const PG_TYPE: Type = <T::Inner as PgId>::PG_TYPE;
    fn awaits_hilo(&self) -> bool {
        self.inner().awaits_hilo()
    }
    fn set_generated(&mut self, value: i64) -> bool {
        self.inner_mut().set_generated(value)
    }
}

mod hilo_sealed {
    pub trait Sealed {}
    impl Sealed for i64 {}
    impl Sealed for i32 {}
    impl<T: super::PgNewtype> Sealed for T {}
}

/// A document id the store can generate with its HiLo allocator
/// ([`DocumentStore::next_id`](crate::DocumentStore::next_id),
/// [`NewIds::insert_new`](crate::NewIds::insert_new)): `i64`, `i32`, and newtypes over them
/// (`#[derive(DocumentId)] struct OrderNo(i64);`, which implements it when its inner type
/// does). Zero means "not assigned yet". Sealed.
#[diagnostic::on_unimplemented(
    message = "the store cannot generate `{Self}` ids",
    label = "not an integer id",
    note = "the store generates `i64` and `i32` ids (HiLo) and ids of newtypes over them (`#[derive(DocumentId)] struct OrderNo(i64);`); a nil `Uuid` id gets a new uuid on any store"
)]
pub trait HiLoId: PgId + hilo_sealed::Sealed {
    /// Whether the id is still to be assigned (zero).
    fn is_unassigned(&self) -> bool;
    /// The id of a generated value; `None` when it does not fit the type.
    fn from_generated(value: i64) -> Option<Self>;
}

impl HiLoId for i64 {
    fn is_unassigned(&self) -> bool {
        *self == 0
    }
    fn from_generated(value: i64) -> Option<Self> {
        Some(value)
    }
}

impl HiLoId for i32 {
    fn is_unassigned(&self) -> bool {
        *self == 0
    }
    fn from_generated(value: i64) -> Option<Self> {
        i32::try_from(value).ok()
    }
}
