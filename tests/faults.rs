//! Failures a caller can act on: database failures typed by SQLSTATE (conflicts,
//! cancellations, busy locks, connection slots, authentication, lost connections).

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::prelude::*;
use marten::{ConflictKind, Error};
use marten_testing::{PrivateCluster, TestSchema};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tally {
    id: i64,
    count: i64,
}

/// A config for the schema's server with extra server `options` (`-c name=value`).
fn config_with(schema: &TestSchema, options: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = match schema.url().parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.options(options);
    config
}

/// An error's own text does not repeat its source's.
fn assert_display_clean(err: &Error) {
    let shown = err.to_string();
    if let Some(source) = std::error::Error::source(err) {
        let source = source.to_string();
        assert!(
            !shown.contains(&source),
            "{shown:?} repeats its source {source:?}"
        );
        if let Some(inner) = std::error::Error::source(err).and_then(|s| s.source()) {
            assert!(
                !source.contains(&inner.to_string()),
                "{source:?} repeats its source {inner:?}"
            );
        }
    }
}

async fn stored_note(schema: &TestSchema, id: i64) -> Option<String> {
    schema
        .raw_client()
        .await
        .query_opt(
            "SELECT data->>'text' FROM mt_doc_note WHERE id = $1",
            &[&id],
        )
        .await
        .expect("read note")
        .map(|r| r.get(0))
}

async fn save_note(store: &DocumentStore, id: i64, text: &str) -> marten::Result<()> {
    let mut s = store.lightweight_session();
    s.store(Note {
        id,
        text: text.into(),
    })?;
    s.save_changes().await
}

/// A raw connection of the schema holding the row lock of note `id` (in an open
/// transaction) until dropped.
async fn lock_note(schema: &TestSchema, id: i64) -> tokio_postgres::Client {
    let locker = schema.raw_client().await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM mt_doc_note WHERE id = {id} FOR UPDATE"
        ))
        .await
        .expect("lock the row");
    locker
}

#[tokio::test]
async fn statement_timeout_is_canceled() {
    let schema = TestSchema::new("fault_stmt_timeout");
    let store = ok(DocumentStore::builder()
        .config(config_with(&schema, "-c statement_timeout=300"))
        .schema(schema.name())
        .document::<Note>()
        .build()
        .await);
    ok(save_note(&store, 1, "first").await);
    let locker = lock_note(&schema, 1).await;
    let err = save_note(&store, 1, "blocked")
        .await
        .expect_err("times out");
    assert!(matches!(err, Error::Canceled(_)), "{err:?}");
    assert_eq!(err.sqlstate(), Some("57014"));
    assert!(!err.is_retryable());
    assert_display_clean(&err);
    drop(locker);
    ok(save_note(&store, 1, "after").await);
    assert_eq!(stored_note(&schema, 1).await.as_deref(), Some("after"));
}

#[tokio::test]
async fn lock_timeout_is_lock_not_available() {
    let schema = TestSchema::new("fault_lock_timeout");
    let store = ok(DocumentStore::builder()
        .config(config_with(&schema, "-c lock_timeout=100"))
        .schema(schema.name())
        .document::<Note>()
        .build()
        .await);
    ok(save_note(&store, 1, "first").await);
    let locker = lock_note(&schema, 1).await;
    let err = save_note(&store, 1, "blocked").await.expect_err("busy");
    assert!(matches!(err, Error::LockNotAvailable(_)), "{err:?}");
    assert_eq!(err.sqlstate(), Some("55P03"));
    assert!(err.is_retryable());
    assert_display_clean(&err);
    drop(locker);
    ok(save_note(&store, 1, "after").await);
}

#[tokio::test]
async fn deadlock_is_a_retryable_conflict() {
    let (schema, b) = builder("fault_deadlock");
    let store = ok(b.document::<Note>().build().await);
    ok(save_note(&store, 1, "a").await);
    ok(save_note(&store, 2, "b").await);
    // The other transaction locks note 2 and never loses the deadlock (it checks late).
    let other = schema.raw_client().await;
    other
        .batch_execute(
            "SET deadlock_timeout = '20s'; BEGIN; UPDATE mt_doc_note SET data = data WHERE id = 2",
        )
        .await
        .expect("lock note 2");
    // The save locks note 1, then waits for note 2.
    let saver = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.store(Note {
                id: 1,
                text: "a2".into(),
            })?;
            s.store(Tally { id: 1, count: 1 })?;
            s.store(Note {
                id: 2,
                text: "b2".into(),
            })?;
            s.save_changes().await
        })
    };
    // Wait until the save waits for note 2, then close the cycle.
    let watcher = schema.raw_client().await;
    let started = Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%mt_doc_note%' AND pid <> pg_backend_pid() \
                 AND datname = current_database() AND application_name = 'marten'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "save never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closing = tokio::spawn(async move {
        let r = other
            .batch_execute("UPDATE mt_doc_note SET data = data WHERE id = 1")
            .await;
        (other, r)
    });
    let err = saver.await.expect("task").expect_err("deadlock");
    assert!(
        matches!(
            err,
            Error::Conflict {
                kind: ConflictKind::Deadlock,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.sqlstate(), Some("40P01"));
    assert!(err.is_retryable());
    assert_display_clean(&err);
    let (other, r) = closing.await.expect("task");
    r.expect("the other transaction won");
    other.batch_execute("COMMIT").await.expect("commit");
    // Nothing of the save is there (Tally 1 was in the same transaction).
    let tallies: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_tally", &[])
        .await
        .expect("tallies")
        .get(0);
    assert_eq!(tallies, 0);
}

#[tokio::test]
async fn serialization_failure_is_a_retryable_conflict() {
    let schema = TestSchema::new("fault_serialization");
    let store = ok(DocumentStore::builder()
        .config(config_with(
            &schema,
            "-c default_transaction_isolation=serializable",
        ))
        .schema(schema.name())
        .document::<Note>()
        .build()
        .await);
    ok(save_note(&store, 1, "first").await);
    let other = schema.raw_client().await;
    other
        .batch_execute("BEGIN; UPDATE mt_doc_note SET data = data WHERE id = 1")
        .await
        .expect("update");
    // The save takes its snapshot, waits for the row, and finds it changed since.
    let saver = {
        let store = store.clone();
        tokio::spawn(async move { save_note(&store, 1, "second").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.batch_execute("COMMIT").await.expect("commit");
    let err = saver
        .await
        .expect("task")
        .expect_err("serialization failure");
    assert!(
        matches!(
            err,
            Error::Conflict {
                kind: ConflictKind::Serialization,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.sqlstate(), Some("40001"));
    assert!(err.is_retryable());
    assert_display_clean(&err);
    ok(save_note(&store, 1, "retried").await);
}

#[tokio::test]
async fn connection_limit_is_too_many_connections() {
    let schema = TestSchema::new("fault_conn_limit");
    let role = format!("{}_limited", schema.name());
    let admin = schema.raw_client().await;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
        .await
        .expect("create role");
    let mut config = config_with(&schema, "");
    config.user(&role);
    let result = DocumentStore::builder()
        .config(config)
        .schema(schema.name())
        .build()
        .await;
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
    let err = result.expect_err("no slot for the role");
    assert!(matches!(err, Error::TooManyConnections(_)), "{err:?}");
    assert_eq!(err.sqlstate(), Some("53300"));
    assert_display_clean(&err);
}

#[tokio::test]
async fn unknown_role_is_an_authentication_failure() {
    let schema = TestSchema::new("fault_no_role");
    let mut config = config_with(&schema, "");
    config.user(format!("{}_nobody", schema.name()));
    let err = DocumentStore::builder()
        .config(config)
        .schema(schema.name())
        .build()
        .await
        .expect_err("no such role");
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    assert_eq!(err.sqlstate(), Some("28000"));
    assert!(!err.is_retryable());
    assert_display_clean(&err);
}

#[tokio::test]
async fn wrong_password_is_an_authentication_failure() {
    let cluster = match tokio::task::spawn_blocking(PrivateCluster::start).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("cannot start a private cluster: {e}"),
        Err(e) => panic!("{e}"),
    };
    let (admin, conn) = tokio_postgres::connect(cluster.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    admin
        .batch_execute("CREATE ROLE writer LOGIN PASSWORD 'right'")
        .await
        .expect("role");
    cluster
        .set_hba(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("hba");
    let mut config: tokio_postgres::Config = cluster.url().parse().expect("url");
    config.user("writer").password("wrong");
    let err = DocumentStore::builder()
        .config(config.clone())
        .build()
        .await
        .expect_err("wrong password");
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    assert_eq!(err.sqlstate(), Some("28P01"));
    assert!(!err.is_retryable());
    assert_display_clean(&err);
    config.password("right");
    admin
        .batch_execute("GRANT CREATE ON DATABASE postgres TO writer")
        .await
        .expect("grant");
    let store = ok(DocumentStore::builder()
        .config(config)
        .schema("writer_docs")
        .document::<Note>()
        .build()
        .await);
    ok(save_note(&store, 1, "in").await);
}

#[tokio::test]
async fn refused_connection_is_a_connection_error() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let err = DocumentStore::builder()
        .connection_string(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .build()
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_display_clean(&err);
}
