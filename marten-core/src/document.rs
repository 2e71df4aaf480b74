use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ConcurrencyMode, DocumentId, Tenancy};

/// A document: a serde type stored as `jsonb` in its own table.
///
/// Implement it with `#[derive(Document)]`; the derive picks the id field, the table name
/// and the concurrency mode, and checks them at compile time.
pub trait Document: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The id type (`Uuid`, `i64`, `i32` or `String`).
    type Id: DocumentId;
    /// The concurrency mode (`Optimistic`, `Numeric` or `Off`), chosen at compile time.
    type Mode: ConcurrencyMode;
    /// The name of the document type, used in errors and logs.
    const DOCUMENT_TYPE: &'static str;
    /// The table that holds documents of this type (without schema).
    const TABLE_NAME: &'static str;
    /// Fields duplicated into indexed columns (`#[document(index)]`, `#[document(unique)]`).
    const INDEXES: &'static [IndexSpec] = &[];
    /// Whether the whole document has a GIN index (`#[document(gin)]`).
    const GIN_INDEX: bool = false;
    /// The PostgreSQL text search configuration of the type's full-text index
    /// (`#[document(full_text)]`: `english`; `#[document(full_text = "simple")]`), or
    /// `None` without one. Searches ([`FullTextSearch`](crate::query::FullTextSearch))
    /// use the same configuration, so the index serves them.
    const FULL_TEXT: Option<&'static str> = None;
    /// How the type's rows are shared between tenants (`#[document(tenancy =
    /// "conjoined")]`); single (one set of rows for every tenant) by default.
    const TENANCY: Tenancy = Tenancy::Single;
    /// Whether deletes only mark rows deleted (`#[document(soft_delete)]`); such a type
    /// also implements [`SoftDeleted`].
    const SOFT_DELETE: bool = false;
    /// The id of this document.
    fn id(&self) -> &Self::Id;
    /// The id of this document, mutably (used to assign a new id to a nil `Uuid`).
    fn id_mut(&mut self) -> &mut Self::Id;
}

/// A field duplicated into a typed column with a btree index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    /// The Rust field name.
    pub field: &'static str,
    /// The JSON key.
    pub json_key: &'static str,
    /// The column.
    pub column: &'static str,
    /// The column's SQL type.
    pub sql_type: &'static str,
    /// Whether the index is unique.
    pub unique: bool,
}

/// A document type whose deletes only mark rows deleted (`#[document(soft_delete)]`):
/// loads and queries skip marked rows, a query may include them or ask for them only, and
/// an undo un-marks them. Implemented by the derive; do not implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not soft-deleted",
    label = "deleted rows of this type are gone, not marked",
    note = "mark the type `#[document(soft_delete)]` to keep deleted rows and query them"
)]
pub trait SoftDeleted: Document {}
