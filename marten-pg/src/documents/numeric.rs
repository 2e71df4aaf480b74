//! Storage of documents with `#[concurrency(numeric)]`: an `i64` revision, 1 on insert and
//! one more per write, or written at a given revision (the revision writes only this mode
//! offers). Uses the shared storage declaration and the mode's SQL in
//! [`crate::tables::documents`].

use marten_core::concurrency::Numeric;
use marten_core::RejectionKind;
use tokio_postgres::types::ToSql;

use super::storage::{basic_rejection, basic_sql, mode_storage, NumericWrite};
use super::write_batch::WriteBatch;
use crate::tables::documents::{revision_column, NumericSql, WriteSql, REVISION_COLUMN};

mode_storage! {
    /// The storage `#[derive(Document)]` selects for `#[concurrency(numeric)]`.
    NumericStorage: Numeric, NumericSql, REVISION_COLUMN by revision_column;
    {
        type Write = NumericWrite;

        fn write_sql(&self, kind: NumericWrite) -> &WriteSql {
            let w = &self.writes;
            match kind {
                NumericWrite::Basic(kind) => basic_sql(kind, [&w.upsert, &w.insert, &w.update]),
                NumericWrite::UpdateRevision => &w.update_revision,
                NumericWrite::TryUpdateRevision => &w.try_update_revision,
            }
        }

        /// Every numeric write may be rejected but the one that skips a revision that is
        /// not newer. That one is not read back: unless its row count says it wrote
        /// every row, the session forgets what it held of its documents after the commit
        /// (`WriteBatch::committed`), since a skipped row's copy was never written.
        fn checked(kind: NumericWrite) -> bool {
            match kind {
                NumericWrite::Basic(_) | NumericWrite::UpdateRevision => true,
                NumericWrite::TryUpdateRevision => false,
            }
        }

        fn rejection(
            kind: NumericWrite,
            expected: Option<i64>,
            found: Option<Option<i64>>,
        ) -> RejectionKind {
            match kind {
                NumericWrite::Basic(kind) => basic_rejection(kind, expected, found),
                NumericWrite::UpdateRevision | NumericWrite::TryUpdateRevision => {
                    RejectionKind::RevisionNotNewer {
                        requested: expected.unwrap_or(0),
                        actual: found.flatten().unwrap_or(0),
                    }
                }
            }
        }

        /// The expected revision, or the revision to write.
        fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
            out.push(batch.column(&batch.expected));
        }
    }
}
