//! Pool settings against the harness's PostgreSQL: a caller's pool is the one used, a
//! bounded wait ends in `Error::PoolExhausted`, the after-connect hook runs on every new
//! connection, connections past their maximum lifetime are replaced, a request gets the
//! connection used last, a connection keeps a bounded number of prepared statements, a
//! checkout cancelled while it connects gives its place in the pool back, a closed
//! store's pool refuses checkouts with a typed error and closes its idle connections, and
//! racing checkouts, some cancelled mid-request, keep the pool at its size. A caller's
//! pool configured without timeouts is still waited for boundedly, and a session holding
//! the only connection of a caller's pool can use a document type for the first time
//! (inside a transaction, which keeps that connection, the wait ends in `PoolExhausted`).
//! A connection stalled silently while idle in the pool is found by the check of an idle
//! connection and replaced, far within the request timeout (the checks and a new
//! connection stay within the create timeout), a connection used again within the idle
//! threshold costs no round trip more, and PgBouncer answers the check.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ok;
use marten::deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime,
};
use marten::prelude::*;
use marten_testing::fault::Faults;
use marten_testing::{CountingProxy, FaultProxy, PgBouncer, TestSchema};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Item {
    id: i64,
    name: String,
}

/// The harness's server config with `application_name` set to the schema's name.
fn named_config(schema: &TestSchema) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = match schema.url().parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.application_name(schema.name());
    config
}

/// A caller's pool of at most `size` connections, waiting at most `wait`.
fn caller_pool(config: tokio_postgres::Config, size: usize, wait: Duration) -> Pool {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    match Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .runtime(Runtime::Tokio1)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => panic!("cannot build the pool: {e}"),
    }
}

/// A caller's pool of one connection on `schema` configured without any timeout (and,
/// unless `runtime`, without a runtime to time anything with): deadpool itself would
/// wait for a connection for ever.
fn unbounded_caller_pool(schema: &TestSchema, runtime: bool) -> Pool {
    let mut config = named_config(schema);
    config.options(format!("-c search_path={}", schema.name()));
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut builder = Pool::builder(manager).config(PoolConfig::new(1));
    if runtime {
        builder = builder.runtime(Runtime::Tokio1);
    }
    match builder.build() {
        Ok(pool) => pool,
        Err(e) => panic!("cannot build the pool: {e}"),
    }
}

async fn save_and_load(store: &DocumentStore, id: i64) {
    let item = Item {
        id,
        name: format!("item {id}"),
    };
    let mut s = store.lightweight_session();
    ok(s.store(item.clone()));
    ok(s.save_changes().await);
    // Given back first: on a pool of one connection, the load needs it.
    drop(s);
    let loaded: Option<Item> = ok(store.query_session().load(&id).await);
    assert_eq!(loaded, Some(item));
}

/// The backends connected under `application_name`.
async fn backends(schema: &TestSchema, app: &str) -> Vec<i32> {
    let raw = schema.raw_client().await;
    let rows = match raw
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&app],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => panic!("cannot read pg_stat_activity: {e}"),
    };
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_callers_pool_is_used_and_must_connect_to_the_schema() {
    let schema = TestSchema::new("caller_pool");
    let mut config = named_config(&schema);
    config.options(format!("-c search_path={}", schema.name()));
    let pool = caller_pool(config, 4, Duration::from_secs(10));
    let store = ok(DocumentStore::builder()
        .pool(pool.clone())
        .schema(schema.name())
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    let seen = backends(&schema, schema.name()).await;
    assert!(
        !seen.is_empty(),
        "no connection of the caller's pool is open"
    );
    assert!(pool.status().size >= 1, "{:?}", pool.status());

    // Without the schema on its search_path, the pool is refused at build.
    let plain = caller_pool(named_config(&schema), 1, Duration::from_secs(10));
    let refused = DocumentStore::builder()
        .pool(plain)
        .schema(schema.name())
        .build()
        .await;
    assert!(
        matches!(&refused, Err(Error::Configuration(m)) if m.contains("search_path")),
        "{refused:?}"
    );

    // The pool's settings are the caller's: combining them is refused.
    let combined = DocumentStore::builder()
        .pool(pool)
        .pool_size(3)
        .schema(schema.name())
        .build()
        .await;
    assert!(
        matches!(combined, Err(Error::Configuration(_))),
        "{combined:?}"
    );
}

/// Holds the only connection of `store` and checks that a second session gets
/// `PoolExhausted` after about `wait`.
async fn assert_exhausted_after(store: &DocumentStore, wait: Duration) {
    let mut holder = store.lightweight_session();
    let _: Option<Item> = ok(holder.load(&1).await);
    let started = Instant::now();
    let mut waiter = store.lightweight_session();
    let got: marten::Result<Option<Item>> = waiter.load(&1).await;
    let elapsed = started.elapsed();
    match got {
        Err(Error::PoolExhausted { size: 1, waited_ms }) => {
            assert!(
                u128::from(waited_ms) + 50 >= wait.as_millis(),
                "waited {waited_ms} ms"
            );
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert!(elapsed < wait + Duration::from_secs(2), "{elapsed:?}");
    drop(holder);
    let _: Option<Item> = ok(waiter.load(&1).await);
}

#[tokio::test]
async fn a_wait_for_a_held_connection_ends_in_pool_exhausted() {
    let schema = TestSchema::new("pool_wait");
    let wait = Duration::from_millis(300);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(1)
        .pool_wait_timeout(wait)
        .pool_create_timeout(Duration::from_secs(10))
        .pool_recycle_timeout(Duration::from_secs(5))
        .document::<Item>()
        .build()
        .await);
    assert_exhausted_after(&store, wait).await;

    // The same with a caller's pool: its own wait timeout applies.
    let mut config = named_config(&schema);
    config.options(format!("-c search_path={}", schema.name()));
    let store = ok(DocumentStore::builder()
        .pool(caller_pool(config, 1, wait))
        .schema(schema.name())
        .build()
        .await);
    assert_exhausted_after(&store, wait).await;
}

#[tokio::test]
async fn the_after_connect_hook_runs_on_every_new_connection() {
    let schema = TestSchema::new("after_connect");
    let app = format!("{}_hooked", schema.name());
    let pids = Arc::new(Mutex::new(Vec::<i32>::new()));
    let (hook_app, hook_pids) = (app.clone(), pids.clone());
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(2)
        .after_connect(move |client| {
            let (app, pids) = (hook_app.clone(), hook_pids.clone());
            Box::pin(async move {
                client
                    .batch_execute(&format!("SET application_name = '{app}'"))
                    .await?;
                let pid: i32 = client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get(0);
                if let Ok(mut pids) = pids.lock() {
                    pids.push(pid);
                }
                Ok(())
            })
        })
        .document::<Item>()
        .build()
        .await);
    // build's own connection (schema work) ran the hook too.
    let after_build = pids.lock().map(|p| p.len()).unwrap_or_default();
    assert_eq!(after_build, 1);
    save_and_load(&store, 1).await;
    let hooked = pids.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(hooked.len() >= 2, "{hooked:?}");
    let seen = backends(&schema, &app).await;
    assert!(
        hooked.iter().any(|pid| seen.contains(pid)),
        "pooled connections {hooked:?} should show application_name {app}: {seen:?}"
    );

    // A failing hook fails the request that wanted the connection, typed.
    let failing = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .after_connect(|client| {
            Box::pin(async move { client.batch_execute("SET no_such_setting_x = 1").await })
        })
        .build()
        .await;
    assert!(
        matches!(&failing, Err(e) if e.sqlstate() == Some("42704")),
        "{failing:?}"
    );

    // A hook that never finishes is bounded by the create timeout, on the connections
    // outside the pool too (the build's schema work runs on one).
    let started = Instant::now();
    let stuck = tokio::time::timeout(
        Duration::from_secs(10),
        DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .pool_create_timeout(Duration::from_millis(500))
            .after_connect(|client| {
                Box::pin(async move { client.batch_execute("SELECT pg_sleep(30)").await })
            })
            .build(),
    )
    .await
    .expect("the build waited for the hook beyond the create timeout");
    assert!(matches!(&stuck, Err(Error::Timeout { .. })), "{stuck:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Runs a session on `store` and returns how many connections the hook saw made.
async fn connections_made_after_a_session(store: &DocumentStore, pids: &Mutex<Vec<i32>>) -> usize {
    let mut s = store.lightweight_session();
    let _: Option<Item> = ok(s.load(&1).await);
    drop(s);
    pids.lock().map(|p| p.len()).unwrap_or_default()
}

#[tokio::test]
async fn connections_past_their_lifetime_are_replaced() {
    let schema = TestSchema::new("max_lifetime");
    let pids = Arc::new(Mutex::new(Vec::<i32>::new()));
    let hook_pids = pids.clone();
    let lifetime = Duration::from_millis(400);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(1)
        .connection_max_lifetime(lifetime)
        .after_connect(move |client| {
            let pids = hook_pids.clone();
            Box::pin(async move {
                let pid: i32 = client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get(0);
                if let Ok(mut pids) = pids.lock() {
                    pids.push(pid);
                }
                Ok(())
            })
        })
        .document::<Item>()
        .build()
        .await);
    // One connection for build, one pooled; reused while young.
    let first = connections_made_after_a_session(&store, &pids).await;
    assert_eq!(first, 2);
    assert_eq!(
        connections_made_after_a_session(&store, &pids).await,
        first,
        "a young connection is reused"
    );
    tokio::time::sleep(lifetime + Duration::from_millis(200)).await;
    let made = connections_made_after_a_session(&store, &pids).await;
    assert_eq!(made, first + 1, "an old connection is replaced");
    let all = pids.lock().map(|p| p.clone()).unwrap_or_default();
    let (old, new) = (all[1], all[2]);
    assert_ne!(old, new);
    // The old connection is closed, not just set aside.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backends_with_pid(&schema, old).await {
        assert!(Instant::now() < deadline, "backend {old} still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backends_with_pid(schema: &TestSchema, pid: i32) -> bool {
    let raw = schema.raw_client().await;
    match raw
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
    {
        Ok(row) => row.get::<_, i64>(0) > 0,
        Err(e) => panic!("cannot read pg_stat_activity: {e}"),
    }
}

/// The server process behind the connection a new request gets.
async fn backend_of_next_request(store: &DocumentStore) -> i32 {
    let rows = ok(store.sql_query("SELECT pg_backend_pid()", &[]).await);
    match rows.first() {
        Some(row) => row.get(0),
        None => panic!("no row from pg_backend_pid()"),
    }
}

#[tokio::test]
async fn a_request_gets_the_connection_used_last() {
    let schema = TestSchema::new("pool_lifo");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(4)
        .document::<Item>()
        .build()
        .await);
    // Three connections in the pool: three sessions hold one each at once.
    let mut held = Vec::new();
    for id in 0..3 {
        let mut s = store.lightweight_session();
        let _: Option<Item> = ok(s.load(&id).await);
        held.push(s);
    }
    drop(held);
    // Sequential requests: each gets the connection the one before gave back, never the
    // least recently used one (which would rotate them through all three).
    let first = backend_of_next_request(&store).await;
    for round in 0..6 {
        let pid = backend_of_next_request(&store).await;
        assert_eq!(pid, first, "request {round} went to another connection");
    }
    store.close();
}

/// Named statements one connection keeps prepared (marten-pg's
/// `connection::pool::PER_CONNECTION`).
const PREPARED_PER_CONNECTION: i64 = 2048;

#[tokio::test]
async fn a_connection_keeps_a_bounded_number_of_prepared_statements() {
    let schema = TestSchema::new("pool_prepared");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(1)
        .document::<Item>()
        .build()
        .await);
    // A caller sending ever new texts on one connection: each is prepared as a named
    // statement, and without a bound each would stay prepared on the server.
    let texts = PREPARED_PER_CONNECTION + 150;
    for i in 0..texts {
        let rows = ok(store
            .sql_query(&format!("SELECT $1::bigint + {i}"), &[&1_i64])
            .await);
        let sum: Option<i64> = rows.first().map(|r| r.get(0));
        assert_eq!(sum, Some(1 + i), "text {i}");
    }
    let rows = ok(store
        .sql_query("SELECT count(*) FROM pg_prepared_statements", &[])
        .await);
    let prepared: i64 = match rows.first() {
        Some(row) => row.get(0),
        None => panic!("no row from pg_prepared_statements"),
    };
    assert!(
        prepared <= PREPARED_PER_CONNECTION,
        "{prepared} statements prepared on one connection after {texts} texts"
    );
    // The statements the program keeps using still work after the cache started over.
    save_and_load(&store, 7).await;
    store.close();
}

#[tokio::test]
async fn a_checkout_cancelled_while_connecting_gives_its_place_back() {
    let schema = TestSchema::new("pool_cancel_connect");
    let stall = Arc::new(AtomicBool::new(false));
    let hook_stall = stall.clone();
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(1)
        .pool_wait_timeout(Duration::from_millis(500))
        .pool_create_timeout(Duration::from_secs(30))
        // Every checkout finds its idle connection too old and makes a new one.
        .connection_max_lifetime(Duration::from_millis(1))
        .after_connect(move |client| {
            let stall = hook_stall.clone();
            Box::pin(async move {
                if stall.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                client.batch_execute("SELECT 1").await
            })
        })
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    for round in 0..3 {
        stall.store(true, Ordering::SeqCst);
        // Past the idle connection's lifetime for sure: a load takes less than its
        // millisecond here, so the connection the last one made could still be young.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut s = store.lightweight_session();
        let cut = tokio::time::timeout(Duration::from_millis(150), s.load::<Item>(&1)).await;
        assert!(
            cut.is_err(),
            "round {round}: the load should still be connecting, it ended: {:?}",
            cut.map(|loaded| loaded.map(|item| item.is_some()))
        );
        drop(s);
        stall.store(false, Ordering::SeqCst);
        // The pool's one place is free again: this is not PoolExhausted.
        save_and_load(&store, 10 + round).await;
    }
    store.close();
}

#[tokio::test]
async fn a_closed_store_refuses_checkouts_and_closes_its_idle_connections() {
    let schema = TestSchema::new("pool_closed");
    let app = format!("{}_closing", schema.name());
    let store = ok(DocumentStore::builder()
        .connection_string(url_named(&schema, &app))
        .schema(schema.name())
        .pool_size(2)
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    let mut held = store.lightweight_session();
    let _: Option<Item> = ok(held.load(&1).await);
    store.close();
    // The session that holds a connection keeps it until dropped.
    let _: Option<Item> = ok(held.load(&1).await);
    drop(held);
    let mut late = store.lightweight_session();
    let refused: marten::Result<Option<Item>> = late.load(&1).await;
    match refused {
        Err(Error::Connection(e)) => {
            assert!(e.to_string().contains("pool"), "{e}");
        }
        other => panic!("expected a connection error from a closed pool, got {other:?}"),
    }
    assert_all_closed(&schema, &app).await;
}

/// Waits (at most 5 s) until no backend runs under `application_name` `app`.
async fn assert_all_closed(schema: &TestSchema, app: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = backends(schema, app).await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections still open: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The schema's connection string with `application_name` set to `app`.
fn url_named(schema: &TestSchema, app: &str) -> String {
    let url = schema.url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={app}")
}

/// Racing checkouts, some cancelled mid-request, never leave the pool with more
/// connections out than its size, nor with a place lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_and_cancelled_checkouts_keep_the_pool_at_its_size() {
    const SIZE: usize = 4;
    const TASKS: usize = 16;
    const ROUNDS: usize = 25;
    let schema = TestSchema::new("pool_race");
    let app = format!("{}_race", schema.name());
    let url = schema.url();
    let store = ok(DocumentStore::builder()
        .connection_string(url_named(&schema, &app))
        .schema(schema.name())
        .pool_size(SIZE)
        .pool_wait_timeout(Duration::from_secs(20))
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier, most) = (store.clone(), barrier.clone(), most.clone());
        let (schema_url, app) = (url.to_owned(), app.clone());
        tasks.push(tokio::spawn(async move {
            let (raw, conn) =
                match tokio_postgres::connect(&schema_url, tokio_postgres::NoTls).await {
                    Ok(c) => c,
                    Err(e) => panic!("cannot connect: {e}"),
                };
            tokio::spawn(conn);
            for round in 0..ROUNDS {
                barrier.wait().await;
                let mut s = store.lightweight_session();
                // Every third checkout is cut short: mid-wait, mid-request or just after.
                if (t + round) % 3 == 0 {
                    let cut = Duration::from_micros(((t * 37 + round * 11) % 900) as u64);
                    let _ = tokio::time::timeout(cut, s.load::<Item>(&1)).await;
                } else {
                    let _: Option<Item> = ok(s.load(&1).await);
                }
                drop(s);
                let out: i64 = match raw
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                {
                    Ok(row) => row.get(0),
                    Err(e) => panic!("cannot read pg_stat_activity: {e}"),
                };
                most.fetch_max(out as usize, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("a racer failed: {e}");
        }
    }
    // Closed connections may linger a moment on the server (a cancelled request's backend
    // ends after its cancel request): allow those, never more than the pool plus them.
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= SIZE * 3,
        "{most} connections at once for a pool of {SIZE}"
    );
    // Every place is back: SIZE sessions hold a connection each at once, and one more
    // waits in vain.
    let mut held = Vec::new();
    for id in 0..SIZE {
        let mut s = store.lightweight_session();
        let _: Option<Item> = ok(s.load(&(id as i64)).await);
        held.push(s);
    }
    let mut extra = store.lightweight_session();
    let waited = tokio::time::timeout(Duration::from_millis(300), extra.load::<Item>(&1)).await;
    assert!(
        waited.is_err(),
        "a checkout beyond the pool's size: {waited:?}"
    );
    drop(extra);
    held.pop();
    let mut extra = store.lightweight_session();
    let _: Option<Item> = ok(extra.load(&1).await);
    drop(extra);
    store.close();
    drop(held);
    assert_all_closed(&schema, &app).await;
}

/// A wait for a connection of a caller's pool configured without a wait timeout ends at
/// the store's request timeout, in `PoolExhausted` as a wait on the store's own pool does
/// (with or without a runtime configured on the pool), and never outlasts it.
#[tokio::test]
async fn a_callers_pool_without_timeouts_is_waited_for_boundedly() {
    let schema = TestSchema::new("caller_unbounded");
    let wait = Duration::from_millis(500);
    for runtime in [true, false] {
        let store = ok(DocumentStore::builder()
            .pool(unbounded_caller_pool(&schema, runtime))
            .schema(schema.name())
            .request_timeout(Some(wait))
            .document::<Item>()
            .build()
            .await);
        // Bounded by the test's own timer, so that a wait that never ends fails the test.
        let checked = tokio::time::timeout(
            Duration::from_secs(10),
            assert_exhausted_after(&store, wait),
        );
        if checked.await.is_err() {
            panic!("a wait for the caller's pool (runtime: {runtime}) did not end");
        }
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Memo {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Label {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Badge {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ribbon {
    id: i64,
    text: String,
}

/// A session holding the only connection of a caller's pool (configured without
/// timeouts) uses a document type the builder was not told of: making sure of its table
/// needs a connection besides the session's, and it must not wait for the one the
/// session holds. Loading one unknown type and saving another both work.
#[tokio::test]
async fn a_first_use_in_a_session_holding_the_only_connection_of_a_callers_pool() {
    let schema = TestSchema::new("caller_first_use");
    let store = ok(DocumentStore::builder()
        .pool(unbounded_caller_pool(&schema, false))
        .schema(schema.name())
        .document::<Item>()
        .build()
        .await);
    let using = async {
        let mut s = store.lightweight_session();
        // The session takes the pool's one connection and keeps it.
        let item: Option<Item> = s.load(&1).await?;
        assert_eq!(item, None);
        // First use of Memo: its table is made.
        let memo: Option<Memo> = s.load(&1).await?;
        assert_eq!(memo, None);
        // First use of Label, by a save.
        s.store(Label {
            id: 1,
            text: "first".into(),
        })?;
        s.save_changes().await?;
        // First use of Badge by a query, of Ribbon by a streamed query.
        assert!(s.query::<Badge>().to_list().await?.is_empty());
        let mut ribbons = s.query::<Ribbon>().stream().await?;
        assert!(futures_util::StreamExt::next(&mut ribbons).await.is_none());
        drop(ribbons);
        s.load::<Label>(&1).await
    };
    // Bounded by the test's own timer: without it a session waiting for itself never ends.
    let label = match tokio::time::timeout(Duration::from_secs(20), using).await {
        Ok(loaded) => ok(loaded),
        Err(_) => panic!("a session's first use of a type waited for its own connection"),
    };
    assert_eq!(label.map(|l| l.text).as_deref(), Some("first"));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    text: String,
}

/// A session whose transaction holds the only connection of a caller's pool (an
/// exclusive append locks its stream until the save) cannot give that connection up for
/// the schema work of a first use: the wait for another one ends at the request timeout
/// in `PoolExhausted`, and the session's transaction goes on to commit.
#[tokio::test]
async fn a_first_use_inside_a_sessions_transaction_waits_boundedly() {
    let schema = TestSchema::new("caller_first_use_tx");
    let wait = Duration::from_millis(500);
    let store = ok(DocumentStore::builder()
        .pool(unbounded_caller_pool(&schema, true))
        .schema(schema.name())
        .request_timeout(Some(wait))
        .event::<Noted>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Noted { text: "one".into() }]));
    ok(s.save_changes().await);
    ok(s.events()
        .append_exclusive(stream, [Noted { text: "two".into() }])
        .await);
    let started = Instant::now();
    // Bounded by the test's own timer, so that a wait that never ends fails the test.
    let got = match tokio::time::timeout(Duration::from_secs(10), s.load::<Memo>(&1)).await {
        Ok(got) => got,
        Err(_) => panic!("a first use inside a transaction waited for its own connection"),
    };
    assert!(
        matches!(got, Err(Error::PoolExhausted { size: 1, .. })),
        "{got:?}"
    );
    assert!(
        started.elapsed() < wait + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(stream).await).len(), 2);
}

/// The request timeout of the stores of the idle-check tests: a request written to a
/// dead connection waits this long.
const IDLE_TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A store on `schema` reached through `proxy`, checking connections idle longer than
/// `idle_check` with a round trip that waits at most `check_timeout`.
async fn idle_checked_store(
    schema: &TestSchema,
    proxy_addr: std::net::SocketAddr,
    idle_check: Duration,
    check_timeout: Duration,
    create_timeout: Duration,
) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy_addr))
        .schema(schema.name())
        .pool_size(2)
        .request_timeout(Some(IDLE_TEST_REQUEST_TIMEOUT))
        .pool_idle_check_after(Some(idle_check))
        .pool_recycle_timeout(check_timeout)
        .pool_create_timeout(create_timeout)
        .document::<Item>()
        .build()
        .await)
}

/// Two connections idle in `store`'s pool: two sessions hold one each at once, then give
/// them back.
async fn two_idle_connections(store: &DocumentStore) {
    let mut a = store.lightweight_session();
    let _: Option<Item> = ok(a.load(&1).await);
    let mut b = store.lightweight_session();
    let _: Option<Item> = ok(b.load(&1).await);
    drop((a, b));
}

/// Both pooled connections go silent while idle (the proxy forwards nothing and closes
/// nothing: a partition, a failover, a flow a firewall forgot). Past the idle threshold
/// the next load checks the connection on top, which does not answer; it and the one
/// idle longer are closed (one wait of the check timeout, not one per connection) and a
/// new connection serves the load, long before the request timeout. Without the check
/// the load is written to the dead connection and ends in `Error::Timeout` after the
/// request timeout.
#[tokio::test]
async fn a_connection_stalled_while_idle_is_checked_and_replaced() {
    let schema = TestSchema::new("pool_idle_stalled");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let threshold = Duration::from_millis(300);
    let check = Duration::from_secs(2);
    let store = idle_checked_store(
        &schema,
        proxy.addr(),
        threshold,
        check,
        Duration::from_secs(10),
    )
    .await;
    let item = Item {
        id: 1,
        name: "kept".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.store(item.clone()));
    ok(s.save_changes().await);
    drop(s);
    two_idle_connections(&store).await;
    // Every connection open now goes silent; the ones made later do not.
    let stalled = proxy.connections();
    assert!(stalled.len() >= 2, "{} connections open", stalled.len());
    for c in &stalled {
        c.set(Faults::black_hole());
    }
    let accepted = proxy.accepted();
    tokio::time::sleep(threshold + Duration::from_millis(200)).await;

    let started = Instant::now();
    let loaded = tokio::time::timeout(
        IDLE_TEST_REQUEST_TIMEOUT + Duration::from_secs(10),
        store.query_session().load::<Item>(&1),
    )
    .await
    .expect("the load never ended");
    let elapsed = started.elapsed();
    assert_eq!(ok(loaded), Some(item.clone()));
    assert!(
        elapsed >= check - Duration::from_millis(100),
        "the load did not wait for the check ({elapsed:?})"
    );
    // One check timeout and a new connection: far within the request timeout, and short
    // of a second check's wait.
    assert!(
        elapsed < check * 2 - Duration::from_millis(300),
        "the load took {elapsed:?}"
    );
    assert!(
        proxy.accepted() > accepted,
        "the load ran on a connection made before the stall"
    );

    // The connection idle longer was closed with the one checked: the next two loads at
    // once (so both pooled places are used) find no stalled connection to wait on.
    let started = Instant::now();
    let mut a = store.lightweight_session();
    let mut b = store.lightweight_session();
    let (x, y) = tokio::join!(a.load::<Item>(&1), b.load::<Item>(&1));
    assert_eq!(ok(x), Some(item.clone()));
    assert_eq!(ok(y), Some(item));
    assert!(
        started.elapsed() < check,
        "a stalled connection was used again ({:?})",
        started.elapsed()
    );
    drop((a, b));
    proxy.heal();
    store.close();
}

/// With every path to the server silent (old connections and new ones alike), a
/// checkout still ends within the create timeout: the checks of idle connections and the
/// making of a new one share it. It ends in `Error::Timeout`, before the request timeout.
#[tokio::test]
async fn checks_of_idle_connections_and_a_new_connection_share_the_create_timeout() {
    let schema = TestSchema::new("pool_idle_bounded");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let threshold = Duration::from_millis(300);
    let create = Duration::from_millis(1500);
    let store = idle_checked_store(
        &schema,
        proxy.addr(),
        threshold,
        Duration::from_secs(1),
        create,
    )
    .await;
    two_idle_connections(&store).await;
    proxy.set_global(Faults::black_hole());
    tokio::time::sleep(threshold + Duration::from_millis(200)).await;
    let started = Instant::now();
    let got = tokio::time::timeout(
        IDLE_TEST_REQUEST_TIMEOUT + Duration::from_secs(10),
        store.query_session().load::<Item>(&1),
    )
    .await
    .expect("the load never ended");
    let elapsed = started.elapsed();
    assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
    assert!(
        elapsed >= create - Duration::from_millis(100),
        "ended before the create timeout: {elapsed:?}"
    );
    assert!(
        elapsed < create + Duration::from_millis(700),
        "the checkout outlasted the create timeout: {elapsed:?}"
    );
    proxy.heal();
    // Healed, the store serves again.
    let _: Option<Item> = ok(store.query_session().load(&1).await);
    store.close();
}

/// A connection used again within the idle threshold is handed out without a check: a
/// load costs one round trip, as it did before the check existed. Past the threshold the
/// check costs exactly one more, and the connection is used again right after it.
#[tokio::test]
async fn a_connection_used_within_the_idle_threshold_costs_no_round_trip_more() {
    let schema = TestSchema::new("pool_idle_trips");
    let proxy = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let threshold = Duration::from_millis(1000);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via(&proxy))
        .schema(schema.name())
        .pool_size(1)
        .pool_idle_check_after(Some(threshold))
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    // The build's own connection has closed by now (its goodbye is a flight too).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connections = proxy.connections();
    let load = || async {
        let before = proxy.round_trips();
        let loaded: Option<Item> = ok(store.query_session().load(&1).await);
        assert!(loaded.is_some());
        proxy.round_trips() - before
    };
    for round in 0..5 {
        assert_eq!(
            load().await,
            1,
            "round {round}: a load within the threshold"
        );
    }
    tokio::time::sleep(threshold + Duration::from_millis(300)).await;
    assert_eq!(
        load().await,
        2,
        "past the threshold: the check and the load"
    );
    assert_eq!(load().await, 1, "used again at once: no check");
    assert_eq!(
        proxy.connections(),
        connections,
        "the checked connection was kept"
    );

    // Turned off, a connection idle for any time is handed out as it is.
    let off = ok(DocumentStore::builder()
        .connection_string(schema.url_via(&proxy))
        .schema(schema.name())
        .pool_size(1)
        .pool_idle_check_after(None)
        .document::<Item>()
        .build()
        .await);
    save_and_load(&off, 2).await;
    tokio::time::sleep(threshold + Duration::from_millis(300)).await;
    let before = proxy.round_trips();
    let loaded: Option<Item> = ok(off.query_session().load(&2).await);
    assert!(loaded.is_some());
    assert_eq!(proxy.round_trips() - before, 1, "no check when turned off");
    store.close();
    off.close();
}

/// Behind PgBouncer in transaction mode the check (a `Sync` message) is answered too:
/// with a threshold of zero every reuse is checked, and the pool's one connection passes
/// every time (no new connection is made).
#[tokio::test]
async fn the_idle_check_is_answered_behind_pgbouncer() {
    let schema = TestSchema::new("pool_idle_bouncer");
    let bouncer = PgBouncer::start(2);
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = made.clone();
    let store = ok(DocumentStore::builder()
        .connection_string(bouncer.url())
        .pooler(marten::Pooler::Transaction)
        .direct_url(schema.url())
        .schema(schema.name())
        .pool_size(1)
        .pool_idle_check_after(Some(Duration::ZERO))
        .after_connect(move |client| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { client.batch_execute("SELECT 1").await })
        })
        .document::<Item>()
        .build()
        .await);
    save_and_load(&store, 1).await;
    let made_before = made.load(Ordering::SeqCst);
    for round in 0..5 {
        let loaded: Option<Item> = ok(store.query_session().load(&1).await);
        assert!(loaded.is_some(), "round {round}");
    }
    assert_eq!(
        made.load(Ordering::SeqCst),
        made_before,
        "a checked connection was replaced"
    );
    store.close();
}

/// An event of the test below.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Rang {
    n: i64,
}

/// A store that makes its tables on first use, over a caller's pool of one connection:
/// a session holding that connection (it loaded a document) reads a stream, whose event
/// tables are made on a connection of the same pool: the session sets its own aside first
/// instead of waiting for itself.
#[tokio::test]
async fn a_first_event_read_in_a_session_holding_the_only_connection_of_a_callers_pool() {
    let schema = TestSchema::new("caller_first_event_read");
    let store = ok(DocumentStore::builder()
        .pool(unbounded_caller_pool(&schema, true))
        .schema(schema.name())
        .request_timeout(Some(Duration::from_secs(2)))
        .apply_schema_at_build(false)
        .document::<Item>()
        .event::<Rang>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    let reading = async {
        let mut s = store.lightweight_session();
        let item: Option<Item> = s.load(&1).await?;
        assert_eq!(item, None);
        let events = s.events().fetch_stream(stream).await?;
        assert!(events.is_empty());
        s.events().append(stream, [Rang { n: 1 }])?;
        s.save_changes().await?;
        s.events().fetch_stream(stream).await
    };
    let events = match tokio::time::timeout(Duration::from_secs(20), reading).await {
        Ok(read) => ok(read),
        Err(_) => panic!("a session's first event read waited for its own connection"),
    };
    assert_eq!(events.len(), 1);
}

/// The inline aggregate of the test below: the sum of its stream's `Rang`s.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Peal {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Peal {
    fn create(e: &Rang) -> Self {
        Peal {
            total: e.n,
            ..Peal::default()
        }
    }

    fn apply(&mut self, e: &Rang) {
        self.total += e.n;
    }
}

/// As above, with an inline aggregate: the save that appends plans the projection on the
/// session's connection (its table made first, with the connection set aside), and a
/// fold that starts from the stored aggregate makes its table the same way.
#[tokio::test]
async fn an_inline_aggregates_first_use_in_a_session_holding_the_only_connection_of_a_callers_pool()
{
    for fold_first in [false, true] {
        let schema = TestSchema::new("caller_first_inline");
        let store = ok(DocumentStore::builder()
            .pool(unbounded_caller_pool(&schema, true))
            .schema(schema.name())
            .request_timeout(Some(Duration::from_secs(2)))
            .apply_schema_at_build(false)
            .document::<Item>()
            .projection::<Peal>(Lifecycle::Inline)
            .build()
            .await);
        let stream = Uuid::now_v7();
        let working = async {
            let mut s = store.lightweight_session();
            let item: Option<Item> = s.load(&1).await?;
            assert_eq!(item, None);
            if fold_first {
                assert_eq!(s.events().aggregate_stream::<Peal>(stream).await?, None);
            }
            s.events().append(stream, [Rang { n: 2 }, Rang { n: 3 }])?;
            s.save_changes().await?;
            s.events().aggregate_stream::<Peal>(stream).await
        };
        let peal = match tokio::time::timeout(Duration::from_secs(20), working).await {
            Ok(folded) => ok(folded),
            Err(_) => panic!("an inline aggregate's first use waited for its own connection"),
        };
        assert_eq!(peal.map(|p| p.total), Some(5), "fold first: {fold_first}");
    }
}
