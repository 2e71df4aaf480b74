//! Projections over a caller's pool of one connection, whose tables of the documents a
//! projection writes are made on a connection of that same pool.
//!
//! The async daemon: the runner never holds its own connection while they are made (it
//! would wait for itself until the pool's wait ran out, back off and try again, for
//! ever). Covered: an event projection writing a type the builder was not told of (known
//! only once the batch is planned), one writing a type it declares as its own, an
//! aggregate whose table is made on first use, and a subscription storing a document the
//! builder was not told of.
//!
//! A save with an inline event projection: the tables of the types the projection owns
//! are made before the save takes its connection; one it writes without owning them
//! (known once planned) still needs a second connection, and the save's wait for it ends
//! in `PoolExhausted` (a known limitation, see the README's connection pools).

mod common;

use std::time::Duration;

use common::tally::Added;
use common::{builder_on, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use marten::prelude::*;
use marten::subscriptions::{HandlerError, Subscription, SubscriptionBatch, SubscriptionTx};
use marten::{ApplyError, EventProjection, OwnedDocuments, ProjectedOps};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

/// How long a checkout from the caller's pool waits for its one connection.
const POOL_WAIT: Duration = Duration::from_millis(500);

/// A caller's pool of one connection on `schema`, waiting at most [`POOL_WAIT`].
fn pool_of_one(schema: &TestSchema) -> Pool {
    let mut config: tokio_postgres::Config = match schema.url().parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.options(format!("-c search_path={}", schema.name()));
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    match Pool::builder(manager)
        .max_size(1)
        .wait_timeout(Some(POOL_WAIT))
        .runtime(Runtime::Tokio1)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => panic!("cannot build the pool: {e}"),
    }
}

/// Written by [`Notes`], a type no builder is told of.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: i64,
    n: i64,
}

/// Written by [`Marks`], which declares it as its own.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Mark {
    id: i64,
    n: i64,
}

/// Sums `Added` per stream, run async; its table is made on first use.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Sum {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Sum {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

/// Stores a [`Note`] per `Added`, without declaring the type.
struct Notes;

impl EventProjection for Notes {
    fn name(&self) -> &'static str {
        "Notes"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<Added>() {
            ops.store(Note { id: e.n, n: e.n });
        }
        Ok(())
    }
}

/// Stores a [`Mark`] per `Added`, and owns the type.
struct Marks;

impl EventProjection for Marks {
    fn name(&self) -> &'static str {
        "Marks"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<Added>() {
            ops.store(Mark { id: e.n, n: e.n });
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<Mark>();
    }
}

/// Written by [`Receipts`], a type no builder is told of.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Receipt {
    id: i64,
    n: i64,
}

/// A subscription storing a [`Receipt`] per `Added` in its checkpoint's transaction.
struct Receipts;

impl Subscription for Receipts {
    fn name(&self) -> &'static str {
        "Receipts"
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for e in batch.events() {
            if let Some(a) = e.data_as::<Added>() {
                tx.store(Receipt { id: a.n, n: a.n });
            }
        }
        Ok(())
    }
}

/// The projection a case runs.
#[derive(Clone, Copy, Debug)]
enum Case {
    Undeclared,
    Owned,
    Aggregate,
    Subscription,
}

/// A store over a caller's pool of one connection running `case`'s projection async,
/// and one on a pool of its own for the test's appends and reads.
async fn stores(schema: &TestSchema, case: Case) -> (DocumentStore, DocumentStore) {
    let b = DocumentStore::builder()
        .pool(pool_of_one(schema))
        .schema(schema.name())
        .event::<Added>();
    let b = match case {
        Case::Undeclared => b.event_projection(Notes, Lifecycle::Async),
        Case::Owned => b.event_projection(Marks, Lifecycle::Async),
        Case::Aggregate => b
            .apply_schema_at_build(false)
            .projection::<Sum>(Lifecycle::Async),
        Case::Subscription => b.subscription(Receipts),
    };
    let store = ok(b.build().await);
    let writer = ok(builder_on(schema).event::<Added>().build().await);
    (store, writer)
}

/// Whether `case`'s projection wrote what one `Added { n: 7 }` on `stream` makes.
async fn projected(writer: &DocumentStore, case: Case, stream: Uuid) -> bool {
    let mut q = writer.query_session();
    match case {
        Case::Undeclared => matches!(q.load::<Note>(&7).await, Ok(Some(Note { n: 7, .. }))),
        Case::Owned => matches!(q.load::<Mark>(&7).await, Ok(Some(Mark { n: 7, .. }))),
        Case::Aggregate => matches!(q.load::<Sum>(&stream).await, Ok(Some(Sum { total: 7, .. }))),
        Case::Subscription => {
            matches!(q.load::<Receipt>(&7).await, Ok(Some(Receipt { n: 7, .. })))
        }
    }
}

/// The daemon over a caller's pool of one connection projects an event whose projection
/// writes a document type whose table is not made yet: the table is made on the pool's
/// connection while the runner holds none, and the document appears within seconds.
#[tokio::test]
async fn a_projections_first_write_over_a_callers_pool_of_one_connection() {
    for case in [
        Case::Undeclared,
        Case::Owned,
        Case::Aggregate,
        Case::Subscription,
    ] {
        let schema = TestSchema::new("daemon_caller_pool");
        let (store, writer) = stores(&schema, case).await;
        let stream = Uuid::now_v7();
        let mut s = writer.lightweight_session();
        ok(s.events().append(stream, [Added { n: 7 }]));
        ok(s.save_changes().await);
        drop(s);
        let daemon = Daemon::start(
            &store,
            DaemonOptions {
                poll_interval: Duration::from_millis(20),
                ..DaemonOptions::default()
            },
        );
        let started = std::time::Instant::now();
        while !projected(&writer, case, stream).await {
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{case:?}: the projection never wrote its document over a caller's pool of one \
                 connection"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
        ok(daemon.stop().await);
    }
}

/// A store over a caller's pool of one connection with `projection` run inline.
async fn inline_store<P: EventProjection>(schema: &TestSchema, projection: P) -> DocumentStore {
    ok(DocumentStore::builder()
        .pool(pool_of_one(schema))
        .schema(schema.name())
        .event::<Added>()
        .event_projection(projection, Lifecycle::Inline)
        .build()
        .await)
}

/// A save over a caller's pool of one connection appending an event whose inline event
/// projection writes a type it owns, whose table is not made yet: the table is made
/// before the save takes the pool's connection, and the save commits the document.
#[tokio::test]
async fn an_inline_event_projections_owned_type_over_a_callers_pool_of_one_connection() {
    let schema = TestSchema::new("inline_caller_pool_owned");
    let store = inline_store(&schema, Marks).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), [Added { n: 7 }]));
    let saved = match tokio::time::timeout(Duration::from_secs(10), s.save_changes()).await {
        Ok(saved) => saved,
        Err(_) => panic!("the save waited for its own connection"),
    };
    ok(saved);
    drop(s);
    let mark = ok(store.query_session().load::<Mark>(&7).await);
    assert_eq!(mark, Some(Mark { id: 7, n: 7 }));
}

/// As above with a type the projection writes without owning it (known once planned):
/// its table needs a second connection of the pool while the save holds the only one, so
/// the save fails in `PoolExhausted` after the pool's wait (bounded, never a hang);
/// registering the type on the builder makes its table at build, and the save works.
#[tokio::test]
async fn an_inline_event_projections_unowned_type_over_a_callers_pool_of_one_connection() {
    let schema = TestSchema::new("inline_caller_pool_unowned");
    let store = inline_store(&schema, Notes).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), [Added { n: 7 }]));
    let saved = match tokio::time::timeout(Duration::from_secs(10), s.save_changes()).await {
        Ok(saved) => saved,
        Err(_) => panic!("the save waited for ever"),
    };
    assert!(
        matches!(saved, Err(Error::PoolExhausted { size: 1, .. })),
        "{saved:?}"
    );
    drop(s);
    let registered = ok(DocumentStore::builder()
        .pool(pool_of_one(&schema))
        .schema(schema.name())
        .event::<Added>()
        .document::<Note>()
        .event_projection(Notes, Lifecycle::Inline)
        .build()
        .await);
    let mut s = registered.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), [Added { n: 7 }]));
    ok(s.save_changes().await);
    drop(s);
    let note = ok(registered.query_session().load::<Note>(&7).await);
    assert_eq!(note, Some(Note { id: 7, n: 7 }));
}

/// A live aggregate with a snapshot policy over a caller's pool of one connection, its
/// tables made on first use: the fold makes its snapshot table (the snapshot column)
/// with the session's connection set aside, not while it holds the pool's only one.
#[tokio::test]
async fn a_snapshot_fold_over_a_callers_pool_of_one_connection() {
    let schema = TestSchema::new("snapshot_caller_pool");
    let store = ok(DocumentStore::builder()
        .pool(pool_of_one(&schema))
        .schema(schema.name())
        .apply_schema_at_build(false)
        .snapshot::<Sum>(2)
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(stream, (1..=5).map(|n| Added { n })));
    ok(s.save_changes().await);
    let folded = tokio::time::timeout(
        Duration::from_secs(10),
        s.events().aggregate_stream::<Sum>(stream),
    )
    .await;
    let sum = match folded {
        Ok(sum) => ok(sum),
        Err(_) => panic!("the fold waited for its own connection"),
    };
    assert_eq!(sum.map(|s| s.total), Some(15));
}
