//! [`CliError`]: why a command failed.

use std::path::PathBuf;

/// Why a command of the command line failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The store failed (building it, a query, a schema difference, a daemon runner).
    #[error(transparent)]
    Store(#[from] marten_core::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No async projection of the store has this name.
    #[error("no async projection named {name:?} (the store has: {})", known.join(", "))]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The store's async projections.
        known: Vec<String>,
    },
    /// Waiting for the stop signals (SIGTERM, Ctrl-C) could not be set up.
    #[error("cannot listen for stop signals")]
    Signal(#[source] std::io::Error),
}
