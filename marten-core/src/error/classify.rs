//! How to inspect an [`Error`]: the rejections of a rejected save, the database failure
//! and SQLSTATE behind it, and whether retrying may succeed. Uses the error types of
//! this module only.

use super::{DatabaseError, Error, Rejection};

impl Error {
    /// The rejections of a rejected save, or an empty slice for other errors.
    pub fn rejections(&self) -> &[Rejection] {
        match self {
            Error::Rejected(r) => r,
            _ => &[],
        }
    }

    /// The SQLSTATE of a database error, if the server reported one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.database_error().and_then(|e| e.code.as_deref())
    }

    /// The database failure behind this error, if it is one.
    pub fn database_error(&self) -> Option<&DatabaseError> {
        match self {
            Error::Database(e)
            | Error::Connection(e)
            | Error::Authentication(e)
            | Error::Canceled(e)
            | Error::LockNotAvailable(e)
            | Error::TooManyConnections(e)
            | Error::OutcomeUnknown(e)
            | Error::Conflict { source: e, .. }
            | Error::Tls { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// Whether running the same operation again, unchanged, may succeed and cannot
    /// write anything twice: nothing of the failed attempt was written and the cause is
    /// transient (a lost connection, a conflict with a concurrent transaction, a busy
    /// lock, pool or server, a replica that lags, a session's lost transaction - whose
    /// unit of work, locks included, is what to run again). [`Error::OutcomeUnknown`] is not
    /// retryable: the first attempt may have been written.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Connection(_)
                | Error::Conflict { .. }
                | Error::LockNotAvailable(_)
                | Error::TooManyConnections(_)
                | Error::PoolExhausted { .. }
                | Error::ReplicaBehind { .. }
                | Error::StreamLocked { .. }
                | Error::ProjectionConflict { .. }
                | Error::TransactionLost { .. }
        )
    }
}
