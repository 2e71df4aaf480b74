//! A document's JSON as PostgreSQL stores it: serialized with serde, refused with a typed
//! error when it holds what `jsonb` cannot (a NUL character).

use marten_core::{Document, Error, Result};

/// Serializes a document, naming it on failure. A document PostgreSQL cannot store (a
/// NUL character in a string or a map key) is [`Error::InvalidInput`].
pub(crate) fn serialize<D: Document>(doc: &D) -> Result<Vec<u8>> {
    let mut json = Vec::with_capacity(128);
    serialize_into(doc, &mut json)?;
    Ok(json)
}

/// [`serialize`] into `out` (appended), for a caller that reuses one buffer.
pub(crate) fn serialize_into<D: Document>(doc: &D, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, doc).map_err(|source| Error::Serialize {
        document_type: D::DOCUMENT_TYPE,
        id: doc.id().to_string(),
        source,
    })?;
    check_document::<D>(doc.id(), &out[start..])
}

/// Fails with [`Error::InvalidInput`] naming the type, id and field when a document's
/// JSON holds a NUL character.
pub(crate) fn check_document<D: Document>(id: &D::Id, json: &[u8]) -> Result<()> {
    crate::validate::check_json(json, || (D::DOCUMENT_TYPE.to_owned(), Some(id.to_string())))
}
