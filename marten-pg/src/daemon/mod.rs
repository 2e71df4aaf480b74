//! The async projection daemon.
//!
//! Each async projection is run by at most one process at a time: a runner first takes a
//! session-level advisory lock for the projection on a connection of its own, then claims
//! the projection by bumping its owner epoch in `mt_event_progression`. It reads events
//! after its position in the gap-safe global order (`read_all`), plans the batch's
//! writes (slices folded in parallel, see `async_projection`), and commits the writes
//! together with a compare-and-set of the position that also checks the epoch, in one
//! transaction and one round trip. An advisory lock can vanish with its connection; a
//! runner that was paused past a takeover then still holds an old epoch and its commit is
//! rejected, so an event is applied exactly once. Runners on several nodes share the
//! projections: each tries every projection and runs those whose lock it gets.

pub(crate) mod async_projection;
pub mod hooks;
pub(crate) mod progression;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object};
use marten_core::{Error, EventEnvelope, RejectionKind, Result};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::events::table::EVENTS_AFTER;
use crate::events::Position;
use crate::store::DocumentStore;
use crate::xid8::Xid8;
pub use hooks::{DaemonHooks, NoHooks, TraceHooks};

/// What happens to an event whose apply keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// Record it in `mt_dead_letters` with the error and go on without it (the default).
    #[default]
    DeadLetter,
    /// Stop the projection (the daemon's status reports the error).
    Stop,
}

/// Settings of a daemon; build them with struct update syntax from `Default`.
#[derive(Clone)]
pub struct DaemonOptions {
    /// Events per batch (default 500).
    pub batch_size: usize,
    /// How long an idle runner waits before reading again (default 100 ms).
    pub poll_interval: Duration,
    /// Parallel fold workers per batch (default 2).
    pub workers: usize,
    /// Retries of a failing batch before the poison policy applies (default 3, with
    /// doubling backoff from 50 ms).
    pub retries: u32,
    /// What to do with a poison event.
    pub poison: PoisonPolicy,
    /// This node's name (recorded as the projection's owner).
    pub node: String,
    /// Hooks called around the work (default none).
    pub hooks: Arc<dyn DaemonHooks>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
            workers: 2,
            retries: 3,
            poison: PoisonPolicy::default(),
            node: format!("pid-{}", std::process::id()),
            hooks: Arc::new(NoHooks),
        }
    }
}

impl DaemonOptions {
    /// Sets the hooks.
    pub fn with_hooks(mut self, hooks: impl DaemonHooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }
}

/// A running daemon; stops when [`stop`](Daemon::stop) is called or it is dropped.
pub struct Daemon {
    store: DocumentStore,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Daemon {
    /// Starts a runner for every async projection of the store.
    pub fn start(store: &DocumentStore, options: DaemonOptions) -> Daemon {
        let (stop, rx) = watch::channel(false);
        let tasks = store
            .projections()
            .asynchronous
            .iter()
            .map(|p| {
                let (store, p, options, rx) =
                    (store.clone(), p.clone(), options.clone(), rx.clone());
                tokio::spawn(async move { run(store, p, options, rx).await })
            })
            .collect();
        Daemon {
            store: store.clone(),
            stop,
            tasks,
        }
    }

    /// Stops every runner (a batch in flight finishes or rolls back) and returns the first
    /// error a runner stopped with.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for t in self.tasks.drain(..) {
            match t.await {
                Ok(Err(e)) if first.is_ok() => first = Err(e),
                _ => {}
            }
        }
        first
    }

    /// Waits until every async projection has processed every committed event, or the
    /// timeout passes (then [`Error::Timeout`]).
    pub async fn wait_for_non_stale(&self, timeout: Duration) -> Result<()> {
        wait_for_non_stale(&self.store, timeout).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits until every async projection of `store` has processed every committed event.
pub async fn wait_for_non_stale(store: &DocumentStore, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let client = store.connection().await?;
    let (type_id, migrate) = progression::schema();
    store.ensure_erased(type_id, migrate, &client).await?;
    crate::events::read::ensure(store, &client).await?;
    loop {
        let mut stale = Vec::new();
        for p in &store.projections().asynchronous {
            let pos = position_of(&client, p.name()).await?;
            let checking = |e| {
                crate::error_map::map_db_error(
                    e,
                    crate::error_map::Failed::Other("checking staleness"),
                )
            };
            let behind: bool = client
                .query_one(EVENTS_AFTER, &[&Xid8(pos.transaction_id), &pos.sequence])
                .await
                .map_err(checking)?
                .try_get(0)
                .map_err(checking)?;
            if behind {
                stale.push(p.name());
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("projections {stale:?} to catch up"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn position_of(client: &Object, name: &str) -> Result<Position> {
    let row = client
        .query_opt(progression::POSITION, &[&name])
        .await
        .map_err(|e| {
            crate::error_map::map_db_error(e, crate::error_map::Failed::Other("reading progress"))
        })?;
    match row {
        Some(r) => progression::position(&r),
        None => Ok(Position::START),
    }
}

/// Resets an async projection and deletes its documents; a running daemon replays it
/// from the first event. Readers see no documents until the replay has caught up (the
/// trade-off of this simple rebuild: no blue/green copy).
pub async fn rebuild(store: &DocumentStore, projection: &str) -> Result<()> {
    let client = store.connection().await?;
    let (type_id, migrate) = progression::schema();
    store.ensure_erased(type_id, migrate, &client).await?;
    let Some(p) = store
        .projections()
        .asynchronous
        .iter()
        .find(|p| p.name() == projection)
    else {
        return Err(Error::Configuration(format!(
            "no async projection named {projection}"
        )));
    };
    p.clear(&client).await?;
    client
        .execute(progression::RESET, &[&projection])
        .await
        .map_err(|e| {
            crate::error_map::map_db_error(
                e,
                crate::error_map::Failed::Other("resetting a projection"),
            )
        })?;
    Ok(())
}

struct Ownership {
    lock: ClientWrapper,
    position: Position,
    epoch: i64,
}

/// Tries to become the runner of `name`: the advisory lock, then the epoch.
async fn acquire(store: &DocumentStore, name: &str, node: &str) -> Result<Option<Ownership>> {
    let lock = Object::take(store.connection().await?);
    let key = format!("marten:daemon:{}:{name}", store.schema());
    let got: bool = lock
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(|e| {
            crate::error_map::map_db_error(
                e,
                crate::error_map::Failed::Other("locking a projection"),
            )
        })?
        .get(0);
    if !got {
        return Ok(None);
    }
    let app = format!("marten-daemon-lock:{}:{node}", store.schema());
    let _ = lock
        .execute("SELECT set_config('application_name', $1, false)", &[&app])
        .await;
    let row = lock
        .query_one(progression::CLAIM, &[&name, &node])
        .await
        .map_err(|e| {
            crate::error_map::map_db_error(
                e,
                crate::error_map::Failed::Other("claiming a projection"),
            )
        })?;
    Ok(Some(Ownership {
        position: progression::position(&row)?,
        epoch: row.try_get(2).map_err(|e| {
            crate::error_map::map_db_error(
                e,
                crate::error_map::Failed::Other("claiming a projection"),
            )
        })?,
        lock,
    }))
}

async fn run(
    store: DocumentStore,
    projection: Arc<dyn async_projection::AsyncProjection>,
    options: DaemonOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let name = projection.name();
    let hooks = options.hooks.clone();
    {
        let client = store.connection().await?;
        let (type_id, migrate) = progression::schema();
        store.ensure_erased(type_id, migrate, &client).await?;
        crate::events::read::ensure(&store, &client).await?;
    }
    let mut owner: Option<Ownership> = None;
    let mut caught_up = false;
    let mut failures = 0u32;
    let idle = |stop: &mut watch::Receiver<bool>, d: Duration| {
        let mut stop = stop.clone();
        async move {
            let _ = tokio::time::timeout(d, stop.changed()).await;
        }
    };
    while !*stop.borrow() {
        if owner.as_ref().is_some_and(|o| o.lock.is_closed()) {
            warn!(
                projection = name,
                "lost the projection lock connection; stepping down"
            );
            owner = None;
        }
        let Some(own) = owner.as_mut() else {
            match acquire(&store, name, &options.node).await {
                Ok(Some(o)) => {
                    info!(
                        projection = name,
                        node = options.node,
                        epoch = o.epoch,
                        "running projection"
                    );
                    hooks.before_catch_up(name);
                    caught_up = false;
                    owner = Some(o);
                }
                Ok(None) => idle(&mut stop, options.poll_interval * 5).await,
                Err(e) => {
                    debug!(projection = name, error = %e, "cannot acquire projection");
                    idle(&mut stop, options.poll_interval * 5).await;
                }
            }
            continue;
        };
        let mut session = store.lightweight_session();
        let page = match session
            .events()
            .read_all_known(own.position, options.batch_size)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                warn!(projection = name, error = %e, "reading events failed");
                idle(&mut stop, options.poll_interval).await;
                continue;
            }
        };
        if page.rows == 0 {
            if !caught_up {
                hooks.after_catch_up(name);
                caught_up = true;
            }
            // While idle, notice a reset (rebuild) or a takeover: the epoch moved.
            let epoch: Option<i64> = own
                .lock
                .query_opt(progression::EPOCH, &[&name])
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            if epoch != Some(own.epoch) {
                info!(
                    projection = name,
                    "projection was reset or taken over; stepping down"
                );
                owner = None;
                continue;
            }
            idle(&mut stop, options.poll_interval).await;
            continue;
        }
        caught_up = false;
        hooks.before_batch(name);
        let mut events: Vec<EventEnvelope> = page.events;
        let planned = loop {
            let client = match store.connection().await {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            match projection
                .plan(&store, &client, &events, options.workers, &hooks)
                .await
            {
                Ok(ops) => break Ok(ops),
                Err(Error::Apply {
                    stream,
                    version,
                    message,
                    event_type,
                    ..
                }) => {
                    failures += 1;
                    if failures <= options.retries {
                        let backoff = Duration::from_millis(50 * (1 << (failures - 1).min(6)));
                        warn!(projection = name, %stream, version, %message, "apply failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    let Some(bad) = events
                        .iter()
                        .position(|e| e.stream_id == stream && e.version == version)
                    else {
                        break Err(Error::Configuration(format!(
                            "poison event of {stream} v{version} not in batch"
                        )));
                    };
                    match options.poison {
                        PoisonPolicy::Stop => {
                            break Err(Error::Apply {
                                projection: name,
                                event_type,
                                stream,
                                version,
                                message,
                            })
                        }
                        PoisonPolicy::DeadLetter => {
                            let e = events.remove(bad);
                            warn!(
                                projection = name,
                                sequence = e.sequence,
                                "dead-lettering a poison event"
                            );
                            let stream_text = e.stream_id.to_string();
                            if let Err(err) = client
                                .execute(
                                    progression::DEAD_LETTER,
                                    &[&name, &e.sequence, &e.event_type, &stream_text, &message],
                                )
                                .await
                            {
                                break Err(crate::error_map::map_db_error(
                                    err,
                                    crate::error_map::Failed::Other("dead-lettering"),
                                ));
                            }
                            failures = 0;
                            continue;
                        }
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let ops = match planned {
            Ok(ops) => ops,
            Err(e @ Error::Apply { .. }) => {
                warn!(projection = name, error = %e, "stopping projection on a poison event");
                return Err(e);
            }
            Err(e) => {
                warn!(projection = name, error = %e, "planning a batch failed");
                idle(&mut stop, options.poll_interval).await;
                continue;
            }
        };
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        session.uow.user.ops = ops.ops;
        session.uow.push_op(Box::new(progression::Advance::new(
            name,
            own.position,
            page.next,
            own.epoch,
        )));
        hooks.before_commit(name, &sequences);
        match session.save_changes().await {
            Ok(()) => {
                hooks.after_commit(name, &sequences);
                own.position = page.next;
                failures = 0;
            }
            Err(Error::Rejected(r)) if r.iter().any(|r| r.kind == RejectionKind::ProgressMoved) => {
                warn!(
                    projection = name,
                    "progress moved under this runner; batch discarded, stepping down"
                );
                hooks.batch_rejected(name);
                owner = None;
            }
            Err(e) => {
                warn!(projection = name, error = %e, "committing a batch failed; retrying");
                idle(&mut stop, options.poll_interval).await;
            }
        }
    }
    Ok(())
}
