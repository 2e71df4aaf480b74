//! The async projection daemon.
//!
//! Each async projection is run by at most one process at a time: a runner first takes a
//! session-level advisory lock for the projection on a connection of its own, then claims
//! the projection by bumping its owner epoch in `mt_event_progression`. It reads events
//! after its position in the gap-safe global order (`read_all`), plans the batch's
//! writes (slices folded in parallel, see `crate::projections::asynchronous`), and
//! commits the writes together with a compare-and-set of the position that also checks
//! the epoch, in one transaction and one round trip. An advisory lock can vanish with its
//! connection; a runner that was paused past a takeover then still holds an old epoch and
//! its commit is rejected, so an event is applied exactly once. Runners on several nodes
//! share the projections: each tries every projection and runs those whose lock it gets.
//! A subscription (`crate::subscriptions`) is one more kind of async projection to the
//! daemon: its plan is the handler's call and its writes are what the handler queued.
//! A sharded projection ([`DaemonOptions::with_shards`]) is run per shard: each shard is
//! a slot of its own (position, lock, epoch), so nodes share one projection's work.
//!
//! The files, one concern each: `options` (settings), `handle` (the [`Daemon`] a caller
//! holds), `runner` (a projection's loop and step; `runner/refused`: a commit the
//! database refuses for its data, retried, then searched for its event), `acquiring` (a
//! runner's acquire),
//! `ownership` (lock, claim, epoch),
//! `read` (the next page), `plan` (retries and the poison policy), `commit` (the unit of
//! work with the progress update first), `rebuild`, `stale` (waiting for catch-up),
//! `progression` (the daemon's use of its tables), `slot` (a projection over every
//! tenant's events or one tenant's, whole or one shard: its progression row), `shard`
//! (a sharded projection's recorded count and its change), `share` (how a node spreads
//! shards among nodes), `tenants` (the tenants to run
//! projections for, with conjoined events), `hooks`, `bluegreen` (a versioned
//! projection's build table and the switch to it) and `versions` (its public calls).
//!
//! May use: every layer below it (the daemon runs projections through the unit of work on
//! its own connections); nothing above it but the store that holds the projections.

mod acquiring;
mod bluegreen;
mod commit;
mod handle;
pub mod hooks;
mod options;
mod ownership;
mod plan;
pub(crate) mod progression;
mod read;
mod read_ahead;
mod rebuild;
pub(crate) mod runner;
pub(crate) mod shard;
pub(crate) mod share;
pub(crate) mod slot;
mod stale;
pub(crate) use stale::deadline_after;
mod tenants;
pub(crate) use tenants::tenants_on;
mod unreadable;
mod versions;

pub use handle::Daemon;
pub use hooks::{DaemonHooks, NoHooks};
pub use options::{DaemonOptions, PoisonPolicy, MAX_SHARDS};
pub use rebuild::{rebuild, rebuild_tenant};
pub use stale::wait_for_non_stale;
pub use versions::{
    active_projection_version, drop_old_projection_versions, drop_old_projection_versions_named,
};
