//! One projection's runner: the loop that acquires the projection, takes steps while it
//! owns it and waits between them, and the step that reads the next page, plans it and
//! commits it, deciding what the turn came to (worked, idle, step down). What follows each
//! turn is decided by `marten_core::projection::runner`. A shard's runner keeps only the
//! events of its shard of each page it reads (its position still moves over the whole
//! page); how it acquires its slot is `acquiring`'s. A batch whose commit the database
//! refuses for what its writes hold is `refused`'s. A runner that ends abandons the page
//! it was reading ahead, and waits for that read to be torn down.
//!
//! Owns: the runner's state between steps and the loop. May use: the daemon's acquiring,
//! ownership, read, read-ahead, plan, commit and share files, the connection layer (one
//! [`Conn`] per step, given back before the runner waits), the store.

mod refused;

use std::sync::Arc;
use std::time::{Duration, Instant};

use marten_core::projection::runner::{
    after_acquire, after_ensure_tables, after_lock_check, after_step, commit_caused_by_data,
    Action, Tables, Turn,
};
use marten_core::WithSources;
use marten_core::{EventEnvelope, Result};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use self::refused::Refused;
use super::bluegreen::{self, Switch};
use super::commit::{commit, Committed};
use super::options::DaemonOptions;
use super::ownership::Ownership;
use super::progression::{self, Advance};
use super::read::next_page;
use super::read_ahead::ReadAhead;
use super::share::{NodeShare, Place};
use super::slot::Slot;
use crate::connection::{Conn, Dedicated, Statements};
use crate::events::EventPage;
use crate::projections::asynchronous::AsyncProjection;
use crate::store::DocumentStore;

/// The most rows a shard's page reads (unless a batch is larger).
const MAX_SHARD_PAGE: usize = 10_000;

/// One runner's state between steps.
pub(super) struct Runner {
    pub(super) store: DocumentStore,
    /// The projection this runner runs.
    pub(super) projection: Arc<dyn AsyncProjection>,
    /// Which of its events (every tenant's, or one tenant's) and so which progression row.
    pub(super) slot: Slot,
    pub(super) options: DaemonOptions,
    /// The runner reported catching up and has not worked since.
    pub(super) caught_up: bool,
    /// Failed attempts at the current batch (reset when it commits or loses an event).
    pub(super) failures: u32,
    /// While a versioned projection builds into its own table: the statements that send
    /// its document table's statements there (see `bluegreen`).
    pub(super) build: Option<Arc<Statements>>,
    /// The page after the batch in progress, read ahead while that batch commits.
    ahead: Option<ReadAhead>,
    /// The name the hooks are told: the projection's, or a shard's (`Tally#2/3`).
    pub(super) hook_name: String,
    /// The runner has owned its slot since it started: a shard count changed after that
    /// was changed by another deployment, which this runner does not undo.
    pub(super) ran: bool,
    /// A shard's runner: its node's share of the projection's shards, and its place in it.
    pub(super) share: Option<(Arc<NodeShare>, Place)>,
    /// Neither the projection nor the hooks use events' metadata: pages are read lean.
    lean: bool,
    /// The daemon's stop signal (`true`: stop), which also ends a failed batch's backoff.
    pub(super) stop: watch::Receiver<bool>,
}

/// Runs `projection` until `stop` says so: acquires it (waiting five poll intervals
/// between tries while another node owns it), then steps, stepping down when it loses
/// the lock or the epoch. Ends with an error only on a poison event under
/// [`PoisonPolicy::Stop`](super::PoisonPolicy::Stop), or if the tables cannot be made for
/// a reason waiting does not cure (a missing table the schema mode may not create), or
/// on a shard count it may not change ([`marten_core::Error::ShardCountChanged`]); a
/// database that cannot be reached at start is waited for. A batch of a blue/green build
/// that fails makes the runner step down: another tenant's runner may have switched
/// (renaming the build table), and acquiring again finds where to write now.
///
/// A shard's runner takes turns at acquiring with the node's other runners of the
/// projection's shards (`share`, see `share`).
pub(crate) async fn run(
    store: DocumentStore,
    projection: Arc<dyn AsyncProjection>,
    slot: Slot,
    options: DaemonOptions,
    stop: watch::Receiver<bool>,
    share: Option<Arc<NodeShare>>,
) -> Result<()> {
    let hook_name = match slot.shard {
        Some(_) => slot.label(),
        None => projection.name().to_owned(),
    };
    let lean = !projection.reads_metadata() && !options.hooks.reads_event_metadata();
    let mut runner = Runner {
        lean,
        stop: stop.clone(),
        store,
        projection,
        slot,
        options,
        caught_up: false,
        failures: 0,
        build: None,
        ahead: None,
        hook_name,
        ran: false,
        share: share.map(|s| (s, Place::default())),
    };
    let ran = runner.turns(&stop).await;
    runner.holding(false);
    if let Some(ahead) = runner.ahead.take() {
        // Its task is gone, and its connection given back or closed, before
        // `Daemon::stop` returns.
        ahead.abandon().await;
    }
    ran
}

impl Runner {
    /// The runner's loop (see [`run`]).
    async fn turns(&mut self, stop: &watch::Receiver<bool>) -> Result<()> {
        let name = self.slot.name().to_owned();
        let name = name.as_str();
        let poll = self.options.poll_interval;
        let mut owner: Option<Ownership> = None;
        let mut standby: Option<Dedicated> = None;
        let mut tables_ready = false;
        while !*stop.borrow() {
            self.holding(owner.is_some());
            if !tables_ready {
                tables_ready = self.ensure_tables(stop).await?;
                continue;
            }
            let lost = owner.as_ref().is_some_and(Ownership::lock_lost);
            if let Action::StepDown = after_lock_check(lost) {
                warn!(
                    projection = name,
                    "lost the projection lock connection; stepping down"
                );
                owner = None;
            }
            let Some(own) = owner.as_mut() else {
                owner = self.try_acquire(&mut standby).await?;
                if let Some(wait) = after_acquire(owner.is_some(), poll) {
                    idle(stop, wait).await;
                }
                continue;
            };
            match after_step(self.step(own).await, poll) {
                Action::Continue => {}
                Action::Idle(d) => idle(stop, d).await,
                Action::StepDown => owner = None,
                Action::Stop(e) => {
                    warn!(projection = name, error = %e, "stopping projection on a poison event");
                    return Err(e);
                }
                Action::Retry { error, after } => {
                    warn!(projection = name, error = %WithSources(&error), "batch failed; retrying");
                    owner = owner.filter(|_| self.build.is_none());
                    idle(stop, after).await;
                }
            }
        }
        Ok(())
    }

    /// Makes sure the daemon's tables exist (idempotent DDL): whether they do; a server
    /// that is down or restarting is waited out (`false` after the wait).
    async fn ensure_tables(&self, stop: &watch::Receiver<bool>) -> Result<bool> {
        let made = progression::ensure_tables(&self.store).await;
        match after_ensure_tables(made, self.options.poll_interval) {
            Tables::Ready => Ok(true),
            Tables::Wait { error, after } => {
                warn!(projection = self.slot.name(), error = %WithSources(&error), "cannot reach the daemon's tables; retrying");
                idle(stop, after).await;
                Ok(false)
            }
            Tables::Stop(e) => Err(e),
        }
    }

    /// Records in the node's share whether this shard's runner holds its shard.
    fn holding(&mut self, holding: bool) {
        if let Some((share, place)) = self.share.as_mut() {
            place.set(share, holding);
        }
    }
}

/// The milliseconds since `started`, for a span's field.
fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Waits `d`, or less if the daemon is stopped meanwhile.
pub(super) async fn idle(stop: &watch::Receiver<bool>, d: Duration) {
    let mut stop = stop.clone();
    let _ = tokio::time::timeout(d, stop.changed()).await;
}

impl Runner {
    /// Reads the next batch after the owner's position, plans it and commits it with the
    /// progress update, all on one pooled connection that is given back before the
    /// runner waits for anything.
    async fn step(&mut self, own: &mut Ownership) -> Result<Turn> {
        let mut conn = self.conn();
        let read_ahead = match self.ahead.take() {
            Some(ahead) => ahead.take(own.position).await,
            None => None,
        };
        let (tenant, limit, lean) = (self.slot.tenant.as_ref(), self.page_limit(), self.lean);
        let page = match read_ahead {
            Some(page) => page,
            None => next_page(&self.store, &mut conn, tenant, own.position, limit, lean).await?,
        };
        if page.rows == 0 {
            drop(conn);
            return Ok(self.nothing_to_do(own).await);
        }
        if page.rows >= limit {
            // A full page: more may follow. Read it while this one is planned and committed.
            let ahead = ReadAhead::start(&self.store, tenant, page.next, limit, lean);
            self.ahead = Some(ahead);
        }
        self.caught_up = false;
        let span = crate::trace::batch(
            self.store.schema(),
            self.slot.name(),
            own.position.sequence,
            page.next.sequence,
            page.events.len(),
        );
        let started = Instant::now();
        let turn = self
            .batch(own, &mut conn, page)
            .instrument(span.clone())
            .await;
        span.record("marten.duration_ms", elapsed_ms(started));
        turn
    }

    /// An empty connection slot for a step (a blue/green build's with the build's
    /// statements).
    pub(super) fn conn(&self) -> Conn {
        match &self.build {
            Some(statements) => Conn::with_statements(statements.clone()),
            None => Conn::new(),
        }
    }

    /// The rows a page reads: a batch, or for a shard a batch per shard (up to
    /// [`MAX_SHARD_PAGE`] rows), so that a shard's batch keeps about a batch of its own
    /// events and its commits are not more frequent than a whole projection's.
    fn page_limit(&self) -> usize {
        let batch = self.options.batch_size;
        let count = usize::try_from(self.slot.count()).unwrap_or(1);
        batch.saturating_mul(count).min(MAX_SHARD_PAGE.max(batch))
    }

    /// Plans and commits a page that read events, with the progress update.
    async fn batch(
        &mut self,
        own: &mut Ownership,
        conn: &mut Conn,
        page: EventPage,
    ) -> Result<Turn> {
        let name = self.hook_name.clone();
        let name = name.as_str();
        let hooks = self.options.hooks.clone();
        hooks.before_batch(name);
        let mut events: Vec<EventEnvelope> = page.events;
        let mut letters = Vec::new();
        if !page.unreadable.is_empty() {
            self.pass_unreadable(page.unreadable, &mut letters)?;
        }
        if let Some(shard) = self.slot.shard {
            // The position moves over the whole page; the shard projects its own events.
            events.retain(|e| self.projection.in_shard(e, shard));
        }
        let mut left_out = Vec::new();
        let planned = self
            .plan(conn, &mut events, &mut letters, &mut left_out)
            .await?;
        let Some(ops) = planned else {
            // The daemon stopped while the batch waited to be planned again: nothing of
            // it is committed, and the runner's loop sees the stop.
            return Ok(Turn::Idle);
        };
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        let advance = Advance::new(self.slot.name(), own.position, page.next, own.epoch);
        hooks.before_commit(name, &sequences);
        let committed = match commit(&self.store, conn, (advance, &letters), ops).await {
            Err(e) if commit_caused_by_data(&e) => {
                let refused = Refused {
                    events,
                    letters,
                    left_out,
                    end: page.next,
                };
                return self.refused(own, conn, refused, e).await;
            }
            committed => committed?,
        };
        match committed {
            Committed::Yes => {
                hooks.after_commit(name, &sequences);
                own.position = page.next;
                self.failures = 0;
                Ok(Turn::Worked)
            }
            Committed::ProgressMoved => {
                warn!(
                    projection = self.slot.name(),
                    "progress moved under this runner; batch discarded, stepping down"
                );
                hooks.batch_rejected(name);
                Ok(Turn::StepDown)
            }
        }
    }

    /// A turn that read nothing: reports catching up once, then, while idle, notices a
    /// reset (rebuild) or a takeover (the epoch moved).
    async fn nothing_to_do(&mut self, own: &Ownership) -> Turn {
        let name = self.hook_name.clone();
        let name = name.as_str();
        if self.build.is_some() {
            let projection = self.projection.as_ref();
            match bluegreen::switch(&self.store, projection, &self.slot, own).await {
                Ok(Switch::Done) => {
                    info!(
                        projection = name,
                        "caught up; readers switched to this version"
                    );
                    self.build = None;
                }
                Ok(Switch::Lost) => return Turn::StepDown,
                Ok(Switch::NotYet) => {
                    debug!(
                        projection = self.slot.name(),
                        "caught up; waiting for the other tenants' runners to switch"
                    );
                    return Turn::Idle;
                }
                Err(e) => {
                    warn!(projection = name, error = %e, "cannot switch to this version yet");
                    return Turn::Idle;
                }
            }
        }
        if !self.caught_up {
            self.options.hooks.after_catch_up(name);
            self.caught_up = true;
        }
        if own.still_held(&self.store, self.slot.name()).await {
            Turn::Idle
        } else {
            Turn::StepDown
        }
    }
}
