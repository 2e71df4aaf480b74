//! Raw SQL on the store's pool (`sql_query`, `sql_execute`): a call is one statement in
//! a transaction of its own, and the pooled connection it ran on goes back as it came.
//! A statement that begins a transaction is refused with a typed error (it would hold
//! every later statement of that connection uncommitted, to be rolled back when the
//! connection closes); after a statement that leaves session state (a session-level
//! advisory lock, a setting, a temporary table) its connection is closed, so the next
//! request, of any session, does not inherit it.

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::prelude::*;

/// A store of one connection on a fresh schema, and a raw connection beside it.
async fn one_connection(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.pool_size(1).build().await);
    (schema, store)
}

/// The rows of `sql` on a raw connection, as `i64` in the first column.
async fn count(raw: &tokio_postgres::Client, sql: &str) -> i64 {
    match raw.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test]
async fn a_transaction_begun_by_raw_sql_cannot_swallow_an_acknowledged_write() {
    let (schema, store) = one_connection("raw_sql_begin").await;
    let raw = schema.raw_client().await;
    let table = format!("{}.notes", schema.name());
    if let Err(e) = raw
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
    {
        panic!("creating {table}: {e}");
    }

    let begun = store.sql_execute("BEGIN", &[]).await;
    // Acknowledged, on the same (only) connection, after the `BEGIN`.
    let written = ok(store
        .sql_execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
        .await);
    assert_eq!(written, 1);
    store.close();

    // The acknowledged write is there once the store is gone.
    let rows = count(&raw, &format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(
        rows, 1,
        "an acknowledged insert was lost when the store closed"
    );
    assert!(
        matches!(&begun, Err(Error::InvalidInput { field, .. }) if field == "statement BEGIN"),
        "{begun:?}"
    );
}

#[tokio::test]
async fn statements_that_begin_or_end_a_transaction_are_refused_by_name() {
    let (_schema, store) = one_connection("raw_sql_refused").await;
    for (sql, named) in [
        ("/* a comment first */ begin", "BEGIN"),
        ("start transaction isolation level serializable", "START"),
        ("SAVEPOINT a", "SAVEPOINT"),
        ("COMMIT", "COMMIT"),
        ("rollback", "ROLLBACK"),
    ] {
        match store.sql_query(sql, &[]).await {
            Err(Error::InvalidInput { field, .. }) => {
                assert_eq!(field, format!("statement {named}"), "{sql}");
            }
            other => panic!("{sql}: expected InvalidInput, got {other:?}"),
        }
    }
    store.close();
}

#[tokio::test]
async fn a_session_advisory_lock_taken_by_raw_sql_is_not_kept_by_the_pool() {
    let (schema, store) = one_connection("raw_sql_advisory").await;
    let raw = schema.raw_client().await;
    let key: i64 = rand::random();
    ok(store
        .sql_query("SELECT pg_advisory_lock($1)", &[&key])
        .await);
    // The store goes on working on its (one) connection.
    let rows = ok(store.sql_query("SELECT 1", &[]).await);
    assert_eq!(rows.len(), 1);

    // Another connection gets the lock: the statement's connection was closed (which
    // the server notices a moment later), not kept idle in the pool holding it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let taken = match raw
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
        {
            Ok(row) => row.get::<_, bool>(0),
            Err(e) => panic!("pg_try_advisory_lock: {e}"),
        };
        if taken {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the advisory lock taken by raw SQL is still held by the store's pool"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = raw.execute("SELECT pg_advisory_unlock($1)", &[&key]).await {
        panic!("pg_advisory_unlock: {e}");
    }
    store.close();
}

#[tokio::test]
async fn session_state_made_by_raw_sql_does_not_reach_the_next_request() {
    let (_schema, store) = one_connection("raw_sql_session").await;
    let backend = async |store: &DocumentStore| -> i32 {
        let rows = ok(store.sql_query("SELECT pg_backend_pid()", &[]).await);
        rows[0].get(0)
    };
    // Plain statements keep their connection.
    let first = backend(&store).await;
    assert_eq!(backend(&store).await, first);

    ok(store
        .sql_execute("SET application_name = 'raw_sql_leak'", &[])
        .await);
    let rows = ok(store
        .sql_query("SELECT current_setting('application_name')", &[])
        .await);
    assert_ne!(
        rows[0].get::<_, String>(0),
        "raw_sql_leak",
        "SET reached the next request"
    );

    ok(store
        .sql_query("SELECT set_config('statement_timeout', '1234', false)", &[])
        .await);
    let rows = ok(store
        .sql_query("SELECT current_setting('statement_timeout')", &[])
        .await);
    assert_ne!(
        rows[0].get::<_, String>(0),
        "1234ms",
        "set_config reached the next request"
    );

    // An update of pg_settings sets the setting for the session (the view's rule calls
    // set_config): a connection left without durable commits must not be pooled.
    ok(store
        .sql_execute(
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'synchronous_commit'",
            &[],
        )
        .await);
    let rows = ok(store.sql_query("SHOW synchronous_commit", &[]).await);
    assert_eq!(
        rows[0].get::<_, String>(0),
        "on",
        "an update of pg_settings reached the next request"
    );

    ok(store
        .sql_execute("CREATE TEMP TABLE raw_sql_leak (a int)", &[])
        .await);
    let rows = ok(store
        .sql_query("SELECT to_regclass('pg_temp.raw_sql_leak') IS NULL", &[])
        .await);
    assert!(
        rows[0].get::<_, bool>(0),
        "a temporary table reached the next request"
    );
    store.close();
}
