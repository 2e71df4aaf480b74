//! Document storage: one storage type per concurrency mode (binding parameters, reading
//! versions; the SQL text is in [`crate::tables::documents`]), the write batches a
//! unit of work sends, patches (`patch`) and deletes by filter (`delete_where`) with the
//! rendered filter they take (`condition`), and bulk inserts with binary `COPY` (`bulk`).
//!
//! May use: the unit of work (its queue and `Operation`), schema, connection, error map,
//! tables and leaf helpers; never events, projections, the store, sessions or the daemon.

pub(crate) mod bulk;
pub(crate) mod condition;
mod delete_batch;
pub(crate) mod delete_where;
pub(crate) mod load;
mod migrate;
mod numeric;
mod off;
mod optimistic;
pub(crate) mod patch;
mod queue;
mod serialize;
pub(crate) mod storage;
mod typed_batch;
pub(crate) mod write_batch;

pub(crate) use migrate::{define_fn, migrate_fn, snapshot_define_fn, snapshot_migrate_fn};
pub(crate) use serialize::{check_document, serialize, serialize_into};
pub(crate) use storage::conjoined;
pub(crate) use typed_batch::document_target;

pub use bulk::{BulkMode, BulkOptions};
pub use numeric::NumericStorage;
pub use off::OffStorage;
pub use optimistic::OptimisticStorage;
pub use storage::{BasicWrite, DocumentStorage, NumericWrite, PgDocument, PgVersion, WriteOf};
