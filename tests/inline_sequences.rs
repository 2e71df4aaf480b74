//! Inline projections that read the events' metadata get the real global sequences: the
//! save reserves them in its transaction and inserts the events with them. Concurrent
//! savers still produce a gap-safe global order the daemon reads completely, a save
//! cancelled at any await leaves nothing behind, and the reservation costs one round
//! trip only when a projection reads the metadata.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{counted_builder, named_builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Counted {
    writer: i64,
    round: i64,
}

/// An inline aggregate recording the (sequence, transaction id) of each event it applied.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Seqs {
    id: Uuid,
    version: i64,
    seen: Vec<(i64, u64)>,
}

#[marten::apply]
impl Seqs {
    fn apply(&mut self, _e: &Counted, meta: &EventEnvelope) {
        self.seen.push((meta.sequence, meta.transaction_id));
    }
}

/// An inline aggregate whose apply does not read the metadata.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Count {
    id: Uuid,
    version: i64,
    n: i64,
}

#[marten::apply]
impl Count {
    fn apply(&mut self, _e: &Counted) {
        self.n += 1;
    }
}

/// One document per event the daemon projected, keyed by the event's id.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Copied {
    id: Uuid,
    sequence: i64,
}

struct CopyEach;

impl EventProjection for CopyEach {
    fn name(&self) -> &'static str {
        "CopyEach"
    }

    fn apply(&self, e: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), marten::ApplyError> {
        ops.store(Copied {
            id: e.id,
            sequence: e.sequence,
        });
        Ok(())
    }
}

/// What the pool's next user writes after a cancellation.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Marker {
    id: Uuid,
    k: i64,
}

const WRITERS: usize = 4;
const ROUNDS: i64 = 20;

/// Each writer appends, every round and all at once, to a stream shared by all writers
/// and to its own.
async fn write(store: DocumentStore, writer: usize, shared: Uuid, own: Uuid, go: Arc<Barrier>) {
    let mut s = store.lightweight_session();
    for round in 0..ROUNDS {
        go.wait().await;
        let e = || Counted {
            writer: writer as i64,
            round,
        };
        ok(s.events().append(shared, [e()]));
        ok(s.events().append(own, [e(), e()]));
        ok(s.save_changes().await);
    }
}

/// The events' (sequence, transaction id) as stored.
async fn stored(store: &DocumentStore, stream: Uuid) -> Vec<(i64, u64)> {
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(stream).await);
    events
        .iter()
        .map(|e| (e.sequence, e.transaction_id))
        .collect()
}

#[tokio::test]
async fn concurrent_inline_saves_stay_gap_safe_for_the_daemon() {
    let (_schema, b) = named_builder("inline_seq_concurrent");
    let store = ok(b
        .pool_size(12)
        .projection::<Seqs>(Lifecycle::Inline)
        .event_projection(CopyEach, Lifecycle::Async)
        .document::<Copied>()
        .build()
        .await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 7,
            ..DaemonOptions::default()
        },
    );
    let shared = Uuid::now_v7();
    let own: Vec<Uuid> = (0..WRITERS).map(|_| Uuid::now_v7()).collect();
    let go = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(store.clone(), w, shared, own[w], go.clone())))
        .collect();
    marten_testing::tasks::join_handles(writers, Duration::from_secs(120)).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);

    let total = WRITERS as i64 * ROUNDS * 3;
    let mut sequences = HashSet::new();
    for stream in own.iter().chain([&shared]) {
        let want = stored(&store, *stream).await;
        let doc = ok(store.query_session().load::<Seqs>(stream).await).expect("inline");
        assert_eq!(
            doc.seen, want,
            "the inline envelopes carry the stored sequences"
        );
        sequences.extend(want.iter().map(|(seq, _)| *seq));
    }
    assert_eq!(sequences.len() as i64, total, "every sequence unique");
    let mut q = store.query_session();
    let copies: Vec<Copied> = ok(q.query::<Copied>().to_list().await);
    assert_eq!(copies.len() as i64, total, "the daemon read every event");
    assert!(copies.iter().all(|c| sequences.contains(&c.sequence)));
    let (all, _) = read_all(&store).await;
    assert_eq!(all.len() as i64, total);
    let keys: Vec<(u64, i64)> = all.iter().map(|e| (e.transaction_id, e.sequence)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
}

/// Writers that all make the first append to the same new stream at once: the save's
/// reservation finds the stream missing (nothing to lock), a rival creates it, and the
/// aggregate's locked read then sees it at another version. Each such save is planned
/// again and commits; none fails with a projection conflict.
#[tokio::test]
async fn racing_first_appends_to_a_new_stream_all_commit() {
    let (_schema, b) = named_builder("inline_seq_first");
    let store = ok(b
        .pool_size(8)
        .projection::<Seqs>(Lifecycle::Inline)
        .build()
        .await);
    const ROUNDS: i64 = 25;
    for round in 0..ROUNDS {
        let stream = Uuid::now_v7();
        let go = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, go) = (store.clone(), go.clone());
                async move {
                    let mut s = store.lightweight_session();
                    let e = Counted {
                        writer: w as i64,
                        round,
                    };
                    // The writer's own new stream first, then the shared one: the save's
                    // locked reads take a while after its reservation, and each writer
                    // starts a little after the one before, so a rival's creation often
                    // commits between the two.
                    ok(s.events().append(Uuid::now_v7(), [e.clone(), e.clone()]));
                    ok(s.events().append(stream, [e]));
                    go.wait().await;
                    tokio::time::sleep(Duration::from_micros(400 * w as u64)).await;
                    s.save_changes().await
                }
            })
            .collect();
        for saved in marten_testing::tasks::join_racers(writers, Duration::from_secs(60)).await {
            ok(saved);
        }
        let want = stored(&store, stream).await;
        assert_eq!(want.len(), WRITERS, "round {round}: every writer's event");
        let doc = ok(store.query_session().load::<Seqs>(&stream).await).expect("inline");
        assert_eq!(
            doc.seen, want,
            "round {round}: the envelopes carry what is stored"
        );
    }
}

/// Every event in the global order, read page by page.
async fn read_all(store: &DocumentStore) -> (Vec<EventEnvelope>, Position) {
    let mut s = store.lightweight_session();
    let (mut all, mut at) = (Vec::new(), Position::START);
    loop {
        let page = ok(s.events().read_all(at, 50).await);
        at = page.next;
        if page.rows == 0 {
            return (all, at);
        }
        all.extend(page.events);
    }
}

/// After a drop: nothing of the store's runs or is locked, and the pool's next user
/// commits.
async fn check_after_drop(store: &DocumentStore, schema: &TestSchema, k: usize) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
    let mut s = store.lightweight_session();
    ok(s.store(Marker {
        id: Uuid::now_v7(),
        k: k as i64,
    }));
    ok(s.save_changes().await);
}

/// The save a test cancels: two events of attempt `k`.
fn append_two(store: &DocumentStore, stream: Uuid, k: usize) -> Operation<marten::Result<()>> {
    let store = store.clone();
    Box::pin(async move {
        let mut s = store.lightweight_session();
        let e = || Counted {
            writer: 0,
            round: k as i64,
        };
        s.events().append(stream, [e(), e()])?;
        s.save_changes().await
    })
}

#[tokio::test]
async fn a_cancelled_reserving_save_leaves_nothing_behind() {
    let (schema, b) = named_builder("inline_seq_cancel");
    let store = ok(b
        .pool_size(1)
        .projection::<Seqs>(Lifecycle::Inline)
        .document::<Marker>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        stream,
        [Counted {
            writer: 0,
            round: -1,
        }],
    ));
    ok(s.save_changes().await);
    drop(s);
    let run = cancel_at_every_await(
        200,
        |k| append_two(&store, stream, k),
        |k| check_after_drop(&store, &schema, k),
    )
    .await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(stream).await);
    let rounds: Vec<i64> = events
        .iter()
        .filter_map(|e| e.data_as::<Counted>().map(|c| c.round))
        .collect();
    // A save dropped after its commit was sent may have committed: all or nothing.
    for k in 1..=run.cancelled as i64 + 1 {
        let n = rounds.iter().filter(|r| **r == k).count();
        assert!(n == 0 || n == 2, "save {k} left {n} of 2 events");
    }
    assert_eq!(rounds.last(), Some(&(run.cancelled as i64 + 1)));
    let doc = ok(s.load::<Seqs>(&stream).await).expect("inline");
    // The pool's one connection.
    drop(s);
    assert_eq!(doc.seen, stored(&store, stream).await);
    assert_eq!(doc.version, events.len() as i64);
}

/// The round trips of a plain append to a cached stream with aggregate `A` inline.
async fn append_round_trips<A: Aggregate + marten::PgDocument>(label: &str) -> u64 {
    let (_schema, proxy, b) = counted_builder(label).await;
    let store = ok(b.projection::<A>(Lifecycle::Inline).build().await);
    let stream = Uuid::now_v7();
    let e = |round| Counted { writer: 0, round };
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [e(0)]));
    ok(s.save_changes().await);
    // Warm up the statements.
    ok(s.events().append(stream, [e(1)]));
    ok(s.save_changes().await);
    let before = proxy.round_trips();
    ok(s.events().append(stream, [e(2)]));
    ok(s.save_changes().await);
    proxy.round_trips() - before
}

#[tokio::test]
async fn only_an_apply_that_reads_the_metadata_costs_a_round_trip() {
    assert_eq!(
        append_round_trips::<Count>("inline_seq_trips_plain").await,
        1,
        "no metadata: append and projected write in one flight"
    );
    assert_eq!(
        append_round_trips::<Seqs>("inline_seq_trips_meta").await,
        2,
        "metadata: the reservation, then the append and the projected write"
    );
}
