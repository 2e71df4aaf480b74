//! `projections daemon | rebuild NAME | status | drop-old-versions NAME`: the async daemon
//! until a stop signal, a rebuild with progress, the status of every async projection, the
//! explicit drop of a projection's superseded versions (blue/green rebuilds).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use clap::Subcommand;
use marten_core::{Error, Result};
use marten_pg::daemon::{self, Daemon, DaemonOptions};
use marten_pg::{DocumentStore, ProjectionStatus};

use crate::output::{note, Out};
use crate::progress::{progress_line, Display};
use crate::signal::Shutdown;
use crate::CliError;

/// How often `projections status` tries its query before it fails (with a doubling pause
/// from 200 ms between tries). The daemon's and the rebuild's displays never fail on a
/// status query: they say so and try again at the next refresh.
pub const STATUS_ATTEMPTS: u32 = 4;

/// How often the daemon's display refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// How often a rebuild looks at its projection's status (and at the daemon's runners).
const REBUILD_TICK: Duration = Duration::from_millis(200);

/// The name under which a daemon reports settings it refused as a whole rather than by
/// projection (see [`Daemon::start`]): a rebuild fails on them as on its own projection's
/// stop.
const REFUSED_OPTIONS: &str = "(daemon options)";

/// The projection commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum ProjectionsCommand {
    /// Run the async daemon until SIGTERM or Ctrl-C, showing each projection's progress.
    /// A runner that stops on its own (a poison event under the stop policy, a setting
    /// the daemon refuses) stops the daemon and fails the command, naming it.
    Daemon,
    /// Reset a projection and replay the events into it, showing its progress, until it
    /// has reached the last event there was at its reset (later events are left to the
    /// daemon; other projections are not waited for). SIGTERM or Ctrl-C stops it (one
    /// that comes while the name is checked, before the reset, leaves everything as it
    /// was).
    Rebuild {
        /// The projection's name (as `projections status` lists it).
        name: String,
        /// Give up (and fail) when the replay has not reached the head of the reset
        /// this many seconds after the reset; without it, wait until it has.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// Print each async projection's position, the store's head, its lag and owner.
    Status,
    /// Drop the tables of the versions a newer active version of a projection replaced
    /// (blue/green rebuilds), printing each one dropped.
    DropOldVersions {
        /// The projection's name (as `projections status` lists it).
        name: String,
    },
}

/// How [`rebuild_until`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebuildOutcome<T> {
    /// The projection reached the head recorded at its reset.
    Rebuilt {
        /// The global sequence of that head (with conjoined events, the highest of its
        /// tenants' heads); 0 when there was no event.
        head: i64,
    },
    /// The future given resolved first: the daemon was stopped gracefully, and the
    /// projection stays reset and partly replayed (any daemon finishes the replay).
    Stopped {
        /// What the future resolved to.
        reason: T,
        /// The global sequence of the head recorded at the reset, if a status query
        /// answered.
        head: Option<i64>,
        /// The projection's status last seen, if a status query answered.
        last: Option<ProjectionStatus>,
    },
}

/// Why `projections rebuild` stopped waiting before its projection was rebuilt.
enum Interruption {
    /// A stop signal, by name.
    Signal(&'static str),
    /// The `--timeout` given ran out.
    Timeout(Duration),
}

/// The status of every async projection of the store (see
/// [`DocumentStore::projection_status`]).
pub async fn status(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    store.projection_status().await
}

/// Runs a projection command against `store` with the default [`DaemonOptions`].
pub async fn projections(
    store: &DocumentStore,
    command: &ProjectionsCommand,
) -> Result<(), CliError> {
    projections_with(store, command, DaemonOptions::default()).await
}

/// Runs a projection command against `store`; the daemon and the rebuild run with
/// `options` (hooks, poison policy, batch size). Output goes to standard output; a reader
/// that goes away (a closed pipe) ends the output, not the command (the daemon goes on
/// without output and says so on standard error), and another write failure is
/// [`CliError::Output`].
pub async fn projections_with(
    store: &DocumentStore,
    command: &ProjectionsCommand,
    options: DaemonOptions,
) -> Result<(), CliError> {
    let mut out = Out::stdout();
    match command {
        ProjectionsCommand::Status => {
            for s in status_retried(store).await? {
                out.line(progress_line(&s, 0.0))?;
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { name, timeout } => {
            // From the start: a signal during the check ends the command before the
            // reset, and one during the reset (one transaction, not interrupted) is
            // acted on once it has committed.
            let mut shutdown = Shutdown::listen()?;
            tokio::select! {
                biased;
                signal = shutdown.received() => {
                    return Err(CliError::RebuildCancelled {
                        projection: name.clone(),
                        signal,
                    });
                }
                checked = check_name(store, name) => checked?,
            }
            let limit = timeout.map(Duration::from_secs);
            let mut display = Display::new();
            let mut shown = Ok(());
            let outcome = rebuild_until(store, name, options, interruption(shutdown, limit), |s| {
                if shown.is_ok() {
                    shown = display.update(std::slice::from_ref(s));
                }
            })
            .await;
            display.finish();
            let outcome = outcome?;
            shown?;
            match outcome {
                RebuildOutcome::Rebuilt { head } => out.line(format_args!(
                    "{name} rebuilt (replayed through event {head}, the head at its reset)"
                )),
                RebuildOutcome::Stopped {
                    reason: Interruption::Signal(signal),
                    ..
                } => Err(CliError::RebuildInterrupted {
                    projection: name.clone(),
                    signal,
                }),
                RebuildOutcome::Stopped {
                    reason: Interruption::Timeout(timeout),
                    head,
                    last,
                } => Err(CliError::RebuildTimedOut {
                    projection: name.clone(),
                    timeout,
                    head: head.unwrap_or(0),
                    position: last.map(|s| s.position),
                }),
            }
        }
        ProjectionsCommand::Daemon => run_daemon(store, options).await,
        ProjectionsCommand::DropOldVersions { name } => {
            check_name(store, name).await?;
            for table in daemon::drop_old_projection_versions_named(store, name).await? {
                out.line(format_args!("dropped {table}"))?;
            }
            Ok(())
        }
    }
}

/// Resolves on a stop signal, or once `limit` (if any) has passed since it was first
/// polled.
async fn interruption(mut shutdown: Shutdown, limit: Option<Duration>) -> Interruption {
    match limit {
        Some(limit) => tokio::select! {
            signal = shutdown.received() => Interruption::Signal(signal),
            () = tokio::time::sleep(limit) => Interruption::Timeout(limit),
        },
        None => Interruption::Signal(shutdown.received().await),
    }
}

/// The status, tried [`STATUS_ATTEMPTS`] times.
async fn status_retried(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match status(store).await {
            Ok(all) => return Ok(all),
            Err(e) if attempt < STATUS_ATTEMPTS => {
                note(format_args!(
                    "status query failed (attempt {attempt} of {STATUS_ATTEMPTS}, retrying in {pause:?}): {e}"
                ));
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fails with [`CliError::UnknownProjection`] unless `name` is an async projection.
async fn check_name(store: &DocumentStore, name: &str) -> Result<(), CliError> {
    let known: Vec<String> = status_retried(store)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    if known.iter().any(|k| k == name) {
        Ok(())
    } else {
        Err(CliError::UnknownProjection {
            name: name.to_owned(),
            known,
        })
    }
}

/// Resets `projection` and replays it with a daemon, calling `progress` about every
/// 200 ms, until it has reached the head recorded at its reset (see [`rebuild_until`]).
/// A failed status query skips one call of `progress`.
pub async fn rebuild_with_progress(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    progress: impl FnMut(&ProjectionStatus),
) -> Result<()> {
    let never = std::future::pending::<Infallible>();
    match rebuild_until(store, projection, options, never, progress).await? {
        RebuildOutcome::Rebuilt { .. } => Ok(()),
        RebuildOutcome::Stopped { reason, .. } => match reason {},
    }
}

/// Resets `projection` ([`daemon::rebuild`]), records the head (the last event in the
/// daemon's order; with conjoined events, each tenant's) and replays the projection with
/// a [`Daemon`] started with `options`, calling `progress` with its status about every
/// 200 ms, until each of its slots (shards, tenants) has reached that head: events
/// appended meanwhile are left to the daemon, so the rebuild ends however busy the store
/// is. A slot counts as there, too, once it has caught up with the head of the moment
/// (the event at the recorded head may have been archived since). The daemon runs every
/// async projection of the store, but the rebuild waits for none but its own: another
/// one that lags or stops does not hold it up or fail it.
///
/// Ends when `until` resolves first (a deadline, a signal): the daemon is then stopped
/// gracefully (a batch in flight commits or rolls back) and the projection stays reset
/// and partly replayed ([`RebuildOutcome::Stopped`]). `until` is first polled once the
/// reset has committed. Fails when the reset fails, when a runner of the projection stops
/// ([`Error::ProjectionStopped`] under
/// [`PoisonPolicy::Stop`](marten_pg::daemon::PoisonPolicy::Stop)) or the daemon refuses
/// to run it with `options`, and when the daemon's check of its runners fails. (The daemon reports the
/// first runner that stopped: once another projection's has, a stop of this one's is seen
/// only as a position that no longer moves, which `until` has to end.)
///
/// Each look is a status query ([`DocumentStore::projection_status`]: a few statements
/// whatever the store's size) and the daemon's check of its runners
/// ([`Daemon::wait_for_non_stale`], bounded to 200 ms: an indexed existence check per
/// slot every 50 ms, as the rebuild always did).
pub async fn rebuild_until<T>(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    until: impl Future<Output = T>,
    mut progress: impl FnMut(&ProjectionStatus),
) -> Result<RebuildOutcome<T>> {
    daemon::rebuild(store, projection).await?;
    // The head at the reset; if the query fails, the first status that answers (a later,
    // still fixed, head).
    let mut target = own_status(store, projection)
        .await
        .map(|s| Target::at_reset(&places(&s)));
    let d = Daemon::start(store, options);
    let mut until = pin!(until);
    let mut last: Option<ProjectionStatus> = None;
    // Another projection's runner stopped: the daemon reports that one from now on.
    let mut other_stopped = false;
    loop {
        let answered = match own_status(store, projection).await {
            Some(s) => {
                progress(&s);
                let now = places(&s);
                let t = target.get_or_insert_with(|| Target::at_reset(&now));
                if t.reached_by(&now) {
                    let head = t.sequence();
                    // Rebuilt: a runner that stops now is another projection's, or this
                    // one's on an event after the head, neither the rebuild's concern.
                    let _ = d.stop().await;
                    return Ok(RebuildOutcome::Rebuilt { head });
                }
                last = Some(s);
                true
            }
            None => false,
        };
        let watch = async {
            // Not faster than a tick when the status query failed.
            let pause = tokio::time::sleep(if answered {
                Duration::ZERO
            } else {
                REBUILD_TICK
            });
            let runners = if other_stopped {
                tokio::time::sleep(REBUILD_TICK).await;
                Runners::Running
            } else {
                watch_runners(&d, projection).await
            };
            pause.await;
            runners
        };
        tokio::select! {
            reason = &mut until => {
                // Interrupted: what the runners did is not the outcome.
                let _ = d.stop().await;
                return Ok(RebuildOutcome::Stopped {
                    reason,
                    head: target.as_ref().map(Target::sequence),
                    last,
                });
            }
            runners = watch => match runners {
                Runners::Running => {}
                Runners::OtherStopped => other_stopped = true,
                Runners::Failed(e) => {
                    let _ = d.stop().await;
                    return Err(e);
                }
            },
        }
    }
}

/// The status of `projection`, unless the query fails or does not list it.
async fn own_status(store: &DocumentStore, projection: &str) -> Option<ProjectionStatus> {
    status(store)
        .await
        .ok()?
        .into_iter()
        .find(|s| s.name == projection)
}

/// What the daemon's runners say, for a rebuild of one projection.
enum Runners {
    /// None stopped (as far as the daemon tells).
    Running,
    /// A runner of another projection stopped on its own: not the rebuild's concern.
    OtherStopped,
    /// A runner of the projection stopped, the daemon refused its options, or its check
    /// failed.
    Failed(Error),
}

/// Waits up to [`REBUILD_TICK`] for the daemon to catch up everything (which it rarely
/// does while events are appended: only a stopped runner, or a failed check, ends the
/// wait early), and says what that found.
async fn watch_runners(d: &Daemon, projection: &str) -> Runners {
    match d.wait_for_non_stale(REBUILD_TICK).await {
        Ok(()) | Err(Error::Timeout { .. }) => Runners::Running,
        Err(Error::ProjectionStopped {
            projection: slot,
            message,
        }) => {
            if slot == REFUSED_OPTIONS || is_slot_of(&slot, projection) {
                Runners::Failed(Error::ProjectionStopped {
                    projection: slot,
                    message,
                })
            } else {
                Runners::OtherStopped
            }
        }
        Err(e) => Runners::Failed(e),
    }
}

/// Whether the daemon's runner `slot` runs `projection`: the projection whole, or one
/// shard (`P#2/3`) or tenant (`P@t`) of it.
fn is_slot_of(slot: &str, projection: &str) -> bool {
    slot.strip_prefix(projection)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['#', '@']))
}

/// Where one scope of a projection stands (the projection over every tenant's events;
/// with conjoined events, over one tenant's): places in the daemon's order, as
/// (ordering transaction id, global sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    /// The tenant (`None`: every tenant's events).
    tenant: Option<String>,
    /// Where its least advanced slot is.
    position: (u64, i64),
    /// The last event it is to process.
    head: (u64, i64),
    /// Whether it has processed everything up to `head` ([`ProjectionStatus::lag`] 0).
    caught_up: bool,
}

/// The places of a status: its own, or with conjoined events its tenants'.
fn places(s: &ProjectionStatus) -> Vec<Place> {
    let own = s.tenants.is_empty().then_some(s);
    own.into_iter()
        .chain(s.tenants.iter())
        .map(|t| Place {
            tenant: t.tenant.clone(),
            position: (t.position_transaction_id, t.position),
            head: (t.head_transaction_id, t.head),
            caught_up: t.lag() == 0,
        })
        .collect()
}

/// Where a rebuilt projection has to get: the head of each of its scopes at its reset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// Per scope (`None`: every tenant's events; with conjoined events, each tenant that
    /// had streams), its head.
    heads: Vec<(Option<String>, (u64, i64))>,
}

impl Target {
    /// The heads of the projection's `places`, read at the reset.
    fn at_reset(places: &[Place]) -> Target {
        let heads = places.iter().map(|p| (p.tenant.clone(), p.head)).collect();
        Target { heads }
    }

    /// Whether every scope is at or after its head in `places`, or caught up with the
    /// head of now (an event processed, or archived since, leaves the head where the
    /// position is). A scope `places` no longer lists has no events left to replay.
    fn reached_by(&self, places: &[Place]) -> bool {
        self.heads.iter().all(
            |(tenant, head)| match places.iter().find(|p| p.tenant == *tenant) {
                Some(p) => p.position >= *head || p.caught_up,
                None => true,
            },
        )
    }

    /// The global sequence of the head (the highest of its scopes'); 0 without events.
    fn sequence(&self) -> i64 {
        self.heads
            .iter()
            .map(|(_, (_, sequence))| *sequence)
            .max()
            .unwrap_or(0)
            .max(0)
    }
}

/// Runs the daemon until a stop signal, refreshing the display every second; then stops
/// it gracefully (a batch in flight commits or rolls back). A runner that stops on its
/// own (seen at the next refresh) stops the daemon gracefully too, and fails with
/// [`CliError::DaemonRunnerStopped`] naming it and why. A closed standard output
/// leaves it running without output (said once on standard error); another failure to
/// write stops it gracefully and fails with [`CliError::Output`].
async fn run_daemon(store: &DocumentStore, options: DaemonOptions) -> Result<(), CliError> {
    let mut shutdown = Shutdown::listen()?;
    let names: Vec<String> = status_retried(store)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let d = Daemon::start(store, options);
    let mut out = Out::stdout();
    let mut display = Display::new();
    let ran = watch_daemon(store, &d, &names, &mut shutdown, &mut out, &mut display).await;
    display.finish();
    let signal = match ran {
        Ok(DaemonEnd::Signal(signal)) => signal,
        Ok(DaemonEnd::RunnersStopped(runners)) => {
            let said = out.line("a runner stopped: stopping the daemon");
            // Its error is the first runner's, which `runners` reports already.
            let _ = d.stop().await;
            said?;
            return Err(CliError::DaemonRunnerStopped { runners });
        }
        Err(e) => {
            if let Err(stopping) = d.stop().await {
                note(format_args!("error: stopping the daemon: {stopping}"));
            }
            return Err(e);
        }
    };
    let said = out.line(format_args!("{signal}: stopping the daemon"));
    d.stop().await?;
    said?;
    out.line("daemon stopped")
}

/// Why [`watch_daemon`] stopped watching.
enum DaemonEnd {
    /// A stop signal, by name.
    Signal(&'static str),
    /// Runners stopped on their own (slot, why), in the order they stopped.
    RunnersStopped(Vec<(String, String)>),
}

/// Shows the daemon's progress every [`REFRESH`] until a stop signal, or until the daemon
/// says runners of it stopped on their own ([`Daemon::stopped_runners`], looked at on
/// each refresh: a poison event under
/// [`PoisonPolicy::Stop`](marten_pg::daemon::PoisonPolicy::Stop), a setting the daemon
/// refuses). Fails when the output fails other than by a closed pipe.
async fn watch_daemon(
    store: &DocumentStore,
    d: &Daemon,
    names: &[String],
    shutdown: &mut Shutdown,
    out: &mut Out,
    display: &mut Display,
) -> Result<DaemonEnd, CliError> {
    out.line(format_args!(
        "daemon running on schema {} ({}); SIGTERM or Ctrl-C stops it",
        store.schema(),
        names.join(", ")
    ))?;
    let mut ticker = tokio::time::interval(REFRESH);
    let mut told = false;
    loop {
        tokio::select! {
            name = shutdown.received() => return Ok(DaemonEnd::Signal(name)),
            _ = ticker.tick() => match status(store).await {
                Ok(all) => display.update(&all)?,
                Err(e) => display.message(&format!("status query failed, retrying: {e}")),
            },
        }
        let stopped = d.stopped_runners();
        if !stopped.is_empty() {
            return Ok(DaemonEnd::RunnersStopped(stopped));
        }
        if !told && (out.is_closed() || display.is_closed()) {
            told = true;
            note(
                "standard output was closed: the daemon goes on without progress output \
                 (SIGTERM or Ctrl-C stops it)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place of `tenant` at (transaction id, sequence) `position`, head `head`;
    /// caught up when the position is at or after the head.
    fn at(tenant: Option<&str>, position: (u64, i64), head: (u64, i64)) -> Place {
        Place {
            tenant: tenant.map(str::to_owned),
            position,
            head,
            caught_up: position >= head,
        }
    }

    #[test]
    fn the_slots_of_a_projection_are_its_own_shards_and_tenants() {
        for slot in ["Counter", "Counter#2/3", "Counter@acme", "Counter#1/2@acme"] {
            assert!(is_slot_of(slot, "Counter"), "{slot}");
        }
        for slot in [
            "Counters",
            "Count",
            "Tally",
            "Counter:v2",
            "(daemon options)",
            "",
        ] {
            assert!(!is_slot_of(slot, "Counter"), "{slot}");
        }
        assert!(is_slot_of("Tally:v2#1/2", "Tally:v2"));
        assert!(!is_slot_of("Tally:v2", "Tally"));
    }

    #[test]
    fn the_target_is_the_head_at_the_reset_not_the_head_of_now() {
        let target = Target::at_reset(&[at(None, (0, 0), (10, 100))]);
        assert_eq!(target.sequence(), 100);
        // Behind the head of the reset, though appends moved the head on.
        assert!(!target.reached_by(&[at(None, (9, 90), (30, 300))]));
        // At it, then past it, with the head of now further still: rebuilt.
        assert!(target.reached_by(&[at(None, (10, 100), (30, 300))]));
        assert!(target.reached_by(&[at(None, (12, 150), (30, 300))]));
        // Places in the order, not sequences: a lower sequence in a later transaction
        // comes after the head; a higher one in an earlier transaction before it.
        assert!(target.reached_by(&[at(None, (11, 40), (30, 300))]));
        assert!(!target.reached_by(&[at(None, (9, 140), (30, 300))]));
    }

    #[test]
    fn caught_up_with_the_head_of_now_counts_as_there() {
        // The event at the head of the reset was archived before it was replayed: the
        // position stops short of it, but nothing is left to replay.
        let target = Target::at_reset(&[at(None, (0, 0), (10, 100))]);
        assert!(target.reached_by(&[at(None, (9, 99), (9, 99))]));
        // No events at the reset: nothing to wait for.
        let empty = Target::at_reset(&[at(None, (0, 0), (0, 0))]);
        assert_eq!(empty.sequence(), 0);
        assert!(empty.reached_by(&[at(None, (0, 0), (5, 7))]));
    }

    #[test]
    fn with_conjoined_events_every_tenant_of_the_reset_must_get_there() {
        let reset = [
            at(Some("a"), (0, 0), (10, 100)),
            at(Some("b"), (0, 0), (12, 120)),
        ];
        let target = Target::at_reset(&reset);
        assert_eq!(target.sequence(), 120);
        let a_done = [
            at(Some("a"), (10, 100), (40, 400)),
            at(Some("b"), (11, 110), (40, 401)),
        ];
        assert!(!target.reached_by(&a_done));
        let both = [
            at(Some("a"), (10, 100), (40, 400)),
            at(Some("b"), (12, 120), (40, 401)),
            // A tenant that came after the reset: its events are the daemon's.
            at(Some("c"), (0, 0), (41, 402)),
        ];
        assert!(target.reached_by(&both));
        // A tenant of the reset no longer listed has nothing left to replay.
        let gone = [at(Some("a"), (10, 100), (40, 400))];
        assert!(target.reached_by(&gone));
        // No tenant had streams at the reset.
        // No tenant had streams at the reset: the status's own place, at the start.
        let none = Target::at_reset(&[at(None, (0, 0), (0, 0))]);
        assert!(none.reached_by(&[at(Some("a"), (0, 0), (3, 3))]));
    }
}
