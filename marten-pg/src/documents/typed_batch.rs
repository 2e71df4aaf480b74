//! What the typed batches ([`WriteBatch`](super::write_batch::WriteBatch) and
//! [`DeleteBatch`](super::delete_batch::DeleteBatch)) implement alike: the
//! [`DocumentBatch`](crate::unit_of_work::DocumentBatch) casts (a macro; the batch
//! modules bring the traits into scope), the [`Target`] of a document type's
//! operations (also used by the projections' document checks) and what the session
//! forgets of documents a projection wrote. Uses the unit of work's operation target and
//! session state, and the schema's migration.

use super::migrate_fn;
use super::storage::PgDocument;
use crate::unit_of_work::{SessionState, Target};

/// Implements `DocumentBatch` for a batch type generic over its document type.
macro_rules! document_batch {
    ($batch:ident) => {
        impl<D: PgDocument> DocumentBatch for $batch<D> {
            fn as_any_mut(&mut self) -> &mut dyn Any {
                self
            }

            fn operation(&self) -> &dyn Operation {
                self
            }

            fn operation_mut(&mut self) -> &mut dyn Operation {
                self
            }
        }
    };
}

/// What a batch of documents of type `D` writes: `D`'s table, named after the document
/// type in errors and created by `D`'s migration.
pub(crate) fn document_target<D: PgDocument>() -> Target {
    Target::new(
        D::DOCUMENT_TYPE,
        D::TABLE_NAME,
        (std::any::TypeId::of::<D>(), migrate_fn::<D>()),
    )
}

pub(super) use document_batch;

/// Forgets the session's copies of documents `ids` of type `D` (identity map, dirty
/// tracking): an inline projection wrote them in the session's save (see
/// [`Operation::forget_held`](crate::unit_of_work::Operation::forget_held)).
pub(crate) fn forget_held<D: PgDocument>(ids: &[D::Id], state: &mut SessionState) {
    let docs = state.doc_state::<D>();
    if docs.identity.is_empty() && docs.tracked.is_empty() {
        return;
    }
    for id in ids {
        docs.identity.remove(id);
        docs.tracked.remove(id);
    }
}
