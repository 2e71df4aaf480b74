//! What the typed batches ([`WriteBatch`](super::write_batch::WriteBatch) and
//! [`DeleteBatch`](super::delete_batch::DeleteBatch)) implement alike: the
//! [`DocumentBatch`](crate::unit_of_work::DocumentBatch) casts and the document-type
//! methods of [`Operation`](crate::unit_of_work::Operation). Macros only; the batch
//! modules bring the traits and the migration into scope.

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

/// The `Operation` methods that name the document type `$d`: its name, table and
/// schema. Used inside an `impl Operation` block.
macro_rules! document_type_of {
    ($d:ident) => {
        fn document_type(&self) -> &'static str {
            $d::DOCUMENT_TYPE
        }

        fn table(&self) -> &'static str {
            $d::TABLE_NAME
        }

        fn schema(&self) -> (std::any::TypeId, MigrateFn) {
            (std::any::TypeId::of::<$d>(), migrate_fn::<$d>())
        }
    };
}

pub(super) use {document_batch, document_type_of};
