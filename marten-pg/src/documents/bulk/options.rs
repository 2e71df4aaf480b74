//! The settings of a bulk insert: [`BulkMode`] (what an id already stored means) and
//! [`BulkOptions`] (the mode and the batch size).

/// How a bulk insert treats documents whose id is already stored (Marten's
/// `BulkInsertMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BulkMode {
    /// New documents only (Marten's `InsertsOnly`), copied straight into the table: the
    /// fastest mode. An id already stored, or given twice, fails the whole bulk insert
    /// with [`Error::Rejected`](marten_core::Error::Rejected) ([`RejectionKind::AlreadyExists`](marten_core::RejectionKind::AlreadyExists) for each such id) and
    /// nothing of it is written.
    #[default]
    InsertOnly,
    /// Documents whose id is stored are skipped (Marten's `IgnoreDuplicates`);
    /// of an id given twice the first document is written.
    IgnoreDuplicates,
    /// Documents whose id is stored overwrite it (Marten's `OverwriteExisting`), without
    /// a concurrency check: an optimistic document gets a new version, a numeric one its
    /// revision plus one. Of an id given twice the last document is written.
    Overwrite,
}

impl BulkMode {
    /// The mode's name, for logs and spans.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BulkMode::InsertOnly => "insert_only",
            BulkMode::IgnoreDuplicates => "ignore_duplicates",
            BulkMode::Overwrite => "overwrite",
        }
    }
}

/// The options of a bulk insert: its [`BulkMode`] and how many documents each `COPY`
/// carries.
///
/// ```
/// use marten_pg::{BulkMode, BulkOptions};
///
/// let options = BulkOptions::new(BulkMode::Overwrite).batch_size(5_000);
/// assert_eq!(options.batch_size, 5_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkOptions {
    /// What happens to documents whose id is already stored.
    pub mode: BulkMode,
    /// Documents per batch (one `COPY`, and for the modes other than insert-only one
    /// `INSERT ... SELECT`), at least 1. All batches share one transaction.
    pub batch_size: usize,
}

impl BulkOptions {
    /// The default batch size. Marten's is 1,000; here rows are streamed into each
    /// `COPY` as they are serialized, so a batch costs neither client nor server memory,
    /// only a round trip and a statement's start and end (at 1,000 the bulk insert of
    /// 10,000 documents ran at about 0.8 of one raw `COPY` on a busy machine, at 10,000
    /// at 1.0). A smaller batch bounds the staging table of the modes that use one.
    pub const DEFAULT_BATCH_SIZE: usize = 10_000;

    /// `mode` with the default batch size.
    pub fn new(mode: BulkMode) -> Self {
        BulkOptions {
            mode,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// Sets the number of documents per batch (at least 1: a bulk insert with 0 fails
    /// with [`Error::Configuration`](marten_core::Error::Configuration) before anything is sent).
    pub fn batch_size(mut self, documents: usize) -> Self {
        self.batch_size = documents;
        self
    }
}

impl Default for BulkOptions {
    /// Insert-only, [`BulkOptions::DEFAULT_BATCH_SIZE`] documents per batch.
    fn default() -> Self {
        Self::new(BulkMode::InsertOnly)
    }
}
