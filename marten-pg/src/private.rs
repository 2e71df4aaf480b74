//! Seams for marten's own test harness (`marten-testing`). Not public API: hidden from
//! the documentation, exempt from semver, and never needed by a program using marten.
//! Each item here only exposes a point inside an existing operation; it may use any part
//! of the crate but adds no behaviour of its own.

use std::future::Future;

use marten_core::{Apply, Result};
use tokio::sync::watch;

use crate::daemon::DaemonOptions;
use crate::store::DocumentStore;

use crate::events::TagQuery;
use crate::session::events::boundary::fetch_boundary;
use crate::session::Tracking;
use crate::session::{Boundary, Events};

/// [`Events::fetch_for_writing_by_tags`] that awaits `between_reads` after the tag
/// versions' statement is sent and before the events' statement is, so a test can append
/// (or hold racers at a barrier) in that window.
pub async fn fetch_for_writing_by_tags_between<'s, K: Tracking, S: Apply>(
    events: Events<'s, K>,
    query: TagQuery,
    between_reads: impl Future<Output = ()> + Send,
) -> Result<Boundary<'s, K, S>> {
    fetch_boundary(events, query, between_reads).await
}

/// The runner of async projection `projection`, as [`Daemon::start`](crate::daemon::Daemon::start)
/// spawns it, until `stop` says `true`: a test can poll it itself and drop it at any
/// await point. `None`: no async projection has that name.
pub fn projection_runner(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    stop: watch::Receiver<bool>,
) -> Option<impl Future<Output = Result<()>> + Send + 'static> {
    let found = store
        .projections()
        .asynchronous
        .iter()
        .find(|p| p.name() == projection)?
        .clone();
    let slot = crate::daemon::slot::Slot::new(found.name(), None);
    Some(crate::daemon::runner::run(
        store.clone(),
        found,
        slot,
        options,
        stop,
        None,
    ))
}
