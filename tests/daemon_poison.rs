//! Poison events and the daemon: a dead-lettered event is never applied or dead-lettered
//! again when a stream's later events bring it back (the document stopped before it, or
//! a poison first event left no document); a failure of the events' own data that names
//! no apply (an invalid document id an event projection takes from an event, a stored
//! document that no longer deserializes) meets the poison policy instead of retrying for
//! ever; a batch waiting to be planned again holds no pooled connection (another
//! projection keeps going on a pool of one) and stops waiting when the daemon stops;
//! projected writes the database refuses at commit (a unique index, a CHECK constraint)
//! meet the poison policy on the event whose writes they are, instead of a retry for
//! ever; the runs of a refused batch committed to find the event fold nothing of the
//! batch's later events on account of one dead-lettered later (its blame is not put on
//! an earlier event, and a search interrupted after a run loses no dead letter).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::tally::Added;
use common::{builder, builder_on, ok};
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::{ApplyError, EventProjection, ProjectedOps};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Fails the aggregates below.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Boom {}

/// Sums `Added`; `Boom` fails.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Brittle {
    id: Uuid,
    version: i64,
    total: i64,
    count: i64,
}

#[marten::apply]
impl Brittle {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
        self.count += 1;
    }
    fn apply_boom(&mut self, _e: &Boom) -> Result<(), String> {
        Err("boom".into())
    }
}

/// Every test here is bounded: a regression fails instead of hanging.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(14), f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: timed out"),
    }
}

fn options(retries: u32, poison: PoisonPolicy) -> DaemonOptions {
    DaemonOptions {
        retries,
        poison,
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
}

async fn append(store: &DocumentStore, stream: Uuid, event: impl Event) {
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [event]));
    ok(s.save_changes().await);
}

/// The dead letters recorded: stream and sequence, in the order recorded.
async fn dead_letters(schema: &marten_testing::TestSchema) -> Vec<(String, i64)> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT stream_id, seq_id FROM mt_dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Each batch a single event: `Added`, then `Boom` (dead-lettered: the last event of
/// its stream in its batch, so the document stays before it), then `Added`, whose batch
/// reads the hole it left. And a stream whose first event is `Boom` (no document),
/// followed by two `Added` in batches of their own. Each poison event is dead-lettered
/// once, and the documents skip its version.
#[tokio::test]
async fn a_dead_lettered_aggregate_event_is_not_applied_or_dead_lettered_again() {
    bounded("dead-lettered once", async {
        let (schema, b) = builder("poison_once");
        let store = ok(b
            .event::<Boom>()
            .projection::<Brittle>(Lifecycle::Async)
            .build()
            .await);
        let daemon = Daemon::start(&store, options(0, PoisonPolicy::DeadLetter));
        let settle = || daemon.wait_for_non_stale(Duration::from_secs(5));

        let (stream, created_by_boom) = (Uuid::now_v7(), Uuid::now_v7());
        append(&store, stream, Added { n: 1 }).await;
        ok(settle().await);
        append(&store, stream, Boom {}).await;
        ok(settle().await);
        append(&store, stream, Added { n: 2 }).await;
        ok(settle().await);

        append(&store, created_by_boom, Boom {}).await;
        ok(settle().await);
        append(&store, created_by_boom, Added { n: 10 }).await;
        ok(settle().await);
        append(&store, created_by_boom, Added { n: 20 }).await;
        ok(settle().await);
        ok(daemon.stop().await);

        let mut q = store.query_session();
        let doc = ok(q.load::<Brittle>(&stream).await).expect("projected");
        assert_eq!(
            (doc.total, doc.count, doc.version),
            (3, 2, 3),
            "both Added applied, the Boom version skipped"
        );
        let doc = ok(q.load::<Brittle>(&created_by_boom).await).expect("projected");
        assert_eq!(
            (doc.total, doc.count, doc.version),
            (30, 2, 3),
            "created by the first Added after the poison first event"
        );
        let letters = dead_letters(&schema).await;
        let streams: Vec<&str> = letters.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            streams,
            [stream.to_string(), created_by_boom.to_string()],
            "each poison event dead-lettered once: {letters:?}"
        );
    })
    .await;
}

/// An event whose document id comes from the event.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Named {
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct NameCard {
    id: String,
    name: String,
}

/// Stores a `NameCard` per `Named`, with the name as its id.
struct NameCards;

impl EventProjection for NameCards {
    fn name(&self) -> &'static str {
        "NameCards"
    }
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<Named>() {
            ops.store(NameCard {
                id: e.name.clone(),
                name: e.name.clone(),
            });
        }
        Ok(())
    }
}

/// An event projection storing a document whose id an event gives as `""`: under the
/// dead-letter policy the event is dead-lettered (after its retries) and the events after
/// it are projected, so the daemon catches up; under the stop policy the projection
/// stops, naming the event.
#[tokio::test]
async fn an_invalid_id_from_an_event_meets_the_poison_policy() {
    bounded("an invalid id", async {
        for policy in [PoisonPolicy::DeadLetter, PoisonPolicy::Stop] {
            let (schema, b) = builder("poison_invalid_id");
            let store = ok(b
                .event::<Named>()
                .event_projection(NameCards, Lifecycle::Async)
                .build()
                .await);
            let stream = Uuid::now_v7();
            let mut s = store.lightweight_session();
            for name in ["ann", "", "bob"] {
                ok(s.events().append(stream, [Named { name: name.into() }]));
            }
            ok(s.save_changes().await);
            let daemon = Daemon::start(&store, options(1, policy));
            let waited = daemon.wait_for_non_stale(Duration::from_secs(4)).await;
            if policy == PoisonPolicy::Stop {
                match waited {
                    Err(marten::Error::ProjectionStopped { projection, .. }) => {
                        assert_eq!(projection, "NameCards")
                    }
                    other => panic!("expected the projection to stop, got {other:?}"),
                }
                match daemon.stop().await {
                    Err(marten::Error::Apply {
                        projection,
                        stream: at,
                        version,
                        message,
                        ..
                    }) => {
                        assert_eq!((projection, at, version), ("NameCards", stream.into(), 2));
                        assert!(message.contains("invalid id"), "{message}");
                    }
                    other => panic!("expected the apply error, got {other:?}"),
                }
                continue;
            }
            ok(waited);
            ok(daemon.stop().await);
            let mut q = store.query_session();
            for name in ["ann", "bob"] {
                let card = ok(q.load::<NameCard>(&name.to_owned()).await);
                assert_eq!(card.map(|c| c.name), Some(name.to_owned()));
            }
            let rows = schema
                .raw_client()
                .await
                .query(
                    "SELECT projection, event_type, stream_id, error, attempts FROM mt_dead_letters",
                    &[],
                )
                .await
                .expect("dead letters");
            assert_eq!(rows.len(), 1, "one dead letter");
            let row = &rows[0];
            assert_eq!(row.get::<_, String>(0), "NameCards");
            assert_eq!(row.get::<_, String>(1), "named");
            assert_eq!(row.get::<_, String>(2), stream.to_string());
            let error: String = row.get(3);
            assert!(error.contains("invalid id"), "{error}");
            assert_eq!(row.get::<_, i32>(4), 2, "the first try and one retry");
        }
    })
    .await;
}

/// A stored aggregate document edited so it no longer deserializes: the batch's event of
/// its stream is dead-lettered (the error names the document and the event's sequence),
/// not the other stream's event before it in the batch, which is projected.
#[tokio::test]
async fn a_stored_document_that_no_longer_deserializes_meets_the_poison_policy() {
    bounded("an unreadable document", async {
        let (schema, b) = builder("poison_unreadable_doc");
        let store = ok(b
            .event::<Boom>()
            .projection::<Brittle>(Lifecycle::Async)
            .build()
            .await);
        let (fine, broken) = (Uuid::now_v7(), Uuid::now_v7());
        append(&store, fine, Added { n: 1 }).await;
        append(&store, broken, Added { n: 1 }).await;
        let daemon = Daemon::start(&store, options(0, PoisonPolicy::DeadLetter));
        ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
        ok(daemon.stop().await);
        let raw = schema.raw_client().await;
        raw.execute(
            "UPDATE mt_doc_brittle SET data = jsonb_set(data, '{total}', '\"many\"') WHERE id = $1",
            &[&broken],
        )
        .await
        .expect("break the document");
        let mut s = store.lightweight_session();
        ok(s.events().append(fine, [Added { n: 2 }]));
        ok(s.events().append(broken, [Added { n: 2 }]));
        ok(s.save_changes().await);
        let seq: i64 = raw
            .query_one(
                "SELECT seq_id FROM mt_events WHERE stream_id = $1 AND version = 2",
                &[&broken],
            )
            .await
            .expect("the event")
            .get(0);

        let daemon = Daemon::start(&store, options(0, PoisonPolicy::DeadLetter));
        ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
        ok(daemon.stop().await);
        let doc = ok(store.query_session().load::<Brittle>(&fine).await).expect("projected");
        assert_eq!((doc.total, doc.version), (3, 2));
        let rows = raw
            .query("SELECT stream_id, seq_id, error FROM mt_dead_letters", &[])
            .await
            .expect("dead letters");
        let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, [(broken.to_string(), seq)]);
        let error: String = rows[0].get(2);
        assert!(error.contains("cannot deserialize document"), "{error}");
        assert!(error.contains(&format!("sequence {seq}")), "{error}");
    })
    .await;
}

/// `Boom`'s failures, counted (only this aggregate's).
static SLOW_BOOMS: AtomicUsize = AtomicUsize::new(0);

/// Sums `Added`; `Boom` fails, counted in [`SLOW_BOOMS`].
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct SlowToGiveUp {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl SlowToGiveUp {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
    fn apply_boom(&mut self, _e: &Boom) -> Result<(), String> {
        SLOW_BOOMS.fetch_add(1, Ordering::SeqCst);
        Err("boom".into())
    }
}

/// Counts `Added`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Steady {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl Steady {
    fn apply(&mut self, _e: &Added) {
        self.count += 1;
    }
}

/// How many times marten logged an exhausted pool in this process (any log line with a
/// field that says so: a runner's failed step, a read ahead that failed).
fn pool_exhaustions() -> &'static AtomicUsize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(CountExhaustions);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
    &COUNT
}

struct CountExhaustions;

/// Whether a field of a log line says the pool was exhausted.
struct SaysExhausted(bool);

impl Visit for SaysExhausted {
    fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
        self.0 |= format!("{value:?}").contains("pool exhausted");
    }
}

impl<S: Subscriber> Layer<S> for CountExhaustions {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut says = SaysExhausted(false);
        event.record(&mut says);
        if says.0 {
            pool_exhaustions().fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A pool of one connection: while one projection's poison event waits out its backoff
/// (many retries, seconds of it), the other projection gets the connection and keeps
/// going, never finding the pool exhausted, and `Daemon::stop` ends the backoff at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backoff_holds_no_connection_and_ends_when_the_daemon_stops() {
    bounded("a backoff", async {
        let exhausted = pool_exhaustions();
        let exhausted_before = exhausted.load(Ordering::SeqCst);
        let (schema, b) = builder("poison_backoff_pool");
        let store = ok(b
            .pool_size(1)
            .pool_wait_timeout(Duration::from_secs(2))
            .event::<Boom>()
            .projection::<SlowToGiveUp>(Lifecycle::Async)
            .projection::<Steady>(Lifecycle::Async)
            .build()
            .await);
        // The test's own reads and writes, on a pool of their own.
        let writer = ok(builder_on(&schema)
            .event::<Added>()
            .event::<Boom>()
            .build()
            .await);
        append(&writer, Uuid::now_v7(), Boom {}).await;
        let poll = Duration::from_millis(50);
        let daemon = Daemon::start(
            &store,
            DaemonOptions {
                // 50 ms doubled up to 3.2 s: about 9.5 s of backoff in all.
                retries: 8,
                poll_interval: poll,
                ..DaemonOptions::default()
            },
        );
        let started = Instant::now();
        while SLOW_BOOMS.load(Ordering::SeqCst) < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the poison event is retried"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Now in its backoff (200 ms, then twice as long each time, up to 3.2 s): the
        // other projection goes on.
        let steady = Uuid::now_v7();
        append(&writer, steady, Added { n: 1 }).await;
        let appended = Instant::now();
        loop {
            let doc = writer.query_session().load::<Steady>(&steady).await;
            if let Ok(Some(doc)) = doc {
                assert_eq!(doc.count, 1);
                break;
            }
            assert!(
                appended.elapsed() < Duration::from_secs(3),
                "the other projection is stuck behind the backoff (pool exhausted {} times)",
                exhausted.load(Ordering::SeqCst) - exhausted_before
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            SLOW_BOOMS.load(Ordering::SeqCst) < 9,
            "still retrying the poison event"
        );

        let stopping = Instant::now();
        let stopped = tokio::time::timeout(Duration::from_secs(5), daemon.stop()).await;
        ok(stopped.expect("the daemon stops"));
        assert!(
            stopping.elapsed() < poll * 10,
            "stop waited out the backoff: {:?}",
            stopping.elapsed()
        );
        let letters = dead_letters(&schema).await;
        assert!(letters.is_empty(), "stopped before the retries ran out");
        assert_eq!(
            exhausted.load(Ordering::SeqCst),
            exhausted_before,
            "no runner found the pool exhausted"
        );
    })
    .await;
}

/// A person registered under a handle (the card's id) with an email.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Registered {
    handle: String,
    email: String,
}

/// A card per handle; no two cards share an email (a unique index).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Card {
    id: String,
    #[document(unique)]
    email: String,
}

/// Stores a `Card` per `Registered`.
struct Cards;

impl EventProjection for Cards {
    fn name(&self) -> &'static str {
        "Cards"
    }
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<Registered>() {
            ops.store(Card {
                id: e.handle.clone(),
                email: e.email.clone(),
            });
        }
        Ok(())
    }
}

/// The sequence of the event at `version` of `stream`.
async fn sequence_of(schema: &marten_testing::TestSchema, stream: Uuid, version: i64) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(
            "SELECT seq_id FROM mt_events WHERE stream_id = $1 AND version = $2",
            &[&stream, &version],
        )
        .await
        .expect("the event")
        .get(0)
}

/// An event projection whose card breaks the unique index on `email` (the third event of
/// a batch of four, its email taken by the first): the write fails at the batch's commit,
/// not while it is planned. Under the dead-letter policy the daemon catches up, the event
/// is dead-lettered once (after its retries, with the database's error naming the field)
/// and the other three cards are stored; under the stop policy the projection stops with
/// the error naming the event (stream, version and sequence) and the violation, the
/// events before it committed.
#[tokio::test]
async fn a_unique_index_the_projected_writes_break_meets_the_poison_policy() {
    bounded("a unique violation at commit", async {
        for policy in [PoisonPolicy::DeadLetter, PoisonPolicy::Stop] {
            let (schema, b) = builder("poison_unique_commit");
            let store = ok(b
                .event::<Registered>()
                .event_projection(Cards, Lifecycle::Async)
                .build()
                .await);
            let stream = Uuid::now_v7();
            let mut s = store.lightweight_session();
            for (handle, email) in [
                ("ann", "a@x"),
                ("bob", "b@x"),
                ("cat", "a@x"),
                ("dan", "d@x"),
            ] {
                let e = Registered {
                    handle: handle.into(),
                    email: email.into(),
                };
                ok(s.events().append(stream, [e]));
            }
            ok(s.save_changes().await);
            let bad = sequence_of(&schema, stream, 3).await;
            let daemon = Daemon::start(&store, options(1, policy));
            let waited = daemon.wait_for_non_stale(Duration::from_secs(5)).await;
            let mut q = store.query_session();
            if policy == PoisonPolicy::Stop {
                match waited {
                    Err(marten::Error::ProjectionStopped { projection, .. }) => {
                        assert_eq!(projection, "Cards")
                    }
                    other => panic!("expected the projection to stop, got {other:?}"),
                }
                match daemon.stop().await {
                    Err(marten::Error::Apply {
                        projection,
                        stream: at,
                        version,
                        message,
                        ..
                    }) => {
                        assert_eq!((projection, at, version), ("Cards", stream.into(), 3));
                        assert!(message.contains("unique violation"), "{message}");
                        assert!(message.contains("email"), "{message}");
                        assert!(message.contains(&format!("sequence {bad}")), "{message}");
                    }
                    other => panic!("expected the event's error, got {other:?}"),
                }
                for (handle, stored) in [("ann", true), ("bob", true), ("cat", false), ("dan", false)] {
                    let card = ok(q.load::<Card>(&handle.to_owned()).await);
                    assert_eq!(card.is_some(), stored, "{handle}: committed before the event");
                }
                assert!(dead_letters(&schema).await.is_empty());
                continue;
            }
            ok(waited);
            ok(daemon.stop().await);
            for (handle, email) in [("ann", "a@x"), ("bob", "b@x"), ("dan", "d@x")] {
                let card = ok(q.load::<Card>(&handle.to_owned()).await);
                assert_eq!(card.map(|c| c.email), Some(email.to_owned()), "{handle}");
            }
            assert_eq!(ok(q.load::<Card>(&"cat".to_owned()).await), None);
            let rows = schema
                .raw_client()
                .await
                .query(
                    "SELECT projection, event_type, stream_id, seq_id, error, attempts FROM mt_dead_letters",
                    &[],
                )
                .await
                .expect("dead letters");
            assert_eq!(rows.len(), 1, "one dead letter");
            let row = &rows[0];
            assert_eq!(row.get::<_, String>(0), "Cards");
            assert_eq!(row.get::<_, String>(1), "registered");
            assert_eq!(row.get::<_, String>(2), stream.to_string());
            assert_eq!(row.get::<_, i64>(3), bad);
            let error: String = row.get(4);
            assert!(error.contains("unique violation"), "{error}");
            assert!(error.contains("email"), "{error}");
            assert_eq!(row.get::<_, i32>(5), 2, "the first try and one retry");
        }
    })
    .await;
}

/// Moves money.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Moved {
    amount: i64,
}

/// A balance, folded from `Moved`; the test forbids a negative one with a CHECK
/// constraint on its table.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Balance {
    id: Uuid,
    version: i64,
    amount: i64,
}

#[marten::apply]
impl Balance {
    fn apply(&mut self, e: &Moved) {
        self.amount += e.amount;
    }
}

/// An aggregate whose document a CHECK constraint (added with raw SQL) refuses after some
/// events: under the dead-letter policy each is dead-lettered once (the error names the
/// constraint), a stream's later event is folded over it (the document skips its
/// version; a stream whose first event is refused is created by its second) and the
/// other stream is projected, whether the batch holds every event or two; under the stop
/// policy the projection stops naming the first such event and the constraint.
#[tokio::test]
async fn a_check_constraint_the_projected_writes_break_meets_the_poison_policy() {
    bounded("a CHECK violation at commit", async {
        let cases = [
            (PoisonPolicy::DeadLetter, 100),
            (PoisonPolicy::DeadLetter, 2),
            (PoisonPolicy::Stop, 100),
        ];
        for (policy, batch_size) in cases {
            let (schema, b) = builder("poison_check_commit");
            let store = ok(b.projection::<Balance>(Lifecycle::Async).build().await);
            let (overdrawn, fine, twice) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
            // The table exists once the daemon has projected an event.
            append(&store, fine, Moved { amount: 1 }).await;
            let daemon = Daemon::start(&store, options(0, policy));
            ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
            ok(daemon.stop().await);
            schema
                .raw_client()
                .await
                .execute(
                    "ALTER TABLE mt_doc_balance ADD CONSTRAINT balance_not_negative \
                     CHECK ((data->>'amount')::bigint >= 0)",
                    &[],
                )
                .await
                .expect("add the constraint");
            let mut s = store.lightweight_session();
            let moves = [5, -10, 1].map(|amount| Moved { amount });
            ok(s.events().append(overdrawn, moves));
            ok(s.events().append(fine, [Moved { amount: 2 }]));
            // Refused after its first and third events, however they are batched (a
            // batch commits each document's state after the batch's events of it).
            let moves = [-2, 1, -5].map(|amount| Moved { amount });
            ok(s.events().append(twice, moves));
            ok(s.save_changes().await);
            let bad = sequence_of(&schema, overdrawn, 2).await;
            let (twice_first, twice_last) = (
                sequence_of(&schema, twice, 1).await,
                sequence_of(&schema, twice, 3).await,
            );

            let options = DaemonOptions {
                batch_size,
                ..options(0, policy)
            };
            let daemon = Daemon::start(&store, options);
            let waited = daemon.wait_for_non_stale(Duration::from_secs(5)).await;
            if policy == PoisonPolicy::Stop {
                assert!(
                    matches!(waited, Err(marten::Error::ProjectionStopped { .. })),
                    "{waited:?}"
                );
                match daemon.stop().await {
                    Err(marten::Error::Apply {
                        projection,
                        stream: at,
                        version,
                        message,
                        ..
                    }) => {
                        assert_eq!((projection, at, version), ("Balance", overdrawn.into(), 2));
                        assert!(message.contains("balance_not_negative"), "{message}");
                        assert!(message.contains(&format!("sequence {bad}")), "{message}");
                    }
                    other => panic!("expected the event's error, got {other:?}"),
                }
                continue;
            }
            ok(waited);
            ok(daemon.stop().await);
            let mut q = store.query_session();
            let doc = ok(q.load::<Balance>(&overdrawn).await).expect("projected");
            assert_eq!(
                (doc.amount, doc.version),
                (6, 3),
                "batch of {batch_size}: the refused event skipped"
            );
            let doc = ok(q.load::<Balance>(&fine).await).expect("projected");
            assert_eq!((doc.amount, doc.version), (3, 2), "batch of {batch_size}");
            let doc = ok(q.load::<Balance>(&twice).await).expect("projected");
            assert_eq!(
                (doc.amount, doc.version),
                (1, 2),
                "batch of {batch_size}: created by the second event, the third skipped"
            );
            let rows = schema
                .raw_client()
                .await
                .query(
                    "SELECT stream_id, seq_id, error, attempts FROM mt_dead_letters \
                     ORDER BY seq_id",
                    &[],
                )
                .await
                .expect("dead letters");
            let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let expected = [
                (overdrawn.to_string(), bad),
                (twice.to_string(), twice_first),
                (twice.to_string(), twice_last),
            ];
            assert_eq!(got, expected, "batch of {batch_size}");
            for row in &rows {
                let error: String = row.get(2);
                assert!(error.contains("balance_not_negative"), "{error}");
                assert_eq!(row.get::<_, i32>(3), 1, "no retries");
            }
        }
    })
    .await;
}

/// Adds the CHECK constraint that forbids a negative `amount` to the table of `table`
/// (made by a daemon that projects one event of `stream` first).
async fn forbid_negative(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
    table: &str,
    stream: Uuid,
) {
    append(store, stream, Moved { amount: 1 }).await;
    let daemon = Daemon::start(store, options(0, PoisonPolicy::DeadLetter));
    ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
    ok(daemon.stop().await);
    let sql = format!(
        "ALTER TABLE {table} ADD CONSTRAINT not_negative CHECK ((data->>'amount')::bigint >= 0)"
    );
    schema
        .raw_client()
        .await
        .execute(sql.as_str(), &[])
        .await
        .expect("add the constraint");
}

/// A refused batch whose stream has a later event dead-lettered (undecodable, met when
/// the batch reads the hole it leaves) and an earlier one the CHECK constraint refuses:
/// `+5, -10, (undecodable), +1`. The search's run of the first event alone must not read
/// the stream up to the undecodable event and fold the second (which would put the
/// refusal of `5 - 10` on the first event): the first and last events are folded
/// (`5 + 1`), the second and third dead-lettered, and the document records the fourth
/// version.
#[tokio::test]
async fn a_run_of_a_refused_batch_does_not_fold_the_events_after_it() {
    bounded("a run folds only its own events", async {
        let (schema, b) = builder("poison_run_own_events");
        let store = ok(b.projection::<Balance>(Lifecycle::Async).build().await);
        forbid_negative(&schema, &store, "mt_doc_balance", Uuid::now_v7()).await;
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        let moves = [5, -10, 1, 1].map(|amount| Moved { amount });
        ok(s.events().append(stream, moves));
        ok(s.save_changes().await);
        let corrupt: i64 = schema
            .raw_client()
            .await
            .query_one(
                "UPDATE mt_events SET data = '{\"amount\": \"x\"}' \
                 WHERE stream_id = $1 AND version = 3 RETURNING seq_id",
                &[&stream],
            )
            .await
            .expect("corrupt version 3")
            .get(0);
        let refused = sequence_of(&schema, stream, 2).await;

        let daemon = Daemon::start(&store, options(0, PoisonPolicy::DeadLetter));
        ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
        ok(daemon.stop().await);
        let doc = ok(store.query_session().load::<Balance>(&stream).await).expect("projected");
        assert_eq!(
            (doc.amount, doc.version),
            (6, 4),
            "the first and last events folded"
        );
        let mut letters = dead_letters(&schema).await;
        letters.sort_by_key(|(_, seq)| *seq);
        let expected = [(stream.to_string(), refused), (stream.to_string(), corrupt)];
        assert_eq!(
            letters, expected,
            "the refused and the undecodable event, once each"
        );
    })
    .await;
}

/// A balance as [`Balance`], whose `Boom` fails.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Ledger {
    id: Uuid,
    version: i64,
    amount: i64,
}

#[marten::apply]
impl Ledger {
    fn apply(&mut self, e: &Moved) {
        self.amount += e.amount;
    }
    fn apply_boom(&mut self, _e: &Boom) -> Result<(), String> {
        Err("boom".into())
    }
}

/// Holds the runner in `after_commit` at its `nth` commit until the test lets it go.
struct PauseAfterCommit {
    /// Commits left before the pause (0: none).
    left: Mutex<usize>,
    paused: Mutex<mpsc::Sender<()>>,
    resume: Mutex<mpsc::Receiver<()>>,
}

impl PauseAfterCommit {
    /// The hooks, the receiver told when the runner paused and the sender that lets it
    /// go on.
    fn at(nth: usize) -> (Arc<Self>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (paused_tx, paused_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel();
        let hooks = Arc::new(PauseAfterCommit {
            left: Mutex::new(nth),
            paused: Mutex::new(paused_tx),
            resume: Mutex::new(resume_rx),
        });
        (hooks, paused_rx, resume_tx)
    }
}

impl DaemonHooks for PauseAfterCommit {
    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {
        let pause = match self.left.lock() {
            Ok(mut left) if *left > 0 => {
                *left -= 1;
                *left == 0
            }
            _ => false,
        };
        if pause {
            if let Ok(tx) = self.paused.lock() {
                let _ = tx.send(());
            }
            tokio::task::block_in_place(|| {
                if let Ok(rx) = self.resume.lock() {
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                }
            });
        }
    }
}

/// Runs the daemon on `store` with `hooks` until its runner has paused in them, stops it
/// there (the stop is asked for before the runner goes on, so the search of a refused
/// batch ends right after the commit it paused at), then runs a daemon without hooks
/// until it has caught up.
async fn interrupt_after(
    store: &DocumentStore,
    (hooks, paused, resume): (Arc<PauseAfterCommit>, mpsc::Receiver<()>, mpsc::Sender<()>),
) {
    let paused_options = DaemonOptions {
        hooks,
        ..options(0, PoisonPolicy::DeadLetter)
    };
    let daemon = Daemon::start(store, paused_options);
    tokio::task::spawn_blocking(move || paused.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the runner paused after a commit");
    let stopping = tokio::spawn(daemon.stop());
    // The stop is sent when `stopping` first runs; the runner is let go after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    resume.send(()).expect("resume");
    ok(stopping.await.expect("join"));
    let daemon = Daemon::start(store, options(0, PoisonPolicy::DeadLetter));
    ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
    ok(daemon.stop().await);
}

/// A refused batch (stream T's only event the CHECK constraint refuses) after stream S's
/// `+5, +1, Boom` (the failing apply dead-lettered while the batch is planned, its letter
/// due with the run that reaches its place). The search's first run, S's first event,
/// must not fold S's second on account of the dead-lettered third and record the
/// document past both without the third's letter: the daemon stopped right after that
/// run, the next one reads S's second and third events again, folds the one and
/// dead-letters the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_interrupted_after_a_run_loses_no_dead_letter() {
    bounded("a later dead letter kept", async {
        let (schema, b) = builder("poison_run_interrupted");
        let store = ok(b
            .event::<Boom>()
            .projection::<Ledger>(Lifecycle::Async)
            .build()
            .await);
        forbid_negative(&schema, &store, "mt_doc_ledger", Uuid::now_v7()).await;
        let (s_id, t_id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events()
            .append(s_id, [Moved { amount: 5 }, Moved { amount: 1 }]));
        ok(s.events().append(s_id, [Boom {}]));
        ok(s.events().append(t_id, [Moved { amount: -1 }]));
        ok(s.save_changes().await);
        let (boom, refused) = (
            sequence_of(&schema, s_id, 3).await,
            sequence_of(&schema, t_id, 1).await,
        );

        // The batch is refused whole; its first run (S's first event) commits and the
        // daemon stops there.
        interrupt_after(&store, PauseAfterCommit::at(1)).await;
        let doc = ok(store.query_session().load::<Ledger>(&s_id).await).expect("projected");
        assert_eq!(doc.amount, 6, "S's first two events folded");
        let mut letters = dead_letters(&schema).await;
        letters.sort_by_key(|(_, seq)| *seq);
        let expected = [(s_id.to_string(), boom), (t_id.to_string(), refused)];
        assert_eq!(letters, expected, "the failing apply and the refused event");
    })
    .await;
}

/// As above, with S's dead-lettered event after the batch's others in the page (its
/// transaction is later) though its version is not S's last: `+5, +1, Boom, +1` and T's
/// refused event, S's third last in the page. The search's run of S's fourth event reads
/// the hole its stream leaves and passes over the third, which no later plan folds: its
/// letter goes with that run, and the daemon stopped right after it loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_passes_over_a_later_dead_lettered_event_commits_its_letter() {
    bounded("a passed-over dead letter kept", async {
        let (schema, b) = builder("poison_run_passes_over");
        let store = ok(b
            .event::<Boom>()
            .projection::<Ledger>(Lifecycle::Async)
            .build()
            .await);
        forbid_negative(&schema, &store, "mt_doc_ledger", Uuid::now_v7()).await;
        let (s_id, t_id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events()
            .append(s_id, [Moved { amount: 5 }, Moved { amount: 1 }]));
        ok(s.events().append(s_id, [Boom {}]));
        ok(s.events().append(s_id, [Moved { amount: 1 }]));
        ok(s.events().append(t_id, [Moved { amount: -1 }]));
        ok(s.save_changes().await);
        // Every event but S's third goes before it in the page's order.
        schema
            .raw_client()
            .await
            .execute(
                "UPDATE mt_events SET tx_id = (((SELECT tx_id FROM mt_events WHERE stream_id = $1 \
                 AND version = 3)::text::bigint - 1)::text::xid8) \
                 WHERE stream_id IN ($1, $2) AND NOT (stream_id = $1 AND version = 3)",
                &[&s_id, &t_id],
            )
            .await
            .expect("put S's third event last");
        let (boom, refused) = (
            sequence_of(&schema, s_id, 3).await,
            sequence_of(&schema, t_id, 1).await,
        );

        // Refused whole; run S1 S2 commits, run S4 T1 is refused, run S4 commits (the
        // second commit) and the daemon stops there.
        interrupt_after(&store, PauseAfterCommit::at(2)).await;
        let doc = ok(store.query_session().load::<Ledger>(&s_id).await).expect("projected");
        assert_eq!(
            (doc.amount, doc.version),
            (7, 4),
            "S's events but the third folded"
        );
        let mut letters = dead_letters(&schema).await;
        letters.sort_by_key(|(_, seq)| *seq);
        let expected = [(s_id.to_string(), boom), (t_id.to_string(), refused)];
        assert_eq!(letters, expected, "the failing apply and the refused event");
    })
    .await;
}
