//! How each document id type is bound and read, and its PostgreSQL column type.

use marten_core::DocumentId;
use postgres_types::{FromSqlOwned, ToSql, Type};

mod sealed {
    pub trait Sealed {}
    impl Sealed for uuid::Uuid {}
    impl Sealed for i64 {}
    impl Sealed for i32 {}
    impl Sealed for String {}
}

/// A document id PostgreSQL can store. Sealed; implemented for `Uuid`, `i64`, `i32`,
/// `String`.
pub trait PgId: DocumentId + ToSql + FromSqlOwned + Sync + sealed::Sealed {
    /// The column type of the id.
    const SQL_TYPE: &'static str;
    /// The column type as the binary `COPY` format names it.
    #[doc(hidden)]
    const PG_TYPE: Type;
}

impl PgId for uuid::Uuid {
    const SQL_TYPE: &'static str = "uuid";
    const PG_TYPE: Type = Type::UUID;
}

impl PgId for i64 {
    const SQL_TYPE: &'static str = "bigint";
    const PG_TYPE: Type = Type::INT8;
}

impl PgId for i32 {
    const SQL_TYPE: &'static str = "integer";
    const PG_TYPE: Type = Type::INT4;
}

impl PgId for String {
    const SQL_TYPE: &'static str = "text";
    const PG_TYPE: Type = Type::TEXT;
}
