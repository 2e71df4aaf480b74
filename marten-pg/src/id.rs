//! How each document id type is bound and read, and its PostgreSQL column type.

use marten_core::DocumentId;
use postgres_types::{FromSqlOwned, ToSql};

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
}

impl PgId for uuid::Uuid {
    const SQL_TYPE: &'static str = "uuid";
}

impl PgId for i64 {
    const SQL_TYPE: &'static str = "bigint";
}

impl PgId for i32 {
    const SQL_TYPE: &'static str = "integer";
}

impl PgId for String {
    const SQL_TYPE: &'static str = "text";
}

impl<T: PgNewtype + DocumentId + Sync> PgId for T {
    const SQL_TYPE: &'static str = <T::Inner as PgId>::SQL_TYPE;
}
