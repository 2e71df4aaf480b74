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
    after_acquire, after_ensure_tables, after_lock_check, after_step, backoff,
    commit_caused_by_data, Action, LogThrottle, Tables, Turn,
};
use marten_core::WithSources;
use marten_core::{EventEnvelope, Result};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use self::refused::Refused;
use super::acquiring::runner_id;
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
    /// This runner's identity in the process (see `acquiring`): whose acquire failure
    /// is whose.
    pub(super) id: u64,
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
    /// How long the runner waits before its next try, instead of the usual wait, when
    /// what it last tried keeps failing (an acquire, a switch) or cannot work for long (a
    /// superseded version): set by the try, taken by the wait after it.
    pub(super) next_wait: Option<Duration>,
    /// Consecutive failed steps (reset by a step that works), for their backoff.
    step_failures: u32,
    /// Which failed steps are warned about.
    step_log: LogThrottle,
    /// Consecutive blue/green switch attempts that failed or found another slot behind
    /// (reset by the switch), for their backoff.
    switch_failures: u32,
    /// No switch is attempted before this (the backoff after such attempts); the runner
    /// goes on projecting its events meanwhile.
    switch_not_before: Option<Instant>,
    /// Which failed switches are warned about.
    switch_log: LogThrottle,
    /// Consecutive failed acquires (reset once acquired), for their backoff.
    pub(super) acquire_failures: u32,
    /// Which failed acquires are warned about.
    pub(super) acquire_log: LogThrottle,
    /// The last try found a newer version of the projection active: the next tries check
    /// that first, before taking the lock or claiming the slot (see `acquiring`).
    pub(super) superseded: bool,
}

/// Runs `projection` until `stop` says so: acquires it (waiting five poll intervals
/// between tries while another node owns it, doubling up to 5 s while tries fail, 30 s
/// while a newer version is active; see `acquiring`), then steps, stepping down when it
/// loses the lock or the epoch. A step that fails on the database is retried after a poll
/// interval, doubling up to 5 s while it keeps failing; a blue/green switch that fails or
/// finds another slot behind is attempted again after the same backoff (the runner goes
/// on projecting meanwhile). A failure that repeats is warned about once, again when its
/// error changes and at most every 30 s (debug in between). Ends with an error only on a
/// poison event under [`PoisonPolicy::Stop`](super::PoisonPolicy::Stop), or if the tables
/// cannot be made for a reason waiting does not cure (a missing table the schema mode may
/// not create), or on a shard count it may not change
/// ([`marten_core::Error::ShardCountChanged`]); a database that cannot be reached at
/// start is waited for. A batch of a blue/green build that fails makes the runner step
/// down: another tenant's runner may have switched (renaming the build table), and
/// acquiring again finds where to write now.
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
        id: runner_id(),
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
        next_wait: None,
        step_failures: 0,
        step_log: LogThrottle::default(),
        switch_failures: 0,
        switch_not_before: None,
        switch_log: LogThrottle::default(),
        acquire_failures: 0,
        acquire_log: LogThrottle::default(),
        superseded: false,
    };
    let ran = runner.turns(&stop).await;
    runner.forget_acquire_failure();
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
                let wait = after_acquire(owner.is_some(), poll);
                // A failing or superseded try waits longer than a standby's usual wait.
                let wait = wait.map(|w| self.next_wait.take().unwrap_or(w));
                self.next_wait = None;
                if let Some(wait) = wait {
                    idle(stop, wait).await;
                }
                continue;
            };
            let stepped = self.step(own).await;
            if stepped.is_ok() {
                self.step_failures = 0;
                self.step_log.reset();
            }
            match after_step(stepped, poll, self.step_failures) {
                Action::Continue => {}
                Action::Idle(d) => {
                    let wait = self.next_wait.take().unwrap_or(d);
                    idle(stop, wait).await
                }
                Action::StepDown => owner = None,
                Action::Stop(e) => {
                    warn!(projection = name, error = %e, "stopping projection on a poison event");
                    return Err(e);
                }
                Action::Retry { error, after } => {
                    self.step_failures = self.step_failures.saturating_add(1);
                    let error = WithSources(&error).to_string();
                    let (failures, retry_ms) = (self.step_failures, millis(after));
                    if self.step_log.warn(&error, Instant::now()) {
                        warn!(
                            projection = name,
                            error, failures, retry_ms, "batch failed; retrying"
                        );
                    } else {
                        debug!(
                            projection = name,
                            error, failures, retry_ms, "batch failed again; retrying"
                        );
                    }
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
    millis(started.elapsed())
}

/// `d` in whole milliseconds, for a log's or span's field.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a blue/green switch waits for its document table's lock when the wait after
/// it, should it fail, is `then`: a fiftieth of that (at least [`MIN_SWITCH_LOCK`], at
/// most [`MAX_SWITCH_LOCK`]). Readers that come while the switch waits queue behind it,
/// so a table a long reader holds costs the others about 2% of their time (100 ms every
/// 5 s once the backoff is at its cap), and a first attempt only a few milliseconds.
fn switch_lock_wait(then: Duration) -> Duration {
    (then / 50).clamp(MIN_SWITCH_LOCK, MAX_SWITCH_LOCK)
}

/// The shortest wait of a switch for its table's lock.
const MIN_SWITCH_LOCK: Duration = Duration::from_millis(5);

/// The longest wait of a switch for its table's lock.
const MAX_SWITCH_LOCK: Duration = Duration::from_millis(200);

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
            if self
                .switch_not_before
                .is_some_and(|not_before| Instant::now() < not_before)
            {
                // Backing off from the last attempt; the runner goes on projecting.
                return Turn::Idle;
            }
            let projection = self.projection.as_ref();
            let poll = self.options.poll_interval;
            let failing = self.switch_failures.saturating_add(1);
            let lock_wait = switch_lock_wait(backoff(poll, failing));
            let switched =
                bluegreen::switch(&self.store, projection, &self.slot, own, lock_wait).await;
            if matches!(switched, Ok(Switch::NotYet) | Err(_)) {
                // Not switched: the next attempt waits, doubling up to the cap, so that a
                // table a long reader holds, or a tenant far behind, costs little.
                self.switch_failures = failing;
                self.switch_not_before = Instant::now().checked_add(backoff(poll, failing));
            }
            let retry_ms = millis(backoff(poll, failing));
            match switched {
                Ok(Switch::Done) => {
                    info!(
                        projection = name,
                        "caught up; readers switched to this version"
                    );
                    self.build = None;
                    self.switch_failures = 0;
                    self.switch_not_before = None;
                    self.switch_log.reset();
                }
                Ok(Switch::Lost) => return Turn::StepDown,
                // Events came since the last page: project them, then try again.
                Ok(Switch::Behind) => return Turn::Idle,
                Ok(Switch::NotYet) => {
                    debug!(
                        projection = self.slot.name(),
                        retry_ms, "caught up; waiting for the other tenants' runners to switch"
                    );
                    return Turn::Idle;
                }
                Err(e) => {
                    let error = WithSources(&e).to_string();
                    if self.switch_log.warn(&error, Instant::now()) {
                        warn!(
                            projection = name,
                            error, retry_ms, "cannot switch to this version yet"
                        );
                    } else {
                        debug!(
                            projection = name,
                            error, retry_ms, "cannot switch to this version yet"
                        );
                    }
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
