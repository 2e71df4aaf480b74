//! A database per tenant (`TenantedStore`): databases the tests create on the local server
//! (and drop afterwards, also when a test fails); the same document and stream ids in two
//! tenants never meet; tenants added at run time through the master table; unknown
//! tenants; the bound on open databases; one build for concurrent first uses; a database
//! that is down fails typed and is tried again later; a first use dropped at any await
//! point leaves nothing behind; a lookup racing an add or remove of the tenant, or an add
//! or remove dropped after its statement, never leaves the tenant's old database in use;
//! concurrent first uses of a tenant share one lookup of the master table (dropped or
//! failed, it neither hangs nor multiplies), and an unknown tenant is looked up once per
//! expiry.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ok;
use marten::prelude::*;
use marten::testing::{database_url, TestSchema};
use marten::{DocumentStoreBuilder, TenantedStore, TenantedStoreBuilder};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::fault::{Direction, Faults, ProxyConnection};
use marten_testing::FaultProxy;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: Uuid,
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Noted {
    text: String,
}

/// Databases of one test on the local server, dropped (`WITH (FORCE)`) on drop.
struct Databases {
    names: Vec<String>,
    server: tokio_postgres::Config,
}

impl Databases {
    /// Creates `n` databases with unique names.
    async fn create(n: usize) -> Databases {
        let server: tokio_postgres::Config = match database_url().parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url: {e}"),
        };
        let mut dbs = Databases {
            names: Vec::new(),
            server,
        };
        let admin = dbs.admin().await;
        for _ in 0..n {
            let name = format!("marten_t_{:016x}", rand::random::<u64>());
            dbs.names.push(name.clone());
            // A database name cannot be a parameter; this one is made here, from hex.
            if let Err(e) = admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
            {
                panic!("cannot create database {name}: {e}");
            }
        }
        dbs
    }

    /// The connection string of database `i`.
    fn url(&self, i: usize) -> String {
        self.url_of(&self.names[i])
    }

    /// The connection string of database `i` (or of the server's own database, `None`)
    /// whose connections are named `app`.
    fn url_named(&self, i: Option<usize>, app: &str) -> String {
        let db = match i {
            Some(i) => self.names[i].as_str(),
            None => self.server.get_dbname().unwrap_or("postgres"),
        };
        format!("{}&application_name={app}", self.url_of(db))
    }

    fn url_of(&self, db: &str) -> String {
        let host = match self.server.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = self.server.get_ports().first().copied().unwrap_or(5432);
        let user = self.server.get_user().unwrap_or("postgres");
        format!("postgres://{user}@{host}:{port}/{db}?sslmode=disable")
    }

    /// A connection to the server's own database (for what is not marten's business).
    async fn admin(&self) -> tokio_postgres::Client {
        let (client, conn) = match self.server.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => panic!("cannot connect: {e}"),
        };
        tokio::spawn(conn);
        client
    }

    /// How many connections database `i` has.
    async fn connections(&self, admin: &tokio_postgres::Client, i: usize) -> i64 {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&self.names[i]],
            )
            .await;
        match row {
            Ok(row) => row.get(0),
            Err(e) => panic!("pg_stat_activity: {e}"),
        }
    }

    /// Waits (at most 5 s) until database `i` has `n` connections, or fails.
    async fn wait_connections(&self, admin: &tokio_postgres::Client, i: usize, n: i64) {
        let started = Instant::now();
        loop {
            let now = self.connections(admin, i).await;
            if now == n {
                return;
            }
            if started.elapsed() > Duration::from_secs(5) {
                panic!("database {i} has {now} connections, expected {n}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let server = self.server.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = server.connect(tokio_postgres::NoTls).await {
                    let handle = tokio::spawn(conn);
                    for name in names {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = client.batch_execute(&sql).await;
                    }
                    drop(client);
                    let _ = handle.await;
                }
            });
        })
        .join();
    }
}

/// A tenanted store whose tenant databases hold their tables in `schema`.
fn tenanted(schema: &TestSchema) -> TenantedStoreBuilder {
    let schema = schema.name().to_owned();
    TenantedStore::builder(move |url| store_builder(url, &schema))
}

fn store_builder(url: &str, schema: &str) -> DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .pool_size(4)
        .pool_create_timeout(Duration::from_secs(3))
        .document::<Note>()
        .event::<Noted>()
}

/// The master database: the test's schema on the server's own database.
fn master(schema: &TestSchema) -> DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
}

fn note(id: Uuid, title: &str) -> Note {
    Note {
        id,
        title: title.into(),
    }
}

#[tokio::test]
async fn the_same_ids_in_two_tenants_never_meet() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_ids");
    let store = ok(tenanted(&schema)
        .tenant("acme", dbs.url(0))
        .tenant("globex", dbs.url(1))
        .build()
        .await);
    let (id, stream) = (Uuid::now_v7(), Uuid::now_v7());
    for tenant in ["acme", "globex"] {
        let mut s = ok(store.lightweight_session_for(tenant).await);
        ok(s.store(note(id, tenant)));
        ok(s.events().start_stream(
            stream,
            [Noted {
                text: format!("{tenant} 1"),
            }],
        ));
        ok(s.save_changes().await);
    }
    let mut s = ok(store.identity_session_for("acme").await);
    ok(s.events().append(
        stream,
        [Noted {
            text: "acme 2".into(),
        }],
    ));
    ok(s.save_changes().await);

    for (tenant, texts) in [
        ("acme", &["acme 1", "acme 2"][..]),
        ("globex", &["globex 1"][..]),
    ] {
        let mut q = ok(store.query_session_for(tenant).await);
        let loaded: Option<Note> = ok(q.load(&id).await);
        assert_eq!(loaded, Some(note(id, tenant)));
        let all = ok(q.query::<Note>().to_list().await);
        assert_eq!(all, [note(id, tenant)]);
        let mut l = ok(store.lightweight_session_for(tenant).await);
        let events = ok(l.events().fetch_stream(stream).await);
        let got: Vec<&str> = events
            .iter()
            .filter_map(|e| e.data_as::<Noted>())
            .map(|n| n.text.as_str())
            .collect();
        assert_eq!(got, texts, "{tenant}");
    }

    let mut d = ok(store.dirty_tracked_session_for("globex").await);
    if let Some(n) = ok(d.load::<Note>(&id).await) {
        n.title = "renamed".into();
    }
    ok(d.save_changes().await);
    let mut q = ok(store.query_session_for("acme").await);
    assert_eq!(ok(q.load::<Note>(&id).await), Some(note(id, "acme")));

    let scoped = ok(store.store_for("globex").await);
    assert_eq!(scoped.tenant().map(TenantId::as_str), Some("globex"));
    assert_eq!(scoped.schema(), schema.name());
    let tenants: Vec<String> = ok(store.tenants().await)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(tenants, ["acme", "globex"]);
    assert_eq!(store.open_databases(), 2);

    match store.lightweight_session_for("initech").await {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "initech"),
        other => panic!("expected UnknownTenant: {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        store.store_for("").await,
        Err(Error::InvalidTenant { .. })
    ));
    store.close();
}

#[tokio::test]
async fn tenants_added_at_run_time_live_in_the_master_table() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_master");
    let store = ok(tenanted(&schema)
        .tenant("static", dbs.url(0))
        .master_database(master(&schema))
        .build()
        .await);
    match store.lightweight_session_for("late").await {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "late"),
        other => panic!("expected UnknownTenant: {:?}", other.map(|_| ())),
    }
    ok(store.add_tenant("late", dbs.url(1)).await);
    ok(store.add_tenant("late", dbs.url(1)).await); // again: harmless
    assert!(matches!(
        store.add_tenant("static", dbs.url(1)).await,
        Err(Error::Configuration(_))
    ));

    // Ahead of time: the schema of every tenant database exists before any session.
    ok(store.apply_all_schemas().await);
    let admin = dbs.admin().await;
    let late_db = {
        let config: tokio_postgres::Config = ok_pg(dbs.url(1).parse());
        let (client, conn) = ok_pg(config.connect(tokio_postgres::NoTls).await);
        tokio::spawn(conn);
        client
    };
    let tables: i64 = ok_pg(
        late_db
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 \
                 AND tablename IN ('mt_doc_note', 'mt_events')",
                &[&schema.name()],
            )
            .await,
    )
    .get(0);
    assert_eq!(tables, 2);
    drop(late_db);

    let id = Uuid::now_v7();
    let mut s = ok(store.lightweight_session_for("late").await);
    ok(s.store(note(id, "late")));
    ok(s.save_changes().await);

    // Another process (a store of its own) finds the tenant in the master table.
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    let mut q = ok(other.query_session_for("late").await);
    assert_eq!(ok(q.load::<Note>(&id).await), Some(note(id, "late")));
    assert!(matches!(
        other.query_session_for("static").await,
        Err(Error::UnknownTenant { .. })
    ));
    let tenants: Vec<String> = ok(store.tenants().await)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(tenants, ["late", "static"]);

    assert!(ok(store.remove_tenant("late").await));
    assert!(!ok(store.remove_tenant("late").await));
    assert!(matches!(
        store.lightweight_session_for("late").await,
        Err(Error::UnknownTenant { .. })
    ));
    assert!(matches!(
        store.remove_tenant("static").await,
        Err(Error::Configuration(_))
    ));
    // The other store resolved the tenant before: it knows it until it reads the table.
    assert!(other.store_for("late").await.is_ok());
    assert!(ok(other.tenants().await).is_empty());
    assert!(matches!(
        other.store_for("late").await,
        Err(Error::UnknownTenant { .. })
    ));
    assert_eq!(other.open_databases(), 0);
    // The removed tenant's store is forgotten: its database has no connection left once
    // the session on it is gone (and the other store, with a pool of its own, is closed).
    other.close();
    drop((q, s));
    dbs.wait_connections(&admin, 1, 0).await;
    store.close();
}

#[tokio::test]
async fn the_open_database_bound_closes_the_least_recently_used() {
    let dbs = Databases::create(3).await;
    let schema = TestSchema::new("tenancy_bound");
    let store = ok(tenanted(&schema)
        .tenant("a", dbs.url(0))
        .tenant("b", dbs.url(1))
        .tenant("c", dbs.url(2))
        .max_open_databases(2)
        .build()
        .await);
    let admin = dbs.admin().await;
    let id = Uuid::now_v7();
    let load = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut s = ok(store.lightweight_session_for(tenant).await);
            let _: Option<Note> = ok(s.load(&id).await);
            s
        }
    };

    drop(load("a").await);
    let mut held_b = load("b").await; // b is in use from here on
    assert_eq!(store.open_databases(), 2);
    drop(load("c").await); // a, least recently used and idle, is closed
    assert_eq!(store.open_databases(), 2);
    dbs.wait_connections(&admin, 0, 0).await;

    let held_a = load("a").await; // c, idle, is closed; b, older but in use, is not
    dbs.wait_connections(&admin, 2, 0).await;
    assert!(dbs.connections(&admin, 1).await >= 1);

    drop(load("c").await); // a and b in use: both stay open, beyond the bound
    assert_eq!(store.open_databases(), 3);
    let again: Option<Note> = ok(held_b.load(&id).await);
    assert_eq!(again, None);
    drop(held_b);
    drop(load("c").await); // the next open closes b, idle now
    assert_eq!(store.open_databases(), 2);
    dbs.wait_connections(&admin, 1, 0).await;
    drop(held_a);
    store.close();
    dbs.wait_connections(&admin, 0, 0).await;
    dbs.wait_connections(&admin, 2, 0).await;
}

#[tokio::test]
async fn concurrent_first_uses_build_one_store() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_once");
    let builds = Arc::new(AtomicUsize::new(0));
    let name = schema.name().to_owned();
    let counted = builds.clone();
    let store = ok(TenantedStore::builder(move |url| {
        counted.fetch_add(1, Ordering::SeqCst);
        store_builder(url, &name)
    })
    .tenant("acme", dbs.url(0))
    .tenant("acme_eu", dbs.url(0)) // same database: same store
    .build()
    .await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let tenant = if i % 2 == 0 { "acme" } else { "acme_eu" };
                let mut s = ok(store.query_session_for(tenant).await);
                ok(s.load::<Note>(&Uuid::now_v7()).await)
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await, Ok(None)));
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(store.open_databases(), 1);
    store.close();
}

#[tokio::test]
async fn a_database_that_is_down_fails_typed_and_is_tried_again() {
    let mut dbs = Databases::create(0).await;
    let schema = TestSchema::new("tenancy_down");
    let missing = format!("marten_t_{:016x}", rand::random::<u64>());
    dbs.names.push(missing.clone()); // dropped at the end once created
    let store = ok(tenanted(&schema)
        .tenant("later", dbs.url(0))
        .tenant(
            "nowhere",
            "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable",
        )
        .build()
        .await);
    match store.lightweight_session_for("nowhere").await {
        Err(Error::Connection(e)) => assert!(e.context.contains("tenant \"nowhere\""), "{e}"),
        other => panic!("expected a connection error: {:?}", other.map(|_| ())),
    }
    match store.lightweight_session_for("later").await {
        Err(Error::Database(e)) => {
            assert_eq!(e.code.as_deref(), Some("3D000"), "{e}");
            assert!(e.context.contains("tenant \"later\""), "{e}");
        }
        other => panic!("expected: database does not exist: {:?}", other.map(|_| ())),
    }
    assert_eq!(store.open_databases(), 0);

    let admin = dbs.admin().await;
    ok_pg(
        admin
            .batch_execute(&format!("CREATE DATABASE {missing}"))
            .await,
    );
    let mut s = ok(store.lightweight_session_for("later").await);
    ok(s.store(note(Uuid::now_v7(), "now")));
    ok(s.save_changes().await);
    assert_eq!(store.open_databases(), 1);
    drop(s);
    store.close();
}

#[tokio::test]
async fn a_first_use_dropped_at_any_await_point_leaves_nothing_behind() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_cancel");
    let app = schema.name().to_owned();
    let store = ok(tenanted(&schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(dbs.url_named(None, &app))
                .schema(schema.name()),
        )
        .build()
        .await);
    ok(store.add_tenant("late", dbs.url_named(Some(0), &app)).await);
    let fresh = ok(tenanted(&schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(dbs.url_named(None, &app))
                .schema(schema.name()),
        )
        .build()
        .await);
    let admin = dbs.admin().await;
    // The lookup, the build and the schema's creation, dropped at every pending poll.
    let run = cancel_at_every_await(
        2_000,
        |_| -> Operation<marten::Result<()>> {
            let fresh = fresh.clone();
            Box::pin(async move {
                let mut s = fresh.lightweight_session_for("late").await?;
                let _: Option<Note> = s.load(&Uuid::now_v7()).await?;
                Ok(())
            })
        },
        |_| {
            let (admin, app) = (&admin, app.as_str());
            async move { assert_clean(admin, app, Duration::from_secs(10)).await }
        },
    )
    .await;
    ok(run.output);
    assert!(run.cancelled > 0);
    assert_eq!(fresh.open_databases(), 1);
    let mut s = ok(fresh.lightweight_session_for("late").await);
    ok(s.store(note(Uuid::now_v7(), "after")));
    ok(s.save_changes().await);
    drop(s);
    fresh.close();
    store.close();
}

#[tokio::test]
async fn a_tenanted_store_needs_tenants_and_valid_ids() {
    let schema = TestSchema::new("tenancy_config");
    assert!(matches!(
        tenanted(&schema).build().await,
        Err(Error::Configuration(_))
    ));
    assert!(matches!(
        tenanted(&schema).tenant("", "postgres://x/y").build().await,
        Err(Error::InvalidTenant { .. })
    ));
    assert!(matches!(
        tenanted(&schema)
            .tenant("a", "postgres://x/y")
            .tenant("a", "postgres://x/z")
            .build()
            .await,
        Err(Error::Configuration(_))
    ));
    let no_master = ok(tenanted(&schema)
        .tenant("a", "postgres://x/y")
        .build()
        .await);
    assert!(matches!(
        no_master.add_tenant("b", "postgres://x/z").await,
        Err(Error::Configuration(_))
    ));
    assert!(matches!(
        tenanted(&schema)
            .tenant("a", "postgres://x:notaport/y")
            .build()
            .await,
        Err(Error::Configuration(_))
    ));
}

#[track_caller]
fn ok_pg<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Counted {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Poisoned {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Counted) {
        self.total += e.n;
    }
    fn apply_poison(&mut self, _e: &Poisoned) -> Result<(), String> {
        Err("poisoned".into())
    }
}

/// A daemon per tenant database: each catches up on its own tenant's events; a poison
/// event that stops one tenant's projection does not hold up the other's; a rebuild of
/// one tenant's projection leaves the other's untouched.
#[tokio::test]
async fn each_tenant_database_runs_its_own_daemon() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_daemons");
    let name = schema.name().to_owned();
    let store = ok(TenantedStore::builder(move |url| {
        store_builder(url, &name).projection::<Tally>(Lifecycle::Async)
    })
    .tenant("acme", dbs.url(0))
    .tenant("globex", dbs.url(1))
    .build()
    .await);
    let stream = Uuid::now_v7();
    for (tenant, n) in [("acme", 1), ("globex", 10)] {
        let mut s = ok(store.lightweight_session_for(tenant).await);
        ok(s.events()
            .start_stream(stream, [Counted { n }, Counted { n }]));
        ok(s.save_changes().await);
    }
    let options = marten::daemon::DaemonOptions {
        poison: marten::daemon::PoisonPolicy::Stop,
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let daemons = ok(store.start_daemons(options.clone()).await);
    assert_eq!(daemons.tenants().count(), 2, "one daemon per database");
    ok(daemons.wait_for_non_stale(Duration::from_secs(20)).await);
    // A timeout past the clock's range is a long wait, not a panic.
    ok(daemons.wait_for_non_stale(Duration::MAX).await);
    let total = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut q = ok(store.query_session_for(tenant).await);
            ok(q.load::<Tally>(&stream).await).map(|t| t.total)
        }
    };
    assert_eq!(
        (total("acme").await, total("globex").await),
        (Some(2), Some(20))
    );

    // acme's projection stops on a poison event; globex's goes on.
    let mut s = ok(store.lightweight_session_for("acme").await);
    ok(s.events().append(stream, [Poisoned {}]));
    ok(s.save_changes().await);
    let mut s = ok(store.lightweight_session_for("globex").await);
    ok(s.events().append(stream, [Counted { n: 5 }]));
    ok(s.save_changes().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while total("globex").await != Some(25) {
        assert!(
            Instant::now() < deadline,
            "globex caught up despite acme's poison"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total("acme").await, Some(2));
    assert!(
        daemons.stop().await.is_err(),
        "acme's runner stopped with the poison"
    );

    // Rebuild globex alone: its document is rebuilt, acme's is left as it was.
    let acme_before = total("acme").await;
    let mut raw = ok(store.lightweight_session_for("globex").await);
    ok(raw.delete::<Tally>(&stream));
    ok(raw.save_changes().await);
    ok(store.rebuild("globex", "Tally").await);
    let daemons = ok(store.start_daemons(options).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while total("globex").await != Some(25) {
        assert!(Instant::now() < deadline, "globex rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total("acme").await, acme_before);
    let _ = daemons.stop().await;
}

/// A tenanted store whose master database (the test's schema on the server's own
/// database) is reached through a fault proxy, with a pool of `pool` connections named
/// after the schema.
async fn proxied_master(schema: &TestSchema, pool: usize) -> (FaultProxy, TenantedStore) {
    proxied_master_expiring(schema, pool, Duration::from_secs(30)).await
}

/// [`proxied_master`] whose cached tenants expire after `expiry`.
async fn proxied_master_expiring(
    schema: &TestSchema,
    pool: usize,
    expiry: Duration,
) -> (FaultProxy, TenantedStore) {
    let proxy = match FaultProxy::start(&schema.host_port()).await {
        Ok(p) => p,
        Err(e) => panic!("cannot start the proxy: {e}"),
    };
    let url = format!(
        "{}&application_name={}",
        schema.url_via_addr(proxy.addr()),
        schema.name()
    );
    let store = ok(tenanted(schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(url)
                .schema(schema.name())
                .pool_size(pool),
        )
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    (proxy, store)
}

/// Runs `use_tenant` (a use of a tenant `store` has not resolved yet) and returns once the
/// server answered its lookup in the master table, the answer held at the proxy until
/// the returned connection is healed. The store's master pool must have one connection,
/// idle, with the lookup prepared on it: the use takes it, and any other master statement
/// meanwhile goes through a new connection, without faults.
async fn held_lookup<T: Send + 'static>(
    proxy: &FaultProxy,
    admin: &tokio_postgres::Client,
    app: &str,
    use_tenant: impl std::future::Future<Output = T> + Send + 'static,
) -> (tokio::task::JoinHandle<T>, ProxyConnection) {
    // The build's own connection (outside the pool) may still be closing.
    let started = Instant::now();
    let conn = loop {
        let open = proxy.connections();
        if let [conn] = open.as_slice() {
            break conn.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the master store has {} connections, expected its one pooled",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The lookup reaches the server at once; its answer waits at the proxy.
    conn.set(Faults::delay(
        Direction::ServerToClient,
        Duration::from_millis(1500),
    ));
    let since: String = ok_pg(admin.query_one("SELECT clock_timestamp()::text", &[]).await).get(0);
    let task = tokio::spawn(use_tenant);
    let started = Instant::now();
    loop {
        let answered: i64 = ok_pg(
            admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND state = 'idle' AND query LIKE 'SELECT connection_string FROM %' \
                     AND query_start > $2::text::timestamptz",
                    &[&app, &since],
                )
                .await,
        )
        .get(0);
        if answered > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lookup never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Held until healed (the delay is still running).
    conn.set(Faults::black_hole());
    assert!(
        !task.is_finished(),
        "the lookup's answer was delivered before it could be held"
    );
    (task, conn)
}

/// How many notes database `i` holds in `schema` (0 if its tables were never made).
async fn notes_in(dbs: &Databases, i: usize, schema: &str) -> i64 {
    let config: tokio_postgres::Config = ok_pg(dbs.url(i).parse());
    let (client, conn) = ok_pg(config.connect(tokio_postgres::NoTls).await);
    tokio::spawn(conn);
    let table = format!("{schema}.mt_doc_note");
    let exists: bool = ok_pg(
        client
            .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
            .await,
    )
    .get(0);
    if !exists {
        return 0;
    }
    // The schema name is the test's own, made of [a-z0-9_].
    ok_pg(
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await,
    )
    .get(0)
}

/// Saves a note for `tenant` through `store`.
async fn save_note_for(store: &TenantedStore, tenant: &str) {
    let mut s = ok(store.lightweight_session_for(tenant).await);
    ok(s.store(note(Uuid::now_v7(), tenant)));
    ok(s.save_changes().await);
}

/// The connection string of `tenant` in the master table, read behind the store's back.
async fn master_row(admin: &tokio_postgres::Client, schema: &str, tenant: &str) -> Option<String> {
    // The schema name is the test's own, made of [a-z0-9_].
    let sql =
        format!("SELECT connection_string FROM {schema}.mt_tenant_databases WHERE tenant_id = $1");
    ok_pg(admin.query_opt(&sql, &[&tenant]).await).map(|r| r.get(0))
}

/// Waits (at most 5 s) until the master table has `expected` for `tenant`.
async fn wait_master_row(
    admin: &tokio_postgres::Client,
    schema: &str,
    tenant: &str,
    expected: Option<&str>,
) {
    let started = Instant::now();
    while master_row(admin, schema, tenant).await.as_deref() != expected {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the master table never got {expected:?} for {tenant}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A lookup that read a tenant's row before `remove_tenant` deleted it, and whose answer
/// arrived after, does not put the removed tenant back: the next use is `UnknownTenant`.
#[tokio::test]
async fn a_lookup_racing_remove_tenant_never_brings_the_tenant_back() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_race_remove");
    let admin = dbs.admin().await;
    // Another process adds acme: the store under test has not resolved it.
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("acme", dbs.url(0)).await);
    let (proxy, store) = proxied_master(&schema, 2).await;
    assert!(matches!(
        store.store_for("nobody").await,
        Err(Error::UnknownTenant { .. })
    ));

    let racing = store.clone();
    let (lookup, held) = held_lookup(&proxy, &admin, schema.name(), async move {
        racing.store_for("acme").await.map(|_| ())
    })
    .await;
    // The lookup read acme's row; acme is removed before its answer arrives.
    assert!(ok(store.remove_tenant("acme").await));
    held.set(Faults::none());
    match lookup.await {
        Ok(r) => ok(r), // it ran before the remove ended: it may use the database
        Err(e) => panic!("{e}"),
    }
    match store.store_for("acme").await {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "acme"),
        other => panic!("a removed tenant is still served: {:?}", other.map(|_| ())),
    }
    store.close();
    other.close();
}

/// A lookup that read a tenant's old connection string before the tenant moved, and whose
/// answer arrived after, does not overwrite the newer entry: the next session writes to
/// the new database. The move: this store's own `add_tenant`, or another process's seen
/// by this store's read of every tenant (`tenants()`, through another connection).
#[tokio::test]
async fn a_lookup_older_than_a_move_never_restores_the_old_database() {
    for seen_by_tenants in [false, true] {
        let dbs = Databases::create(2).await;
        let schema = TestSchema::new(&format!("tenancy_race_{seen_by_tenants}"));
        let admin = dbs.admin().await;
        let other = ok(tenanted(&schema)
            .master_database(master(&schema))
            .build()
            .await);
        ok(other.add_tenant("acme", dbs.url(0)).await);
        let (proxy, store) = proxied_master(&schema, 2).await;
        assert!(matches!(
            store.store_for("nobody").await,
            Err(Error::UnknownTenant { .. })
        ));

        let racing = store.clone();
        let (lookup, held) = held_lookup(&proxy, &admin, schema.name(), async move {
            racing.store_for("acme").await.map(|_| ())
        })
        .await;
        // The lookup read database 0; acme moves to database 1 before its answer arrives.
        if seen_by_tenants {
            ok(other.add_tenant("acme", dbs.url(1)).await);
            assert_eq!(ok(store.tenants().await).len(), 1);
        } else {
            ok(store.add_tenant("acme", dbs.url(1)).await);
        }
        held.set(Faults::none());
        match lookup.await {
            Ok(r) => ok(r),
            Err(e) => panic!("{e}"),
        }
        save_note_for(&store, "acme").await;
        assert_eq!(
            (
                notes_in(&dbs, 0, schema.name()).await,
                notes_in(&dbs, 1, schema.name()).await
            ),
            (0, 1),
            "acme's note went to the database an older lookup read (seen by tenants(): {seen_by_tenants})"
        );
        store.close();
        other.close();
    }
}

/// An add or remove dropped (here: timed out) after its statement committed does not
/// leave this store using the tenant's old database: an add's new database is used, a
/// removed tenant is `UnknownTenant`.
#[tokio::test]
async fn a_cancelled_add_or_remove_never_leaves_the_old_database_cached() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_cancel_change");
    let admin = dbs.admin().await;
    let (proxy, store) = proxied_master(&schema, 1).await;
    // Cached: acme at database 0. The upsert and the delete are prepared on the master
    // pool's one connection, so each is one flight that reaches the server at once.
    ok(store.add_tenant("acme", dbs.url(0)).await);
    ok(store.add_tenant("warm", dbs.url(0)).await);
    assert!(ok(store.remove_tenant("warm").await));
    save_note_for(&store, "acme").await;
    let slow = Faults::delay(Direction::ServerToClient, Duration::from_secs(2));

    // acme moves to database 1; the add is dropped before its answer arrives.
    proxy.set_global(slow.clone());
    let add = tokio::time::timeout(
        Duration::from_millis(300),
        store.add_tenant("acme", dbs.url(1)),
    )
    .await;
    assert!(add.is_err(), "the add was answered despite the delay");
    wait_master_row(&admin, schema.name(), "acme", Some(dbs.url(1).as_str())).await;
    proxy.heal();
    save_note_for(&store, "acme").await;
    assert_eq!(
        (
            notes_in(&dbs, 0, schema.name()).await,
            notes_in(&dbs, 1, schema.name()).await
        ),
        (1, 1),
        "after a cancelled add, acme's note went to its old database"
    );

    // acme is removed; the remove is dropped before its answer arrives.
    assert!(!ok(store.remove_tenant("warm").await)); // the delete, prepared again
    proxy.set_global(slow);
    let remove =
        tokio::time::timeout(Duration::from_millis(300), store.remove_tenant("acme")).await;
    assert!(remove.is_err(), "the remove was answered despite the delay");
    wait_master_row(&admin, schema.name(), "acme", None).await;
    proxy.heal();
    match store.store_for("acme").await {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "acme"),
        other => panic!(
            "after a cancelled remove, acme is still served: {:?}",
            other.map(|_| ())
        ),
    }
    store.close();
}

/// A projection counting `Counted` per stream, run by the daemons of the tests below.
fn daemon_options() -> marten::daemon::DaemonOptions {
    marten::daemon::DaemonOptions {
        poison: marten::daemon::PoisonPolicy::Stop,
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

/// One unreachable tenant database (a closed port) or one that does not exist does not
/// keep the other databases' daemons from starting: they catch up, the failures are
/// listed naming their tenant, and a retry starts the database created meanwhile.
#[tokio::test]
async fn a_daemon_starts_on_every_tenant_database_that_opens() {
    let mut dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_daemons_down");
    let missing = format!("marten_t_{:016x}", rand::random::<u64>());
    dbs.names.push(missing.clone()); // dropped at the end once created
    let name = schema.name().to_owned();
    let store = ok(TenantedStore::builder(move |url| {
        store_builder(url, &name).projection::<Tally>(Lifecycle::Async)
    })
    .tenant("acme", dbs.url(0))
    .tenant("globex", dbs.url(1))
    .tenant("later", dbs.url(2))
    .tenant(
        "nowhere",
        "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable",
    )
    .build()
    .await);
    let stream = Uuid::now_v7();
    for (tenant, n) in [("acme", 1), ("globex", 10)] {
        let mut s = ok(store.lightweight_session_for(tenant).await);
        ok(s.events().start_stream(stream, [Counted { n }]));
        ok(s.save_changes().await);
    }
    let mut daemons = ok(store.start_daemons(daemon_options()).await);
    let mut running: Vec<Vec<String>> = daemons
        .tenants()
        .map(|t| t.iter().map(|t| t.as_str().to_owned()).collect())
        .collect();
    running.sort();
    assert_eq!(running, [vec!["acme"], vec!["globex"]]);
    let mut failed: Vec<(String, String)> = daemons
        .failed()
        .map(|(tenants, e)| {
            let names: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
            (names.join(","), format!("{e:?}"))
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(
        (failed[0].0.as_str(), failed[1].0.as_str()),
        ("later", "nowhere")
    );
    // Debug: the context (which names the tenant) with its quotes escaped.
    assert!(
        failed[0].1.contains(r#"tenant \"later\""#),
        "{}",
        failed[0].1
    );
    assert!(
        failed[1].1.contains(r#"tenant \"nowhere\""#),
        "{}",
        failed[1].1
    );
    ok(daemons.wait_for_non_stale(Duration::from_secs(20)).await);
    let total = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut q = ok(store.query_session_for(tenant).await);
            ok(q.load::<Tally>(&stream).await).map(|t| t.total)
        }
    };
    assert_eq!(
        (total("acme").await, total("globex").await),
        (Some(1), Some(10))
    );

    // later's database is created: a retry starts its daemon; nowhere fails again.
    let admin = dbs.admin().await;
    ok_pg(
        admin
            .batch_execute(&format!("CREATE DATABASE {missing}"))
            .await,
    );
    assert_eq!(daemons.retry_failed().await, 1);
    assert_eq!(daemons.tenants().count(), 3);
    let failed: Vec<Vec<TenantId>> = daemons.failed().map(|(t, _)| t.to_vec()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0].as_str(), "nowhere");
    let mut s = ok(store.lightweight_session_for("later").await);
    ok(s.events().start_stream(stream, [Counted { n: 100 }]));
    ok(s.save_changes().await);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while total("later").await != Some(100) {
        assert!(Instant::now() < deadline, "later's daemon caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(daemons.stop().await);
    store.close();
}

/// An error of opening a tenant's database names the tenant: here a database whose
/// schema was never made, opened by a store that may not make it.
#[tokio::test]
async fn an_error_opening_a_tenant_database_names_the_tenant() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_error_names");
    let name = schema.name().to_owned();
    let store = ok(TenantedStore::builder(move |url| {
        store_builder(url, &name).auto_create(AutoCreate::None)
    })
    .tenant("acme", dbs.url(0))
    .build()
    .await);
    match store.store_for("acme").await {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("tenant \"acme\""), "{text} ({e:?})");
        }
        Ok(_) => panic!("a database without its schema opened with AutoCreate::None"),
    }
    store.close();
}

/// A tenant another process moved to another database is found there once this store's
/// cached entry expired, without a call of `tenants()`.
#[tokio::test]
async fn a_tenant_moved_by_another_process_is_seen_after_the_cache_expiry() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_expiry");
    let expiry = Duration::from_millis(300);
    let mover = ok(tenanted(&schema)
        .master_database(master(&schema))
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    let user = ok(tenanted(&schema)
        .master_database(master(&schema))
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    ok(mover.add_tenant("acme", dbs.url(0)).await);
    save_note_for(&user, "acme").await; // cached at database 0
    ok(mover.add_tenant("acme", dbs.url(1)).await);
    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    save_note_for(&user, "acme").await;
    assert_eq!(
        (
            notes_in(&dbs, 0, schema.name()).await,
            notes_in(&dbs, 1, schema.name()).await
        ),
        (1, 1),
        "the moved tenant's note went to its old database"
    );
    // Removed by the other process: unknown here after the expiry.
    assert!(ok(mover.remove_tenant("acme").await));
    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    match user.store_for("acme").await {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "acme"),
        other => panic!("a removed tenant is still served: {:?}", other.map(|_| ())),
    }
    mover.close();
    user.close();
}

/// Records the delivery id of each event it is handed.
struct Deliveries(Arc<std::sync::Mutex<Vec<String>>>);

impl marten::subscriptions::Subscription for Deliveries {
    fn name(&self) -> &'static str {
        "mailer"
    }

    fn filter(&self) -> marten::subscriptions::EventFilter {
        marten::subscriptions::EventFilter::all().event::<Noted>()
    }

    async fn handle(
        &self,
        batch: &marten::subscriptions::SubscriptionBatch<'_>,
        _tx: &mut marten::subscriptions::SubscriptionTx,
    ) -> Result<(), marten::subscriptions::HandlerError> {
        let mut seen = self
            .0
            .lock()
            .map_err(|_| marten::subscriptions::HandlerError::new("poisoned lock"))?;
        seen.extend(batch.deliveries().map(|(id, _)| id.to_string()));
        Ok(())
    }
}

/// The same subscription runs in every tenant database, each with its own sequence from
/// 1: the delivery ids of their first events differ (they name the tenant), so a consumer
/// deduplicating by them drops neither.
#[tokio::test]
async fn delivery_ids_of_two_tenant_databases_differ() {
    let dbs = Databases::create(2).await;
    let schema = TestSchema::new("tenancy_delivery_ids");
    let name = schema.name().to_owned();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let store = ok(TenantedStore::builder(move |url| {
        store_builder(url, &name).subscription(Deliveries(recorded.clone()))
    })
    .tenant("acme", dbs.url(0))
    .tenant("globex", dbs.url(1))
    .build()
    .await);
    for tenant in ["acme", "globex"] {
        let mut s = ok(store.lightweight_session_for(tenant).await);
        ok(s.events().start_stream(
            Uuid::now_v7(),
            [Noted {
                text: tenant.into(),
            }],
        ));
        ok(s.save_changes().await);
    }
    let daemons = ok(store.start_daemons(daemon_options()).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids = loop {
        let ids = match seen.lock() {
            Ok(ids) => ids.clone(),
            Err(e) => panic!("{e}"),
        };
        if ids.len() >= 2 {
            break ids;
        }
        assert!(Instant::now() < deadline, "both events delivered: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ids.len(), 2, "{ids:?}");
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        2,
        "delivery ids collide across databases: {ids:?}"
    );
    ok(daemons.stop().await);
    store.close();
}

/// While the master table cannot be read, a tenant whose cached entry expired keeps the
/// database read before (a tenant never read fails with the lookup's error, naming it).
#[tokio::test]
async fn an_expired_tenant_keeps_its_database_while_the_master_is_down() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_master_down");
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("acme", dbs.url(0)).await);
    ok(other.add_tenant("globex", dbs.url(0)).await);
    let proxy = match FaultProxy::start(&schema.host_port()).await {
        Ok(p) => p,
        Err(e) => panic!("cannot start the proxy: {e}"),
    };
    let expiry = Duration::from_millis(200);
    let store = ok(tenanted(&schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(schema.url_via_addr(proxy.addr()))
                .schema(schema.name())
                .pool_size(1)
                .pool_create_timeout(Duration::from_secs(2)),
        )
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    save_note_for(&store, "acme").await;
    drop(proxy); // the master database is unreachable from here on
    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    save_note_for(&store, "acme").await;
    assert_eq!(notes_in(&dbs, 0, schema.name()).await, 2);
    match store.store_for("globex").await {
        Err(e) => assert!(format!("{e:?}").contains(r#"tenant \"globex\""#), "{e:?}"),
        Ok(_) => panic!("globex was found without its row"),
    }
    store.close();
    other.close();
}

/// A TCP proxy in front of the server that counts how often `pattern` (a tenant id, as
/// bound in a lookup) goes from the client to the server: the lookups of that tenant.
struct CountingProxy {
    addr: std::net::SocketAddr,
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(upstream: &str, pattern: &'static [u8]) -> CountingProxy {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the proxy: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        // The end of the previous chunk: a pattern split across two reads.
                        let mut tail: Vec<u8> = Vec::new();
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            tail.extend_from_slice(&buf[..n]);
                            let found = tail.windows(pattern.len()).filter(|w| *w == pattern);
                            counted.fetch_add(found.count(), Ordering::SeqCst);
                            let keep = tail.len().min(pattern.len() - 1);
                            tail.drain(..tail.len() - keep);
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        CountingProxy { addr, seen, task }
    }

    /// How often the pattern went to the server so far.
    fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A hot tenant whose cached entry expired is read again by one lookup, not by each of
/// the uses that arrive meanwhile (they are served the entry read before).
#[tokio::test]
async fn an_expired_hot_tenant_is_read_again_by_one_lookup() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_single_flight");
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("hot_tenant", dbs.url(0)).await);
    let proxy = CountingProxy::start(&schema.host_port(), b"hot_tenant").await;
    let expiry = Duration::from_millis(300);
    let store = ok(tenanted(&schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(schema.url_via_addr(proxy.addr))
                .schema(schema.name())
                .pool_size(8),
        )
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    ok(store.store_for("hot_tenant").await);
    assert_eq!(proxy.count(), 1, "the first use reads the row once");
    tokio::time::sleep(expiry + Duration::from_millis(150)).await;
    let before = proxy.count();
    let uses: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.store_for("hot_tenant").await.map(|_| ()) })
        })
        .collect();
    for u in uses {
        match u.await {
            Ok(r) => ok(r),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        proxy.count() - before,
        1,
        "100 uses of an expired tenant read its row more than once"
    );
    store.close();
    other.close();
}

/// When the lookup reading an expired tenant's row again fails, the database read before
/// is not used if this store moved or removed the tenant meanwhile: the use gets the
/// lookup's error (or the new database), never the old one.
#[tokio::test]
async fn a_failed_refresh_never_returns_a_database_this_store_moved_or_removed() {
    for remove in [false, true] {
        let dbs = Databases::create(2).await;
        let schema = TestSchema::new(&format!("tenancy_stale_{remove}"));
        let admin = dbs.admin().await;
        let expiry = Duration::from_millis(300);
        let (proxy, store) = proxied_master_expiring(&schema, 2, expiry).await;
        ok(store.add_tenant("acme", dbs.url(0)).await);
        // The lookup prepared on the master pool's one connection.
        assert!(matches!(
            store.store_for("nobody").await,
            Err(Error::UnknownTenant { .. })
        ));
        tokio::time::sleep(expiry + Duration::from_millis(150)).await;

        let racing = store.clone();
        let (lookup, held) = held_lookup(&proxy, &admin, schema.name(), async move {
            racing.store_for("acme").await
        })
        .await;
        // The use read acme's expired entry (database 0); this store moves or removes
        // acme while its lookup is under way, then the lookup fails.
        if remove {
            assert!(ok(store.remove_tenant("acme").await));
        } else {
            ok(store.add_tenant("acme", dbs.url(1)).await);
        }
        held.set(Faults::cut_after(Direction::ServerToClient, 0));
        match lookup.await {
            Err(e) => panic!("{e}"),
            Ok(Err(_)) => {}
            Ok(Ok(db)) => {
                assert!(
                    !remove,
                    "a failed lookup served a tenant this store removed"
                );
                let mut s = db.lightweight_session();
                ok(s.store(note(Uuid::now_v7(), "acme")));
                ok(s.save_changes().await);
                assert_eq!(
                    (
                        notes_in(&dbs, 0, schema.name()).await,
                        notes_in(&dbs, 1, schema.name()).await
                    ),
                    (0, 1),
                    "a failed lookup served the database acme was moved from"
                );
            }
        }
        store.close();
    }
}

/// A tenanted store whose master database (the test's schema on the server's own
/// database) is reached through `proxy`, with a pool of `pool` connections named after
/// the schema, and whose cached tenants expire after `expiry`.
async fn counted_master(
    schema: &TestSchema,
    proxy: &CountingProxy,
    pool: usize,
    expiry: Duration,
) -> TenantedStore {
    let url = format!(
        "{}&application_name={}",
        schema.url_via_addr(proxy.addr),
        schema.name()
    );
    ok(tenanted(schema)
        .master_database(
            DocumentStore::builder()
                .connection_string(url)
                .schema(schema.name())
                .pool_size(pool),
        )
        .tenant_cache_expiry(expiry)
        .build()
        .await)
}

/// A connection holding the test's master table locked (`ACCESS EXCLUSIVE`) until it
/// commits: every lookup waits for it meanwhile.
async fn lock_master_table(dbs: &Databases, schema: &str) -> tokio_postgres::Client {
    let locker = dbs.admin().await;
    // The schema name is the test's own, made of [a-z0-9_].
    let sql = format!("BEGIN; LOCK TABLE {schema}.mt_tenant_databases IN ACCESS EXCLUSIVE MODE");
    ok_pg(locker.batch_execute(&sql).await);
    locker
}

/// How many lookups of connections named `app` wait for a lock.
async fn waiting_lookups(admin: &tokio_postgres::Client, app: &str) -> i64 {
    ok_pg(
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock' AND query LIKE 'SELECT connection_string FROM %'",
                &[&app],
            )
            .await,
    )
    .get(0)
}

/// Waits (at most 5 s) until a lookup of connections named `app` waits for a lock, then
/// lets the uses that come meanwhile arrive: how many lookups wait then.
async fn lookups_waiting_for_the_lock(admin: &tokio_postgres::Client, app: &str) -> i64 {
    let started = Instant::now();
    while waiting_lookups(admin, app).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no lookup waits for the master table's lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    waiting_lookups(admin, app).await
}

/// Awaits `task` (at most 20 s: a use never hangs).
async fn joined<T>(task: tokio::task::JoinHandle<T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("a use of the tenant hangs"),
    }
}

/// Concurrent first uses of a tenant the store never resolved (a process starting under
/// load) share one lookup: with the master table locked, one lookup waits for it, not one
/// per use (each taking a connection of the master's pool); all get the tenant's
/// database, and the tenant's row is read once.
#[tokio::test]
async fn concurrent_first_uses_of_a_tenant_share_one_lookup() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_first_burst");
    let admin = dbs.admin().await;
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("burst_tenant", dbs.url(0)).await);
    let proxy = CountingProxy::start(&schema.host_port(), b"burst_tenant").await;
    let store = counted_master(&schema, &proxy, 8, Duration::from_secs(30)).await;
    let locker = lock_master_table(&dbs, schema.name()).await;
    let uses: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { save_note_for(&store, "burst_tenant").await })
        })
        .collect();
    assert_eq!(
        lookups_waiting_for_the_lock(&admin, schema.name()).await,
        1,
        "concurrent first uses of one tenant ran a lookup each"
    );
    ok_pg(locker.batch_execute("COMMIT").await);
    for u in uses {
        joined(u).await;
    }
    assert_eq!(proxy.count(), 1, "the tenant's row was read more than once");
    assert_eq!(notes_in(&dbs, 0, schema.name()).await, 20);
    store.close();
    other.close();
}

/// When the use running a tenant's first lookup is dropped (cancelled, timed out), the
/// uses waiting for that lookup do not hang: one of them looks the tenant up instead,
/// and they all get its database.
#[tokio::test]
async fn a_dropped_first_lookup_does_not_hang_the_uses_waiting_for_it() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_first_dropped");
    let admin = dbs.admin().await;
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("dropped_tenant", dbs.url(0)).await);
    let proxy = CountingProxy::start(&schema.host_port(), b"dropped_tenant").await;
    let store = counted_master(&schema, &proxy, 8, Duration::from_secs(30)).await;
    let locker = lock_master_table(&dbs, schema.name()).await;
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.store_for("dropped_tenant").await.map(|_| ()) })
    };
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.store_for("dropped_tenant").await.map(|_| ()) })
        })
        .collect();
    assert_eq!(
        lookups_waiting_for_the_lock(&admin, schema.name()).await,
        1,
        "the uses of one tenant ran a lookup each"
    );
    first.abort();
    assert!(matches!(first.await, Err(e) if e.is_cancelled()));
    ok_pg(locker.batch_execute("COMMIT").await);
    for w in waiting {
        ok(joined(w).await);
    }
    assert!(proxy.count() <= 2, "{} lookups", proxy.count());
    save_note_for(&store, "dropped_tenant").await;
    assert_eq!(notes_in(&dbs, 0, schema.name()).await, 1);
    store.close();
    other.close();
}

/// When a tenant's first lookup fails, the uses that waited for it fail with a copy of
/// its error (the same variant, naming the tenant) instead of each running a lookup; the
/// failure is not kept: the next use looks the tenant up again.
#[tokio::test]
async fn a_failed_first_lookup_fails_its_waiters_with_its_error() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_first_failed");
    let admin = dbs.admin().await;
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    ok(other.add_tenant("failing_tenant", dbs.url(0)).await);
    let proxy = CountingProxy::start(&schema.host_port(), b"failing_tenant").await;
    let store = counted_master(&schema, &proxy, 8, Duration::from_secs(30)).await;
    let locker = lock_master_table(&dbs, schema.name()).await;
    let uses: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.store_for("failing_tenant").await.map(|_| ()) })
        })
        .collect();
    assert_eq!(lookups_waiting_for_the_lock(&admin, schema.name()).await, 1);
    // The one lookup is cancelled by the server.
    let cancelled: i64 = ok_pg(
        admin
            .query_one(
                "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock' \
                 AND query LIKE 'SELECT connection_string FROM %'",
                &[&schema.name()],
            )
            .await,
    )
    .get(0);
    assert_eq!(cancelled, 1);
    for u in uses {
        match joined(u).await {
            Err(Error::Canceled(e)) => {
                assert!(e.context.contains("tenant \"failing_tenant\""), "{e}")
            }
            other => panic!("expected the lookup's cancellation: {other:?}"),
        }
    }
    ok_pg(locker.batch_execute("COMMIT").await);
    ok(store.store_for("failing_tenant").await);
    store.close();
    other.close();
}

/// Uses of a tenant id the table has no row for (made up) cost the master database one
/// lookup per expiry, however many there are, concurrent or one after another; each is
/// `UnknownTenant`. Once the miss expired, the tenant is looked up again.
#[tokio::test]
async fn an_unknown_tenant_is_looked_up_once_per_expiry() {
    let schema = TestSchema::new("tenancy_unknown_cached");
    let proxy = CountingProxy::start(&schema.host_port(), b"made_up_tenant").await;
    let expiry = Duration::from_secs(3);
    let store = counted_master(&schema, &proxy, 8, expiry).await;
    let unknown = |r: marten::Result<()>| match r {
        Err(Error::UnknownTenant { tenant }) => assert_eq!(tenant, "made_up_tenant"),
        other => panic!("expected UnknownTenant: {other:?}"),
    };
    let uses: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.store_for("made_up_tenant").await.map(|_| ()) })
        })
        .collect();
    for u in uses {
        unknown(joined(u).await);
    }
    for _ in 0..50 {
        unknown(store.store_for("made_up_tenant").await.map(|_| ()));
    }
    assert_eq!(
        proxy.count(),
        1,
        "an unknown tenant was looked up at every use"
    );
    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    unknown(store.store_for("made_up_tenant").await.map(|_| ()));
    assert_eq!(proxy.count(), 2, "an expired miss was not looked up again");
    store.close();
}

/// A tenant remembered as unknown is known at once when this store adds it; added by
/// another process, it is seen once the miss expired (within 2 s, whatever the cache
/// expiry), or at once after `tenants()`.
#[tokio::test]
async fn a_missed_tenant_is_known_once_added() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_missed_added");
    // A long cache expiry: a miss lasts 2 s at most whatever it is.
    let expiry = Duration::from_secs(30);
    let store = ok(tenanted(&schema)
        .master_database(master(&schema))
        .tenant_cache_expiry(expiry)
        .build()
        .await);
    let other = ok(tenanted(&schema)
        .master_database(master(&schema))
        .build()
        .await);
    let is_unknown =
        |r: marten::Result<DocumentStore>| matches!(r, Err(Error::UnknownTenant { .. }));
    // Added by this store: at once.
    assert!(is_unknown(store.store_for("mine").await));
    ok(store.add_tenant("mine", dbs.url(0)).await);
    save_note_for(&store, "mine").await;
    // Added by another process: after tenants() ...
    assert!(is_unknown(store.store_for("theirs").await));
    ok(other.add_tenant("theirs", dbs.url(0)).await);
    assert!(
        is_unknown(store.store_for("theirs").await),
        "the miss is kept"
    );
    assert_eq!(ok(store.tenants().await).len(), 2);
    save_note_for(&store, "theirs").await;
    // ... or once the miss expired, within 2 s.
    assert!(is_unknown(store.store_for("later").await));
    ok(other.add_tenant("later", dbs.url(0)).await);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    save_note_for(&store, "later").await;
    assert_eq!(notes_in(&dbs, 0, schema.name()).await, 3);
    store.close();
    other.close();
}

/// A tenant remembered as unknown whose add by this store is dropped (here: timed out)
/// after its statement committed is read from the table at its next use: the miss is
/// forgotten when the add starts, not only when it is answered.
#[tokio::test]
async fn a_dropped_add_of_a_missed_tenant_is_read_from_the_table() {
    let dbs = Databases::create(1).await;
    let schema = TestSchema::new("tenancy_missed_dropped_add");
    let admin = dbs.admin().await;
    let (proxy, store) = proxied_master(&schema, 1).await;
    // The lookup, the upsert and the delete prepared on the master pool's one connection.
    ok(store.add_tenant("warm", dbs.url(0)).await);
    assert!(ok(store.remove_tenant("warm").await));
    assert!(matches!(
        store.store_for("ghost").await,
        Err(Error::UnknownTenant { .. })
    ));
    proxy.set_global(Faults::delay(
        Direction::ServerToClient,
        Duration::from_secs(2),
    ));
    let add = tokio::time::timeout(
        Duration::from_millis(300),
        store.add_tenant("ghost", dbs.url(0)),
    )
    .await;
    assert!(add.is_err(), "the add was answered despite the delay");
    wait_master_row(&admin, schema.name(), "ghost", Some(dbs.url(0).as_str())).await;
    proxy.heal();
    save_note_for(&store, "ghost").await;
    assert_eq!(notes_in(&dbs, 0, schema.name()).await, 1);
    store.close();
}

/// A use that comes after this store removed a tenant, or after `tenants()` saw another
/// process remove it, does not wait for (nor get the row of) a lookup of the tenant that
/// started before: it looks the tenant up itself and finds it unknown.
#[tokio::test]
async fn a_use_after_a_removal_never_joins_an_older_lookup() {
    for seen_by_tenants in [false, true] {
        let dbs = Databases::create(1).await;
        let schema = TestSchema::new(&format!("tenancy_detach_{seen_by_tenants}"));
        let admin = dbs.admin().await;
        let other = ok(tenanted(&schema)
            .master_database(master(&schema))
            .build()
            .await);
        ok(other.add_tenant("acme", dbs.url(0)).await);
        let (proxy, store) = proxied_master(&schema, 2).await;
        assert!(matches!(
            store.store_for("nobody").await,
            Err(Error::UnknownTenant { .. })
        ));
        let racing = store.clone();
        let (lookup, held) = held_lookup(&proxy, &admin, schema.name(), async move {
            racing.store_for("acme").await.map(|_| ())
        })
        .await;
        // The held lookup read acme's row; acme is removed before its answer arrives.
        if seen_by_tenants {
            assert!(ok(other.remove_tenant("acme").await));
            assert!(ok(store.tenants().await).is_empty());
        } else {
            assert!(ok(store.remove_tenant("acme").await));
        }
        match tokio::time::timeout(Duration::from_secs(5), store.store_for("acme")).await {
            Ok(Err(Error::UnknownTenant { tenant })) => assert_eq!(tenant, "acme"),
            Ok(other) => panic!("a removed tenant is served: {:?}", other.map(|_| ())),
            Err(_) => panic!("a use after the removal waits for the older lookup"),
        }
        held.set(Faults::none());
        match lookup.await {
            Ok(r) => ok(r), // it ran before the removal ended: it may use the database
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(
            store.store_for("acme").await,
            Err(Error::UnknownTenant { .. })
        ));
        store.close();
        other.close();
    }
}
