//! The builder's snapshot policy of live aggregates: [`DocumentStoreBuilder::snapshot`].

use std::any::TypeId;
use std::sync::Arc;

use marten_core::{Aggregate, Error, Result, Tenancy};

use super::{DocumentStoreBuilder, Registration};
use crate::documents::PgDocument;
use crate::projections::snapshot::SnapshotPolicy;
use crate::projections::Lifecycle;

impl DocumentStoreBuilder {
    /// Snapshots live aggregate `A` every `every_n_events` events: the live fold
    /// (`aggregate_stream`, `fetch_latest`, the `fetch_for_writing` family) starts from
    /// the last snapshot, stored as `A`'s document at the stream version it was folded up
    /// to, and applies only the events after it. A fold that passes `every_n_events`
    /// events beyond the last snapshot writes a new one right after the read (see the
    /// README's "Snapshots").
    ///
    /// `A` is also registered as a document, whose table has one more column,
    /// `mt_snapshot_seq` (the sequence of a snapshot's own event: see the README's
    /// "Snapshots"; the schema mode adds it to an existing table). An inline aggregate
    /// is its own snapshot and an async one is the daemon's document: a policy for
    /// either (or an `every_n_events` of 0) is [`Error::Configuration`] at `build`. With conjoined
    /// events, `A` must be a conjoined document type, so each tenant's streams keep
    /// their own snapshots.
    pub fn snapshot<A: Aggregate + PgDocument>(mut self, every_n_events: u32) -> Self {
        let type_id = TypeId::of::<A>();
        let name = std::any::type_name::<A>();
        let refused = if every_n_events == 0 {
            Some("a snapshot every 0 events")
        } else if self.projections.snapshots.contains_key(&type_id) {
            Some("a snapshot policy registered twice")
        } else {
            None
        };
        if let Some(why) = refused {
            self.registry_error
                .get_or_insert(Error::Configuration(format!("snapshot of {name}: {why}")));
            return self;
        }
        if let Err(e) = self.registry.register_decoders(A::event_types()) {
            self.registry_error.get_or_insert(e);
        }
        if A::TENANCY == Tenancy::Single {
            self.stream_keyed.push(name);
        }
        let policy = Arc::new(SnapshotPolicy::of::<A>(every_n_events));
        // `A`'s table is the snapshot table, whether `A` was registered as a plain
        // document before or is after.
        let registration = Registration {
            type_id,
            define: crate::documents::snapshot_define_fn::<A>(),
            migrate: policy.table.1,
        };
        match self.documents.iter_mut().find(|r| r.type_id == type_id) {
            Some(r) => *r = registration,
            None => self.documents.push(registration),
        }
        self.projections.snapshots.insert(type_id, policy);
        self
    }

    /// Refuses a snapshot policy of an aggregate registered as inline or async,
    /// whichever was registered first.
    pub(super) fn check_snapshots(&self) -> Result<()> {
        for (type_id, policy) in &self.projections.snapshots {
            let why = match self.projections.lifecycle(*type_id) {
                Some(Lifecycle::Inline) => "an inline aggregate is its own snapshot",
                Some(Lifecycle::Async) => "an async aggregate's document is the daemon's",
                _ => continue,
            };
            let name = policy.aggregate;
            return Err(Error::Configuration(format!("snapshot of {name}: {why}")));
        }
        Ok(())
    }
}
