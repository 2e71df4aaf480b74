//! The running daemon as its caller holds it: [`Daemon`] starts one runner task per async
//! projection (with conjoined events, per projection and tenant, and a watcher that
//! starts the runners of tenants that appear later), remembers which runners stopped on
//! their own and why, waits for the projections to catch up, and stops the runners.
//! What it refuses to run is refused when it starts, as a runner that stopped at once:
//! a shard setting it cannot follow (an unknown name, a count of 0, a projection whose
//! shards could write one document out of event order), and a projection that cannot
//! run over the store's events (with conjoined events, an event projection owning a
//! document type every tenant shares: its tenants' runners would race on it).
//!
//! Owns: the runner tasks, the tenant watcher, the stop signal, the stopped-runner list.
//! May use: the runner (what each task runs), the slots, the tenants' read, the staleness
//! check, the store (its async projections and event tenancy).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use marten_core::WithSources;
use marten_core::{Error, Result, Tenancy, TenantId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::options::{DaemonOptions, MAX_SHARDS};
use super::runner::run;
use super::share::NodeShare;
use super::slot::Slot;
use super::stale::{deadline_after, wait_for_non_stale};
use super::tenants::stream_tenants;
use crate::connection::Conn;
use crate::projections::asynchronous::AsyncProjection;
use crate::store::DocumentStore;

/// Why runners stopped on their own: (slot, message), in the order they stopped.
type Stopped = Arc<Mutex<Vec<(String, String)>>>;

/// The runner tasks, which the tenant watcher adds to while the daemon runs.
type Tasks = Arc<Mutex<Vec<JoinHandle<Result<()>>>>>;

/// How many poll intervals the tenant watcher waits between reads of the tenants.
const TENANT_POLLS: u32 = 5;

/// A running daemon; stops when [`stop`](Daemon::stop) is called or it is dropped.
pub struct Daemon {
    store: DocumentStore,
    stop: watch::Sender<bool>,
    tasks: Tasks,
    /// The watcher that starts the runners of new tenants (conjoined events).
    watcher: Option<JoinHandle<()>>,
    /// Why runners stopped on their own, by slot.
    stopped: Stopped,
}

/// What starting a runner takes.
#[derive(Clone)]
struct Spawner {
    store: DocumentStore,
    options: DaemonOptions,
    stop: watch::Receiver<bool>,
    tasks: Tasks,
    stopped: Stopped,
}

impl Spawner {
    /// Starts a runner for every async projection over the events of `tenant` (every
    /// tenant's, for `None`): one per shard of a sharded projection.
    fn spawn_all(&self, tenant: Option<&TenantId>) {
        let tenancy = self.store.events_tenancy();
        for p in &self.store.projections().asynchronous {
            let count = self.options.shard_count(p.name());
            let refused = p.refused_with(tenancy).is_some();
            if refused || count == 0 || (count > 1 && !p.shardable()) {
                continue; // Refused at start.
            }
            // The node's runners of one projection's shards share its count of them.
            let share = (count > 1).then(|| Arc::new(NodeShare::default()));
            for slot in Slot::all(p.name(), tenant, count) {
                self.spawn(p, slot, share.clone());
            }
        }
    }

    /// Starts the runner of `slot` of projection `p`.
    fn spawn(&self, p: &Arc<dyn AsyncProjection>, slot: Slot, share: Option<Arc<NodeShare>>) {
        let span = crate::trace::runner(self.store.schema(), slot.name());
        let name = slot.name().to_owned();
        let runner = run(
            self.store.clone(),
            p.clone(),
            slot,
            self.options.clone(),
            self.stop.clone(),
            share,
        );
        self.push(spawn_runner(
            name,
            runner.instrument(span),
            self.stopped.clone(),
        ));
    }

    /// A runner of `projection` that stopped at once with `error` (a setting or a
    /// projection the daemon refuses): in the stopped list before `start` returns, and the
    /// error `stop` returns.
    fn stopped_with(&self, projection: String, error: Error) {
        if let Ok(mut list) = self.stopped.lock() {
            list.push((projection, error.to_string()));
        }
        self.push(tokio::spawn(std::future::ready(Err(error))));
    }

    fn push(&self, task: JoinHandle<Result<()>>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }
}

/// The shard settings the daemon refuses: a name that is no async projection of the
/// store, a projection it does not shard (an event projection, a subscription: see
/// `AsyncProjection::unshardable_because`), a count of 0 or above [`MAX_SHARDS`]. The projection named is not
/// run. A count of 1 runs any projection whole, as no setting does. Each refusal with the
/// name it refuses.
fn refused_shards(store: &DocumentStore, options: &DaemonOptions) -> Vec<(String, Error)> {
    let projections = &store.projections().asynchronous;
    let mut refused = Vec::new();
    for (name, count) in &options.shards {
        let found = projections.iter().find(|p| p.name() == name);
        let why = match found {
            None => "is no async projection of the store".to_owned(),
            Some(_) if *count == 0 => "cannot run as 0 shards".to_owned(),
            Some(_) if *count > MAX_SHARDS => {
                format!("cannot run as {count} shards (at most {MAX_SHARDS})")
            }
            Some(p) if *count > 1 && !p.shardable() => {
                format!("cannot be sharded: {}", p.unshardable_because())
            }
            Some(_) => continue,
        };
        let error = Error::Configuration(format!("sharded projection {name} {why}"));
        refused.push((name.clone(), error));
    }
    refused
}

/// The projections the daemon cannot run over the store's events (see
/// `ProjectionRegistry::refused_with`), by name, each refusal naming the projection. They
/// are not run.
fn refused_projections(store: &DocumentStore) -> Vec<(String, Error)> {
    let refused = store.projections().refused_with(store.events_tenancy());
    refused
        .into_iter()
        .map(|(name, e)| (name.to_owned(), e))
        .collect()
}

impl Daemon {
    /// Starts a runner for every async projection of the store. With conjoined events
    /// (see [`DocumentStoreBuilder::events_tenancy`](crate::DocumentStoreBuilder::events_tenancy))
    /// every tenant that has streams gets runners of its own, each with its own
    /// progression row (`Projection@tenant`), lock and owner epoch, so one tenant's poison
    /// event, lag or rebuild never holds up another's; tenants whose first stream appears
    /// later get theirs within a few poll intervals.
    ///
    /// A projection named in [`DaemonOptions::shards`] runs as that many shards, each
    /// with its own progression row (`Projection#2/3`), lock and owner epoch. A name that
    /// is no async projection of the store, a count of 0, or a count above 1 for a
    /// projection the daemon does not shard (an event projection: its shards could write
    /// one document out of event order; a subscription) is a runner that stopped at once
    /// ([`Error::Configuration`] naming the projection and why, reported by
    /// [`wait_for_non_stale`](Self::wait_for_non_stale) and [`stop`](Self::stop)); the
    /// projection is not run. So, with conjoined events, is an event projection owning a
    /// document type every tenant shares (see
    /// [`EventProjection::shared_documents_per_tenant`](crate::EventProjection::shared_documents_per_tenant)).
    pub fn start(store: &DocumentStore, options: DaemonOptions) -> Daemon {
        let (stop, rx) = watch::channel(false);
        let mut refused = refused_projections(store);
        refused.extend(refused_shards(store, &options));
        let spawner = Spawner {
            store: store.clone(),
            options,
            stop: rx,
            tasks: Tasks::default(),
            stopped: Stopped::default(),
        };
        for (projection, e) in refused {
            warn!(projection, error = %e, "not running a projection of the daemon");
            spawner.stopped_with(projection, e);
        }
        let watcher = match store.events_tenancy() {
            Tenancy::Single => {
                spawner.spawn_all(None);
                None
            }
            Tenancy::Conjoined => Some(tokio::spawn(watch_tenants(spawner.clone()))),
        };
        Daemon {
            store: store.clone(),
            stop,
            tasks: spawner.tasks,
            watcher,
            stopped: spawner.stopped,
        }
    }

    /// Stops every runner (a batch in flight finishes or rolls back) and returns the first
    /// error a runner stopped with.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(watcher) = self.watcher.take() {
            // Starts no runner once it has seen the stop.
            let _ = watcher.await;
        }
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let mut first = Ok(());
        for t in tasks {
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
        // The last step's timeout that named the projections behind (and why, when a
        // runner cannot acquire its slot): the final step may be too short for a check to
        // finish, and its timeout would name nothing.
        let mut named: Option<Error> = None;
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
                Err(e @ Error::Timeout { .. }) => {
                    let names =
                        matches!(&e, Error::Timeout { what } if what.starts_with("projections"));
                    let e = match named.take() {
                        Some(earlier) if !names => earlier,
                        _ => e,
                    };
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    named = Some(e);
                }
                other => return other,
            }
        }
    }

    /// Every runner that stopped on its own so far, and why: (slot, message), in the
    /// order they stopped; empty while every runner runs. A setting or a projection the
    /// daemon refuses is listed from [`start`](Self::start) on (see there); a poison event
    /// under [`PoisonPolicy::Stop`](super::PoisonPolicy::Stop) once its runner has
    /// stopped. Reads the daemon's own list, no query: cheap enough to call on every
    /// refresh of a display. The runners listed are not restarted; [`stop`](Self::stop)
    /// returns the first one's error.
    pub fn stopped_runners(&self) -> Vec<(String, String)> {
        match self.stopped.lock() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
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

/// Starts the runners of every tenant that has streams, and of each tenant whose first
/// stream appears later, until the daemon stops. A failed read of the tenants is logged
/// and tried again.
async fn watch_tenants(spawner: Spawner) {
    let mut started: HashSet<TenantId> = HashSet::new();
    let mut stop = spawner.stop.clone();
    let every = spawner.options.poll_interval * TENANT_POLLS;
    while !*stop.borrow() {
        let mut conn = Conn::new();
        let read = stream_tenants(&spawner.store, &mut conn).await;
        // Given back before the wait below, whatever the read came to.
        drop(conn);
        match read {
            Ok(tenants) => {
                for tenant in tenants {
                    if *stop.borrow() {
                        return;
                    }
                    if started.insert(tenant.clone()) {
                        info!(tenant = %tenant, "starting the projections of a tenant");
                        spawner.spawn_all(Some(&tenant));
                    }
                }
            }
            Err(e) => warn!(error = %WithSources(&e), "cannot read the tenants; retrying"),
        }
        let _ = tokio::time::timeout(every, stop.changed()).await;
    }
}

/// Spawns a runner named `name` (its slot). A panic outside the apply methods (which the
/// fold catches) stops this runner only, as an error `stop` reports; a runner that ends
/// with an error is recorded in `stopped`.
fn spawn_runner(
    name: String,
    runner: impl std::future::Future<Output = Result<()>> + Send + 'static,
    stopped: Stopped,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let ran = AssertUnwindSafe(runner).catch_unwind().await;
        let result = ran.unwrap_or_else(|panic| {
            Err(Error::ProjectionStopped {
                projection: name.clone(),
                message: marten_core::aggregate::panic_message(&*panic),
            })
        });
        if let Err(e) = &result {
            if let Ok(mut list) = stopped.lock() {
                list.push((name, e.to_string()));
            }
        }
        result
    })
}
