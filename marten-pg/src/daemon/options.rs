//! The daemon's settings: [`DaemonOptions`] and the [`PoisonPolicy`] it applies to an
//! event whose apply keeps failing.
//!
//! Owns: plain configuration values ([`PoisonPolicy`] itself is marten-core's, re-exported
//! here). May use: the daemon's hooks (the default is none).

use std::sync::Arc;
use std::time::Duration;

use super::hooks::{DaemonHooks, NoHooks};

// Defined with the rest of the backend-neutral retry and poison decision in
// `marten_core::projection::poison`; its public path stays `marten::daemon::PoisonPolicy`.
pub use marten_core::projection::PoisonPolicy;

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
