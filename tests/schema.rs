//! Schema modes: create-or-update creates and adds missing columns, none and create-only
//! name what is missing, all drops and recreates.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;
    #[derive(Document, Serialize, Deserialize, Clone, Debug)]
    #[document(table = "mt_doc_widget")]
    pub struct Widget {
        pub id: Uuid,
        pub name: String,
    }
}

mod v2 {
    use super::*;
    /// The same document, switched to numeric revisions.
    #[derive(Document, Serialize, Deserialize, Clone, Debug)]
    #[concurrency(numeric)]
    #[document(table = "mt_doc_widget")]
    pub struct Widget {
        pub id: Uuid,
        pub name: String,
    }
}

mod v3 {
    use super::*;
    /// The same table name with a different id type.
    #[derive(Document, Serialize, Deserialize, Clone, Debug)]
    #[document(table = "mt_doc_widget")]
    pub struct Widget {
        pub id: String,
    }
}

async fn columns(schema: &marten_testing::TestSchema, table: &str) -> Vec<String> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY 1",
            &[&schema.name(), &table],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn tables_are_created_on_first_use_and_missing_columns_added() {
    let (schema, b) = builder("schema_update");
    // Not registered: created on first use.
    let store = ok(b.build().await);
    let mut s = store.lightweight_session();
    let id = ok(s.store(v1::Widget {
        id: Uuid::nil(),
        name: "w".into(),
    }));
    ok(s.save_changes().await);
    assert_eq!(
        columns(&schema, "mt_doc_widget").await,
        ["data", "id", "mt_last_modified"]
    );

    // The type switched to numeric: the revision column is added, the data kept.
    let store2 = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .document::<v2::Widget>()
        .build()
        .await);
    assert_eq!(
        columns(&schema, "mt_doc_widget").await,
        ["data", "id", "mt_last_modified", "mt_revision"]
    );
    let mut s2 = store2.lightweight_session();
    let w: v2::Widget = ok(s2.load(&id).await).expect("kept");
    assert_eq!(w.name, "w");
    ok(s2.store(w));
    ok(s2.save_changes().await);
    assert_eq!(
        ok(s2.metadata::<v2::Widget>(&id).await)
            .expect("meta")
            .version,
        2
    );

    // A different id type is a configuration error naming the table.
    let err = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .document::<v3::Widget>()
        .build()
        .await
        .expect_err("id type differs");
    assert!(matches!(err, marten::Error::Configuration(_)), "{err}");
    assert!(err.to_string().contains("mt_doc_widget"), "{err}");
}

#[tokio::test]
async fn none_mode_names_the_missing_object() {
    let (schema, b) = builder("schema_none");
    let err = b
        .auto_create(AutoCreate::None)
        .document::<v1::Widget>()
        .build()
        .await
        .expect_err("nothing exists");
    match &err {
        marten::Error::SchemaObjectMissing { object } => {
            assert_eq!(object, &format!("schema {}", schema.name()))
        }
        other => panic!("wrong error {other}"),
    }
    // Create the schema and functions but not the table.
    let _ = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .build()
        .await);
    let none = || {
        DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .auto_create(AutoCreate::None)
    };
    let err = none()
        .document::<v1::Widget>()
        .build()
        .await
        .expect_err("no table");
    match &err {
        marten::Error::SchemaObjectMissing { object } => {
            assert_eq!(object, &format!("{}.mt_doc_widget", schema.name()))
        }
        other => panic!("wrong error {other}"),
    }
    // Unregistered use in none mode fails at first use, naming the table.
    let store = ok(none().build().await);
    let mut s = store.lightweight_session();
    let err = s
        .load::<v1::Widget>(&Uuid::now_v7())
        .await
        .expect_err("no table");
    assert!(err.to_string().contains("mt_doc_widget"), "{err}");

    // With the table, but missing the numeric column.
    let _ = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .document::<v1::Widget>()
        .build()
        .await);
    let err = none()
        .document::<v2::Widget>()
        .build()
        .await
        .expect_err("no mt_revision");
    assert!(
        err.to_string().contains("mt_doc_widget.mt_revision"),
        "{err}"
    );
    let err = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .auto_create(AutoCreate::CreateOnly)
        .document::<v2::Widget>()
        .build()
        .await
        .expect_err("create-only does not alter");
    assert!(
        err.to_string().contains("mt_doc_widget.mt_revision"),
        "{err}"
    );

    // A table dropped behind the store's back: the write error names it.
    let store = ok(none().document::<v1::Widget>().build().await);
    schema
        .raw_client()
        .await
        .batch_execute("DROP TABLE mt_doc_widget")
        .await
        .expect("drop");
    let mut s = store.lightweight_session();
    ok(s.store(v1::Widget {
        id: Uuid::now_v7(),
        name: "x".into(),
    }));
    let err = s.save_changes().await.expect_err("table gone");
    match &err {
        marten::Error::SchemaObjectMissing { object } => {
            assert_eq!(object, &format!("{}.mt_doc_widget", schema.name()))
        }
        other => panic!("wrong error {other}"),
    }
}

#[tokio::test]
async fn all_mode_drops_and_recreates() {
    let (schema, b) = builder("schema_all");
    let store = ok(b.document::<v1::Widget>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(v1::Widget {
        id: Uuid::now_v7(),
        name: "gone soon".into(),
    }));
    ok(s.save_changes().await);
    let _ = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .auto_create(AutoCreate::All)
        .document::<v1::Widget>()
        .build()
        .await);
    let n: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_widget", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn stores_on_one_schema_migrate_concurrently() {
    let (schema, _b) = builder("schema_concurrent");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = schema.url().to_owned();
            let name = schema.name().to_owned();
            tokio::spawn(async move {
                DocumentStore::builder()
                    .connection_string(url)
                    .schema(name)
                    .pool_size(1)
                    .document::<v2::Widget>()
                    .build()
                    .await
            })
        })
        .collect();
    for t in tasks {
        ok(t.await.expect("task"));
    }
}

/// A migration waits for the schema's migration lock (and the locks its DDL takes) at
/// most the request timeout, then fails with a typed error naming the schema and rolls
/// back: another process holding the lock (a long migration, a stuck deploy) no longer
/// holds `build` and a type's first use for ever.
#[tokio::test]
async fn a_migration_waits_for_the_schema_lock_at_most_the_request_timeout() {
    use std::time::{Duration, Instant};
    let (schema, b) = builder("schema_lock_wait");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(500)))
        .build()
        .await);
    let holder = schema.raw_client().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema.name()],
        )
        .await
        .expect("take the migration lock");
    // The error's chain names the schema ("migrating <schema>").
    let is_lock_wait = |e: &Error| match e {
        Error::LockNotAvailable(source) => source.context.contains(schema.name()),
        _ => false,
    };

    // A type's first use.
    let started = Instant::now();
    let bound = Duration::from_secs(10);
    let first_use = tokio::time::timeout(
        bound,
        store.query_session().load::<v1::Widget>(&Uuid::now_v7()),
    )
    .await
    .expect("the first use waited for the lock beyond its timeout");
    match first_use {
        Err(e) => assert!(is_lock_wait(&e), "{e} ({e:?})"),
        Ok(found) => panic!("loaded {found:?} without the schema lock"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A second store's build.
    let started = Instant::now();
    let built = tokio::time::timeout(
        bound,
        common::builder_on(&schema)
            .request_timeout(Some(Duration::from_millis(500)))
            .document::<v2::Widget>()
            .build(),
    )
    .await
    .expect("the build waited for the lock beyond its timeout");
    match built {
        Err(e) => assert!(is_lock_wait(&e), "{e} ({e:?})"),
        Ok(_) => panic!("built without the schema lock"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(columns(&schema, "mt_doc_widget").await.is_empty());

    // Once the lock is free, the same calls succeed.
    holder
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema.name()],
        )
        .await
        .expect("release the migration lock");
    assert_eq!(
        ok(store
            .query_session()
            .load::<v1::Widget>(&Uuid::now_v7())
            .await)
        .map(|w| w.id),
        None
    );
    ok(common::builder_on(&schema)
        .document::<v2::Widget>()
        .build()
        .await);
}

/// A type no store registers.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Gadget {
    id: Uuid,
}

/// Sessions of one store that first use a type at the same moment wait for one
/// migration (one connection of its own), not one each.
#[tokio::test]
async fn racing_first_uses_of_a_type_migrate_once() {
    let schema = marten_testing::TestSchema::new("schema_first_use_once");
    let proxy = marten_testing::CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(common::builder_on(&schema)
        .connection_string(schema.url_via(&proxy))
        .pool_size(8)
        .document::<v2::Widget>()
        .build()
        .await);
    // Eight pooled connections, open before the race.
    let warm: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.query_session();
                let _: Option<v2::Widget> = ok(s.load(&Uuid::now_v7()).await);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            })
        })
        .collect();
    for w in warm {
        w.await.expect("warm");
    }
    let before = proxy.connections();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut s = store.query_session();
                barrier.wait().await;
                let found: Option<Gadget> = ok(s.load(&Uuid::now_v7()).await);
                assert!(found.is_none());
            })
        })
        .collect();
    for r in racers {
        r.await.expect("racer");
    }
    let opened = proxy.connections() - before;
    assert_eq!(opened, 1, "{opened} connections opened for one first use");
}

mod first_use {
    use super::common::{builder, ok};
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct Counted {}

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    pub struct Counter {
        pub id: Uuid,
        pub version: i64,
        pub count: i64,
    }

    #[marten::apply]
    impl Counter {
        fn apply(&mut self, _e: &Counted) {
            self.count += 1;
        }
    }

    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[concurrency(optimistic)]
    pub struct Ledger {
        pub id: Uuid,
        pub total: i64,
    }

    /// Issue #12 defect 2: the first use of a document type inside a save whose inline
    /// projection already opened the transaction. The type's schema work runs on a
    /// connection of its own, so the save's transaction stays whole: rejected, it writes
    /// nothing (before, the schema check committed the locked read's transaction and the
    /// append and projection committed although the save was rejected).
    #[tokio::test]
    async fn a_rejected_save_that_first_uses_a_type_writes_nothing() {
        let (schema, b) = builder("schema_first_use");
        let store = ok(b
            .aggregate_cache(0)
            .projection::<Counter>(Lifecycle::Inline)
            .build()
            .await);
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(stream, [Counted {}]));
        ok(s.save_changes().await);
        // The ledger's table exists (another store made it) but this store never used it.
        let other = ok(marten::DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .document::<Ledger>()
            .build()
            .await);
        let ledger = Uuid::now_v7();
        let mut o = other.lightweight_session();
        ok(o.store(Ledger {
            id: ledger,
            total: 1,
        }));
        ok(o.save_changes().await);

        let mut s = store.lightweight_session();
        ok(s.events().append(stream, [Counted {}]));
        ok(s.store_with_version(
            Ledger {
                id: ledger,
                total: 2,
            },
            Uuid::now_v7(),
        ));
        let err = s.save_changes().await.expect_err("a stale version");
        assert!(!err.rejections().is_empty(), "{err:?}");

        let raw = schema.raw_client().await;
        let version: i64 = raw
            .query_one("SELECT version FROM mt_streams WHERE id = $1", &[&stream])
            .await
            .expect("stream")
            .get(0);
        assert_eq!(version, 1, "the rejected save's append was committed");
        let counter: Option<Counter> = ok(store.query_session().load(&stream).await);
        assert_eq!(counter.map(|c| c.count), Some(1));
        let stored: Option<Ledger> = ok(other.query_session().load(&ledger).await);
        assert_eq!(stored.map(|l| l.total), Some(1));
        // Nothing is left open: the next save of this store commits.
        let mut s = store.lightweight_session();
        ok(s.events().append(stream, [Counted {}]));
        ok(s.save_changes().await);
        let counter: Option<Counter> = ok(store.query_session().load(&stream).await);
        assert_eq!(counter.map(|c| c.count), Some(2));
    }
}

/// An event written to check the horizon with.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    n: i64,
}

/// Events whose transaction ids are past the server's counter (what a dump restored into
/// a new cluster leaves: its counter starts again low) are refused when the event store
/// is built on them, naming the schema and the ids; read on, the global order and the
/// daemon's positions would skip every new event.
#[tokio::test]
async fn events_written_by_another_cluster_are_refused_with_the_ids() {
    let (schema, b) = builder("schema_xid_restored");
    let store = ok(b.event::<Noted>().build().await);
    let mut s = store.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), [Noted { n: 1 }]));
    ok(s.save_changes().await);
    drop((s, store));
    schema
        .raw_client()
        .await
        .batch_execute(
            "UPDATE mt_events SET tx_id = \
             (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8",
        )
        .await
        .expect("move the ids past the counter");
    let built = common::builder_on(&schema).event::<Noted>().build().await;
    match built {
        Err(marten::Error::CorruptData { owner, detail, .. }) => {
            assert!(owner.contains(schema.name()), "{owner}");
            assert!(detail.contains("another cluster"), "{detail}");
        }
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("a store was built on events of another cluster"),
    }
    // Ids below the counter again: the store builds and reads its event.
    schema
        .raw_client()
        .await
        .batch_execute("UPDATE mt_events SET tx_id = '3'::xid8")
        .await
        .expect("move the ids back");
    let store = ok(common::builder_on(&schema).event::<Noted>().build().await);
    let page = ok(store
        .lightweight_session()
        .events()
        .read_all(Position::START, 10)
        .await);
    assert_eq!(page.events.len(), 1);
}
