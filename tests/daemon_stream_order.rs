//! The daemon folds an async aggregate's events in its stream's version order, each once.
//! The scenario of `common::inversion` (a save that took its transaction id early appends
//! version 3 after another save appended version 2 and committed) no longer inverts the
//! global order (appends record the stream's later transaction id); the daemon's own
//! defence, for events stored before that (or written by hand), is checked by inverting
//! the stored order by hand: within one batch the versions are sorted; across batches the
//! later batch's hole is filled by reading the stream's versions, and the early version
//! is not folded again when its own batch comes. A poison event met in such a read is dead-lettered once. A multi-stream
//! projection gets each stream's events of a batch in version order.

mod common;

use std::time::Duration;

use common::inversion::versions_in_global_order;
use common::{builder, ok};
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
    let before = proxy.round_trips();
    run_daemon(&counted, STREAMS).await;
    let trips = proxy.round_trips() - before;
    for (n, id) in ids.iter().enumerate() {
        let doc = trail(&store, *id).await;
        assert_eq!((doc.steps, doc.version), (vec![n as i64], 2), "stream {n}");
    }
    println!("{trips} round trips to catch up");
    // A read per stream would be 200 round trips on their own.
    assert!(trips < 120, "{trips} round trips to catch up");
}
