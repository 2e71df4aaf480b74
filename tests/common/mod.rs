//! Shared by the integration tests: a store on a schema of the test's own.
#![allow(dead_code)]

pub mod deadlocks;
pub mod events;
pub mod inversion;
pub mod invoices;
pub mod tally;

use marten::{DocumentStore, DocumentStoreBuilder};
use marten_testing::{CountingProxy, TestSchema};

/// A fresh schema and a builder pointed at it.
pub fn builder(label: &str) -> (TestSchema, DocumentStoreBuilder) {
    let schema = TestSchema::new(label);
    let builder = builder_on(&schema);
    (schema, builder)
}

/// A builder on `schema` whose one connection goes through a proxy counting round trips
/// (keep the proxy alive as long as the store).
pub async fn counted_builder_on(schema: &TestSchema) -> (CountingProxy, DocumentStoreBuilder) {
    let proxy = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let builder = builder_on(schema)
        .connection_string(schema.url_via(&proxy))
        .pool_size(1);
    (proxy, builder)
}

/// A fresh schema and a builder whose one connection goes through a proxy counting round
/// trips ([`counted_builder_on`]).
pub async fn counted_builder(label: &str) -> (TestSchema, CountingProxy, DocumentStoreBuilder) {
    let schema = TestSchema::new(label);
    let (proxy, builder) = counted_builder_on(&schema).await;
    (schema, proxy, builder)
}

/// A builder pointed at `schema` (a second store on a test's schema).
pub fn builder_on(schema: &TestSchema) -> DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
}

/// Unwraps a result in a test, printing the error with its sources.
#[track_caller]
pub fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e} ({e:?})"),
    }
}

/// A fresh schema and a builder whose connections carry the schema's name as their
/// `application_name`, so the server's views can tell this test's connections apart.
pub fn named_builder(label: &str) -> (TestSchema, DocumentStoreBuilder) {
    let schema = TestSchema::new(label);
    let mut config: tokio_postgres::Config = match schema.url().parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.application_name(schema.name());
    let builder = DocumentStore::builder()
        .config(config)
        .schema(schema.name())
        .pool_size(8);
    (schema, builder)
}

/// The error a daemon whose projection stopped ends with: `wait_for_non_stale` reports
/// the projection stopped at once (within 10 s), and `stop` returns the runner's error.
pub async fn stopped_with(daemon: marten::daemon::Daemon) -> marten::Error {
    let err = daemon
        .wait_for_non_stale(std::time::Duration::from_secs(10))
        .await
        .expect_err("stopped, stale");
    assert!(
        matches!(err, marten::Error::ProjectionStopped { .. }),
        "{err}"
    );
    daemon.stop().await.expect_err("the runner stopped")
}
