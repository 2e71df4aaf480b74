//! The console's error type: what [`ConsoleBuilder::try_build`](crate::ConsoleBuilder::try_build),
//! [`Console::bind`](crate::Console::bind) and serving can fail with.

use std::net::SocketAddr;

/// Why the console could not be bound or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// A bind to an address other than loopback was asked for without an auth hook
    /// ([`ConsoleBuilder::auth`](crate::ConsoleBuilder::auth)).
    #[error(
        "refusing to serve the console on {addr}: not a loopback address and no auth hook \
         was given (ConsoleBuilder::auth)"
    )]
    NonLocalWithoutAuth {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The base path ([`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path)) is
    /// not a path the console can be mounted under and link to.
    #[error(
        "invalid console base path {path:?}: {reason} (a path such as \"/console\" or \"/ops/console\"; \
         \"\" or \"/\" for the root)"
    )]
    InvalidBasePath {
        /// The path given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Binding or serving failed.
    #[error("console socket: {0}")]
    Io(#[from] std::io::Error),
}
