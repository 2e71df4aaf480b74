//! The connection layer's caches of statements: a connection's prepared statements and
//! what becomes of them when a table they read changes shape, and the pool's permits
//! while a discarded connection is being cancelled.

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::prelude::*;
use marten_testing::fault::{FaultProxy, Faults};
use marten_testing::TestSchema;

/// Runs `sql` on a raw connection, panicking with the statement on failure.
async fn raw_exec(raw: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = raw.batch_execute(sql).await {
        panic!("{sql}: {e}");
    }
}

/// Whether `error` is PostgreSQL's refusal to run a prepared statement whose result's
/// shape changed (`0A000`, "cached plan must not change result type").
fn is_changed_result_type(error: &Error) -> bool {
    let text = format!("{error} {error:?}");
    text.contains("0A000") || text.contains("cached plan must not change result type")
}

/// A statement prepared and cached on the store's only connection (`SELECT *` of a
/// table), then a column added to its table by another connection: PostgreSQL refuses
/// to run the cached statement again (`0A000`, "cached plan must not change result
/// type"). The store forgets that connection's statements on that error: the call that
/// met it fails (once), and the next one is prepared again and sees the new column.
#[tokio::test]
async fn a_cached_statement_whose_table_gained_a_column_is_prepared_again() {
    let (schema, b) = builder("stmt_cache_shape");
    let store = ok(b.pool_size(1).build().await);
    let raw = schema.raw_client().await;
    let table = format!("{}.shapes", schema.name());
    raw_exec(
        &raw,
        &format!("CREATE TABLE {table} (id int PRIMARY KEY, a text); INSERT INTO {table} VALUES (1, 'x')"),
    )
    .await;
    let sql = format!("SELECT * FROM {table} WHERE id = $1");
    for _ in 0..2 {
        let rows = ok(store.sql_query(&sql, &[&1i32]).await);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].columns().len(), 2);
    }

    raw_exec(
        &raw,
        &format!("ALTER TABLE {table} ADD COLUMN b int DEFAULT 7"),
    )
    .await;

    let mut failures = 0;
    for call in 0..3 {
        match store.sql_query(&sql, &[&1i32]).await {
            Ok(rows) => {
                assert_eq!(rows.len(), 1, "call {call}");
                assert_eq!(rows[0].columns().len(), 3, "call {call}: the new column");
                let b: i32 = rows[0].get("b");
                assert_eq!(b, 7);
            }
            Err(e) => {
                assert!(is_changed_result_type(&e), "call {call}: {e:?}");
                assert_eq!(
                    call, 0,
                    "only the first call after the change may fail: {e:?}"
                );
                failures += 1;
            }
        }
    }
    assert!(failures <= 1);
    store.close();
}

/// A storm of timed-out requests while the server (and the way to it) is silent: each
/// timed-out request's connection is cancelled, and the cancel request, sent through the
/// same silent way, waits out its timeout (5 s) while the connection stays open. Those
/// connections keep their places in the pool until they close: the requests made
/// meanwhile wait for a place ([`Error::PoolExhausted`]) instead of opening more
/// connections than the pool's size (which, over many stores or nodes, reaches the
/// server's `max_connections` and fails everyone's connections).
#[tokio::test]
async fn connections_being_cancelled_keep_their_places_in_the_pool() {
    let schema = TestSchema::new("pool_cancel_storm");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    // TLS if the server offers it (`prefer`, the default): a cancel request first asks
    // for TLS and waits for the answer, which is what a silent server never gives (a
    // cancel request without TLS is written and done, answered or not).
    let url = schema
        .url_via_addr(proxy.addr())
        .replace("sslmode=disable", "sslmode=prefer");
    let store = ok(DocumentStore::builder()
        .connection_string(url)
        .schema(schema.name())
        .pool_size(2)
        .pool_wait_timeout(Duration::from_millis(300))
        .pool_create_timeout(Duration::from_millis(300))
        .request_timeout(Some(Duration::from_millis(300)))
        .build()
        .await);
    // Both of the pool's connections made (two requests at once).
    let (a, b) = tokio::join!(
        store.sql_query("SELECT pg_sleep(0.05)", &[]),
        store.sql_query("SELECT pg_sleep(0.05)", &[])
    );
    ok(a);
    ok(b);
    let before = proxy.accepted();

    proxy.set_global(Faults::black_hole());
    let (a, b) = tokio::join!(
        store.sql_query("SELECT 1", &[]),
        store.sql_query("SELECT 1", &[])
    );
    for r in [a, b] {
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    }
    // Both connections are being cancelled (their cancel requests get no answer): the
    // requests made meanwhile find the pool full.
    // The cancel requests' tasks run and open their connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for call in 0..3 {
        let r = store.sql_query("SELECT 1", &[]).await;
        assert!(
            matches!(r, Err(Error::PoolExhausted { size: 2, .. })),
            "call {call}: {r:?}"
        );
    }
    assert_eq!(
        proxy.accepted() - before,
        2,
        "only the two cancel requests opened connections while the pool's were closing"
    );

    // The way back: the cancel requests are delivered, the connections close, and the
    // pool makes new ones.
    proxy.heal();
    let started = Instant::now();
    loop {
        match store.sql_query("SELECT 1", &[]).await {
            Ok(rows) => {
                assert_eq!(rows.len(), 1);
                break;
            }
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the pool did not recover: {e:?}"),
        }
    }
    store.close();
}
