use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ConcurrencyMode, DocumentId};

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
    /// The id of this document.
    fn id(&self) -> &Self::Id;
    /// The id of this document, mutably (used to assign a new id to a nil `Uuid`).
    fn id_mut(&mut self) -> &mut Self::Id;
}
