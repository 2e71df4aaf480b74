//! The daemon folds an async aggregate's events in its stream's version order, each once.
//! The scenario of `common::inversion` (a save that took its transaction id early appends
//! version 3 after another save appended version 2 and committed) no longer inverts the
//! global order (appends record the stream's later transaction id); the daemon's own
//! defence, for events stored before that (or written by hand), is checked by inverting
//! the stored order by hand: within one batch the versions are sorted; across batches the
//! later batch's hole is filled by reading the stream's versions, and the early version
//! is not folded again when its own batch comes. A poison event met in such a read is dead-lettered once. An event
//! met in such a read that cannot be decoded meets the poison policy: under `Stop` the
//! projection stops naming it before the stream's later version is folded without it;
//! under `DeadLetter` it is dead-lettered once (not again when its own page reads it) and
//! the fold goes on. A multi-stream projection gets each stream's events of a batch in
//! version order.

mod common;

use std::time::Duration;

use common::inversion::versions_in_global_order;
use common::{builder, ok, stopped_with};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Step {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Halt {}

/// The steps of a stream in the order they were folded: an order-dependent fold.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Trail {
    id: Uuid,
    version: i64,
    steps: Vec<i64>,
}

#[marten::apply]
impl Trail {
    fn apply(&mut self, e: &Step) {
        self.steps.push(e.n);
    }
    fn apply_halt(&mut self, _e: &Halt) -> Result<(), String> {
        Err("halted".into())
    }
}

/// Every step of every stream on one board, in the order they were folded.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Board {
    id: String,
    steps: Vec<i64>,
}

#[marten::apply]
impl Board {
    fn identities(_e: &Step) -> Vec<String> {
        vec!["board".to_owned()]
    }
    fn create(e: &Step) -> Self {
        Board {
            id: String::new(),
            steps: vec![e.n],
        }
    }
    fn apply(&mut self, e: &Step) {
        self.steps.push(e.n);
    }
}

/// Stream `t` with steps 0 and 10, stream `s` with steps 1, then `second` (version 2),
/// then 3, each in a save of its own; then the stored order is inverted by hand: version
/// 3's `tx_id` is set below version 2's, as appends recorded it before they kept each
/// stream in version order.
async fn invert(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
    second: PendingEvent,
) -> (Uuid, Uuid) {
    let (t, s) = (Uuid::now_v7(), Uuid::now_v7());
    let saves = [
        vec![
            (t, PendingEvent::new(Step { n: 0 })),
            (s, PendingEvent::new(Step { n: 1 })),
        ],
        vec![(s, second)],
        vec![
            (t, PendingEvent::new(Step { n: 10 })),
            (s, PendingEvent::new(Step { n: 3 })),
        ],
    ];
    for save in saves {
        let mut session = store.lightweight_session();
        for (stream, event) in save {
            ok(session.events().append(stream, [event]));
        }
        ok(session.save_changes().await);
    }
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET tx_id = (((SELECT tx_id FROM mt_events WHERE stream_id = $1 \
             AND version = 2)::text::bigint - 1)::text::xid8) WHERE stream_id = $1 AND version = 3",
            &[&s],
        )
        .await
        .expect("invert by hand");
    assert_eq!(versions_in_global_order(schema, s).await, [1, 3, 2]);
    (t, s)
}

async fn trail(store: &DocumentStore, id: Uuid) -> Trail {
    ok(store.query_session().load::<Trail>(&id).await).expect("projected")
}

async fn run_daemon(store: &DocumentStore, batch_size: usize) {
    let daemon = Daemon::start(
        store,
        DaemonOptions {
            batch_size,
            retries: 0,
            poison: PoisonPolicy::DeadLetter,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_inverted_by_the_global_order_are_folded_in_stream_order() {
    for batch_size in [500, 1] {
        let (schema, b) = builder("stream_order_inverted");
        let store = ok(b.projection::<Trail>(Lifecycle::Async).build().await);
        let (t, s) = invert(&schema, &store, PendingEvent::new(Step { n: 2 })).await;
        run_daemon(&store, batch_size).await;
        let live: Trail = ok(store
            .lightweight_session()
            .events()
            .aggregate_stream(s)
            .await)
        .expect("live");
        assert_eq!(live.steps, [1, 2, 3]);
        assert_eq!(trail(&store, s).await, live, "batch size {batch_size}");
        assert_eq!(trail(&store, t).await.steps, [0, 10]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_read_to_fill_a_hole_is_dead_lettered_once() {
    let (schema, b) = builder("stream_order_poison");
    let store = ok(b
        .event::<Halt>()
        .projection::<Trail>(Lifecycle::Async)
        .build()
        .await);
    let (_, s) = invert(&schema, &store, PendingEvent::new(Halt {})).await;
    run_daemon(&store, 1).await;
    let doc = trail(&store, s).await;
    assert_eq!((doc.steps, doc.version), (vec![1, 3], 3));
    let raw = schema.raw_client().await;
    let halt: i64 = raw
        .query_one(
            "SELECT seq_id FROM mt_events WHERE stream_id = $1 AND version = 2",
            &[&s],
        )
        .await
        .expect("the halt")
        .get(0);
    let rows = raw
        .query("SELECT seq_id, event_type FROM mt_dead_letters", &[])
        .await
        .expect("dead letters");
    let letters: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(letters, [(halt, "halt".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_stream_projection_gets_each_streams_events_of_a_batch_in_version_order() {
    let (schema, b) = builder("stream_order_multi");
    let store = ok(b
        .multi_stream_projection::<Board>(Lifecycle::Async)
        .build()
        .await);
    invert(&schema, &store, PendingEvent::new(Step { n: 2 })).await;
    run_daemon(&store, 500).await;
    let board: Board = ok(store.query_session().load(&"board".to_owned()).await).expect("board");
    // t's steps (0, 10) and s's (1, 2, 3), each stream in its version order.
    let s_steps: Vec<i64> = board
        .steps
        .iter()
        .copied()
        .filter(|n| *n < 10 && *n > 0)
        .collect();
    assert_eq!(s_steps, [1, 2, 3], "{:?}", board.steps);
    assert_eq!(board.steps.len(), 5);
}

/// An event the trail does not handle.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holes_left_by_unhandled_events_cost_one_read_per_batch() {
    const STREAMS: usize = 200;
    let (schema, b) = builder("stream_order_holes");
    let store = ok(b
        .event::<Noted>()
        .projection::<Trail>(Lifecycle::Async)
        .build()
        .await);
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    // A first batch of events the trail does not handle (its documents are not written,
    // so they stay at version 0), then a batch of a step per stream (version 2): every
    // stream of the second batch has a hole at version 1.
    for make in [
        |_: i64| PendingEvent::new(Noted {}),
        |n| PendingEvent::new(Step { n }),
    ] {
        let mut s = store.lightweight_session();
        for (n, id) in ids.iter().enumerate() {
            ok(s.events().append(*id, [make(n as i64)]));
        }
        ok(s.save_changes().await);
    }
    let (proxy, counted) = common::counted_builder_on(&schema).await;
    let counted = ok(counted
        .event::<Noted>()
        .projection::<Trail>(Lifecycle::Async)
        .build()
        .await);
    // The daemon's round trips only: the wait for it polls through the other store (a
    // slow machine's longer catch-up would otherwise count more of its checks).
    let before = proxy.round_trips();
    let daemon = Daemon::start(
        &counted,
        DaemonOptions {
            batch_size: STREAMS,
            retries: 0,
            poison: PoisonPolicy::DeadLetter,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    ok(marten::daemon::wait_for_non_stale(&store, Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let trips = proxy.round_trips() - before;
    for (n, id) in ids.iter().enumerate() {
        let doc = trail(&store, *id).await;
        assert_eq!((doc.steps, doc.version), (vec![n as i64], 2), "stream {n}");
    }
    println!("{trips} round trips to catch up");
    // A read per stream would be 200 round trips on their own.
    assert!(trips < 120, "{trips} round trips to catch up");
}

/// How long a wait of the tests of unreadable events may take before it fails.
const WAIT: Duration = Duration::from_secs(30);

/// The scenario of [`invert`] with `s`'s version 2 stored with a body that no longer
/// reads as a `Step` (edited by hand): the batch of version 3 reads version 2 to fill its
/// hole and cannot decode it. Returns `s` and version 2's sequence.
async fn invert_with_an_unreadable_hole(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
) -> (Uuid, i64) {
    let (_, s) = invert(schema, store, PendingEvent::new(Step { n: 2 })).await;
    let seq: i64 = schema
        .raw_client()
        .await
        .query_one(
            "UPDATE mt_events SET data = '{\"n\": \"two\"}' WHERE stream_id = $1 AND version = 2 \
             RETURNING seq_id",
            &[&s],
        )
        .await
        .expect("corrupt version 2")
        .get(0);
    (s, seq)
}

/// A daemon of pages of one event (each of `s`'s versions a batch of its own), without
/// retries.
fn start_one_by_one(store: &DocumentStore, poison: PoisonPolicy) -> Daemon {
    Daemon::start(
        store,
        DaemonOptions {
            batch_size: 1,
            retries: 0,
            poison,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    )
}

/// The dead letters recorded: sequence, type, stream, attempts; each error names its
/// event's sequence.
async fn dead_letters(schema: &marten_testing::TestSchema) -> Vec<(i64, String, String, i32)> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT seq_id, event_type, stream_id, attempts, error FROM mt_dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("dead letters");
    rows.iter()
        .map(|r| {
            let (seq, error): (i64, String) = (r.get(0), r.get(4));
            assert!(
                error.contains(&format!("at sequence {seq}")),
                "the error names the event: {error}"
            );
            (seq, r.get(1), r.get(2), r.get(3))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_event_read_to_fill_a_hole_stops_the_projection_before_the_next_version() {
    let (schema, b) = builder("stream_order_unreadable_stop");
    let store = ok(b.projection::<Trail>(Lifecycle::Async).build().await);
    let (s, seq) = invert_with_an_unreadable_hole(&schema, &store).await;
    let daemon = start_one_by_one(&store, PoisonPolicy::Stop);
    let stopped = tokio::time::timeout(WAIT, stopped_with(daemon))
        .await
        .expect("the projection stopped in time");
    let doc = trail(&store, s).await;
    assert_eq!(
        (doc.steps, doc.version),
        (vec![1], 1),
        "version 3 was folded without version 2 ({stopped})"
    );
    match stopped {
        Error::Apply {
            event_type,
            stream,
            version,
            message,
            ..
        } => {
            assert_eq!(
                (event_type.as_str(), stream.to_string(), version),
                ("step", s.to_string(), 2),
                "{message}"
            );
            assert!(message.contains(&format!("at sequence {seq}")), "{message}");
        }
        other => panic!("expected the apply error naming version 2, got {other}"),
    }
    assert!(dead_letters(&schema).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_event_read_to_fill_a_hole_is_dead_lettered_once_and_the_fold_goes_on() {
    let (schema, b) = builder("stream_order_unreadable_dead");
    let store = ok(b.projection::<Trail>(Lifecycle::Async).build().await);
    let (s, seq) = invert_with_an_unreadable_hole(&schema, &store).await;
    let daemon = start_one_by_one(&store, PoisonPolicy::DeadLetter);
    ok(daemon.wait_for_non_stale(WAIT).await);
    let doc = trail(&store, s).await;
    assert_eq!((doc.steps, doc.version), (vec![1, 3], 3));
    let letter = (seq, "step".to_owned(), s.to_string(), 1);
    assert_eq!(
        dead_letters(&schema).await,
        std::slice::from_ref(&letter),
        "dead-lettered once, not again by its own page"
    );
    // Recorded by the batch that folded version 3 without it (the one that read it to
    // fill the hole), not later by its own page: one transaction wrote both rows.
    let raw = schema.raw_client().await;
    let written_by = |sql: &'static str| {
        let raw = &raw;
        async move {
            let row = raw.query_one(sql, &[&s.to_string()]).await;
            row.expect("the writing transaction").get::<_, String>(0)
        }
    };
    assert_eq!(
        written_by("SELECT xmin::text FROM mt_dead_letters WHERE stream_id = $1").await,
        written_by("SELECT xmin::text FROM mt_doc_trail WHERE id::text = $1").await,
        "the dead letter commits with the batch that leaves its event out"
    );

    // The fold goes on past it.
    let mut session = store.lightweight_session();
    ok(session.events().append(s, [Step { n: 4 }]));
    ok(session.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    let doc = trail(&store, s).await;
    assert_eq!((doc.steps, doc.version), (vec![1, 3, 4], 4));
    assert_eq!(dead_letters(&schema).await, [letter], "recorded once");
    ok(tokio::time::timeout(WAIT, daemon.stop())
        .await
        .expect("the daemon stopped in time"));
}
