//! The documents of a bulk insert, prepared before anything is sent: ids assigned (a nil
//! `Uuid` a new one, a zero integer id one of the store's HiLo allocator) and checked, ids
//! given twice resolved per mode, rows in id order.

use super::options::{BulkMode, BulkOptions};
use std::collections::{HashMap, HashSet};

use marten_core::{DocumentId, Error, Rejection, RejectionKind, Result};

use crate::documents::storage::PgDocument;
use crate::PgId;

/// The documents of a bulk insert, their ids assigned and checked, ids given twice
/// resolved and the rows in id order; they are serialized as they are copied. Until the
/// zero integer ids got ids of the store's HiLo allocator ([`BulkRows::awaiting_ids`],
/// [`BulkRows::assign_ids`]) they are not resolved nor ordered, and not ready to write.
pub(crate) struct BulkRows<D: PgDocument> {
    pub(super) docs: Vec<D>,
    /// How many documents wait for an id of the HiLo allocator.
    awaiting: usize,
    mode: BulkMode,
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

    /// How many documents wait for an id of the store's HiLo allocator (an integer id
    /// that is zero).
    pub(crate) fn awaiting_ids(&self) -> usize {
        self.awaiting
    }

    /// Gives the documents that wait for an id the `values` of the HiLo allocator, in
    /// the order the documents came, then resolves ids given twice and orders the rows.
    /// [`Error::InvalidId`] when a value does not fit the id type (an `i32` id past
    /// `i32::MAX`), or when fewer values come than documents wait.
    pub(crate) fn assign_ids(&mut self, values: &[i64]) -> Result<()> {
        let mut values = values.iter();
        for doc in self.docs.iter_mut().filter(|d| d.id().awaits_hilo()) {
            let Some(&value) = values.next() else {
                return Err(Error::InvalidId {
                    document_type: D::DOCUMENT_TYPE,
                    id: doc.id().to_string(),
                    reason: "no generated id was reserved for this document",
                });
            };
            if !doc.id_mut().set_generated(value) {
                return Err(Error::InvalidId {
                    document_type: D::DOCUMENT_TYPE,
                    id: value.to_string(),
                    reason: "the generated id does not fit the id type",
                });
            }
        }
        self.awaiting = 0;
        self.docs = ready::<D>(std::mem::take(&mut self.docs), self.mode)?;
        Ok(())
    }

    /// Whether the rows are ready to write: no document waits for an id.
    pub(super) fn ready(&self) -> bool {
        self.awaiting == 0
    }
}

/// Prepares `docs` for a bulk insert with the checks a session's `store` makes of ids
/// (a nil `Uuid` id gets a new version-7 uuid, an unusable id is refused), counts the
/// zero integer ids that are to get ids of the store's HiLo allocator and, when there
/// is none, resolves ids given twice as the mode says and orders the rows by id. The
/// documents are serialized (and checked) as they are copied, so that the server works
/// on the rows sent while the next ones are serialized.
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
    let mut awaiting = 0;
    for doc in &mut docs {
        if doc.id().awaits_hilo() {
            awaiting += 1;
            continue;
        }
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
    }
    if awaiting == 0 {
        docs = ready::<D>(docs, options.mode)?;
    }
    Ok(BulkRows {
        docs,
        awaiting,
        mode: options.mode,
    })
}

/// `docs` with ids given twice resolved per `mode`, in id order
/// ([`DocumentId::write_order`], the order of a session's batches): two bulk inserts (or
/// a bulk insert and a save) writing the same rows lock them in one order, so one waits
/// for the other instead of deadlocking. Every batch is copied, and moved from the
/// staging table (a plain heap scanned in the order it was filled), in this order.
fn ready<D: PgDocument>(docs: Vec<D>, mode: BulkMode) -> Result<Vec<D>> {
    let mut docs = deduplicate::<D>(docs, mode)?;
    if !docs
        .windows(2)
        .all(|w| w[0].id().write_order(w[1].id()).is_le())
    {
        docs.sort_by(|a, b| a.id().write_order(b.id()));
    }
    Ok(docs)
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
