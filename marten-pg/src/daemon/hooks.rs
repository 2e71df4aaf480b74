//! Catch-up hooks: the points of a daemon runner's work that a program (or a test) can
//! observe, as the [`DaemonHooks`] trait, and [`NoHooks`], the default. Uses only the
//! core's event envelope. (`marten_testing::trace::TraceHooks` implements the trait to
//! write the traces its race detector reads.)

use marten_core::EventEnvelope;

/// Called by the daemon around its work. All methods default to doing nothing.
///
/// `projection` names the projection, or for a shard of a sharded projection the shard
/// (`Tally#1/3`: see [`DaemonOptions::with_shards`](super::DaemonOptions::with_shards)),
/// so that a trace tells apart the shards, which run at once.
pub trait DaemonHooks: Send + Sync + 'static {
    /// The runner took ownership of `projection` and starts catching up.
    fn before_catch_up(&self, _projection: &str) {}
    /// A batch starts.
    fn before_batch(&self, _projection: &str) {}
    /// An event is about to be applied.
    fn before_event(&self, _projection: &str, _event: &EventEnvelope) {}
    /// An event was applied (its writes are not committed yet).
    fn after_event(&self, _projection: &str, _event: &EventEnvelope) {}
    /// The batch's writes and progress are about to be committed.
    fn before_commit(&self, _projection: &str, _sequences: &[i64]) {}
    /// The batch committed: these events are processed, exactly once.
    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {}
    /// The batch was discarded: another runner owns the projection now.
    fn batch_rejected(&self, _projection: &str) {}
    /// The runner caught up with the events readable now.
    fn after_catch_up(&self, _projection: &str) {}
    /// Whether [`before_event`](Self::before_event) and
    /// [`after_event`](Self::after_event) read more of an event than its sequence,
    /// stream, version, type, data and transaction id: its id, timestamp, correlation or
    /// causation id, headers or tenant. `true` unless overridden, which is always right.
    /// With `false`, the daemon reads the events of an aggregate projection whose apply
    /// methods take no metadata without those fields (less to read and decode), and the
    /// envelopes the hooks get carry defaults for them.
    fn reads_event_metadata(&self) -> bool {
        true
    }
}

/// No hooks.
pub struct NoHooks;

impl DaemonHooks for NoHooks {
    fn reads_event_metadata(&self) -> bool {
        false
    }
}
