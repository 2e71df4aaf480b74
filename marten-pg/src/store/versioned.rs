//! Registering versioned async projections (blue/green rebuilds): the builder methods
//! that give an aggregate or multi-stream projection a version. What a version does is
//! described in the README ("Blue/green rebuilds") and `crate::projections::versioned`.

use std::sync::Arc;

use marten_core::concurrency::VersionedMode;
use marten_core::{Aggregate, Identities};

use super::DocumentStoreBuilder;
use crate::documents::PgDocument;
use crate::projections::Lifecycle;
use crate::tables::versions::FIRST_VERSION;

impl DocumentStoreBuilder {
    /// Gives the async projection registered last `version`.
    fn version_last_async(&mut self, version: u32) {
        if let Some(last) = self.projections.asynchronous.pop() {
            let versioned = crate::projections::versioned::Versioned::new(last, version);
            self.projections.asynchronous.push(Arc::new(versioned));
        }
    }

    /// Registers aggregate projection `A` as an async projection at `version`. Version 1
    /// is [`projection`](Self::projection) with [`Lifecycle::Async`]. A higher version
    /// runs under its own progression row (`Tally:v2`) and, while an older version's
    /// documents are the ones readers see, projects into a table of its own
    /// (`mt_doc_tally_v2`); once it has caught up, the daemon switches readers to it in
    /// one transaction. The superseded table stays until
    /// [`drop_old_projection_versions`](crate::daemon::drop_old_projection_versions).
    /// With conjoined events the new version builds per tenant, and readers switch once
    /// every tenant's runner has caught up (README, "Blue/green rebuilds").
    pub fn projection_versioned<A: Aggregate + PgDocument>(mut self, version: u32) -> Self {
        self = self.projection::<A>(Lifecycle::Async);
        if version > FIRST_VERSION {
            self.version_last_async(version);
        }
        self
    }

    /// [`projection_versioned`](Self::projection_versioned) for multi-stream projection
    /// `P`.
    pub fn multi_stream_projection_versioned<P>(mut self, version: u32) -> Self
    where
        P: Identities + PgDocument,
        P::Mode: VersionedMode,
    {
        self = self.multi_stream_projection::<P>(Lifecycle::Async);
        if version > FIRST_VERSION {
            self.version_last_async(version);
        }
        self
    }
}
