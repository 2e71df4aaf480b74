//! Document storage: the SQL of document tables, one storage type per concurrency mode,
//! and the write batches a unit of work sends.

pub(crate) mod batch;
mod numeric;
mod off;
mod optimistic;
pub(crate) mod storage;
pub mod table;

pub use numeric::NumericStorage;
pub use off::OffStorage;
pub use optimistic::OptimisticStorage;
pub use storage::{DocumentStorage, PgDocument, WriteKind};
