//! The domain the daemon nodes project, shared by the node binary and the tests.

use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// An event adding to a counter.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct Added {
    /// How much.
    pub n: i64,
}

/// The aggregate the daemon keeps: the sum and count of a stream's `Added` events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Counter {
    /// The stream id.
    pub id: Uuid,
    /// The stream version of the last applied event.
    pub version: i64,
    /// The sum.
    pub total: i64,
    /// The count.
    pub count: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
        self.count += 1;
    }
}

/// A store on `schema` with `Counter` as an async projection.
pub async fn store(url: &str, schema: &str, pool: usize) -> marten::Result<DocumentStore> {
    DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .pool_size(pool)
        .event::<Added>()
        .projection::<Counter>(Lifecycle::Async)
        .build()
        .await
}
