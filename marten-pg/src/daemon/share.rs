//! How one node spreads a sharded projection's shards among nodes: the node's runners of
//! the projection's shards (of one tenant) take turns at acquiring, and a runner whose
//! node holds shards of it already lets that many of its turns pass before it tries, so
//! nodes started together each take a share, while a node alone still takes every shard
//! within a few turns (and a dead node's shards go to the nodes that hold the fewest).
//!
//! Owns: the node's count of the shards it holds. May use: nothing else of the daemon.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The shards of one projection (and tenant) that this node holds, and the turn at
/// acquiring its runners take.
#[derive(Default)]
pub(crate) struct NodeShare {
    held: AtomicU32,
    turn: Arc<Mutex<()>>,
}

impl NodeShare {
    /// Waits for the turn at acquiring (held while the runner acquires).
    pub(super) async fn turn_owned(self: Arc<Self>) -> OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// How many of the projection's shards the node holds.
    pub(super) fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }

    /// A runner of the node took its shard (`true`) or gave it up (`false`).
    pub(super) fn holding(&self, took: bool) {
        if took {
            self.held.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .held
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_sub(1));
        }
    }
}

/// A runner's place in its node's share: whether it holds its shard, and the turns it
/// let pass since it last tried.
#[derive(Default)]
pub(super) struct Place {
    holding: bool,
    passed: u32,
}

impl Place {
    /// Whether the runner tries to acquire at this turn: it lets as many turns pass as
    /// its node holds shards.
    pub(super) fn tries(&mut self, share: &NodeShare) -> bool {
        if self.passed < share.held() {
            self.passed += 1;
            return false;
        }
        self.passed = 0;
        true
    }

    /// Records whether the runner holds its shard now.
    pub(super) fn set(&mut self, share: &NodeShare, holding: bool) {
        if self.holding != holding {
            self.holding = holding;
            share.holding(holding);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_lets_as_many_turns_pass_as_its_node_holds_shards() {
        let share = NodeShare::default();
        let (mut a, mut b) = (Place::default(), Place::default());
        assert!(a.tries(&share));
        a.set(&share, true);
        assert!(!b.tries(&share));
        assert!(b.tries(&share));
        b.set(&share, true);
        assert_eq!(share.held(), 2);
        a.set(&share, false);
        a.set(&share, false);
        assert_eq!(share.held(), 1);
    }
}
