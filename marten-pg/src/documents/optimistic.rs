//! Storage of documents with `#[concurrency(optimistic)]`: a `uuid` version per write,
//! chosen by the client; the basic writes only. Uses the shared storage declaration and
//! the mode's SQL in [`crate::tables::documents`].

use marten_core::concurrency::Optimistic;
use tokio_postgres::types::ToSql;

use super::storage::{mode_storage, BasicWrite};
use super::write_batch::WriteBatch;
use crate::tables::documents::{version_column, OptimisticSql, VERSION_COLUMN};

mode_storage! {
    /// The storage `#[derive(Document)]` selects for `#[concurrency(optimistic)]`.
    OptimisticStorage: Optimistic, OptimisticSql, VERSION_COLUMN by version_column;
    basic {
        /// Every optimistic write may be rejected: a stale version, a taken id, a
        /// missing document.
        fn checked(_kind: BasicWrite) -> bool {
            true
        }

        /// The new version chosen by the client, then the expected one.
        fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
            out.extend([batch.column(&batch.fresh), batch.column(&batch.expected)]);
        }
    }
}
