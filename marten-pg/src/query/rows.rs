//! Decoding the rows of a typed query: a document from its `jsonb` column (naming its id
//! when it does not deserialize), a list, a count, and the error of a failed read. Uses
//! `documents`, `error_map` and `json` of the crate.

use marten_core::{Error, Result};

use crate::documents::PgDocument;
pub(super) use crate::error_map::reading_documents as reading;
use crate::json::JsonRef;

/// Decodes the document of a result row whose id is in column `id_column`; a document
/// that does not deserialize is [`Error::Deserialize`] naming its id.
pub(super) fn decode_at<D: PgDocument>(row: &tokio_postgres::Row, id_column: usize) -> Result<D> {
    let json: JsonRef<'_> = row.try_get(0).map_err(reading::<D>)?;
    serde_json::from_slice(json.0).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: match row.try_get::<_, D::Id>(id_column) {
            Ok(id) => id.to_string(),
            Err(_) => "(unknown id)".to_owned(),
        },
        source,
    })
}

/// Decodes the selected values of a row of a selection (`value, id`); values that do not
/// deserialize as `Out` are [`Error::Deserialize`] naming the document's id.
pub(super) fn decode_shape<D: PgDocument, Out: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
) -> Result<Out> {
    let json: JsonRef<'_> = row.try_get(0).map_err(reading::<D>)?;
    serde_json::from_slice(json.0).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: match row.try_get::<_, D::Id>(1) {
            Ok(id) => id.to_string(),
            Err(_) => "(unknown id)".to_owned(),
        },
        source,
    })
}

/// Decodes a row of a query without the total (`data, id`).
pub(super) fn decode<D: PgDocument>(row: &tokio_postgres::Row) -> Result<D> {
    decode_at::<D>(row, 1)
}

/// Decodes every row of a query without the total.
pub(super) fn decode_list<D: PgDocument>(rows: &[tokio_postgres::Row]) -> Result<Vec<D>> {
    rows.iter().map(decode::<D>).collect()
}

/// The count of a count statement's first row (0 without a row).
pub(super) fn decode_count<D: PgDocument>(rows: &[tokio_postgres::Row]) -> Result<i64> {
    match rows.first() {
        Some(r) => r.try_get(0).map_err(reading::<D>),
        None => Ok(0),
    }
}

/// The value of an aggregate statement's one `jsonb` column (`null` without any value)
/// as `Out`; a value `Out` cannot hold (a sum beyond `i64`) is [`Error::CorruptData`]
/// naming the document type and what was computed.
pub(super) fn decode_aggregate<D: PgDocument, Out: serde::de::DeserializeOwned>(
    rows: &[tokio_postgres::Row],
) -> Result<Out> {
    let corrupt = |detail: String| Error::CorruptData {
        owner: D::DOCUMENT_TYPE.to_owned(),
        id: None,
        detail,
    };
    let row = rows
        .first()
        .ok_or_else(|| corrupt("an aggregate returned no row".to_owned()))?;
    let json: JsonRef<'_> = row.try_get(0).map_err(reading::<D>)?;
    serde_json::from_slice(json.0).map_err(|e| {
        corrupt(format!(
            "an aggregate's value {} is not a {}: {e}",
            String::from_utf8_lossy(json.0),
            std::any::type_name::<Out>()
        ))
    })
}
