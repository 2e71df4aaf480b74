//! The running daemon as its caller holds it: [`Daemon`] starts one runner task per async
//! projection, remembers which runners stopped on their own and why, waits for the
//! projections to catch up, and stops the runners.
//!
//! Owns: the runner tasks, the stop signal, the stopped-runner list. May use: the runner
//! (what each task runs), the staleness check, the store (its async projections).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use marten_core::{Error, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::options::DaemonOptions;
use super::runner::run;
use super::stale::{deadline_after, wait_for_non_stale};
use crate::projections::asynchronous::AsyncProjection;
use crate::store::DocumentStore;

/// Why runners stopped on their own: (projection, message), in the order they stopped.
type Stopped = Arc<Mutex<Vec<(String, String)>>>;

/// A running daemon; stops when [`stop`](Daemon::stop) is called or it is dropped.
pub struct Daemon {
    store: DocumentStore,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
    /// Why runners stopped on their own, by projection.
    stopped: Stopped,
}

impl Daemon {
    /// Starts a runner for every async projection of the store.
    pub fn start(store: &DocumentStore, options: DaemonOptions) -> Daemon {
        let (stop, rx) = watch::channel(false);
        let stopped = Stopped::default();
        let tasks = store
            .projections()
            .asynchronous
            .iter()
            .map(|p| {
                let span = crate::trace::runner(store.schema(), p.name());
                let runner = run(store.clone(), p.clone(), options.clone(), rx.clone());
                spawn_runner(p.as_ref(), runner.instrument(span), stopped.clone())
            })
            .collect();
        Daemon {
            store: store.clone(),
            stop,
            tasks,
            stopped,
        }
    }

    /// Stops every runner (a batch in flight finishes or rolls back) and returns the first
    /// error a runner stopped with.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for t in self.tasks.drain(..) {
            let result = match t.await {
                Ok(result) => result,
                Err(join) => Err(Error::ProjectionStopped {
                    projection: "(runner task)".to_owned(),
                    message: join.to_string(),
                }),
            };
            if let (Err(e), true) = (result, first.is_ok()) {
                first = Err(e);
            }
        }
        first
    }

    /// Waits until every async projection has processed every committed event, or the
    /// timeout passes (then [`Error::Timeout`]). A runner that stopped on its own (see
    /// [`PoisonPolicy::Stop`](super::PoisonPolicy::Stop)) ends the wait at once with
    /// [`Error::ProjectionStopped`].
    pub async fn wait_for_non_stale(&self, timeout: Duration) -> Result<()> {
        let deadline = deadline_after(timeout);
        loop {
            if let Some((projection, message)) = self.stopped_runner() {
                return Err(Error::ProjectionStopped {
                    projection,
                    message,
                });
            }
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            match wait_for_non_stale(&self.store, step).await {
                Err(Error::Timeout { .. }) if Instant::now() < deadline => continue,
                other => return other,
            }
        }
    }

    /// The first runner that stopped on its own, and why.
    fn stopped_runner(&self) -> Option<(String, String)> {
        self.stopped.lock().ok()?.first().cloned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Spawns the runner of `projection`. A panic outside the apply methods (which the fold
/// catches) stops this runner only, as an error `stop` reports; a runner that ends with
/// an error is recorded in `stopped`.
fn spawn_runner(
    projection: &dyn AsyncProjection,
    runner: impl std::future::Future<Output = Result<()>> + Send + 'static,
    stopped: Stopped,
) -> JoinHandle<Result<()>> {
    let name = projection.name();
    tokio::spawn(async move {
        let ran = AssertUnwindSafe(runner).catch_unwind().await;
        let result = ran.unwrap_or_else(|panic| {
            Err(Error::ProjectionStopped {
                projection: name.to_owned(),
                message: marten_core::aggregate::panic_message(&*panic),
            })
        });
        if let Err(e) = &result {
            if let Ok(mut list) = stopped.lock() {
                list.push((name.to_owned(), e.to_string()));
            }
        }
        result
    })
}
