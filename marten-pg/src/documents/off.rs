//! Storage of documents with `#[concurrency(off)]` (the default): no version, the last
//! writer wins; the basic writes only. Uses the shared storage declaration and the
//! mode's SQL in [`crate::tables::documents`].

use marten_core::concurrency::Off;

use super::storage::{mode_storage, BasicWrite};
use crate::tables::documents::OffSql;

mode_storage! {
    /// The storage `#[derive(Document)]` selects for `#[concurrency(off)]` or no attribute.
    OffStorage: Off, OffSql;
    basic {
        /// Without versions only an insert (the id taken) or an update (no document) can
        /// be rejected.
        fn checked(kind: BasicWrite) -> bool {
            match kind {
                BasicWrite::Upsert => false,
                BasicWrite::Insert | BasicWrite::Update => true,
            }
        }
    }
}
