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

/// A login role of a test's own: on drop (even when the test failed) its sessions are
/// ended, the schemas named in `schemas` dropped, and the role dropped with everything
/// it owns and every privilege granted to it.
struct TestRole {
    name: String,
    url: String,
    schemas: Vec<String>,
}

impl TestRole {
    /// Creates a login role (no other attribute) named after `schema`.
    async fn create(schema: &marten_testing::TestSchema, admin: &tokio_postgres::Client) -> Self {
        let name = format!("{}_role", schema.name());
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .expect("create the role");
        TestRole {
            name,
            url: schema.url().to_owned(),
            schemas: vec![schema.name().to_owned()],
        }
    }

    /// The server's connection settings, logging in as this role.
    fn config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = match self.url.parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url: {e}"),
        };
        config.user(&self.name);
        config
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let role = self.name.clone();
        let url = self.url.clone();
        let mut sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'; \
             SET lock_timeout = '10s';"
        );
        for schema in &self.schemas {
            sql.push_str(&format!(" DROP SCHEMA IF EXISTS {schema} CASCADE;"));
        }
        sql.push_str(&format!(
            " DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"
        ));
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let handle = tokio::spawn(conn);
                    if let Err(e) = client.batch_execute(&sql).await {
                        eprintln!("dropping the test role {role} failed: {e}");
                    }
                    drop(client);
                    let _ = handle.await;
                }
            });
        })
        .join();
    }
}

/// Whether `role` may create schemas in the current database (PostgreSQL grants it to
/// the database's owner only, unless `PUBLIC` was granted it).
async fn may_create_in_database(admin: &tokio_postgres::Client, role: &str) -> bool {
    admin
        .query_one(
            "SELECT has_database_privilege($1, current_database(), 'CREATE')",
            &[&role],
        )
        .await
        .expect("database privilege")
        .get(0)
}

/// A role that owns its schema but may not create schemas in the database (the default
/// for a role that does not own the database) builds a store on it in every mode that
/// creates: what exists (the schema) is not created again, so no database privilege is
/// needed.
#[tokio::test]
async fn a_role_owning_its_schema_needs_no_create_on_the_database() {
    let first = marten_testing::TestSchema::new("schema_owner_role");
    let second = marten_testing::TestSchema::new("schema_owner_role_create_only");
    let admin = first.raw_client().await;
    let mut role = TestRole::create(&first, &admin).await;
    role.schemas.push(second.name().to_owned());
    if may_create_in_database(&admin, &role.name).await {
        eprintln!("note: every role may create schemas in this database; the test proves less");
    }
    for (schema, mode) in [
        (&first, AutoCreate::CreateOrUpdate),
        (&second, AutoCreate::CreateOnly),
    ] {
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {} AUTHORIZATION {}",
                schema.name(),
                role.name
            ))
            .await
            .expect("create the role's schema");
        let store = DocumentStore::builder()
            .config(role.config())
            .schema(schema.name())
            .pool_size(2)
            .auto_create(mode)
            .document::<v1::Widget>()
            .build()
            .await;
        let store = match store {
            Ok(store) => store,
            Err(e) => panic!("{mode:?}: {e} ({e:?})"),
        };
        let created = columns(schema, "mt_doc_widget").await;
        assert!(
            created.iter().any(|c| c == "id") && created.iter().any(|c| c == "data"),
            "{mode:?}: {created:?}"
        );
        let mut session = store.lightweight_session();
        let id = ok(session.store(v1::Widget {
            id: Uuid::now_v7(),
            name: "owned".into(),
        }));
        ok(session.save_changes().await);
        let loaded = ok(store.query_session().load::<v1::Widget>(&id).await);
        assert_eq!(loaded.map(|w| w.name), Some("owned".to_owned()), "{mode:?}");
        drop(store);
    }
}

/// A schema a DBA created with the store's script (the guard function owned by the
/// DBA) serves a store whose role may create in the schema (and in the database) but
/// owns neither the schema nor the function: the build creates the type's table and
/// leaves the function, which it may not replace, as it is.
#[tokio::test]
async fn a_guard_function_a_dba_created_is_kept() {
    let schema = marten_testing::TestSchema::new("schema_dba_guard");
    let admin = schema.raw_client().await;
    let role = TestRole::create(&schema, &admin).await;
    let dba: String = admin
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("current user")
        .get(0);
    let reviewer = ok(common::builder_on(&schema)
        .auto_create(AutoCreate::None)
        .apply_schema_at_build(false)
        .build()
        .await);
    admin
        .batch_execute(&reviewer.schema_sql())
        .await
        .expect("the DBA runs the schema script");
    drop(reviewer);
    // The role may create in the schema, and even schemas in the database: what stops
    // it is only the function's owner.
    let db = current_database(&admin).await;
    admin
        .batch_execute(&format!(
            "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}; \
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {r}; \
             GRANT CREATE ON DATABASE {db} TO {r}",
            s = schema.name(),
            r = role.name,
        ))
        .await
        .expect("grant the role");
    let owner = || async {
        let row = admin
            .query_one(
                "SELECT p.proowner::regrole::text FROM pg_proc p \
                 JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname = 'mt_assert_no_rejections'",
                &[&schema.name()],
            )
            .await
            .expect("the guard function");
        row.get::<_, String>(0)
    };
    for mode in [AutoCreate::CreateOnly, AutoCreate::CreateOrUpdate] {
        let store = DocumentStore::builder()
            .config(role.config())
            .schema(schema.name())
            .pool_size(2)
            .auto_create(mode)
            .document::<v1::Widget>()
            .build()
            .await;
        let store = match store {
            Ok(store) => store,
            Err(e) => panic!("{mode:?}: {e} ({e:?})"),
        };
        assert_eq!(owner().await, dba, "{mode:?}");
        let mut session = store.lightweight_session();
        let id = ok(session.store(v1::Widget {
            id: Uuid::now_v7(),
            name: "granted".into(),
        }));
        ok(session.save_changes().await);
        let loaded = ok(store.query_session().load::<v1::Widget>(&id).await);
        assert_eq!(
            loaded.map(|w| w.name),
            Some("granted".to_owned()),
            "{mode:?}"
        );
        drop(store);
    }
}

/// The name of the database `client` is connected to.
async fn current_database(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("current database")
        .get(0)
}

/// `pg_try_advisory_lock` of a schema's migration lock key; released at once when taken.
async fn migration_lock_is_free(client: &tokio_postgres::Client, schema: &str) -> bool {
    let taken: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema],
        )
        .await
        .expect("try the migration lock")
        .get(0);
    if taken {
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended('marten:schema:' || $1::text, 0))",
                &[&schema],
            )
            .await
            .expect("release the migration lock");
    }
    taken
}

/// A concurrent patch (whose statements cannot run in one transaction) runs under the
/// schema's migration lock too, held for its connection's session: while another holds
/// the lock, the patch waits at most the request timeout, fails with
/// `LockNotAvailable` naming the schema and runs nothing; a patch whose statement fails
/// releases the lock; once the lock is free the patch runs, and releases it.
#[tokio::test]
async fn a_concurrent_patch_waits_for_the_migration_lock() {
    use std::time::{Duration, Instant};
    let (schema, b) = builder("schema_patch_lock");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(500)))
        .auto_create(AutoCreate::None)
        .apply_schema_at_build(false)
        .document::<v1::Widget>()
        .build()
        .await);
    let patch = ok(store
        .schema_patch(marten::PatchOptions::new().concurrently(true))
        .await);
    assert!(patch.is_concurrent() && !patch.is_empty(), "{patch}");
    let holder = schema.raw_client().await;
    let schema_exists = || async {
        holder
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema.name()],
            )
            .await
            .expect("schema exists")
            .get::<_, bool>(0)
    };
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema.name()],
        )
        .await
        .expect("take the migration lock");
    let started = Instant::now();
    let applied = tokio::time::timeout(Duration::from_secs(10), store.apply_schema_patch(&patch))
        .await
        .expect("the patch waited for the lock beyond its timeout");
    match applied {
        Err(Error::LockNotAvailable(source)) if source.context.contains(schema.name()) => {}
        Err(e) => panic!("wrong error {e} ({e:?})"),
        Ok(()) => panic!("applied a concurrent patch without the migration lock"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!schema_exists().await, "a statement ran without the lock");
    holder
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema.name()],
        )
        .await
        .expect("release the migration lock");

    // A guard function of another return type makes the patch's `CREATE OR REPLACE`
    // fail: the lock is released all the same.
    holder
        .batch_execute(&format!(
            "CREATE SCHEMA {s}; CREATE FUNCTION {s}.mt_assert_no_rejections() RETURNS int \
             LANGUAGE sql AS 'SELECT 1'",
            s = schema.name()
        ))
        .await
        .expect("a conflicting guard function");
    let err = store
        .apply_schema_patch(&patch)
        .await
        .expect_err("the guard function cannot be replaced");
    assert!(matches!(err, Error::Database(_)), "{err} ({err:?})");
    assert!(
        migration_lock_is_free(&holder, schema.name()).await,
        "a failed patch kept the migration lock"
    );
    holder
        .batch_execute(&format!(
            "DROP FUNCTION {}.mt_assert_no_rejections()",
            schema.name()
        ))
        .await
        .expect("drop the conflicting function");

    ok(store.apply_schema_patch(&patch).await);
    assert!(
        migration_lock_is_free(&holder, schema.name()).await,
        "a patch kept the migration lock"
    );
    ok(store.assert_schema().await);
}

/// An amount serde writes as a JSON number: a `numeric(12,2)` column.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
struct Amount(f64);

impl marten::ColumnType for Amount {
    const SQL_TYPE: &'static str = "numeric(12,2)";
}

/// A code of at most 20 characters: a `varchar(20)` column.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
struct Code(String);

impl marten::ColumnType for Code {
    const SQL_TYPE: &'static str = "varchar(20)";
}

/// A count under another spelling of `integer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
struct Count(i32);

impl marten::ColumnType for Count {
    const SQL_TYPE: &'static str = "int";
}

/// A document whose indexed columns are typed in spellings PostgreSQL prints otherwise.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "mt_doc_priced")]
struct Priced {
    id: Uuid,
    #[document(index)]
    amount: Amount,
    #[document(index)]
    code: Code,
    #[document(index)]
    count: Count,
}

/// A column type declared in any spelling (`numeric(12,2)`, `varchar(20)`, `int`) is
/// compared with the column it created as PostgreSQL prints both: no drift after the
/// build; a column of another type (or another modifier) still is.
#[tokio::test]
async fn column_types_in_any_spelling_match_the_columns_they_created() {
    let (schema, b) = builder("schema_type_spellings");
    let store = ok(b.document::<Priced>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Priced {
        id: Uuid::now_v7(),
        amount: Amount(12.5),
        code: Code("A-1".into()),
        count: Count(3),
    }));
    ok(s.save_changes().await);
    ok(store.assert_schema().await);
    let health = store.health().await;
    assert_eq!(health.schema_drift, Some(Vec::new()), "{health:?}");
    assert!(health.is_healthy(), "{health:?}");
    // Checked again at a build in every mode.
    for mode in [
        AutoCreate::CreateOrUpdate,
        AutoCreate::CreateOnly,
        AutoCreate::None,
    ] {
        ok(common::builder_on(&schema)
            .auto_create(mode)
            .document::<Priced>()
            .build()
            .await);
    }

    schema
        .raw_client()
        .await
        .batch_execute(
            "ALTER TABLE mt_doc_priced ALTER COLUMN mt_f_code TYPE varchar(30), \
             ALTER COLUMN mt_f_count TYPE bigint",
        )
        .await
        .expect("change the column types");
    let table = format!("{}.mt_doc_priced", schema.name());
    let changed =
        |column: &str, expected: &str, found: &str| marten::SchemaDifference::ColumnType {
            table: table.clone(),
            column: column.into(),
            expected: expected.into(),
            found: found.into(),
        };
    match store.assert_schema().await {
        Err(Error::SchemaMismatch { differences }) => assert_eq!(
            differences,
            [
                changed(
                    "mt_f_code",
                    "character varying(20)",
                    "character varying(30)"
                ),
                changed("mt_f_count", "integer", "bigint"),
            ]
        ),
        other => panic!("wrong result {other:?}"),
    }
    let health = store.health().await;
    assert_eq!(
        health.schema_drift.as_ref().map(Vec::len),
        Some(2),
        "{health:?}"
    );
}
