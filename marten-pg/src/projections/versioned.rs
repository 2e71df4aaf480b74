//! Versioned async projections (blue/green rebuilds): an aggregate or multi-stream
//! projection registered with a version above 1 runs under a progression row of its own
//! (`Name:v2`) and, until it is the active version of its document table, writes into a
//! table of its own (see [`crate::tables::versions`] for the names and the switch, and
//! the daemon's `bluegreen` for who switches when).
//!
//! Owns: the wrapper that gives a projection its version and versioned name. May use: the
//! async projections.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::future::BoxFuture;
use marten_core::projection::shard::Shard;
use marten_core::{EventEnvelope, Result, TenantId};

use super::asynchronous::{AsyncProjection, Batch, DocumentTable};
use crate::connection::Db;
use crate::unit_of_work::OpList;

/// Projection `inner` at `version`.
pub(crate) struct Versioned {
    inner: Arc<dyn AsyncProjection>,
    version: u32,
    name: &'static str,
}

impl Versioned {
    /// `inner` at `version` (above 1), named `{inner}:v{version}`.
    pub(crate) fn new(inner: Arc<dyn AsyncProjection>, version: u32) -> Self {
        let name = intern(format!("{}:v{version}", inner.name()));
        Versioned {
            inner,
            version,
            name,
        }
    }
}

/// `name` as a `'static` string: each distinct versioned name is leaked once per process
/// (a handful: one per versioned projection), however many stores register it.
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

impl AsyncProjection for Versioned {
    fn name(&self) -> &'static str {
        self.name
    }

    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>> {
        self.inner.plan(batch)
    }

    fn clear<'a>(
        &'a self,
        client: Db<'a>,
        tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.clear(client, tenant)
    }

    fn documents(&self) -> Vec<(std::any::TypeId, crate::schema::MigrateFn)> {
        self.inner.documents()
    }

    fn document_table(&self) -> Option<DocumentTable> {
        self.inner.document_table()
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn shardable(&self) -> bool {
        self.inner.shardable()
    }

    fn reads_metadata(&self) -> bool {
        self.inner.reads_metadata()
    }

    fn in_shard(&self, event: &EventEnvelope, shard: Shard) -> bool {
        self.inner.in_shard(event, shard)
    }

    fn handles_type(&self, type_id: std::any::TypeId, name: &'static str) -> bool {
        self.inner.handles_type(type_id, name)
    }
}
