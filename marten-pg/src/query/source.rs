//! Where a query runs: the sessions implement [`QuerySource`] (sealed) to lend their
//! store and connection.

use crate::connection::Conn;
use crate::store::DocumentStore;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A session queries run on ([`Session`](crate::Session) or
/// [`QuerySession`](crate::QuerySession)). Sealed.
pub trait QuerySource: sealed::Sealed {
    /// The store and the session's connection.
    #[doc(hidden)]
    fn source(&mut self) -> (&DocumentStore, &mut Conn);
}
