//! Shared by the integration tests: a store on a schema of the test's own.
#![allow(dead_code)]

pub mod events;

use marten::{DocumentStore, DocumentStoreBuilder};
use marten_testing::TestSchema;

/// A fresh schema and a builder pointed at it.
pub fn builder(label: &str) -> (TestSchema, DocumentStoreBuilder) {
    let schema = TestSchema::new(label);
    let builder = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8);
    (schema, builder)
}

/// Unwraps a result in a test, printing the error with its sources.
#[track_caller]
pub fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e} ({e:?})"),
    }
}
