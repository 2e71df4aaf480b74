//! How a runner acquires its slot: its turn among its node's runners of the same
//! projection's shards (see `share`), the lock and the claim (see `ownership`), the shard
//! count settled when another is recorded (see `shard`), and where it writes (see
//! `bluegreen`).
//!
//! A try that fails (the lock's connection refused, the claim's update refused, the
//! version's table not made, the count not settled) is retried after a backoff that
//! doubles from five poll intervals up to a few seconds, and warned about the first
//! time, whenever its error changes, and at most every 30 s while it stays the same
//! (a projection that never runs is not silent). The last error of each slot of a store
//! (one build of it, with its clones: two stores on one schema name, of two databases
//! say, keep theirs apart) is kept until the slot is acquired, so that a wait for the
//! projections to catch up that times out names it (see `stale`). The runner that failed
//! forgets its error when it ends, and when a later try finds another node holding the
//! slot or a newer version active (it is not failing then; its backoff and warnings start
//! over). A runner that finds a newer version of its projection active (an old
//! deployment's, after a blue/green switch) stays idle: its later tries read the active
//! version first and take no lock, connection or claim while it is newer,
//! [`SUPERSEDED_WAIT`] apart.
//!
//! Owns: the runner's acquire, its backoff and its last failure. May use: the daemon's
//! ownership, shard, share and blue/green files, the runner's state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use marten_core::projection::runner::{backoff, long_wait};
use marten_core::{Error, Result, WithSources};
use tracing::{debug, info, warn};

use super::bluegreen::{self, Target};
use super::ownership::{acquire, claim, Claim, Ownership};
use super::runner::{millis, Runner};
use super::shard;
use crate::connection::Dedicated;

/// How long a superseded runner waits between its checks of the active version.
pub(super) const SUPERSEDED_WAIT: Duration = Duration::from_secs(30);

/// Which store and slot an acquire failure is of: the store's identity (see
/// `DocumentStore::id`) and the slot's name.
type FailureKey = (u64, String);

/// An acquire failure: the runner that failed (see [`runner_id`]) and why.
type Failure = (u64, String);

/// The last acquire failure of each slot not acquired since, by store and slot: what a
/// timed-out wait for the projections names (see `stale`).
fn failures() -> &'static Mutex<HashMap<FailureKey, Failure>> {
    static FAILURES: OnceLock<Mutex<HashMap<FailureKey, Failure>>> = OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// Runs `f` on the failures (a poisoned lock still holds a usable map).
fn with_failures<T>(f: impl FnOnce(&mut HashMap<FailureKey, Failure>) -> T) -> T {
    let mut map = match failures().lock() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut map)
}

/// A fresh runner identity: whose failure an entry of the failures is, so that a runner
/// forgets only its own (another runner of the slot, of another daemon on the same
/// store, may still be failing).
pub(super) fn runner_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why slot `slot` of the store whose identity is `store` could not be acquired the last
/// time a runner tried, if it failed and has not been acquired since.
pub(super) fn acquire_failure(store: u64, slot: &str) -> Option<String> {
    with_failures(|map| {
        map.get(&(store, slot.to_owned()))
            .map(|(_, why)| why.clone())
    })
}

impl Runner {
    /// Tries to acquire the projection; on success the runner starts catching up. Fails
    /// only with a shard count this runner may not change.
    pub(super) async fn try_acquire(
        &mut self,
        standby: &mut Option<Dedicated>,
    ) -> Result<Option<Ownership>> {
        let share = self
            .share
            .as_mut()
            .map(|(share, place)| (share.clone(), place));
        let _turn = match share {
            Some((share, place)) => {
                let turn = share.clone().turn_owned().await;
                if !place.tries(&share) {
                    return Ok(None);
                }
                Some(turn)
            }
            None => None,
        };
        if self.superseded && self.still_superseded(standby).await {
            return Ok(None);
        }
        let claimed = match acquire(&self.store, &self.slot, &self.options.node, standby).await {
            Ok(Some(claimed)) => claimed,
            // Another node holds the slot: this runner is not failing to acquire it.
            Ok(None) => {
                self.acquire_settled();
                return Ok(None);
            }
            // Stored data no retry mends (a count row edited by hand): the runner stops.
            Err(e @ Error::CorruptData { .. }) => return Err(e),
            Err(e) => {
                self.acquire_failed("taking the projection's lock or claiming it", &e);
                return Ok(None);
            }
        };
        let own = match claimed {
            Claim::Owned(own) => own,
            Claim::CountDiffers { lock, recorded } => {
                match self.settle_count(lock, recorded).await? {
                    Some(own) => own,
                    None => return Ok(None),
                }
            }
        };
        if !self.find_target().await {
            return Ok(None);
        }
        // Acquired: the slot's last failure is moot, whichever runner's it was.
        self.acquire_failures = 0;
        self.acquire_log.reset();
        self.key_failure(|key, map| map.remove(key));
        info!(
            projection = self.slot.name(),
            node = self.options.node,
            epoch = own.epoch,
            "running projection"
        );
        self.options.hooks.before_catch_up(&self.hook_name);
        self.caught_up = false;
        self.ran = true;
        Ok(Some(own))
    }

    /// Where the runner writes (see `bluegreen`); `false`: it does not run now.
    async fn find_target(&mut self) -> bool {
        let name = self.slot.name();
        match bluegreen::target(&self.store, self.projection.as_ref()).await {
            Ok(Target::Active) => self.build = None,
            Ok(Target::Build(statements)) => {
                info!(projection = name, "building into the version's own table");
                self.build = Some(statements);
            }
            Ok(Target::Superseded(active)) => {
                info!(
                    projection = name,
                    active, "a newer version is active; this runner stays idle"
                );
                self.acquire_settled();
                self.superseded = true;
                self.next_wait = Some(SUPERSEDED_WAIT);
                return false;
            }
            Err(e) => {
                self.acquire_failed("finding the projection's version", &e);
                return false;
            }
        }
        true
    }

    /// For a runner found superseded before: whether a newer version is still active (it
    /// then waits [`SUPERSEDED_WAIT`] and gives up its standby connection). One read of
    /// the active version; a failed read counts as a failed acquire.
    async fn still_superseded(&mut self, standby: &mut Option<Dedicated>) -> bool {
        match bluegreen::superseded(&self.store, self.projection.as_ref()).await {
            Ok(Some(active)) => {
                debug!(
                    projection = self.slot.name(),
                    active, "a newer version is still active; not running"
                );
                self.acquire_settled();
                *standby = None;
                self.next_wait = Some(SUPERSEDED_WAIT);
                true
            }
            Ok(None) => {
                self.superseded = false;
                false
            }
            Err(e) => {
                self.acquire_failed("reading the projection's active version", &e);
                true
            }
        }
    }

    /// A try to acquire the slot failed at `step` with `error`: keeps it as the slot's
    /// last failure, warns (rate-limited, see `LogThrottle`) and sets the backoff before
    /// the next try.
    fn acquire_failed(&mut self, step: &str, error: &Error) {
        self.acquire_failures = self.acquire_failures.saturating_add(1);
        let wait = backoff(long_wait(self.options.poll_interval), self.acquire_failures);
        self.next_wait = Some(wait);
        let error = format!("{step}: {}", WithSources(error));
        let failure = (self.id, error.clone());
        self.key_failure(|key, map| map.insert(key.clone(), failure));
        let (projection, failures, retry_ms) =
            (self.slot.name(), self.acquire_failures, millis(wait));
        if self.acquire_log.warn(&error, Instant::now()) {
            warn!(
                projection,
                error, failures, retry_ms, "cannot acquire the projection; retrying"
            );
        } else {
            debug!(
                projection,
                error, failures, retry_ms, "cannot acquire the projection; retrying"
            );
        }
    }

    /// A try found the slot held by another node, or a newer version of the projection
    /// active: the runner is not failing to acquire it. Its failure counters start over,
    /// and a failure of its own recorded before is forgotten (a wait that times out later
    /// does not name it).
    fn acquire_settled(&mut self) {
        self.acquire_failures = 0;
        self.acquire_log.reset();
        self.forget_acquire_failure();
    }

    /// Forgets the slot's last acquire failure if it is this runner's (the runner is no
    /// longer failing, or it ended); another runner's, of the same store's slot, stays.
    pub(super) fn forget_acquire_failure(&self) {
        let id = self.id;
        self.key_failure(|key, map| {
            if map.get(key).is_some_and(|(runner, _)| *runner == id) {
                map.remove(key);
            }
        });
    }

    /// Runs `f` on the failures with the key of this runner's store and slot.
    fn key_failure<T>(
        &self,
        f: impl FnOnce(&FailureKey, &mut HashMap<FailureKey, Failure>) -> T,
    ) -> T {
        let key = (self.store.id(), self.slot.name().to_owned());
        with_failures(|map| f(&key, map))
    }

    /// The projection's recorded shard count is `recorded`, not this runner's: changes it
    /// (see `shard`) and claims the slot again on `lock`. A runner that has run already
    /// met a change by another deployment: it stops rather than change the count back.
    async fn settle_count(&mut self, lock: Dedicated, recorded: u32) -> Result<Option<Ownership>> {
        let (projection, configured) = (self.slot.projection, self.slot.count());
        let changed = |reason: &str| Error::ShardCountChanged {
            projection: projection.to_owned(),
            recorded,
            configured,
            reason: reason.to_owned(),
        };
        if self.ran {
            return Err(changed(
                "another deployment changed the count while this node ran the projection; \
                 every node must run a projection with the same count",
            ));
        }
        match shard::settle(&self.store, projection, configured).await {
            Ok(()) => {}
            Err(e @ (Error::ShardCountChanged { .. } | Error::CorruptData { .. })) => {
                return Err(e)
            }
            Err(e) => {
                self.acquire_failed("settling the shard count", &e);
                return Ok(None);
            }
        }
        match claim(&self.store, lock, &self.slot, &self.options.node).await {
            Ok(Claim::Owned(own)) => Ok(Some(own)),
            Ok(Claim::CountDiffers { .. }) => Err(changed(
                "another deployment changed the count again at once; every node must run a \
                 projection with the same count",
            )),
            Err(e) => {
                self.acquire_failed("claiming the projection", &e);
                Ok(None)
            }
        }
    }
}
