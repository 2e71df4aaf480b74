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

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use futures_util::FutureExt;
use marten_core::{Error, EventEnvelope, RejectionKind, Result};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::connection::{timed_out, within, Conn, Request};
use crate::error_map::{map_db_error, Failed};
use crate::events::table::EVENTS_AFTER;
use crate::events::Position;
use crate::store::DocumentStore;
use crate::xid8::Xid8;
pub use hooks::{DaemonHooks, NoHooks};

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
    /// Why runners stopped on their own, by projection.
    stopped: Arc<Mutex<Vec<(String, String)>>>,
}

impl Daemon {
    /// Starts a runner for every async projection of the store.
    pub fn start(store: &DocumentStore, options: DaemonOptions) -> Daemon {
        let (stop, rx) = watch::channel(false);
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let tasks = store
            .projections()
            .asynchronous
            .iter()
            .map(|p| {
                let (store, p, options, rx) =
                    (store.clone(), p.clone(), options.clone(), rx.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let name = p.name();
                    // A panic outside the apply methods (which fold catches) stops this
                    // runner only, as an error `stop` reports.
                    let ran = AssertUnwindSafe(run(store, p, options, rx))
                        .catch_unwind()
                        .await;
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
    /// [`PoisonPolicy::Stop`]) ends the wait at once with [`Error::ProjectionStopped`].
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

/// The instant `timeout` from now; a timeout too large for the clock waits a century.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Waits until every async projection of `store` has processed every committed event.
pub async fn wait_for_non_stale(store: &DocumentStore, timeout: Duration) -> Result<()> {
    let deadline = deadline_after(timeout);
    ensure_tables(store).await?;
    let mut conn = Conn::new();
    loop {
        // A check that hangs (a lock, a lost server) counts against the same deadline.
        let check = conn.run(store, async |client| stale_projections(store, client).await);
        let Ok(stale) = tokio::time::timeout_at(deadline.into(), check).await else {
            return Err(Error::Timeout {
                what: "the daemon's staleness check".to_owned(),
            });
        };
        let stale = stale?;
        if stale.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("projections {stale:?} to catch up"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names of the async projections that have events left to process.
async fn stale_projections(store: &DocumentStore, client: &Object) -> Result<Vec<&'static str>> {
    let mut stale = Vec::new();
    for p in &store.projections().asynchronous {
        let pos = position_of(client, p.name()).await?;
        let row = client
            .query_one(EVENTS_AFTER, &[&Xid8(pos.transaction_id), &pos.sequence])
            .await
            .map_err(|e| map_db_error(e, Failed::Other("checking staleness")))?;
        let behind: bool = row
            .try_get(0)
            .map_err(|e| map_db_error(e, Failed::Other("checking staleness")))?;
        if behind {
            stale.push(p.name());
        }
    }
    Ok(stale)
}

/// Makes sure the progression and event tables exist.
async fn ensure_tables(store: &DocumentStore) -> Result<()> {
    let (type_id, migrate) = progression::schema();
    store.ensure_erased(type_id, migrate).await?;
    crate::events::read::ensure(store).await
}

async fn position_of(client: &Object, name: &str) -> Result<Position> {
    let what = || Failed::Other("reading progress");
    let row = client
        .query_opt(progression::POSITION, &[&name])
        .await
        .map_err(|e| map_db_error(e, what()))?;
    match row {
        Some(r) => progression::position(&r),
        None => Ok(Position::START),
    }
}

/// Resets an async projection and deletes its documents; a running daemon replays it
/// from the first event. Readers see no documents until the replay has caught up (the
/// trade-off of this simple rebuild: no blue/green copy).
pub async fn rebuild(store: &DocumentStore, projection: &str) -> Result<()> {
    ensure_tables(store).await?;
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
    let mut conn = Conn::new();
    let mut req = conn.request(store).await?;
    let answered = within(store, reset_and_clear(&mut req, projection, p.as_ref()));
    let Some(result) = answered.await else {
        req.mark_lost();
        return Err(timed_out(store));
    };
    if result.is_err() {
        req.rollback().await;
    }
    req.settle(&result);
    result
}

/// In one transaction: takes the projection from any runner (the epoch moves, so a batch
/// in flight can no longer commit: its progress update is the first statement of its
/// transaction and now finds another epoch or waits for this one), resets its position,
/// and deletes its documents.
async fn reset_and_clear(
    req: &mut Request<'_>,
    projection: &str,
    p: &dyn async_projection::AsyncProjection,
) -> Result<()> {
    req.set_in_transaction(true);
    let client = req.client();
    let what = |e| map_db_error(e, Failed::Other("resetting a projection"));
    client.batch_execute("BEGIN").await.map_err(what)?;
    client
        .execute(progression::RESET, &[&projection])
        .await
        .map_err(what)?;
    p.clear(client).await?;
    client.batch_execute("COMMIT").await.map_err(what)?;
    req.set_in_transaction(false);
    Ok(())
}

struct Ownership {
    lock: tokio_postgres::Client,
    position: Position,
    epoch: i64,
}

/// Tries to become the runner of `name`: the advisory lock, then the epoch. The lock is
/// taken on a connection outside the pool (a runner never holds a pooled connection
/// while it waits for another); a node that does not get the lock keeps that connection
/// in `standby` for its next try.
async fn acquire(
    store: &DocumentStore,
    name: &str,
    node: &str,
    standby: &mut Option<tokio_postgres::Client>,
) -> Result<Option<Ownership>> {
    let lock = match standby.take() {
        Some(c) if !c.is_closed() => c,
        _ => store.dedicated_connection().await?,
    };
    let key = format!("marten:daemon:{}:{name}", store.schema());
    let locking = |e| map_db_error(e, Failed::Other("locking a projection"));
    let got: bool = lock
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(locking)?
        .try_get(0)
        .map_err(locking)?;
    if !got {
        *standby = Some(lock);
        return Ok(None);
    }
    let app = format!("marten-daemon-lock:{}:{node}", store.schema());
    let _ = lock
        .execute("SELECT set_config('application_name', $1, false)", &[&app])
        .await;
    let claiming = |e| map_db_error(e, Failed::Other("claiming a projection"));
    let row = lock
        .query_one(progression::CLAIM, &[&name, &node])
        .await
        .map_err(claiming)?;
    Ok(Some(Ownership {
        position: progression::position(&row)?,
        epoch: row.try_get(2).map_err(claiming)?,
        lock,
    }))
}

/// What one turn of a runner came to.
enum Turn {
    /// A batch was committed (or discarded): read again at once.
    Worked,
    /// Nothing to do: wait a poll interval.
    Idle,
    /// The projection was reset or taken over: give it up.
    StepDown,
}

/// One runner's state between steps.
struct Runner {
    store: DocumentStore,
    projection: Arc<dyn async_projection::AsyncProjection>,
    options: DaemonOptions,
    caught_up: bool,
    failures: u32,
}

async fn run(
    store: DocumentStore,
    projection: Arc<dyn async_projection::AsyncProjection>,
    options: DaemonOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let name = projection.name();
    ensure_tables(&store).await?;
    let mut runner = Runner {
        store,
        projection,
        options,
        caught_up: false,
        failures: 0,
    };
    let poll = runner.options.poll_interval;
    let mut owner: Option<Ownership> = None;
    let mut standby: Option<tokio_postgres::Client> = None;
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
            match acquire(&runner.store, name, &runner.options.node, &mut standby).await {
                Ok(Some(o)) => {
                    info!(
                        projection = name,
                        node = runner.options.node,
                        epoch = o.epoch,
                        "running projection"
                    );
                    runner.options.hooks.before_catch_up(name);
                    runner.caught_up = false;
                    owner = Some(o);
                }
                Ok(None) => idle(&mut stop, poll * 5).await,
                Err(e) => {
                    debug!(projection = name, error = %e, "cannot acquire projection");
                    idle(&mut stop, poll * 5).await;
                }
            }
            continue;
        };
        match runner.step(own).await {
            Ok(Turn::Worked) => {}
            Ok(Turn::Idle) => idle(&mut stop, poll).await,
            Ok(Turn::StepDown) => owner = None,
            Err(e @ Error::Apply { .. }) => {
                warn!(projection = name, error = %e, "stopping projection on a poison event");
                return Err(e);
            }
            Err(e) => {
                warn!(projection = name, error = %e, "batch failed; retrying");
                idle(&mut stop, poll).await;
            }
        }
    }
    Ok(())
}

impl Runner {
    /// Reads the next batch after the owner's position, plans it and commits it with the
    /// progress update, all on one pooled connection that is given back before the
    /// runner waits for anything.
    async fn step(&mut self, own: &mut Ownership) -> Result<Turn> {
        let name = self.projection.name();
        let hooks = self.options.hooks.clone();
        let mut session = self.store.lightweight_session();
        let page = session
            .events()
            .read_all_known(own.position, self.options.batch_size)
            .await?;
        if page.rows == 0 {
            drop(session);
            if !self.caught_up {
                hooks.after_catch_up(name);
                self.caught_up = true;
            }
            // While idle, notice a reset (rebuild) or a takeover: the epoch moved.
            let epoch = match own.lock.query_opt(progression::EPOCH, &[&name]).await {
                Ok(row) => row.and_then(|r| r.try_get::<_, i64>(0).ok()),
                Err(_) => None,
            };
            if epoch != Some(own.epoch) {
                info!(
                    projection = name,
                    "projection was reset or taken over; stepping down"
                );
                return Ok(Turn::StepDown);
            }
            return Ok(Turn::Idle);
        }
        self.caught_up = false;
        hooks.before_batch(name);
        let mut events: Vec<EventEnvelope> = page.events;
        let mut ops = self.plan(&mut session, &mut events).await?;
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        // The progress update goes first: it locks the progression row before any
        // projected document, in the order a rebuild takes them (no deadlock), and a
        // runner whose epoch moved writes nothing that could commit.
        session.uow.push_op(Box::new(progression::Advance::new(
            name,
            own.position,
            page.next,
            own.epoch,
        )));
        session.uow.user.append(&mut ops);
        hooks.before_commit(name, &sequences);
        match session.save_changes().await {
            Ok(()) => {
                hooks.after_commit(name, &sequences);
                own.position = page.next;
                self.failures = 0;
                Ok(Turn::Worked)
            }
            Err(Error::Rejected(r)) if r.iter().any(|r| r.kind == RejectionKind::ProgressMoved) => {
                warn!(
                    projection = name,
                    "progress moved under this runner; batch discarded, stepping down"
                );
                hooks.batch_rejected(name);
                Ok(Turn::StepDown)
            }
            Err(e) => Err(e),
        }
    }

    /// Plans a batch on the session's connection, retrying failed applies and applying
    /// the poison policy to an event that keeps failing (removed from `events` when it
    /// is dead-lettered).
    async fn plan(
        &mut self,
        session: &mut crate::session::LightweightSession,
        events: &mut Vec<EventEnvelope>,
    ) -> Result<crate::unit_of_work::OpList> {
        let name = self.projection.name();
        let (store, projection) = (&self.store, &self.projection);
        let (workers, hooks) = (self.options.workers, &self.options.hooks);
        loop {
            let planned = session
                .conn
                .run(store, async |client| {
                    projection.plan(store, client, events, workers, hooks).await
                })
                .await;
            let (stream, version, message, event_type) = match planned {
                Err(Error::Apply {
                    stream,
                    version,
                    message,
                    event_type,
                    ..
                }) => (stream, version, message, event_type),
                other => return other,
            };
            self.failures += 1;
            if self.failures <= self.options.retries {
                let backoff = Duration::from_millis(50 * (1 << (self.failures - 1).min(6)));
                warn!(projection = name, %stream, version, %message, "apply failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                continue;
            }
            let Some(bad) = events
                .iter()
                .position(|e| e.stream_id == stream && e.version == version)
            else {
                return Err(Error::Configuration(format!(
                    "poison event of {stream} v{version} not in batch"
                )));
            };
            if self.options.poison == PoisonPolicy::Stop {
                return Err(Error::Apply {
                    projection: name,
                    event_type,
                    stream,
                    version,
                    message,
                });
            }
            let e = events.remove(bad);
            warn!(
                projection = name,
                sequence = e.sequence,
                "dead-lettering a poison event"
            );
            let stream_text = e.stream_id.to_string();
            session
                .conn
                .run(store, async |client| {
                    client
                        .execute(
                            progression::DEAD_LETTER,
                            &[&name, &e.sequence, &e.event_type, &stream_text, &message],
                        )
                        .await
                        .map_err(|err| map_db_error(err, Failed::Other("dead-lettering")))
                })
                .await?;
            self.failures = 0;
        }
    }
}
