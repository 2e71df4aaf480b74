//! One timer kept pending on the runtime a store runs on, so that the time limits every
//! request registers do not wake the runtime's driver thread.
//!
//! Tokio wakes the thread that drives I/O and timers whenever a timer is registered that
//! is due before every timer already pending, and with none pending any timer is. Every
//! marten request is bounded (the pool's wait, the request timeout), so on a runtime with
//! no other timer each request woke that thread: counted with `strace` over 2,000 lone
//! appends, one more `write` (the driver's wake-up), two to three more `futex` calls and
//! one more `epoll_wait` per append than raw tokio-postgres, which registers no timer.
//! An anchor is a task that sleeps [`PERIOD`] in a loop: the driver's next wake-up is then
//! never further away than that, a request's deadline (seconds away) lies after it, and
//! registering the deadline wakes nobody. With the anchor the counts are raw's.
//!
//! The anchor ends at its first wake-up after the store (its [`Anchor`]) is dropped, or
//! with its runtime. Outside a runtime there is none (the store then only costs the
//! wake-ups).
//!
//! Owns: the anchor task. May use: tokio.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often an anchor wakes: shorter than any time limit worth setting on a request, so
/// that their deadlines lie after it; long enough to cost nothing (one wake-up a second).
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Keeps its store's anchor task alive; the task ends once this is dropped.
#[derive(Default)]
pub(crate) struct Anchor {
    _alive: Option<Arc<()>>,
}

impl Anchor {
    /// Starts an anchor on the current runtime, if there is one.
    pub(crate) fn start() -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self::default();
        };
        let alive = Arc::new(());
        let watched: Weak<()> = Arc::downgrade(&alive);
        runtime.spawn(async move {
            while watched.strong_count() > 0 {
                tokio::time::sleep(PERIOD).await;
            }
        });
        Self {
            _alive: Some(alive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test]
    async fn the_anchor_runs_while_its_store_holds_it_and_ends_after() {
        assert_eq!(alive_tasks(), 0);
        let anchor = Anchor::start();
        tokio::time::sleep(PERIOD + PERIOD / 2).await;
        assert_eq!(alive_tasks(), 1, "the anchor outlives its first wake-up");
        drop(anchor);
        let deadline = std::time::Instant::now() + PERIOD * 3;
        while alive_tasks() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the anchor ends after its store"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn outside_a_runtime_there_is_no_anchor() {
        assert!(Anchor::start()._alive.is_none());
    }
}
