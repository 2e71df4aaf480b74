//! The daemon at its edges: archived streams, a pool of one connection, a standby node,
//! a rebuild while a batch is in flight, panicking projections.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::tally::Added;
use common::{builder, ok};
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten_testing::CountingProxy;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Counter {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, _e: &Added) {
        self.count += 1;
    }
}

async fn append(store: &DocumentStore, stream: Uuid, ns: &[i64]) {
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(stream, ns.iter().map(|n| Added { n: *n })));
    ok(s.save_changes().await);
}

async fn assert_tally_is_live(store: &DocumentStore, stream: Uuid) {
    let doc = ok(store.query_session().load::<Tally>(&stream).await);
    let mut s = store.lightweight_session();
    let live: Option<Tally> = ok(s.events().aggregate_stream(stream).await);
    assert_eq!(doc, live, "stream {stream}");
}

/// Issue #12 defect 3: when the newest events belong to an archived stream the daemon's
/// reads skip them; its staleness check must agree, or waits and rebuilds never end.
/// Archived streams are not projected by the daemon.
#[tokio::test]
async fn archived_newest_events_neither_keep_the_daemon_stale_nor_get_projected() {
    let (_schema, b) = builder("daemon_archived");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let (live, archived) = (Uuid::now_v7(), Uuid::now_v7());
    append(&store, live, &[1, 2]).await;
    append(&store, archived, &[10, 20]).await;
    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(archived));
    ok(s.save_changes().await);

    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    ok(daemon.stop().await);
    assert_tally_is_live(&store, live).await;
    let projected: Option<Tally> = ok(store.query_session().load(&archived).await);
    assert_eq!(projected, None, "archived streams are not projected");

    let rebuilt = tokio::time::timeout(
        Duration::from_secs(20),
        marten::cli::rebuild_with_progress(&store, "Tally", DaemonOptions::default(), |_| {}),
    )
    .await;
    ok(rebuilt.expect("the rebuild ends"));
    assert_tally_is_live(&store, live).await;
}

/// Issue #12 defect 4: each runner reads, plans and commits a batch on one pooled
/// connection and never holds it while waiting for another, so two async projections
/// share a pool of one.
#[tokio::test]
async fn two_async_projections_share_a_pool_of_one_connection() {
    let (_schema, b) = builder("daemon_pool_one");
    let store = ok(b
        .pool_size(1)
        .pool_wait_timeout(Duration::from_secs(5))
        .projection::<Tally>(Lifecycle::Async)
        .projection::<Counter>(Lifecycle::Async)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    for id in &streams {
        append(&store, *id, &[1, 2, 3]).await;
    }
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 4,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        daemon.wait_for_non_stale(Duration::from_secs(25)),
    )
    .await;
    ok(waited.expect("the daemon catches up"));
    ok(daemon.stop().await);
    for id in &streams {
        assert_tally_is_live(&store, *id).await;
        let c: Option<Counter> = ok(store.query_session().load(id).await);
        assert_eq!(c.map(|c| c.count), Some(3));
    }
}

/// Issue #12 defect 4: a session waiting for a pooled connection gets a typed error
/// after the configured wait, naming the pool's size.
#[tokio::test]
async fn an_exhausted_pool_is_a_typed_error_after_the_wait() {
    let (_schema, b) = builder("pool_exhausted");
    let store = ok(b
        .pool_size(1)
        .pool_wait_timeout(Duration::from_millis(300))
        .projection::<Tally>(Lifecycle::Inline)
        .build()
        .await);
    let stream = Uuid::now_v7();
    append(&store, stream, &[1]).await;
    let mut holder = store.lightweight_session();
    let _: Option<Tally> = ok(holder.load(&stream).await);
    let started = Instant::now();
    let mut waiter = store.lightweight_session();
    let r: marten::Result<Option<Tally>> = waiter.load(&stream).await;
    match r {
        Err(marten::Error::PoolExhausted { size: 1, waited_ms }) => {
            assert!(waited_ms >= 250, "waited {waited_ms} ms")
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(holder);
    // The connection came back: the waiter works now.
    let loaded: Option<Tally> = ok(waiter.load(&stream).await);
    assert!(loaded.is_some());
}

/// A node that does not get a projection's lock keeps its lock connection between tries
/// instead of opening and closing one every poll.
#[tokio::test]
async fn a_standby_node_keeps_its_lock_connection() {
    let (schema, b) = builder("daemon_standby");
    let proxy = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(b
        .connection_string(schema.url_via(&proxy))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    append(&store, Uuid::now_v7(), &[1]).await;
    let options = || DaemonOptions {
        poll_interval: Duration::from_millis(10),
        ..DaemonOptions::default()
    };
    let active = Daemon::start(&store, options());
    ok(active.wait_for_non_stale(Duration::from_secs(10)).await);
    let standby = Daemon::start(&store, options());
    // Let the standby make its first try, then count what it opens while it keeps trying
    // (every 5 poll intervals: about 20 tries in a second).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = proxy.connections();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened = proxy.connections() - before;
    assert!(
        opened <= 2,
        "{opened} connections opened in a second of standby"
    );
    ok(standby.stop().await);
    ok(active.stop().await);
}

/// A runner whose lock connection gets no answer (the progression table locked by an
/// administrator's `LOCK TABLE`, a `VACUUM FULL`) gives up within the request timeout:
/// `stop` returns, the statement the server was waiting in is cancelled, and the lock
/// connection is gone (with the projection's lock) before the table is unlocked.
#[tokio::test]
async fn a_lock_connection_without_answers_does_not_hold_stop() {
    let (schema, b) = builder("daemon_lock_silent");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(700)))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    append(&store, Uuid::now_v7(), &[1]).await;
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poll_interval: Duration::from_millis(10),
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    let admin = schema.raw_client().await;
    admin
        .batch_execute("BEGIN; LOCK TABLE mt_event_progression IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the progression table");
    // Let the caught-up runner's next ownership check start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(10), daemon.stop()).await;
    assert!(stopped.is_ok(), "stop waited for the locked table");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The lock connection is closed while the table is still locked: nothing of the
    // daemon waits for it any more. (Looked at from a connection of its own: inside the
    // admin's transaction, `pg_stat_activity` would show one snapshot for ever.)
    let observer = schema.raw_client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'marten-daemon-lock:' || $1 || ':%'",
                &[&schema.name()],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{waiting} lock connections left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.batch_execute("COMMIT").await.expect("unlock");
}

/// Pauses the runner before its next batch commits, once armed.
struct PauseBeforeCommit {
    armed: AtomicBool,
    paused: Mutex<mpsc::Sender<()>>,
    resume: Mutex<mpsc::Receiver<()>>,
}

impl PauseBeforeCommit {
    /// Hooks not armed yet, with the receiver told when a batch paused and the sender
    /// that lets it go on.
    fn new() -> (Arc<Self>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (paused_tx, paused_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel();
        let hooks = Arc::new(PauseBeforeCommit {
            armed: AtomicBool::new(false),
            paused: Mutex::new(paused_tx),
            resume: Mutex::new(resume_rx),
        });
        (hooks, paused_rx, resume_tx)
    }
}

/// Waits (10 s at most) until the armed batch has paused.
async fn until_paused(paused: mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || paused.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the batch paused");
}

impl DaemonHooks for PauseBeforeCommit {
    fn before_commit(&self, _projection: &str, _sequences: &[i64]) {
        if self.armed.swap(false, Ordering::SeqCst) {
            if let Ok(tx) = self.paused.lock() {
                let _ = tx.send(());
            }
            // Blocking in place hands this worker's other tasks (connections) to others.
            tokio::task::block_in_place(|| {
                if let Ok(rx) = self.resume.lock() {
                    let _ = rx.recv_timeout(Duration::from_secs(30));
                }
            });
        }
    }
}

/// A rebuild while a batch is in flight: the reset, the deletion of the documents and the
/// batch are ordered so the batch either commits before the rebuild starts or not at
/// all. Here the rebuild's delete is held on one document's row lock while the paused
/// batch, which writes a new document, is let go: done in two steps, the batch would
/// commit between them and its document would survive the delete and be folded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_fences_a_batch_in_flight() {
    let (schema, b) = builder("daemon_rebuild_fence");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let old = Uuid::now_v7();
    append(&store, old, &[1, 2]).await;
    let (hooks, paused_rx, resume_tx) = PauseBeforeCommit::new();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            hooks: hooks.clone(),
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);

    // The next batch (a new stream's events) pauses before it commits.
    hooks.armed.store(true, Ordering::SeqCst);
    let new = Uuid::now_v7();
    append(&store, new, &[100]).await;
    until_paused(paused_rx).await;

    // A raw transaction holds the old document's row: a delete of the documents waits.
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM mt_doc_tally WHERE id = $1 FOR UPDATE",
            &[&old],
        )
        .await
        .expect("lock the document");

    let rebuild = {
        let store = store.clone();
        tokio::spawn(async move { marten::daemon::rebuild(&store, "Tally").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    resume_tx.send(()).expect("resume");
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.expect("release");
    ok(rebuild.await.expect("join"));

    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_tally_is_live(&store, old).await;
    assert_tally_is_live(&store, new).await;
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Boom {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Fragile {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Fragile {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
    fn apply_boom(&mut self, _e: &Boom) {
        panic!("boom");
    }
}

/// A projection whose apply panics goes through the poison policy like one that returns
/// an error: dead-lettered (the rest is projected), or the runner stops and both
/// `wait_for_non_stale` and `stop` report it.
#[tokio::test]
async fn a_panicking_projection_goes_through_the_poison_policy() {
    for policy in [PoisonPolicy::DeadLetter, PoisonPolicy::Stop] {
        let (schema, b) = builder("daemon_panic");
        let store = ok(b
            .event::<Boom>()
            .projection::<Fragile>(Lifecycle::Async)
            .build()
            .await);
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().append(stream, [Added { n: 1 }]));
        ok(s.events().append(stream, [Boom {}]));
        ok(s.events().append(stream, [Added { n: 2 }]));
        ok(s.save_changes().await);
        let daemon = Daemon::start(
            &store,
            DaemonOptions {
                retries: 1,
                poison: policy,
                ..DaemonOptions::default()
            },
        );
        let waited = daemon.wait_for_non_stale(Duration::from_secs(10)).await;
        match policy {
            PoisonPolicy::DeadLetter => {
                ok(waited);
                ok(daemon.stop().await);
                let doc: Option<Fragile> = ok(store.query_session().load(&stream).await);
                assert_eq!(doc.map(|d| d.total), Some(3));
                let raw = schema.raw_client().await;
                let row = raw
                    .query_one("SELECT event_type, error FROM mt_dead_letters", &[])
                    .await
                    .expect("one dead letter");
                assert_eq!(row.get::<_, String>(0), "boom");
                assert!(row.get::<_, String>(1).contains("panicked: boom"));
            }
            _ => {
                match waited {
                    Err(marten::Error::ProjectionStopped { projection, .. }) => {
                        assert_eq!(projection, "Fragile")
                    }
                    other => panic!("expected ProjectionStopped, got {other:?}"),
                }
                match daemon.stop().await {
                    Err(marten::Error::Apply { message, .. }) => {
                        assert!(message.contains("panicked: boom"), "{message}")
                    }
                    other => panic!("expected the apply error, got {other:?}"),
                }
            }
        }
    }
}

/// A dead letter commits with the batch that leaves its event out: a batch paused before
/// its commit has recorded none, and when a takeover (the owner epoch moved by hand)
/// rejects that commit, the batch planned again records it once, not once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_commits_with_its_batch_and_only_once() {
    let (schema, b) = builder("daemon_letter_once");
    let store = ok(b
        .event::<Boom>()
        .projection::<Fragile>(Lifecycle::Async)
        .build()
        .await);
    let (hooks, paused_rx, resume_tx) = PauseBeforeCommit::new();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            hooks: hooks.clone(),
            retries: 0,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    let stream = Uuid::now_v7();
    append(&store, stream, &[1]).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);

    hooks.armed.store(true, Ordering::SeqCst);
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Boom {}]));
    ok(s.events().append(stream, [Added { n: 2 }]));
    ok(s.save_changes().await);
    until_paused(paused_rx).await;
    let raw = schema.raw_client().await;
    let count = "SELECT count(*) FROM mt_dead_letters";
    let before: i64 = raw.query_one(count, &[]).await.expect("count").get(0);
    assert_eq!(before, 0, "nothing recorded before the batch commits");
    raw.execute(
        "UPDATE mt_event_progression SET owner_epoch = owner_epoch + 1 WHERE name = 'Fragile'",
        &[],
    )
    .await
    .expect("take the projection over");
    resume_tx.send(()).expect("resume");

    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let doc: Option<Fragile> = ok(store.query_session().load(&stream).await);
    assert_eq!(doc.map(|d| d.total), Some(3));
    let rows = raw
        .query("SELECT event_type FROM mt_dead_letters", &[])
        .await
        .expect("dead letters");
    let types: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        types,
        ["boom"],
        "recorded once, by the batch that committed"
    );
}

/// A progression table created by hand with the wrong column types: the command line's
/// status is a typed error naming the projection, and the daemon neither panics nor
/// claims to be caught up.
#[tokio::test]
async fn a_mistyped_progression_table_is_a_typed_error() {
    let (schema, b) = builder("daemon_mistyped_progress");
    let raw = schema.raw_client().await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {0}; \
         CREATE TABLE {0}.mt_event_progression (name text PRIMARY KEY, last_tx text NOT NULL DEFAULT '0', \
         last_seq text NOT NULL DEFAULT 'zero', owner_epoch bigint NOT NULL DEFAULT 0, owner text, \
         last_updated timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO {0}.mt_event_progression (name) VALUES ('Tally')",
        schema.name()
    ))
    .await
    .expect("a mistyped table");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    append(&store, Uuid::now_v7(), &[1]).await;
    match marten::cli::status(&store).await {
        Err(marten::Error::CorruptData { owner, .. }) => assert_eq!(owner, "Tally"),
        other => panic!("expected CorruptData, got {other:?}"),
    }
    let daemon = Daemon::start(&store, DaemonOptions::default());
    let waited = daemon.wait_for_non_stale(Duration::from_millis(800)).await;
    assert!(waited.is_err(), "caught up on a table it cannot read");
    ok(daemon.stop().await);
}

/// A daemon started while every new connection to the database is cut at once (a
/// server that is down or restarting) does not stop its projections: once the database
/// answers again, they create their tables and catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_started_while_the_database_is_unreachable_waits_for_it() {
    use marten_testing::fault::{Direction, Faults};
    use marten_testing::{FaultProxy, TestSchema};

    let schema = TestSchema::new("daemon_unreachable");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy.addr()))
        .schema(schema.name())
        .pool_wait_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::new_v4();
    append(&store, stream, &[1, 2, 3]).await;

    proxy.set_global(Faults::cut_after(Direction::ClientToServer, 0));
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poll_interval: Duration::from_millis(50),
            ..DaemonOptions::default()
        },
    );
    // Long enough for the runner to try the unreachable database several times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Err(marten::Error::ProjectionStopped {
        projection,
        message,
    }) = daemon.wait_for_non_stale(Duration::from_millis(10)).await
    {
        panic!("projection {projection} stopped while the database was down: {message}");
    }

    proxy.heal();
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let tally = ok(store.query_session().load::<Tally>(&stream).await);
    assert_eq!(tally.map(|t| t.total), Some(6));
    ok(daemon.stop().await);
}
