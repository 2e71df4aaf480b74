//! The documents of a bulk insert, prepared before anything is sent: ids assigned and
//! checked, ids given twice resolved per mode.

use super::options::{BulkMode, BulkOptions};
use std::collections::{HashMap, HashSet};

use marten_core::{DocumentId, Error, Rejection, RejectionKind, Result};

use crate::documents::storage::PgDocument;

/// The documents of a bulk insert, their ids assigned and checked and ids given twice
/// resolved; they are serialized as they are copied.
pub(crate) struct BulkRows<D: PgDocument> {
    pub(super) docs: Vec<D>,
}

impl<D: PgDocument> BulkRows<D> {
    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

/// Prepares `docs` for a bulk insert with the checks a session's `store` makes of ids
/// (a nil `Uuid` id gets a new version-7 uuid, an unusable id is refused) and resolves
/// ids given twice as the mode says. The documents are serialized (and checked) as they
/// are copied, so that the server works on the rows sent while the next ones are
/// serialized.
pub(crate) fn prepare<D: PgDocument>(
    docs: impl IntoIterator<Item = D>,
    options: BulkOptions,
) -> Result<BulkRows<D>> {
    if options.batch_size == 0 {
        return Err(Error::Configuration(
            "the batch size of a bulk insert must be at least 1".to_owned(),
        ));
    }
    let mut docs: Vec<D> = docs.into_iter().collect();
    for doc in &mut docs {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
    }
    Ok(BulkRows {
        docs: deduplicate::<D>(docs, options.mode)?,
    })
}

/// Ids given more than once: refused (insert-only), the first kept (ignoring
/// duplicates) or the last kept (overwriting). One statement may not touch a row twice.
pub(super) fn deduplicate<D: PgDocument>(docs: Vec<D>, mode: BulkMode) -> Result<Vec<D>> {
    match mode {
        BulkMode::InsertOnly => {
            let mut seen = HashSet::with_capacity(docs.len());
            let twice: Vec<Rejection> = docs
                .iter()
                .map(D::id)
                .filter(|id| !seen.insert(*id))
                .map(|id| Rejection::new(D::DOCUMENT_TYPE, id.key(), RejectionKind::AlreadyExists))
                .collect();
            if twice.is_empty() {
                Ok(docs)
            } else {
                Err(Error::Rejected(twice))
            }
        }
        BulkMode::IgnoreDuplicates => {
            let mut seen = HashSet::with_capacity(docs.len());
            Ok(docs
                .into_iter()
                .filter(|doc| seen.insert(doc.id().clone()))
                .collect())
        }
        BulkMode::Overwrite => {
            let last: HashMap<&D::Id, usize> =
                docs.iter().enumerate().map(|(i, d)| (d.id(), i)).collect();
            if last.len() == docs.len() {
                return Ok(docs);
            }
            let keep: Vec<bool> = (0..docs.len())
                .map(|i| last.get(docs[i].id()) == Some(&i))
                .collect();
            Ok(docs
                .into_iter()
                .zip(keep)
                .filter_map(|(doc, keep)| keep.then_some(doc))
                .collect())
        }
    }
}
