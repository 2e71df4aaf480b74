//! One async projection's runner outside the daemon's tasks, for tests that poll it
//! themselves: drop it at every await point, or race it against a reset.

use std::future::Future;

use marten_core::Result;
use marten_pg::daemon::DaemonOptions;
use marten_pg::DocumentStore;
use tokio::sync::watch;

/// The runner of async projection `projection`, as the daemon runs it, until `stop` says
/// `true`. `None`: the store has no async projection of that name.
pub fn runner(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    stop: watch::Receiver<bool>,
) -> Option<impl Future<Output = Result<()>> + Send + 'static> {
    marten_pg::private::projection_runner(store, projection, options, stop)
}
