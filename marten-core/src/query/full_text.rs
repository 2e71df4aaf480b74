//! Full-text search: [`FullTextSearch`], the marker trait of the document types with a
//! full-text index (`#[document(full_text)]`), which bounds a query's `search`,
//! `phrase_search` and `web_search`, and the default text search configuration.

use crate::Document;

/// The text search configuration of `#[document(full_text)]` without a name.
pub const DEFAULT_FULL_TEXT_CONFIG: &str = "english";

/// A document type with a full-text index over its whole document, searched with the
/// index's configuration ([`Document::FULL_TEXT`]). Implemented by `#[derive(Document)]`
/// for a type marked `#[document(full_text)]` (or `#[document(full_text = "simple")]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no full-text index, so a query cannot search it",
    label = "full-text search needs `#[document(full_text)]` on this type",
    note = "add #[document(full_text)] (the `english` configuration) or #[document(full_text = \"simple\")] (any PostgreSQL text search configuration) to `{Self}`"
)]
pub trait FullTextSearch: Document {}
