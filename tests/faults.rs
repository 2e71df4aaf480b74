//! Failures a caller can act on: database failures typed by SQLSTATE (conflicts,
//! cancellations, busy locks, connection slots, authentication, lost connections), a
//! save whose COMMIT answer was lost is `OutcomeUnknown` (and all or nothing), and the
//! store recovers from network faults without a restart. Network faults come from a
//! [`FaultProxy`] between the store and the server.

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::prelude::*;
use marten::{ConflictKind, Error};
use marten_testing::fault::{Direction, Faults};
use marten_testing::{FaultProxy, PrivateCluster, TestSchema};
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

/// The error's text with all its sources, one per line.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out
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

async fn count_notes(schema: &TestSchema, ids: &[i64]) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM mt_doc_note WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("count notes")
        .get(0)
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

/// A save that began its own transaction and lost a deadlock wrote nothing: it is sent
/// again and commits once the other transaction is done, nothing written twice.
#[tokio::test]
async fn a_save_that_loses_a_deadlock_is_sent_again() {
    let (schema, b) = common::named_builder("fault_deadlock");
    let store = ok(b.document::<Note>().document::<Tally>().build().await);
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
    wait_for_a_lock_wait(&schema).await;
    // Close the cycle: the save loses the deadlock, the other transaction gets note 1.
    other
        .batch_execute("UPDATE mt_doc_note SET data = data WHERE id = 1")
        .await
        .expect("the other transaction won");
    // Nothing of the save's first attempt is there (Tally 1 was in its transaction).
    let tallies = |raw: tokio_postgres::Client| async move {
        raw.query_one("SELECT count(*) FROM mt_doc_tally WHERE id = 1", &[])
            .await
            .expect("tallies")
            .get::<_, i64>(0)
    };
    assert_eq!(tallies(schema.raw_client().await).await, 0);
    other.batch_execute("COMMIT").await.expect("commit");
    ok(saver.await.expect("task"));
    assert_eq!(stored_note(&schema, 1).await.as_deref(), Some("a2"));
    assert_eq!(stored_note(&schema, 2).await.as_deref(), Some("b2"));
    assert_eq!(tallies(schema.raw_client().await).await, 1);
}

/// Waits until a connection of the test's store waits for a lock.
async fn wait_for_a_lock_wait(schema: &TestSchema) {
    let watcher = schema.raw_client().await;
    let started = Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND application_name = $1",
                &[&schema.name()],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing of the store ever waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session holding exclusive stream locks cannot be sent again transparently (its locks
/// would be gone): two sessions taking two streams' locks in opposite orders deadlock,
/// and the one that loses is told so, typed.
#[tokio::test]
async fn exclusive_locks_in_opposite_orders_deadlock_as_a_typed_conflict() {
    let (_schema, b) = builder("fault_exclusive_deadlock");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_secs(20))
        .event::<Ping>()
        .build()
        .await);
    let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(s1, [Ping {}]));
    ok(s.events().start_stream(s2, [Ping {}]));
    ok(s.save_changes().await);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let racer = |first: Uuid, second: Uuid| {
        let (store, barrier) = (store.clone(), barrier.clone());
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.events().append_exclusive(first, [Ping {}]).await?;
            barrier.wait().await;
            s.events().append_exclusive(second, [Ping {}]).await?;
            s.save_changes().await
        })
    };
    let (a, b) = (racer(s1, s2), racer(s2, s1));
    let results = [a.await.expect("task"), b.await.expect("task")];
    let lost: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(lost.len(), 1, "{results:?}");
    let err = lost[0];
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
    assert_display_clean(err);
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ping {}

/// Under serializable isolation a save that began its own transaction and meets a
/// serialization failure is sent again; a session holding exclusive locks from before is
/// told, typed.
#[tokio::test]
async fn serialization_failures_are_sent_again_or_typed() {
    let schema = TestSchema::new("fault_serialization");
    let store = ok(DocumentStore::builder()
        .config(config_with(
            &schema,
            "-c default_transaction_isolation=serializable",
        ))
        .schema(schema.name())
        .document::<Note>()
        .event::<Ping>()
        .build()
        .await);
    ok(save_note(&store, 1, "first").await);
    let other = schema.raw_client().await;
    other
        .batch_execute("BEGIN; UPDATE mt_doc_note SET data = data WHERE id = 1")
        .await
        .expect("update");
    // The save takes its snapshot, waits for the row, finds it changed since, and is
    // sent again.
    let saver = {
        let store = store.clone();
        tokio::spawn(async move { save_note(&store, 1, "second").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.batch_execute("COMMIT").await.expect("commit");
    ok(saver.await.expect("task"));
    assert_eq!(stored_note(&schema, 1).await.as_deref(), Some("second"));

    // A session whose transaction began with an exclusive lock has its snapshot; the row
    // changes after it; the save cannot be sent again without losing the lock.
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [Ping {}]));
    ok(s.save_changes().await);
    ok(s.events().append_exclusive(stream, [Ping {}]).await);
    other
        .batch_execute("UPDATE mt_doc_note SET data = data WHERE id = 1")
        .await
        .expect("update after the snapshot");
    ok(s.store(Note {
        id: 1,
        text: "third".into(),
    }));
    let err = s.save_changes().await.expect_err("serialization failure");
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
    assert_eq!(stored_note(&schema, 1).await.as_deref(), Some("second"));
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

/// A store on its own schema reached through a fault proxy: one pooled connection, a
/// short request timeout. Both types' tables exist and their statements are prepared on
/// the pooled connection (a first save), so a save is one flight.
async fn proxied(label: &str) -> (TestSchema, FaultProxy, DocumentStore) {
    let schema = TestSchema::new(label);
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy.addr()))
        .schema(schema.name())
        .pool_size(1)
        .pool_wait_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(2)))
        .document::<Note>()
        .document::<Tally>()
        .build()
        .await);
    warm_up(&store).await;
    (schema, proxy, store)
}

/// Faults of the connections open right now (the pooled one; the build's own schema
/// connection may still be closing, it carries nothing more).
fn fault_open_connections(proxy: &FaultProxy, faults: Faults) {
    let open = proxy.connections();
    assert!(!open.is_empty(), "no open connection to fault");
    for c in open {
        c.set(faults.clone());
    }
}

/// One save of a transaction (two document types): `ids` notes of 2 KB each, and tally 1.
async fn save_flight(store: &DocumentStore, ids: &[i64]) -> marten::Result<()> {
    let mut s = store.lightweight_session();
    for id in ids {
        s.store(Note {
            id: *id,
            text: "x".repeat(2048),
        })?;
    }
    s.store(Tally {
        id: ids.first().copied().unwrap_or(0),
        count: 1,
    })?;
    s.save_changes().await
}

/// Prepares, on the pooled connection, every statement the tests send: a save is then
/// one flight with nothing before it.
async fn warm_up(store: &DocumentStore) {
    ok(save_flight(store, &[-1, -2]).await);
    ok(save_note(store, -3, "warm").await);
    let mut s = store.lightweight_session();
    let _: Option<Note> = ok(s.load(&-3).await);
}

/// After a fault the same store saves and reads again, on healthy connections only.
async fn assert_recovers(store: &DocumentStore, schema: &TestSchema, first_id: i64) {
    warm_up(store).await;
    for i in 0..3 {
        let id = first_id + i;
        ok(save_note(store, id, "recovered").await);
        let mut s = store.lightweight_session();
        let back: Option<Note> = ok(s.load(&id).await);
        assert_eq!(back.map(|n| n.text).as_deref(), Some("recovered"));
        assert_eq!(stored_note(schema, id).await.as_deref(), Some("recovered"));
    }
}

#[tokio::test]
async fn cut_before_commit_is_a_connection_error_and_writes_nothing() {
    let (schema, proxy, store) = proxied("fault_cut_c2s").await;
    let ids: Vec<i64> = (100..150).collect();

    // The server reads the start of the flight (BEGIN, the transaction's id) and part
    // of the first write; COMMIT never reaches it. The client learns the transaction's
    // id, asks what became of it, and is told: rolled back.
    fault_open_connections(&proxy, Faults::cut_after(Direction::ClientToServer, 2000));
    let err = save_flight(&store, &ids).await.expect_err("cut");
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    assert_display_clean(&err);
    assert_eq!(count_notes(&schema, &ids).await, 0, "nothing was written");
    assert_recovers(&store, &schema, 1000).await;

    // Cut inside the very first message: no answer at all came back, so the client
    // cannot prove nothing was written and says so; nothing was.
    fault_open_connections(&proxy, Faults::cut_after(Direction::ClientToServer, 10));
    let err = save_flight(&store, &ids).await.expect_err("cut");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(count_notes(&schema, &ids).await, 0, "nothing was written");
    assert_recovers(&store, &schema, 2000).await;
}

/// The server's answers are delayed, then cut before their first byte.
fn answer_lost() -> Faults {
    let mut faults = Faults::delay(Direction::ServerToClient, Duration::from_millis(300));
    faults.cut_after[1] = Some(0);
    faults
}

/// An append whose answer was lost is sent again with the same event ids: the second
/// attempt is refused as a duplicate, naming the ids, so the caller learns the first one
/// committed and nothing is appended twice. A duplicate id in a fresh save is refused the
/// same way and writes nothing.
#[tokio::test]
async fn an_append_sent_again_after_an_unknown_outcome_is_a_typed_duplicate() {
    let (_schema, proxy, store) = proxied("fault_idempotent").await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [Ping {}]));
    ok(s.save_changes().await);
    drop(s);
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let append = |store: DocumentStore| async move {
        let mut s = store.lightweight_session();
        s.events()
            .append(stream, ids.map(|id| PendingEvent::new(Ping {}).with_id(id)))?;
        s.save_changes().await
    };
    // Prepare the append's statement on the pooled connection first, so the faulted
    // save is one flight.
    let mut s = store.lightweight_session();
    ok(s.events().append(
        stream,
        [
            PendingEvent::new(Ping {}).with_id(Uuid::now_v7()),
            PendingEvent::new(Ping {}).with_id(Uuid::now_v7()),
        ],
    ));
    ok(s.save_changes().await);
    drop(s);
    fault_open_connections(&proxy, answer_lost());
    let err = append(store.clone()).await.expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    proxy.heal();
    let again = append(store.clone()).await.expect_err("a duplicate");
    match &again {
        Error::DuplicateEvent { ids: found } => {
            let mut want = ids.to_vec();
            want.sort();
            assert_eq!(found, &want);
        }
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_display_clean(&again);
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(stream).await);
    assert_eq!(events.len(), 5, "appended once");

    // One new id and one old id in a save with a document: nothing of it is written.
    let fresh = Uuid::now_v7();
    ok(s.store(Note {
        id: 77,
        text: "with a duplicate".into(),
    }));
    ok(s.events().append(
        stream,
        [
            PendingEvent::new(Ping {}).with_id(fresh),
            PendingEvent::new(Ping {}).with_id(ids[0]),
        ],
    ));
    match s.save_changes().await {
        Err(Error::DuplicateEvent { ids: found }) => assert_eq!(found, vec![ids[0]]),
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(ok(s.events().fetch_stream(stream).await).len(), 5);
    let note: Option<Note> = ok(s.load(&77).await);
    assert!(note.is_none());
}

/// How a save whose outcome was unknown is sent again: each append that asserts
/// something of its stream (or boundary) before its events are inserted.
#[derive(Clone, Copy, Debug)]
enum Asserting {
    /// `append_expected` with the version the caller saw before.
    Expected,
    /// `start_stream` of a new stream.
    Start,
    /// `append_optimistic`: the version read when queued.
    Optimistic,
    /// A `fetch_for_writing` handle's append: the version read by the fetch.
    Handle,
    /// An append through a `fetch_for_writing_by_tags` boundary: the tag versions read.
    Boundary,
}

impl Asserting {
    /// Whether the append reads before it is queued: the save sent again is then the
    /// one decided on that read, made before the first attempt (as by a second delivery
    /// of one command), else the read would see the first attempt and assert its state.
    fn reads(self) -> bool {
        matches!(
            self,
            Asserting::Optimistic | Asserting::Handle | Asserting::Boundary
        )
    }

    /// Whether `stream` is started before the saves (everything but a start, and an
    /// append through a boundary, which creates its stream).
    fn seeded(self) -> bool {
        !matches!(self, Asserting::Start | Asserting::Boundary)
    }

    /// Queues this kind of append of events with `ids` to `stream` (seeded streams are
    /// at version 1 when decided on), reading first if the kind does. `topic` is the
    /// boundary's tag (and its events').
    async fn queue(
        self,
        s: &mut LightweightSession,
        stream: Uuid,
        ids: &[Uuid],
        topic: &str,
    ) -> marten::Result<()> {
        let pings = || ids.iter().map(|id| PendingEvent::new(Ping {}).with_id(*id));
        match self {
            Asserting::Expected => s.events().append_expected(stream, 1, pings()),
            Asserting::Start => s.events().start_stream(stream, pings()),
            Asserting::Optimistic => s.events().append_optimistic(stream, pings()).await,
            Asserting::Handle => {
                let mut handle = s.events().fetch_for_writing::<Pings>(stream).await?;
                assert_eq!(handle.version(), 1);
                handle.append(pings())
            }
            Asserting::Boundary => {
                let query = TagQuery::new().tag_named("topic", topic);
                let mut boundary = s
                    .events()
                    .fetch_for_writing_by_tags::<TopicSeen>(query)
                    .await?;
                let events = ids.iter().map(|id| {
                    PendingEvent::new(Topical {
                        topic: topic.to_owned(),
                    })
                    .with_id(*id)
                });
                boundary.append_to(stream, events)
            }
        }
    }
}

/// The aggregate a `fetch_for_writing` handle decides on: the pings of its stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Pings {
    id: Uuid,
    version: i64,
    seen: usize,
}

#[marten::apply]
impl Pings {
    fn apply(&mut self, _e: &Ping) {
        self.seen += 1;
    }
}

/// How many of `ids` the events table holds, and how many events `stream` has.
async fn stored_events(schema: &TestSchema, ids: &[Uuid], stream: Uuid) -> (i64, i64) {
    let client = schema.raw_client().await;
    let name = schema.name();
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {name}.mt_events WHERE id = ANY($1)), \
                 (SELECT count(*) FROM {name}.mt_events WHERE stream_id = $2)"
            ),
            &[&ids, &stream],
        )
        .await
        .expect("count events");
    (row.get(0), row.get(1))
}

/// A save that asserts its stream's version (or a start, or a boundary's tag versions)
/// and whose answer was lost, sent again with the same event ids (`with_id`) after its
/// first attempt committed: the stream (or boundary) refuses it before its events reach
/// the unique index of event ids, and the save is still `DuplicateEvent`, naming the
/// ids, never the stream's rejection (on which a caller deciding again would apply its
/// command twice). Each kind alone and, when `held`, in a session holding a transaction
/// (an exclusive lock of another stream). The events are stored once.
async fn a_resent_asserting_save_is_a_duplicate(kind: Asserting, held: bool) {
    let label = format!("fault_resent_{kind:?}_{held}").to_lowercase();
    let (schema, proxy, store) = proxied(&label).await;
    // The proxied store has one connection: a decision made before the first attempt is
    // made (and sent again) on a second store, straight to the server.
    let direct = ok(common::builder_on(&schema).build().await);
    let seed = |store: DocumentStore, stream: Uuid| async move {
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(stream, [Ping {}]));
        ok(s.save_changes().await);
    };
    let (stream, other, warm) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    seed(store.clone(), other).await;
    if kind.seeded() {
        seed(store.clone(), warm).await;
        seed(store.clone(), stream).await;
    }
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    // The same kind of save once, so that its statements are prepared on the pooled
    // connection and the faulted save is one flight.
    let mut s = store.lightweight_session();
    ok(kind
        .queue(&mut s, warm, &[Uuid::now_v7(), Uuid::now_v7()], "warm")
        .await);
    ok(s.save_changes().await);
    drop(s);
    // The session that sends the save again, holding a transaction when `held`.
    let open = |store: DocumentStore| async move {
        let mut again = store.lightweight_session();
        if held {
            let lock = ok(again
                .events()
                .fetch_for_exclusive_writing::<Pings>(other)
                .await);
            drop(lock);
        }
        again
    };
    let mut again = None;
    if kind.reads() {
        let mut s = open(direct.clone()).await;
        ok(kind.queue(&mut s, stream, &ids, "t").await);
        again = Some(s);
    }

    let mut first = store.lightweight_session();
    ok(kind.queue(&mut first, stream, &ids, "t").await);
    fault_open_connections(&proxy, answer_lost());
    let err = first.save_changes().await.expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{kind:?}: {err:?}");
    drop(first);
    proxy.heal();
    assert_eq!(stored_events(&schema, &ids, stream).await.0, 2, "committed");

    let mut again = match again {
        Some(s) => s,
        None => {
            let mut s = open(store.clone()).await;
            ok(kind.queue(&mut s, stream, &ids, "t").await);
            s
        }
    };
    let resent = again.save_changes().await.expect_err("a duplicate");
    match &resent {
        Error::DuplicateEvent { ids: found } => {
            let mut want = ids.to_vec();
            want.sort();
            assert_eq!(found, &want, "{kind:?}");
        }
        other => panic!("{kind:?} (held: {held}): expected DuplicateEvent, got {other:?}"),
    }
    assert_display_clean(&resent);
    let seeded = i64::from(kind.seeded());
    assert_eq!(
        stored_events(&schema, &ids, stream).await,
        (2, seeded + 2),
        "{kind:?}: appended once"
    );
    // The session and the store go on.
    ok(again.events().append(stream, [Ping {}]));
    ok(again.save_changes().await);
    drop(again);
    assert_recovers(&store, &schema, 1000).await;
}

#[tokio::test]
async fn a_resent_expected_version_append_is_a_duplicate_alone() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Expected, false).await;
}

#[tokio::test]
async fn a_resent_expected_version_append_is_a_duplicate_in_a_held_transaction() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Expected, true).await;
}

#[tokio::test]
async fn a_resent_start_is_a_duplicate_alone() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Start, false).await;
}

#[tokio::test]
async fn a_resent_start_is_a_duplicate_in_a_held_transaction() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Start, true).await;
}

#[tokio::test]
async fn a_resent_optimistic_append_is_a_duplicate_alone() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Optimistic, false).await;
}

#[tokio::test]
async fn a_resent_optimistic_append_is_a_duplicate_in_a_held_transaction() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Optimistic, true).await;
}

#[tokio::test]
async fn a_resent_append_of_a_handle_for_writing_is_a_duplicate_alone() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Handle, false).await;
}

#[tokio::test]
async fn a_resent_append_of_a_handle_for_writing_is_a_duplicate_in_a_held_transaction() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Handle, true).await;
}

#[tokio::test]
async fn a_resent_append_through_a_boundary_is_a_duplicate_alone() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Boundary, false).await;
}

#[tokio::test]
async fn a_resent_append_through_a_boundary_is_a_duplicate_in_a_held_transaction() {
    a_resent_asserting_save_is_a_duplicate(Asserting::Boundary, true).await;
}

/// An expected-version append refused for its version while some of its event ids are
/// stored (from another save) is `DuplicateEvent` naming them, as the same append is
/// when its version still matches (the unique index refuses it) and as a plain append
/// is: a save with a stored id can never be written, whatever its stream's version. With
/// no id stored, the rejection is the stream's.
#[tokio::test]
async fn a_refused_append_with_some_stored_ids_is_a_duplicate() {
    let (schema, b) = common::builder("fault_partly_stored");
    let store = ok(b.build().await);
    let stream = Uuid::now_v7();
    let stored = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [Ping {}]));
    ok(s.events()
        .append(Uuid::now_v7(), [PendingEvent::new(Ping {}).with_id(stored)]));
    ok(s.save_changes().await);
    let fresh = Uuid::now_v7();
    for version in [1, 3] {
        let events = [fresh, stored].map(|id| PendingEvent::new(Ping {}).with_id(id));
        ok(s.events().append_expected(stream, version, events));
        match s.save_changes().await {
            Err(Error::DuplicateEvent { ids }) => assert_eq!(ids, vec![stored], "at {version}"),
            other => panic!("at {version}: expected DuplicateEvent, got {other:?}"),
        }
    }
    // Not stored: the stream's rejection.
    ok(s.events()
        .append_expected(stream, 3, [PendingEvent::new(Ping {}).with_id(fresh)]));
    match s.save_changes().await {
        Err(Error::Rejected(r)) => assert!(
            matches!(
                r[0].kind,
                marten::RejectionKind::UnexpectedStreamVersion {
                    expected: 3,
                    actual: Some(1)
                }
            ),
            "{r:?}"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        stored_events(&schema, &[fresh, stored], stream).await,
        (1, 1)
    );
}

/// With conjoined events a refused append's ids are looked up among its tenant's events
/// only (event ids are unique per tenant): another tenant's copy of an id leaves the
/// stream's rejection as it is.
#[tokio::test]
async fn a_refused_append_is_a_duplicate_of_its_own_tenants_events_only() {
    let (_schema, b) = common::builder("fault_stored_per_tenant");
    let store = ok(b.events_tenancy(marten::Tenancy::Conjoined).build().await);
    let (stream, id) = (Uuid::now_v7(), Uuid::now_v7());
    let session = |tenant: &str| ok(store.lightweight_session_for(tenant));
    let mut red = session("red");
    ok(red
        .events()
        .start_stream(stream, [PendingEvent::new(Ping {}).with_id(id)]));
    ok(red.save_changes().await);
    let mut blue = session("blue");
    ok(blue.events().start_stream(stream, [Ping {}]));
    ok(blue.save_changes().await);
    for (s, tenant) in [(&mut red, "red"), (&mut blue, "blue")] {
        ok(s.events()
            .append_expected(stream, 3, [PendingEvent::new(Ping {}).with_id(id)]));
        match (tenant, s.save_changes().await) {
            ("red", Err(Error::DuplicateEvent { ids })) => assert_eq!(ids, vec![id]),
            ("blue", Err(Error::Rejected(r))) => assert!(
                matches!(
                    r[0].kind,
                    marten::RejectionKind::UnexpectedStreamVersion {
                        expected: 3,
                        actual: Some(1)
                    }
                ),
                "{r:?}"
            ),
            (tenant, other) => panic!("{tenant}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn lost_commit_answer_is_outcome_unknown_and_all_there() {
    let (schema, proxy, store) = proxied("fault_cut_s2c").await;
    let ids: Vec<i64> = (100..150).collect();

    // The whole flight reaches the server, which commits; no answer reaches the client
    // (the first answer is held long enough for the whole flight to be written).
    fault_open_connections(&proxy, answer_lost());
    let err = save_flight(&store, &ids).await.expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_display_clean(&err);
    assert!(
        chain(&err).iter().any(|l| l.contains("COMMIT")),
        "{:?}",
        chain(&err)
    );
    assert_eq!(
        count_notes(&schema, &ids).await,
        ids.len() as i64,
        "all of it"
    );
    assert_recovers(&store, &schema, 1000).await;

    // A lone autocommit statement: the same.
    fault_open_connections(&proxy, answer_lost());
    let err = save_note(&store, 7, "lone").await.expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(stored_note(&schema, 7).await.as_deref(), Some("lone"));
    assert_recovers(&store, &schema, 2000).await;

    // Connections lost before the save: a plain connection error, nothing written.
    fault_open_connections(&proxy, Faults::cut_after(Direction::ServerToClient, 0));
    let mut s = store.lightweight_session();
    // A load breaks the connection (its answer is cut) ...
    let lost = s.load::<Note>(&1000).await.expect_err("read cut");
    assert!(matches!(lost, Error::Connection(_)), "{lost:?}");
    // ... and the next save gets a healthy one.
    ok(s.store(Note {
        id: 8,
        text: "after".into(),
    }));
    ok(s.save_changes().await);
    assert_eq!(stored_note(&schema, 8).await.as_deref(), Some("after"));
}

/// A caller's raw write whose answer is lost, or does not come within the request
/// timeout, may have committed: `sql_execute` (and a writing `sql_query`) says so with
/// `OutcomeUnknown`, never a retryable connection error; a raw read stays a plain
/// connection error.
#[tokio::test]
async fn a_raw_write_whose_answer_is_lost_is_an_unknown_outcome() {
    let (schema, proxy, store) = proxied("fault_raw_write").await;
    let update = "UPDATE mt_doc_note SET data = jsonb_set(data, '{text}', to_jsonb($1::text)) \
                  WHERE id = -3";
    let insert = "INSERT INTO mt_doc_note (id, data) \
                  SELECT $1, data FROM mt_doc_note WHERE id = -3 RETURNING id";
    // Prepared on the pooled connection: the write is then one flight.
    ok(store.sql_execute(update, &[&"warm"]).await);
    let _ = ok(store.sql_query("SELECT 1", &[]).await);

    fault_open_connections(&proxy, answer_lost());
    let err = store
        .sql_execute(update, &[&"lost"])
        .await
        .expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(stored_note(&schema, -3).await.as_deref(), Some("lost"));
    assert_recovers(&store, &schema, 1000).await;

    let _ = ok(store.sql_query(insert, &[&-4i64]).await);
    ok(store
        .sql_execute("DELETE FROM mt_doc_note WHERE id = -4", &[])
        .await);
    fault_open_connections(&proxy, answer_lost());
    let err = store
        .sql_query(insert, &[&-4i64])
        .await
        .expect_err("answer lost");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert!(stored_note(&schema, -4).await.is_some(), "it committed");
    assert_recovers(&store, &schema, 2000).await;

    fault_open_connections(&proxy, Faults::black_hole());
    let err = store
        .sql_execute(update, &[&"unanswered"])
        .await
        .expect_err("no answer");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert_recovers(&store, &schema, 3000).await;

    fault_open_connections(&proxy, answer_lost());
    let err = store
        .sql_query("SELECT 1", &[])
        .await
        .expect_err("read cut");
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn black_hole_ends_within_the_request_timeout() {
    let (schema, proxy, store) = proxied("fault_black_hole").await;
    let ids: Vec<i64> = (100..150).collect();

    fault_open_connections(&proxy, Faults::black_hole());
    let started = Instant::now();
    let err = save_flight(&store, &ids).await.expect_err("no answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // Its COMMIT was handed to the network: nobody can tell.
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert_display_clean(&err);
    // The held connection stays held; the store uses a new one.
    assert_recovers(&store, &schema, 1000).await;
    drop(proxy);
    assert_eq!(count_notes(&schema, &ids).await, 0);
}

/// A lone save (one statement, no transaction: a store, an append) takes the shortest path
/// a save has; a black hole ends it within the same request timeout, as an unknown outcome
/// (its statement was handed to the network), and its connection is not reused.
#[tokio::test]
async fn black_holed_lone_saves_end_within_the_request_timeout() {
    let (schema, proxy, store) = proxied("fault_black_hole_lone").await;
    for (round, save) in ["store", "append"].into_iter().enumerate() {
        // Prepare the append's statement on the pooled connection (the store's is
        // prepared by the warm-up), so the faulted save is one statement sent.
        let mut s = store.lightweight_session();
        ok(s.events().append(Uuid::from_u128(8), [Ping {}]));
        ok(s.save_changes().await);
        drop(s);
        fault_open_connections(&proxy, Faults::black_hole());
        let started = Instant::now();
        let mut s = store.lightweight_session();
        if save == "store" {
            ok(s.store(Note {
                id: 9,
                text: "lone".into(),
            }));
        } else {
            ok(s.events().append(Uuid::from_u128(9), [Ping {}]));
        }
        let err = s.save_changes().await.expect_err("no answer");
        let waited = started.elapsed();
        assert!(matches!(err, Error::OutcomeUnknown(_)), "{save}: {err:?}");
        assert_display_clean(&err);
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
            "{save}: {waited:?}"
        );
        drop(s);
        assert_recovers(&store, &schema, 3000 + 10 * round as i64).await;
    }
    drop(proxy);
    // Nothing reached the server: the black hole dropped what was sent.
    assert_eq!(stored_note(&schema, 9).await, None);
    let events: i64 = (schema.raw_client().await)
        .query_one(
            "SELECT count(*) FROM mt_events WHERE stream_id = $1",
            &[&Uuid::from_u128(9)],
        )
        .await
        .expect("count events")
        .get(0);
    assert_eq!(events, 0);
}

/// Reads are bounded by the same request timeout: a black-holed load, query or event read
/// ends in `Error::Timeout`, its connection is closed, and the store reads again after.
#[tokio::test]
async fn black_holed_reads_end_within_the_request_timeout() {
    let (schema, proxy, store) = proxied("fault_black_hole_read").await;
    for read in 0..3 {
        fault_open_connections(&proxy, Faults::black_hole());
        let started = Instant::now();
        let mut s = store.lightweight_session();
        let err = match read {
            0 => s.load::<Note>(&-3).await.map(|_| ()),
            1 => s.query::<Note>().count().await.map(|_| ()),
            _ => s
                .events()
                .read_all(marten::Position::START, 10)
                .await
                .map(|_| ()),
        }
        .expect_err("no answer");
        let waited = started.elapsed();
        assert!(matches!(err, Error::Timeout { .. }), "read {read}: {err:?}");
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
            "read {read}: {waited:?}"
        );
        drop(s);
        assert_recovers(&store, &schema, 2000 + 10 * read).await;
    }
}

/// Not registered on the builder: its table is made sure of on first use.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Memo {
    id: i64,
    text: String,
}

/// A caller's pool of at most `size` connections to the schema, through `proxy`.
fn caller_pool_via(
    schema: &TestSchema,
    proxy: &FaultProxy,
    size: usize,
) -> marten::deadpool_postgres::Pool {
    use marten::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
    let mut config: tokio_postgres::Config = match schema.url_via_addr(proxy.addr()).parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.options(format!("-c search_path={}", schema.name()));
    config.application_name(schema.name());
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    match Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => panic!("cannot build the pool: {e}"),
    }
}

/// A type's first use makes sure of its table on a connection of its own (with a
/// caller's pool: one taken out of the pool), holding the store's lock on schema work.
/// A black hole on that connection ends the first use within the request timeout, typed,
/// and releases the lock: another session's first use of another type, waiting for it,
/// goes on. Nothing is recorded as made sure of: once healed, the first type's table is
/// created on its next use.
#[tokio::test]
async fn a_black_holed_first_use_of_a_type_ends_within_the_request_timeout() {
    let schema = TestSchema::new("fault_schema_hole");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .pool(caller_pool_via(&schema, &proxy, 4))
        .schema(schema.name())
        .request_timeout(Some(Duration::from_secs(2)))
        .document::<Note>()
        .build()
        .await);
    // One idle connection in the pool: the next schema work takes it.
    ok(save_note(&store, 1, "before").await);
    fault_open_connections(&proxy, Faults::black_hole());
    let first_use = |store: DocumentStore, kind: &'static str| {
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            match kind {
                "tally" => s.load::<Tally>(&1).await.map(|_| ()),
                _ => s.load::<Memo>(&1).await.map(|_| ()),
            }
        })
    };
    let started = Instant::now();
    let first = first_use(store.clone(), "tally");
    // The first use holds the lock on schema work (and the black-holed connection)
    // before the second asks for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = first_use(store.clone(), "memo");
    // Bounded by the test's own timer, so that a wait that never ends fails the test.
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first use waited beyond its timeout")
        .expect("task");
    let waited = started.elapsed();
    match &first {
        Err(Error::Timeout { what }) => assert!(what.contains(schema.name()), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second use was held by the first")
        .expect("task");
    ok(second);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    proxy.heal();
    let mut s = store.lightweight_session();
    ok(s.store(Tally { id: 1, count: 7 }));
    ok(s.store(Memo {
        id: 1,
        text: "after".into(),
    }));
    ok(s.save_changes().await);
    let tally: Option<Tally> = ok(s.load(&1).await);
    assert_eq!(tally.map(|t| t.count), Some(7));
    let memo: Option<Memo> = ok(s.load(&1).await);
    assert_eq!(memo.map(|m| m.text).as_deref(), Some("after"));
    ok(save_note(&store, 2, "after").await);
    assert_eq!(stored_note(&schema, 2).await.as_deref(), Some("after"));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Topical {
    #[tag(name = "topic")]
    topic: String,
}

/// The state of a boundary over `Topical` events.
#[derive(Default, Debug)]
struct TopicSeen {
    seen: usize,
}

#[marten::apply]
impl TopicSeen {
    fn apply(&mut self, _e: &Topical) {
        self.seen += 1;
    }
}

/// Reading a consistency boundary prepares its statements on first use; preparing waits
/// for the locks of the tables they read, as the reads do. A tag table locked by another
/// transaction ends the read within the request timeout, typed; once the lock is gone the
/// boundary is read.
#[tokio::test]
async fn a_boundary_read_on_locked_tag_tables_ends_within_the_request_timeout() {
    let (schema, b) = builder("fault_boundary_lock");
    let store = ok(b
        .request_timeout(Some(Duration::from_secs(1)))
        .event::<Topical>()
        .build()
        .await);
    let locker = schema.raw_client().await;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK {}.mt_tag_versions IN ACCESS EXCLUSIVE MODE",
            schema.name()
        ))
        .await
        .expect("lock the tag versions");
    let query = || TagQuery::new().tag_named("topic", "t");
    let started = Instant::now();
    let mut s = store.lightweight_session();
    // Bounded by the test's own timer, so that a wait that never ends fails the test.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        s.events().fetch_for_writing_by_tags::<TopicSeen>(query()),
    )
    .await
    .expect("the boundary read waited beyond its timeout");
    let waited = started.elapsed();
    match read {
        Err(Error::Timeout { .. }) => {}
        Err(other) => panic!("expected a timeout, got {other:?}"),
        Ok(_) => panic!("read the boundary through the lock"),
    }
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    drop(s);
    locker.batch_execute("COMMIT").await.expect("unlock");
    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<TopicSeen>(query())
        .await);
    assert!(boundary.state().is_none());
    ok(boundary.append([Topical { topic: "t".into() }]));
    drop(boundary);
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<TopicSeen>(query())
        .await);
    assert_eq!(boundary.state().map(|b| b.seen), Some(1));
}

/// A streamed query waits for each row at most the request timeout: a network that goes
/// silent mid-stream ends the stream with `Error::Timeout` (the rows already read are
/// kept), the connection is closed, and the store reads again after.
#[tokio::test]
async fn a_stream_whose_rows_stop_coming_ends_within_the_request_timeout() {
    use futures_util::StreamExt;
    let (schema, proxy, store) = proxied("fault_black_hole_stream").await;
    let ids: Vec<i64> = (1..=400).collect();
    for chunk in ids.chunks(100) {
        ok(save_flight(&store, chunk).await);
    }
    // Rows trickle in, then nothing comes at all.
    fault_open_connections(
        &proxy,
        Faults::delay(Direction::ServerToClient, Duration::from_millis(20)),
    );
    let mut s = store.lightweight_session();
    let mut rows = ok(s.query::<Note>().stream().await);
    let first = rows.next().await.expect("a first row");
    ok(first);
    fault_open_connections(&proxy, Faults::black_hole());
    let started = Instant::now();
    let (mut read, mut ended) = (1usize, None);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(row) = rows.next().await {
            match row {
                Ok(_) => read += 1,
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the stream waited beyond its timeout after {read} rows"
    );
    let waited = started.elapsed();
    assert!(read < 400, "every row arrived before the hole: {read}");
    assert!(
        matches!(ended, Some(Error::Timeout { .. })),
        "{ended:?} after {read} rows"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(rows.next().await.is_none(), "the stream ended");
    drop(rows);
    drop(s);
    proxy.heal();
    assert_recovers(&store, &schema, 3000).await;
}

/// A store built on one runtime and used from another. Its pooled connection's I/O task
/// lives on the first runtime, which is kept but no longer driven, so a request on that
/// connection gets no answer. The request still ends within the request timeout: the
/// deadlines do not depend on the runtime the store was built on. The store then serves
/// again, on a connection of the second runtime.
#[test]
fn requests_from_another_runtime_end_within_the_request_timeout() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    };
    let first = runtime();
    let (schema, store) = first.block_on(async {
        let (schema, builder) = builder("fault_other_runtime");
        let store = ok(builder
            .pool_size(1)
            .request_timeout(Some(Duration::from_secs(2)))
            .document::<Note>()
            .build()
            .await);
        ok(save_note(&store, 1, "built").await);
        (schema, store)
    });
    let second = runtime();
    second.block_on(async {
        let started = Instant::now();
        let mut s = store.lightweight_session();
        // Bounded by a timer of the test's own runtime, so that a request that never
        // ends fails the test.
        let load = tokio::time::timeout(Duration::from_secs(10), s.load::<Note>(&1));
        let err = load.await.expect("the load ends").expect_err("no answer");
        let waited = started.elapsed();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        drop(s);
        let mut s = store.lightweight_session();
        let back: Option<Note> = ok(s.load(&1).await);
        assert_eq!(back.map(|n| n.text).as_deref(), Some("built"));
    });
    drop(store);
    drop(first);
    drop(schema);
}

#[tokio::test]
async fn slow_network_within_the_timeout_is_fine() {
    let (schema, proxy, store) = proxied("fault_delay").await;
    proxy.set_global(Faults::delay(
        Direction::ServerToClient,
        Duration::from_millis(300),
    ));
    ok(save_flight(&store, &[5, 6]).await);
    assert_eq!(count_notes(&schema, &[5, 6]).await, 2);
    proxy.heal();
}
