//! Events a runner's page could not decode (their stored JSON does not deserialize, or
//! their upcaster refuses them). An event of a type the projection does not handle, or of
//! another shard's stream, is passed over as any such event is; for the others the poison
//! policy decides at once, without retries: each is dead-lettered (in `mt_dead_letters`,
//! with the decoding error, by the batch's commit) and the batch goes on without it, or the projection stops
//! with the first one's error, which names its type and sequence.
//!
//! Owns: carrying out the policy for unreadable events (the decision is
//! [`marten_core::projection::poison::on_unreadable`]'s). May use: the letters a batch
//! carries to its commit (`commit`).

use marten_core::projection::poison::{on_unreadable, FailureAction};
use marten_core::{Result, WithSources};

use super::commit::Letter;
use super::runner::Runner;
use crate::events::range::Unreadable;

impl Runner {
    /// Meets the poison policy for the events of `unreadable` that are this slot's: adds
    /// their dead letters to `letters`, or fails with the first one's decoding error.
    pub(super) fn pass_unreadable(
        &self,
        unreadable: Vec<Unreadable>,
        letters: &mut Vec<Letter>,
    ) -> Result<()> {
        let at = (self.projection.name(), self.slot.tenant_column());
        for event in unreadable.into_iter().filter(|u| self.concerns(u)) {
            if on_unreadable(self.options.poison) == FailureAction::Stop {
                return Err(event.error);
            }
            let message = WithSources(&event.error).to_string();
            let (sequence, stored) = (event.sequence, &event.stored_type);
            // Its place in the page is not known (the read leaves its transaction id
            // out): its letter goes with the batch's first commit.
            letters.push(Letter::new(
                at,
                (sequence, None),
                stored,
                &event.stream,
                (message, 1),
            ));
        }
        Ok(())
    }

    /// Whether an unreadable event is this slot's to meet the policy for: its type is one
    /// the projection handles, and for a shard its stream is the shard's (the shard an
    /// aggregate's event belongs to; for a projection that slices otherwise, one shard
    /// chosen by the stream, since the event's own ids cannot be read).
    fn concerns(&self, event: &Unreadable) -> bool {
        let handled = match event.read_as {
            Some((type_id, name)) => self.projection.handles_type(type_id, name),
            None => true,
        };
        handled
            && self
                .slot
                .shard
                .is_none_or(|shard| shard.owns(&event.stream.key()))
    }
}
