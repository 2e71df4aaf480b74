//! The daemon's settings: [`DaemonOptions`] and the [`PoisonPolicy`] it applies to an
//! event whose apply keeps failing.
//!
//! Owns: plain configuration values ([`PoisonPolicy`] itself is marten-core's, re-exported
//! here). May use: the daemon's hooks (the default is none).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::hooks::{DaemonHooks, NoHooks};

/// The most shards a projection runs as: each is a runner, a lock and a progression row
/// per tenant. A count recorded above it (a row edited by hand) is
/// [`Error::CorruptData`](marten_core::Error::CorruptData), never billions of slots.
pub const MAX_SHARDS: u32 = 1024;

// Defined with the rest of the backend-neutral retry and poison decision in
// `marten_core::projection::poison`; its public path stays `marten::daemon::PoisonPolicy`.
pub use marten_core::projection::PoisonPolicy;

/// Settings of a daemon; build them with struct update syntax from `Default`.
#[derive(Clone)]
pub struct DaemonOptions {
    /// Events per batch (default 500). A shard of a sharded projection reads pages of
    /// this many rows per shard (up to 10,000), and projects its own share of them.
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
    /// How many shards each sharded projection (an aggregate or a multi-stream
    /// projection) is split into, by projection name (as the projection status names it:
    /// `Tally`, `Tally:v2`); a projection not named here runs whole. Set it with [`with_shards`](Self::with_shards); README,
    /// "Sharded projections".
    pub shards: BTreeMap<String, u32>,
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
            shards: BTreeMap::new(),
        }
    }
}

impl DaemonOptions {
    /// Sets the hooks.
    pub fn with_hooks(mut self, hooks: impl DaemonHooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Splits async projection `projection` into `count` shards: events are kept by a
    /// stable hash of their stream id (aggregates) or of the id of the document they
    /// slice to (multi-stream projections), so each document is written by one shard, in
    /// the order of its events; each shard has its own progression row, lock and owner
    /// epoch, so the daemons of several nodes share the projection's work. A count of 1
    /// runs it whole. Every node must run a projection with the same count; a count
    /// different from the one recorded is taken up only when the old shards stand at the
    /// same position (README, "Sharded projections").
    ///
    /// Event projections and subscriptions are not sharded: an event projection's events
    /// of any stream may write any document, and two shards committing on their own would
    /// leave such a document as the one that commits last wrote it. A count above 1 for
    /// one (or a count of 0 or above [`MAX_SHARDS`], or a name that is no async
    /// projection of the store) is
    /// refused by [`Daemon::start`](super::Daemon::start) with
    /// [`Error::Configuration`](marten_core::Error::Configuration) naming the projection,
    /// and the projection is not run.
    pub fn with_shards(mut self, projection: impl Into<String>, count: u32) -> Self {
        self.shards.insert(projection.into(), count);
        self
    }

    /// The shard count of `projection` (1 unless configured).
    pub(super) fn shard_count(&self, projection: &str) -> u32 {
        self.shards.get(projection).copied().unwrap_or(1)
    }
}
