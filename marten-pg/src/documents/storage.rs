//! The traits that tie a document type to its mode's storage, the write kinds each mode
//! offers (as types: [`BasicWrite`], [`NumericWrite`]), and what the three mode storages
//! share (the [`mode_storage!`] declaration, the table DDL, reading versions and
//! explaining a rejected basic write). Uses the document SQL of [`crate::tables`] and the
//! error map only.

use std::fmt::{Debug, Display};

use marten_core::concurrency::{ConcurrencyMode, NoVersion, VersionOf};
use marten_core::{Document, RejectionKind, Result};
use tokio_postgres::types::{FromSqlOwned, ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use super::write_batch::WriteBatch;
use crate::error_map::{map_db_error, Failed};
use crate::tables::def::{ColumnDef, TableDef};
use crate::tables::documents::{
    full_text_index, table_def as table_def_of, BulkSql, ReadSql, Scope, VersionBump, WriteSql,
};
use crate::PgId;

/// A document PostgreSQL can store. Implemented by `#[derive(Document)]`, which selects
/// [`Self::Storage`]: [`OptimisticStorage`](super::OptimisticStorage),
/// [`NumericStorage`](super::NumericStorage) or [`OffStorage`](super::OffStorage).
/// Do not implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a document PostgreSQL can store",
    label = "not a stored document",
    note = "derive it with `#[derive(Document)]` (or `#[derive(Aggregate)]`): a hand-written `marten::Document` impl has no storage"
)]
pub trait PgDocument: Document<Id: PgId, Mode: ConcurrencyMode<Version: PgVersion>> {
    /// The storage of this document's concurrency mode; its writes are those its version
    /// type offers ([`WriteOf`]).
    type Storage: DocumentStorage<Self, Write = WriteOf<Self>>;
    /// The storage, built once per document type (its SQL text included).
    fn storage() -> &'static Self::Storage;
}

pub use marten_core::concurrency::{BasicWrite, NumericWrite, WriteOf};

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A mode's version type as PostgreSQL stores it (the writes a mode offers are
/// [`ConcurrencyMode::Write`]). Sealed: implemented for the version types of the three
/// modes.
pub trait PgVersion: sealed::Sealed + Sized {
    /// The version a new write stores, when the client chooses it (optimistic).
    #[doc(hidden)]
    fn fresh() -> Option<Self>;
    /// Reads a version column (`None` for a mode without versions).
    #[doc(hidden)]
    fn read(row: &Row, idx: usize) -> std::result::Result<Option<Self>, tokio_postgres::Error>;
    /// Reads a column holding an array of versions (NULL: none).
    #[doc(hidden)]
    fn read_all(row: &Row, idx: usize) -> std::result::Result<Vec<Self>, tokio_postgres::Error>;
    /// The version a bulk insert writes with a new row (a fresh uuid, revision 1), in the
    /// column of type [`Self::COLUMN_TYPE`]; `None` for a mode without versions.
    #[doc(hidden)]
    fn initial() -> Option<Self>;
    /// The type of the version column (`None`: the mode has none).
    #[doc(hidden)]
    const COLUMN_TYPE: Option<Type>;
    /// The version as a parameter of a statement or a copied row (`None`: the mode has
    /// no version column).
    #[doc(hidden)]
    fn param(&self) -> Option<&(dyn ToSql + Sync)>;
    /// How a patch moves the version.
    #[doc(hidden)]
    const BUMP: VersionBump;
}

impl sealed::Sealed for NoVersion {}

impl PgVersion for NoVersion {
    fn fresh() -> Option<Self> {
        None
    }

    fn read(_row: &Row, _idx: usize) -> std::result::Result<Option<Self>, tokio_postgres::Error> {
        Ok(None)
    }

    fn read_all(_row: &Row, _idx: usize) -> std::result::Result<Vec<Self>, tokio_postgres::Error> {
        Ok(Vec::new())
    }

    fn initial() -> Option<Self> {
        None
    }

    const COLUMN_TYPE: Option<Type> = None;

    fn param(&self) -> Option<&(dyn ToSql + Sync)> {
        None
    }

    const BUMP: VersionBump = VersionBump::None;
}

/// A version stored in a column of its own (of `$type`): `$version`, whose new writes
/// store `$fresh` (chosen by the client, or `None`: by the statement), whose bulk
/// inserts store `$initial` and which a patch moves by `$bump`.
macro_rules! column_version {
    ($version:ty, $type:expr, $fresh:expr, $initial:expr, $bump:expr) => {
        impl sealed::Sealed for $version {}

        impl PgVersion for $version {
            fn fresh() -> Option<Self> {
                $fresh
            }

            fn read(
                row: &Row,
                idx: usize,
            ) -> std::result::Result<Option<Self>, tokio_postgres::Error> {
                row.try_get(idx)
            }

            fn read_all(
                row: &Row,
                idx: usize,
            ) -> std::result::Result<Vec<Self>, tokio_postgres::Error> {
                read_array(row, idx)
            }

            fn initial() -> Option<Self> {
                Some($initial)
            }

            const COLUMN_TYPE: Option<Type> = Some($type);

            fn param(&self) -> Option<&(dyn ToSql + Sync)> {
                Some(self)
            }

            const BUMP: VersionBump = $bump;
        }
    };
}

column_version!(
    Uuid,
    Type::UUID,
    Some(Uuid::new_v4()),
    Uuid::new_v4(),
    VersionBump::Uuid
);
column_version!(i64, Type::INT8, None, 1, VersionBump::Revision);

fn read_array<V: FromSqlOwned>(
    row: &Row,
    idx: usize,
) -> std::result::Result<Vec<V>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<Vec<V>>>(idx)?.unwrap_or_default())
}

/// The storage of one concurrency mode for one document type: its SQL text, the writes
/// it offers and how its parameters are bound. Sealed; one implementation per mode.
pub trait DocumentStorage<D: PgDocument>: sealed::Sealed + Send + Sync + Sized + 'static {
    /// The writes this mode offers ([`BasicWrite`] or [`NumericWrite`]); every storage
    /// matches its own writes exhaustively.
    type Write: Copy + Eq + Debug + Send + Sync + 'static + From<BasicWrite>;
    /// Builds the storage and its SQL text (called once per type).
    fn new() -> Self;
    /// The table the type needs: its columns (the mode's version column included), its
    /// indexes; the DDL that creates it is rendered from it.
    #[doc(hidden)]
    fn table_def() -> TableDef;
    /// The reads and deletes.
    #[doc(hidden)]
    fn reads(&self) -> &ReadSql;
    /// The SQL of a write.
    #[doc(hidden)]
    fn write_sql(&self, kind: Self::Write) -> &WriteSql;
    /// The SQL of a bulk insert.
    #[doc(hidden)]
    fn bulk_sql(&self) -> &BulkSql;
    /// Whether a write of this kind may be rejected (and so needs the batch guard).
    #[doc(hidden)]
    fn checked(kind: Self::Write) -> bool;
    /// Why a write of this kind expecting `expected` was rejected, the stored document
    /// being `found` (`None`: missing; `Some(None)`: without a version).
    #[doc(hidden)]
    fn rejection(
        kind: Self::Write,
        expected: Option<VersionOf<D>>,
        found: Option<Option<VersionOf<D>>>,
    ) -> RejectionKind;
    /// Appends the parameters of the mode's own columns (after id and data) for `batch`.
    #[doc(hidden)]
    fn params<'a>(_batch: &'a WriteBatch<D>, _out: &mut Vec<&'a (dyn ToSql + Sync)>) {}
}

/// Declares the storage type of a mode and implements what every mode's
/// [`DocumentStorage`] does alike (building the SQL, the DDL, the columns, the reads);
/// the members given in braces are the mode's own. `$column by $add` is the mode's
/// version column and the DDL function that adds it, if it has one. A mode marked `basic`
/// offers the [`BasicWrite`]s only: its SQL's `upsert`, `insert` and `update`, rejected
/// for the basic reasons.
macro_rules! mode_storage {
    (
        $(#[$doc:meta])*
        $name:ident: $mode:ty, $sql:ident $(, $column:ident by $add:ident)?;
        basic { $($members:tt)* }
    ) => {
        mode_storage! {
            $(#[$doc])*
            $name: $mode, $sql $(, $column by $add)?;
            {
                type Write = $crate::documents::BasicWrite;

                fn write_sql(&self, kind: Self::Write) -> &$crate::tables::documents::WriteSql {
                    let w = &self.writes;
                    super::storage::basic_sql(kind, [&w.upsert, &w.insert, &w.update])
                }

                fn rejection(
                    kind: Self::Write,
                    expected: Option<marten_core::concurrency::VersionOf<D>>,
                    found: Option<Option<marten_core::concurrency::VersionOf<D>>>,
                ) -> marten_core::RejectionKind {
                    super::storage::basic_rejection(kind, expected, found)
                }

                $($members)*
            }
        }
    };
    (
        $(#[$doc:meta])*
        $name:ident: $mode:ty, $sql:ident $(, $column:ident by $add:ident)?;
        { $($members:tt)* }
    ) => {
        $(#[$doc])*
        pub struct $name<D> {
            reads: $crate::tables::documents::ReadSql,
            writes: $sql,
            _doc: std::marker::PhantomData<fn() -> D>,
        }

        impl<D> super::storage::sealed::Sealed for $name<D> {}

        impl<D: $crate::documents::PgDocument<Mode = $mode>> $crate::documents::DocumentStorage<D>
            for $name<D>
        {
            fn new() -> Self {
                let (table, id_type) = (D::TABLE_NAME, <D::Id as $crate::PgId>::SQL_TYPE);
                let scope = super::storage::scope::<D>();
                $name {
                    reads: $crate::tables::documents::ReadSql::new(table, id_type, None $(.or(Some($column)))?, scope),
                    writes: $sql::new(table, id_type, scope),
                    _doc: std::marker::PhantomData,
                }
            }

            fn table_def() -> $crate::tables::def::TableDef {
                let column: Option<super::storage::ModeColumn> = None $(.or(Some(($column, $add))))?;
                super::storage::table_def::<D>(column)
            }

            fn reads(&self) -> &$crate::tables::documents::ReadSql {
                &self.reads
            }

            fn bulk_sql(&self) -> &$crate::tables::documents::BulkSql {
                &self.writes.bulk
            }

            $($members)*
        }
    };
}

pub(super) use mode_storage;

/// A mode's version column: its name and its definition.
pub(super) type ModeColumn = (&'static str, fn() -> ColumnDef);

/// `D`'s table: the base columns, the mode's version column, the indexed columns and
/// the indexes (the full-text index among them, `#[document(full_text)]`).
pub(super) fn table_def<D: PgDocument>(version: Option<ModeColumn>) -> TableDef {
    let mut def = table_def_of(
        D::TABLE_NAME,
        <D::Id as PgId>::SQL_TYPE,
        version.map(|(_, column)| column()),
        D::INDEXES,
        D::GIN_INDEX,
        scope::<D>(),
    );
    if let Some(config) = D::FULL_TEXT {
        def.indexes.push(full_text_index(D::TABLE_NAME, config));
    }
    def
}

/// How `D`'s statements scope its rows: to the tenant of a conjoined type, to the live
/// rows of a soft-deleted one.
pub(crate) const fn scope<D: PgDocument>() -> Scope {
    Scope::of(D::TENANCY).soft_deleted(D::SOFT_DELETE)
}

/// The SQL of a basic write, given the mode's `[upsert, insert, update]`.
pub(super) fn basic_sql(kind: BasicWrite, [upsert, insert, update]: [&WriteSql; 3]) -> &WriteSql {
    match kind {
        BasicWrite::Upsert => upsert,
        BasicWrite::Insert => insert,
        BasicWrite::Update => update,
    }
}

/// Why a basic write was rejected: an insert found the id taken, an update found no
/// document, anything else found another version.
pub(super) fn basic_rejection<V: Display + Copy>(
    kind: BasicWrite,
    expected: Option<V>,
    found: Option<Option<V>>,
) -> RejectionKind {
    match (kind, found) {
        (BasicWrite::Insert, _) => RejectionKind::AlreadyExists,
        (BasicWrite::Update, None) => RejectionKind::NotFound,
        (BasicWrite::Update | BasicWrite::Upsert, found) => RejectionKind::VersionMismatch {
            expected: expected.map_or_else(|| "any".to_owned(), |v| v.to_string()),
            actual: found.flatten().map(|v| v.to_string()),
        },
    }
}

/// Whether `D`'s rows carry their tenant (its statements bind one).
pub(crate) const fn conjoined<D: PgDocument>() -> bool {
    matches!(D::TENANCY, marten_core::Tenancy::Conjoined)
}

/// The version a new write of `D` stores, when the client chooses it (optimistic).
pub(crate) fn fresh_version<D: PgDocument>() -> Option<VersionOf<D>> {
    <VersionOf<D> as PgVersion>::fresh()
}

/// Reads `D`'s version column (`None` for a mode without versions).
pub(crate) fn read_version<D: PgDocument>(row: &Row, idx: usize) -> Result<Option<VersionOf<D>>> {
    <VersionOf<D> as PgVersion>::read(row, idx)
        .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))
}

/// Reads the array of versions of `D` a write returned.
pub(crate) fn read_versions<D: PgDocument>(row: &Row, idx: usize) -> Result<Vec<VersionOf<D>>> {
    <VersionOf<D> as PgVersion>::read_all(row, idx)
        .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))
}
