//! [`ConsoleOptions`]: whether actions that change data are on, the path the console is
//! mounted under, how its lag history is sampled, which `Host` names it answers to; and
//! the host's auth hook as the console keeps it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

/// The console's options. Read-only by default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleOptions {
    /// Whether actions that change data (retry a dead letter, rebuild a projection) are
    /// offered. Off by default; each one asks for confirmation and takes POST only.
    pub actions: bool,
    /// The path the console is mounted under (`""` at the root, `"/console"` when the
    /// host nests its router there): the prefix of every link.
    pub base_path: String,
    /// How often the lag history is sampled.
    pub sample_every: Duration,
    /// How much lag history is kept (the chart shows the last hour).
    pub history: Duration,
    /// More names the console answers to, besides `localhost`, `127.0.0.1`, `[::1]` and
    /// the address it is bound to: host names or addresses (any port; a leading dot,
    /// `.example.com`, admits the domain and its subdomains). A request whose `Host` is
    /// none of them is refused (421), against DNS rebinding: always without an auth
    /// hook; with one, only when this list is not empty (empty: every `Host` reaches
    /// the hook). Empty by default.
    pub allowed_hosts: Vec<String>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            actions: false,
            base_path: String::new(),
            sample_every: Duration::from_secs(1),
            history: Duration::from_secs(3600),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Applies the host's auth middleware to the console's router.
pub(crate) type AuthHook = Arc<dyn Fn(Router) -> Router + Send + Sync>;
