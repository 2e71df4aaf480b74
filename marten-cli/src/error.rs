//! [`CliError`]: why a command failed.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Standard output failed for another reason than a reader that went away (a closed
    /// pipe only ends the output: the command goes on without it).
    #[error("cannot write to standard output")]
    Output(#[source] std::io::Error),
    /// `projections rebuild --timeout` ran out before the projection reached the head
    /// recorded at its reset. The daemon was stopped gracefully; the projection stays
    /// reset and partly replayed, and any daemon finishes the replay.
    #[error(
        "{projection} did not reach event {head} (the head at its reset) within {timeout:?}: \
         it is at {}; the daemon was stopped, and any daemon finishes the replay",
        position.map_or_else(|| "an unknown position".to_owned(), |p| format!("event {p}"))
    )]
    RebuildTimedOut {
        /// The projection.
        projection: String,
        /// The limit given.
        timeout: Duration,
        /// The global sequence of the head recorded at the reset.
        head: i64,
        /// Its position last seen, if a status query answered.
        position: Option<i64>,
    },
    /// `projections rebuild` was stopped by a signal (SIGTERM, Ctrl-C) before the
    /// projection reached the head recorded at its reset. The daemon was stopped
    /// gracefully; the projection stays reset and partly replayed, and any daemon
    /// finishes the replay.
    #[error(
        "{signal} stopped the rebuild of {projection} before it reached the head of its \
         reset; the daemon was stopped, and any daemon finishes the replay"
    )]
    RebuildInterrupted {
        /// The projection.
        projection: String,
        /// The signal's name (`SIGTERM`, `SIGINT`).
        signal: &'static str,
    },
    /// `projections rebuild` was stopped by a signal (SIGTERM, Ctrl-C) before it reset
    /// the projection (while it checked the name): nothing was reset, no daemon was
    /// started, and the projection stays as it was.
    #[error(
        "{signal} stopped the rebuild of {projection} before its reset: nothing was reset, \
         the projection stays as it was"
    )]
    RebuildCancelled {
        /// The projection.
        projection: String,
        /// The signal's name (`SIGTERM`, `SIGINT`).
        signal: &'static str,
    },
    /// `projections daemon` ended because runners of the daemon stopped on their own (a
    /// poison event under `PoisonPolicy::Stop`, a shard setting or a projection the
    /// daemon refuses, a shard count it may not change): the daemon was stopped
    /// gracefully (every other runner's batch in flight committed or rolled back).
    /// Listed in the order they stopped, at least one.
    #[error(
        "{}; the daemon was stopped (fix the cause, then start it again)",
        stopped_runners(runners)
    )]
    DaemonRunnerStopped {
        /// Each runner that stopped (its slot: the projection, or a shard `P#2/3` or
        /// tenant `P@t` of it) and why.
        runners: Vec<(String, String)>,
    },
}

/// The runners of [`CliError::DaemonRunnerStopped`], as its message says them.
fn stopped_runners(runners: &[(String, String)]) -> String {
    let each: Vec<String> = runners
        .iter()
        .map(|(slot, why)| format!("{slot} stopped: {why}"))
        .collect();
    if each.is_empty() {
        "a runner stopped".to_owned()
    } else {
        format!("the daemon's runner {}", each.join("; runner "))
    }
}
