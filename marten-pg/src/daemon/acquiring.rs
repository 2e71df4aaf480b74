//! How a runner acquires its slot: its turn among its node's runners of the same
//! projection's shards (see `share`), the lock and the claim (see `ownership`), the shard
//! count settled when another is recorded (see `shard`), and where it writes (see
//! `bluegreen`).
//!
//! Owns: the runner's acquire. May use: the daemon's ownership, shard, share and
//! blue/green files, the runner's state.

use marten_core::{Error, Result};
use tracing::{debug, info};

use super::bluegreen::{self, Target};
use super::ownership::{acquire, claim, Claim, Ownership};
use super::runner::Runner;
use super::shard;
use crate::connection::Dedicated;

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
        let name = self.slot.name();
        let claimed = match acquire(&self.store, &self.slot, &self.options.node, standby).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return Ok(None),
            // Stored data no retry mends (a count row edited by hand): the runner stops.
            Err(e @ Error::CorruptData { .. }) => return Err(e),
            Err(e) => {
                debug!(projection = name, error = %e, "cannot acquire projection");
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
                debug!(
                    projection = name,
                    active, "a newer version is active; not running"
                );
                return false;
            }
            Err(e) => {
                debug!(projection = name, error = %e, "cannot find the projection's version");
                return false;
            }
        }
        true
    }

    /// The projection's recorded shard count is `recorded`, not this runner's: changes it
    /// (see `shard`) and claims the slot again on `lock`. A runner that has run already
    /// met a change by another deployment: it stops rather than change the count back.
    async fn settle_count(&self, lock: Dedicated, recorded: u32) -> Result<Option<Ownership>> {
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
                debug!(projection, error = %e, "cannot settle the shard count");
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
                debug!(projection, error = %e, "cannot claim the projection");
                Ok(None)
            }
        }
    }
}
